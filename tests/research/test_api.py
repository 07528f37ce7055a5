"""The research API: scoped build-history search, research sessions and the embedder status."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.models import Role
from research.models import BuildHistoryEntry
from tests.factories import add_member, make_user
from tests.research.conftest import make_phase

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(imported_project):
    user = make_user("operator")
    add_member(user, imported_project, Role.OPERATOR)
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def outsider(imported_project):
    client = APIClient()
    client.force_authenticate(make_user("outsider"))
    return client


def test_entries_are_searchable_and_filtered(operator) -> None:
    body = operator.get("/api/research/entries/", {"q": "coverage delta", "project": "autopack"}).json()

    assert "BUILD-132" in [entry["build_id"] for entry in body["results"]]
    proposed = operator.get("/api/research/entries/", {"status": "proposed"}).json()
    assert proposed["count"] == 1
    assert proposed["results"][0] == {
        "id": proposed["results"][0]["id"],
        "project": "autopack",
        "build_id": "BUILD-041",
        "title": "Executor State Persistence Fix",
        "date": "2025-12-17",
        "status": "proposed",
        "status_text": "PROPOSED",
        "category": "",
        "commits": [],
        "summary": "Proposed fix for infinite failure loops caused by desynchronization between instance "
        "attributes and database state.",
        "files_modified": [],
        "source_file": proposed["results"][0]["source_file"],
        "line_number": 1669,
        "run": None,
    }


def test_a_bad_filter_is_a_400(operator) -> None:
    assert operator.get("/api/research/entries/", {"status": "finished"}).status_code == 400


def test_another_projects_entries_do_not_exist_for_an_outsider(outsider) -> None:
    entry = BuildHistoryEntry.objects.first()

    assert outsider.get("/api/research/entries/").json()["count"] == 0
    assert outsider.get(f"/api/research/entries/{entry.pk}/").status_code == 404


def test_an_operator_starts_a_session_and_reads_it_back(operator) -> None:
    created = operator.post(
        "/api/research/sessions/", {"project": "autopack", "question": "How was max_tokens truncation fixed?"}
    )

    assert created.status_code == 201
    body = created.json()
    assert body["embedder"] == "hashing-ngram-384" and body["status"] == "complete"
    assert body["evidence"][0]["citations"][0]["url"].startswith("autopack://autopack/ledger/")
    assert operator.get(f"/api/research/sessions/{body['id']}/").json()["report"] == body["report"]


def test_a_viewer_may_not_start_a_session_and_an_outsider_sees_no_project(imported_project, outsider) -> None:
    viewer = make_user("viewer")
    add_member(viewer, imported_project, Role.VIEWER)
    client = APIClient()
    client.force_authenticate(viewer)

    assert client.post("/api/research/sessions/", {"project": "autopack", "question": "q"}).status_code == 403
    hidden = outsider.post("/api/research/sessions/", {"project": "autopack", "question": "q"})
    assert hidden.status_code == 400
    assert hidden.json()["error"]["details"] == {"project": ["No such project."]}


def test_a_session_for_an_unknown_project_is_a_400_in_the_error_shape(operator) -> None:
    response = operator.post("/api/research/sessions/", {"project": "nowhere", "question": "q"})

    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "invalid", "message": "Invalid request.", "details": {"project": ["No such project."]}}
    }


def test_an_unavailable_embedder_is_a_503_in_the_error_shape(operator, monkeypatch) -> None:
    monkeypatch.setenv("AUTOPACK_EMBEDDER", "nonsense")
    response = operator.post("/api/research/sessions/", {"project": "autopack", "question": "q"})

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "embedder_unavailable"
    assert set(response.json()["error"]) == {"code", "message", "details"}


@pytest.mark.parametrize("page", ["0", "-1", "abc", "99"])
def test_a_page_that_is_not_a_positive_number_or_lies_past_the_end_is_a_400(operator, page) -> None:
    response = operator.get("/api/research/entries/", {"page": page})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert list(response.json()["error"]["details"]) == ["page"]


def test_the_schema_documents_page_bounds_and_session_errors() -> None:
    from drf_spectacular.generators import SchemaGenerator

    from research.api_urls import urlpatterns

    schema = SchemaGenerator(patterns=urlpatterns).get_schema(request=None, public=True)
    parameters = {item["name"]: item["schema"] for item in schema["paths"]["/entries/"]["get"]["parameters"]}
    assert parameters["page"]["minimum"] == 1
    assert parameters["page_size"] == {"type": "integer", "minimum": 1, "maximum": 200}
    responses = schema["paths"]["/sessions/"]["post"]["responses"]
    assert {"201", "400", "503"} <= set(responses)
    assert "404" not in responses


def test_the_embedder_status_is_reported(operator, monkeypatch) -> None:
    assert operator.get("/api/research/embedder/").json() == {"embedder": "hashing-ngram-384"}
    monkeypatch.setenv("AUTOPACK_EMBEDDER", "nonsense")
    assert operator.get("/api/research/embedder/").json()["embedder"].startswith("unavailable:")


def test_a_ledger_entry_written_by_a_run_links_back_to_it(operator, imported_project) -> None:
    from django.utils import timezone

    from research.services import ledger_append_for_run

    phase = make_phase(imported_project, run_name="linked", state="complete")
    phase.run.state = "complete"
    phase.run.finished_at = timezone.now()
    phase.run.save()
    entry = ledger_append_for_run(run_id=phase.run.pk)

    assert operator.get(f"/api/research/entries/{entry.pk}/").json()["run"] == phase.run.pk
