"""Telemetry at scale: load N LLM usage events into PostgreSQL and time the read endpoints.

    .venv/bin/python bench/telemetry_scale.py --events 10000000
    .venv/bin/python bench/telemetry_scale.py --events 100000 --quick      # CI: well under a minute

It creates its own database (``bench_telemetry`` by default, on the server of ``BENCH_DATABASE_URL`` or
``postgres://postgres@127.0.0.1:5432``), drops it at the end (``--keep`` leaves it), and touches no other.
Events are generated server-side with ``INSERT … SELECT generate_series`` (secondary indexes dropped during
the load and rebuilt after), rollups are rebuilt in bulk, then each endpoint is called through the real URL
conf, serializers and pagination with an authenticated staff user, and p50/p95 are printed:

- usage by period (day × model × role over everything; month × project), target p95 ≤ 200 ms at 10 M;
- run status of a run with 100,000 events;
- consolidated metrics of that run;
- the event list at page 1 and at page 10,000 (keyset pagination: the deep page should cost ≤ 2× page 1).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
PAGE_SIZE = 50
BIG_RUN_EVENTS = 100_000
EVENTS_PER_RUN = 1_000
PROJECTS = 20
MODELS = ("claude-haiku-4-5", "claude-sonnet-4-5-20250929", "claude-opus-4-1", "claude-sonnet-4-5")
ROLES = ("builder", "builder", "auditor", "doctor", "builder", "auditor", "other", "builder")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI)")
    parser.add_argument("--repeat", type=int, default=None, help="requests per endpoint (default 40, quick 12)")
    parser.add_argument("--database", default="bench_telemetry")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="measure a database kept by --keep without reloading")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object too")
    return parser.parse_args(argv)


def server_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432").rstrip("/")


def database_url(name: str) -> str:
    parts = urlsplit(server_url())
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))


def recreate_database(name: str) -> None:
    import psycopg

    if not name.startswith("bench_"):
        raise SystemExit("refusing to drop a database whose name does not start with bench_")
    with psycopg.connect(database_url("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(database_url("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def setup_django(name: str) -> None:
    os.environ["DATABASE_URL"] = database_url(name)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "autopack_site.settings")
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    sys.path.insert(0, str(ROOT))
    import django
    from django.conf import settings

    django.setup()
    # Serve only the telemetry API (same views, middleware and settings), so that the figures do not depend on
    # every other app's URLs importing cleanly.
    urls = types.ModuleType("telemetry_scale_urls")
    from django.urls import include, path

    urls.urlpatterns = [path("api/telemetry/", include("telemetry.api_urls"))]
    sys.modules[urls.__name__] = urls
    settings.ROOT_URLCONF = urls.__name__


# --- Loading ------------------------------------------------------------------------------------------------


def create_fixtures(events: int) -> dict:
    """Projects, runs (one with 100,000 events and 25 phases), a staff user and a member of 5 projects."""
    from accounts.models import Membership, User
    from runs.models import Phase, PhaseState, Project, Run, RunState, Tier

    projects = Project.objects.bulk_create(
        Project(name=f"Bench {index}", slug=f"bench-{index}", repository_path=f"/srv/bench-{index}")
        for index in range(PROJECTS)
    )
    big_events = min(BIG_RUN_EVENTS, events)
    run_count = 1 + max(0, -(-(events - big_events) // EVENTS_PER_RUN))
    runs = Run.objects.bulk_create(
        Run(project=projects[index % PROJECTS], name=f"run {index}", state=RunState.COMPLETE, plan_sha256="0" * 64)
        for index in range(run_count)
    )
    big_run = runs[0]
    tier = Tier.objects.create(run=big_run, index=0, tier_id="T1", name="tier")
    Phase.objects.bulk_create(
        Phase(
            run=big_run,
            tier=tier,
            phase_id=f"P{index}",
            index=index,
            sequence=index,
            name=f"phase {index}",
            state=PhaseState.COMPLETE if index < 20 else PhaseState.QUEUED,
        )
        for index in range(25)
    )
    staff = User.objects.create(username="bench-staff", is_staff=True)
    member = User.objects.create(username="bench-member")
    Membership.objects.bulk_create(Membership(user=member, project=project) for project in projects[:5])
    return {
        "project_ids": [project.pk for project in projects],
        "first_run_id": runs[0].pk,
        "big_run_id": big_run.pk,
        "big_run_events": big_events,
        "staff_id": staff.pk,
        "member_id": member.pk,
    }


def existing_fixtures() -> dict:
    """The fixture ids of a database loaded by an earlier ``--keep`` run."""
    from accounts.models import User
    from runs.models import Project, Run
    from telemetry.models import RunUsageRollup

    first_run = Run.objects.order_by("pk").first()
    return {
        "project_ids": list(Project.objects.order_by("pk").values_list("pk", flat=True)),
        "first_run_id": first_run.pk,
        "big_run_id": first_run.pk,
        "big_run_events": sum(RunUsageRollup.objects.filter(run_id=first_run.pk).values_list("events", flat=True)),
        "staff_id": User.objects.get(username="bench-staff").pk,
        "member_id": User.objects.get(username="bench-member").pk,
    }


def _price_case(column_prices: dict[str, tuple]) -> str:
    """SQL that prices a row like ``telemetry.pricing`` does (same table, computed server-side for the load)."""
    parts = []
    for model, (inp, out, write, read) in column_prices.items():
        parts.append(
            f"WHEN '{model}' THEN round((inp * {inp} + outp * {out} + COALESCE(cw, 0) * {write} "
            f"+ COALESCE(cr, 0) * {read}) / 1000000.0, 6)"
        )
    return "CASE WHEN inp IS NULL OR outp IS NULL THEN NULL ELSE CASE model " + " ".join(parts) + " END END"


def load_events(events: int, fixtures: dict) -> None:
    from django.db import connection

    from telemetry import pricing
    from telemetry.models import LlmUsageEvent

    table = LlmUsageEvent._meta.db_table
    prices = {}
    for model in MODELS:
        price = pricing.model_price(model)
        prices[model] = (
            price.input_per_mtok,
            price.output_per_mtok,
            price.cache_write_per_mtok,
            price.cache_read_per_mtok,
        )
    price_table_id = pricing.model_price(MODELS[0]).table_id
    models_sql = "ARRAY[" + ",".join(f"'{model}'" for model in MODELS) + "]"
    roles_sql = "ARRAY[" + ",".join(f"'{role}'" for role in ROLES) + "]"
    projects_sql = "ARRAY[" + ",".join(str(pk) for pk in fixtures["project_ids"]) + "]"
    big, first_run = fixtures["big_run_events"], fixtures["first_run_id"]
    # Runs were created in order, so ids are consecutive from first_run; run k gets its project k % PROJECTS,
    # matching create_fixtures. One call in 100 has no token split, one in 10 no cache figures.
    generated = f"""
        SELECT g,
               timestamptz '2025-12-01 00:00:00+00' + (g * interval '1 second') * (31536000.0 / {events}) AS at,
               ({models_sql})[1 + g % {len(MODELS)}] AS model,
               ({roles_sql})[1 + (g / 7) % {len(ROLES)}] AS role,
               CASE WHEN g <= {big} THEN 0 ELSE 1 + (g - {big} - 1) / {EVENTS_PER_RUN} END AS run_index,
               CASE WHEN g % 100 = 0 THEN NULL ELSE 800 + (g * 7919) % 30000 END AS inp,
               CASE WHEN g % 100 = 0 THEN NULL ELSE 150 + (g * 104729) % 9000 END AS outp,
               CASE WHEN g % 10 = 0 THEN NULL ELSE (g * 31) % 4000 END AS cw,
               CASE WHEN g % 10 = 0 THEN NULL ELSE (g * 17) % 20000 END AS cr,
               CASE WHEN g % 100 = 0 THEN 12000 END AS provider_total
        FROM generate_series(1::bigint, {events}::bigint) AS g
    """
    insert = f"""
        INSERT INTO {table} (id, request_id, occurred_at, provider, model, role, project_id, run_id, phase_id,
            attempt_id, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, total_tokens,
            cost_usd, price_table_id, latency_ms, stop_reason)
        SELECT g, 'bench-' || g, at, 'anthropic', model, role,
               ({projects_sql})[1 + run_index % {PROJECTS}], {first_run} + run_index, NULL, NULL,
               inp, outp, cw, cr,
               CASE WHEN inp IS NULL THEN provider_total ELSE inp + outp + COALESCE(cw, 0) + COALESCE(cr, 0) END,
               {_price_case(prices)},
               CASE WHEN inp IS NULL THEN NULL ELSE {price_table_id} END,
               300 + (g * 13) % 20000,
               CASE WHEN g % 50 = 0 THEN 'max_tokens' ELSE 'end_turn' END
        FROM ({generated}) AS generated
    """
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '512MB'")
        cursor.execute("SET synchronous_commit = off")
        dropped = drop_secondary_indexes(cursor, table)
        cursor.execute(insert)
        for statement in dropped:
            cursor.execute(statement)
        cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {events})")


def drop_secondary_indexes(cursor, table: str) -> list[str]:
    """Drop the unique constraint and indexes (not the primary key); return the statements that restore them."""
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'u'",
        [table],
    )
    constraints = cursor.fetchall()
    restore = []
    for name, definition in constraints:
        cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        restore.append(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname NOT LIKE %s", [table, "%pkey"]
    )
    for name, definition in cursor.fetchall():
        cursor.execute(f'DROP INDEX "{name}"')
        restore.append(definition)
    return restore


def load_side_events(fixtures: dict) -> None:
    """What the consolidated metrics of the big run also read: context cuts, hardening, an A/B pair."""
    from telemetry.models import AbPair, AbTestResult, ContextBudgetEvent, FailureHardeningEvent

    run_id = fixtures["big_run_id"]
    ContextBudgetEvent.objects.bulk_create(
        ContextBudgetEvent(
            run_id=run_id, project_id=fixtures["project_ids"][0], tokens_included=40_000, tokens_avoided=3_000 + index
        )
        for index in range(2_000)
    )
    FailureHardeningEvent.objects.bulk_create(
        FailureHardeningEvent(
            run_id=run_id,
            project_id=fixtures["project_ids"][0],
            pattern="missing_python_dependency",
            doctor_tokens_avoided_estimate=11_000,
            estimate_source="run_local",
            estimate_sample_size=100,
        )
        for _ in range(200)
    )
    result = AbTestResult.objects.create(valid=True, pair_count=1, valid_pair_count=1, deltas={})
    AbPair.objects.create(
        result=result, control_run_id=run_id + 1, treatment_run_id=run_id, valid=True, token_delta=-12_345
    )


def finish_load(events: int, fixtures: dict) -> dict[str, float]:
    from django.db import connection

    from telemetry.bulk import rebuild_rollups

    timings = {}
    started = time.perf_counter()
    load_events(events, fixtures)
    timings["load_events_s"] = time.perf_counter() - started
    started = time.perf_counter()
    rebuild_rollups()
    timings["rebuild_rollups_s"] = time.perf_counter() - started
    load_side_events(fixtures)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    timings["vacuum_analyze_s"] = time.perf_counter() - started
    return timings


# --- Measuring ----------------------------------------------------------------------------------------------


def cursor_for_position(position: int) -> str:
    """The cursor DRF's CursorPagination would hand out for 'the rows after id ``position``' (ordering -id)."""
    return base64.b64encode(urlencode({"p": str(position)}).encode("ascii")).decode("ascii")


def deep_page_cursor(page: int) -> str:
    from django.db import connection

    from telemetry.models import LlmUsageEvent

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {LlmUsageEvent._meta.db_table} ORDER BY id DESC OFFSET %s LIMIT 1",
            [(page - 1) * PAGE_SIZE - 1],
        )
        return cursor_for_position(cursor.fetchone()[0])


def postgres_cpu_seconds() -> float | None:
    """CPU time used so far by this connection's PostgreSQL backend (None when the server is not local)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def timed(call: Callable[[], object], repeat: int) -> dict[str, float]:
    """Wall-clock p50/p95/max, plus CPU per request (this process + its PostgreSQL backend).

    On a shared machine wall-clock time includes waiting for a CPU; the CPU figure does not, so it shows
    what the endpoint itself costs.
    """
    call()  # warm caches and connections; the figures are for a warm server
    samples = []
    cpu_started, backend_started = time.process_time(), postgres_cpu_seconds()
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    client_cpu, backend_ended = time.process_time() - cpu_started, postgres_cpu_seconds()
    # The backend's figure is only meaningful if the same connection served every request.
    backend_cpu = backend_ended - backend_started if None not in (backend_started, backend_ended) else 0.0
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 1),
        "p95_ms": round(samples[min(len(samples) - 1, int(round(0.95 * (len(samples) - 1))))], 1),
        "max_ms": round(samples[-1], 1),
        "cpu_ms": round((client_cpu + max(backend_cpu, 0.0)) * 1000 / repeat, 1),
    }


def measure(fixtures: dict, events: int, repeat: int) -> dict[str, dict]:
    from rest_framework.test import APIClient

    from accounts.models import User

    staff, member = APIClient(), APIClient()
    staff.force_authenticate(User.objects.get(pk=fixtures["staff_id"]))
    member.force_authenticate(User.objects.get(pk=fixtures["member_id"]))
    run = fixtures["big_run_id"]
    last_page = max(1, events // PAGE_SIZE)
    deep_page = min(10_000, last_page)
    deep_cursor = deep_page_cursor(deep_page)
    # The big run holds ids 1..big_run_events, so its page k starts right below id big - (k - 1) * PAGE_SIZE + 1.
    big_deep_page = max(1, min(deep_page, fixtures["big_run_events"] // PAGE_SIZE))
    big_deep_cursor = cursor_for_position(fixtures["big_run_events"] - (big_deep_page - 1) * PAGE_SIZE + 1)

    def get(client: APIClient, url: str) -> Callable[[], object]:
        def call() -> object:
            response = client.get(url)
            if response.status_code != 200:
                raise SystemExit(f"{url} answered {response.status_code}: {response.content[:300]!r}")
            return response

        return call

    endpoints = {
        "usage day x model x role (staff, all time)": get(
            staff, "/api/telemetry/usage/?period=day&group_by=model,role"
        ),
        "usage day x model x role (staff, last 90 days)": get(
            staff, "/api/telemetry/usage/?period=day&group_by=model,role&since=2026-09-01"
        ),
        "usage month x project (staff)": get(staff, "/api/telemetry/usage/?period=month&group_by=project"),
        "usage month x provider x model x role x project (staff)": get(
            staff, "/api/telemetry/usage/?period=month&group_by=provider,model,role,project"
        ),
        "usage week x model (member, 5 projects)": get(member, "/api/telemetry/usage/?period=week&group_by=model"),
        f"run status ({fixtures['big_run_events']:,} events)": get(staff, f"/api/telemetry/runs/{run}/status/"),
        f"consolidated metrics ({fixtures['big_run_events']:,} events)": get(
            staff, f"/api/telemetry/runs/{run}/metrics/"
        ),
        "event list page 1": get(staff, "/api/telemetry/events/"),
        f"event list page {deep_page:,}": get(staff, f"/api/telemetry/events/?cursor={deep_cursor}"),
        "event list page 1 (member)": get(member, "/api/telemetry/events/"),
        f"event list of the big run, page {big_deep_page:,}": get(
            staff, f"/api/telemetry/events/?run={run}&cursor={big_deep_cursor}"
        ),
    }
    return {name: timed(call, repeat) for name, call in endpoints.items()}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    repeat = args.repeat or (12 if args.quick else 40)
    if not args.reuse:
        recreate_database(args.database)
    setup_django(args.database)
    from django.core.management import call_command

    timings: dict[str, float] = {}
    try:
        if args.reuse:
            fixtures = existing_fixtures()
        else:
            started = time.perf_counter()
            call_command("migrate", verbosity=0)
            fixtures = create_fixtures(args.events)
            timings = finish_load(args.events, fixtures)
            timings["setup_total_s"] = time.perf_counter() - started
        figures = measure(fixtures, args.events, repeat)
    finally:
        if not (args.keep or args.reuse):
            drop_database(args.database)
    report(args.events, repeat, timings, figures)
    if args.json:
        print(json.dumps({"events": args.events, "repeat": repeat, "timings": timings, "endpoints": figures}))
    return {"timings": timings, "endpoints": figures}


def report(events: int, repeat: int, timings: dict[str, float], figures: dict[str, dict]) -> None:
    print(f"telemetry_scale: {events:,} LLM usage events, {repeat} requests per endpoint (after one warm-up)")
    # Wall-clock figures: on a shared machine they include waiting for a CPU, so say how busy it was.
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"  machine: {os.cpu_count()} CPUs, load average {load} (1/5/15 min) at the end of the run")
    for name, seconds in timings.items():
        print(f"  {name:<24} {seconds:8.1f} s")
    print(f"  {'endpoint':<58} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'CPU ms':>8}")
    for name, figure in figures.items():
        row = f"{figure['p50_ms']:>8} {figure['p95_ms']:>8} {figure['max_ms']:>8} {figure['cpu_ms']:>8}"
        print(f"  {name:<58} {row}")
    print("  (CPU ms: mean CPU per request of this process plus its PostgreSQL backend, without waiting time)")
    pages = [figure for name, figure in figures.items() if name.startswith("event list page") and "member" not in name]
    if len(pages) == 2 and pages[0]["p95_ms"]:
        print(f"  deep page / page 1 (p95): {pages[1]['p95_ms'] / pages[0]['p95_ms']:.2f}x (keyset target <= 2x)")


if __name__ == "__main__":
    main()
