"""Governed apply: scope, protected paths, tests, content checks, limits, all-or-nothing and the result."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runs.engine import apply as apply_module
from runs.engine.apply import ApplyPolicy, governed_apply, is_test_path, truncation_marker_lines
from runs.engine.edits import DeleteOp, EditOp, RenameOp, WriteOp
from tests.engine.helpers import snapshot


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    files = {
        "src/app.py": "def main():\n    return 1\n",
        "src/util.py": "X = 1\n",
        "docs/guide.md": "# Guide\n",
        "tests/test_app.py": "def test_main():\n    assert True\n",
        "broken.py": "def oops(:\n",
        "config/settings.toml": "a = 1\n",
    }
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


def rules(result) -> set[str]:
    return {violation.rule for violation in result.violations}


def test_without_a_scope_the_whole_tree_is_writable(tree):
    result = governed_apply(tree, [WriteOp("anywhere/new.txt", "hi\n")])

    assert result.applied and result.created == ["anywhere/new.txt"]


def test_a_scope_entry_ending_in_slash_is_a_prefix_and_otherwise_an_exact_file(tree):
    policy = ApplyPolicy(scope_paths=("src/", "docs/guide.md"))

    assert governed_apply(tree, [WriteOp("src/deep/new.py", "x = 1\n")], policy=policy).applied
    assert governed_apply(tree, [WriteOp("docs/guide.md", "# New\n")], policy=policy).applied
    refused = governed_apply(tree, [WriteOp("docs/other.md", "x\n")], policy=policy)
    assert rules(refused) == {"out_of_scope"}
    assert rules(governed_apply(tree, [WriteOp("srcx/a.py", "x = 1\n")], policy=policy)) == {"out_of_scope"}


def test_deliverables_are_in_scope(tree):
    policy = ApplyPolicy(scope_paths=("src/",), deliverables=("docs/new.md", "reports/"))

    result = governed_apply(tree, [WriteOp("docs/new.md", "x\n"), WriteOp("reports/r.txt", "y\n")], policy=policy)

    assert result.applied


def test_protected_paths_are_refused_even_in_scope(tree):
    policy = ApplyPolicy(protected_paths=("config/", "src/util.py"))

    assert rules(governed_apply(tree, [WriteOp("config/settings.toml", "a = 2\n")], policy=policy)) == {
        "protected_path"
    }
    assert rules(governed_apply(tree, [DeleteOp("src/util.py")], policy=policy)) == {"protected_path"}
    assert rules(governed_apply(tree, [WriteOp(".autopack/state", "x")])) == {"protected_path"}
    assert rules(governed_apply(tree, [WriteOp(".env", "SECRET=1")])) == {"protected_path"}


def test_existing_tests_cannot_change_unless_the_phase_allows_it(tree):
    edit = [EditOp("tests/test_app.py", "assert True", "assert 1")]

    assert rules(governed_apply(tree, edit)) == {"test_file_protected"}
    assert rules(governed_apply(tree, [DeleteOp("tests/test_app.py")])) == {"test_file_protected"}
    assert rules(governed_apply(tree, [RenameOp("tests/test_app.py", "tests/test_b.py")])) == {"test_file_protected"}
    assert governed_apply(tree, edit, policy=ApplyPolicy(allow_test_edits=True)).applied


def test_new_test_files_may_be_added(tree):
    result = governed_apply(tree, [WriteOp("tests/test_new.py", "def test_x():\n    pass\n")])

    assert result.applied


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tests/test_a.py", True),
        ("pkg/tests/helpers.py", True),
        ("test_a.py", True),
        ("a_test.go", True),
        ("conftest.py", True),
        ("web/app.spec.ts", True),
        ("src/contest.py", False),
        ("src/testing_tools.py", False),
        ("docs/tests.md", False),
    ],
)
def test_test_paths_are_recognised(path, expected):
    assert is_test_path(path) is expected


@pytest.mark.parametrize(
    "marker",
    [
        "# ... rest of code",
        "    # ... rest of the code remains unchanged",
        "// ... existing code ...",
        "/* ... */ // rest of file unchanged",
        "<!-- ... rest of the file ... -->",
        "# rest of the implementation here",
        "// existing code here",
        "    ...  # existing methods unchanged",
    ],
)
def test_truncation_markers_are_refused(tree, marker):
    content = f"def main():\n    return 2\n{marker}\n"

    result = governed_apply(tree, [WriteOp("src/app.py", content)])

    assert rules(result) == {"truncation_marker"}


def test_ordinary_ellipses_are_not_markers():
    text = (
        "x = ...\nprint('loading...')\n# see the docs for more\nraise NotImplementedError  # ...\n"
        "# Keep the existing code path for legacy callers.\n# The rest of this module is generated.\n"
    )
    assert truncation_marker_lines(text) == set()


def test_a_marker_line_already_in_the_file_is_not_refused(tree):
    (tree / "docs/guide.md").write_text("# ... rest of code\n")

    result = governed_apply(tree, [WriteOp("docs/guide.md", "Intro\n# ... rest of code\n")])

    assert result.applied


def test_python_files_written_must_compile(tree):
    result = governed_apply(tree, [WriteOp("src/app.py", "def main(:\n    return 1\n")])

    assert rules(result) == {"python_syntax"}
    assert "src/app.py" in result.violations[0].reason and "line 1" in result.violations[0].reason


def test_a_python_file_that_was_already_broken_may_stay_broken(tree):
    result = governed_apply(tree, [WriteOp("broken.py", "def oops(:\n    pass\n")])

    assert result.applied


def test_size_limits_apply_per_file_and_in_total(tree):
    small = ApplyPolicy(max_file_bytes=10)
    assert rules(governed_apply(tree, [WriteOp("a.txt", "x" * 11)], policy=small)) == {"file_too_large"}

    total = ApplyPolicy(max_total_bytes=15)
    result = governed_apply(tree, [WriteOp("a.txt", "x" * 8), WriteOp("b.txt", "y" * 8)], policy=total)
    assert rules(result) == {"total_too_large"}

    many = ApplyPolicy(max_operations=1)
    assert rules(governed_apply(tree, [DeleteOp("a"), DeleteOp("b")], policy=many)) == {"too_many_operations"}


def test_an_edit_that_does_not_match_reports_the_count_and_candidates(tree):
    result = governed_apply(tree, [EditOp("src/app.py", "def mian():", "def run():")])

    violation = result.violations[0]
    assert violation.rule == "edit_match" and violation.path == "src/app.py"
    assert violation.detail["count"] == 0
    assert violation.detail["candidates"][0] == [1, "def main():"]


def test_operations_see_the_effect_of_earlier_ones(tree):
    edits = [
        WriteOp("src/new.py", "A = 1\n"),
        EditOp("src/new.py", "A = 1", "A = 2"),
        RenameOp("src/new.py", "src/moved.py"),
        DeleteOp("src/util.py"),
    ]

    result = governed_apply(tree, edits)

    assert result.applied
    assert (tree / "src/moved.py").read_text() == "A = 2\n"
    assert not (tree / "src/new.py").exists() and not (tree / "src/util.py").exists()
    assert result.created == ["src/moved.py"] and result.deleted == ["src/util.py"]
    assert result.renamed == [("src/new.py", "src/moved.py")]


def test_the_result_carries_a_unified_diff_of_what_changed(tree):
    result = governed_apply(tree, [EditOp("src/app.py", "return 1", "return 2"), DeleteOp("docs/guide.md")])

    assert "--- a/src/app.py\n+++ b/src/app.py\n" in result.diff
    assert "-    return 1\n+    return 2\n" in result.diff
    assert "--- a/docs/guide.md\n+++ /dev/null\n" in result.diff
    assert result.touched == ["docs/guide.md", "src/app.py"]
    assert not (tree / "docs").exists()  # a directory emptied by deletes goes too, like git


def test_a_dry_run_reports_everything_and_writes_nothing(tree):
    before = snapshot(tree)

    result = governed_apply(tree, [WriteOp("src/app.py", "def main():\n    return 3\n")], dry_run=True)

    assert result.ok and not result.applied and result.dry_run
    assert result.modified == ["src/app.py"] and "+    return 3" in result.diff
    assert snapshot(tree) == before


def test_a_failure_while_writing_rolls_everything_back(tree, monkeypatch):
    (tree / "src/app.py").chmod(0o755)
    before = snapshot(tree)
    real_replace = os.replace
    calls = {"count": 0}

    def failing_replace(source, target):
        calls["count"] += 1
        if calls["count"] == 3:
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(apply_module.os, "replace", failing_replace)
    edits = [
        DeleteOp("docs/guide.md"),
        WriteOp("src/app.py", "def main():\n    return 5\n"),
        WriteOp("new/deep/a.txt", "a\n"),
        WriteOp("new/deep/b.txt", "b\n"),
    ]

    result = governed_apply(tree, edits)

    assert not result.applied and rules(result) == {"write_failed"}
    assert snapshot(tree) == before


def test_writing_identical_content_changes_nothing(tree):
    result = governed_apply(tree, [WriteOp("src/util.py", "X = 1\n")])

    assert result.ok and not result.applied and result.touched == []


def test_bad_policy_entries_are_reported_not_raised(tree):
    result = governed_apply(tree, [WriteOp("a", "b")], policy=ApplyPolicy(scope_paths=("../",)))

    assert rules(result) == {"parent_traversal"}


def test_a_write_over_a_directory_or_under_a_file_is_refused(tree):
    assert rules(governed_apply(tree, [WriteOp("src", "x")])) == {"is_directory"}
    assert rules(governed_apply(tree, [WriteOp("src/util.py/inner.py", "x = 1\n")])) == {"parent_not_directory"}
    assert rules(governed_apply(tree, [WriteOp("f", "x"), WriteOp("f/g", "y")])) == {"parent_not_directory"}


def test_git_listed_among_protected_paths_is_harmless(tree):
    result = governed_apply(tree, [WriteOp("src/x.py", "x = 1\n")], policy=ApplyPolicy(protected_paths=(".git/",)))

    assert result.applied


def test_an_empty_scope_allows_only_the_deliverables(tree):
    policy = ApplyPolicy(scope_paths=(), deliverables=("src/new.py",))

    assert governed_apply(tree, [WriteOp("src/new.py", "x = 1\n")], policy=policy).applied
    assert rules(governed_apply(tree, [WriteOp("src/other.py", "x = 1\n")], policy=policy)) == {"out_of_scope"}
