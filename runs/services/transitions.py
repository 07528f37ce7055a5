"""The one place where run and phase states change.

Each transition locks the row (``select_for_update``), checks the move against the legal-transition
table in ``runs.models``, writes the new state and extra fields, and records a transition row, all in
one transaction. Callers pass who acted (``actor``) and why (``reason``).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from autopack_site.lib.errors import IllegalTransition, NotFound, StaleEpoch
from runs.models import (
    PHASE_DONE,
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
    if expected_epoch is not None and phase.claim_epoch != expected_epoch:
        raise StaleEpoch(
            f"phase {phase.pk} is at claim epoch {phase.claim_epoch}, not {expected_epoch}",
            details={"current_epoch": phase.claim_epoch, "given_epoch": expected_epoch},
        )
    from_state = phase.state
    if not phase.can_transition_to(to_state):
        raise IllegalTransition(
            f"phase {phase.phase_id} cannot go from {from_state} to {to_state}",
            details={"from": from_state, "to": to_state},
        )
    now = timezone.now()
    phase.state = to_state
    update = ["state", "updated_at"]
    if to_state == PhaseState.EXECUTING:
        phase.started_at = phase.started_at or now
        update.append("started_at")
    if to_state != PhaseState.EXECUTING:
        # Leaving `executing` always ends the lease: nobody may keep writing as the holder.
        phase.lease_owner, phase.lease_expires_at, phase.current_stage = "", None, ""
        update += ["lease_owner", "lease_expires_at", "current_stage"]
    if to_state in PHASE_DONE or to_state in (PhaseState.BLOCKED, PhaseState.FAILED):
        phase.finished_at = now
        update.append("finished_at")
    elif to_state == PhaseState.QUEUED:
        phase.finished_at = None
        update.append("finished_at")
    for name, value in (fields or {}).items():
        setattr(phase, name, value)
        update.append(name)
    phase.save(update_fields=sorted(set(update)))
    PhaseTransition.objects.create(
        phase=phase,
        from_state=from_state,
        to_state=to_state,
        actor=actor,
        reason=reason,
        claim_epoch=phase.claim_epoch,
    )
    return phase
