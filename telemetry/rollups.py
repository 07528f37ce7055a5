"""Incremental rollups: each recorded LLM call is added to its rollup rows in the same transaction.

``INSERT … ON CONFLICT (key) DO UPDATE SET x = x + excluded.x`` works on PostgreSQL and SQLite ≥ 3.24 and is
safe under concurrency: two writers of the same key serialise on the row, neither loses its increment.
``telemetry.bulk.rebuild_rollups`` recomputes the same rows from the raw events (a test checks they agree).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from django.db import connection
from django.utils import timezone

from telemetry.models import ALL_PROJECTS, NO_PROJECT, LlmUsageEvent, RollupGrain, RunUsageRollup, UsageRollup

MICRO = 1_000_000  # rollups keep cost in micro-dollars; event costs have exactly six decimals


def utc_day(moment: datetime) -> date:
    """Rollups are per UTC day whatever the display time zone, so every writer buckets the same way."""
    return moment.astimezone(UTC).date() if timezone.is_aware(moment) else moment.date()


_ROLLUP_SUMS = (
    "events",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_read_tokens",
    "total_tokens",
    "cost_micro_usd",
    "unsplit_events",
    "unpriced_events",
    "latency_ms_sum",
)


def _rollup_increments(event: LlmUsageEvent) -> list[object]:
    return [
        1,
        event.input_tokens or 0,
        event.output_tokens or 0,
        event.cache_creation_tokens or 0,
        event.cache_read_tokens or 0,
        event.total_tokens or 0,
        int(event.cost_usd * MICRO) if event.cost_usd is not None else 0,
        0 if event.has_split else 1,
        1 if event.cost_usd is None else 0,
        event.latency_ms or 0,
    ]


def _upsert_add(table: str, key: dict[str, object], increments: list[object], extra: dict | None = None) -> None:
    """``INSERT … ON CONFLICT (key) DO UPDATE SET x = x + excluded.x`` (PostgreSQL and SQLite ≥ 3.24)."""
    extra = extra or {}
    columns = [*key, *extra, *_ROLLUP_SUMS]
    updates = ", ".join(f"{column} = {table}.{column} + excluded.{column}" for column in _ROLLUP_SUMS)
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*key.values(), *extra.values(), *increments])


def add_event(event: LlmUsageEvent) -> None:
    """Add one call to its rollup rows, always in the same order (so concurrent writers cannot deadlock)."""
    increments = _rollup_increments(event)
    project_key = event.project_id or NO_PROJECT
    day = utc_day(event.occurred_at)
    for grain, period_start in ((RollupGrain.DAY, day), (RollupGrain.MONTH, day.replace(day=1))):
        for project in (project_key, ALL_PROJECTS):
            key = {"grain": str(grain), "period_start": period_start, "project_id": project}
            key.update(provider=event.provider, model=event.model, role=event.role)
            _upsert_add(UsageRollup._meta.db_table, key, increments)
    if event.run_id is not None:
        _upsert_add(
            RunUsageRollup._meta.db_table,
            {"run_id": event.run_id, "role": event.role, "model": event.model},
            increments,
            extra={"project_id": project_key},
        )
