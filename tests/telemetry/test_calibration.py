import pytest
from django.core.management import call_command

from telemetry import calibration, services
from telemetry.models import EstimatorCalibration

pytestmark = pytest.mark.django_db


def biased_events(*, count, overhead, true_overhead, deliverable_cost=2_000, category="backend", complexity="medium"):
    """Events whose estimate used `overhead` while `true_overhead` would have been exact (plus a little noise)."""
    for number in range(count):
        predicted = round((overhead + deliverable_cost) * 1.3)
        actual = round((true_overhead + deliverable_cost) * 1.3) + (number % 3 - 1) * 50
        services.estimation_record(
            category=category,
            complexity=complexity,
            deliverable_count=2,
            predicted=predicted,
            actual=actual,
            selected_budget=predicted * 2,
            final_ceiling=predicted * 2,
            truncated=False,
            phase_overhead=overhead,
        )


def test_overheads_move_part_of_the_way_towards_what_the_events_imply():
    biased_events(count=20, overhead=1_000, true_overhead=3_000)
    proposal = calibration.propose(damping=0.5)

    [stratum] = proposal.strata
    assert (stratum.key, stratum.current) == ("backend/medium", 1_000)
    assert stratum.proposed == 2_000  # halfway to the implied 3,000
    assert (proposal.training_events, proposal.held_back_events) == (16, 4)
    assert proposal.smape_after < proposal.smape_before


def test_full_damping_reaches_the_implied_overhead():
    biased_events(count=10, overhead=1_000, true_overhead=3_000)
    assert calibration.propose(damping=1.0).overheads == {"backend/medium": 3_000}


def test_strata_with_too_few_events_keep_their_overhead_and_truncated_events_are_ignored():
    biased_events(count=3, overhead=1_000, true_overhead=5_000, category="docs")
    services.estimation_record(
        category="docs",
        complexity="medium",
        deliverable_count=1,
        predicted=100,
        actual=64_000,
        selected_budget=64_000,
        final_ceiling=64_000,
        truncated=True,
        phase_overhead=1_000,
    )
    proposal = calibration.propose(damping=0.5, min_samples=5)
    assert proposal.overheads == {"docs/medium": 1_000}
    assert proposal.training_events + proposal.held_back_events == 3


def test_the_command_writes_nothing_without_apply(capsys):
    biased_events(count=10, overhead=1_000, true_overhead=2_000)
    call_command("calibrate_estimator")
    out = capsys.readouterr().out
    assert "backend/medium" in out and "Nothing written" in out
    assert EstimatorCalibration.objects.count() == 0

    call_command("calibrate_estimator", "--apply", "--damping", "1")
    assert calibration.current_overheads() == {"backend/medium": 2_000}
