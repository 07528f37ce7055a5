"""Claim benchmark on PostgreSQL: claim+finish cycles per second and claim latency.

    .venv/bin/python bench/claims.py                       # 3 worker processes, 10,000 queued phases

Creates its own database (``bench_claims``), fills it with ``--runs`` x ``--phases`` queued phases, then
1. times the claim statement inside PostgreSQL (EXPLAIN ANALYZE; planned each time, and prepared once as the
   service runs it),
2. measures claim latency from one process while the queue holds 10,000 phases (claim, then release, so
   the queue does not shrink), and
3. runs ``--processes`` worker processes that claim and finish (complete, no engine) for ``--seconds``,
   and prints the cycles per second, their claim latency percentiles and the CPU time per cycle of the
   workers and of their PostgreSQL backends (those do not depend on how loaded the machine is; the
   cycles/s figure does).
Runs with DEBUG off, as production workers do (``--debug`` to keep it on).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _pgdb import bench_database  # noqa: E402  (bench/ is on sys.path when run as a script)


def populate(*, runs: int, phases: int) -> None:
    from runs.models import Phase, Project, Run, RunState, Tier

    project = Project.objects.create(name="Bench", slug="bench", repository_path="/nonexistent")
    run_rows = Run.objects.bulk_create(
        Run(project=project, name=f"run-{n}", state=RunState.RUNNING, plan_sha256=f"{n:064x}", phases_total=phases)
        for n in range(runs)
    )
    tiers = Tier.objects.bulk_create(Tier(run=run, index=0, tier_id="T1", name="Tier 1") for run in run_rows)
    Phase.objects.bulk_create(
        (
            Phase(run=run, tier=tier, phase_id=f"P{i + 1}", index=i, sequence=i, name=f"Phase {i + 1}")
            for run, tier in zip(run_rows, tiers, strict=True)
            for i in range(phases)
        ),
        batch_size=2000,
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


def latency_at_depth(samples: int) -> list[float]:
    """Claim latency with the queue kept at its depth: every claim is released again (not counted)."""
    from runs.services.leases import phase_claim, phase_release

    latencies = []
    for _ in range(samples):
        started = time.perf_counter()
        claim = phase_claim(worker="bench-latency")
        latencies.append(time.perf_counter() - started)
        phase_release(phase_id=claim.phase_id, epoch=claim.claim_epoch, worker="bench-latency")
    return latencies


def relax_durability() -> None:
    """``synchronous_commit = off`` for this process's connection: commits stop waiting for the WAL fsync."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")


def statement_times(samples: int, *, prepared: bool) -> list[float]:
    """Server-side planning + execution time of the claim statement (EXPLAIN ANALYZE, rolled back).

    ``prepared``: of the statement PREPAREd once, as the service runs it (planning is then a cache lookup).
    """
    from django.db import connection, transaction

    from runs.services.leases import claim_sql_postgres
    from runs.services.transitions import numbered_placeholders

    sql, params = claim_sql_postgres(worker="bench-explain", lease_seconds=30)
    text, order = numbered_placeholders(sql)
    if prepared:
        with connection.cursor() as cursor:
            cursor.execute(f"PREPARE bench_claim AS {text}")
        sql, params = f"EXECUTE bench_claim({', '.join(['%s'] * len(order))})", [params[key] for key in order]
    times = []
    for _ in range(samples):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
            plan = plan[0] if isinstance(plan, list) else json.loads(plan)[0]
            times.append(plan["Planning Time"] + plan["Execution Time"])
            transaction.set_rollback(True)
    if prepared:
        with connection.cursor() as cursor:
            cursor.execute("DEALLOCATE bench_claim")
    return times


def worker(number: int, seconds: float, out: Path, async_commit: bool) -> None:
    from runs.engine.outcome import OutcomeKind, PhaseOutcome
    from runs.services.leases import phase_claim, phase_finish

    if async_commit:
        relax_durability()

    name = f"bench-{number}"
    outcome = PhaseOutcome(kind=OutcomeKind.COMPLETE, commit_sha="0" * 40)
    latencies, cycles = [], 0
    backend = backend_pid()
    cpu_started = time.process_time(), backend_cpu_seconds(backend)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        claim = phase_claim(worker=name)
        latencies.append(time.perf_counter() - started)
        if claim is None:
            continue
        phase_finish(phase_id=claim.phase_id, epoch=claim.claim_epoch, outcome=outcome, worker=name)
        cycles += 1
    client_cpu = time.process_time() - cpu_started[0]
    server_cpu = backend_cpu_seconds(backend) - cpu_started[1]
    out.write_text(json.dumps({"cycles": cycles, "latencies": latencies, "cpu": [client_cpu, server_cpu]}))


def backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def backend_cpu_seconds(pid: int) -> float:
    """CPU time of this connection's PostgreSQL backend process (same machine), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_workers(processes: int, seconds: float, async_commit: bool) -> tuple[int, list[float], float, list[float]]:
    from django.db import connections

    connections.close_all()
    scratch = Path(tempfile.mkdtemp(prefix="bench-claims-"))
    pids = []
    started = time.monotonic()
    for number in range(processes):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                worker(number, seconds, scratch / f"{number}.json", async_commit)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    elapsed = time.monotonic() - started
    cycles, latencies, cpu = 0, [], [0.0, 0.0]
    for number in range(processes):
        data = json.loads((scratch / f"{number}.json").read_text())
        cycles += data["cycles"]
        latencies += data["latencies"]
        cpu = [cpu[0] + data["cpu"][0], cpu[1] + data["cpu"][1]]
    return cycles, latencies, elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--phases", type=int, default=20, help="phases per run")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency-samples", type=int, default=1000)
    parser.add_argument("--database", default="bench_claims")
    parser.add_argument(
        "--server-side-binding",
        action="store_true",
        help="DATABASES OPTIONS server_side_binding=True, prepare_threshold=5",
    )
    parser.add_argument(
        "--async-commit",
        action="store_true",
        help="also measure with synchronous_commit=off (commits do not wait for the disk flush)",
    )
    parser.add_argument("--debug", action="store_true", help="keep DEBUG on (Django records every query)")
    args = parser.parse_args()

    with bench_database(args.database):
        from django.conf import settings
        from django.db import connections

        if args.server_side_binding:
            # psycopg binds parameters in the server and prepares every statement run 5+ times (the services'
            # own PREPARE/EXECUTE steps aside then).
            connections.close_all()
            options = connections["default"].settings_dict.setdefault("OPTIONS", {})
            options.update(server_side_binding=True, prepare_threshold=5)

        from runs.models import Phase, PhaseState

        settings.AUTOPACK = {**settings.AUTOPACK, "ENQUEUE_TASKS": False}
        # Workers run with DEBUG off in production; with it on, Django formats and keeps every query's SQL
        # (about 1 ms of worker CPU per cycle here). ``--debug`` measures with it on.
        settings.DEBUG = args.debug
        populate(runs=args.runs, phases=args.phases)
        queued = Phase.objects.filter(state=PhaseState.QUEUED).count()
        print(f"{queued} queued phases in {args.runs} running runs")

        for prepared in (False, True):
            server = statement_times(200, prepared=prepared)
            print(
                f"claim statement in PostgreSQL (plan + execute{', prepared' if prepared else ''}), {queued} queued: "
                f"p50 {percentile(server, 0.5):.2f} ms, p99 {percentile(server, 0.99):.2f} ms"
            )
        latencies = latency_at_depth(args.latency_samples)
        ms = [value * 1000 for value in latencies]
        print(
            f"claim latency, 1 process, {queued} queued: p50 {percentile(ms, 0.5):.2f} ms, "
            f"p99 {percentile(ms, 0.99):.2f} ms ({len(ms)} claims)"
        )
        for async_commit in (False, True) if args.async_commit else (False,):
            label = "synchronous_commit=off" if async_commit else "durable commits"
            before = Phase.objects.filter(state=PhaseState.QUEUED).count()
            cycles, latencies, elapsed, cpu = run_workers(args.processes, args.seconds, async_commit)
            ms = [value * 1000 for value in latencies]
            left = Phase.objects.filter(state=PhaseState.QUEUED).count()
            print(
                f"{args.processes} processes, {label}: {cycles} claim+finish cycles in {elapsed:.1f}s = "
                f"{cycles / elapsed:.0f}/s (queue {before} -> {left}); claim latency p50 "
                f"{percentile(ms, 0.5):.2f} ms, p99 {percentile(ms, 0.99):.2f} ms"
            )
            client, server = (value / max(cycles, 1) for value in cpu)
            print(
                f"  CPU per cycle: worker {client * 1000:.2f} ms + its PostgreSQL backend {server * 1000:.2f} ms, so "
                f"{os.cpu_count()} cores left to this benchmark alone would allow about "
                f"{os.cpu_count() / (client + server):.0f} cycles/s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
