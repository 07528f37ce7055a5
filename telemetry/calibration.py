"""Calibrating the token estimator's phase overheads from recorded estimation events.

estimate = (overhead[category, complexity] + Σ deliverable costs) × 1.3, so an event whose estimate used
overhead ``o`` implies the overhead ``o + (actual − predicted) / 1.3`` would have been exact. Per stratum we
take the median implied overhead of the training events and move only part of the way towards it
(``damping``), so a few odd phases cannot swing the estimator. Every fifth event (by id) is held back and
never used for fitting: SMAPE before/after is measured on those. Truncated events are left out (their
``actual`` is only a lower bound), as are events that did not record their overhead.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from telemetry.models import EstimatorCalibration, TokenEstimationEvent
from telemetry.services import smape

ESTIMATE_MULTIPLIER = 1.3
HOLD_BACK_EVERY = 5


@dataclass
class StratumProposal:
    key: str
    current: int
    proposed: int
    training_events: int


@dataclass
class CalibrationProposal:
    damping: float
    strata: list[StratumProposal] = field(default_factory=list)
    training_events: int = 0
    held_back_events: int = 0
    smape_before: float | None = None
    smape_after: float | None = None

    @property
    def overheads(self) -> dict[str, int]:
        return {stratum.key: stratum.proposed for stratum in self.strata}


def stratum_key(category: str, complexity: str) -> str:
    return f"{category}/{complexity}"


def _usable_events(since: datetime | None) -> list[dict[str, Any]]:
    rows = TokenEstimationEvent.objects.filter(truncated=False, phase_overhead__isnull=False)
    if since:
        rows = rows.filter(occurred_at__gte=since)
    return list(rows.order_by("id").values("id", "category", "complexity", "predicted", "actual", "phase_overhead"))


def _fit_stratum(key: str, events: list[dict[str, Any]], damping: float, min_samples: int) -> StratumProposal:
    current = int(statistics.median(event["phase_overhead"] for event in events))
    if len(events) < min_samples:
        return StratumProposal(key, current, current, len(events))
    implied = [
        event["phase_overhead"] + (event["actual"] - event["predicted"]) / ESTIMATE_MULTIPLIER for event in events
    ]
    target = statistics.median(implied)
    proposed = max(0, round(current + damping * (target - current)))
    return StratumProposal(key, current, proposed, len(events))


def _repredicted(event: dict[str, Any], overheads: dict[str, int]) -> float:
    new_overhead = overheads.get(stratum_key(event["category"], event["complexity"]), event["phase_overhead"])
    return max(0.0, event["predicted"] + ESTIMATE_MULTIPLIER * (new_overhead - event["phase_overhead"]))


def propose(*, damping: float = 0.5, min_samples: int = 5, since: datetime | None = None) -> CalibrationProposal:
    if not 0 < damping <= 1:
        raise ValueError("damping must be in (0, 1]")
    events = _usable_events(since)
    held_back = [event for position, event in enumerate(events) if position % HOLD_BACK_EVERY == HOLD_BACK_EVERY - 1]
    held_ids = {event["id"] for event in held_back}
    training = [event for event in events if event["id"] not in held_ids]
    groups: dict[str, list[dict[str, Any]]] = {}
    for event in training:
        groups.setdefault(stratum_key(event["category"], event["complexity"]), []).append(event)
    proposal = CalibrationProposal(damping=damping, training_events=len(training), held_back_events=len(held_back))
    proposal.strata = [_fit_stratum(key, group, damping, min_samples) for key, group in sorted(groups.items())]
    if held_back:
        proposal.smape_before = statistics.fmean(smape(predicted=e["predicted"], actual=e["actual"]) for e in held_back)
        proposal.smape_after = statistics.fmean(
            smape(predicted=_repredicted(e, proposal.overheads), actual=e["actual"]) for e in held_back
        )
    return proposal


def apply(proposal: CalibrationProposal) -> EstimatorCalibration:
    return EstimatorCalibration.objects.create(
        applied=True,
        damping=proposal.damping,
        overheads=proposal.overheads,
        sample_size=proposal.training_events,
        smape_before=proposal.smape_before,
        smape_after=proposal.smape_after,
        held_back=proposal.held_back_events,
    )


def current_overheads() -> dict[str, int]:
    """The overheads of the latest applied calibration (``"category/complexity" -> tokens``); {} when none."""
    latest = EstimatorCalibration.objects.filter(applied=True).order_by("-created_at", "-id").first()
    return dict(latest.overheads) if latest else {}
