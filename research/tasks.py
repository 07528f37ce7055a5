"""django-q2 tasks of the research app: take primary keys, call one service, safe to deliver twice."""

from __future__ import annotations

from research.services import ledger_append_for_run, memory_record_attempt, memory_record_run


def run_finished(run_id: int) -> int:
    """After a run finishes: write it to the ledger (idempotent) and remember its summary."""
    entry = ledger_append_for_run(run_id=run_id)
    memory_record_run(run_id=run_id)
    return entry.pk


def attempt_finished(attempt_id: int) -> list[int]:
    """After an attempt finishes: remember its failure and the Doctor's hint (identical texts once)."""
    return memory_record_attempt(attempt_id=attempt_id)
