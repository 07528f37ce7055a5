import pytest

from telemetry import queries, services

pytestmark = pytest.mark.django_db


def estimate(**overrides):
    fields = {
        "category": "backend",
        "complexity": "medium",
        "deliverable_count": 2,
        "predicted": 1_000,
        "actual": 1_000,
        "selected_budget": 1_500,
        "final_ceiling": 1_500,
        "truncated": False,
        "model": "claude-sonnet-4-5",
    }
    fields.update(overrides)
    return services.estimation_record(**fields)


def test_smape_waste_and_underestimation_are_computed_on_write():
    # The documentation sample from the build history: predicted 5,200, actual 16,384 -> SMAPE 103.6 %.
    event = estimate(predicted=5_200, actual=16_384, selected_budget=8_192)
    assert round(event.smape, 1) == 103.6
    assert event.underestimated is True
    assert event.waste_ratio == 8_192 / 16_384

    over = estimate(predicted=2_000, actual=1_000, selected_budget=3_000)
    assert round(over.smape, 2) == 66.67
    assert over.underestimated is False
    assert over.waste_ratio == 3.0


def test_smape_of_two_zeros_is_zero():
    assert services.smape(predicted=0, actual=0) == 0.0


def test_smape_figures_exclude_truncated_events_but_rates_count_them():
    estimate(predicted=1_000, actual=1_000)  # SMAPE 0
    estimate(predicted=1_000, actual=1_500)  # SMAPE 40
    estimate(predicted=1_000, actual=3_000)  # SMAPE 100
    estimate(predicted=1_000, actual=64_000, selected_budget=64_000, truncated=True)  # censored: SMAPE ~ 194

    overall = queries.estimator_accuracy()["overall"]
    assert overall["events"] == 4
    assert overall["clean_events"] == 3
    assert overall["smape_median"] == 40.0
    assert overall["smape_p90"] == 88.0  # interpolated between 40 and 100
    assert overall["truncation_rate"] == 0.25
    assert overall["underestimation_rate"] == 0.75


def test_waste_ratio_percentiles_ignore_truncated_events():
    estimate(actual=1_000, selected_budget=2_000)
    estimate(actual=1_000, selected_budget=4_000)
    estimate(actual=10, selected_budget=64_000, truncated=True)

    overall = queries.estimator_accuracy()["overall"]
    assert overall["waste_ratio_median"] == 3.0
    assert overall["waste_ratio_p90"] == 3.8


def test_accuracy_is_stratified_by_category_complexity_and_deliverable_bucket():
    estimate(category="backend", complexity="low", deliverable_count=1, actual=1_000)
    estimate(category="backend", complexity="high", deliverable_count=9, actual=2_000)
    estimate(category="docs", complexity="high", deliverable_count=3, actual=1_000, truncated=True)

    strata = queries.estimator_accuracy(stratify=["category", "complexity", "deliverables"])["strata"]
    assert sorted(strata["category"]) == ["backend", "docs"]
    assert strata["category"]["backend"]["events"] == 2
    assert strata["category"]["docs"]["smape_median"] is None  # its only event was truncated
    assert strata["complexity"]["high"]["truncation_rate"] == 0.5
    assert sorted(strata["deliverables"]) == ["1", "2-3", "8+"]


def test_accuracy_with_no_events_is_empty_not_an_error():
    overall = queries.estimator_accuracy()["overall"]
    assert overall == {
        "events": 0,
        "clean_events": 0,
        "smape_median": None,
        "smape_p90": None,
        "underestimation_rate": None,
        "truncation_rate": None,
        "waste_ratio_median": None,
        "waste_ratio_p90": None,
    }
