import json
from datetime import UTC, datetime

import pytest
from django.core.management import call_command

from telemetry import services
from telemetry.models import UsageRollup
from tests.factories import make_run

pytestmark = pytest.mark.django_db


def some_telemetry(record_call):
    run = make_run()
    record_call(run_id=run.pk, occurred_at=datetime(2026, 10, 5, tzinfo=UTC))
    record_call(run_id=run.pk, occurred_at=datetime(2026, 11, 5, tzinfo=UTC), input_tokens=None, output_tokens=None)
    services.estimation_record(
        run_id=run.pk,
        category="docs",
        complexity="high",
        deliverable_count=9,
        predicted=5_200,
        actual=16_384,
        selected_budget=8_192,
        final_ceiling=16_384,
        truncated=False,
    )
    services.context_record(run_id=run.pk, tokens_included=10_000, tokens_avoided=4_000)
    services.hardening_record(pattern="no_tests_collected", run_id=run.pk, phase_id=None)
    return run


def test_json_report_keeps_spend_and_avoided_tokens_apart(record_call, capsys):
    some_telemetry(record_call)
    call_command("telemetry_report", "--json", "--stratify")
    report = json.loads(capsys.readouterr().out)

    assert report["spend"] == {
        "events": 2,
        "total_tokens": 1_500,
        "cost_usd": "0.010500",
        "unsplit_events": 1,
        "unpriced_events": 1,
    }
    assert report["context_tokens_avoided"] == 4_000
    assert report["doctor_tokens_avoided_estimate"]["tokens"] == 12_000
    assert report["estimator"]["overall"]["smape_median"] == 103.63
    assert list(report["estimator"]["strata"]["deliverables"]) == ["8+"]


def test_since_limits_the_report(record_call, capsys):
    some_telemetry(record_call)
    call_command("telemetry_report", "--json", "--since", "2026-11-01")
    assert json.loads(capsys.readouterr().out)["spend"]["events"] == 1


def test_text_report_prints_tables(record_call, capsys):
    some_telemetry(record_call)
    call_command("telemetry_report", "--stratify")
    out = capsys.readouterr().out
    assert "SPENT (real): 1,500 tokens, $0.010500 over 2 LLM calls (1 without a token split, 1 without a price)" in out
    assert "DOCTOR TOKENS AVOIDED (estimate, not spend): 12,000" in out
    assert "by complexity" in out


def test_rebuild_rollups_repairs_lost_rollups(record_call, capsys):
    some_telemetry(record_call)
    UsageRollup.objects.all().delete()
    call_command("telemetry_report", "--json", "--rebuild-rollups")
    assert json.loads(capsys.readouterr().out)["spend"]["events"] == 2


def test_since_accepts_a_number_of_days_as_docs_operations_md_shows(record_call, capsys):
    from datetime import timedelta

    from django.utils import timezone

    run = make_run()
    record_call(run_id=run.pk, occurred_at=timezone.now() - timedelta(days=30))
    record_call(run_id=run.pk, occurred_at=timezone.now() - timedelta(days=1))
    call_command("telemetry_report", "--since", "7d", "--json")
    assert json.loads(capsys.readouterr().out)["spend"]["events"] == 1
