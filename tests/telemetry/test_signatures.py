"""Signatures on real error output: captured pytest and npm/node runs (tests/fixtures/telemetry/errors, each
captured twice in different directories) and Python tracebacks produced here by real subprocesses."""

import subprocess
import sys
from pathlib import Path

import pytest

from telemetry.signatures import classify_error, error_signature, normalise_error

ERRORS = Path(__file__).resolve().parent.parent / "fixtures" / "telemetry" / "errors"


def captured(name: str) -> str:
    return (ERRORS / name).read_text()


def python_failure(directory: Path, source: str) -> str:
    directory.mkdir(parents=True)
    script = directory / "job.py"
    script.write_text(source)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=directory, check=False)
    assert result.returncode != 0
    return result.stderr


@pytest.mark.parametrize(
    "name",
    ["pytest_failures", "pytest_collection", "npm_enoent", "npm_missing_script", "node_missing_module"],
)
def test_the_same_failure_in_another_checkout_has_the_same_signature(name):
    first, second = captured(f"{name}_a.txt"), captured(f"{name}_b.txt")
    assert first != second  # paths, line numbers, temp dirs, log names differ
    assert error_signature(first) == error_signature(second)


def test_different_failures_have_different_signatures():
    names = [
        "pytest_failures_a",
        "pytest_collection_a",
        "npm_enoent_a",
        "npm_missing_script_a",
        "node_missing_module_a",
    ]
    signatures = {error_signature(captured(f"{name}.txt")) for name in names}
    assert len(signatures) == len(names)


def test_python_tracebacks_from_different_places_and_lines_share_a_signature(tmp_path):
    first = python_failure(tmp_path / "one", "import json\nimport not_installed_pkg\n")
    second = python_failure(tmp_path / "deep" / "er" / "two", "\n\n\n\nimport not_installed_pkg\n")
    other = python_failure(tmp_path / "three", "value = None\nvalue.strip()\n")

    assert str(tmp_path / "one") in first
    assert error_signature(first) == error_signature(second)
    assert error_signature(first) != error_signature(other)


def test_normalisation_replaces_paths_numbers_hex_and_line_numbers(tmp_path):
    traceback = python_failure(
        tmp_path / "x",
        "class Widget: pass\nw = Widget()\nraise RuntimeError(f'bad widget {w!r} at 0xdeadbeef code 42')\n",
    )
    normalised = normalise_error(traceback)
    assert normalised == "RuntimeError: bad widget <__main__.Widget object at <hex>> at <hex> code <n>"


def test_pytest_output_keeps_the_assertion_lines_and_drops_timings():
    normalised = normalise_error(captured("pytest_failures_a.txt"))
    assert "E FileNotFoundError: [Errno <n>] No such file or directory: '<q>'" in normalised
    assert "E assert <n> == <n>" in normalised
    assert "0.43s" not in normalised and "pytest-of-root" not in normalised


def test_npm_output_keeps_the_error_code_and_drops_the_log_path():
    normalised = normalise_error(captured("npm_enoent_a.txt"))
    assert normalised.splitlines()[0] == "npm error code ENOENT"
    assert "_logs" not in normalised


def test_windows_paths_and_uuids_are_normalised():
    first = 'File "C:\\Users\\ci\\proj\\src\\app.py", line 10\nPermissionError: [WinError 5] Access is denied: C:\\Users\\ci\\proj\\build'
    second = (
        'File "D:\\a\\repo\\src\\app.py", line 99\nPermissionError: [WinError 5] Access is denied: D:\\a\\repo\\build'
    )
    assert error_signature(first) == error_signature(second)
    assert normalise_error("KeyError: 123e4567-e89b-12d3-a456-426614174000") == "KeyError: <uuid>"


@pytest.mark.parametrize(
    ("name", "error_type"),
    [
        ("python_modulenotfound_a.txt", "missing_python_dependency"),
        ("pytest_collection_a.txt", "missing_python_dependency"),
        ("node_missing_module_a.txt", "missing_node_dependency"),
        ("npm_enoent_a.txt", "file_not_found"),
        ("pytest_failures_a.txt", "file_not_found"),
    ],
)
def test_real_errors_are_classified(name, error_type):
    assert classify_error(captured(name)) == error_type


def test_an_empty_error_has_no_signature():
    assert error_signature("") == ""
    assert error_signature("   \n") == ""


def test_npm_missing_script_keeps_the_message_not_the_help_text():
    assert normalise_error(captured("npm_missing_script_a.txt")) == 'npm error Missing script: "<q>"'
