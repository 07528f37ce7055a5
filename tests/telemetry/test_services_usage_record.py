import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection

from autopack_site.lib.errors import ValidationFailed
from telemetry import queries, services
from telemetry.bulk import rebuild_rollups
from telemetry.models import ALL_PROJECTS, LlmUsageEvent, RunUsageRollup, UsageRollup
from tests.factories import make_project, make_run

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 11, 2, 15, 30, tzinfo=UTC)


def test_a_call_is_stored_with_its_cost_and_counted_in_the_rollups(record_call):
    run = make_run()
    event = record_call(request_id="msg_01", run_id=run.pk, input_tokens=10_000, output_tokens=2_000, occurred_at=DAY)

    assert event.project_id == run.project_id  # looked up from the run, for scoping
    assert event.cost_usd == Decimal("0.060000")  # 10k × $3 + 2k × $15 per million
    assert event.total_tokens == 12_000
    rows = UsageRollup.objects.values_list("grain", "period_start", "project_id", "events", "cost_micro_usd")
    assert sorted((grain, str(start), project, events, cost) for grain, start, project, events, cost in rows) == [
        ("day", "2026-11-02", ALL_PROJECTS, 1, 60_000),
        ("day", "2026-11-02", run.project_id, 1, 60_000),
        ("month", "2026-11-01", ALL_PROJECTS, 1, 60_000),
        ("month", "2026-11-01", run.project_id, 1, 60_000),
    ]
    assert RunUsageRollup.objects.get(run_id=run.pk).total_tokens == 12_000


def test_recording_the_same_request_id_again_does_not_double_count(record_call):
    first = record_call(request_id="msg_retry", input_tokens=100, output_tokens=50)
    second = record_call(request_id="msg_retry", input_tokens=999, output_tokens=999)

    assert second.pk == first.pk
    assert (second.input_tokens, second.output_tokens) == (100, 50)
    assert LlmUsageEvent.objects.count() == 1
    assert UsageRollup.objects.count() == 4  # day and month, for the project and for all projects
    assert {(row.events, row.input_tokens, row.output_tokens) for row in UsageRollup.objects.all()} == {(1, 100, 50)}


def test_a_call_without_a_split_keeps_null_tokens_and_null_cost(record_call):
    event = record_call(input_tokens=None, output_tokens=None, total_tokens=7_000)
    event.refresh_from_db()

    assert (event.input_tokens, event.output_tokens, event.cache_creation_tokens, event.cache_read_tokens) == (
        None,
        None,
        None,
        None,
    )
    assert event.total_tokens == 7_000
    assert event.cost_usd is None


def test_null_splits_are_left_out_of_sums_and_counted_as_unsplit(record_call):
    project = make_project()
    record_call(project_id=project.pk, input_tokens=1_000, output_tokens=100, cache_read_tokens=5_000, occurred_at=DAY)
    record_call(project_id=project.pk, input_tokens=None, output_tokens=None, total_tokens=9_999, occurred_at=DAY)
    record_call(project_id=project.pk, input_tokens=2_000, output_tokens=200, occurred_at=DAY)

    [row] = queries.usage_by_period(period="day", group_by=["project"])
    assert row["events"] == 3
    assert (row["input_tokens"], row["output_tokens"]) == (3_000, 300)
    assert (row["cache_read_tokens"], row["cache_creation_tokens"]) == (5_000, 0)
    assert row["total_tokens"] == 1_000 + 100 + 5_000 + 9_999 + 2_000 + 200
    assert (row["unsplit_events"], row["unpriced_events"]) == (1, 1)
    # The priced calls only: (1,000 + 2,000) × $3 + 300 × $15 + 5,000 × $0.30, per million.
    assert row["cost_usd"] == "0.015000"


def test_unknown_model_is_recorded_with_null_cost_and_counted_as_unpriced(record_call):
    event = record_call(model="some-future-model", input_tokens=10, output_tokens=10)
    assert event.cost_usd is None
    assert set(UsageRollup.objects.values_list("unpriced_events", flat=True)) == {1}


def test_a_request_id_is_required(record_call):
    with pytest.raises(ValidationFailed):
        record_call(request_id="")


def test_incremental_rollups_equal_a_rebuild_from_raw_events(record_call):
    runs = [make_run(), make_run()]
    for number in range(12):
        record_call(
            run_id=runs[number % 2].pk,
            role=("builder", "auditor", "doctor")[number % 3],
            model=("claude-haiku-4-5", "claude-sonnet-4-5")[number % 2],
            input_tokens=None if number == 5 else 100 * number,
            output_tokens=None if number == 5 else 10 * number,
            cache_creation_tokens=number if number % 4 else None,
            occurred_at=datetime(2026, 11, 1 + number % 3, 23, 59, tzinfo=UTC),
        )
    record_call(role="other")  # no run, no project

    def snapshot():
        fields = [f.name for f in UsageRollup._meta.fields if f.name != "id"]
        run_fields = [f.name for f in RunUsageRollup._meta.fields if f.name != "id"]
        return (
            sorted(tuple(row) for row in UsageRollup.objects.values_list(*fields)),
            sorted(tuple(row) for row in RunUsageRollup.objects.values_list(*run_fields)),
        )

    incremental = snapshot()
    rebuild_rollups()
    assert snapshot() == incremental


def test_usage_is_grouped_by_week_and_month(record_call):
    record_call(occurred_at=datetime(2026, 11, 2, tzinfo=UTC))  # Monday
    record_call(occurred_at=datetime(2026, 11, 8, tzinfo=UTC))  # Sunday, same ISO week
    record_call(occurred_at=datetime(2026, 12, 1, tzinfo=UTC))

    weeks = queries.usage_by_period(period="week")
    months = queries.usage_by_period(period="month", group_by=["model", "role"])
    assert [(row["period"], row["events"]) for row in weeks] == [("2026-11-02", 2), ("2026-11-30", 1)]
    assert [(row["period"], row["model"], row["events"]) for row in months] == [
        ("2026-11-01", "claude-sonnet-4-5", 2),
        ("2026-12-01", "claude-sonnet-4-5", 1),
    ]


def test_usage_is_scoped_to_the_given_projects(record_call):
    mine, theirs = make_project(), make_project()
    record_call(project_id=mine.pk)
    record_call(project_id=theirs.pk)
    rows = queries.usage_by_period(group_by=["project"], project_ids=[mine.pk])
    assert [row["project"] for row in rows] == [mine.pk]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_one_request_id_count_it_once():
    barrier = threading.Barrier(4)
    errors = []

    def write() -> None:
        try:
            barrier.wait()
            services.usage_record(
                provider="anthropic",
                model="claude-haiku-4-5",
                role="builder",
                request_id="msg_race",
                input_tokens=10,
                output_tokens=5,
                latency_ms=1,
                stop_reason="end_turn",
            )
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert LlmUsageEvent.objects.filter(request_id="msg_race").count() == 1
    assert set(UsageRollup.objects.values_list("events", flat=True)) == {1}


def test_negative_token_counts_are_refused(record_call):
    with pytest.raises(ValidationFailed):
        record_call(input_tokens=-1)
    assert LlmUsageEvent.objects.count() == 0


def test_all_project_and_monthly_rows_agree_with_the_per_project_days(record_call):
    projects = [make_project(), make_project()]
    for number in range(9):
        record_call(
            project_id=projects[number % 2].pk if number != 8 else None,
            role=("builder", "doctor")[number % 2],
            occurred_at=datetime(2026, 10 + number % 2, 1 + number, tzinfo=UTC),
            input_tokens=100 + number,
        )
    everything = queries.usage_by_period(period="month", group_by=["role"])
    per_project = queries.usage_by_period(period="month", group_by=["role", "project"])
    assert sum(row["events"] for row in per_project) == sum(row["events"] for row in everything) == 9
    assert sum(row["input_tokens"] for row in everything) == sum(100 + number for number in range(9))
    assert [row["project"] for row in per_project if row["project"] is None] == [None]
    days = queries.usage_by_period(period="day", group_by=["role"], project_ids=[projects[0].pk, projects[1].pk])
    assert sum(row["events"] for row in days) == 8
