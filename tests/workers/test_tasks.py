from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django_q.models import OrmQ, Schedule

from runs import tasks
from runs.models import Phase, PhaseState, RunState
from runs.schedules import ensure_schedules
from runs.services.control import run_start
from runs.services.leases import phase_claim
from tests.factories import make_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def noop_worker(settings):
    settings.AUTOPACK = {**settings.AUTOPACK, "WORKER_ENGINE": "noop"}


def test_schedules_are_declared_once_however_often_they_are_ensured():
    ensure_schedules()
    ensure_schedules()
    schedule = Schedule.objects.get(name="runs.reap_leases")
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == ("runs.tasks.reap_leases", "I", 1)
    assert Schedule.objects.filter(name="accounts.flush_expired_tokens", schedule_type="D").count() == 1


def test_a_run_start_enqueues_its_work_after_commit(settings, django_capture_on_commit_callbacks):
    if "orm" not in settings.Q_CLUSTER:
        pytest.skip("the ORM broker is not in use")
    run = make_run()
    with django_capture_on_commit_callbacks(execute=True):
        run_start(run_id=run.pk, actor="user:test")
    assert OrmQ.objects.count() == 1


def test_a_drain_step_executes_one_phase(noop_worker):
    run = make_run(state=RunState.RUNNING, phases=2)
    assert tasks.drain_run_step(run.pk) is True
    states = list(Phase.objects.filter(run=run).order_by("sequence").values_list("state", flat=True))
    assert states == [PhaseState.COMPLETE, PhaseState.QUEUED]


def test_a_second_delivery_finds_nothing_to_claim(noop_worker):
    run = make_run(state=RunState.RUNNING, phases=2)
    phase_claim(worker="elsewhere")
    assert tasks.drain_run_step(run.pk) is False


def test_the_reaper_task_requeues_expired_leases():
    make_run(state=RunState.RUNNING, phases=1)
    claim = phase_claim(worker="dead", lease_seconds=5)
    Phase.objects.filter(pk=claim.phase_id).update(lease_expires_at="2000-01-01T00:00:00Z")
    assert tasks.reap_leases() == 1
    assert Phase.objects.get(pk=claim.phase_id).state == PhaseState.QUEUED


def test_the_reap_command_reports_what_it_requeued():
    make_run(state=RunState.RUNNING, phases=1)
    claim = phase_claim(worker="dead", lease_seconds=5)
    Phase.objects.filter(pk=claim.phase_id).update(lease_expires_at="2000-01-01T00:00:00Z")
    out = StringIO()
    call_command("reap", stdout=out)
    assert out.getvalue().strip() == "reaped 1 expired lease(s)"


def test_a_started_run_drains_to_completion_through_the_queue(
    noop_worker, monkeypatch, django_capture_on_commit_callbacks
):
    """Each finished phase enqueues the next step, so the cluster drains a whole run without a poller."""
    from django_q.conf import Conf

    # Synchronous django-q2: async_task runs the task at once, in this process, like a worker would.
    monkeypatch.setattr(Conf, "SYNC", True)
    run = make_run(phases=3)

    with django_capture_on_commit_callbacks(execute=True):
        run_start(run_id=run.pk, actor="user:test")

    run.refresh_from_db()
    states = list(Phase.objects.filter(run=run).order_by("sequence").values_list("state", flat=True))
    assert states == [PhaseState.COMPLETE] * 3
    assert run.state == RunState.COMPLETE
