from __future__ import annotations

import zlib

import pytest

from runs.models import Attempt, AttemptEvent, Phase, PhaseState, RunState
from tests.api.conftest import jwt_client
from tests.factories import add_member, make_project, make_run, make_user

pytestmark = pytest.mark.django_db


def _iso(moment) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def alpha(alice):
    project = make_project("alpha")
    add_member(alice, project, "operator")
    return project


def _attempt(phase: Phase, number: int = 1, **fields) -> Attempt:
    attempt = Attempt.objects.create(phase=phase, number=number, claim_epoch=number, worker="host-1", **fields)
    AttemptEvent.objects.create(attempt=attempt, seq=1, stage="builder", kind="llm_call", data={"tokens": 10})
    AttemptEvent.objects.create(
        attempt=attempt, seq=2, stage="ci", kind="result", data={"passed": 3}, blob=zlib.compress(b"log")
    )
    return attempt


def test_the_phase_list_pins_a_whole_phase(alice, alpha):
    run = make_run(alpha, phases=1)
    phase = run.phases.get()
    body = jwt_client(alice).get(f"/api/phases/?run={run.pk}").json()
    phase.refresh_from_db()
    assert body["results"] == [
        {
            "id": phase.pk,
            "run": run.pk,
            "project": "alpha",
            "tier": "T1",
            "phase_id": "P1",
            "index": 0,
            "sequence": 0,
            "name": "Phase 1",
            "description": "",
            "category": "feature",
            "complexity": "medium",
            "scope": {"paths": ["src/p1.py"], "deliverables": ["src/p1.py"]},
            "state": "queued",
            "attempt_count": 0,
            "attempts_since_requeue": 0,
            "revision_epoch": 0,
            "escalation_level": 0,
            "last_failure_reason": "",
            "doctor_calls": 0,
            "lease_owner": "",
            "lease_expires_at": None,
            "claim_epoch": 0,
            "commit_sha": "",
            "tokens_used": 0,
            "cost_usd": "0.000000",
            "current_stage": "",
            "created_at": _iso(phase.created_at),
            "started_at": None,
            "finished_at": None,
            "updated_at": _iso(phase.updated_at),
        }
    ]


def test_phases_filter_by_state_and_project(alice, alpha):
    run = make_run(alpha, phases=3)
    Phase.objects.filter(run=run, phase_id="P2").update(state=PhaseState.BLOCKED)
    client = jwt_client(alice)
    blocked = client.get("/api/phases/?state=blocked&project=alpha").json()["results"]
    assert [item["phase_id"] for item in blocked] == ["P2"]
    assert client.get("/api/phases/?project=other").json()["results"] == []


def test_phase_detail_has_transitions_and_requeue_reopens_a_failed_run(alice, alpha):
    run = make_run(alpha, phases=2, state=RunState.FAILED)
    phase = run.phases.get(phase_id="P1")
    Phase.objects.filter(pk=phase.pk).update(state=PhaseState.BLOCKED, attempt_count=5)
    client = jwt_client(alice)
    response = client.post(f"/api/phases/{phase.pk}/requeue/", {"reason": "fixed the env"}, format="json")
    assert response.status_code == 200
    assert response.json()["state"] == "queued"
    assert response.json()["attempts_since_requeue"] == 0
    detail = client.get(f"/api/phases/{phase.pk}/").json()
    assert [(t["from_state"], t["to_state"], t["reason"]) for t in detail["transitions"]] == [
        ("blocked", "queued", "fixed the env")
    ]
    run.refresh_from_db()
    assert run.state == RunState.RUNNING


def test_requeueing_a_queued_phase_is_a_409(alice, alpha):
    phase = make_run(alpha, phases=1).phases.get()
    response = jwt_client(alice).post(f"/api/phases/{phase.pk}/requeue/")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "illegal_transition"


def test_phases_and_attempts_of_other_users_projects_are_not_found(alice, alpha):
    phase = make_run(make_project("secret"), phases=1).phases.get()
    Phase.objects.filter(pk=phase.pk).update(state=PhaseState.BLOCKED)
    attempt = _attempt(phase)
    client = jwt_client(alice)
    assert client.get(f"/api/phases/{phase.pk}/").status_code == 404
    assert client.post(f"/api/phases/{phase.pk}/requeue/").status_code == 404
    assert client.get("/api/phases/").json()["results"] == []
    assert client.get("/api/attempts/").json()["results"] == []
    for suffix in ("", "diff/", "ci/", "verdicts/"):
        assert client.get(f"/api/attempts/{attempt.pk}/{suffix}").status_code == 404


def test_a_viewer_cannot_requeue(alpha):
    viewer = make_user("vic")
    add_member(viewer, alpha, "viewer")
    phase = make_run(alpha, phases=1).phases.get()
    Phase.objects.filter(pk=phase.pk).update(state=PhaseState.FAILED)
    assert jwt_client(viewer).post(f"/api/phases/{phase.pk}/requeue/").status_code == 403


def test_attempt_detail_pins_the_attempt_with_its_stage_events(alice, alpha):
    phase = make_run(alpha, phases=1).phases.get()
    attempt = _attempt(phase, status="failed", outcome="retry", model="claude-haiku-4-5", input_tokens=100)
    body = jwt_client(alice).get(f"/api/attempts/{attempt.pk}/").json()
    events = list(AttemptEvent.objects.filter(attempt=attempt).order_by("seq"))
    assert body == {
        "id": attempt.pk,
        "run": phase.run_id,
        "phase": phase.pk,
        "phase_key": "P1",
        "number": 1,
        "claim_epoch": 1,
        "revision_epoch": 0,
        "worker": "host-1",
        "status": "failed",
        "outcome": "retry",
        "failure_reason": "",
        "model": "claude-haiku-4-5",
        "input_tokens": 100,
        "output_tokens": 0,
        "cost_usd": "0.000000",
        "started_at": _iso(attempt.started_at),
        "finished_at": None,
        "duration_ms": None,
        "events": [
            {
                "seq": 1,
                "stage": "builder",
                "kind": "llm_call",
                "data": {"tokens": 10},
                "has_blob": False,
                "created_at": _iso(events[0].created_at),
            },
            {
                "seq": 2,
                "stage": "ci",
                "kind": "result",
                "data": {"passed": 3},
                "has_blob": True,
                "created_at": _iso(events[1].created_at),
            },
        ],
    }


def test_attempt_diff_ci_delta_and_verdicts(alice, alpha):
    phase = make_run(alpha, phases=1).phases.get()
    summary = {
        "ci": {"fixed": ["t1"], "new_failures": [], "still_failing": ["t2"], "flaky": []},
        "audit": {"approved": True, "issues": [], "summary": "fine"},
        "gates": {"deliverables": True, "ci": True},
    }
    attempt = _attempt(phase, diff="--- a/x\n+++ b/x\n", summary=summary)
    client = jwt_client(alice)
    assert client.get(f"/api/attempts/{attempt.pk}/diff/").json() == {"attempt": attempt.pk, "diff": attempt.diff}
    assert client.get(f"/api/attempts/{attempt.pk}/ci/").json() == {"attempt": attempt.pk, "data": summary["ci"]}
    verdicts = client.get(f"/api/attempts/{attempt.pk}/verdicts/").json()
    assert verdicts == {
        "attempt": attempt.pk,
        "auditor": summary["audit"],
        "gates": summary["gates"],
        "decision": None,
        "doctor": None,
    }


def test_attempts_filter_by_phase_and_status(alice, alpha):
    run = make_run(alpha, phases=2)
    first, second = run.phases.order_by("sequence")
    failed = _attempt(first, status="failed")
    _attempt(second, status="succeeded")
    client = jwt_client(alice)
    assert [a["id"] for a in client.get(f"/api/attempts/?status=failed&run={run.pk}").json()["results"]] == [failed.pk]
    assert [a["id"] for a in client.get(f"/api/attempts/?phase={first.pk}").json()["results"]] == [failed.pk]


def test_listing_phases_and_attempts_costs_a_constant_number_of_queries(alice, alpha, django_assert_max_num_queries):
    run = make_run(alpha, phases=10)
    for phase in run.phases.all():
        _attempt(phase)
    client = jwt_client(alice)
    for page_size in (1, 10):
        with django_assert_max_num_queries(3):
            assert len(client.get(f"/api/phases/?page_size={page_size}").json()["results"]) == page_size
        with django_assert_max_num_queries(3):
            assert len(client.get(f"/api/attempts/?page_size={page_size}").json()["results"]) == page_size


def test_credentials_in_event_data_are_redacted_on_the_way_out(alice, alpha):
    phase = make_run(alpha, phases=1).phases.get()
    attempt = Attempt.objects.create(phase=phase, number=1, claim_epoch=1)
    leaked = "sk-ant-api03-" + "x" * 40
    AttemptEvent.objects.create(attempt=attempt, seq=1, stage="ci", kind="log", data={"stderr": f"key {leaked} bad"})
    body = jwt_client(alice).get(f"/api/attempts/{attempt.pk}/").json()
    assert body["events"][0]["data"] == {"stderr": "key [REDACTED] bad"}
