"""Reading telemetry: the figures the API, the dashboard and ``telemetry_report`` show.

Spend comes from the rollups (``UsageRollup`` per day, ``RunUsageRollup`` per run), never from a scan of raw
LLM usage events. ``project_ids`` arguments scope results: ``None`` means every project (staff), a list means
only those (``accessible_project_ids`` computes it for a user).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import BigIntegerField, Count, F, Q, QuerySet, Sum
from django.db.models.functions import Cast, TruncWeek

from accounts.models import Membership
from runs.models import Phase, PhaseState, Run
from telemetry.models import (
    ALL_PROJECTS,
    NO_PROJECT,
    AbPair,
    ContextBudgetEvent,
    EstimateSource,
    FailureHardeningEvent,
    LlmUsageEvent,
    RollupGrain,
    RunUsageRollup,
    TokenEstimationEvent,
    UsageRollup,
)

PERIODS = ("day", "week", "month")
GROUP_FIELDS = {"provider": "provider", "model": "model", "role": "role", "project": "project_id"}
STRATA = ("category", "complexity", "deliverables")
# Output names; rollups store cost as integer micro-dollars (``cost_micro_usd``) and it leaves as ``cost_usd``.
SUM_FIELDS = (
    "events",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "total_tokens",
    "cost_usd",
    "unsplit_events",
    "unpriced_events",
)
_ROLLUP_COLUMNS = tuple("cost_micro_usd" if name == "cost_usd" else name for name in SUM_FIELDS)


def accessible_project_ids(user: Any) -> list[int] | None:
    """None for staff (every project), else the ids of the projects the user is a member of."""
    if user.is_staff or user.is_superuser:
        return None
    return list(Membership.objects.filter(user=user).values_list("project_id", flat=True))


def scope_to_projects(queryset: QuerySet, project_ids: Iterable[int] | None, field: str = "project_id") -> QuerySet:
    return queryset if project_ids is None else queryset.filter(**{f"{field}__in": list(project_ids)})


def usd(micro_dollars: int) -> str:
    """Integer micro-dollars as an exact decimal string with six places ("12.345678")."""
    sign = "-" if micro_dollars < 0 else ""
    whole, fraction = divmod(abs(int(micro_dollars)), 1_000_000)
    return f"{sign}{whole}.{fraction:06d}"


def _sums(values: Sequence[Any]) -> dict[str, Any]:
    figures = dict(zip(SUM_FIELDS, (value or 0 for value in values), strict=True))
    figures["cost_usd"] = usd(figures["cost_usd"])
    return figures


# --- Usage by period ----------------------------------------------------------------------------------------


def usage_by_period(
    *,
    period: str = "day",
    group_by: Sequence[str] = (),
    since: date | None = None,
    until: date | None = None,
    project_ids: Iterable[int] | None = None,
) -> list[dict[str, Any]]:
    """Token and cost totals per day/week/month, split by any of provider, model, role, project.

    Each row: ``period`` (first day, ISO), the group fields, the ``SUM_FIELDS``; ``cost_usd`` is a string
    (exact decimal). ``unsplit_events``/``unpriced_events`` count calls whose split or price is unknown: their
    tokens are missing from the split sums and their cost from ``cost_usd``. A ``project`` of None is calls
    recorded without a project. Months are whole: a ``since`` inside a month counts that month entirely.
    """
    if period not in PERIODS:
        raise ValueError(f"period must be one of {PERIODS}")
    unknown = set(group_by) - set(GROUP_FIELDS)
    if unknown:
        raise ValueError(f"cannot group by {sorted(unknown)}; choose from {sorted(GROUP_FIELDS)}")
    rows = _rollup_rows(period=period, group_by=group_by, project_ids=project_ids)
    if since:
        rows = rows.filter(period_start__gte=_period_floor(since, period))
    if until:
        rows = rows.filter(period_start__lte=until)
    bucket = TruncWeek("period_start") if period == "week" else F("period_start")
    group_columns = [GROUP_FIELDS[name] for name in group_by]
    grouped = (
        rows.annotate(bucket=bucket)
        .values("bucket", *group_columns)
        # SUM(bigint) is numeric in PostgreSQL; cast back to bigint so the driver hands out plain ints.
        .annotate(**{f"sum_{column}": Cast(Sum(column), BigIntegerField()) for column in _ROLLUP_COLUMNS})
        .order_by()  # sorted below: Python sorts a few thousand tuples faster than a collation-aware SQL sort
        .values_list("bucket", *group_columns, *(f"sum_{column}" for column in _ROLLUP_COLUMNS))
    )
    width = len(group_columns)
    project_position = group_by.index("project") + 1 if "project" in group_by else None
    result = []
    for row in sorted(_raw_rows(grouped), key=lambda row: row[: 1 + width]):
        item = {"period": _iso_day(row[0]), **dict(zip(group_by, row[1 : 1 + width], strict=True))}
        if project_position and row[project_position] == NO_PROJECT:
            item["project"] = None
        item.update(_sums(row[1 + width :]))
        result.append(item)
    return result


def _raw_rows(queryset: QuerySet) -> list[tuple]:
    """Run the ORM-built SQL without per-value converters: a year of days is thousands of rows × 12 values."""
    try:
        sql, params = queryset.query.sql_with_params()
    except EmptyResultSet:  # e.g. scoped to no project at all
        return []
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _iso_day(value: date | datetime | str) -> str:
    if isinstance(value, str):  # SQLite returns dates as text
        return value[:10]
    return (value.date() if isinstance(value, datetime) else value).isoformat()


def _rollup_rows(*, period: str, group_by: Sequence[str], project_ids: Iterable[int] | None) -> QuerySet:
    """The smallest rollup rows that answer: monthly rows for months, all-project rows when scope allows."""
    grain = RollupGrain.MONTH if period == "month" else RollupGrain.DAY
    rows = UsageRollup.objects.filter(grain=grain)
    if project_ids is None and "project" not in group_by:
        return rows.filter(project_id=ALL_PROJECTS)
    return scope_to_projects(rows.exclude(project_id=ALL_PROJECTS), project_ids)


def _period_floor(day: date, period: str) -> date:
    """Monthly rows start on the 1st: a ``since`` inside a month includes that whole month."""
    return day.replace(day=1) if period == "month" else day


# --- Runs ---------------------------------------------------------------------------------------------------


def run_spend(run_id: int) -> dict[str, Any]:
    """Real spend of a run from its rollup rows: totals and a per-role breakdown."""
    rows = list(RunUsageRollup.objects.filter(run_id=run_id).values_list("role", *_ROLLUP_COLUMNS))
    totals = [sum(row[1 + index] for row in rows) for index in range(len(SUM_FIELDS))]
    by_role: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for role, *values in rows:
        figures = dict(zip(SUM_FIELDS, values, strict=True))
        by_role[role][0] += figures["events"]
        by_role[role][1] += figures["total_tokens"]
        by_role[role][2] += figures["cost_usd"]
    return {
        **_sums(totals),
        "by_role": {
            role: {"events": events, "total_tokens": tokens, "cost_usd": usd(cost)}
            for role, (events, tokens, cost) in sorted(by_role.items())
        },
    }


def run_status(run: Run) -> dict[str, Any]:
    """Progress, state, tokens, cost and budget use of one run."""
    spend = run_spend(run.pk)
    phase_states = dict(Phase.objects.filter(run_id=run.pk).values_list("state").annotate(count=Count("id")).order_by())
    cost = Decimal(spend["cost_usd"])
    return {
        "run_id": run.pk,
        "project_id": run.project_id,
        "state": run.state,
        "failure_reason": run.failure_reason,
        "phases_total": sum(phase_states.values()),
        "phases_done": sum(phase_states.get(state, 0) for state in (PhaseState.COMPLETE, PhaseState.SKIPPED)),
        "phase_states": phase_states,
        "progress": _progress(phase_states),
        "tokens": spend["total_tokens"],
        "cost_usd": spend["cost_usd"],
        "llm_calls": spend["events"],
        "unpriced_calls": spend["unpriced_events"],
        "token_cap": run.token_cap,
        "usd_cap": str(run.usd_cap),
        "token_budget_used": round(spend["total_tokens"] / run.token_cap, 4) if run.token_cap else None,
        "usd_budget_used": round(float(cost / run.usd_cap), 4) if run.usd_cap else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def _progress(phase_states: dict[str, int]) -> float:
    total = sum(phase_states.values())
    done = sum(phase_states.get(state, 0) for state in (PhaseState.COMPLETE, PhaseState.SKIPPED))
    return round(done / total, 4) if total else 0.0


def _doctor_avoided(run_id: int) -> dict[str, Any]:
    rows = (
        FailureHardeningEvent.objects.filter(run_id=run_id)
        .values("estimate_source")
        .annotate(count=Count("id"), tokens=Sum("doctor_tokens_avoided_estimate"), total_n=Sum("estimate_sample_size"))
        .order_by()
    )
    coverage = {source: {"count": 0, "total_n": 0, "tokens": 0} for source in EstimateSource.values}
    for row in rows:
        coverage[row["estimate_source"]] = {"count": row["count"], "total_n": row["total_n"], "tokens": row["tokens"]}
    return {
        "tokens": sum(entry["tokens"] for entry in coverage.values()),
        "events": sum(entry["count"] for entry in coverage.values()),
        "coverage": coverage,
        "is_estimate": True,
    }


def _ab_delta(run_id: int) -> dict[str, Any] | None:
    pair = AbPair.objects.filter(treatment_run_id=run_id, valid=True).order_by("-result__created_at", "-id").first()
    if pair is None:
        return None
    return {
        "tokens": pair.token_delta,
        "ab_result_id": pair.result_id,
        "control_run_id": pair.control_run_id,
        "treatment_run_id": pair.treatment_run_id,
    }


def run_consolidated_metrics(run: Run) -> dict[str, Any]:
    """Four independent token categories for one run; only ``spent`` is money actually spent.

    ``context_tokens_avoided`` (measured by the context builder), ``doctor_tokens_avoided_estimate``
    (counterfactual, with coverage per estimate source) and ``ab_measured_delta`` (treatment − control of the
    latest valid A/B pair where this run is the treatment, else null) are never added to each other or to spend.
    """
    context = ContextBudgetEvent.objects.filter(run_id=run.pk).aggregate(
        tokens=Sum("tokens_avoided"), prompts=Count("id"), included=Sum("tokens_included")
    )
    return {
        "run_id": run.pk,
        "spent": run_spend(run.pk),
        "context_tokens_avoided": {
            "tokens": context["tokens"] or 0,
            "tokens_included": context["included"] or 0,
            "prompts": context["prompts"],
        },
        "doctor_tokens_avoided_estimate": _doctor_avoided(run.pk),
        "ab_measured_delta": _ab_delta(run.pk),
    }


# --- Estimator accuracy -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear-interpolation percentile (numpy's default) of unsorted ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    lower, upper = math.floor(position), math.ceil(position)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def deliverable_bucket(count: int) -> str:
    """Buckets follow the estimator's own thresholds (≥ 8 deliverables widens the buffer)."""
    if count <= 1:
        return str(count)
    if count <= 3:
        return "2-3"
    if count <= 7:
        return "4-7"
    return "8+"


def _rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def accuracy_figures(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """SMAPE median/p90 over events that were not truncated; risk rates and waste over all events."""
    clean_smape = [event["smape"] for event in events if not event["truncated"]]
    waste = [event["waste_ratio"] for event in events if event["waste_ratio"] is not None and not event["truncated"]]
    count = len(events)
    return {
        "events": count,
        "clean_events": len(clean_smape),
        "smape_median": _rounded(percentile(clean_smape, 0.5)),
        "smape_p90": _rounded(percentile(clean_smape, 0.9)),
        "underestimation_rate": _rounded(sum(event["underestimated"] for event in events) / count, 4)
        if count
        else None,
        "truncation_rate": _rounded(sum(event["truncated"] for event in events) / count, 4) if count else None,
        "waste_ratio_median": _rounded(percentile(waste, 0.5), 3),
        "waste_ratio_p90": _rounded(percentile(waste, 0.9), 3),
    }


def _stratum_key(event: dict[str, Any], stratify: str) -> str:
    if stratify == "deliverables":
        return deliverable_bucket(event["deliverable_count"])
    return event[stratify]


def estimator_accuracy(
    *,
    stratify: Sequence[str] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    project_ids: Iterable[int] | None = None,
) -> dict[str, Any]:
    """Accuracy overall and per stratum (``category``, ``complexity``, ``deliverables`` bucket).

    Estimation events are one per Builder call (thousands, not millions), so the percentiles are computed
    here over narrow rows rather than per database dialect.
    """
    unknown = set(stratify) - set(STRATA)
    if unknown:
        raise ValueError(f"cannot stratify by {sorted(unknown)}; choose from {STRATA}")
    rows = scope_to_projects(TokenEstimationEvent.objects.all(), project_ids)
    if since:
        rows = rows.filter(occurred_at__gte=since)
    if until:
        rows = rows.filter(occurred_at__lt=until)
    events = list(
        rows.values(
            "category", "complexity", "deliverable_count", "smape", "waste_ratio", "truncated", "underestimated"
        )
    )
    result: dict[str, Any] = {"overall": accuracy_figures(events), "strata": {}}
    for dimension in stratify:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            groups[_stratum_key(event, dimension)].append(event)
        result["strata"][dimension] = {key: accuracy_figures(group) for key, group in sorted(groups.items())}
    return result


def usage_events(*, project_ids: Iterable[int] | None = None, filters: dict[str, Any] | None = None) -> QuerySet:
    """Raw LLM usage events, newest first, for the keyset-paginated event list."""
    rows = scope_to_projects(LlmUsageEvent.objects.all(), project_ids)
    clean = {key: value for key, value in (filters or {}).items() if value not in (None, "")}
    return rows.filter(Q(**clean)).order_by("-id")
