"""Run control used alike by the admin, the API, the dashboard and the commands.

start, pause, resume, cancel, requeue and skip; completion and failure of a run as its phases end.
"""

from __future__ import annotations

import subprocess

from django.db import transaction

from autopack_site.lib.errors import IllegalTransition
from runs.models import PHASE_DONE, Phase, PhaseState, Run, RunFailureReason, RunState
from runs.services.transitions import _locked_run, phase_transition, phase_transition_locked, run_transition


def _enqueue_after_commit(run_id: int) -> None:
    def enqueue() -> None:
        from runs import tasks

        tasks.enqueue_run_work(run_id)

    transaction.on_commit(enqueue)


def run_start(*, run_id: int, actor: str) -> Run:
    with transaction.atomic():
        run = _locked_run(run_id)
        fields = {} if run.branch else {"branch": run.default_branch_name()}
        if not run.base_commit:
            fields["base_commit"] = _base_commit(run)
        run = run_transition(run_id=run_id, to_state=RunState.RUNNING, actor=actor, reason="started", fields=fields)
        _enqueue_after_commit(run.pk)
    return run


def _base_commit(run: Run) -> str:
    """The commit the run branches from (A/B pairs and replays need it); "" when the repository is not here."""
    project = run.project
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{project.base_branch}^{{commit}}"],
            cwd=project.repository_path,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def run_pause(*, run_id: int, actor: str, reason: str = "paused by operator") -> Run:
    """Stop claiming new phases of the run; an executing phase finishes its attempt."""
    return run_transition(run_id=run_id, to_state=RunState.PAUSED, actor=actor, reason=reason)


def run_resume(*, run_id: int, actor: str) -> Run:
    with transaction.atomic():
        if not _locked_run(run_id).can_resume():
            run = Run.objects.get(pk=run_id)
            raise IllegalTransition(
                f"run {run_id} is {run.state}; only a paused run can be resumed",
                details={"from": run.state, "to": RunState.RUNNING},
            )
        run = run_transition(run_id=run_id, to_state=RunState.RUNNING, actor=actor, reason="resumed")
        _enqueue_after_commit(run.pk)
    return run


def run_cancel(*, run_id: int, actor: str, reason: str = "cancelled by operator") -> Run:
    """Cancel the run and skip its queued phases.

    An executing phase keeps its lease until its worker reaches the next stage boundary, sees the run
    cancelled and finishes the phase as skipped (releasing the lease); the reaper covers a dead worker.
    """
    with transaction.atomic():
        run = run_transition(run_id=run_id, to_state=RunState.CANCELLED, actor=actor, reason=reason)
        for phase in Phase.objects.select_for_update().filter(run=run, state=PhaseState.QUEUED):
            phase_transition_locked(phase=phase, to_state=PhaseState.SKIPPED, actor=actor, reason="run cancelled")
    return run


def run_fail(*, run_id: int, failure_reason: str, detail: str, actor: str) -> Run:
    if failure_reason not in RunFailureReason.values or not failure_reason:
        raise ValueError(f"unknown run failure reason {failure_reason!r}")
    return run_transition(
        run_id=run_id, to_state=RunState.FAILED, actor=actor, reason=detail, failure_reason=failure_reason
    )


def run_complete_if_done(*, run_id: int, actor: str) -> Run:
    """Complete a running run whose phases are all complete or skipped; otherwise change nothing."""
    with transaction.atomic():
        run = _locked_run(run_id)
        states = list(Phase.objects.filter(run=run).values_list("state", flat=True))
        done = sum(1 for state in states if state in PHASE_DONE)
        if run.phases_done != done:
            Run.objects.filter(pk=run.pk).update(phases_done=done)
            run.phases_done = done
        if run.state == RunState.RUNNING and done == len(states):
            return run_transition(run_id=run.pk, to_state=RunState.COMPLETE, actor=actor, reason="all phases done")
        return run


def phase_requeue(*, phase_id: int, actor: str, reason: str = "requeued by operator") -> Phase:
    """Give a blocked or failed phase a fresh set of attempts; reopens its run if the run had failed."""
    with transaction.atomic():
        phase = Phase.objects.select_for_update().select_related("run").get(pk=phase_id)
        if not phase.can_requeue():
            raise IllegalTransition(
                f"phase {phase.phase_id} is {phase.state}; only blocked or failed phases can be requeued",
                details={"from": phase.state, "to": PhaseState.QUEUED},
            )
        run = phase.run
        if run.state in (RunState.COMPLETE, RunState.CANCELLED):
            raise IllegalTransition(f"run {run.pk} is {run.state}; its phases cannot be requeued")
        phase = phase_transition_locked(
            phase=phase,
            to_state=PhaseState.QUEUED,
            actor=actor,
            reason=reason,
            fields={"attempt_base": phase.attempt_count, "failure_fingerprints": [], "lost_leases": 0},
        )
        if run.state == RunState.FAILED:
            run_transition(run_id=run.pk, to_state=RunState.RUNNING, actor=actor, reason=f"reopened: {reason}")
        if run.state in (RunState.RUNNING, RunState.FAILED):
            _enqueue_after_commit(run.pk)
    return phase


def phase_skip(*, phase_id: int, actor: str, reason: str = "skipped by operator") -> Phase:
    with transaction.atomic():
        phase = phase_transition(phase_id=phase_id, to_state=PhaseState.SKIPPED, actor=actor, reason=reason)
        run_complete_if_done(run_id=phase.run_id, actor=actor)
    return phase
