"""Runs list, run detail, phase/attempt detail and run control, through Django's test client."""

from __future__ import annotations

import subprocess

import pytest
from django.test import Client

from accounts.models import Role
from runs.models import Phase, PhaseState, RunState, RunTransition
from runs.services import control
from runs.services.transitions import phase_transition
from tests.dashboard.conftest import login
from tests.dashboard.data import add_attempt
from tests.factories import add_member, make_git_repo, make_project, make_run, make_user

pytestmark = pytest.mark.django_db


def _start_first_phase(run, stage: str = "builder") -> Phase:
    control.run_start(run_id=run.pk, actor="user:test")
    phase = run.phases.order_by("sequence").first()
    return phase_transition(
        phase_id=phase.pk, to_state=PhaseState.EXECUTING, actor="worker:w1", fields={"current_stage": stage}
    )


def test_anonymous_visitor_is_sent_to_the_login_page(client: Client) -> None:
    response = client.get("/runs/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/runs/")


def test_login_page_signs_in_with_the_same_users_as_the_api(client: Client) -> None:
    make_user("alice", password="s3cret-pass")
    page = client.get("/login/")
    assert b'<label for="id_username">Username</label>' in page.content
    response = client.post("/login/", {"username": "alice", "password": "s3cret-pass"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_logout_is_a_post_that_ends_the_session(operator_client: Client) -> None:
    assert operator_client.post("/logout/").status_code == 302
    assert operator_client.get("/runs/").status_code == 302


def test_runs_list_shows_state_progress_current_phase_tokens_and_cost(operator_client, project) -> None:
    run = make_run(project, phases=4, tokens_used=1_250_000)
    _start_first_phase(run, stage="ci")
    page = operator_client.get("/runs/").content.decode()
    assert f"#{run.pk} {run.name}" in page
    assert "badge-running" in page
    assert "0/4" in page
    assert "Phase 1" in page and '<span class="current-stage">ci</span>' in page
    assert "1.2M" in page and "/ 5M" in page
    assert "$0.00" in page and "$50.00" in page


def test_empty_runs_list_tells_a_newcomer_what_to_do(operator_client) -> None:
    page = operator_client.get("/").content.decode()
    assert "No runs yet" in page
    assert "manage.py import_plan" in page and "manage.py demo" in page


def test_runs_list_shows_only_projects_the_user_belongs_to(operator_client, project) -> None:
    mine = make_run(project)
    theirs = make_run(make_project("beta"))
    page = operator_client.get("/runs/").content.decode()
    assert f'data-run-id="{mine.pk}"' in page
    assert f'data-run-id="{theirs.pk}"' not in page


def test_staff_see_runs_of_every_project(client) -> None:
    run = make_run(make_project("gamma"))
    login(client, make_user("root", staff=True))
    assert f'data-run-id="{run.pk}"' in client.get("/runs/").content.decode()


def test_runs_list_filters_by_state_project_and_search(operator_client, project, operator) -> None:
    queued = make_run(project, goal="teach the parser about YAML anchors")
    running = make_run(project)
    control.run_start(run_id=running.pk, actor="user:test")
    other = make_project("delta")
    add_member(operator, other, Role.VIEWER)
    elsewhere = make_run(other)

    def shown(query: str) -> set[int]:
        page = operator_client.get(f"/runs/?{query}").content.decode()
        return {run.pk for run in (queued, running, elsewhere) if f'data-run-id="{run.pk}"' in page}

    assert shown("state=running") == {running.pk}
    assert shown("state=active") == {queued.pk, running.pk, elsewhere.pk}
    assert shown("project=delta") == {elsewhere.pk}
    assert shown("q=yaml+anchors") == {queued.pk}
    assert shown(f"q=%23{running.pk}") == {running.pk}
    assert "No runs match these filters" in operator_client.get("/runs/?q=nothing-like-this").content.decode()
    # A Unicode digit that int() cannot read ('³'.isdigit() is true) is plain text to search, not an error.
    assert shown("q=%23%C2%B3") == set()


def test_htmx_poll_gets_only_the_table_partial_and_keeps_polling(operator_client, project) -> None:
    run = make_run(project)
    response = operator_client.get("/runs/?state=queued", headers={"HX-Request": "true"})
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="runs-table"')
    assert "<html" not in body
    assert 'hx-get="/runs/?state=queued"' in body and 'hx-trigger="every 2s"' in body
    assert f'data-run-id="{run.pk}"' in body


def test_run_detail_shows_tiers_phases_badges_and_budget_gauges(operator_client, project) -> None:
    run = make_run(project, phases=4, tiers=2, tokens_used=4_600_000)
    _start_first_phase(run)
    page = operator_client.get(f"/runs/{run.pk}/").content.decode()
    assert "T1" in page and "T2" in page
    assert 'data-phase="P1" data-state="executing"' in page
    assert 'data-phase="P4" data-state="queued"' in page
    assert 'aria-valuenow="92.0"' in page  # tokens gauge: 4.6M of 5M
    assert "bar danger" in page
    assert f'action="/runs/{run.pk}/cancel/"' in page
    assert 'hx-trigger="every 2s"' in page


def test_run_of_another_project_is_a_permission_denial(operator_client) -> None:
    theirs = make_run(make_project("beta"))
    response = operator_client.get(f"/runs/{theirs.pk}/")
    assert response.status_code == 403
    assert "You are not a member of this project" in response.content.decode()
    phase = theirs.phases.first()
    assert operator_client.get(f"/runs/{theirs.pk}/phases/{phase.pk}/").status_code == 403


def test_operator_cancels_a_running_run_and_the_transition_names_them(operator_client, project) -> None:
    run = make_run(project, phases=3)
    _start_first_phase(run)
    response = operator_client.post(f"/runs/{run.pk}/cancel/", follow=True)
    run.refresh_from_db()
    assert run.state == RunState.CANCELLED
    assert "Run cancelled" in response.content.decode()
    last = RunTransition.objects.filter(run=run).latest("id")
    assert (last.actor, last.to_state) == ("user:olivia", RunState.CANCELLED)
    assert set(run.phases.values_list("state", flat=True)) == {PhaseState.EXECUTING, PhaseState.SKIPPED}


def test_pause_and_resume_go_through_run_control(operator_client, project) -> None:
    run = make_run(project)
    operator_client.post(f"/runs/{run.pk}/start/")
    operator_client.post(f"/runs/{run.pk}/pause/")
    run.refresh_from_db()
    assert run.state == RunState.PAUSED
    operator_client.post(f"/runs/{run.pk}/resume/")
    run.refresh_from_db()
    assert run.state == RunState.RUNNING


def test_an_illegal_action_is_explained_and_changes_nothing(operator_client, project) -> None:
    run = make_run(project)
    response = operator_client.post(f"/runs/{run.pk}/resume/", follow=True)
    run.refresh_from_db()
    assert run.state == RunState.QUEUED
    assert "Could not resume the run" in response.content.decode()


def test_viewer_sees_no_actions_and_cannot_post_one(client, viewer, project) -> None:
    run = make_run(project)
    login(client, viewer)
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "/start/" not in page and "/cancel/" not in page
    response = client.post(f"/runs/{run.pk}/start/")
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.state == RunState.QUEUED


def test_actions_need_a_csrf_token(operator, project) -> None:
    run = make_run(project)
    client = login(Client(enforce_csrf_checks=True), operator)
    assert client.post(f"/runs/{run.pk}/start/").status_code == 403
    run.refresh_from_db()
    assert run.state == RunState.QUEUED


def test_actions_refuse_get(operator_client, project) -> None:
    run = make_run(project)
    assert operator_client.get(f"/runs/{run.pk}/cancel/").status_code == 405


def test_operator_requeues_a_blocked_phase(operator_client, project) -> None:
    run = make_run(project)
    phase = _start_first_phase(run)
    phase_transition(phase_id=phase.pk, to_state=PhaseState.BLOCKED, actor="worker:w1", reason="needs a human")
    page = operator_client.get(f"/runs/{run.pk}/phases/{phase.pk}/").content.decode()
    assert "Requeue phase" in page
    assert (
        f'action="/runs/{run.pk}/phases/{phase.pk}/requeue/"'
        in operator_client.get(f"/runs/{run.pk}/").content.decode()
    )
    response = operator_client.post(f"/runs/{run.pk}/phases/{phase.pk}/requeue/", follow=True)
    phase.refresh_from_db()
    assert phase.state == PhaseState.QUEUED
    assert "requeued" in response.content.decode()


def test_run_detail_lists_the_run_branch_commits_from_git(client, tmp_path) -> None:
    repo = make_git_repo(tmp_path / "repo")
    project = make_project("withrepo", repository_path=str(repo))
    git = ["git", "-c", "user.name=Autopack", "-c", "user.email=bot@example.com", "-C", str(repo)]
    subprocess.run([*git, "checkout", "-q", "-b", "autopack/withrepo-1"], check=True)
    (repo / "feature.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "P1: add the feature"], check=True)
    run = make_run(project, branch="autopack/withrepo-1")
    login(client, make_user("stafford", staff=True))
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "P1: add the feature" in page
    assert "initial" not in page.split("Branch and commits")[1].split("</section>")[0]


def test_run_detail_explains_a_missing_repository(operator_client, project) -> None:
    run = make_run(project, branch="autopack/alpha-1")
    page = operator_client.get(f"/runs/{run.pk}/").content.decode()
    assert "is not there (or is not a git repository)" in page


def test_attempt_page_shows_diff_ci_delta_auditor_doctor_calls_and_trajectory(operator_client, project) -> None:
    run = make_run(project)
    phase = run.phases.first()
    add_attempt(phase, number=1)
    second = add_attempt(phase, number=2)
    page = operator_client.get(f"/runs/{run.pk}/phases/{phase.pk}/").content.decode()
    assert 'aria-current="page">\n        Attempt 2' in page or f'attempts/{second.number}/" aria-current' in page
    assert '<div class="highlight">' in page and "greet" in page  # highlighted diff
    assert "escapes the worktree" in page  # governed-apply violation
    assert "tests/test_p1.py::test_greet_shouts" in page and "Still failing" in page and "Flaky" in page
    assert "AssertionError" in page  # CI log tail
    assert "Must upper-case" in page and "badge-rejected" in page
    assert "retry_with_fix" in page and "Spec says upper case" in page
    assert page.count('data-label="Role">builder') == 1 and page.count('data-label="Role">auditor') == 1
    assert "SYSTEM: you are the builder" in page  # decompressed prompt, inside a collapsed <details>
    assert page.index('data-stage="context"') < page.index('data-stage="builder"') < page.index('data-stage="ci"')
    assert "New failing test test_greet_shouts" in page  # the finalizer's decision
    assert "11 passing" in page
    first = operator_client.get(f"/runs/{run.pk}/phases/{phase.pk}/attempts/1/")
    assert first.status_code == 200


def test_unknown_attempt_number_is_not_found(operator_client, project) -> None:
    run = make_run(project)
    phase = run.phases.first()
    assert operator_client.get(f"/runs/{run.pk}/phases/{phase.pk}/attempts/7/").status_code == 404
    assert "No attempts yet" in operator_client.get(f"/runs/{run.pk}/phases/{phase.pk}/").content.decode()


def test_attempt_page_survives_a_summary_with_unexpected_shapes(operator_client, project) -> None:
    run = make_run(project)
    phase = run.phases.first()
    attempt = add_attempt(phase)
    attempt.summary = {"ci": {"new_failures": {"t::a": "boom"}}, "apply": {"violations": "scope"}, "audit": "?"}
    attempt.save()
    attempt.events.all().delete()
    page = operator_client.get(f"/runs/{run.pk}/phases/{phase.pk}/").content.decode()
    assert "t::a" in page and "scope" in page
    attempt.summary = {"apply": {"violations": 2}, "ci": {"delta": {"fixed": ["t::b"]}, "log_tail": "old tail"}}
    attempt.save()
    page = operator_client.get(f"/runs/{run.pk}/phases/{phase.pk}/").content.decode()
    assert "2 violations" in page and "t::b" in page and "old tail" in page


def test_a_live_poll_after_the_session_ended_sends_the_whole_page_to_login(client) -> None:
    response = client.get("/runs/", headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/runs/?q=x"})
    assert response["HX-Redirect"] == "/login/?next=/runs/%3Fq%3Dx"
