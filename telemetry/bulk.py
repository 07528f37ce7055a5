"""Set-based maintenance of the rollups: rebuild them from the raw events in two statements.

Used after a bulk load (the scale benchmark) and as a repair tool (``telemetry_report --rebuild-rollups``).
The incremental path in ``telemetry.services.usage_record`` and this rebuild must agree; a test checks it.
"""

from __future__ import annotations

from django.db import connection, transaction

from telemetry.models import ALL_PROJECTS, NO_PROJECT, LlmUsageEvent, RunUsageRollup, UsageRollup

_SUMS = """
    COUNT(*),
    COALESCE(SUM(input_tokens), 0),
    COALESCE(SUM(output_tokens), 0),
    COALESCE(SUM(cache_creation_tokens), 0),
    COALESCE(SUM(cache_read_tokens), 0),
    COALESCE(SUM(total_tokens), 0),
    COALESCE(SUM(CAST(ROUND(cost_usd * 1000000) AS BIGINT)), 0),
    SUM(CASE WHEN input_tokens IS NULL OR output_tokens IS NULL THEN 1 ELSE 0 END),
    SUM(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END),
    COALESCE(SUM(latency_ms), 0)
"""
_SUM_COLUMNS = (
    "events, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, total_tokens, cost_micro_usd, "
    "unsplit_events, unpriced_events, latency_ms_sum"
)


def _utc_day_expression() -> str:
    if connection.vendor == "postgresql":
        return "(occurred_at AT TIME ZONE 'UTC')::date"
    return "date(occurred_at)"  # SQLite stores UTC text


def _month_start_expression(column: str) -> str:
    if connection.vendor == "postgresql":
        return f"date_trunc('month', {column})::date"
    return f"date({column}, 'start of month')"


def _sum_columns(prefix: str = "") -> str:
    return ", ".join(f"SUM({prefix}{column.strip()})" for column in _SUM_COLUMNS.split(","))


@transaction.atomic
def rebuild_rollups() -> None:
    events, rollup, runs = LlmUsageEvent._meta.db_table, UsageRollup._meta.db_table, RunUsageRollup._meta.db_table
    day = _utc_day_expression()
    key = "provider, model, role"
    insert = f"INSERT INTO {rollup} (grain, period_start, project_id, {key}, {_SUM_COLUMNS}) "
    month = _month_start_expression("period_start")
    statements = [
        f"DELETE FROM {rollup}",
        # The base grain from the raw events; the coarser ones from it, which is far smaller.
        f"{insert} SELECT 'day', {day}, COALESCE(project_id, {NO_PROJECT}), {key}, {_SUMS} FROM {events} "
        f"GROUP BY {day}, COALESCE(project_id, {NO_PROJECT}), {key}",
        f"{insert} SELECT 'month', {month}, project_id, {key}, {_sum_columns()} FROM {rollup} "
        f"WHERE grain = 'day' GROUP BY {month}, project_id, {key}",
        f"{insert} SELECT grain, period_start, {ALL_PROJECTS}, {key}, {_sum_columns()} FROM {rollup} "
        f"GROUP BY grain, period_start, {key}",
        f"DELETE FROM {runs}",
        # A run belongs to one project, so MAX(project_id) is that project (or 0 when the events had none).
        f"INSERT INTO {runs} (run_id, role, model, project_id, {_SUM_COLUMNS}) "
        f"SELECT run_id, role, model, COALESCE(MAX(project_id), {NO_PROJECT}), {_SUMS} FROM {events} "
        f"WHERE run_id IS NOT NULL GROUP BY run_id, role, model",
    ]
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
