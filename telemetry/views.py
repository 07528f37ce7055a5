"""Dashboard telemetry page: spend over time, estimator accuracy and failure patterns, as server-side SVG.

Figures come from ``telemetry.queries`` (which reads the rollups, never raw usage events) and from small
bounded reads of the estimation and outcome tables; every read is scoped to the user's projects.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Max, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from autopack_site.dashboard_auth import login_required_page
from telemetry import queries
from telemetry.models import FailureHardeningEvent, PhaseOutcomeEvent, TokenEstimationEvent

WINDOWS = {"7": 7, "30": 30, "90": 90, "365": 365}
PERIOD_FOR_WINDOW = {7: "day", 30: "day", 90: "week", 365: "month"}
SCATTER_POINTS = 400
TOP_PATTERNS = 10
UNDERESTIMATION_TARGET = 0.05
TRUNCATION_TARGET = 0.02


def _series(rows: list[dict[str, Any]], key: str, value: str) -> tuple[list[str], dict[str, list[float]]]:
    """Rows of (period, key, value) as x labels plus one aligned list of values per key."""
    periods = sorted({row["period"] for row in rows})
    index = {period: position for position, period in enumerate(periods)}
    series: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(periods))
    for row in rows:
        series[str(row[key])][index[row["period"]]] += float(Decimal(str(row[value] or 0)))
    return [period[5:] if len(periods) > 1 else period for period in periods], dict(sorted(series.items()))


def _spend(project_ids: list[int] | None, days: int) -> dict[str, Any]:
    since = timezone.now().date() - timedelta(days=days - 1)
    rows = queries.usage_by_period(
        period=PERIOD_FOR_WINDOW[days], group_by=("model", "role"), since=since, project_ids=project_ids
    )
    labels, cost_by_model = _series(rows, "model", "cost_usd")
    _, tokens_by_role = _series(rows, "role", "total_tokens")
    return {
        "labels": labels,
        "cost_by_model": cost_by_model,
        "tokens_by_role": tokens_by_role,
        "total_cost": sum((Decimal(str(row["cost_usd"])) for row in rows), Decimal(0)),
        "total_tokens": sum(row["total_tokens"] or 0 for row in rows),
        "calls": sum(row["events"] or 0 for row in rows),
        "unpriced": sum(row["unpriced_events"] or 0 for row in rows),
    }


def _estimator(project_ids: list[int] | None, days: int) -> dict[str, Any]:
    since = timezone.now() - timedelta(days=days)
    accuracy = queries.estimator_accuracy(stratify=("category",), since=since, project_ids=project_ids)
    recent = queries.scope_to_projects(TokenEstimationEvent.objects.filter(occurred_at__gte=since), project_ids)
    points = list(recent.order_by("-id").values("predicted", "actual", "truncated", "category")[:SCATTER_POINTS])
    strata = accuracy["strata"].get("category", {})
    overall = accuracy["overall"]
    return {
        "overall": overall,
        "points": points,
        "smape_by_category": [(category, figures["smape_median"]) for category, figures in strata.items()],
        "underestimation_ok": _within(overall["underestimation_rate"], UNDERESTIMATION_TARGET),
        "truncation_ok": _within(overall["truncation_rate"], TRUNCATION_TARGET),
        "underestimation_target": UNDERESTIMATION_TARGET,
        "truncation_target": TRUNCATION_TARGET,
    }


def _within(rate: float | None, target: float) -> bool | None:
    return None if rate is None else rate <= target


def _failure_patterns(project_ids: list[int] | None, days: int) -> dict[str, list[dict[str, Any]]]:
    since = timezone.now() - timedelta(days=days)
    outcomes = queries.scope_to_projects(
        PhaseOutcomeEvent.objects.filter(occurred_at__gte=since).exclude(outcome="complete"), project_ids
    )
    # One row per normalised error signature (the same failure worded with different numbers or paths),
    # with one of its reasons as the example a person reads.
    reasons = list(
        outcomes.values("outcome", "error_signature")
        .annotate(count=Count("id"), tokens=Sum("tokens"), example=Max("reason"), runs=Count("run_id", distinct=True))
        .order_by("-count", "error_signature")[:TOP_PATTERNS]
    )
    hardening = queries.scope_to_projects(FailureHardeningEvent.objects.filter(occurred_at__gte=since), project_ids)
    patterns = list(
        hardening.values("pattern")
        .annotate(count=Count("id"), avoided=Sum("doctor_tokens_avoided_estimate"))
        .order_by("-count", "pattern")[:TOP_PATTERNS]
    )
    return {"reasons": reasons, "hardening": patterns}


@login_required_page
def telemetry_overview(request: HttpRequest) -> HttpResponse:
    window = request.GET.get("days", "30")
    days = WINDOWS.get(window, 30)
    project_ids = queries.accessible_project_ids(request.user)
    context = {
        "days": days,
        "windows": list(WINDOWS),
        "period": PERIOD_FOR_WINDOW[days],
        "spend": _spend(project_ids, days),
        "estimator": _estimator(project_ids, days),
        "failures": _failure_patterns(project_ids, days),
    }
    return render(request, "telemetry/overview.html", context)
