from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.services import api_key_create
from runs.engine.outcome import OutcomeKind, PhaseOutcome
from runs.models import AttemptEvent, Phase, PhaseState, RunState
from tests.factories import make_run, make_user

pytestmark = pytest.mark.django_db


def client_for(scopes: list[str], *, staff: bool = True) -> APIClient:
    _, raw = api_key_create(owner=make_user(staff=staff), name="executor", scopes=scopes)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


@pytest.fixture
def executor() -> APIClient:
    return client_for(["executor"])


def claim(client: APIClient, worker: str = "box-1") -> dict:
    response = client.post("/api/executor/claim", {"worker": worker}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["claim"]


def test_claim_returns_the_lease_and_the_phase_spec(executor):
    run = make_run(state=RunState.RUNNING)
    response = executor.post("/api/executor/claim", {"worker": "box-1"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["claim"]["run_id"] == run.pk and body["claim"]["claim_epoch"] == 1
    assert body["claim"]["worker"].startswith("key:") and body["claim"]["worker"].endswith("/box-1")
    assert body["spec"]["phase_id"] == "P1" and body["spec"]["claim_epoch"] == 1


def test_claim_without_work_is_204(executor):
    assert executor.post("/api/executor/claim", {"worker": "box-1"}, format="json").status_code == 204


def test_a_key_without_the_executor_scope_cannot_claim():
    make_run(state=RunState.RUNNING)
    reader = client_for(["read"])
    assert reader.post("/api/executor/claim", {"worker": "box-1"}, format="json").status_code == 403
    assert not Phase.objects.filter(state=PhaseState.EXECUTING).exists()


def test_heartbeat_events_and_finish_carry_the_epoch(executor):
    run = make_run(state=RunState.RUNNING, phases=1)
    held = claim(executor)
    url = f"/api/executor/phases/{held['phase_id']}"
    lease = {"worker": "box-1", "epoch": held["claim_epoch"]}
    beat = executor.post(f"{url}/heartbeat", {**lease, "stage": "build"}, format="json")
    assert beat.status_code == 200 and beat.json()["should_stop"] is False
    event = executor.post(
        f"{url}/events",
        {**lease, "stage": "build", "kind": "start", "data": {"x": 1}, "blob": "aGVsbG8="},
        format="json",
    )
    assert event.status_code == 201 and event.json() == {"seq": 1}
    assert bytes(AttemptEvent.objects.get().blob) != b"hello"  # stored compressed
    outcome = PhaseOutcome(kind=OutcomeKind.COMPLETE, commit_sha="c0ffee", input_tokens=5).as_dict()
    done = executor.post(f"{url}/finish", {**lease, "outcome": outcome}, format="json")
    assert done.status_code == 200 and done.json() == {"phase_id": held["phase_id"], "state": "complete"}
    run.refresh_from_db()
    assert (run.state, run.tokens_used) == (RunState.COMPLETE, 5)


def test_a_stale_epoch_is_409_and_changes_nothing(executor):
    make_run(state=RunState.RUNNING)
    held = claim(executor)
    url = f"/api/executor/phases/{held['phase_id']}"
    stale = {"worker": "box-1", "epoch": held["claim_epoch"] + 1}
    outcome = PhaseOutcome(kind=OutcomeKind.COMPLETE).as_dict()
    for path, extra in (("heartbeat", {}), ("events", {"stage": "s", "kind": "k"}), ("finish", {"outcome": outcome})):
        response = executor.post(f"{url}/{path}", {**stale, **extra}, format="json")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "stale_epoch"
    assert Phase.objects.get(pk=held["phase_id"]).state == PhaseState.EXECUTING
    assert not AttemptEvent.objects.exists()


def test_another_key_cannot_act_on_a_phase_it_does_not_hold(executor):
    make_run(state=RunState.RUNNING)
    held = claim(executor)
    intruder = client_for(["executor"])
    response = intruder.post(
        f"/api/executor/phases/{held['phase_id']}/finish",
        {"worker": "box-1", "epoch": held["claim_epoch"], "outcome": {"kind": "complete"}},
        format="json",
    )
    assert response.status_code == 403
    assert Phase.objects.get(pk=held["phase_id"]).state == PhaseState.EXECUTING


def test_release_gives_the_phase_back(executor):
    make_run(state=RunState.RUNNING)
    held = claim(executor)
    response = executor.post(
        f"/api/executor/phases/{held['phase_id']}/release",
        {"worker": "box-1", "epoch": held["claim_epoch"], "reason": "shutting down"},
        format="json",
    )
    assert response.json()["state"] == "queued"


def test_an_invalid_outcome_is_a_400(executor):
    make_run(state=RunState.RUNNING)
    held = claim(executor)
    response = executor.post(
        f"/api/executor/phases/{held['phase_id']}/finish",
        {"worker": "box-1", "epoch": held["claim_epoch"], "outcome": {"kind": "teleported"}},
        format="json",
    )
    assert response.status_code == 400
