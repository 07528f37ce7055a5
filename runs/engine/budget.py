"""Token estimator, escalate-once, budget caps and model choice (DESIGN.md "Token estimator").

estimate = (phase overhead[category, complexity] + Σ per-deliverable cost) × 1.3
max_tokens = min(max(base[category, complexity], estimate × buffer), 64,000)
buffer 1.2; 1.4 on low confidence; 1.6 with ≥ 8 deliverables or high-complexity feature work; 2.2 for
documentation synthesis and ledger updates (which have their own additive models). On truncation or ≥ 95 %
output use the next attempt gets min(max(selected, ceiling, used) × 1.25, 64,000), once.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runs.engine.spec import PhaseSpec

CAP = 64_000
MULTIPLIER = 1.3
ESCALATION_FACTOR = 1.25
HIGH_UTILISATION = 0.95
# Per-deliverable output tokens: (new file, modified file).
DELIVERABLE_COSTS: dict[str, tuple[int, int]] = {
    "backend": (2000, 700),
    "frontend": (2800, 1100),
    "test": (1400, 600),
    "doc": (500, 400),
    "config": (1000, 500),
    "sql": (1500, 600),
}
# Fixed output of a phase besides its files (summary, meta line, reasoning about the change).
_OVERHEAD_BY_COMPLEXITY = {"low": 800, "medium": 1500, "high": 2500}
_OVERHEAD_CATEGORY_FACTOR = {"docs": 0.6, "config": 0.6, "tests": 0.8, "feature": 1.2, "refactor": 1.2}
# The floor of max_tokens (the reference system's complexity scaling: 8K / 12K / 16K).
_BASE_BY_COMPLEXITY = {"low": 8192, "medium": 12288, "high": 16384}
_BASE_CATEGORY = {("docs", "low"): 4096, ("config", "low"): 4096}
# Documentation synthesis: investigation (by how much context we give), API extraction, examples, writing.
_INVESTIGATION_BY_CONTEXT = {"none": 2500, "some": 2000, "strong": 1500}
_SYNTHESIS_HINTS = re.compile(r"\b(api reference|examples?|investigat|analy[sz]e|from the code|research)", re.I)
_LEDGER_NAMES = re.compile(r"(BUILD_HISTORY|CHANGELOG|LEDGER|HISTORY)[^/]*\.md$", re.I)
_FRONTEND = (".js", ".jsx", ".ts", ".tsx", ".vue", ".svelte", ".css", ".scss", ".html")
_DOCS = (".md", ".rst", ".txt", ".adoc")
_CONFIG = (".json", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".env", ".conf")


def deliverable_kind(path: str) -> str:
    lowered = path.lower()
    name = lowered.rsplit("/", 1)[-1]
    if lowered.endswith(".sql") or "/migrations/" in f"/{lowered}":
        return "sql"
    if (
        name.startswith("test_")
        or name.endswith(("_test.py", ".test.js", ".test.ts", ".spec.ts", ".spec.js"))
        or (lowered.startswith(("tests/", "test/")) and not lowered.endswith(_DOCS))
    ):
        return "test"
    if lowered.endswith(_DOCS) or lowered.startswith("docs/"):
        return "doc"
    if lowered.endswith(_FRONTEND):
        return "frontend"
    if lowered.endswith(_CONFIG) or name in ("dockerfile", "makefile"):
        return "config"
    return "backend"


@dataclass(frozen=True)
class Estimate:
    predicted: int  # expected output tokens
    selected: int  # max_tokens the estimator chose
    buffer: float
    phase_overhead: int
    model: str  # "standard", "doc_synthesis" or "ledger_update"
    confidence: str  # "normal" or "low"
    deliverable_count: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _exists(root: Path | None, path: str) -> bool:
    return root is not None and (root / path).exists()


def phase_overhead(category: str, complexity: str, overheads: dict[str, int] | None = None) -> int:
    """The fixed output of a phase; a calibrated value (``{"category/complexity": tokens}``) wins."""
    calibrated = (overheads or {}).get(f"{category}/{complexity}")
    if isinstance(calibrated, int | float) and calibrated >= 0:
        return int(calibrated)
    base = _OVERHEAD_BY_COMPLEXITY.get(complexity, _OVERHEAD_BY_COMPLEXITY["medium"])
    return int(base * _OVERHEAD_CATEGORY_FACTOR.get(category, 1.0))


def base_budget(category: str, complexity: str) -> int:
    return _BASE_CATEGORY.get((category, complexity), _BASE_BY_COMPLEXITY.get(complexity, 12288))


def is_ledger_update(deliverables: list[str]) -> bool:
    return bool(deliverables) and all(_LEDGER_NAMES.search(path) for path in deliverables)


def is_doc_synthesis(category: str, deliverables: list[str], description: str) -> bool:
    names = " ".join(deliverables).upper()
    docs_only = bool(deliverables) and all(deliverable_kind(path) == "doc" for path in deliverables)
    return (category == "docs" or docs_only) and (
        "API_REFERENCE" in names or "EXAMPLES" in names or bool(_SYNTHESIS_HINTS.search(description))
    )


def _synthesis_tokens(deliverables: list[str], context_quality: str) -> int:
    names = " ".join(deliverables).upper()
    total = _INVESTIGATION_BY_CONTEXT.get(context_quality, 2500) + 850 * len(deliverables)
    total += 1200 if "API_REFERENCE" in names else 0
    total += 1400 if "EXAMPLES" in names else 0
    return int(total * 1.12) if len(deliverables) >= 5 else total


def _ledger_tokens(deliverables: list[str]) -> int:
    return 1200 + 900 * len(deliverables)


def estimate_tokens(
    *,
    category: str,
    complexity: str,
    deliverables: list[str],
    description: str = "",
    root: Path | None = None,
    context_quality: str = "some",
    overheads: dict[str, int] | None = None,
) -> Estimate:
    """``overheads``: calibrated phase overheads by "category/complexity" (telemetry's calibration), if any."""
    overhead = phase_overhead(category, complexity, overheads)
    files = [path for path in deliverables if not path.endswith("/")]
    low_confidence = not deliverables or len(files) != len(deliverables)
    if is_ledger_update(deliverables):
        raw, model, buffer = _ledger_tokens(deliverables), "ledger_update", 2.2
    elif is_doc_synthesis(category, deliverables, description):
        raw, model, buffer = _synthesis_tokens(deliverables, context_quality), "doc_synthesis", 2.2
    else:
        costs = [DELIVERABLE_COSTS[deliverable_kind(path)][1 if _exists(root, path) else 0] for path in files]
        # A directory deliverable is at least one new file of its kind.
        costs += [DELIVERABLE_COSTS[deliverable_kind(path)][0] for path in deliverables if path.endswith("/")]
        raw, model = overhead + sum(costs), "standard"
        buffer = _standard_buffer(category, complexity, len(deliverables), low_confidence)
    predicted = int(round(raw * MULTIPLIER))
    selected = min(max(base_budget(category, complexity), int(round(predicted * buffer))), CAP)
    return Estimate(
        predicted, selected, buffer, overhead, model, "low" if low_confidence else "normal", len(deliverables)
    )


def _standard_buffer(category: str, complexity: str, count: int, low_confidence: bool) -> float:
    if count >= 8 or (complexity == "high" and category == "feature"):
        return 1.6
    if low_confidence:
        return 1.4
    return 1.2


@dataclass(frozen=True)
class TokenEscalation:
    reason: str  # "truncated" or "high_utilisation"
    base: int
    new_max_tokens: int


def escalate_once(
    *, selected: int, ceiling: int, used: int, truncated: bool, already_escalated: bool
) -> TokenEscalation | None:
    """The next attempt's max_tokens after a truncated or nearly-full answer; None when not warranted."""
    if already_escalated or ceiling <= 0:
        return None
    if truncated:
        reason = "truncated"
    elif used >= HIGH_UTILISATION * ceiling:
        reason = "high_utilisation"
    else:
        return None
    # The evidence-based base: never below what the model already proved it needed.
    base = max(selected, ceiling, used)
    new_value = min(int(round(base * ESCALATION_FACTOR)), CAP)
    if new_value <= ceiling:
        return None
    return TokenEscalation(reason, base, new_value)


def approx_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def call_cost(prices: dict[str, dict[str, float]], model: str, usage: dict[str, int | None]) -> float | None:
    """USD from per-million prices; None when the model has no price."""
    price = _price_for(prices, model)
    if price is None:
        return None
    total = (
        (usage.get("input_tokens") or 0) * price.get("input", 0)
        + (usage.get("output_tokens") or 0) * price.get("output", 0)
        + (usage.get("cache_creation_tokens") or 0) * price.get("cache_write", 0)
        + (usage.get("cache_read_tokens") or 0) * price.get("cache_read", 0)
    )
    return total / 1_000_000


def _price_for(prices: dict[str, dict[str, float]], model: str) -> dict[str, float] | None:
    matches = [name for name in prices if model == name or model.startswith(name + "-")]
    return prices[max(matches, key=len)] if matches else None


class BudgetLedger:
    """Spend of this attempt on top of what the phase and run had spent when it started."""

    def __init__(self, spec: PhaseSpec) -> None:
        self.spec = spec
        self.tokens = 0
        self.cost = 0.0
        self.input_tokens = 0
        self.output_tokens = 0

    def add(self, *, input_tokens: int, output_tokens: int, cost: float | None) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.tokens += input_tokens + output_tokens
        self.cost += cost or 0.0

    def check(self, *, model: str, prompt_tokens: int, max_tokens: int) -> str:
        """Empty when the call fits every cap even if it uses all of max_tokens; else which cap it breaks."""
        budgets = self.spec.budgets
        worst_tokens = prompt_tokens + max_tokens
        worst_cost = call_cost(self.spec.prices, model, {"input_tokens": prompt_tokens, "output_tokens": max_tokens})
        worst_cost = worst_cost or 0.0
        if budgets.run_tokens_used + self.tokens + worst_tokens > budgets.run_token_cap:
            return "run_tokens"
        if budgets.run_cost_usd + self.cost + worst_cost > budgets.run_usd_cap:
            return "run_usd"
        if budgets.phase_tokens_used + self.tokens + worst_tokens > budgets.phase_token_cap:
            return "phase_tokens"
        if budgets.phase_cost_usd + self.cost + worst_cost > budgets.phase_usd_cap:
            return "phase_usd"
        return ""


def model_for(spec: PhaseSpec, role: str, *, escalation_level: int | None = None) -> str:
    """Model for a role at the phase's complexity, moved up the ladder by the escalation level."""
    table = spec.models.get(role) or {}
    model = table.get(spec.complexity) or table.get("medium") or next(iter(table.values()), "")
    level = spec.history.escalation_level if escalation_level is None else escalation_level
    ladder = spec.escalation_ladder
    if level <= 0 or not ladder:
        return model
    start = ladder.index(model) if model in ladder else 0
    return ladder[min(start + level, len(ladder) - 1)]


def can_escalate_model(spec: PhaseSpec) -> bool:
    return model_for(spec, "builder") != model_for(spec, "builder", escalation_level=spec.history.escalation_level + 1)
