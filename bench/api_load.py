"""Executor API load on gunicorn + PostgreSQL: requests/s and p95/p99 latency at an offered rate.

    .venv/bin/python bench/api_load.py                          # 200 req/s offered for 30 s
    .venv/bin/python bench/api_load.py --rate 300 --seconds 20 --gunicorn-workers 4
    .venv/bin/python bench/api_load.py --profile 200           # in-process: queries, wall and CPU ms per endpoint

Creates its own database (``bench_api``, or ``--database``), seeds ``--runs`` running runs of ``--phases``
phases and one executor API key per simulated executor, starts gunicorn on a free 127.0.0.1 port, and drives mixed
executor traffic: each simulated executor loops claim → heartbeat ×3 → events ×5 → finish (complete),
the request mix of a real remote executor, paced so that all executors together offer ``--rate``
requests per second (open loop: a slow response does not slow the offered rate down, it queues).
Latency is measured per request from the moment it was due to be sent (so queueing shows).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _pgdb import ROOT, bench_database  # noqa: E402

HEARTBEATS_PER_PHASE = 3
EVENTS_PER_PHASE = 5


def seed(*, runs: int, phases: int, executors: int) -> list[str]:
    """Running runs with queued phases, and one executor key per simulated executor."""
    from accounts.models import User
    from accounts.services import api_key_create
    from runs.models import Phase, Project, Run, RunState, Tier

    owner = User.objects.create_user("bench-executor", password=secrets.token_urlsafe(16), is_staff=True)
    project = Project.objects.create(name="Bench", slug="bench", repository_path="/nonexistent")
    run_rows = Run.objects.bulk_create(
        Run(project=project, name=f"run-{n}", state=RunState.RUNNING, plan_sha256=f"{n:064x}", phases_total=phases)
        for n in range(runs)
    )
    tiers = Tier.objects.bulk_create(Tier(run=run, index=0, tier_id="T1", name="Tier 1") for run in run_rows)
    Phase.objects.bulk_create(
        Phase(run=run, tier=tier, phase_id=f"P{i + 1}", index=i, sequence=i, name=f"Phase {i + 1}")
        for run, tier in zip(run_rows, tiers, strict=True)
        for i in range(phases)
    )
    keys = [api_key_create(owner=owner, name=f"executor-{n}", scopes=["executor"])[1] for n in range(executors)]
    # Planner statistics, as autovacuum gathers them within a minute of a load this size. Without them every
    # table looks empty to PostgreSQL, which plans the (unprepared) ORM queries as if each had one row.
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    return keys


# --- the executor protocol over HTTP -------------------------------------------------------------


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    service: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter = field(default_factory=Counter)
    sent: int = 0

    def record(self, name: str, status: int, latency: float, service: float) -> None:
        with self.lock:
            self.latencies[name].append(latency)
            self.service[name].append(service)
            self.statuses[(name, status)] += 1
            self.sent += 1


class LeanHttp:
    """Just enough HTTP/1.1 for this benchmark's POSTs, on a raw socket.

    The load generator shares the CPUs with the server, so it should cost as little as it can:
    ``http.client`` parses every response's headers with the ``email`` package, which cost about as much as
    the rest of the client. Keep-alive is honoured when the server offers it; otherwise (gunicorn's sync
    workers answer ``Connection: close``) the socket is closed as soon as the response is read.
    """

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.address = (host, port)
        self.prefix = "".join(f"{name}: {value}\r\n" for name, value in {"Host": f"{host}:{port}", **headers}.items())
        self.sock: socket.socket | None = None

    def post(self, path: str, body: bytes) -> tuple[int, str, bytes]:
        """(status, content type, body) of a POST."""
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=30)
        head = f"POST {path} HTTP/1.1\r\n{self.prefix}Content-Length: {len(body)}\r\n\r\n".encode("latin-1")
        self.sock.sendall(head + body)
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection before answering")
            buffer += chunk
        header_block, rest = buffer.split(b"\r\n\r\n", 1)
        lines = header_block.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection in the middle of a body")
            rest += chunk
        if headers.get("connection", "").lower() == "close":
            self.sock.close()
            self.sock = None
        return status, headers.get("content-type", ""), rest[:length]


class Executor(threading.Thread):
    """One remote executor: its own key and connection, sending at ``interval`` on a fixed schedule."""

    def __init__(self, *, base: str, key: str, number: int, interval: float, deadline: float, stats: Stats) -> None:
        super().__init__(daemon=True)
        host, port = base.removeprefix("http://").split(":")
        headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
        self.connection = LeanHttp(host, int(port), headers)
        self.worker = f"bench-host-{number}"
        self.interval, self.deadline, self.stats = interval, deadline, stats
        # Stagger the executors so that their requests interleave instead of arriving in bursts.
        self.next_due = time.perf_counter() + interval * number / 16

    def request(self, name: str, path: str, payload: dict) -> tuple[int, dict]:
        now = time.perf_counter()
        if now < self.next_due:
            time.sleep(self.next_due - now)
        due, sent = self.next_due, time.perf_counter()
        self.next_due += self.interval
        status, content_type, raw = self.connection.post(path, json.dumps(payload).encode())
        done = time.perf_counter()
        self.stats.record(name, status, done - due, done - sent)
        return status, json.loads(raw) if raw and content_type.startswith("application/json") else {}

    def run(self) -> None:
        while time.perf_counter() < self.deadline:
            self.one_phase()

    def one_phase(self) -> None:
        status, body = self.request("claim", "/api/executor/claim", {"worker": self.worker})
        if status != 200:
            return
        phase, epoch = body["claim"]["phase_id"], body["claim"]["claim_epoch"]
        base = f"/api/executor/phases/{phase}"
        for beat in range(HEARTBEATS_PER_PHASE):
            self.request("heartbeat", f"{base}/heartbeat", {"epoch": epoch, "worker": self.worker, "stage": f"s{beat}"})
        for number in range(EVENTS_PER_PHASE):
            event = {"epoch": epoch, "worker": self.worker, "stage": "builder", "kind": "info", "data": {"n": number}}
            self.request("events", f"{base}/events", event)
        outcome = {"kind": "complete", "reason": "bench", "commit_sha": "0" * 40}
        self.request("finish", f"{base}/finish", {"epoch": epoch, "worker": self.worker, "outcome": outcome})


# --- gunicorn ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_gunicorn(
    *, database_url: str, data_dir: str, port: int, workers: int, worker_class: str = "sync", threads: int = 1
) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AUTOPACK_DATA_DIR": data_dir,
        "DJANGO_DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "0",
        "LOG_LEVEL": "WARNING",
        "API_KEY_RATE": "100000/min",
    }
    command = [
        str(ROOT / ".venv/bin/gunicorn"),
        "autopack_site.wsgi:application",
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        "--log-level=warning",
        f"--worker-class={worker_class}",
        f"--threads={threads}",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    import httpx

    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("gunicorn did not start")


def children_cpu_seconds(parent: int) -> float:
    """User + system CPU seconds of ``parent``'s live children, from /proc (Linux).

    For gunicorn's master: its workers. For PostgreSQL's postmaster: its backends and helpers (the
    connections of this benchmark's server among them).
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:  # ppid
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def postmaster_pid() -> int | None:
    """PostgreSQL's postmaster on this machine (its CPU is part of the request cost), if visible."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if command.endswith(b"/postgres") and int(fields[1]) != int(entry.name) and fields[1] == "1":
            return int(entry.name)
    return None


def own_cpu_seconds() -> float:
    usage = os.times()
    return usage.user + usage.system


def machine_speed_ms() -> float:
    """Milliseconds for a fixed pure-Python loop: this machine's speed at the time, to read the latency beside.

    Shared cloud cores here ran the same code 1.5-2x slower at some times than at others; a run's figures
    only compare with another's when this reference does too.
    """
    started = time.perf_counter()
    total = 0
    for number in range(2_000_000):
        total += number
    return round((time.perf_counter() - started) * 1000, 1)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


def report(
    stats: Stats, *, seconds: float, rate: float, server_cpu: float, database_cpu: float, client_cpu: float
) -> dict:
    everything = [value for values in stats.latencies.values() for value in values]
    service = [value for values in stats.service.values() for value in values]
    result = {
        "offered_rate": rate,
        "achieved_rate": round(stats.sent / seconds, 1),
        "requests": stats.sent,
        "p50_ms": round(percentile(everything, 0.50) * 1000, 1),
        "p95_ms": round(percentile(everything, 0.95) * 1000, 1),
        "p99_ms": round(percentile(everything, 0.99) * 1000, 1),
        # From sending to the response, leaving out time spent waiting behind this executor's previous request.
        "service_p95_ms": round(percentile(service, 0.95) * 1000, 1),
        "service_p99_ms": round(percentile(service, 0.99) * 1000, 1),
        # What the server spent per request, whatever else the (shared) machine was doing meanwhile.
        "server_cpu_ms_per_request": round(server_cpu * 1000 / max(stats.sent, 1), 2),
        # PostgreSQL's backends (all of them: run on a quiet machine) and this load generator, per request.
        "database_cpu_ms_per_request": round(database_cpu * 1000 / max(stats.sent, 1), 2),
        "client_cpu_ms_per_request": round(client_cpu * 1000 / max(stats.sent, 1), 2),
        # Cores busy on average over the run: this machine has os.cpu_count() of them.
        "cores_busy": round((server_cpu + database_cpu + client_cpu) / seconds, 2),
        "cores": os.cpu_count(),
        "by_endpoint": {
            name: {
                "requests": len(values),
                "p95_ms": round(percentile(values, 0.95) * 1000, 1),
                "p99_ms": round(percentile(values, 0.99) * 1000, 1),
                "service_p50_ms": round(percentile(stats.service[name], 0.50) * 1000, 1),
                "service_p95_ms": round(percentile(stats.service[name], 0.95) * 1000, 1),
            }
            for name, values in sorted(stats.latencies.items())
        },
        "statuses": {f"{name} {status}": count for (name, status), count in sorted(stats.statuses.items())},
    }
    return result


def profile(keys: list[str], *, cycles: int, top: int) -> dict:
    """In-process cost of each endpoint (no gunicorn, no network): queries, wall ms and CPU ms per request.

    Drives the same claim → heartbeat ×3 → events ×5 → finish cycle through Django's test client, after a
    warm-up cycle (first-request costs such as URL resolution and prepared statements are left out).
    ``top`` > 0 also prints the slowest functions of each endpoint (cProfile, cumulative time).
    """
    import cProfile
    import pstats

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Api-Key {keys[0]}", SERVER_NAME="127.0.0.1")
    worker = "profile-host"
    costs: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    profiles: dict[str, cProfile.Profile] = defaultdict(cProfile.Profile)

    def call(name: str, path: str, payload: dict, *, record: bool) -> dict:
        # The query log keeps the last 9000 only: once full, counting across it undercounts. Start each empty.
        connection.queries_log.clear()
        with CaptureQueriesContext(connection) as queries:
            wall, cpu = time.perf_counter(), time.thread_time()
            if record and top:
                profiles[name].enable()
            response = client.post(path, data=json.dumps(payload), content_type="application/json")
            if record and top:
                profiles[name].disable()
            cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        if response.status_code >= 400:
            raise SystemExit(f"{name}: HTTP {response.status_code} {response.content[:300]!r}")
        if record:
            costs[name]["queries"].append(len(queries))
            costs[name]["wall_ms"].append(wall * 1000)
            costs[name]["cpu_ms"].append(cpu * 1000)
        return response.json() if response.content else {}

    for cycle in range(cycles + 1):
        record = cycle > 0
        body = call("claim", "/api/executor/claim", {"worker": worker}, record=record)
        if not body:
            raise SystemExit("nothing left to claim: seed more --runs/--phases")
        phase, epoch = body["claim"]["phase_id"], body["claim"]["claim_epoch"]
        lease = {"epoch": epoch, "worker": worker}
        base = f"/api/executor/phases/{phase}"
        for beat in range(HEARTBEATS_PER_PHASE):
            call("heartbeat", f"{base}/heartbeat", {**lease, "stage": f"s{beat}"}, record=record)
        for number in range(EVENTS_PER_PHASE):
            call(
                "events",
                f"{base}/events",
                {**lease, "stage": "builder", "kind": "info", "data": {"n": number}},
                record=record,
            )
        outcome = {"kind": "complete", "reason": "bench", "commit_sha": "0" * 40}
        call("finish", f"{base}/finish", {**lease, "outcome": outcome}, record=record)
    result = {
        name: {
            "requests": len(values["wall_ms"]),
            "queries": round(sum(values["queries"]) / len(values["queries"]), 1),
            "wall_ms_p50": round(percentile(values["wall_ms"], 0.50), 2),
            "wall_ms_p95": round(percentile(values["wall_ms"], 0.95), 2),
            "cpu_ms_p50": round(percentile(values["cpu_ms"], 0.50), 2),
        }
        for name, values in sorted(costs.items())
    }
    for name, prof in sorted(profiles.items()):
        print(f"--- {name}: top {top} by cumulative time", file=sys.stderr)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(top)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="offered requests per second, all executors")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--executors", type=int, default=16)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--phases", type=int, default=40)
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--gunicorn-class", default="sync", choices=["sync", "gthread"], help="gunicorn worker class")
    parser.add_argument("--gunicorn-threads", type=int, default=1, help="threads per worker (gthread)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of the same load before measuring")
    parser.add_argument("--database", default="bench_api", help="PostgreSQL database to create (and drop)")
    parser.add_argument("--profile", type=int, default=0, metavar="CYCLES", help="in-process cost per endpoint")
    parser.add_argument("--profile-top", type=int, default=0, help="with --profile: cProfile's top N to stderr")
    args = parser.parse_args()

    if args.profile:
        os.environ.update(ALLOWED_HOSTS="127.0.0.1", API_KEY_RATE="1000000/min")
    with bench_database(args.database) as database_url, tempfile.TemporaryDirectory() as data_dir:
        keys = seed(runs=args.runs, phases=args.phases, executors=args.executors)
        if args.profile:
            print(json.dumps(profile(keys, cycles=args.profile, top=args.profile_top), indent=2))
            return
        from django.db import connections

        connections.close_all()
        port = free_port()
        server = start_gunicorn(
            database_url=database_url,
            data_dir=data_dir,
            port=port,
            workers=args.gunicorn_workers,
            worker_class=args.gunicorn_class,
            threads=args.gunicorn_threads,
        )
        try:
            base, interval = f"http://127.0.0.1:{port}", args.executors / args.rate

            def executors_until(deadline: float, stats: Stats) -> list[Executor]:
                return [
                    Executor(base=base, key=key, number=n, interval=interval, deadline=deadline, stats=stats)
                    for n, key in enumerate(keys)
                ]

            if args.warmup > 0:
                # The same traffic, not recorded: every worker process prepares its statements, fills its
                # caches and opens its database connection before the measured part starts (steady state).
                warm = executors_until(time.perf_counter() + args.warmup, Stats())
                for executor in warm:
                    executor.start()
                for executor in warm:
                    executor.join()
            speed_before = machine_speed_ms()
            stats = Stats()
            executors = executors_until(time.perf_counter() + args.seconds, stats)
            postmaster = postmaster_pid()
            started, cpu_before = time.perf_counter(), children_cpu_seconds(server.pid)
            db_before = children_cpu_seconds(postmaster) if postmaster else 0.0
            own_before = own_cpu_seconds()
            for executor in executors:
                executor.start()
            for executor in executors:
                executor.join()
            server_cpu = children_cpu_seconds(server.pid) - cpu_before
            database_cpu = (children_cpu_seconds(postmaster) - db_before) if postmaster else 0.0
            client_cpu = own_cpu_seconds() - own_before
            elapsed = time.perf_counter() - started
            result = report(
                stats,
                seconds=elapsed,
                rate=args.rate,
                server_cpu=server_cpu,
                database_cpu=database_cpu,
                client_cpu=client_cpu,
            )
            result["machine_speed_ms"] = {"before": speed_before, "after": machine_speed_ms()}
            print(json.dumps(result, indent=2))
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
