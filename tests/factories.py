"""Small factories for test data. Plain functions: explicit, no magic sequences to decode."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path
from typing import Any

from accounts.models import Membership, Role, User
from runs.models import Phase, Project, Run, RunState, Tier

_counter = itertools.count(1)


def make_user(username: str | None = None, *, staff: bool = False, password: str = "pw-for-tests") -> User:
    username = username or f"user{next(_counter)}"
    return User.objects.create_user(username=username, password=password, is_staff=staff)


def make_project(slug: str | None = None, *, repository_path: str = "/nonexistent", **fields: Any) -> Project:
    slug = slug or f"project-{next(_counter)}"
    return Project.objects.create(name=slug.title(), slug=slug, repository_path=repository_path, **fields)


def add_member(user: User, project: Project, role: str = Role.OPERATOR) -> Membership:
    return Membership.objects.create(user=user, project=project, role=role)


def make_run(
    project: Project | None = None,
    *,
    phases: int = 3,
    tiers: int = 1,
    state: str = RunState.QUEUED,
    **fields: Any,
) -> Run:
    """A run with `phases` phases spread over `tiers` tiers, created directly (not via plan import)."""
    project = project or make_project()
    number = next(_counter)
    run = Run.objects.create(
        project=project,
        name=f"run-{number}",
        state=state,
        plan_sha256=f"{number:064x}",
        phases_total=phases,
        **fields,
    )
    tier_objects = [
        Tier.objects.create(run=run, index=i, tier_id=f"T{i + 1}", name=f"Tier {i + 1}") for i in range(tiers)
    ]
    per_tier = max(1, -(-phases // tiers))
    for sequence in range(phases):
        tier = tier_objects[min(sequence // per_tier, tiers - 1)]
        Phase.objects.create(
            run=run,
            tier=tier,
            phase_id=f"P{sequence + 1}",
            index=sequence % per_tier,
            sequence=sequence,
            name=f"Phase {sequence + 1}",
            scope={"paths": [f"src/p{sequence + 1}.py"], "deliverables": [f"src/p{sequence + 1}.py"]},
        )
    return run


def make_git_repo(path: Path, files: dict[str, str] | None = None, *, branch: str = "main") -> Path:
    """A real git repository with one commit holding `files`."""
    path.mkdir(parents=True, exist_ok=True)
    git = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q", "-b", branch, str(path)], check=True)
    for name, content in (files or {"README.md": "# sample\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    subprocess.run([*git, "-C", str(path), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(path), "commit", "-q", "-m", "initial"], check=True)
    return path
