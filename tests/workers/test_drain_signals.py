"""``manage.py drain`` as a real process: SIGTERM releases its lease at once (PostgreSQL: shared database)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from runs.models import Attempt, AttemptStatus, Phase, PhaseState, RunState
from tests.factories import make_git_repo, make_project, make_run

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = settings.DATABASES["default"]
    return (
        f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{connection.settings_dict['NAME']}"
    )


def test_sigterm_releases_the_lease_and_exits(tmp_path):
    project = make_project(repository_path=str(make_git_repo(tmp_path / "repo")))
    run = make_run(project, phases=1, state=RunState.RUNNING, branch="autopack/sigterm")
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "AUTOPACK_DATA_DIR": str(tmp_path / "data"),
        "AUTOPACK_NOOP_STAGE_SECONDS": "30",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "drain", "--engine", "noop", "--poll", "0.1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not Phase.objects.filter(run=run, state=PhaseState.EXECUTING).exists():
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the drain never claimed the phase"
            time.sleep(0.1)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        while Phase.objects.filter(run=run, state=PhaseState.EXECUTING).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        released = time.monotonic() - signalled
        output, _ = process.communicate(timeout=30)
        print(f"lease released {released:.1f}s, process gone {time.monotonic() - signalled:.1f}s after SIGTERM")
    finally:
        if process.poll() is None:
            process.kill()
    phase = Phase.objects.get(run=run)
    assert (phase.state, phase.lease_owner, phase.attempts_since_requeue) == (PhaseState.QUEUED, "", 0)
    assert Attempt.objects.get(phase=phase).status == AttemptStatus.ABANDONED
    assert process.returncode == 0, output
    assert "Drain summary" in output
