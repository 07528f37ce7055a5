"""``manage.py demo``: the shipped sample project, plan and cassette, replayed end to end."""

from __future__ import annotations

import subprocess

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from runs.models import Attempt, AttemptEvent, Phase, PhaseState, Project, Run, RunState

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_task_queue(settings):
    settings.AUTOPACK = {**settings.AUTOPACK, "ENQUEUE_TASKS": False}


def test_seeding_twice_changes_nothing_and_leaves_a_started_run_for_the_worker(capsys):
    call_command("demo", seed_only=True)
    call_command("demo", seed_only=True)
    assert Project.objects.filter(slug="demo").count() == 1
    run = Run.objects.get(project__slug="demo")
    assert run.state == RunState.RUNNING and run.phases.count() == 3
    assert run.model_mapping["provider"] == {"name": "replay", "cassette": "demo/cassette.jsonl"}
    user = get_user_model().objects.get(username="demo")
    assert user.is_superuser and user.check_password("demo-password")
    assert "user demo / demo-password" in capsys.readouterr().out


@pytest.mark.slow
def test_the_demo_replays_its_cassette_into_one_commit_per_phase(capsys):
    call_command("demo")
    out = capsys.readouterr().out
    run = Run.objects.get(project__slug="demo")
    assert run.state == RunState.COMPLETE, out
    attempts = {phase.phase_id: phase.attempt_count for phase in run.phases.all()}
    assert attempts == {"p1-slugify": 2, "p2-word-stats": 3, "p3-cli": 2}
    assert all(phase.state == PhaseState.COMPLETE for phase in run.phases.all())
    repo = run.project.repository_path
    log = subprocess.run(
        ["git", "log", "--format=%s", f"main..{run.branch}"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert [line for line in log if line] == [
        "p3-cli: Command-line interface",
        "p2-word-stats: Word frequency statistics",
        "p1-slugify: Add a slugify helper",
    ]
    p1 = Phase.objects.get(run=run, phase_id="p1-slugify")
    truncated = Attempt.objects.get(phase=p1, number=1)
    assert AttemptEvent.objects.filter(attempt=truncated, stage="budget", kind="escalated").exists()
    p2_third = Attempt.objects.get(phase__run=run, phase__phase_id="p2-word-stats", number=3)
    assert p2_third.summary["ci"]["still_failing"] == ["tests.test_core::test_title_case_keeps_apostrophes"]
    p2_second = Attempt.objects.get(phase__run=run, phase__phase_id="p2-word-stats", number=2)
    assert AttemptEvent.objects.filter(attempt=p2_second, stage="doctor", kind="retry_with_fix").exists()
    p3_first = Attempt.objects.get(phase__run=run, phase__phase_id="p3-cli", number=1)
    assert AttemptEvent.objects.filter(attempt=p3_first, stage="audit", kind="rejected").exists()
    assert run.doctor_calls == 1 and run.tokens_used > 0
    # The ledger write-back happens now, not whenever a worker next picks up the queued task.
    from research.models import BuildHistoryEntry

    entry = BuildHistoryEntry.objects.get(run=run)
    assert f"ledger: {entry.build_id} appended to " in out
    assert f"branch {run.branch}" in out and "p2-word-stats: complete after 3 attempt(s)" in out
