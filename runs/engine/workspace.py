"""Git workspaces: one worktree per run on branch ``autopack/<run>``, phase commits with trailers, a lock.

Public API:
    Workspace(repo=..., workspaces_dir=..., run=..., base_branch="main")
        .path, .branch, .lock_path
        .create() -> Workspace          # idempotent: reuses the worktree / branch if they already exist
        .lock(timeout=0.0) / .unlock()  # cross-process fcntl.flock; also ``with workspace.locked(): ...``
        .head() -> str                  # full SHA of HEAD in the worktree
        .base_sha() -> str              # where the run branch started
        .last_phase_commit() -> str     # newest commit carrying Autopack-Run for this run, else base_sha()
        .reset_to(sha)                  # reset --hard + clean: the tree is exactly ``sha`` again
        .commit_phase(message, *, run, phase, attempt) -> str   # idempotent per (run, phase)
        .find_phase_commit(phase) -> str | None
        .phase_commits() -> list[PhaseCommit]
        .cleanup(delete_branch=False)
    WorkspaceError, WorkspaceBusy

Decisions:
- ``git worktree add`` from the operator's repository into ``workspaces_dir/run-<run>``: the operator's own
  checkout (its working tree, index and HEAD) is never touched; only a branch ref and the worktree
  registration are added to the repository. Objects are shared, so creating a workspace is cheap.
- The lock file lives beside the worktree (``run-<run>.lock``), never inside it, so edits cannot reach it.
- Commits run with hooks disabled and a fixed identity: they are machine commits and must not run
  repository-controlled code or depend on the operator's config.
- ``commit_phase``, ``reset_to``, ``create`` and ``cleanup`` take the lock themselves when the caller does not
  hold it (blocking up to 30 s, then ``WorkspaceBusy``), so even a stray process cannot interleave with the owner.
- ``commit_phase`` first looks for a commit on the run branch whose trailers name the same run and phase; if
  there is one it returns that SHA and commits nothing, so a worker that crashed after committing and is
  re-run can never produce a duplicate phase commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

TRAILER_RUN = "Autopack-Run"
TRAILER_PHASE = "Autopack-Phase"
TRAILER_ATTEMPT = "Autopack-Attempt"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_IDENTITY = ["-c", "user.name=Autopack", "-c", "user.email=autopack@localhost", "-c", f"core.hooksPath={os.devnull}"]


class WorkspaceError(RuntimeError):
    pass


class WorkspaceBusy(WorkspaceError):
    """Another process holds the workspace lock."""


@dataclass(frozen=True)
class PhaseCommit:
    sha: str
    run: str
    phase: str
    attempt: str


def git(cwd: Path, *args: str, check: bool = True, input_text: str | None = None) -> str:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    completed = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, input=input_text, check=False
    )
    if check and completed.returncode != 0:
        raise WorkspaceError(f"git {' '.join(args)} failed in {cwd}: {completed.stderr.strip()}")
    return completed.stdout.strip()


class Workspace:
    def __init__(self, *, repo: Path | str, workspaces_dir: Path | str, run: str | int, base_branch: str = "main"):
        run = str(run)
        if not _SAFE_NAME.match(run):
            raise WorkspaceError(f"run id {run!r} is not usable in a branch name")
        self.repo = Path(repo).resolve()
        self.workspaces_dir = Path(workspaces_dir).resolve()
        self.run = run
        self.base_branch = base_branch
        self.branch = f"autopack/{run}"
        self.path = self.workspaces_dir / f"run-{run}"
        self.lock_path = self.workspaces_dir / f"run-{run}.lock"
        self._lock_handle: int | None = None

    # Locking ---------------------------------------------------------------------------------------------
    def lock(self, timeout: float = 0.0, poll: float = 0.05) -> None:
        if self._lock_handle is not None:
            return
        self.workspaces_dir.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(handle)
                    raise WorkspaceBusy(f"workspace for run {self.run} is locked by another process") from None
                time.sleep(poll)
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()}\n".encode())
        self._lock_handle = handle

    def unlock(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            os.close(self._lock_handle)
            self._lock_handle = None

    @contextlib.contextmanager
    def locked(self, timeout: float = 0.0) -> Iterator[Workspace]:
        self.lock(timeout)
        try:
            yield self
        finally:
            self.unlock()

    @property
    def is_locked_by_me(self) -> bool:
        return self._lock_handle is not None

    # Lifecycle -------------------------------------------------------------------------------------------
    def create(self) -> Workspace:
        """Create (or reuse) the worktree. Holds the lock meanwhile unless the caller already holds it."""
        with self._held():
            if (self.path / ".git").exists():
                return self
            git(self.repo, "worktree", "prune")
            if self.path.exists():
                shutil.rmtree(self.path)  # a half-created worktree from a crash: nothing in it is committed
            if git(self.repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{self.branch}", check=False):
                git(self.repo, "worktree", "add", str(self.path), self.branch)
            else:
                base = git(self.repo, "rev-parse", "--verify", f"{self.base_branch}^{{commit}}")
                git(self.repo, "worktree", "add", "-b", self.branch, str(self.path), base)
        return self

    def cleanup(self, *, delete_branch: bool = False) -> None:
        with self._held():
            if self.path.exists():
                git(self.repo, "worktree", "remove", "--force", str(self.path), check=False)
                shutil.rmtree(self.path, ignore_errors=True)
            git(self.repo, "worktree", "prune")
            if delete_branch:
                git(self.repo, "branch", "-D", self.branch, check=False)
        self.lock_path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        if self.is_locked_by_me:
            yield
            return
        with self.locked(timeout=30.0):
            yield

    # Queries ---------------------------------------------------------------------------------------------
    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD")

    def base_sha(self) -> str:
        return git(self.repo, "merge-base", self.base_branch, self.branch)

    def is_clean(self) -> bool:
        return git(self.path, "status", "--porcelain", "--untracked-files=all") == ""

    def phase_commits(self) -> list[PhaseCommit]:
        separator = "\x1e"
        fields = f"%H%x1f%(trailers:key={TRAILER_RUN},valueonly,separator=%x2c)%x1f"
        fields += f"%(trailers:key={TRAILER_PHASE},valueonly,separator=%x2c)%x1f"
        fields += f"%(trailers:key={TRAILER_ATTEMPT},valueonly,separator=%x2c){separator}"
        output = git(self.repo, "log", f"--format={fields}", self.branch, "--not", self.base_branch, "--")
        commits = []
        for record in output.split(separator):
            parts = record.strip().split("\x1f")
            if len(parts) == 4 and parts[1] == self.run:
                commits.append(PhaseCommit(sha=parts[0], run=parts[1], phase=parts[2], attempt=parts[3]))
        return commits

    def find_phase_commit(self, phase: str | int) -> str | None:
        for commit in self.phase_commits():
            if commit.phase == str(phase):
                return commit.sha
        return None

    def last_phase_commit(self) -> str:
        commits = self.phase_commits()
        return commits[0].sha if commits else self.base_sha()

    # Changes ---------------------------------------------------------------------------------------------
    def reset_to(self, sha: str) -> None:
        with self._held():
            git(self.path, "reset", "--quiet", "--hard", sha)
            git(self.path, "clean", "-ffdxq")

    def commit_phase(self, message: str, *, run: str | int, phase: str | int, attempt: int) -> str:
        """Commit everything in the worktree as the phase's one commit; idempotent per (run, phase)."""
        if str(run) != self.run:
            raise WorkspaceError(f"workspace belongs to run {self.run}, not {run}")
        for value in (str(phase), str(attempt)):
            if not _SAFE_NAME.match(value):
                raise WorkspaceError(f"trailer value {value!r} is not a plain identifier")
        # Under the lock, so the "already committed?" check and the commit cannot interleave with another process.
        with self._held():
            existing = self.find_phase_commit(phase)
            if existing is not None:
                return existing
            git(self.path, "add", "--all")
            trailers = f"{TRAILER_RUN}: {run}\n{TRAILER_PHASE}: {phase}\n{TRAILER_ATTEMPT}: {attempt}\n"
            body = f"{message.strip()}\n\n{trailers}"
            git(self.path, *_IDENTITY, "commit", "--quiet", "--allow-empty", "--no-verify", "-F", "-", input_text=body)
            return self.head()
