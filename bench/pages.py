"""Server time and SQL queries per dashboard page, with 1,000 runs and 100,000 LLM usage events (PostgreSQL).

    .venv/bin/python bench/pages.py                      # 1,000 runs, 100,000 usage events, 30 requests a page
    .venv/bin/python bench/pages.py --runs 200 --events 20000 --repeat 10    # quicker

Creates its own database (``bench_pages`` on ``postgres://postgres@127.0.0.1:5432``, or ``BENCH_PG_SERVER``),
fills it, signs in as a project operator (the permission-checked path, not staff) and requests every page
through Django's test client, i.e. the whole middleware, view, ORM and template stack without a network
hop. Prints median and p95 server time and the number of SQL queries per page; target: under 150 ms.
The database is dropped at the end (``BENCH_KEEP_DATABASE=1`` keeps it).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import zlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _pgdb import ROOT, bench_database  # noqa: E402

TARGET_MS = 150
PHASES_PER_RUN = 5
MODELS = ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-1")
ROLES = ("builder", "builder", "auditor", "doctor")
RUN_STATES = ("complete", "complete", "failed", "cancelled", "running", "queued", "paused")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--estimates", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per page")
    parser.add_argument("--database", default="bench_pages")
    return parser.parse_args()


def load(*, runs: int, events: int, estimates: int) -> dict[str, object]:
    """Bulk-insert the data set; returns what the pages need (user, a busy run, its phase, a ledger entry)."""
    from accounts.models import Membership, Role, User
    from runs.models import Attempt, AttemptEvent, Phase, Project, Run, Tier

    rng = random.Random(7)
    now = datetime.now(UTC)
    project = Project.objects.create(name="Bench", slug="bench", repository_path="/nonexistent")
    other = Project.objects.create(name="Other", slug="other", repository_path="/nonexistent")
    user = User.objects.create_user(username="operator", password="bench-password")
    Membership.objects.create(user=user, project=project, role=Role.OPERATOR)
    run_rows = []
    for number in range(runs):
        state = RUN_STATES[number % len(RUN_STATES)]
        started = now - timedelta(hours=number)
        run_rows.append(
            Run(
                project=project if number % 10 else other,
                name=f"bench-run-{number}",
                state=state,
                plan_sha256=f"{number:064x}",
                branch=f"autopack/bench-{number}",
                phases_total=PHASES_PER_RUN,
                phases_done=PHASES_PER_RUN if state == "complete" else number % PHASES_PER_RUN,
                tokens_used=rng.randint(10_000, 4_000_000),
                cost_usd=Decimal(rng.randint(1, 4000)) / 100,
                created_at=started - timedelta(minutes=5),
                started_at=None if state == "queued" else started,
                finished_at=started + timedelta(minutes=40) if state in ("complete", "failed", "cancelled") else None,
            )
        )
    run_objects = Run.objects.bulk_create(run_rows, batch_size=1000)
    tiers = Tier.objects.bulk_create(
        [
            Tier(run=run, index=index, tier_id=f"T{index + 1}", name=f"Tier {index + 1}")
            for run in run_objects
            for index in range(2)
        ],
        batch_size=2000,
    )
    tier_by_run = {}
    for tier in tiers:
        tier_by_run.setdefault(tier.run_id, []).append(tier)
    phase_rows = []
    for run in run_objects:
        for sequence in range(PHASES_PER_RUN):
            done = sequence < run.phases_done
            current = sequence == run.phases_done and run.state == "running"
            phase_rows.append(
                Phase(
                    run=run,
                    tier=tier_by_run[run.pk][0 if sequence < 3 else 1],
                    phase_id=f"P{sequence + 1}",
                    index=sequence if sequence < 3 else sequence - 3,
                    sequence=sequence,
                    name=f"Phase {sequence + 1}",
                    state="complete" if done else "executing" if current else "queued",
                    current_stage="ci" if current else "",
                    attempt_count=1 if done or current else 0,
                )
            )
    Phase.objects.bulk_create(phase_rows, batch_size=5000)
    busy = next(run for run in run_objects if run.state == "running" and run.project_id == project.pk)
    phase = Phase.objects.get(run=busy, state="executing")
    attempts = Attempt.objects.bulk_create(
        [
            Attempt(phase=phase, number=n, claim_epoch=n, status="failed", diff=_diff(n), summary=_summary(n))
            for n in range(1, 5)
        ]
    )
    AttemptEvent.objects.bulk_create(
        [
            AttemptEvent(
                attempt=attempt,
                seq=seq,
                stage=stage,
                kind=kind,
                data={"n": seq},
                blob=zlib.compress(("prompt text " * 2000).encode()) if kind == "prompt" else None,
            )
            for attempt in attempts
            for seq, (stage, kind) in enumerate(
                [
                    ("context", "built"),
                    ("builder", "prompt"),
                    ("builder", "response"),
                    ("apply", "applied"),
                    ("ci", "delta"),
                    ("audit", "rejected"),
                ],
                1,
            )
        ]
    )
    _load_usage(events=events, runs=run_objects, busy=busy, attempt=attempts[-1], rng=rng, now=now)
    _load_estimates(count=estimates, project=project, rng=rng, now=now)
    entry = _load_ledger(project)
    return {"user": user, "run": busy, "phase": phase, "entry": entry}


def _diff(number: int) -> str:
    lines = "".join(f"+line {i} of attempt {number}\n" for i in range(300))
    return f"--- a/src/app.py\n+++ b/src/app.py\n@@ -0,0 +1,300 @@\n{lines}"


def _summary(number: int) -> dict:
    return {
        "apply": {"touched": ["src/app.py"], "violations": 0},
        "ci": {"new_failures": [f"tests/test_app.py::test_{number}"], "still_failing": [], "fixed": [], "flaky": []},
        "audit": {"approved": False, "issues": [{"severity": "major", "description": "wrong"}], "summary": "no"},
    }


def _load_usage(*, events: int, runs: list, busy, attempt, rng: random.Random, now: datetime) -> None:
    from telemetry.models import LlmUsageEvent
    from telemetry.services import rollups_rebuild

    batch = []
    for number in range(events):
        run = busy if number % 100 == 0 else runs[number % len(runs)]
        model = MODELS[number % len(MODELS)]
        input_tokens, output_tokens = rng.randint(500, 20_000), rng.randint(100, 8_000)
        batch.append(
            LlmUsageEvent(
                request_id=f"bench-{number}",
                occurred_at=now - timedelta(minutes=number * 60 * 24 * 90 // max(events, 1)),
                provider="anthropic",
                model=model,
                role=ROLES[number % len(ROLES)],
                project_id=run.project_id,
                run_id=run.pk,
                attempt_id=attempt.pk if run is busy and number % 1000 == 0 else None,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                total_tokens=input_tokens + output_tokens,
                cost_usd=Decimal(input_tokens * 3 + output_tokens * 15) / 1_000_000,
                latency_ms=rng.randint(300, 30_000),
                stop_reason="end_turn",
            )
        )
        if len(batch) == 10_000:
            LlmUsageEvent.objects.bulk_create(batch)
            batch = []
    LlmUsageEvent.objects.bulk_create(batch)
    rollups_rebuild()


def _load_estimates(*, count: int, project, rng: random.Random, now: datetime) -> None:
    from telemetry.models import PhaseOutcomeEvent, TokenEstimationEvent

    categories = ("backend", "frontend", "tests", "docs", "config")
    rows, outcomes = [], []
    for number in range(count):
        predicted = rng.randint(1_000, 30_000)
        actual = max(50, int(predicted * rng.uniform(0.5, 1.4)))
        truncated = rng.random() < 0.03
        rows.append(
            TokenEstimationEvent(
                occurred_at=now - timedelta(minutes=number * 7),
                project_id=project.pk,
                category=categories[number % 5],
                complexity="medium",
                deliverable_count=1 + number % 9,
                predicted=predicted,
                actual=actual,
                selected_budget=int(predicted * 1.2),
                final_ceiling=64_000,
                truncated=truncated,
                smape=200 * abs(actual - predicted) / (actual + predicted),
                underestimated=actual > predicted,
            )
        )
        outcomes.append(
            PhaseOutcomeEvent(
                occurred_at=now - timedelta(minutes=number * 7),
                project_id=project.pk,
                outcome=("complete", "retry", "blocked")[number % 3],
                reason=f"reason {number % 17}",
                error_signature=f"sig{number % 17}",
                tokens=actual,
            )
        )
    TokenEstimationEvent.objects.bulk_create(rows, batch_size=5000)
    PhaseOutcomeEvent.objects.bulk_create(outcomes, batch_size=5000)


def _load_ledger(project):
    from research.models import BuildHistoryEntry
    from research.services import ledger_import

    ledger = ROOT / "tests" / "fixtures" / "BUILD_HISTORY.md"
    if ledger.exists():
        ledger_import(paths=[ledger], project=project)
    return BuildHistoryEntry.objects.filter(project=project).order_by("-date", "-id").first()


def measure(client, url: str, *, repeat: int, headers: dict | None = None) -> tuple[list[float], int, int]:
    from django.db import connection

    for _ in range(2):  # warm caches (templates, connection)
        client.get(url, headers=headers or {})
    executed: list[str] = []

    def count(execute, sql, params, many, context):  # noqa: ANN001 - Django's execute-wrapper signature
        executed.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        response = client.get(url, headers=headers or {})
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        client.get(url, headers=headers or {})
        timings.append((time.perf_counter() - started) * 1000)
    return timings, len(executed), response.status_code


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as data_dir, bench_database(args.database):
        from django.conf import settings
        from django.test import Client
        from django.test.utils import setup_test_environment

        settings.DATA_DIR = Path(data_dir)
        setup_test_environment()  # allows "testserver" as a host, as the test client expects
        started = time.perf_counter()
        data = load(runs=args.runs, events=args.events, estimates=args.estimates)
        print(
            f"loaded {args.runs} runs, {args.events} usage events, {args.estimates} estimates "
            f"in {time.perf_counter() - started:.1f}s (PostgreSQL, database {args.database})"
        )
        client = Client()
        client.force_login(data["user"])
        run, phase, entry = data["run"], data["phase"], data["entry"]
        pages = [
            ("runs list", "/runs/", None),
            ("runs list, live partial (htmx)", "/runs/", {"HX-Request": "true"}),
            ("runs list, filtered + search", "/runs/?state=complete&q=run-9", None),
            ("runs list, page 10", "/runs/?page=10", None),
            ("run detail", f"/runs/{run.pk}/", None),
            ("run detail, live partial (htmx)", f"/runs/{run.pk}/", {"HX-Request": "true"}),
            ("phase/attempt detail", f"/runs/{run.pk}/phases/{phase.pk}/", None),
            ("telemetry, 30 days", "/telemetry/", None),
            ("telemetry, 365 days", "/telemetry/?days=365", None),
            ("build history", "/history/", None),
            ("build history, search", "/history/?q=token+budget", None),
        ]
        if entry is not None:
            pages.append(("build history entry", f"/history/{entry.pk}/", None))
        print(f"\n{'page':36} {'status':>6} {'queries':>7} {'median ms':>10} {'p95 ms':>8}  (target < {TARGET_MS} ms)")
        worst = 0.0
        for label, url, headers in pages:
            timings, queries, status = measure(client, url, repeat=args.repeat, headers=headers)
            median = statistics.median(timings)
            p95 = sorted(timings)[max(0, int(len(timings) * 0.95) - 1)]
            worst = max(worst, median)
            flag = "" if median < TARGET_MS else "  OVER TARGET"
            print(f"{label:36} {status:>6} {queries:>7} {median:>10.1f} {p95:>8.1f}{flag}")
        print(
            f"\nslowest page median: {worst:.1f} ms ({'within' if worst < TARGET_MS else 'over'} the {TARGET_MS} ms target)"
        )


if __name__ == "__main__":
    main()
