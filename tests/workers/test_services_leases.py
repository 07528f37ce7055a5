from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from autopack_site.lib.errors import PermissionDenied, StaleEpoch
from runs.engine.outcome import OutcomeKind, PhaseOutcome
from runs.models import Attempt, AttemptEvent, AttemptStatus, Phase, PhaseState, Run, RunState
from runs.services.control import phase_requeue, run_cancel, run_pause
from runs.services.leases import (
    leases_reap,
    phase_claim,
    phase_finish,
    phase_heartbeat,
    phase_release,
    phase_report_event,
)
from tests.factories import make_run

pytestmark = pytest.mark.django_db


def running_run(**fields) -> Run:
    return make_run(state=RunState.RUNNING, **fields)


def finish(claim, kind: str = "complete", **fields) -> Phase:
    outcome = PhaseOutcome(kind=OutcomeKind(kind), **fields)
    return phase_finish(phase_id=claim.phase_id, epoch=claim.claim_epoch, outcome=outcome, worker="w1")


def expire(claim) -> None:
    Phase.objects.filter(pk=claim.phase_id).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


def test_claim_takes_the_first_phase_and_sets_lease_epoch_and_attempt():
    run = running_run(phases=3)
    claim = phase_claim(worker="w1")
    phase = Phase.objects.get(pk=claim.phase_id)
    assert (phase.phase_id, phase.state, phase.lease_owner) == ("P1", PhaseState.EXECUTING, "w1")
    assert phase.claim_epoch == claim.claim_epoch == 1
    assert phase.attempt_count == 1 and phase.lease_expires_at == claim.lease_expires_at
    attempt = Attempt.objects.get(pk=claim.attempt_id)
    assert (attempt.number, attempt.claim_epoch, attempt.worker, attempt.status) == (1, 1, "w1", "running")
    assert claim.run_id == run.pk


def test_no_second_phase_of_a_run_is_claimed_while_one_executes():
    running_run(phases=3)
    assert phase_claim(worker="w1") is not None
    assert phase_claim(worker="w2") is None


def test_phases_are_claimed_in_tier_then_phase_order():
    run = running_run(phases=4, tiers=2)
    order = []
    while (claim := phase_claim(worker="w1")) is not None:
        phase = finish(claim)
        order.append((phase.tier.index, phase.index))
    assert order == [(0, 0), (0, 1), (1, 0), (1, 1)]
    run.refresh_from_db()
    assert (run.state, run.phases_done) == (RunState.COMPLETE, 4)


def test_queued_paused_and_finished_runs_are_not_claimed():
    make_run(state=RunState.QUEUED)
    paused = running_run()
    run_pause(run_id=paused.pk, actor="user:test")
    assert phase_claim(worker="w1") is None


def test_claim_can_be_limited_to_some_runs():
    first, second = running_run(), running_run()
    claim = phase_claim(worker="w1", runs=[second.pk])
    assert claim.run_id == second.pk
    assert phase_claim(worker="w1", runs=[second.pk]) is None
    assert phase_claim(worker="w1").run_id == first.pk


def test_heartbeat_extends_the_lease_and_reports_the_run_state():
    run = running_run()
    claim = phase_claim(worker="w1", lease_seconds=5)
    beat = phase_heartbeat(phase_id=claim.phase_id, epoch=claim.claim_epoch, worker="w1", stage="build")
    assert beat.lease_expires_at > claim.lease_expires_at and not beat.should_stop
    assert Phase.objects.get(pk=claim.phase_id).current_stage == "build"
    run_cancel(run_id=run.pk, actor="user:test")
    beat = phase_heartbeat(phase_id=claim.phase_id, epoch=claim.claim_epoch, worker="w1")
    assert beat.should_stop and beat.run_state == RunState.CANCELLED


def test_heartbeat_with_a_stale_epoch_is_refused_and_changes_nothing():
    running_run()
    claim = phase_claim(worker="w1")
    before = Phase.objects.get(pk=claim.phase_id)
    with pytest.raises(StaleEpoch):
        phase_heartbeat(phase_id=claim.phase_id, epoch=claim.claim_epoch - 1, worker="w1", stage="x")
    after = Phase.objects.get(pk=claim.phase_id)
    assert (after.lease_expires_at, after.current_stage) == (before.lease_expires_at, before.current_stage)


def test_another_worker_cannot_heartbeat_or_finish_a_held_phase():
    running_run()
    claim = phase_claim(worker="w1")
    with pytest.raises(PermissionDenied):
        phase_heartbeat(phase_id=claim.phase_id, epoch=claim.claim_epoch, worker="intruder")
    with pytest.raises(PermissionDenied):
        phase_finish(
            phase_id=claim.phase_id, epoch=claim.claim_epoch, outcome=PhaseOutcome(kind="complete"), worker="x"
        )
    assert Phase.objects.get(pk=claim.phase_id).state == PhaseState.EXECUTING


def test_events_are_numbered_per_attempt_and_compress_their_blob():
    running_run()
    claim = phase_claim(worker="w1")
    phase_report_event(phase_id=claim.phase_id, epoch=claim.claim_epoch, stage="build", kind="start", data={"a": 1})
    event = phase_report_event(
        phase_id=claim.phase_id, epoch=claim.claim_epoch, stage="build", kind="end", data={}, blob=b"x" * 1000
    )
    assert event.seq == 2 and len(bytes(event.blob)) < 100
    assert Phase.objects.get(pk=claim.phase_id).current_stage == "build"


def test_an_event_under_a_stale_epoch_is_refused():
    running_run()
    claim = phase_claim(worker="w1")
    expire(claim)
    leases_reap()
    with pytest.raises(StaleEpoch):
        phase_report_event(phase_id=claim.phase_id, epoch=claim.claim_epoch, stage="build", kind="start", data={})
    assert not AttemptEvent.objects.exists()


def test_a_late_result_after_the_lease_was_reaped_and_reclaimed_cannot_land():
    running_run()
    first = phase_claim(worker="w1")
    expire(first)
    assert leases_reap() == 1
    second = phase_claim(worker="w2")
    assert second.phase_id == first.phase_id and second.claim_epoch == first.claim_epoch + 1
    with pytest.raises(StaleEpoch):
        finish(first, commit_sha="late")
    phase = Phase.objects.get(pk=first.phase_id)
    assert (phase.state, phase.commit_sha, phase.lease_owner) == (PhaseState.EXECUTING, "", "w2")


def test_complete_records_the_commit_usage_and_completes_the_run_at_the_end():
    run = running_run(phases=1)
    claim = phase_claim(worker="w1")
    phase = finish(claim, commit_sha="abc123", input_tokens=100, output_tokens=20, cost_usd="0.5", model="m")
    assert (phase.state, phase.commit_sha) == (PhaseState.COMPLETE, "abc123")
    phase.refresh_from_db()
    assert phase.tokens_used == 120 and str(phase.cost_usd) == "0.500000"
    run.refresh_from_db()
    assert (run.state, run.tokens_used, run.phases_done) == (RunState.COMPLETE, 120, 1)
    attempt = Attempt.objects.get(pk=claim.attempt_id)
    assert (attempt.status, attempt.outcome, attempt.input_tokens) == (AttemptStatus.SUCCEEDED, "complete", 100)


def test_retry_requeues_with_the_hint_override_escalation_and_replan():
    run = running_run()
    claim = phase_claim(worker="w1")
    phase = finish(
        claim,
        kind="retry",
        reason="tests failed",
        failure_fingerprint="fp1",
        builder_hint="fix the import",
        budget_override=9000,
        escalate_model=True,
        replan=True,
        patch_failure=True,
    )
    assert phase.state == PhaseState.QUEUED
    assert (phase.last_failure_reason, phase.builder_hint, phase.budget_override) == (
        "tests failed",
        "fix the import",
        9000,
    )
    assert (phase.failure_fingerprints, phase.escalation_level, phase.revision_epoch) == (["fp1"], 1, 1)
    run.refresh_from_db()
    assert (run.failures_count, run.patch_failures_count) == (1, 1)
    again = phase_claim(worker="w1")
    assert (again.phase_id, again.attempt_number) == (claim.phase_id, 2)


def test_the_same_fingerprint_three_times_blocks_the_phase_and_stops_the_run():
    run = running_run()
    for _ in range(2):
        assert finish(phase_claim(worker="w1"), kind="retry", failure_fingerprint="same").state == PhaseState.QUEUED
    phase = finish(phase_claim(worker="w1"), kind="retry", failure_fingerprint="same", reason="boom")
    assert phase.state == PhaseState.BLOCKED and "same failure 3 times" in phase.last_failure_reason
    run.refresh_from_db()
    assert (run.state, run.failure_reason) == (RunState.FAILED, "needs_human")


def test_the_attempt_limit_blocks_and_an_operator_requeue_gives_fresh_attempts(settings):
    settings.AUTOPACK = {**settings.AUTOPACK, "MAX_ATTEMPTS": 2}
    run = running_run()
    assert finish(phase_claim(worker="w1"), kind="retry", failure_fingerprint="a").state == PhaseState.QUEUED
    phase = finish(phase_claim(worker="w1"), kind="retry", failure_fingerprint="b")
    assert phase.state == PhaseState.BLOCKED and "attempt limit" in phase.last_failure_reason
    phase_requeue(phase_id=phase.pk, actor="user:op")
    assert Run.objects.get(pk=run.pk).state == RunState.RUNNING
    claim = phase_claim(worker="w1")
    assert claim.attempt_number == 3
    assert finish(claim, kind="retry", failure_fingerprint="c").state == PhaseState.QUEUED


def test_a_failed_phase_fails_the_run_with_its_reason():
    run = running_run()
    phase = finish(
        phase_claim(worker="w1"), kind="failed", reason="forbidden path", run_failure_reason="policy_violation"
    )
    assert phase.state == PhaseState.FAILED
    run.refresh_from_db()
    assert (run.state, run.failure_reason) == (RunState.FAILED, "policy_violation")


def test_a_blocked_outcome_stops_the_run_for_a_human():
    run = running_run()
    assert finish(phase_claim(worker="w1"), kind="blocked", reason="needs review").state == PhaseState.BLOCKED
    assert Run.objects.get(pk=run.pk).failure_reason == "needs_human"


def test_skipped_phase_counts_as_done():
    run = running_run(phases=2)
    assert finish(phase_claim(worker="w1"), kind="skipped").state == PhaseState.SKIPPED
    finish(phase_claim(worker="w1"))
    assert Run.objects.get(pk=run.pk).state == RunState.COMPLETE


@pytest.mark.parametrize(
    ("fields", "outcome"),
    [
        ({"token_cap": 1000}, {"kind": "complete", "input_tokens": 900, "output_tokens": 200}),
        ({"usd_cap": "1.00"}, {"kind": "retry", "cost_usd": "1.5"}),
        ({"max_failures": 1}, {"kind": "retry", "reason": "x"}),
        ({"max_patch_failures": 1, "max_failures": 10}, {"kind": "retry", "patch_failure": True}),
    ],
)
def test_run_budgets_fail_the_run_as_budget_exhausted(fields, outcome):
    run = running_run(phases=2, **fields)
    finish(phase_claim(worker="w1"), **outcome)
    run.refresh_from_db()
    assert (run.state, run.failure_reason) == (RunState.FAILED, "budget_exhausted")
    assert phase_claim(worker="w1") is None


def test_release_requeues_at_once_without_counting_a_builder_attempt():
    running_run()
    claim = phase_claim(worker="w1")
    phase = phase_release(phase_id=claim.phase_id, epoch=claim.claim_epoch, worker="w1", reason="shutdown")
    assert (phase.state, phase.lease_owner, phase.lease_expires_at) == (PhaseState.QUEUED, "", None)
    assert (phase.attempt_count, phase.attempts_since_requeue, phase.lost_leases) == (1, 0, 0)
    assert Attempt.objects.get(pk=claim.attempt_id).status == AttemptStatus.ABANDONED
    assert phase_claim(worker="w2").attempt_number == 2


def test_abandoned_outcome_in_a_cancelled_run_skips_the_phase_and_ends_the_lease():
    run = running_run(phases=2)
    claim = phase_claim(worker="w1")
    run_cancel(run_id=run.pk, actor="user:test")
    phase = finish(claim, kind="abandoned", reason="cancelled")
    assert (phase.state, phase.lease_owner) == (PhaseState.SKIPPED, "")
    assert set(Phase.objects.filter(run=run).values_list("state", flat=True)) == {PhaseState.SKIPPED}


def test_reaper_requeues_expired_leases_as_infrastructure_failures():
    running_run(phases=2)
    claim = phase_claim(worker="w1")
    assert leases_reap() == 0
    expire(claim)
    assert leases_reap() == 1
    phase = Phase.objects.get(pk=claim.phase_id)
    assert (phase.state, phase.lost_leases, phase.attempts_since_requeue) == (PhaseState.QUEUED, 1, 0)
    attempt = Attempt.objects.get(pk=claim.attempt_id)
    assert (attempt.status, attempt.outcome) == (AttemptStatus.ABANDONED, "lease_lost")
    assert "expired" in phase.transitions.last().reason


def test_three_lost_leases_in_a_row_block_the_phase():
    run = running_run(phases=1)
    for expected in (PhaseState.QUEUED, PhaseState.QUEUED, PhaseState.BLOCKED):
        expire(phase_claim(worker="w1"))
        leases_reap()
        assert Phase.objects.get(run=run).state == expected
    assert Run.objects.get(pk=run.pk).failure_reason == "environment"


def test_a_judged_attempt_resets_the_lost_lease_count():
    run = running_run(phases=1)
    for _ in range(2):
        expire(phase_claim(worker="w1"))
        leases_reap()
    finish(phase_claim(worker="w1"), kind="retry", reason="x")
    assert Phase.objects.get(run=run).lost_leases == 0
