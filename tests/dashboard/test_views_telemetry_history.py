"""The telemetry page (SVG charts from telemetry.queries) and the build-history browser."""

from __future__ import annotations

from datetime import date

import pytest

from research.models import EntryStatus
from telemetry.models import FailureHardeningEvent, LlmUsageEvent, PhaseOutcomeEvent
from tests.dashboard.conftest import login
from tests.dashboard.data import add_entry, add_estimate, add_usage
from tests.factories import make_project, make_user

pytestmark = pytest.mark.django_db


def test_empty_telemetry_page_tells_a_newcomer_what_to_do(operator_client) -> None:
    page = operator_client.get("/telemetry/").content.decode()
    assert "No telemetry yet" in page and "manage.py demo" in page


def test_telemetry_page_draws_cost_tokens_accuracy_and_failures(operator_client, project) -> None:
    add_usage(project, model="claude-sonnet-4-5", role="builder", tokens=120_000)
    add_usage(project, model="claude-haiku-4-5", role="auditor", tokens=30_000)
    total_cost = sum(event.cost_usd or 0 for event in LlmUsageEvent.objects.all())  # None if unpriced
    add_estimate(project, predicted=4000, actual=5000, category="backend")
    add_estimate(project, predicted=3000, actual=3000, category="docs")
    add_estimate(project, predicted=2000, actual=2100, truncated=True, category="docs")
    PhaseOutcomeEvent.objects.create(project_id=project.pk, outcome="retry", reason="new_test_failures", tokens=9000)
    FailureHardeningEvent.objects.create(
        project_id=project.pk,
        pattern="missing_python_dependency",
        doctor_tokens_avoided_estimate=12000,
        estimate_source="fallback",
        estimate_sample_size=0,
    )
    page = operator_client.get("/telemetry/").content.decode()
    assert page.count('<svg class="chart') == 4
    assert "claude-sonnet-4-5" in page and "claude-haiku-4-5" in page  # cost-by-model legend
    assert ">builder<" in page and ">auditor<" in page  # tokens-by-role legend
    assert f"${total_cost:,.2f}" in page and "150k" in page
    assert "predicted 4000, actual 5000" in page and "(truncated)" in page
    assert "33.3 %" in page  # 1 of 3 truncated, 1 of 3 underestimated
    assert "new_test_failures" in page and "missing_python_dependency" in page


def test_telemetry_page_counts_only_the_users_projects(client, project) -> None:
    stranger = make_project("secret")
    add_usage(stranger, model="claude-opus-4-1", role="builder", tokens=999_000)
    login(client, make_user("nobody"))
    page = client.get("/telemetry/").content.decode()
    assert "claude-opus-4-1" not in page and "No telemetry yet" in page


def test_build_history_lists_searches_and_filters_entries(operator_client, project) -> None:
    add_entry(project, "BUILD-101", "Token budget escalation", summary="raise max_tokens on truncation")
    add_entry(project, "BUILD-102", "Governed apply hardening", status=EntryStatus.FAILED, day=date(2025, 3, 1))
    add_entry(make_project("secret"), "BUILD-900", "Someone else's build")
    page = operator_client.get("/history/").content.decode()
    assert "BUILD-101" in page and "BUILD-102" in page and "BUILD-900" not in page
    assert page.index("BUILD-102") < page.index("BUILD-101")  # newest first
    searched = operator_client.get("/history/?q=truncation").content.decode()
    assert "BUILD-101" in searched and "BUILD-102" not in searched
    failed = operator_client.get("/history/?status=failed").content.decode()
    assert "BUILD-102" in failed and "BUILD-101" not in failed
    dated = operator_client.get("/history/?from=2025-02-01&to=2025-12-31").content.decode()
    assert "BUILD-102" in dated and "BUILD-101" not in dated


def test_build_history_entry_detail_and_permission(operator_client, project) -> None:
    entry = add_entry(project, "BUILD-7", "Parser", files_modified=["src/parser.py"], changes="Rewrote it.")
    page = operator_client.get(f"/history/{entry.pk}/").content.decode()
    assert "src/parser.py" in page and "Rewrote it." in page and "## BUILD-7: Parser" in page
    other = add_entry(make_project("secret"), "BUILD-8", "Hidden")
    assert operator_client.get(f"/history/{other.pk}/").status_code == 403


def test_empty_build_history_tells_a_newcomer_what_to_do(operator_client) -> None:
    page = operator_client.get("/history/").content.decode()
    assert "No build history yet" in page and "import_build_history" in page
