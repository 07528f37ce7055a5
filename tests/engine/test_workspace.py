"""Workspace: worktree per run, phase commits with trailers (idempotent), reset, cleanup and the lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runs.engine.workspace import Workspace, WorkspaceBusy, WorkspaceError
from tests.engine.conftest import make_git_repo, run_git


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_git_repo(tmp_path / "operator", {"app.py": "x = 1\n", "README.md": "hello\n"})


@pytest.fixture
def workspace(tmp_path: Path, repo: Path) -> Workspace:
    return Workspace(repo=repo, workspaces_dir=tmp_path / "workspaces", run="42", base_branch="main").create()


def operator_state(repo: Path) -> tuple[str, str, str]:
    return (
        run_git(repo, "rev-parse", "HEAD"),
        run_git(repo, "status", "--porcelain"),
        run_git(repo, "symbolic-ref", "HEAD"),
    )


def test_a_worktree_is_created_on_the_run_branch_without_touching_the_operator_checkout(tmp_path, repo):
    (repo / "uncommitted.txt").write_text("operator's work in progress\n")
    before = operator_state(repo)

    workspace = Workspace(repo=repo, workspaces_dir=tmp_path / "ws", run="7").create()

    assert workspace.path == (tmp_path / "ws" / "run-7").resolve()
    assert (workspace.path / "app.py").read_text() == "x = 1\n"
    assert not (workspace.path / "uncommitted.txt").exists()
    assert run_git(workspace.path, "symbolic-ref", "HEAD").strip() == "refs/heads/autopack/7"
    assert workspace.head() == run_git(repo, "rev-parse", "main").strip()
    assert operator_state(repo) == before


def test_create_is_idempotent_and_keeps_phase_commits(workspace):
    (workspace.path / "app.py").write_text("x = 2\n")
    sha = workspace.commit_phase("phase one", run="42", phase="p1", attempt=1)

    again = Workspace(repo=workspace.repo, workspaces_dir=workspace.workspaces_dir, run="42").create()

    assert again.head() == sha


def test_a_phase_commit_carries_the_trailers(workspace):
    (workspace.path / "feature.py").write_text("def f():\n    return 1\n")

    sha = workspace.commit_phase("Add feature", run="42", phase="p1", attempt=3)

    message = run_git(workspace.path, "log", "-1", "--format=%B", sha)
    assert "Autopack-Run: 42\nAutopack-Phase: p1\nAutopack-Attempt: 3" in message
    assert workspace.is_clean()
    assert workspace.find_phase_commit("p1") == sha
    assert [(c.phase, c.attempt) for c in workspace.phase_commits()] == [("p1", "3")]


def test_committing_the_same_phase_twice_creates_no_duplicate(workspace):
    (workspace.path / "a.txt").write_text("a\n")
    first = workspace.commit_phase("Phase", run="42", phase="p1", attempt=1)
    (workspace.path / "stray.txt").write_text("left by a re-run\n")

    second = workspace.commit_phase("Phase again", run="42", phase="p1", attempt=2)

    assert second == first
    count = run_git(workspace.path, "log", "--format=%H", "--grep=Autopack-Phase: p1", "autopack/42")
    assert len(count.split()) == 1


def test_reset_to_the_last_phase_commit_discards_a_failed_attempt(workspace):
    (workspace.path / "app.py").write_text("x = 2\n")
    phase_sha = workspace.commit_phase("p1", run="42", phase="p1", attempt=1)
    (workspace.path / "app.py").write_text("broken(\n")
    (workspace.path / "junk").mkdir()
    (workspace.path / "junk" / "file.pyc").write_bytes(b"\x00")

    workspace.reset_to(workspace.last_phase_commit())

    assert workspace.last_phase_commit() == phase_sha
    assert (workspace.path / "app.py").read_text() == "x = 2\n"
    assert not (workspace.path / "junk").exists()
    assert workspace.is_clean()


def test_before_any_phase_commit_the_last_phase_commit_is_the_base(workspace, repo):
    assert workspace.last_phase_commit() == run_git(repo, "rev-parse", "main").strip()


def test_cleanup_removes_the_worktree_and_optionally_the_branch(workspace, repo):
    workspace.cleanup(delete_branch=True)

    assert not workspace.path.exists()
    assert "autopack/42" not in run_git(repo, "branch", "--list")
    assert str(workspace.path) not in run_git(repo, "worktree", "list")


def test_the_lock_keeps_a_second_process_out(workspace):
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path.cwd())!r})
        from runs.engine.workspace import Workspace, WorkspaceBusy
        ws = Workspace(repo={str(workspace.repo)!r}, workspaces_dir={str(workspace.workspaces_dir)!r}, run="42")
        try:
            ws.lock(timeout=0.2)
        except WorkspaceBusy:
            print("busy")
        else:
            print("acquired")
        """
    )

    def other_process() -> str:
        return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()

    with workspace.locked():
        assert other_process() == "busy"
    assert other_process() == "acquired"


def test_two_handles_in_one_process_also_exclude_each_other(workspace):
    other = Workspace(repo=workspace.repo, workspaces_dir=workspace.workspaces_dir, run="42")
    with workspace.locked():
        with pytest.raises(WorkspaceBusy):
            other.lock(timeout=0)


def test_unsafe_run_ids_and_trailer_values_are_refused(tmp_path, repo, workspace):
    with pytest.raises(WorkspaceError):
        Workspace(repo=repo, workspaces_dir=tmp_path, run="../escape")
    with pytest.raises(WorkspaceError):
        workspace.commit_phase("m", run="42", phase="p1\nAutopack-Run: 9", attempt=1)
    with pytest.raises(WorkspaceError):
        workspace.commit_phase("m", run="43", phase="p1", attempt=1)


def test_concurrent_commits_of_one_phase_from_several_processes_leave_one_commit(workspace):
    (workspace.path / "work.txt").write_text("done\n")
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path.cwd())!r})
        from runs.engine.workspace import Workspace
        ws = Workspace(repo={str(workspace.repo)!r}, workspaces_dir={str(workspace.workspaces_dir)!r}, run="42")
        print(ws.commit_phase("phase p9", run="42", phase="p9", attempt=int(sys.argv[1])))
        """
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(n)], stdout=subprocess.PIPE, text=True) for n in range(4)
    ]
    shas = {process.communicate()[0].strip() for process in processes}

    assert len(shas) == 1
    log = run_git(workspace.path, "log", "--format=%H", "--grep=Autopack-Phase: p9", "autopack/42")
    assert log.split() == list(shas)
