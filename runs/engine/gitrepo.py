"""Create small git repositories with a fixed identity (the demo's sample project, tests, benchmarks).

Commits made here are deterministic for given files (fixed author, committer and dates), so a demo or test
repository has the same commit SHA on every machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

FIXED_ENV = {
    "GIT_AUTHOR_NAME": "Autopack Demo",
    "GIT_AUTHOR_EMAIL": "demo@autopack.invalid",
    "GIT_COMMITTER_NAME": "Autopack Demo",
    "GIT_COMMITTER_EMAIL": "demo@autopack.invalid",
    "GIT_AUTHOR_DATE": "2025-01-01T00:00:00+00:00",
    "GIT_COMMITTER_DATE": "2025-01-01T00:00:00+00:00",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def run_git(cwd: Path, *args: str) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(FIXED_ENV)
    completed = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return completed.stdout.strip()


def init_repository(
    path: Path, *, files: dict[str, str] | None = None, source: Path | None = None, branch: str = "main"
) -> str:
    """Create ``path`` as a repository holding ``source``'s tree and/or ``files``; return the commit SHA."""
    path.mkdir(parents=True, exist_ok=True)
    if source is not None:
        shutil.copytree(source, path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name, content in (files or {}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    run_git(path, "init", "--quiet", f"--initial-branch={branch}")
    run_git(path, "add", "--all")
    run_git(path, "-c", "core.hooksPath=/dev/null", "commit", "--quiet", "--no-verify", "-m", "Initial commit")
    return run_git(path, "rev-parse", "HEAD")


def commit_all(path: Path, message: str) -> str:
    run_git(path, "add", "--all")
    run_git(path, "-c", "core.hooksPath=/dev/null", "commit", "--quiet", "--no-verify", "-m", message)
    return run_git(path, "rev-parse", "HEAD")
