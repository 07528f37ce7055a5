"""The one place where run and phase states change.

Each transition locks the row (``select_for_update``), checks the move against the legal-transition
table in ``runs.models``, writes the new state and extra fields, and records a transition row, all in
one transaction. Callers pass who acted (``actor``) and why (``reason``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import connection, models, transaction
from django.utils import timezone

from autopack_site.lib.errors import IllegalTransition, NotFound, StaleEpoch
from autopack_site.lib.prepared import (  # noqa: F401 - re-exported: the lease services import them from here
    execute_prepared,
    numbered_placeholders,
    prepared_statement_lost,
)
from runs.models import (
    PHASE_DONE,
    PHASE_TRANSITIONS,
    Phase,
    PhaseState,
    PhaseTransition,
    Run,
    RunState,
    RunTransition,
)


def _locked_run(run_id: int) -> Run:
    try:
        return Run.objects.select_for_update().get(pk=run_id)
    except Run.DoesNotExist:
        raise NotFound(f"run {run_id} does not exist") from None


def _locked_phase(phase_id: int) -> Phase:
    try:
        return Phase.objects.select_for_update().get(pk=phase_id)
    except Phase.DoesNotExist:
        raise NotFound(f"phase {phase_id} does not exist") from None


def run_transition(
    *,
    run_id: int,
    to_state: str,
    actor: str,
    reason: str = "",
    failure_reason: str = "",
    fields: dict[str, Any] | None = None,
) -> Run:
    """Move a run to ``to_state`` or raise ``IllegalTransition``; returns the updated run."""
    with transaction.atomic():
        run = _locked_run(run_id)
        from_state = run.state
        if not run.can_transition_to(to_state):
            raise IllegalTransition(
                f"run {run_id} cannot go from {from_state} to {to_state}",
                details={"from": from_state, "to": to_state},
            )
        now = timezone.now()
        run.state = to_state
        update = ["state", "updated_at"]
        if to_state == RunState.RUNNING and run.started_at is None:
            run.started_at = now
            update.append("started_at")
        if to_state in (RunState.COMPLETE, RunState.FAILED, RunState.CANCELLED):
            run.finished_at = now
            update.append("finished_at")
        if to_state == RunState.FAILED:
            run.failure_reason = failure_reason
            run.failure_detail = reason
            update += ["failure_reason", "failure_detail"]
        elif to_state == RunState.RUNNING and from_state == RunState.FAILED:
            run.failure_reason, run.failure_detail, run.finished_at = "", "", None
            update += ["failure_reason", "failure_detail", "finished_at"]
        for name, value in (fields or {}).items():
            setattr(run, name, value)
            update.append(name)
        run.save(update_fields=sorted(set(update)))
        RunTransition.objects.create(run=run, from_state=from_state, to_state=to_state, actor=actor, reason=reason)
        if run.is_finished:
            _after_commit_task("research.tasks.run_finished", run.pk)
        return run


def _after_commit_task(task: str, *args: Any) -> None:
    """Hand follow-up work (ledger write-back, memory) to the queue once the state change is durable."""

    def enqueue() -> None:
        from django_q.tasks import async_task

        async_task(task, *args)

    transaction.on_commit(enqueue)


def phase_transition(
    *,
    phase_id: int,
    to_state: str,
    actor: str,
    reason: str = "",
    expected_epoch: int | None = None,
    fields: dict[str, Any] | None = None,
) -> Phase:
    """Move a phase to ``to_state``; with ``expected_epoch``, refuse (``StaleEpoch``) a stale claim."""
    with transaction.atomic():
        phase = _locked_phase(phase_id)
        return phase_transition_locked(
            phase=phase, to_state=to_state, actor=actor, reason=reason, expected_epoch=expected_epoch, fields=fields
        )


def phase_transition_locked(
    *,
    phase: Phase,
    to_state: str,
    actor: str,
    reason: str = "",
    expected_epoch: int | None = None,
    fields: dict[str, Any] | None = None,
) -> Phase:
    """As ``phase_transition`` for a phase the caller already holds locked inside its transaction."""
    from_state = phase.state
    changes = _phase_move(phase, to_state=to_state, expected_epoch=expected_epoch, fields=fields)
    phase.save(update_fields=sorted(changes))
    PhaseTransition.objects.create(
        phase=phase,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        reason=reason,
        claim_epoch=phase.claim_epoch,
    )
    return phase


def _phase_move(
    phase: Phase, *, to_state: str, expected_epoch: int | None = None, fields: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Check the move, apply it to ``phase`` in memory and return every field it changes (the ORM and SQL paths)."""
    if expected_epoch is not None and phase.claim_epoch != expected_epoch:
        raise StaleEpoch(
            f"phase {phase.pk} is at claim epoch {phase.claim_epoch}, not {expected_epoch}",
            details={"current_epoch": phase.claim_epoch, "given_epoch": expected_epoch},
        )
    if not phase.can_transition_to(to_state):
        raise IllegalTransition(
            f"phase {phase.phase_id} cannot go from {phase.state} to {to_state}",
            details={"from": phase.state, "to": to_state},
        )
    changes = phase_move_fields(to_state=to_state, now=timezone.now(), started_at=phase.started_at)
    changes.update(fields or {})
    for name, value in changes.items():
        setattr(phase, name, value)
    return changes


def phase_move_fields(*, to_state: str, now: datetime, started_at: datetime | None = None) -> dict[str, Any]:
    """What every move to ``to_state`` writes besides the caller's fields: state, lease end, timestamps."""
    changes: dict[str, Any] = {"state": to_state, "updated_at": now}
    if to_state == PhaseState.EXECUTING:
        changes["started_at"] = started_at or now
    else:
        # Leaving `executing` always ends the lease: nobody may keep writing as the holder.
        changes.update(lease_owner="", lease_expires_at=None, current_stage="")
    if to_state in PHASE_DONE or to_state in (PhaseState.BLOCKED, PhaseState.FAILED):
        changes["finished_at"] = now
    elif to_state == PhaseState.QUEUED:
        changes["finished_at"] = None
    return changes


# --- PostgreSQL fast path ---------------------------------------------------------------------------------
# The same moves as above for the hot worker paths (claim, finish), without ORM statement compilation and
# with the write and its transition row in one statement. Legality is still checked (in Python for a
# locked phase, in the WHERE clause for a compare-and-swap) and every move still writes its transition row.


def phase_legal_sources(to_state: str) -> list[str]:
    """The states a phase may move to ``to_state`` from: the legality condition of a compare-and-swap write."""
    return sorted(state for state, targets in PHASE_TRANSITIONS.items() if to_state in targets)


def phase_transition_fast(
    *,
    phase: Phase,
    to_state: str,
    actor: str,
    reason: str = "",
    fields: dict[str, Any] | None = None,
    also: str = "",
    also_params: Sequence[Any] = (),
) -> Phase:
    """``phase_transition_locked`` on PostgreSQL in one statement, plus the caller's own writes (``also``).

    ``also`` is more common table expressions (``, name AS (UPDATE ...)``) run in the same statement, so a
    finish writes its attempt, run counters, phase and transition row in one round trip. The phase must be
    locked by the caller's transaction; the UPDATE still compare-and-swaps on the state and claim epoch it
    was read with, and a miss raises ``StaleEpoch`` so the caller's transaction rolls back.
    """
    from_state, epoch = phase.state, phase.claim_epoch
    changes = _phase_move(phase, to_state=to_state, fields=fields)
    assignments, params = sql_assignments(Phase, changes)
    sql = (
        f"WITH moved AS (UPDATE {_table(Phase)} SET {assignments} WHERE id = %s AND state = %s AND claim_epoch = %s "
        f"RETURNING id), moved_log AS ({phase_transition_insert_sql()} "
        f"SELECT id, %s::text, %s::text, %s::text, %s::text, %s::bigint, %s::timestamptz FROM moved){also} "
        "SELECT count(*) FROM moved"
    )
    params += [
        phase.pk,
        from_state,
        epoch,
        from_state,
        to_state,
        actor,
        reason,
        phase.claim_epoch,
        changes["updated_at"],
    ]
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, [*params, *also_params])
        if cursor.fetchone()[0] != 1:
            raise StaleEpoch(
                f"phase {phase.pk} changed under its lock",
                details={"given_epoch": epoch, "from": from_state, "to": to_state},
            )
    return phase


def _table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def sql_assignments(model: type[models.Model], changes: dict[str, Any]) -> tuple[str, list[Any]]:
    """``col = %s, ...`` and its parameters, each value prepared by its field as ``save()`` would."""
    quote = connection.ops.quote_name
    parts, params = [], []
    for name, value in changes.items():
        field = model._meta.get_field(name)
        parts.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    return ", ".join(parts), params


def _transition_insert() -> str:
    return f"INSERT INTO {_table(PhaseTransition)} (phase_id, from_state, to_state, actor, reason, claim_epoch, created_at)"


def phase_transition_insert_sql() -> str:
    """``INSERT INTO <phase transitions> (phase_id, from_state, to_state, actor, reason, claim_epoch, created_at)``,
    for a compare-and-swap statement that records its own transition row (the claim)."""
    return _transition_insert()
