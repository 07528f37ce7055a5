"""Operator run control: start, pause, resume, cancel, requeue, skip, and run completion."""

from __future__ import annotations

import pytest

from autopack_site.lib.errors import IllegalTransition
from runs.models import Phase, PhaseState, PhaseTransition, RunState
from runs.services import (
    phase_requeue,
    phase_skip,
    run_cancel,
    run_complete_if_done,
    run_fail,
    run_pause,
    run_resume,
    run_start,
)
from tests.factories import make_git_repo, make_project, make_run

pytestmark = pytest.mark.django_db


def _set_phase(run, phase_id: str, **fields) -> Phase:
    Phase.objects.filter(run=run, phase_id=phase_id).update(**fields)
    return Phase.objects.get(run=run, phase_id=phase_id)


def test_start_names_the_branch_and_enqueues_after_commit(django_capture_on_commit_callbacks, monkeypatch) -> None:
    enqueued: list[int] = []
    monkeypatch.setattr("runs.tasks.enqueue_run_work", enqueued.append)
    run = make_run()

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        run_start(run_id=run.pk, actor="user:alice")

    run.refresh_from_db()
    assert run.state == RunState.RUNNING
    assert run.branch == f"autopack/{run.project.slug}-{run.pk}"
    assert run.started_at is not None
    assert len(callbacks) == 1 and enqueued == [run.pk]


def test_pause_then_resume_returns_to_running() -> None:
    run = make_run(state=RunState.RUNNING)

    run_pause(run_id=run.pk, actor="user:a")
    assert run.__class__.objects.get(pk=run.pk).state == RunState.PAUSED
    run_resume(run_id=run.pk, actor="user:a")
    assert run.__class__.objects.get(pk=run.pk).state == RunState.RUNNING
    assert list(run.transitions.values_list("to_state", flat=True)) == ["paused", "running"]


@pytest.mark.parametrize("state", [RunState.RUNNING, RunState.QUEUED])
def test_resume_of_a_run_that_is_not_paused_is_refused(state: str) -> None:
    run = make_run(state=state)
    with pytest.raises(IllegalTransition, match=f"run {run.pk} is {state}; only a paused run can be resumed"):
        run_resume(run_id=run.pk, actor="user:a")
    assert run.__class__.objects.get(pk=run.pk).state == state


def test_cancel_skips_queued_phases_and_leaves_the_executing_one_to_its_worker() -> None:
    run = make_run(phases=3, state=RunState.RUNNING)
    _set_phase(run, "P1", state=PhaseState.COMPLETE)
    _set_phase(run, "P2", state=PhaseState.EXECUTING, lease_owner="worker:w1", claim_epoch=1)

    run_cancel(run_id=run.pk, actor="user:a")

    states = dict(run.phases.values_list("phase_id", "state"))
    assert states == {"P1": "complete", "P2": "executing", "P3": "skipped"}
    assert PhaseTransition.objects.get(phase__phase_id="P3", phase__run=run).reason == "run cancelled"


def test_cancel_of_a_finished_run_is_refused() -> None:
    run = make_run(state=RunState.COMPLETE)
    with pytest.raises(IllegalTransition):
        run_cancel(run_id=run.pk, actor="user:a")


def test_requeue_gives_fresh_attempts_and_reopens_a_failed_run() -> None:
    run = make_run(phases=2, state=RunState.FAILED, failure_reason="needs_human")
    phase = _set_phase(
        run, "P1", state=PhaseState.BLOCKED, attempt_count=5, failure_fingerprints=["a", "a", "a"], lost_leases=2
    )

    phase_requeue(phase_id=phase.pk, actor="user:a")

    phase.refresh_from_db()
    assert phase.state == PhaseState.QUEUED
    assert (phase.attempt_count, phase.attempt_base, phase.attempts_since_requeue) == (5, 5, 0)
    assert (phase.failure_fingerprints, phase.lost_leases) == ([], 0)
    run.refresh_from_db()
    assert (run.state, run.failure_reason) == (RunState.RUNNING, "")


def test_requeue_of_a_queued_phase_is_refused_with_its_state() -> None:
    run = make_run(phases=1, state=RunState.RUNNING)
    with pytest.raises(IllegalTransition) as error:
        phase_requeue(phase_id=run.phases.get().pk, actor="user:a")
    assert error.value.message == "phase P1 is queued; only blocked or failed phases can be requeued"


def test_requeue_in_a_cancelled_run_is_refused() -> None:
    run = make_run(phases=1, state=RunState.CANCELLED)
    phase = _set_phase(run, "P1", state=PhaseState.FAILED)
    with pytest.raises(IllegalTransition):
        phase_requeue(phase_id=phase.pk, actor="user:a")
    assert Phase.objects.get(pk=phase.pk).state == PhaseState.FAILED


def test_run_completes_when_every_phase_is_complete_or_skipped() -> None:
    run = make_run(phases=3, state=RunState.RUNNING)
    _set_phase(run, "P1", state=PhaseState.COMPLETE)
    _set_phase(run, "P2", state=PhaseState.COMPLETE)

    assert run_complete_if_done(run_id=run.pk, actor="worker:w").state == RunState.RUNNING
    phase_skip(phase_id=Phase.objects.get(run=run, phase_id="P3").pk, actor="user:a")

    run.refresh_from_db()
    assert (run.state, run.phases_done) == (RunState.COMPLETE, 3)


def test_run_fail_needs_a_typed_reason() -> None:
    run = make_run(state=RunState.RUNNING)
    with pytest.raises(ValueError, match="unknown run failure reason 'oops'"):
        run_fail(run_id=run.pk, failure_reason="oops", detail="x", actor="worker:w")
    run_fail(run_id=run.pk, failure_reason="environment", detail="git missing", actor="worker:w")
    run.refresh_from_db()
    assert (run.state, run.failure_reason, run.failure_detail) == ("failed", "environment", "git missing")


def test_start_records_the_commit_the_run_starts_from_so_ab_pairs_can_be_checked(tmp_path) -> None:
    import subprocess

    repo = make_git_repo(tmp_path / "repo")
    head = subprocess.run(["git", "rev-parse", "main"], cwd=repo, capture_output=True, text=True).stdout.strip()
    run = make_run(make_project(repository_path=str(repo)))
    unreachable = make_run()  # its repository is not on this machine: it still starts

    run_start(run_id=run.pk, actor="user:alice")
    run_start(run_id=unreachable.pk, actor="user:alice")

    run.refresh_from_db()
    unreachable.refresh_from_db()
    assert run.base_commit == head
    assert unreachable.state == RunState.RUNNING and unreachable.base_commit == ""
