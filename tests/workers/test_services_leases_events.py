"""Stage events and heartbeats: one statement each on PostgreSQL, the same rows and errors as the ORM path."""

from __future__ import annotations

import threading
import zlib

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from autopack_site.lib.errors import NotFound, PermissionDenied, StaleEpoch
from runs.models import AttemptEvent, Phase, RunState
from runs.services.control import run_pause
from runs.services.leases import leases_reap, phase_claim, phase_heartbeat, phase_report_event
from tests.factories import make_run

pytestmark = pytest.mark.django_db


def claimed(**fields):
    make_run(state=RunState.RUNNING, **fields)
    return phase_claim(worker="w1")


def report(claim, stage: str = "build", kind: str = "info", worker: str | None = "w1", **fields) -> AttemptEvent:
    return phase_report_event(
        phase_id=claim.phase_id, epoch=claim.claim_epoch, stage=stage, kind=kind, worker=worker, **fields
    )


def statements_of(action):
    with CaptureQueriesContext(connection) as queries:
        result = action()
    words = [query["sql"].split(" ")[0] for query in queries.captured_queries]
    return result, [word for word in words if word != "PREPARE"]


def test_an_event_is_stored_as_given_with_its_blob_compressed_and_moves_the_current_stage():
    claim = claimed()
    event = report(claim, stage="plan", kind="start", data={"note": "é", "n": [1, None]}, blob=b"log " * 500)
    stored = AttemptEvent.objects.get(pk=event.pk)
    assert (stored.attempt_id, stored.seq, stored.stage, stored.kind) == (claim.attempt_id, 1, "plan", "start")
    assert stored.data == {"note": "é", "n": [1, None]} and zlib.decompress(bytes(stored.blob)) == b"log " * 500
    assert (event.seq, event.attempt_id, event.data) == (1, claim.attempt_id, stored.data)
    assert Phase.objects.get(pk=claim.phase_id).current_stage == "plan"


def test_events_are_numbered_per_attempt_and_the_stage_only_changes_when_it_differs():
    claim = claimed(phases=2)
    seqs = [report(claim, stage=stage).seq for stage in ("plan", "plan", "build", "build")]
    assert seqs == [1, 2, 3, 4]
    assert Phase.objects.get(pk=claim.phase_id).current_stage == "build"
    assert AttemptEvent.objects.get(attempt_id=claim.attempt_id, seq=2).blob is None


def test_an_event_without_data_stores_an_empty_object_and_long_names_are_cut_to_32():
    claim = claimed()
    event = report(claim, stage="s" * 40, kind="k" * 40)
    stored = AttemptEvent.objects.get(pk=event.pk)
    assert (stored.stage, stored.kind, stored.data) == ("s" * 32, "k" * 32, {})


def test_an_event_from_another_worker_is_refused_and_writes_nothing():
    claim = claimed()
    with pytest.raises(PermissionDenied, match=f"phase {claim.phase_id} is leased to another worker"):
        report(claim, worker="intruder")
    assert not AttemptEvent.objects.exists()
    assert Phase.objects.get(pk=claim.phase_id).current_stage == "claimed"


def test_an_event_under_an_old_epoch_is_refused_with_the_current_one_in_the_details():
    claim = claimed()
    with pytest.raises(StaleEpoch) as refused:
        phase_report_event(phase_id=claim.phase_id, epoch=claim.claim_epoch - 1, stage="b", kind="k", worker="w1")
    assert str(refused.value) == f"phase {claim.phase_id} is not executing under claim epoch {claim.claim_epoch - 1}"
    assert refused.value.details["current_epoch"] == claim.claim_epoch
    assert not AttemptEvent.objects.exists()


def test_an_event_after_the_lease_was_reaped_is_refused():
    claim = claimed()
    Phase.objects.filter(pk=claim.phase_id).update(lease_expires_at=claim.lease_expires_at.replace(year=2000))
    assert leases_reap() == 1
    with pytest.raises(StaleEpoch):
        report(claim)
    assert not AttemptEvent.objects.exists()


def test_an_event_for_a_missing_phase_is_not_found():
    claim = claimed()
    with pytest.raises(NotFound, match="phase 987654 does not exist"):
        phase_report_event(phase_id=987654, epoch=claim.claim_epoch, stage="b", kind="k", worker="w1")


def test_an_event_inside_a_callers_transaction_is_rolled_back_with_it():
    claim = claimed()
    with pytest.raises(RuntimeError), transaction.atomic():
        report(claim)
        raise RuntimeError("caller failed")
    assert not AttemptEvent.objects.exists()
    assert report(claim).seq == 1


def test_a_heartbeat_extends_the_lease_reports_the_run_state_and_keeps_the_stage_unless_given():
    claim = claimed()
    report(claim, stage="plan")
    beat = phase_heartbeat(phase_id=claim.phase_id, epoch=claim.claim_epoch, worker="w1", lease_seconds=900)
    phase = Phase.objects.get(pk=claim.phase_id)
    assert (beat.run_state, phase.lease_expires_at, phase.current_stage) == ("running", beat.lease_expires_at, "plan")
    phase_heartbeat(phase_id=claim.phase_id, epoch=claim.claim_epoch, worker="w1", stage="")
    assert Phase.objects.get(pk=claim.phase_id).current_stage == "plan"
    phase_heartbeat(phase_id=claim.phase_id, epoch=claim.claim_epoch, worker="w1", stage="x" * 40)
    assert Phase.objects.get(pk=claim.phase_id).current_stage == "x" * 32


def test_a_heartbeat_tells_the_worker_its_run_was_paused():
    claim = claimed()
    run_pause(run_id=Phase.objects.get(pk=claim.phase_id).run_id, actor="tester")
    beat = phase_heartbeat(phase_id=claim.phase_id, epoch=claim.claim_epoch, worker="w1")
    assert beat.run_state == "paused"


def test_a_heartbeat_from_another_worker_an_old_epoch_or_for_no_phase_is_refused_and_changes_nothing():
    claim = claimed()
    before = Phase.objects.values_list("lease_expires_at", "current_stage").get(pk=claim.phase_id)
    with pytest.raises(PermissionDenied):
        phase_heartbeat(phase_id=claim.phase_id, epoch=claim.claim_epoch, worker="intruder", stage="evil")
    with pytest.raises(StaleEpoch):
        phase_heartbeat(phase_id=claim.phase_id, epoch=claim.claim_epoch + 1, worker="w1", stage="evil")
    with pytest.raises(NotFound):
        phase_heartbeat(phase_id=987654, epoch=claim.claim_epoch, worker="w1")
    assert Phase.objects.values_list("lease_expires_at", "current_stage").get(pk=claim.phase_id) == before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_event_and_a_heartbeat_are_one_statement_each_on_postgresql():
    claim = claimed()
    report(claim)  # prepares the statements on this connection
    phase_heartbeat(phase_id=claim.phase_id, epoch=claim.claim_epoch, worker="w1")
    event, statements = statements_of(lambda: report(claim, stage="test"))
    assert statements == ["EXECUTE"] and event.seq == 2
    beat, statements = statements_of(
        lambda: phase_heartbeat(phase_id=claim.phase_id, epoch=claim.claim_epoch, worker="w1")
    )
    assert statements == ["EXECUTE"] and beat.run_state == "running"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_events_of_one_claim_get_distinct_consecutive_numbers():
    claim = claimed()
    errors: list[BaseException] = []

    def send() -> None:
        try:
            for _ in range(5):
                report(claim)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    seqs = sorted(AttemptEvent.objects.filter(attempt_id=claim.attempt_id).values_list("seq", flat=True))
    assert seqs == list(range(1, 31))
