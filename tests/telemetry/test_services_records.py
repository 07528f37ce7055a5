from pathlib import Path

import pytest

from telemetry import services
from telemetry.signatures import error_signature
from tests.factories import make_run

pytestmark = pytest.mark.django_db

ERRORS = Path(__file__).resolve().parent.parent / "fixtures" / "telemetry" / "errors"


def test_an_escalation_is_recorded_with_its_project():
    run = make_run()
    event = services.escalation_record(
        reason="truncated", from_budget=16_000, to_budget=20_000, output_tokens_used=16_000, run_id=run.pk
    )
    assert (event.project_id, event.from_budget, event.to_budget) == (run.project_id, 16_000, 20_000)


def test_a_phase_outcome_keeps_its_error_and_its_signature():
    text = (ERRORS / "pytest_failures_a.txt").read_text()
    event = services.phase_outcome_record(outcome="retry", reason="new test failures", error_text=text, run_id=None)
    assert event.error_signature == error_signature((ERRORS / "pytest_failures_b.txt").read_text())
    assert services.phase_outcome_record(outcome="complete").error_signature == ""


def test_a_doctor_outcome_without_confidence_is_stored_as_unknown():
    event = services.doctor_outcome_record(action="replan", confidence=None, tokens=9_000, model="claude-sonnet-4-5")
    event.refresh_from_db()
    assert (event.action, event.confidence, event.tokens) == ("replan", None, 9_000)


def test_context_cuts_are_recorded():
    event = services.context_record(tokens_included=50_000, tokens_avoided=20_000, files_cut=4, files_summarised=2)
    assert (event.tokens_avoided, event.files_cut, event.files_summarised, event.role) == (20_000, 4, 2, "builder")
