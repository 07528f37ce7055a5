"""The admin lists, filters and searches runs and phases, and its actions go through the services."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs.models import Phase, PhaseState, PhaseTransition, RunState, RunTransition
from tests.factories import make_run, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = make_user("root", staff=True)
    user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "url_name",
    [
        "admin:runs_project_changelist",
        "admin:runs_run_changelist",
        "admin:runs_phase_changelist",
        "admin:runs_attempt_changelist",
        "admin:runs_runtransition_changelist",
        "admin:runs_phasetransition_changelist",
    ],
)
def test_changelists_render(admin_client, url_name: str) -> None:
    make_run(phases=2)
    assert admin_client.get(reverse(url_name)).status_code == 200


def test_run_change_page_shows_phases_inline(admin_client) -> None:
    run = make_run(phases=2)
    response = admin_client.get(reverse("admin:runs_run_change", args=[run.pk]))
    assert response.status_code == 200
    assert b"Phase 1" in response.content and b"Phase 2" in response.content


def test_run_list_filters_by_state_and_searches_by_name(admin_client) -> None:
    running = make_run(state=RunState.RUNNING)
    make_run(state=RunState.QUEUED)

    by_state = admin_client.get(reverse("admin:runs_run_changelist"), {"state__exact": "running"})
    by_name = admin_client.get(reverse("admin:runs_run_changelist"), {"q": running.name})

    assert [r.pk for r in by_state.context["cl"].result_list] == [running.pk]
    assert [r.pk for r in by_name.context["cl"].result_list] == [running.pk]


def test_cancel_action_goes_through_the_service_and_records_a_transition(admin_client) -> None:
    run = make_run(state=RunState.RUNNING)

    response = admin_client.post(
        reverse("admin:runs_run_changelist"), {"action": "cancel_runs", "_selected_action": [run.pk]}, follow=True
    )

    assert response.status_code == 200
    run.refresh_from_db()
    assert run.state == RunState.CANCELLED
    assert RunTransition.objects.get(run=run).actor == "user:root"


def test_pause_action_reports_refusals_and_changes_nothing_for_them(admin_client) -> None:
    queued = make_run(state=RunState.QUEUED)
    running = make_run(state=RunState.RUNNING)

    response = admin_client.post(
        reverse("admin:runs_run_changelist"),
        {"action": "pause_runs", "_selected_action": [queued.pk, running.pk]},
        follow=True,
    )

    texts = [str(m) for m in response.context["messages"]]
    assert "Paused 1 item(s)." in texts
    assert any("cannot go from queued to paused" in text for text in texts)
    queued.refresh_from_db()
    assert queued.state == RunState.QUEUED


def test_requeue_action_requeues_a_blocked_phase(admin_client) -> None:
    run = make_run(phases=1, state=RunState.RUNNING)
    phase = run.phases.get()
    Phase.objects.filter(pk=phase.pk).update(state=PhaseState.BLOCKED)

    admin_client.post(
        reverse("admin:runs_phase_changelist"), {"action": "requeue_phases", "_selected_action": [phase.pk]}
    )

    phase.refresh_from_db()
    assert phase.state == PhaseState.QUEUED
    assert PhaseTransition.objects.get(phase=phase).to_state == PhaseState.QUEUED


def test_transition_history_is_read_only(admin_client) -> None:
    run = make_run(state=RunState.RUNNING)
    admin_client.post(reverse("admin:runs_run_changelist"), {"action": "pause_runs", "_selected_action": [run.pk]})
    transition = RunTransition.objects.get(run=run)

    add = admin_client.get(reverse("admin:runs_runtransition_add"))
    delete = admin_client.post(reverse("admin:runs_runtransition_delete", args=[transition.pk]), {"post": "yes"})

    assert add.status_code == 403
    assert delete.status_code == 403
    assert RunTransition.objects.filter(pk=transition.pk).exists()
