"""The telemetry read endpoints answer exactly what the OpenAPI schema says, on real figures."""

from datetime import UTC, datetime
from decimal import Decimal

import jsonschema
import pytest
from rest_framework.test import APIClient

from runs.models import Phase, RunState
from telemetry import services
from telemetry.ab import ab_compare
from tests.factories import add_member, make_project, make_run, make_user
from tests.openapi_check import assert_matches_schema, response_schema

pytestmark = pytest.mark.django_db

AT = datetime(2026, 11, 3, 12, tzinfo=UTC)
COMMIT = "3f47d86a0c1e5b2a9d7e6f5a4b3c2d1e0f9a8b7c"


@pytest.fixture
def project(member):
    project = make_project("mine")
    add_member(member, project)
    return project


def finished_run(project, record_call, tokens):
    run = make_run(project, phases=2, state=RunState.COMPLETE, base_commit=COMMIT, started_at=AT, finished_at=AT)
    Phase.objects.filter(run=run).update(state="complete", attempt_count=1)
    record_call(run_id=run.pk, input_tokens=tokens - 1_000, output_tokens=1_000, occurred_at=AT)
    return run


def estimation(run, **fields):
    values = {
        "category": "backend",
        "complexity": "low",
        "deliverable_count": 2,
        "predicted": 100,
        "actual": 150,
        "selected_budget": 200,
        "final_ceiling": 200,
        "truncated": False,
    }
    services.estimation_record(run_id=run.pk, **{**values, **fields})


def test_run_status_and_metrics_with_every_figure_present(client, project, record_call):
    control = finished_run(project, record_call, 100_000)
    run = finished_run(project, record_call, 80_000)
    record_call(run_id=run.pk, role="doctor", input_tokens=None, output_tokens=None, total_tokens=5_000, occurred_at=AT)
    record_call(run_id=run.pk, model="no-such-model", occurred_at=AT)  # unpriced
    services.context_record(run_id=run.pk, tokens_included=30_000, tokens_avoided=12_000, files_cut=3)
    services.hardening_record(pattern="missing_python_dependency", run_id=run.pk, phase_id=None)
    ab_compare(control_ids=[control.pk], treatment_ids=[run.pk], label="schema")

    status = client.get(f"/api/telemetry/runs/{run.pk}/status/").json()
    metrics = client.get(f"/api/telemetry/runs/{run.pk}/metrics/").json()

    assert status["finished_at"] is not None and status["usd_budget_used"] is not None
    assert metrics["ab_measured_delta"] is not None and set(metrics["spent"]["by_role"]) == {"builder", "doctor"}
    assert_matches_schema(status, "/api/telemetry/runs/{id}/status/")
    assert_matches_schema(metrics, "/api/telemetry/runs/{id}/metrics/")


def test_run_status_and_metrics_of_an_empty_run(client, project):
    run = make_run(project, phases=1, token_cap=0, usd_cap=Decimal("0"))
    status = client.get(f"/api/telemetry/runs/{run.pk}/status/").json()
    metrics = client.get(f"/api/telemetry/runs/{run.pk}/metrics/").json()
    assert status["token_budget_used"] is None and metrics["ab_measured_delta"] is None
    assert_matches_schema(status, "/api/telemetry/runs/{id}/status/")
    assert_matches_schema(metrics, "/api/telemetry/runs/{id}/metrics/")


@pytest.mark.parametrize("group_by", ["", "provider,model,role,project"])
@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_usage_grouped_or_not(project, record_call, period, group_by):
    staff = APIClient()
    staff.force_authenticate(make_user(staff=True))
    run = finished_run(project, record_call, 10_000)
    record_call(run_id=run.pk, role="auditor", occurred_at=AT)
    record_call(occurred_at=AT)  # no run, so no project
    body = staff.get("/api/telemetry/usage/", {"period": period, "group_by": group_by}).json()
    if group_by:
        assert {row["project"] for row in body["results"]} == {project.pk, None}
    else:
        assert len(body["results"]) == 1
    assert_matches_schema(body, "/api/telemetry/usage/")


def test_estimator_accuracy_overall_and_per_stratum(client, project, record_call):
    run = finished_run(project, record_call, 10_000)
    estimation(run)
    estimation(run, category="frontend", complexity="high", deliverable_count=9, truncated=True)
    body = client.get("/api/telemetry/estimator/accuracy/?stratify=category,complexity,deliverables").json()
    assert set(body["strata"]) == {"category", "complexity", "deliverables"}
    assert_matches_schema(body, "/api/telemetry/estimator/accuracy/")
    empty = client.get("/api/telemetry/estimator/accuracy/").json()
    assert empty["overall"]["events"] == 2
    assert_matches_schema(empty, "/api/telemetry/estimator/accuracy/")


def test_the_check_is_strict_about_undocumented_fields_and_types():
    errors = {
        error.validator
        for error in jsonschema.Draft7Validator(response_schema("/api/telemetry/runs/{id}/metrics/")).iter_errors(
            {"run_id": "1", "surprise": 2}
        )
    }
    assert {"additionalProperties", "type", "required"} <= errors
