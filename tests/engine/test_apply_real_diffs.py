"""Real ``git diff`` output through governed apply reproduces the target commit exactly."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from runs.engine.apply import ApplyPolicy, governed_apply
from runs.engine.edits import EditFormat, parse_edits
from tests.engine.conftest import make_git_repo, run_git
from tests.engine.helpers import snapshot

BINARY_A = bytes(range(256)) * 4
BINARY_B = bytes(reversed(range(256))) * 3 + b"\x00\x01tail"


def commit(repo: Path, message: str) -> str:
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", message)
    return run_git(repo, "rev-parse", "HEAD").strip()


def export(repo: Path, sha: str, target: Path) -> Path:
    """Check out ``sha`` into a plain directory (no .git), modes included."""
    archive = run_git_bytes(repo, "archive", "--format=tar", sha)
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="tar")
    return target


def run_git_bytes(repo: Path, *args: str) -> bytes:
    import subprocess

    from tests.engine.conftest import GIT_ENV

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **GIT_ENV}
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, check=True).stdout


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, str, str]:
    repo = make_git_repo(
        tmp_path / "repo",
        {
            "keep.txt": "unchanged\n",
            "src/module.py": "def f():\n    return 1\n\n\ndef g():\n    return 2\n",
            "delete_me.txt": "bye\n",
            "rename_me.txt": "".join(f"line {i}\n" for i in range(30)),
            "crlf.txt": "one\r\ntwo\r\nthree\r\n",
            "nonl.txt": "no newline at the end",
            "docs/ünïcödé.md": "Grüße, мир, 世界\n",
            "run.sh": "#!/bin/sh\necho hi\n",
        },
    )
    (repo / "image.bin").write_bytes(BINARY_A)
    a = commit(repo, "add binary")

    (repo / "src/module.py").write_text(
        "def f():\n    return 10\n\n\ndef g():\n    return 2\n\n\ndef h():\n    return 3\n"
    )
    (repo / "delete_me.txt").unlink()
    commit(repo, "modify and delete")

    (repo / "moved").mkdir()
    (repo / "rename_me.txt").rename(repo / "moved/renamed.txt")
    text = (repo / "moved/renamed.txt").read_text().replace("line 15\n", "line fifteen\n")
    (repo / "moved/renamed.txt").write_text(text)
    (repo / "docs/ünïcödé.md").rename(repo / "docs/ñew ünïcödé.md")
    commit(repo, "renames")

    (repo / "image.bin").write_bytes(BINARY_B)
    (repo / "new.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(200))
    (repo / "crlf.txt").write_bytes(b"one\r\nTWO\r\nthree\r\nfour\r\n")
    (repo / "nonl.txt").write_text("still no newline, but changed")
    (repo / "gains_newline.txt").write_text("x")
    os.chmod(repo / "run.sh", 0o755)
    commit(repo, "binary, crlf, no trailing newline, mode")

    (repo / "gains_newline.txt").write_text("x\n")
    (repo / "东京.txt").write_text("unicode name\n")
    b = commit(repo, "unicode and newline")
    return repo, a, b


def test_applying_git_diff_a_b_to_a_reproduces_b_exactly(tmp_path, history):
    repo, a, b = history
    diff = run_git_bytes(repo, "diff", "--binary", "-M", a, b).decode("utf-8")
    worktree = export(repo, a, tmp_path / "worktree")
    expected = snapshot(export(repo, b, tmp_path / "expected"))

    assert "GIT binary patch" in diff and "rename from rename_me.txt" in diff and "\r\n" in diff
    assert "\\ No newline at end of file" in diff and "new mode 100755" in diff
    parsed = parse_edits(diff)
    result = governed_apply(worktree, parsed)

    assert parsed.format is EditFormat.UNIFIED_DIFF and not parsed.truncated
    assert result.applied, result.violations
    assert snapshot(worktree) == expected
    assert "image.bin" in result.modified and "delete_me.txt" in result.deleted
    assert "moved/renamed.txt" in result.created and "rename_me.txt" in result.deleted
    assert "东京.txt" in result.created
    assert result.diff == diff


def test_the_same_diff_inside_prose_and_a_code_fence_still_applies(tmp_path, history):
    repo, a, b = history
    diff = run_git_bytes(repo, "diff", "--binary", a, b).decode("utf-8")
    worktree = export(repo, a, tmp_path / "worktree")

    result = governed_apply(worktree, f"Here is the patch:\n```diff\n{diff}```\nDone.")

    assert result.applied, result.violations
    assert snapshot(worktree) == snapshot(export(repo, b, tmp_path / "expected"))


def test_a_diff_that_does_not_apply_changes_nothing(tmp_path, history):
    repo, a, b = history
    diff = run_git_bytes(repo, "diff", "--binary", a, b).decode("utf-8")
    worktree = export(repo, a, tmp_path / "worktree")
    (worktree / "src/module.py").write_text("something else entirely\n")
    before = snapshot(worktree)

    result = governed_apply(worktree, parse_edits(diff))

    assert not result.applied
    assert {violation.rule for violation in result.violations} == {"diff_does_not_apply"}
    assert snapshot(worktree) == before


def test_diff_paths_obey_scope_before_git_runs(tmp_path, history):
    repo, a, b = history
    diff = run_git_bytes(repo, "diff", "--binary", a, b).decode("utf-8")
    worktree = export(repo, a, tmp_path / "worktree")
    before = snapshot(worktree)

    result = governed_apply(worktree, parse_edits(diff), policy=ApplyPolicy(scope_paths=("src/",)))

    assert not result.applied and "out_of_scope" in {violation.rule for violation in result.violations}
    assert snapshot(worktree) == before


def test_a_diff_whose_headers_hide_a_path_git_would_touch_is_refused(tmp_path):
    worktree = tmp_path / "w"
    worktree.mkdir()
    # The "diff --git" line names an in-scope file, but git takes the path from the ---/+++ lines.
    diff = "diff --git a/src/ok.txt b/src/ok.txt\nnew file mode 100644\n--- /dev/null\n+++ b/secret/x.txt\n@@ -0,0 +1 @@\n+x\n"

    result = governed_apply(worktree, parse_edits(diff), policy=ApplyPolicy(scope_paths=("src/",)))

    assert not result.applied
    assert {violation.rule for violation in result.violations} & {"out_of_scope", "diff_does_not_apply"}
    assert list(worktree.iterdir()) == []
