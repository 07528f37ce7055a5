from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from runs.models import Phase, PhaseState, Run, RunState
from tests.api.conftest import jwt_client, key_client
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


def test_the_run_list_pins_a_whole_run(alice, alpha):
    run = make_run(alpha, phases=2, goal="ship it")
    body = jwt_client(alice).get("/api/runs/").json()
    assert body["results"] == [
        {
            "id": run.pk,
            "project": "alpha",
            "name": run.name,
            "state": "queued",
            "goal": "ship it",
            "failure_reason": "",
            "failure_detail": "",
            "branch": "",
            "base_commit": "",
            "plan_sha256": run.plan_sha256,
            "phases_total": 2,
            "phases_done": 0,
            "progress": 0.0,
            "tokens_used": 0,
            "cost_usd": "0.000000",
            "failures_count": 0,
            "patch_failures_count": 0,
            "doctor_calls": 0,
            "budget": {
                "token_cap": 5000000,
                "usd_cap": "50.0000",
                "max_phases": 25,
                "max_minutes": 120,
                "max_failures": 25,
                "max_patch_failures": 15,
            },
            "created_by": None,
            "created_at": _iso(run.created_at),
            "started_at": None,
            "finished_at": None,
            "updated_at": _iso(Run.objects.get(pk=run.pk).updated_at),
        }
    ]


def test_runs_of_other_users_projects_are_invisible(alice, alpha):
    foreign = make_run(make_project("secret"))
    client = jwt_client(alice)
    assert client.get("/api/runs/").json()["results"] == []
    for suffix in ("", "progress/"):
        assert client.get(f"/api/runs/{foreign.pk}/{suffix}").status_code == 404
    for verb in ("start", "pause", "resume", "cancel"):
        assert client.post(f"/api/runs/{foreign.pk}/{verb}/").status_code == 404
    assert Run.objects.get(pk=foreign.pk).state == RunState.QUEUED


def test_staff_see_every_run(alpha):
    make_run(make_project("secret"))
    make_run(alpha)
    assert len(jwt_client(make_user("root", staff=True)).get("/api/runs/").json()["results"]) == 2


def test_runs_filter_by_state_project_and_date(alice, alpha):
    beta = make_project("beta")
    add_member(alice, beta, "viewer")
    queued = make_run(alpha)
    running = make_run(alpha, state=RunState.RUNNING)
    old = make_run(beta)
    Run.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    client = jwt_client(alice)

    def ids(query: str) -> list[int]:
        response = client.get(f"/api/runs/?{query}")
        assert response.status_code == 200, response.json()
        return [item["id"] for item in response.json()["results"]]

    assert ids("state=running") == [running.pk]
    assert ids("state=queued,running&project=alpha") == [running.pk, queued.pk]
    assert ids("project=beta") == [old.pk]
    since = (timezone.now() - timedelta(days=1)).date().isoformat()
    assert ids(f"created_after={since}") == [running.pk, queued.pk]
    assert ids(f"created_before={since}") == [old.pk]


def test_a_bad_filter_value_is_a_400_with_details(alice, alpha):
    response = jwt_client(alice).get("/api/runs/?state=sleeping&created_after=yesterday")
    assert response.status_code == 400
    assert set(response.json()["error"]["details"]) == {"state", "created_after"}


def test_runs_are_paginated_with_a_cursor(alice, alpha):
    runs = [make_run(alpha, phases=1) for _ in range(3)]
    client = jwt_client(alice)
    first = client.get("/api/runs/?page_size=2").json()
    assert [item["id"] for item in first["results"]] == [runs[2].pk, runs[1].pk]
    second = client.get(first["next"]).json()
    assert [item["id"] for item in second["results"]] == [runs[0].pk]
    assert second["next"] is None


def test_run_detail_has_tiers_phases_and_transitions(alice, alpha):
    run = make_run(alpha, phases=3, tiers=2)
    client = jwt_client(alice)
    client.post(f"/api/runs/{run.pk}/start/")
    body = client.get(f"/api/runs/{run.pk}/").json()
    assert [tier["tier_id"] for tier in body["tiers"]] == ["T1", "T2"]
    assert [[phase["phase_id"] for phase in tier["phases"]] for tier in body["tiers"]] == [["P1", "P2"], ["P3"]]
    first_phase = Phase.objects.get(run=run, phase_id="P1")
    assert body["tiers"][0]["phases"][0] == {
        "id": first_phase.pk,
        "phase_id": "P1",
        "name": "Phase 1",
        "sequence": 0,
        "category": "feature",
        "complexity": "medium",
        "state": "queued",
        "attempt_count": 0,
        "commit_sha": "",
    }
    assert body["transitions"] == [
        {
            "from_state": "queued",
            "to_state": "running",
            "actor": "user:alice",
            "reason": "started",
            "created_at": body["transitions"][0]["created_at"],
        }
    ]


def test_start_pause_resume_and_cancel_go_through_the_state_machine(alice, alpha):
    run = make_run(alpha)
    client = jwt_client(alice)
    assert client.post(f"/api/runs/{run.pk}/start/").json()["state"] == "running"
    assert client.post(f"/api/runs/{run.pk}/pause/", {"reason": "lunch"}, format="json").json()["state"] == "paused"
    assert client.post(f"/api/runs/{run.pk}/resume/").json()["state"] == "running"
    cancelled = client.post(f"/api/runs/{run.pk}/cancel/")
    assert cancelled.json()["state"] == "cancelled"
    assert set(Phase.objects.filter(run=run).values_list("state", flat=True)) == {PhaseState.SKIPPED}
    reasons = list(run.transitions.values_list("reason", flat=True))
    assert reasons == ["started", "lunch", "resumed", "cancelled by operator"]


def test_an_illegal_action_is_a_409_with_the_error_shape(alice, alpha):
    run = make_run(alpha, state=RunState.COMPLETE)
    response = jwt_client(alice).post(f"/api/runs/{run.pk}/pause/")
    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "code": "illegal_transition",
            "message": f"run {run.pk} cannot go from complete to paused",
            "details": {"from": "complete", "to": "paused"},
        }
    }


def test_a_viewer_can_read_but_not_act(alpha):
    viewer = make_user("vic")
    add_member(viewer, alpha, "viewer")
    run = make_run(alpha)
    client = jwt_client(viewer)
    assert client.get(f"/api/runs/{run.pk}/").status_code == 200
    response = client.post(f"/api/runs/{run.pk}/start/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_progress_counts_phases_by_state(alice, alpha):
    run = make_run(alpha, phases=3, state=RunState.RUNNING)
    Phase.objects.filter(run=run, phase_id="P1").update(state=PhaseState.COMPLETE)
    Phase.objects.filter(run=run, phase_id="P2").update(state=PhaseState.EXECUTING, current_stage="ci")
    Run.objects.filter(pk=run.pk).update(phases_done=1)
    body = jwt_client(alice).get(f"/api/runs/{run.pk}/progress/").json()
    executing = Phase.objects.get(run=run, phase_id="P2")
    assert body == {
        "run": run.pk,
        "state": "running",
        "phases_total": 3,
        "phases_done": 1,
        "progress": pytest.approx(1 / 3),
        "phases_by_state": {"queued": 1, "executing": 1, "complete": 1, "blocked": 0, "failed": 0, "skipped": 0},
        "current_phase": {
            "id": executing.pk,
            "phase_id": "P2",
            "name": "Phase 2",
            "state": "executing",
            "current_stage": "ci",
            "attempt_count": 0,
        },
        "tokens_used": 0,
        "token_cap": 5000000,
        "cost_usd": "0.000000",
        "usd_cap": "50.0000",
    }


def test_key_scopes_limit_what_a_key_may_do(alice, alpha):
    run = make_run(alpha)
    reader = key_client(alice, "read")
    assert reader.get(f"/api/runs/{run.pk}/").status_code == 200
    assert reader.post(f"/api/runs/{run.pk}/start/").status_code == 403
    writer = key_client(alice, "write")
    assert writer.post(f"/api/runs/{run.pk}/start/").status_code == 200
    staff_executor = key_client(make_user("worker", staff=True), "executor")
    assert staff_executor.get("/api/runs/").status_code == 403


def test_listing_runs_costs_a_constant_number_of_queries(alice, alpha, django_assert_max_num_queries):
    for _ in range(10):
        make_run(alpha, phases=1)
    client = jwt_client(alice)
    for page_size in (1, 10):
        with django_assert_max_num_queries(3):
            assert len(client.get(f"/api/runs/?page_size={page_size}").json()["results"]) == page_size


def test_run_detail_costs_a_constant_number_of_queries(alice, alpha, django_assert_max_num_queries):
    small, large = make_run(alpha, phases=1), make_run(alpha, phases=12, tiers=4)
    client = jwt_client(alice)
    for run in (small, large):
        with django_assert_max_num_queries(6):
            client.get(f"/api/runs/{run.pk}/")
