from datetime import UTC, datetime
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from runs.models import Phase
from telemetry import services
from tests.factories import add_member, make_project, make_run, make_user

pytestmark = pytest.mark.django_db

AT = datetime(2026, 11, 3, 12, tzinfo=UTC)


@pytest.fixture
def my_run(member):
    project = make_project("mine")
    add_member(member, project)
    return make_run(project, phases=4, usd_cap=Decimal("10"), token_cap=100_000, base_commit="abc123")


@pytest.fixture
def their_run():
    return make_run(make_project("theirs"))


def test_anonymous_requests_are_refused():
    assert APIClient().get("/api/telemetry/usage/").status_code in (401, 403)


def test_run_status_reports_progress_tokens_cost_and_budget_use(client, my_run, record_call):
    Phase.objects.filter(run=my_run, sequence__lt=2).update(state="complete")
    Phase.objects.filter(run=my_run, sequence=2).update(state="failed")
    record_call(run_id=my_run.pk, input_tokens=20_000, output_tokens=5_000, occurred_at=AT)  # $0.135
    record_call(
        run_id=my_run.pk, role="doctor", input_tokens=None, output_tokens=None, total_tokens=5_000, occurred_at=AT
    )

    response = client.get(f"/api/telemetry/runs/{my_run.pk}/status/")

    assert response.status_code == 200
    assert response.json() == {
        "run_id": my_run.pk,
        "project_id": my_run.project_id,
        "state": "queued",
        "failure_reason": "",
        "phases_total": 4,
        "phases_done": 2,
        "phase_states": {"complete": 2, "failed": 1, "queued": 1},
        "progress": 0.5,
        "tokens": 30_000,
        "cost_usd": "0.135000",
        "llm_calls": 2,
        "unpriced_calls": 1,
        "token_cap": 100_000,
        "usd_cap": "10.0000",
        "token_budget_used": 0.3,
        "usd_budget_used": 0.0135,
        "started_at": None,
        "finished_at": None,
    }


def test_consolidated_metrics_keep_four_separate_categories(client, my_run, record_call):
    record_call(run_id=my_run.pk, input_tokens=1_000, output_tokens=1_000, occurred_at=AT)
    services.context_record(run_id=my_run.pk, tokens_included=30_000, tokens_avoided=12_000, files_cut=3)
    services.hardening_record(pattern="missing_python_dependency", run_id=my_run.pk, phase_id=None)

    body = client.get(f"/api/telemetry/runs/{my_run.pk}/metrics/").json()

    assert body["spent"]["total_tokens"] == 2_000
    assert body["spent"]["by_role"] == {"builder": {"events": 1, "total_tokens": 2_000, "cost_usd": "0.018000"}}
    assert body["context_tokens_avoided"] == {"tokens": 12_000, "tokens_included": 30_000, "prompts": 1}
    assert body["doctor_tokens_avoided_estimate"]["tokens"] == 12_000
    assert body["doctor_tokens_avoided_estimate"]["coverage"]["fallback"] == {
        "count": 1,
        "total_n": 0,
        "tokens": 12_000,
    }
    assert body["ab_measured_delta"] is None


@pytest.mark.parametrize("endpoint", ["status", "metrics"])
def test_another_users_run_is_not_found(client, their_run, endpoint):
    response = client.get(f"/api/telemetry/runs/{their_run.pk}/{endpoint}/")
    assert response.status_code == 404


def test_staff_see_every_run(their_run):
    staff = APIClient()
    staff.force_authenticate(make_user(staff=True))
    assert staff.get(f"/api/telemetry/runs/{their_run.pk}/status/").status_code == 200


def test_usage_by_period_is_scoped_to_the_users_projects(client, my_run, their_run, record_call):
    record_call(run_id=my_run.pk, occurred_at=AT)
    record_call(run_id=their_run.pk, occurred_at=AT)

    body = client.get("/api/telemetry/usage/?period=month&group_by=project,role").json()
    assert body["results"] == [
        {
            "period": "2026-11-01",
            "project": my_run.project_id,
            "role": "builder",
            "events": 1,
            "input_tokens": 1_000,
            "output_tokens": 500,
            "cache_creation_tokens": 0,
            "cache_read_tokens": 0,
            "total_tokens": 1_500,
            "cost_usd": "0.010500",
            "unsplit_events": 0,
            "unpriced_events": 0,
        }
    ]
    assert client.get(f"/api/telemetry/usage/?project={their_run.project_id}").json()["results"] == []


def test_usage_rejects_unknown_groupings(client):
    response = client.get("/api/telemetry/usage/?group_by=colour")
    assert response.status_code == 400


def test_event_list_pages_with_a_cursor_and_hides_other_projects(client, my_run, their_run, record_call):
    mine = [record_call(run_id=my_run.pk, request_id=f"mine-{n}").pk for n in range(7)]
    record_call(run_id=their_run.pk, request_id="theirs")

    seen, url = [], "/api/telemetry/events/?page_size=3"
    while url:
        body = client.get(url).json()
        seen += [event["id"] for event in body["results"]]
        url = body["next"]
    assert seen == sorted(mine, reverse=True)

    first = client.get(f"/api/telemetry/events/?run={my_run.pk}&page_size=1").json()["results"][0]
    assert first["request_id"] == "mine-6"
    assert set(first) >= {"input_tokens", "cache_read_tokens", "cost_usd", "stop_reason", "project_id"}
    assert client.get(f"/api/telemetry/events/?run={their_run.pk}").json()["results"] == []
    assert client.get("/api/telemetry/events/?run=abc").status_code == 400


@pytest.mark.parametrize("endpoint", ["/api/telemetry/events/", "/api/telemetry/ab-results/"])
def test_a_malformed_cursor_is_a_400_in_the_error_shape(client, endpoint):
    response = client.get(endpoint, {"cursor": "not-a-cursor"})

    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "invalid", "message": "Invalid request.", "details": {"cursor": ["Invalid cursor."]}}
    }


@pytest.mark.parametrize(
    "query",
    [
        {"run": "0"},
        {"project": str(2**63)},
        {"phase": "-16354431772484813455360"},
        {"run": "²"},
        {"role": "x" * 101},
        {"model": "a\x00b"},
    ],
)
def test_event_filters_out_of_range_or_malformed_are_a_400(client, query):
    response = client.get("/api/telemetry/events/", query)

    assert response.status_code == 400
    assert list(response.json()["error"]["details"]) == list(query)


@pytest.mark.parametrize("project", ["0", "-16354431772484813455360", str(2**63)])
def test_usage_with_an_out_of_range_project_is_a_400_not_a_server_error(client, project):
    response = client.get("/api/telemetry/usage/", {"project": project})

    assert response.status_code == 400
    assert list(response.json()["error"]["details"]) == ["project"]


def test_estimator_accuracy_endpoint_stratifies(client, my_run):
    services.estimation_record(
        run_id=my_run.pk,
        category="backend",
        complexity="low",
        deliverable_count=1,
        predicted=100,
        actual=150,
        selected_budget=200,
        final_ceiling=200,
        truncated=False,
    )
    body = client.get("/api/telemetry/estimator/accuracy/?stratify=category,deliverables").json()
    assert body["overall"]["smape_median"] == 40.0
    assert list(body["strata"]) == ["category", "deliverables"]
    assert client.get("/api/telemetry/estimator/accuracy/?stratify=colour").status_code == 400


def test_estimator_accuracy_is_scoped_to_the_users_projects(client, their_run):
    services.estimation_record(
        run_id=their_run.pk,
        category="backend",
        complexity="low",
        deliverable_count=1,
        predicted=100,
        actual=150,
        selected_budget=200,
        final_ceiling=200,
        truncated=False,
    )
    assert client.get("/api/telemetry/estimator/accuracy/").json()["overall"]["events"] == 0


def test_the_schema_documents_the_telemetry_endpoints():
    from drf_spectacular.generators import SchemaGenerator

    from telemetry.api_urls import urlpatterns

    schema = SchemaGenerator(patterns=urlpatterns).get_schema(request=None, public=True)
    usage = schema["paths"]["/usage/"]["get"]
    assert {parameter["name"] for parameter in usage["parameters"]} >= {"period", "group_by", "since", "project"}
    assert "/runs/{id}/metrics/" in schema["paths"] or "/runs/{pk}/metrics/" in schema["paths"]
    project = next(item for item in usage["parameters"] if item["name"] == "project")["schema"]
    assert project["minimum"] == 1 and project["maximum"] == 2**63 - 1
    events = {item["name"]: item["schema"] for item in schema["paths"]["/events/"]["get"]["parameters"]}
    assert events["run"]["minimum"] == 1 and events["run"]["maximum"] == 2**63 - 1
    assert events["cursor"]["type"] == "string"
    # A too-long query string is refused by the HTTP server, in its own format: documented without a body.
    assert "content" not in schema["paths"]["/events/"]["get"]["responses"]["414"]
