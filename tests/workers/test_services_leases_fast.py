"""The claim/finish hot path: same rows on SQLite and PostgreSQL, one-statement claims, prepared statements."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from autopack_site.lib.errors import IllegalTransition, StaleEpoch
from runs.engine.outcome import OutcomeKind, PhaseOutcome
from runs.models import Attempt, Phase, PhaseState, PhaseTransition, Run, RunState
from runs.services import leases
from runs.services.control import run_pause
from runs.services.leases import phase_claim, phase_finish
from runs.services.transitions import numbered_placeholders, phase_legal_sources, phase_transition_fast
from tests.factories import make_run

pytestmark = pytest.mark.django_db

COMPARED_FIELDS = (
    "state",
    "claim_epoch",
    "attempt_count",
    "attempt_base",
    "lease_owner",
    "lease_expires_at",
    "current_stage",
    "commit_sha",
    "tokens_used",
    "cost_usd",
    "failure_fingerprints",
    "last_failure_reason",
    "started_at",
    "finished_at",
    "updated_at",
)


def finish(claim, kind: str = "complete", **fields) -> Phase:
    outcome = PhaseOutcome(kind=OutcomeKind(kind), **fields)
    return phase_finish(phase_id=claim.phase_id, epoch=claim.claim_epoch, outcome=outcome, worker="w1")


def transitions(phase_id: int) -> list[tuple[str, str, str, str, int]]:
    rows = PhaseTransition.objects.filter(phase_id=phase_id).order_by("id")
    return list(rows.values_list("from_state", "to_state", "actor", "reason", "claim_epoch"))


def test_every_claim_and_finish_writes_its_transition_row_with_actor_reason_and_epoch():
    make_run(phases=1, state=RunState.RUNNING)
    first = phase_claim(worker="w1")
    finish(first, kind="retry", reason="tests failed", failure_fingerprint="fp")
    second = phase_claim(worker="w1")
    finish(second, commit_sha="abc")
    assert transitions(first.phase_id) == [
        ("queued", "executing", "worker:w1", "claimed, attempt 1", 1),
        ("executing", "queued", "worker:w1", "retry: tests failed", 1),
        ("queued", "executing", "worker:w1", "claimed, attempt 2", 2),
        ("executing", "complete", "worker:w1", "complete", 2),
    ]


def test_the_claim_creates_the_attempt_with_the_model_defaults():
    make_run(phases=1, state=RunState.RUNNING)
    claim = phase_claim(worker="w1")
    attempt = Attempt.objects.get(pk=claim.attempt_id)
    assert (attempt.phase_id, attempt.number, attempt.claim_epoch, attempt.worker) == (claim.phase_id, 1, 1, "w1")
    assert (attempt.status, attempt.outcome, attempt.input_tokens, attempt.cost_usd) == ("running", "", 0, 0)
    assert (attempt.summary, attempt.finished_at, attempt.duration_ms) == ({}, None, None)
    phase = Phase.objects.get(pk=claim.phase_id)
    assert abs(attempt.started_at - phase.started_at) < timedelta(seconds=1)


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("complete", {"commit_sha": "abc", "input_tokens": 7, "cost_usd": "0.25"}),
        ("retry", {"reason": "boom", "failure_fingerprint": "fp", "escalate_model": True}),
        ("blocked", {"reason": "needs review"}),
        ("abandoned", {"reason": "shutting down"}),
    ],
)
def test_the_phase_a_finish_returns_matches_the_stored_row(kind, fields):
    make_run(phases=2, state=RunState.RUNNING)
    returned = finish(phase_claim(worker="w1"), kind=kind, **fields)
    stored = Phase.objects.get(pk=returned.pk)
    assert {name: getattr(returned, name) for name in COMPARED_FIELDS} == {
        name: getattr(stored, name) for name in COMPARED_FIELDS
    }


def test_a_finish_records_the_attempt_verdict_and_its_duration():
    make_run(phases=1, state=RunState.RUNNING)
    claim = phase_claim(worker="w1")
    finish(claim, kind="retry", reason="lint", model="m1", output_tokens=5, summary={"ci": "red"})
    attempt = Attempt.objects.get(pk=claim.attempt_id)
    assert (attempt.status, attempt.outcome, attempt.failure_reason, attempt.model) == ("failed", "retry", "lint", "m1")
    assert (attempt.output_tokens, attempt.summary) == (5, {"ci": "red"})
    assert attempt.finished_at >= attempt.started_at and attempt.duration_ms >= 0


def test_a_claim_is_only_legal_from_queued():
    assert phase_legal_sources(PhaseState.EXECUTING) == [PhaseState.QUEUED]
    assert phase_legal_sources(PhaseState.QUEUED) == [PhaseState.BLOCKED, PhaseState.EXECUTING, PhaseState.FAILED]


def test_placeholders_are_numbered_in_order_and_a_repeated_name_keeps_its_number():
    assert numbered_placeholders("a = %s AND b = %s AND c LIKE 'x%%'") == ("a = $1 AND b = $2 AND c LIKE 'x%'", [])
    assert numbered_placeholders("a = %(x)s, b = %(y)s, c = %(x)s") == ("a = $1, b = $2, c = $1", ["x", "y"])


# --- PostgreSQL fast path ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_fast_transition_refuses_an_illegal_move_and_writes_nothing():
    make_run(phases=1, state=RunState.RUNNING)
    claim = phase_claim(worker="w1")
    finish(claim)
    phase = Phase.objects.get(pk=claim.phase_id)
    with pytest.raises(IllegalTransition):
        phase_transition_fast(phase=phase, to_state=PhaseState.QUEUED, actor="worker:w1")
    assert Phase.objects.get(pk=claim.phase_id).state == PhaseState.COMPLETE
    assert len(transitions(claim.phase_id)) == 2


@pytest.mark.postgres
def test_the_fast_transition_compare_and_swaps_and_a_miss_rolls_everything_back():
    make_run(phases=1, state=RunState.RUNNING)
    claim = phase_claim(worker="w1")
    seen = Phase.objects.get(pk=claim.phase_id)
    Phase.objects.filter(pk=claim.phase_id).update(claim_epoch=claim.claim_epoch + 1)  # someone else moved it
    also = ", touched AS (UPDATE runs_run SET phases_done = phases_done + 1 WHERE id = %s)"
    with pytest.raises(StaleEpoch), transaction.atomic():
        phase_transition_fast(
            phase=seen, to_state=PhaseState.COMPLETE, actor="worker:w1", also=also, also_params=[claim.run_id]
        )
    assert Phase.objects.get(pk=claim.phase_id).state == PhaseState.EXECUTING
    assert Run.objects.get(pk=claim.run_id).phases_done == 0
    assert len(transitions(claim.phase_id)) == 1


def statements_of(call) -> tuple[object, list[str]]:
    """What ``call`` sends, by first word; a PREPARE happens once per connection and statement, so not counted."""
    with CaptureQueriesContext(connection) as queries:
        result = call()
    words = [query["sql"].split(" ")[0] for query in queries.captured_queries]
    return result, [word for word in words if word != "PREPARE"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_claim_and_a_complete_finish_are_one_statement_each(monkeypatch, settings):
    settings.AUTOPACK = {**settings.AUTOPACK, "ENQUEUE_TASKS": False}  # the next step's task: not counted here
    run = make_run(phases=3, state=RunState.RUNNING)
    finish(phase_claim(worker="w1"))  # prepares the statements on this connection
    monkeypatch.setitem(leases._reap_state, "last", time.monotonic())  # no reaping in passing just now
    claim, statements = statements_of(lambda: phase_claim(worker="w1"))
    assert statements == ["EXECUTE"]
    phase, statements = statements_of(lambda: finish(claim, commit_sha="abc", input_tokens=3))
    assert statements == ["EXECUTE"]
    assert (phase.state, phase.commit_sha, phase.tokens_used, phase.lease_owner) == ("complete", "abc", 3, "")
    assert Run.objects.filter(pk=run.pk).values_list("phases_done", "tokens_used").get() == (2, 3)
    assert Attempt.objects.get(pk=claim.attempt_id).status == "succeeded"
    assert transitions(claim.phase_id)[-1] == ("executing", "complete", "worker:w1", "complete", claim.claim_epoch)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_other_finishes_lock_read_and_write_in_one_transaction(monkeypatch):
    run = make_run(phases=2, state=RunState.RUNNING)
    finish(phase_claim(worker="w1"), kind="retry")
    claim = phase_claim(worker="w1")
    _, statements = statements_of(lambda: finish(claim, kind="retry", reason="red"))
    assert statements[:4] == ["BEGIN", "EXECUTE", "EXECUTE", "COMMIT"]  # then the follow-up task is queued
    # The last phase completing is not the one-statement case either: it completes the run as well. The
    # one-statement try matches nothing and changes nothing; the general path does the rest.
    finish(phase_claim(worker="w1"))
    claim = phase_claim(worker="w1")
    _, statements = statements_of(lambda: finish(claim))
    assert statements[:4] == ["EXECUTE", "BEGIN", "EXECUTE", "EXECUTE"]
    assert Run.objects.get(pk=run.pk).state == RunState.COMPLETE
    assert [row[1] for row in transitions(claim.phase_id)] == ["executing", "complete"]


@pytest.mark.postgres
def test_claims_and_finishes_recover_when_their_prepared_statements_are_deallocated():
    make_run(phases=3, state=RunState.RUNNING)
    finish(phase_claim(worker="w1"))
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    claim = phase_claim(worker="w1")
    assert claim is not None
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    assert finish(claim).state == PhaseState.COMPLETE
    assert len(transitions(claim.phase_id)) == 2
    assert finish(phase_claim(worker="w1")).state == PhaseState.COMPLETE  # and on it goes


@pytest.mark.postgres
def test_behind_a_transaction_pooler_nothing_is_prepared(monkeypatch):
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    run = make_run(phases=2, state=RunState.RUNNING)
    with CaptureQueriesContext(connection) as queries:
        finish(phase_claim(worker="w1"))
        finish(phase_claim(worker="w1"))
    sql = [query["sql"] for query in queries.captured_queries]
    assert not any(text.startswith(("PREPARE", "EXECUTE")) for text in sql)
    assert Run.objects.get(pk=run.pk).state == RunState.COMPLETE


def test_a_phase_completing_in_a_paused_run_completes_and_the_run_stays_paused():
    run = make_run(phases=3, state=RunState.RUNNING)
    claim = phase_claim(worker="w1")
    run_pause(run_id=run.pk, actor="user:op")
    assert finish(claim, commit_sha="abc").state == PhaseState.COMPLETE
    assert Run.objects.filter(pk=run.pk).values_list("state", "phases_done").get() == (RunState.PAUSED, 1)


def test_a_finish_that_leaves_more_work_enqueues_the_next_step(monkeypatch, django_capture_on_commit_callbacks):
    enqueued: list[int] = []
    monkeypatch.setattr("runs.tasks.enqueue_run_work", enqueued.append)
    run = make_run(phases=2, state=RunState.RUNNING)
    with django_capture_on_commit_callbacks(execute=True):
        finish(phase_claim(worker="w1"))
        finish(phase_claim(worker="w1"))  # the last phase: the run completes, nothing is left to enqueue
    assert enqueued == [run.pk]
