from __future__ import annotations

import threading
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import OperationalError

from runs.drain import Drain, GitBranch, noop_commit
from runs.models import Attempt, AttemptStatus, Phase, PhaseState, RunState
from runs.services.control import run_cancel
from runs.services.leases import phase_claim
from tests.factories import make_git_repo, make_project, make_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def project(tmp_path):
    return make_project(repository_path=str(make_git_repo(tmp_path / "repo")))


def branch_of(run) -> GitBranch:
    run.refresh_from_db()
    return GitBranch(Path(run.project.repository_path), run.branch)


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def while_table_locked(action):
    """The SQLite test database is in memory with a shared cache, whose table locks ignore the busy timeout
    (a file database waits instead): retry the test thread's own write while a drain thread holds the lock."""
    for _ in range(100):
        try:
            return action()
        except OperationalError as exc:
            if "locked" not in str(exc):
                raise
            time.sleep(0.05)
    raise AssertionError("the table stayed locked")


def test_noop_drain_commits_each_phase_once_on_the_run_branch(project):
    runs = [make_run(project, phases=3, state=RunState.RUNNING, branch=f"autopack/r{n}") for n in range(2)]
    results = Drain(engine="noop", until_empty=True, poll_seconds=0.05).run()
    assert sorted(result.state for result in results) == [PhaseState.COMPLETE] * 6
    for run in runs:
        run.refresh_from_db()
        assert run.state == RunState.COMPLETE
        assert branch_of(run).phase_commits() == ["P1", "P2", "P3"]
        shas = list(Phase.objects.filter(run=run).order_by("sequence").values_list("commit_sha", flat=True))
        assert all(len(sha) == 40 for sha in shas) and len(set(shas)) == 3


@pytest.mark.django_db(transaction=False)
def test_a_second_commit_of_the_same_phase_reuses_the_first(project):
    make_run(project, phases=1, state=RunState.RUNNING, branch="autopack/again")
    claim = phase_claim(worker="w1")
    first = noop_commit(claim)
    assert noop_commit(claim) == first
    run = Phase.objects.get(pk=claim.phase_id).run
    assert branch_of(run).phase_commits() == ["P1"]


def test_drain_command_exits_non_zero_when_a_phase_ends_blocked(project):
    run = make_run(project, phases=2, state=RunState.RUNNING, branch="autopack/blocked")
    Phase.objects.filter(run=run, sequence=1).update(scope={"noop_outcome": "blocked"})
    out = StringIO()
    with pytest.raises(CommandError, match="failed or blocked"):
        call_command("drain", "--engine", "noop", "--until-empty", "--poll", "0.05", stdout=out)
    assert "Drain summary" in out.getvalue()
    assert list(Phase.objects.filter(run=run).order_by("sequence").values_list("state", flat=True)) == [
        PhaseState.COMPLETE,
        PhaseState.BLOCKED,
    ]


def test_max_phases_and_run_filter_limit_what_the_drain_takes(project):
    wanted = make_run(project, phases=3, state=RunState.RUNNING, branch="autopack/wanted")
    other = make_run(project, phases=3, state=RunState.RUNNING, branch="autopack/other")
    call_command("drain", "--engine", "noop", "--run", str(wanted.pk), "--max-phases", "2", stdout=StringIO())
    assert Phase.objects.filter(run=wanted, state=PhaseState.COMPLETE).count() == 2
    assert Phase.objects.filter(run=other, state=PhaseState.COMPLETE).count() == 0


def test_shutdown_releases_the_lease_without_counting_an_attempt(project):
    run = make_run(project, phases=1, state=RunState.RUNNING, branch="autopack/shutdown")
    drain = Drain(engine="noop", stage_seconds=0.3, poll_seconds=0.05)
    drain.start()
    wait_for(lambda: drain.active)  # in memory: polling the database would contend with the drain
    drain.shutdown()
    drain.wait(10)
    phase = Phase.objects.get(run=run)
    assert (phase.state, phase.lease_owner, phase.attempts_since_requeue) == (PhaseState.QUEUED, "", 0)
    assert Attempt.objects.get(phase=phase).status == AttemptStatus.ABANDONED


def test_a_cancelled_run_stops_its_executing_phase_at_the_next_stage(project, settings):
    settings.AUTOPACK = {**settings.AUTOPACK, "HEARTBEAT_SECONDS": 0.1}
    run = make_run(project, phases=2, state=RunState.RUNNING, branch="autopack/cancel")
    drain = Drain(engine="noop", stage_seconds=0.4, until_empty=True, poll_seconds=0.05)
    thread = threading.Thread(target=drain.run)
    thread.start()
    wait_for(lambda: drain.active)
    while_table_locked(lambda: run_cancel(run_id=run.pk, actor="user:test"))
    thread.join(timeout=20)
    assert set(Phase.objects.filter(run=run).values_list("state", flat=True)) == {PhaseState.SKIPPED}
    assert Phase.objects.filter(run=run, lease_owner="").count() == 2
    assert GitBranch(Path(project.repository_path), "autopack/cancel").phase_commits() == []


def test_an_engine_that_keeps_crashing_ends_blocked_instead_of_looping(project):
    run = make_run(project, phases=1, state=RunState.RUNNING, branch="autopack/crash")
    Phase.objects.filter(run=run).update(scope={"noop_crash": True})
    results = Drain(engine="noop", until_empty=True, poll_seconds=0.05).run()
    assert [result.state for result in results] == [PhaseState.QUEUED, PhaseState.QUEUED, PhaseState.BLOCKED]
    phase = Phase.objects.get(run=run)
    assert "RuntimeError" in phase.last_failure_reason and phase.attempt_count == 3


def test_the_drain_summary_stays_readable_when_the_output_is_not_a_terminal(project):
    # Piped into a CI log, rich used 80 columns and cut every cell to "compl…", "$0.0…".
    run = make_run(project, phases=1, state=RunState.RUNNING, branch="autopack/piped")
    run.name = "a run whose name is long enough to need more than one line in a narrow table"
    run.save(update_fields=["name"])
    out = StringIO()
    call_command("drain", "--engine", "noop", "--until-empty", "--poll", "0.05", stdout=out)
    text = out.getvalue()
    assert "…" not in text
    assert "complete" in text and "$0.0000" in text


def test_drain_takes_several_run_ids_after_one_flag_and_refuses_unknown_ones(project):
    first = make_run(project, phases=1, state=RunState.RUNNING, branch="autopack/first")
    second = make_run(project, phases=1, state=RunState.RUNNING, branch="autopack/second")
    call_command(
        "drain", "--engine", "noop", "--until-empty", "--poll", "0.05", "--run", first.pk, second.pk, stdout=StringIO()
    )
    assert set(Phase.objects.values_list("state", flat=True)) == {PhaseState.COMPLETE}
    with pytest.raises(CommandError, match="no run 987654"):
        call_command("drain", "--until-empty", "--run", 987654, stdout=StringIO())
