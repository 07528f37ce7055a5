"""The figures of ``manage.py telemetry_report``, as a dict (``--json``) and as plain-text tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from django.db.models import Count, Sum

from telemetry import queries
from telemetry.models import ContextBudgetEvent, EstimateSource, FailureHardeningEvent


def _since_moment(since: date | None) -> datetime | None:
    return datetime.combine(since, time.min, tzinfo=UTC) if since else None


def _avoided_totals(since: date | None) -> dict[str, Any]:
    hardening = FailureHardeningEvent.objects.all()
    context = ContextBudgetEvent.objects.all()
    if since:
        hardening = hardening.filter(occurred_at__gte=_since_moment(since))
        context = context.filter(occurred_at__gte=_since_moment(since))
    coverage = {
        row["estimate_source"]: {"count": row["count"], "tokens": row["tokens"], "total_n": row["total_n"]}
        for row in hardening.values("estimate_source")
        .annotate(count=Count("id"), tokens=Sum("doctor_tokens_avoided_estimate"), total_n=Sum("estimate_sample_size"))
        .order_by()
    }
    return {
        "context_tokens_avoided": context.aggregate(tokens=Sum("tokens_avoided"))["tokens"] or 0,
        "doctor_tokens_avoided_estimate": {
            "tokens": sum(entry["tokens"] for entry in coverage.values()),
            "coverage": {
                source: coverage.get(source, {"count": 0, "tokens": 0, "total_n": 0})
                for source in EstimateSource.values
            },
        },
    }


def build_report(*, since: date | None = None, period: str = "month", stratify: bool = False) -> dict[str, Any]:
    usage = queries.usage_by_period(period=period, group_by=["provider", "model", "role"], since=since)
    total_cost = sum((Decimal(row["cost_usd"]) for row in usage), Decimal(0))
    return {
        "since": since.isoformat() if since else None,
        "period": period,
        "spend": {
            "events": sum(row["events"] for row in usage),
            "total_tokens": sum(row["total_tokens"] for row in usage),
            "cost_usd": str(total_cost),
            "unsplit_events": sum(row["unsplit_events"] for row in usage),
            "unpriced_events": sum(row["unpriced_events"] for row in usage),
        },
        "usage": usage,
        "estimator": queries.estimator_accuracy(
            stratify=queries.STRATA if stratify else (), since=_since_moment(since)
        ),
        **_avoided_totals(since),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(header) for header in headers]] + [
        ["—" if value is None else str(value) for value in row] for row in rows
    ]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


ACCURACY_COLUMNS = (
    "events",
    "clean_events",
    "smape_median",
    "smape_p90",
    "underestimation_rate",
    "truncation_rate",
    "waste_ratio_median",
    "waste_ratio_p90",
)


def render_text(report: dict[str, Any]) -> str:
    spend = report["spend"]
    parts = [
        f"Telemetry since {report['since'] or 'the beginning'}",
        "",
        f"SPENT (real): {spend['total_tokens']:,} tokens, ${spend['cost_usd']} over {spend['events']:,} LLM calls "
        f"({spend['unsplit_events']} without a token split, {spend['unpriced_events']} without a price)",
        table(
            (
                "period",
                "provider",
                "model",
                "role",
                "calls",
                "input",
                "output",
                "cache write",
                "cache read",
                "cost USD",
            ),
            [
                (
                    r["period"],
                    r["provider"],
                    r["model"],
                    r["role"],
                    r["events"],
                    r["input_tokens"],
                    r["output_tokens"],
                    r["cache_creation_tokens"],
                    r["cache_read_tokens"],
                    r["cost_usd"],
                )
                for r in report["usage"]
            ],
        ),
        "",
        f"CONTEXT TOKENS AVOIDED (measured, not spend): {report['context_tokens_avoided']:,}",
        f"DOCTOR TOKENS AVOIDED (estimate, not spend): {report['doctor_tokens_avoided_estimate']['tokens']:,}",
        table(
            ("estimate source", "events", "tokens", "sample total"),
            [
                (source, c["count"], c["tokens"], c["total_n"])
                for source, c in report["doctor_tokens_avoided_estimate"]["coverage"].items()
            ],
        ),
        "",
        "ESTIMATOR ACCURACY (SMAPE over non-truncated events; targets: underestimation <= 5%, truncation <= 2%)",
        table(
            ("stratum", *ACCURACY_COLUMNS),
            [("overall", *(report["estimator"]["overall"][c] for c in ACCURACY_COLUMNS))],
        ),
    ]
    for dimension, strata in report["estimator"]["strata"].items():
        parts += [
            "",
            f"by {dimension}",
            table(
                (dimension, *ACCURACY_COLUMNS),
                [(key, *(figures[c] for c in ACCURACY_COLUMNS)) for key, figures in strata.items()],
            ),
        ]
    return "\n".join(parts)
