"""A/B comparison of runs: measured deltas (treatment − control), valid only between like-for-like runs.

A pair is valid only when both runs started from the same commit (``Run.base_commit``) and used the same
model mapping (hash of ``Run.model_mapping``); anything else measures the commit or the models, not the
change under test. Invalid pairs are stored with the reason and left out of the aggregate deltas.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.db.models import Sum

from autopack_site.lib.errors import ValidationFailed
from runs.models import Run, RunState
from telemetry.models import AbPair, AbTestResult, RunUsageRollup, model_mapping_hash

METRICS = ("tokens", "cost_usd", "wall_seconds", "run_success", "phase_success_rate", "retries")


def run_metrics(run: Run) -> dict[str, Any]:
    """What ``ab_compare`` compares for one run: tokens and cost (from the rollups), time, success, retries."""
    spend = RunUsageRollup.objects.filter(run_id=run.pk).aggregate(
        tokens=Sum("total_tokens"), cost=Sum("cost_micro_usd")
    )
    phases = list(run.phases.values_list("state", "attempt_count"))
    complete = sum(1 for state, _ in phases if state == "complete")
    wall = (run.finished_at - run.started_at).total_seconds() if run.finished_at and run.started_at else None
    return {
        "tokens": spend["tokens"] or 0,
        "cost_usd": (spend["cost"] or 0) / 1_000_000,
        "wall_seconds": wall,
        "run_success": 1 if run.state == RunState.COMPLETE else 0,
        "phase_success_rate": complete / len(phases) if phases else None,
        "retries": sum(max(attempts - 1, 0) for _, attempts in phases),
    }


def pair_problems(control: Run, treatment: Run) -> list[str]:
    """Why a control/treatment pair cannot be compared; empty when it is valid."""
    problems = []
    if not control.base_commit or not treatment.base_commit:
        problems.append("commit SHA unknown (base_commit is empty)")
    elif control.base_commit != treatment.base_commit:
        problems.append(
            f"commit SHA differs: control {control.base_commit[:12]}, treatment {treatment.base_commit[:12]}"
        )
    control_hash, treatment_hash = (
        model_mapping_hash(control.model_mapping),
        model_mapping_hash(treatment.model_mapping),
    )
    if control_hash != treatment_hash:
        problems.append(f"model-mapping hash differs: control {control_hash[:12]}, treatment {treatment_hash[:12]}")
    if control.pk == treatment.pk:
        problems.append("a run cannot be its own control")
    return problems


def summarise(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "mean": None, "median": None, "stdev": None, "total": None}
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else None,
        "total": sum(values),
    }


def aggregate_deltas(pairs: Sequence[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per metric: summary of the per-pair deltas plus control/treatment means and the percent change."""
    deltas = {}
    for metric in METRICS:
        usable = [(c[metric], t[metric]) for c, t in pairs if c[metric] is not None and t[metric] is not None]
        summary = summarise([t - c for c, t in usable])
        control_total = sum(c for c, _ in usable)
        summary["control_mean"] = statistics.fmean([c for c, _ in usable]) if usable else None
        summary["treatment_mean"] = statistics.fmean([t for _, t in usable]) if usable else None
        summary["percent_change"] = 100.0 * summary["total"] / control_total if usable and control_total else None
        deltas[metric] = summary
    return deltas


def _runs_in_order(ids: Sequence[int]) -> list[Run]:
    found = Run.objects.in_bulk(list(ids))
    missing = [pk for pk in ids if pk not in found]
    if missing:
        raise ValidationFailed(f"no such run: {missing}")
    return [found[pk] for pk in ids]


def originals_of(treatment_ids: Sequence[int]) -> list[int]:
    """The run each treatment was cloned from (``replay_campaign``), in order: the natural controls."""
    originals = dict(Run.objects.filter(pk__in=list(treatment_ids)).values_list("pk", "cloned_from_id"))
    unpaired = [pk for pk in treatment_ids if originals.get(pk) is None]
    if unpaired:
        raise ValidationFailed(f"runs {unpaired} are not clones: give --control runs for them")
    return [originals[pk] for pk in treatment_ids]


@transaction.atomic
def ab_compare(*, control_ids: Sequence[int], treatment_ids: Sequence[int], label: str = "") -> AbTestResult:
    """Pair the i-th control with the i-th treatment, check each pair, store and return the result."""
    if not control_ids or len(control_ids) != len(treatment_ids):
        raise ValidationFailed("give as many control runs as treatment runs (paired in order), at least one")
    controls, treatments = _runs_in_order(control_ids), _runs_in_order(treatment_ids)
    checked = []
    for control, treatment in zip(controls, treatments, strict=True):
        checked.append(
            (control, treatment, pair_problems(control, treatment), run_metrics(control), run_metrics(treatment))
        )
    valid_pairs = [(c_metrics, t_metrics) for _, _, problems, c_metrics, t_metrics in checked if not problems]
    result = AbTestResult.objects.create(
        label=label,
        valid=len(valid_pairs) == len(checked),
        pair_count=len(checked),
        valid_pair_count=len(valid_pairs),
        deltas=aggregate_deltas(valid_pairs),
        problems=[f"pair {c.pk}/{t.pk}: {problem}" for c, t, problems, _, _ in checked for problem in problems],
    )
    AbPair.objects.bulk_create(
        AbPair(
            result=result,
            control_run_id=control.pk,
            treatment_run_id=treatment.pk,
            valid=not problems,
            problems=problems,
            control_metrics=c_metrics,
            treatment_metrics=t_metrics,
            token_delta=t_metrics["tokens"] - c_metrics["tokens"],
        )
        for control, treatment, problems, c_metrics, t_metrics in checked
    )
    return result
