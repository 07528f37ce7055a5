from __future__ import annotations

from pathlib import Path

import pytest

from accounts.models import Membership
from runs.models import Run
from tests.api.conftest import jwt_client, key_client
from tests.factories import add_member, make_project, make_user

pytestmark = pytest.mark.django_db

PLAN = (Path(__file__).parent.parent / "fixtures" / "plans" / "example_basic.yaml").read_text()


def test_the_project_list_shows_only_my_projects_with_my_role():
    user = make_user("alice")
    mine = make_project("alpha", base_branch="trunk", default_test_command="pytest -q")
    make_project("secret")
    add_member(user, mine, "operator")
    body = jwt_client(user).get("/api/projects/").json()
    assert body["next"] is None and body["previous"] is None
    assert body["results"] == [
        {
            "id": mine.pk,
            "slug": "alpha",
            "name": "Alpha",
            "repository_path": "/nonexistent",
            "base_branch": "trunk",
            "protected_paths": [],
            "default_test_command": "pytest -q",
            "ledger_path": "",
            "created_at": mine.created_at.isoformat().replace("+00:00", "Z"),
            "role": "operator",
        }
    ]


def test_staff_see_every_project_as_owner():
    make_project("alpha")
    make_project("beta")
    body = jwt_client(make_user("root", staff=True)).get("/api/projects/").json()
    assert [(item["slug"], item["role"]) for item in body["results"]] == [("alpha", "owner"), ("beta", "owner")]


def test_another_users_project_is_not_found():
    make_project("secret")
    client = jwt_client(make_user("alice"))
    assert client.get("/api/projects/secret/").status_code == 404
    response = client.post("/api/projects/secret/runs/", {"plan": PLAN}, format="json")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not found.", "details": None}}


def test_only_staff_create_projects_and_become_owner():
    payload = {"slug": "gamma", "name": "Gamma", "repository_path": "/srv/repos/gamma"}
    assert jwt_client(make_user("alice")).post("/api/projects/", payload, format="json").status_code == 403
    staff = make_user("root", staff=True)
    response = jwt_client(staff).post("/api/projects/", payload, format="json")
    assert response.status_code == 201
    assert response.json()["role"] == "owner"
    assert Membership.objects.get(project__slug="gamma").user == staff


def test_an_operator_creates_a_run_from_a_plan_document():
    user = make_user("alice")
    add_member(user, make_project("alpha"), "operator")
    response = jwt_client(user).post(
        "/api/projects/alpha/runs/", {"plan": PLAN, "source_name": "example_basic.yaml"}, format="json"
    )
    assert response.status_code == 201, response.json()
    run = response.json()["run"]
    assert run["project"] == "alpha" and run["state"] == "queued" and run["created_by"] == "alice"
    assert [tier["tier_id"] for tier in run["tiers"]] == ["data", "web"]
    assert [phase["phase_id"] for phase in run["tiers"][0]["phases"]] == ["export-model", "csv-renderer"]
    assert isinstance(response.json()["warnings"], list)
    assert Run.objects.get(pk=run["id"]).phases.count() == run["phases_total"]


def test_an_invalid_plan_is_refused_with_every_error_and_its_path():
    user = make_user("alice")
    add_member(user, make_project("alpha"), "operator")
    response = jwt_client(user).post(
        "/api/projects/alpha/runs/", {"plan": {"version": 1, "phases": [{"id": "x"}]}}, format="json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "plan_invalid"
    assert all(set(item) == {"path", "message"} for item in error["details"])
    assert not Run.objects.exists()


@pytest.mark.parametrize("plan", [None, ["phases"], 7, True])
def test_a_plan_that_is_neither_an_object_nor_text_is_a_400_as_the_schema_says(plan):
    from tests.openapi_check import openapi_document

    user = make_user("alice")
    add_member(user, make_project("alpha"), "operator")
    response = jwt_client(user).post("/api/projects/alpha/runs/", {"plan": plan}, format="json")
    assert response.status_code == 400
    assert list(response.json()["error"]["details"]) == ["plan"]
    assert not Run.objects.exists()
    schema = openapi_document()["components"]["schemas"]
    documented = schema["RunCreateInputRequest"]["properties"]["plan"]
    assert [branch["type"] for branch in documented["oneOf"]] == ["object", "string"]
    assert "nullable" not in documented


def test_a_viewer_cannot_create_runs():
    user = make_user("alice")
    add_member(user, make_project("alpha"), "viewer")
    response = jwt_client(user).post("/api/projects/alpha/runs/", {"plan": PLAN}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_a_read_only_key_cannot_create_runs_but_can_list():
    user = make_user("alice")
    add_member(user, make_project("alpha"), "owner")
    client = key_client(user, "read")
    assert client.get("/api/projects/").status_code == 200
    assert client.post("/api/projects/alpha/runs/", {"plan": PLAN}, format="json").status_code == 403


def test_listing_projects_costs_a_constant_number_of_queries(django_assert_max_num_queries):
    user = make_user("alice")
    for number in range(12):
        add_member(user, make_project(f"p{number:02d}"))
    client = jwt_client(user)
    for page_size in (2, 12):
        with django_assert_max_num_queries(3):
            assert len(client.get(f"/api/projects/?page_size={page_size}").json()["results"]) == page_size
