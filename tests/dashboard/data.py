"""Test data for dashboard and browser tests: attempts with a full story, telemetry rows, ledger entries."""

from __future__ import annotations

import itertools
import zlib
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.utils import timezone

from research.models import BuildHistoryEntry, EntryStatus
from research.services import refresh_search_vectors
from runs.models import Attempt, AttemptEvent, AttemptStatus, Phase, Run
from telemetry import services as telemetry
from telemetry.models import LlmUsageEvent, TokenEstimationEvent
from tests.factories import make_run

SAMPLE_DIFF = """diff --git a/src/p1.py b/src/p1.py
new file mode 100644
--- /dev/null
+++ b/src/p1.py
@@ -0,0 +1,2 @@
+def greet(name: str) -> str:
+    return f"hello {name}"
"""

_request_numbers = itertools.count(1)

CI_DELTA = {
    "fixed": ["tests/test_p1.py::test_greet"],
    "still_failing": ["tests/test_legacy.py::test_old_bug"],
    "new_failures": ["tests/test_p1.py::test_greet_shouts"],
    "flaky": ["tests/test_net.py::test_timeout"],
    "severity": "low",
    "collection_errors": [],
    "passed": 11,
    "skipped": False,
}
CI_LOG_TAIL = "FAILED tests/test_p1.py::test_greet_shouts - AssertionError: 'hello bob' != 'HELLO BOB'"
VERDICT = {
    "approved": False,
    "parsed": True,
    "summary": "Greeting does not shout.",
    "issues": [
        {"severity": "major", "category": "correctness", "description": "Must upper-case", "file_path": "src/p1.py"}
    ],
}
ADVICE = {"action": "retry_with_fix", "confidence": 0.8, "rationale": "Spec says upper case", "builder_hint": "x"}
# The shapes runs/engine/pipeline.py writes: short figures in the summary, details in the stage events.
SAMPLE_SUMMARY = {
    "apply": {"touched": ["src/p1.py"], "violations": 1},
    "parse": {"operations": 1, "truncated": False, "dropped_chars": 0, "format": "ndjson"},
    "ci": CI_DELTA,
    "audit": VERDICT,
    "doctor": ADVICE,
    "decision": {"kind": "retry", "source": "doctor", "escalate_model": False, "replan": False},
}
APPLY_EVENT = {
    "applied": False,
    "ok": False,
    "touched": [],
    "violations": [{"path": "../etc/passwd", "rule": "escape", "reason": "escapes the worktree", "detail": ""}],
}
STAGE_EVENTS = [
    ("context", "built", {"files": 3}, None),
    ("builder", "prompt", {"max_tokens": 8000}, "SYSTEM: you are the builder. Write src/p1.py"),
    ("builder", "response", {"stop_reason": "end_turn"}, '{"op":"write","path":"src/p1.py"}'),
    ("parse", "parsed", {"format": "ndjson", "operations": [{"op": "write", "path": "src/p1.py"}]}, None),
    ("apply", "refused", APPLY_EVENT, SAMPLE_DIFF),
    ("ci", "delta", {**CI_DELTA, "after": {"exit_code": 1}}, CI_LOG_TAIL),
    ("auditor", "prompt", {"max_tokens": 4096}, "Review this diff"),
    ("auditor", "response", {"stop_reason": "end_turn"}, '{"approved": false}'),
    ("audit", "rejected", VERDICT, None),
    ("doctor", "retry_with_fix", ADVICE, None),
    ("policy", "retry", {"kind": "retry", "source": "doctor", "reason": "New failing test test_greet_shouts"}, None),
]


def add_attempt(phase: Phase, *, number: int = 1, llm_calls: int = 2) -> Attempt:
    """An attempt with a diff, a summary, compressed prompt/response events and priced LLM calls."""
    started = timezone.now() - timedelta(minutes=3)
    attempt = Attempt.objects.create(
        phase=phase,
        number=number,
        claim_epoch=number,
        worker="worker:test-1",
        status=AttemptStatus.FAILED,
        outcome="retry",
        model="claude-sonnet-4-5",
        input_tokens=12_000,
        output_tokens=3_400,
        diff=SAMPLE_DIFF,
        summary=SAMPLE_SUMMARY,
        started_at=started,
        finished_at=started + timedelta(seconds=95),
        duration_ms=95_000,
    )
    for seq, (stage, kind, data, text) in enumerate(STAGE_EVENTS, start=1):
        blob = zlib.compress(text.encode()) if text else None
        AttemptEvent.objects.create(attempt=attempt, seq=seq, stage=stage, kind=kind, data=data, blob=blob)
    run = phase.run
    # Rows written directly: the page reads usage rows, however telemetry.services came to write them.
    LlmUsageEvent.objects.bulk_create(
        LlmUsageEvent(
            request_id=f"req-{attempt.pk}-{call}",
            provider="anthropic",
            model="claude-sonnet-4-5",
            role="builder" if call == 0 else "auditor",
            input_tokens=6000,
            output_tokens=1700,
            total_tokens=7700,
            cost_usd=Decimal("0.0435"),
            latency_ms=2300,
            stop_reason="max_tokens" if call == 0 else "end_turn",
            project_id=run.project_id,
            run_id=run.pk,
            phase_id=phase.pk,
            attempt_id=attempt.pk,
        )
        for call in range(llm_calls)
    )
    return attempt


def make_runs(project, count: int, *, phases: int = 3) -> list[Run]:
    return [make_run(project, phases=phases) for _ in range(count)]


def add_usage(project, *, model: str, role: str, tokens: int, day: date | None = None, calls: int = 1) -> None:
    """LLM calls recorded through telemetry.services (which keeps the rollups the pages read)."""
    occurred = datetime.combine(day or timezone.now().date(), time(12, 0), tzinfo=UTC)
    for _ in range(calls):
        telemetry.usage_record(
            provider="anthropic",
            model=model,
            role=role,
            request_id=f"req-{next(_request_numbers)}",
            input_tokens=tokens * 3 // 4,
            output_tokens=tokens - tokens * 3 // 4,
            latency_ms=1500,
            stop_reason="end_turn",
            project_id=project.pk,
            occurred_at=occurred,
        )


def add_estimate(project, *, predicted: int, actual: int, truncated: bool = False, category: str = "backend") -> None:
    smape = 200 * abs(actual - predicted) / (actual + predicted)
    TokenEstimationEvent.objects.create(
        project_id=project.pk,
        category=category,
        complexity="medium",
        deliverable_count=2,
        predicted=predicted,
        actual=actual,
        selected_budget=predicted * 2,
        final_ceiling=64000,
        truncated=truncated,
        smape=smape,
        underestimated=actual > predicted,
    )


def add_entry(project, build_id: str, title: str, *, status=EntryStatus.COMPLETE, day=date(2025, 1, 2), **fields):
    """A ledger entry, made searchable the way the research services do it (a no-op on SQLite)."""
    entry = BuildHistoryEntry.objects.create(
        project=project,
        build_id=build_id,
        title=title,
        date=day,
        status=status,
        raw_markdown=f"## {build_id}: {title}\n",
        entry_key=f"{build_id}-{title}",
        content_hash=build_id,
        **fields,
    )
    refresh_search_vectors(project=project)
    return entry
