"""Every legal and illegal run and phase transition, through the one service that changes state."""

from __future__ import annotations

import itertools

import pytest

from autopack_site.lib.errors import IllegalTransition, NotFound, StaleEpoch
from runs.models import (
    PHASE_TRANSITIONS,
    RUN_TRANSITIONS,
    Phase,
    PhaseState,
    PhaseTransition,
    Run,
    RunState,
    RunTransition,
)
from runs.services import phase_transition, run_transition
from tests.factories import make_run

pytestmark = pytest.mark.django_db

RUN_PAIRS = list(itertools.product(RunState.values, RunState.values))
PHASE_PAIRS = list(itertools.product(PhaseState.values, PhaseState.values))


@pytest.mark.parametrize(("from_state", "to_state"), [p for p in RUN_PAIRS if p[1] in RUN_TRANSITIONS[p[0]]])
def test_legal_run_transition_is_written_and_recorded(from_state: str, to_state: str) -> None:
    run = make_run(state=from_state)

    result = run_transition(
        run_id=run.pk, to_state=to_state, actor="user:alice", reason="because", failure_reason="needs_human"
    )

    run.refresh_from_db()
    assert run.state == result.state == to_state
    transition = RunTransition.objects.get(run=run)
    assert (transition.from_state, transition.to_state, transition.actor, transition.reason) == (
        from_state,
        to_state,
        "user:alice",
        "because",
    )


@pytest.mark.parametrize(("from_state", "to_state"), [p for p in RUN_PAIRS if p[1] not in RUN_TRANSITIONS[p[0]]])
def test_illegal_run_transition_raises_and_changes_nothing(from_state: str, to_state: str) -> None:
    run = make_run(state=from_state)

    with pytest.raises(IllegalTransition) as error:
        run_transition(run_id=run.pk, to_state=to_state, actor="user:alice")

    assert error.value.message == f"run {run.pk} cannot go from {from_state} to {to_state}"
    assert error.value.details == {"from": from_state, "to": to_state}
    run.refresh_from_db()
    assert run.state == from_state
    assert not RunTransition.objects.filter(run=run).exists()


def _phase_in(state: str) -> Phase:
    run = make_run(phases=1, state=RunState.RUNNING)
    phase = run.phases.get()
    Phase.objects.filter(pk=phase.pk).update(state=state)
    phase.refresh_from_db()
    return phase


@pytest.mark.parametrize(("from_state", "to_state"), [p for p in PHASE_PAIRS if p[1] in PHASE_TRANSITIONS[p[0]]])
def test_legal_phase_transition_is_written_and_recorded(from_state: str, to_state: str) -> None:
    phase = _phase_in(from_state)

    phase_transition(phase_id=phase.pk, to_state=to_state, actor="worker:w1", reason="why")

    phase.refresh_from_db()
    assert phase.state == to_state
    transition = PhaseTransition.objects.get(phase=phase)
    assert (transition.from_state, transition.to_state, transition.actor) == (from_state, to_state, "worker:w1")


@pytest.mark.parametrize(("from_state", "to_state"), [p for p in PHASE_PAIRS if p[1] not in PHASE_TRANSITIONS[p[0]]])
def test_illegal_phase_transition_raises_and_changes_nothing(from_state: str, to_state: str) -> None:
    phase = _phase_in(from_state)

    with pytest.raises(IllegalTransition):
        phase_transition(phase_id=phase.pk, to_state=to_state, actor="worker:w1")

    phase.refresh_from_db()
    assert phase.state == from_state
    assert not PhaseTransition.objects.filter(phase=phase).exists()


def test_leaving_executing_ends_the_lease() -> None:
    phase = _phase_in(PhaseState.EXECUTING)
    Phase.objects.filter(pk=phase.pk).update(lease_owner="worker:w1", claim_epoch=4, current_stage="ci")

    phase_transition(phase_id=phase.pk, to_state=PhaseState.QUEUED, actor="system:reaper", expected_epoch=4)

    phase.refresh_from_db()
    assert (phase.lease_owner, phase.lease_expires_at, phase.current_stage) == ("", None, "")
    assert PhaseTransition.objects.get(phase=phase).claim_epoch == 4


def test_stale_epoch_is_refused_before_the_state_check() -> None:
    phase = _phase_in(PhaseState.EXECUTING)
    Phase.objects.filter(pk=phase.pk).update(claim_epoch=7)

    with pytest.raises(StaleEpoch) as error:
        phase_transition(phase_id=phase.pk, to_state=PhaseState.COMPLETE, actor="worker:old", expected_epoch=6)

    assert error.value.details == {"current_epoch": 7, "given_epoch": 6}
    phase.refresh_from_db()
    assert phase.state == PhaseState.EXECUTING


def test_a_second_executing_phase_in_one_run_is_refused_by_the_database() -> None:
    from django.db import IntegrityError, transaction

    run = make_run(phases=2, state=RunState.RUNNING)
    first, second = run.phases.order_by("sequence")
    phase_transition(phase_id=first.pk, to_state=PhaseState.EXECUTING, actor="worker:w1")

    with pytest.raises(IntegrityError), transaction.atomic():
        phase_transition(phase_id=second.pk, to_state=PhaseState.EXECUTING, actor="worker:w2")

    assert Phase.objects.get(pk=second.pk).state == PhaseState.QUEUED


def test_unknown_rows_are_not_found() -> None:
    with pytest.raises(NotFound):
        run_transition(run_id=999_999, to_state=RunState.RUNNING, actor="user:a")
    with pytest.raises(NotFound):
        phase_transition(phase_id=999_999, to_state=PhaseState.EXECUTING, actor="user:a")


def test_failed_run_records_its_typed_reason_and_reopening_clears_it() -> None:
    run = make_run(state=RunState.RUNNING)

    run_transition(
        run_id=run.pk, to_state=RunState.FAILED, actor="worker:w", reason="token cap", failure_reason="budget_exhausted"
    )
    run.refresh_from_db()
    assert (run.failure_reason, run.failure_detail) == ("budget_exhausted", "token cap")
    assert run.finished_at is not None

    run_transition(run_id=run.pk, to_state=RunState.RUNNING, actor="user:a", reason="requeued")
    run.refresh_from_db()
    assert (run.failure_reason, run.failure_detail, run.finished_at) == ("", "", None)
    assert Run.objects.get(pk=run.pk).started_at is not None
