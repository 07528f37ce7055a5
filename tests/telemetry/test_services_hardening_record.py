import pytest

from telemetry import counterfactual, services
from telemetry.models import EstimateSource
from tests.factories import make_run

pytestmark = pytest.mark.django_db


def doctor_calls(record_call, run, totals):
    for total in totals:
        record_call(run_id=run.pk if run else None, role="doctor", input_tokens=total - 1_000, output_tokens=1_000)


def test_estimate_is_the_median_of_the_runs_own_doctor_calls_when_it_has_three(record_call):
    run, other = make_run(), make_run()
    doctor_calls(record_call, run, [9_000, 11_000, 50_000])
    doctor_calls(record_call, other, [2_000] * 10)

    event = services.hardening_record(pattern="missing_python_dependency", run_id=run.pk, phase_id=None)
    assert (event.doctor_tokens_avoided_estimate, event.estimate_source, event.estimate_sample_size) == (
        11_000,
        EstimateSource.RUN_LOCAL,
        3,
    )
    assert event.project_id == run.project_id


def test_estimate_falls_back_to_the_last_hundred_doctor_calls_anywhere(record_call):
    run, other = make_run(), make_run()
    doctor_calls(record_call, run, [9_000, 11_000])  # only two: not enough for a run-local baseline
    doctor_calls(record_call, other, [30_000] * 2)
    doctor_calls(record_call, None, [2_000] * 100)  # the most recent hundred

    event = services.hardening_record(pattern="wrong_working_directory", run_id=run.pk, phase_id=None)
    assert (event.doctor_tokens_avoided_estimate, event.estimate_source, event.estimate_sample_size) == (
        2_000,
        EstimateSource.GLOBAL,
        100,
    )


def test_estimate_uses_a_fixed_fallback_without_any_doctor_history(record_call):
    record_call(role="builder")
    run = make_run()
    event = services.hardening_record(pattern="no_tests_collected", run_id=run.pk, phase_id=None)
    assert (event.doctor_tokens_avoided_estimate, event.estimate_source, event.estimate_sample_size) == (
        12_000,
        EstimateSource.FALLBACK,
        0,
    )
    assert counterfactual.doctor_fallback_tokens("claude-opus-4-1") == 15_000


def test_doctor_calls_without_a_known_total_are_not_part_of_the_baseline(record_call):
    run = make_run()
    doctor_calls(record_call, run, [10_000, 10_000])
    record_call(run_id=run.pk, role="doctor", input_tokens=None, output_tokens=None)
    event = services.hardening_record(pattern="scope_mismatch", run_id=run.pk, phase_id=None)
    assert event.estimate_source == EstimateSource.GLOBAL
    assert event.estimate_sample_size == 2


def test_avoided_tokens_are_never_added_to_spend(record_call):
    from telemetry import queries

    run = make_run()
    record_call(run_id=run.pk, input_tokens=1_000, output_tokens=500)
    services.hardening_record(pattern="permission_error", run_id=run.pk, phase_id=None)

    metrics = queries.run_consolidated_metrics(run)
    assert metrics["spent"]["total_tokens"] == 1_500
    assert metrics["doctor_tokens_avoided_estimate"]["tokens"] == 12_000
    assert metrics["doctor_tokens_avoided_estimate"]["is_estimate"] is True
