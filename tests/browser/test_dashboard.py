"""The operator dashboard in a real browser: sign in, watch a run live, open an attempt, cancel, be denied."""

from __future__ import annotations

import pytest

from runs.models import Attempt, PhaseState, Run, RunState
from runs.services import control
from runs.services.transitions import phase_transition
from tests.browser.conftest import screenshot, sign_in
from tests.dashboard.data import add_attempt, add_entry, add_estimate, add_usage
from tests.factories import make_project, make_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _row(run: Run) -> str:
    return f'tr[data-run-id="{run.pk}"]'


def _drive_phase(run: Run, sequence: int, page, *, stage_selector: str) -> None:
    """Move one phase through execution to completion while the page is open, waiting to see each step."""
    phase = run.phases.get(sequence=sequence)
    phase_transition(
        phase_id=phase.pk, to_state=PhaseState.EXECUTING, actor="worker:w1", fields={"current_stage": "ci"}
    )
    page.wait_for_selector(stage_selector.format(phase=phase.phase_id))
    phase_transition(phase_id=phase.pk, to_state=PhaseState.COMPLETE, actor="worker:w1")
    control.run_complete_if_done(run_id=run.pk, actor="worker:w1")


# Samples the run page's state every 100 ms in the browser, so what the page showed while the main thread was
# busy draining the run can be checked afterwards; the flag proves the page was never reloaded.
RECORD_STATES = """() => {
  window.__sameDocument = true;
  window.__seen = [];
  setInterval(() => {
    const run = document.querySelector('#run-state');
    const phases = [...document.querySelectorAll('li[data-phase]')].map(li => li.dataset.state);
    const snapshot = (run ? run.dataset.state : '?') + '|' + phases.join(',');
    if (window.__seen[window.__seen.length - 1] !== snapshot) window.__seen.push(snapshot);
  }, 100);
}"""


@pytest.mark.postgres
def test_the_demo_run_progresses_live_to_completion_and_its_attempts_show_diff_and_ci_delta(page) -> None:
    """``manage.py demo``'s run drained by the real engine while the page watches.

    PostgreSQL only: the worker's heartbeat thread opens its own connection, and SQLite's shared-cache
    in-memory test database refuses it ("table is locked") while the live server reads. On SQLite the test
    below drives the same progress through the services instead.
    """
    from runs.management.commands.demo import PASSWORD, USERNAME, drain_run, seed_demo

    run = seed_demo()
    sign_in(page, USERNAME, PASSWORD)
    page.goto(f"/runs/{run.pk}/")
    page.wait_for_selector('#run-state[data-state="running"]')
    page.evaluate(RECORD_STATES)
    screenshot(page, "demo-run-started")

    drain_run(run)  # the real engine, replaying the shipped cassette; the browser keeps polling meanwhile

    page.wait_for_selector('#run-state[data-state="complete"]')
    # The sampler runs every 100 ms: give it the chance to record the final state on a busy machine.
    page.wait_for_function("window.__seen.at(-1) === 'complete|complete,complete,complete'", timeout=5000)
    seen = page.evaluate("window.__seen")
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded instead of updating in place"
    assert any("executing" in snapshot for snapshot in seen), seen
    assert any(s.startswith("running|complete,") and not s.endswith("complete,complete") for s in seen), seen
    assert seen[-1] == "complete|complete,complete,complete"
    screenshot(page, "demo-run-complete")

    # The cassette makes one attempt break a test: open it and see its diff and the new failure.
    attempts = Attempt.objects.filter(phase__run=run).select_related("phase").order_by("phase__sequence", "number")
    broken = next(a for a in attempts if (a.summary.get("ci") or {}).get("new_failures"))
    page.get_by_role("link", name=f"{broken.phase.phase_id} · {broken.phase.name}").click()
    page.get_by_role("link", name=f"Attempt {broken.number} ·").click()
    page.wait_for_url(f"**/phases/{broken.phase.pk}/attempts/{broken.number}/")
    assert page.locator("#diff .highlight span.gi").count() > 0
    new_failures = page.locator('#ci [data-bucket="new_failures"]').inner_text()
    assert broken.summary["ci"]["new_failures"][0] in new_failures
    assert page.get_by_label("CI log tail").is_visible()
    screenshot(page, "demo-attempt")


def test_operator_signs_in_and_watches_a_run_progress_live_to_completion(page, operator, project) -> None:
    run = make_run(project, phases=3, tiers=2, goal="Add a greeting module with tests")
    sign_in(page, "olivia")
    page.goto("/runs/")
    page.wait_for_selector(f'{_row(run)}[data-state="queued"]')
    page.evaluate("window.__sameDocument = true")

    control.run_start(run_id=run.pk, actor="user:olivia")
    page.wait_for_selector(f'{_row(run)}[data-state="running"]')
    _drive_phase(run, 0, page, stage_selector=f"{_row(run)} .current-stage >> text=ci")
    page.wait_for_selector(f"{_row(run)} .progress-text >> text=1/3")
    screenshot(page, "runs-list")

    page.get_by_role("link", name=f"#{run.pk} {run.name}").click()
    page.wait_for_selector('#run-state[data-state="running"]')
    page.evaluate("window.__sameDocument = true")
    for sequence in (1, 2):
        _drive_phase(run, sequence, page, stage_selector='li[data-phase="{phase}"][data-state="executing"]')
    page.wait_for_selector('#run-state[data-state="complete"]')
    assert page.locator('li[data-state="complete"]').count() == 3
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded instead of updating in place"
    screenshot(page, "run-detail")


def test_operator_opens_an_attempt_and_sees_its_diff_and_ci_delta(page, operator, project) -> None:
    run = make_run(project, phases=2)
    phase = run.phases.get(sequence=0)
    add_attempt(phase, number=1)
    add_attempt(phase, number=2)
    sign_in(page, "olivia")
    page.goto(f"/runs/{run.pk}/")
    page.get_by_role("link", name=f"{phase.phase_id} · {phase.name}").click()
    page.get_by_role("link", name="Attempt 1 · failed").click()
    page.wait_for_url(f"**/phases/{phase.pk}/attempts/1/")

    diff = page.locator("#diff .highlight")
    assert "def greet(name: str)" in diff.inner_text()
    assert diff.locator("span.gi").count() >= 2  # inserted lines carry Pygments' "generic inserted" class
    new_failures = page.locator('[data-bucket="new_failures"]')
    assert "tests/test_p1.py::test_greet_shouts" in new_failures.inner_text()
    assert "test_old_bug" in page.locator('[data-bucket="still_failing"]').inner_text()
    assert page.get_by_label("CI log tail").is_visible()

    prompt = page.locator("#trajectory details", has_text="Prompt").first
    assert not prompt.locator("pre").is_visible()  # collapsed until asked for
    prompt.locator("summary").click()
    assert "SYSTEM: you are the builder" in prompt.locator("pre").inner_text()
    screenshot(page, "attempt-detail")


def test_operator_cancels_a_running_run_after_confirming(page, operator, project) -> None:
    run = make_run(project, phases=3)
    control.run_start(run_id=run.pk, actor="user:olivia")
    first = run.phases.get(sequence=0)
    phase_transition(phase_id=first.pk, to_state=PhaseState.EXECUTING, actor="worker:w1")
    sign_in(page, "olivia")
    page.goto(f"/runs/{run.pk}/")

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Cancel run").click()
    run.refresh_from_db()
    assert run.state == RunState.RUNNING  # said no to the confirmation: nothing happened

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel run").click()
    page.wait_for_selector('#run-state[data-state="cancelled"]')
    assert "Run cancelled" in page.get_by_role("status").inner_text()
    run.refresh_from_db()
    assert run.state == RunState.CANCELLED
    assert page.get_by_role("button", name="Cancel run").count() == 0


def test_a_run_of_another_project_shows_a_permission_denial(page, operator, project) -> None:
    theirs = make_run(make_project("beta"))
    sign_in(page, "olivia")
    response = page.goto(f"/runs/{theirs.pk}/")
    assert response.status == 403
    assert page.get_by_role("heading", name="Permission denied").is_visible()
    assert "not a member of this project" in page.get_by_role("alert").inner_text()
    screenshot(page, "permission-denied")


def test_telemetry_history_and_sign_in_pages_render_at_desktop_and_phone_width(page, operator, project) -> None:
    from datetime import date, timedelta

    today = date.today()
    for day in range(10):
        add_usage(
            project,
            model="claude-sonnet-4-5",
            role="builder",
            tokens=40_000 + 9_000 * day,
            day=today - timedelta(days=day),
        )
        add_usage(
            project,
            model="claude-haiku-4-5",
            role="auditor",
            tokens=12_000 + 2_000 * day,
            day=today - timedelta(days=day),
        )
    for number in range(40):
        add_estimate(
            project,
            predicted=2000 + 150 * number,
            actual=1800 + 170 * number,
            truncated=number % 13 == 0,
            category=("backend", "docs", "tests")[number % 3],
        )
    add_entry(project, "BUILD-129", "Token budget escalation", summary="Escalate max_tokens once on truncation.")
    entry = add_entry(project, "BUILD-130", "Governed apply", status="failed", files_modified=["runs/engine/apply.py"])

    page.goto("/login/")
    screenshot(page, "login")
    sign_in(page, "olivia")
    page.goto("/telemetry/")
    assert page.locator("svg.chart").count() == 4
    screenshot(page, "telemetry")
    page.goto("/history/")
    page.get_by_label("Search text or build id").fill("truncation")
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector('tr[data-entry="BUILD-129"]')
    assert page.locator('tr[data-entry="BUILD-130"]').count() == 0
    screenshot(page, "history")
    page.goto(f"/history/{entry.pk}/")
    screenshot(page, "history-entry")
    page.goto("/runs/")
    screenshot(page, "runs-empty")


def test_the_failure_patterns_table_fits_its_panel_with_long_test_ids(page, operator, project) -> None:
    from telemetry.services import phase_outcome_record

    run = make_run(project, phases=1)
    for n in range(3):
        reason = f"New failing test tests.test_core::test_word_count_ignores_punctuation_case_{n}: assert {n} == 4"
        phase_outcome_record(outcome="retry", reason=reason, error_text=reason, run_id=run.pk, project_id=project.pk)
    sign_in(page, "olivia")
    page.goto("/telemetry/")
    hidden = page.evaluate(
        "(() => { const wrap = document.querySelector('#failures-title').parentElement.querySelector('.table-wrap');"
        " return wrap.scrollWidth - wrap.clientWidth; })()"
    )
    assert hidden <= 0, f"the failure patterns table hides {hidden}px of its columns"
