"""Every dashboard page renders in at most 10 SQL queries, with few runs and with many."""

from __future__ import annotations

from datetime import date

import pytest

from runs.models import PhaseState
from runs.services import control
from runs.services.transitions import phase_transition
from tests.dashboard.data import add_attempt, add_entry, add_estimate, add_usage, make_runs
from tests.factories import make_run

pytestmark = pytest.mark.django_db

MAX_QUERIES = 10


def build(project, *, runs: int, phases: int, attempts: int, entries: int):
    """A data set whose size scales with the arguments; returns (run, phase, entry) to open."""
    make_runs(project, runs - 1, phases=phases)
    run = make_run(project, phases=phases, tiers=2)
    control.run_start(run_id=run.pk, actor="user:test")
    phase = run.phases.order_by("sequence").first()
    phase_transition(phase_id=phase.pk, to_state=PhaseState.EXECUTING, actor="worker:w", fields={"current_stage": "ci"})
    for number in range(1, attempts + 1):
        add_attempt(phase, number=number, llm_calls=attempts)
    for day in range(1, min(entries, 28) + 1):
        add_usage(project, model="claude-sonnet-4-5", role="builder", tokens=1000 * day, day=date(2026, 11, day))
        add_estimate(project, predicted=1000 * day, actual=900 * day + 50)
    entry = None
    for number in range(entries):
        entry = add_entry(project, f"BUILD-{number}", f"Entry {number}", day=date(2025, 1, 1 + number % 28))
    return run, phase, entry


@pytest.mark.parametrize(
    "size",
    [{"runs": 2, "phases": 2, "attempts": 1, "entries": 1}, {"runs": 60, "phases": 8, "attempts": 4, "entries": 60}],
)
def test_every_page_renders_in_at_most_ten_queries(operator_client, project, django_assert_max_num_queries, size):
    run, phase, entry = build(project, **size)
    pages = [
        ("/runs/", {}),
        ("/runs/?state=active&q=run&page=2", {}),
        ("/runs/", {"HX-Request": "true"}),
        (f"/runs/{run.pk}/", {}),
        (f"/runs/{run.pk}/", {"HX-Request": "true"}),
        (f"/runs/{run.pk}/phases/{phase.pk}/", {}),
        (f"/runs/{run.pk}/phases/{phase.pk}/attempts/1/", {}),
        ("/telemetry/", {}),
        ("/telemetry/?days=365", {}),
        ("/history/", {}),
        ("/history/?q=Entry&status=complete", {}),
        (f"/history/{entry.pk}/", {}),
    ]
    for url, headers in pages:
        with django_assert_max_num_queries(MAX_QUERIES):
            response = operator_client.get(url, headers=headers)
        assert response.status_code == 200, url
