from pathlib import Path

import pytest
from django.core.management import call_command

from telemetry import services
from telemetry.patterns import pattern_candidates
from tests.factories import make_run

pytestmark = pytest.mark.django_db

ERRORS = Path(__file__).resolve().parent.parent / "fixtures" / "telemetry" / "errors"


def fail(run, text, *, attempt_id=None, outcome="retry"):
    return services.phase_outcome_record(
        outcome=outcome, reason="new test failures", error_text=text, run_id=run.pk, attempt_id=attempt_id
    )


def test_uncaught_failures_are_grouped_by_signature_across_checkouts():
    runs = [make_run(), make_run()]
    fail(runs[0], (ERRORS / "pytest_collection_a.txt").read_text())
    fail(runs[1], (ERRORS / "pytest_collection_b.txt").read_text())
    fail(runs[1], (ERRORS / "npm_enoent_a.txt").read_text())

    [candidate] = pattern_candidates(min_occurrences=2)
    assert (candidate.occurrences, candidate.runs) == (2, 2)
    assert candidate.error_type == "missing_python_dependency"
    assert candidate.suggested_pattern_id.startswith("missing_python_dependency_")
    assert "No module named '<q>'" in candidate.normalised


def test_failures_that_hardening_mitigated_are_not_candidates():
    run = make_run()
    text = (ERRORS / "node_missing_module_a.txt").read_text()
    fail(run, text, attempt_id=101)
    fail(run, text, attempt_id=102)
    services.hardening_record(pattern="missing_node_dependency", run_id=run.pk, phase_id=None, attempt_id=101)

    assert pattern_candidates(min_occurrences=2) == []
    assert pattern_candidates(min_occurrences=1)[0].occurrences == 1


def test_completed_outcomes_are_not_failures():
    run = make_run()
    for _ in range(3):
        fail(run, "warning: something odd", outcome="complete")
    assert pattern_candidates(min_occurrences=1) == []


def test_the_command_prints_the_normalised_signature(capsys):
    run = make_run()
    for name in ("npm_missing_script_a.txt", "npm_missing_script_b.txt", "npm_missing_script_a.txt"):
        fail(run, (ERRORS / name).read_text())
    call_command("pattern_expansion", "--min-occurrences", "3")
    out = capsys.readouterr().out
    assert "3 occurrences in 1 runs" in out
    assert "medium confidence" in out
    assert '| npm error Missing script: "<q>"' in out
