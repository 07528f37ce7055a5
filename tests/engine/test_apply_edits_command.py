"""``manage.py apply_edits``: JSON result and exit codes (0 applied, 1 refused, 2 bad usage)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

MANAGE = Path(__file__).resolve().parents[2] / "manage.py"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def main():\n    return 1\n")
    (root / "tests").mkdir()
    (root / "tests" / "test_app.py").write_text("def test_main():\n    assert True\n")
    return root


def document(tmp_path: Path, *operations: dict) -> str:
    path = tmp_path / "doc.ndjson"
    path.write_text("\n".join(json.dumps(op) for op in operations) + "\n")
    return str(path)


def run_command(*args: str) -> tuple[int, dict]:
    out = io.StringIO()
    try:
        call_command("apply_edits", *args, stdout=out)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, json.loads(out.getvalue())


def test_an_in_scope_document_is_applied_and_reported(tmp_path, workspace):
    doc = document(tmp_path, {"op": "edit", "path": "src/app.py", "search": "return 1", "replace": "return 2"})

    code, result = run_command("--workspace", str(workspace), "--scope", "src/", doc)

    assert code == 0
    assert result["applied"] is True and result["format"] == "ndjson"
    assert result["modified"] == ["src/app.py"] and "+    return 2" in result["diff"]
    assert "return 2" in (workspace / "src" / "app.py").read_text()


def test_a_refused_document_reports_violations_and_changes_nothing(tmp_path, workspace):
    doc = document(
        tmp_path,
        {"op": "write", "path": "src/new.py", "content": "x = 1\n"},
        {"op": "write", "path": "docs/out.md", "content": "x\n"},
    )

    code, result = run_command("--workspace", str(workspace), "--scope", "src/", doc)

    assert code == 1 and result["applied"] is False
    assert result["violations"][0]["rule"] == "out_of_scope" and result["violations"][0]["path"] == "docs/out.md"
    assert not (workspace / "src" / "new.py").exists()


def test_tests_protected_paths_and_dry_run_options(tmp_path, workspace):
    edit_test = document(tmp_path, {"op": "edit", "path": "tests/test_app.py", "search": "True", "replace": "1"})
    assert run_command("--workspace", str(workspace), edit_test)[0] == 1

    code, result = run_command("--workspace", str(workspace), "--allow-tests", "--dry-run", edit_test)
    assert code == 0 and result["dry_run"] and not result["applied"]
    assert "assert True" in (workspace / "tests" / "test_app.py").read_text()

    protected = document(tmp_path, {"op": "delete", "path": "src/app.py"})
    code, result = run_command("--workspace", str(workspace), "--protected", "src/", protected)
    assert code == 1 and result["violations"][0]["rule"] == "protected_path"


def test_the_command_line_exit_codes(tmp_path, workspace):
    env = {**os.environ, "DATABASE_URL": "", "AUTOPACK_DATA_DIR": str(tmp_path / "data")}
    good = document(tmp_path, {"op": "write", "path": "src/b.py", "content": "y = 2\n"})

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(MANAGE), "apply_edits", *args], capture_output=True, text=True, env=env
        )

    applied = run("--workspace", str(workspace), good)
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["created"] == ["src/b.py"]
    assert run(good).returncode == 2  # no --workspace


def test_a_hostile_diff_is_refused_with_exit_code_1(tmp_path, workspace):
    hostile = tmp_path / "hostile.diff"
    hostile.write_text("--- /dev/null\n+++ b/../escape.txt\n@@ -0,0 +1 @@\n+x\n")

    code, result = run_command("--workspace", str(workspace), str(hostile))

    assert code == 1 and result["format"] == "unified_diff"
    assert result["violations"][0]["rule"] == "parent_traversal"
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("problem", ["missing workspace", "missing file"])
def test_bad_usage_is_exit_code_2(tmp_path, workspace, problem):
    good = document(tmp_path, {"op": "write", "path": "src/b.py", "content": "y = 2\n"})
    args = ["--workspace", str(tmp_path / "nope"), good]
    if problem == "missing file":
        args = ["--workspace", str(workspace), str(tmp_path / "no-such-file")]

    with pytest.raises(CommandError) as caught:
        call_command("apply_edits", *args, stdout=io.StringIO())

    assert caught.value.returncode == 2
