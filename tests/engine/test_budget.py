"""The token estimator, escalate-once, caps and model choice, against DESIGN.md "Token estimator"."""

from __future__ import annotations

import pytest

from runs.engine.budget import (
    BudgetLedger,
    base_budget,
    call_cost,
    can_escalate_model,
    deliverable_kind,
    escalate_once,
    estimate_tokens,
    model_for,
    phase_overhead,
)
from runs.engine.spec import Budgets, History, PhaseSpec


def spec(**overrides) -> PhaseSpec:
    return PhaseSpec(run_id=1, phase_pk=1, phase_id="p", name="p", **overrides)


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("app/models.py", "backend"),
        ("web/src/App.tsx", "frontend"),
        ("tests/test_a.py", "test"),
        ("pkg/test_b.py", "test"),
        ("docs/guide.md", "doc"),
        ("README.md", "doc"),
        ("config/app.yaml", "config"),
        ("db/migrations/0001_init.py", "sql"),
        ("schema.sql", "sql"),
    ],
)
def test_deliverables_are_costed_by_kind(path, kind):
    assert deliverable_kind(path) == kind


def test_the_estimate_is_overhead_plus_deliverables_times_1_3(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app/models.py").write_text("x = 1\n")
    estimate = estimate_tokens(
        category="backend",
        complexity="medium",
        root=tmp_path,
        deliverables=["app/models.py", "app/views.py", "tests/test_views.py"],
    )
    raw = phase_overhead("backend", "medium") + 700 + 2000 + 1400  # modify backend, new backend, new test
    assert estimate.predicted == round(raw * 1.3)
    assert estimate.buffer == 1.2
    assert estimate.selected == max(base_budget("backend", "medium"), round(estimate.predicted * 1.2))


def test_a_small_phase_gets_the_base_budget_floor():
    estimate = estimate_tokens(category="config", complexity="low", deliverables=["setup.cfg"])
    assert estimate.selected == base_budget("config", "low")


def test_buffers_grow_with_uncertainty():
    many = [f"app/m{i}.py" for i in range(8)]
    assert estimate_tokens(category="backend", complexity="low", deliverables=many).buffer == 1.6
    assert estimate_tokens(category="feature", complexity="high", deliverables=["a.py"]).buffer == 1.6
    assert estimate_tokens(category="backend", complexity="low", deliverables=["app/"]).buffer == 1.4
    synthesis = estimate_tokens(category="docs", complexity="medium", deliverables=["docs/API_REFERENCE.md"])
    assert (synthesis.model, synthesis.buffer) == ("doc_synthesis", 2.2)
    ledger = estimate_tokens(category="docs", complexity="low", deliverables=["BUILD_HISTORY.md"])
    assert (ledger.model, ledger.buffer) == ("ledger_update", 2.2)


def test_doc_synthesis_uses_its_own_additive_model():
    estimate = estimate_tokens(
        category="docs",
        complexity="medium",
        context_quality="none",
        deliverables=["docs/API_REFERENCE.md", "docs/EXAMPLES.md"],
    )
    assert estimate.predicted == round((2500 + 1200 + 1400 + 2 * 850) * 1.3)


def test_max_tokens_never_exceeds_64000():
    huge = [f"web/c{i}.tsx" for i in range(40)]
    assert estimate_tokens(category="frontend", complexity="high", deliverables=huge).selected == 64_000


def test_truncation_escalates_once_from_the_evidence_based_base():
    up = escalate_once(selected=15_604, ceiling=16_384, used=16_384, truncated=True, already_escalated=False)
    assert (up.reason, up.base, up.new_max_tokens) == ("truncated", 16_384, 20_480)
    assert escalate_once(selected=15_604, ceiling=16_384, used=16_384, truncated=True, already_escalated=True) is None


def test_high_utilisation_escalates_and_low_utilisation_does_not():
    assert escalate_once(selected=8000, ceiling=8000, used=7600, truncated=False, already_escalated=False).reason == (
        "high_utilisation"
    )
    assert escalate_once(selected=8000, ceiling=8000, used=7500, truncated=False, already_escalated=False) is None
    capped = escalate_once(selected=60_000, ceiling=64_000, used=64_000, truncated=True, already_escalated=False)
    assert capped is None  # already at the cap: nothing bigger to offer


def test_the_ledger_refuses_a_call_that_could_overrun_any_cap():
    prices = {"claude-sonnet-4-5": {"input": 3.0, "output": 15.0}}
    ledger = BudgetLedger(spec(prices=prices, budgets=Budgets(run_token_cap=50_000, run_tokens_used=30_000)))
    assert ledger.check(model="claude-sonnet-4-5", prompt_tokens=5_000, max_tokens=10_000) == ""
    ledger.add(input_tokens=5_000, output_tokens=1_000, cost=0.03)
    assert ledger.check(model="claude-sonnet-4-5", prompt_tokens=5_000, max_tokens=10_000) == "run_tokens"
    dollars = BudgetLedger(spec(prices=prices, budgets=Budgets(run_usd_cap=1.0, run_cost_usd=0.9)))
    assert dollars.check(model="claude-sonnet-4-5", prompt_tokens=1000, max_tokens=8000) == "run_usd"
    phase = BudgetLedger(spec(budgets=Budgets(phase_token_cap=10_000, phase_tokens_used=9_000)))
    assert phase.check(model="x", prompt_tokens=500, max_tokens=1000) == "phase_tokens"


def test_cost_uses_the_longest_matching_price_and_is_none_for_unknown_models():
    prices = {"claude-opus-4": {"input": 15, "output": 75}, "claude-opus-4-1": {"input": 20, "output": 80}}
    usage = {"input_tokens": 1_000_000, "output_tokens": 0}
    assert call_cost(prices, "claude-opus-4-1-20250805", usage) == 20
    assert call_cost(prices, "gpt-4o", usage) is None


def test_models_come_from_role_and_complexity_and_climb_the_ladder():
    phase = spec(complexity="low")
    assert model_for(phase, "builder") == "claude-haiku-4-5"
    assert model_for(phase, "builder", escalation_level=1) == "claude-sonnet-4-6"
    assert model_for(phase, "builder", escalation_level=5) == "claude-opus-4-6"
    assert model_for(phase, "doctor") == "claude-sonnet-4-6"
    top = spec(complexity="low", history=History(escalation_level=2))
    assert not can_escalate_model(top) and can_escalate_model(phase)


def test_a_calibrated_overhead_replaces_the_default_for_its_category_and_complexity_only():
    default = estimate_tokens(category="backend", complexity="low", deliverables=["app/a.py"])
    calibrated = estimate_tokens(
        category="backend", complexity="low", deliverables=["app/a.py"], overheads={"backend/low": 3000}
    )
    assert default.phase_overhead == phase_overhead("backend", "low") == 800
    assert calibrated.phase_overhead == 3000
    assert calibrated.predicted == round((3000 + 2000) * 1.3)
    other = estimate_tokens(
        category="backend", complexity="high", deliverables=["app/a.py"], overheads={"backend/low": 3000}
    )
    assert other.phase_overhead == phase_overhead("backend", "high")  # no calibration for that stratum
    assert phase_overhead("backend", "low", {}) == phase_overhead("backend", "low", None) == 800
