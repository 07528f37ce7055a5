"""Fixtures for the research tests: a project whose repository is a real temporary folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runs.models import Attempt, Phase, Project, Run, Tier

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LEDGER = FIXTURES / "BUILD_HISTORY.md"
TABLE_LEDGER = FIXTURES / "ledgers" / "BUILD_INDEX_TABLE.md"
DAY_LOG = FIXTURES / "ledgers" / "BUILD_LOG.md"


@pytest.fixture(autouse=True)
def _hashing_embedder(monkeypatch) -> None:
    """Tests use the deterministic default unless a test asks for another one."""
    monkeypatch.delenv("AUTOPACK_EMBEDDER", raising=False)


@pytest.fixture
def repository(tmp_path) -> Path:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    return root


@pytest.fixture
def project(db, repository) -> Project:
    return Project.objects.create(name="Autopack", slug="autopack", repository_path=str(repository))


@pytest.fixture
def imported_project(project) -> Project:
    from research.services import ledger_import

    report = ledger_import(paths=[LEDGER], project=project)
    assert report.added == 22
    return project


@pytest.fixture
def ledger_copy(tmp_path) -> Path:
    target = tmp_path / "BUILD_HISTORY.md"
    shutil.copyfile(LEDGER, target)
    return target


def make_phase(
    project: Project,
    *,
    run_name: str = "run",
    phase_id: str = "p1",
    category: str = "backend",
    state: str = "queued",
    paths: list[str] | None = None,
    failure: str = "",
    goal: str = "",
) -> Phase:
    run, _ = Run.objects.get_or_create(project=project, name=run_name, defaults={"goal": goal, "plan_sha256": "0" * 64})
    tier, _ = Tier.objects.get_or_create(run=run, index=0, defaults={"tier_id": "t1", "name": "Tier 1"})
    sequence = Phase.objects.filter(run=run).count()
    return Phase.objects.create(
        run=run,
        tier=tier,
        phase_id=phase_id,
        index=sequence,
        sequence=sequence,
        name=f"Phase {phase_id}",
        category=category,
        state=state,
        scope={"paths": paths or [], "deliverables": []},
        last_failure_reason=failure,
    )


def fail_attempt(phase: Phase, number: int, reason: str = "tests failed") -> Attempt:
    return Attempt.objects.create(
        phase=phase, number=number, claim_epoch=number, status="failed", failure_reason=reason
    )
