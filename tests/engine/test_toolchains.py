"""Toolchain detection from marker files, and the precedence of phase, project and detected commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from runs.engine.spec import CiSpec
from runs.engine.toolchains import JUNIT_PLACEHOLDER, detect_toolchain, resolve_test_plan


def make(root: Path, *names: str, content: str = "") -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


@pytest.mark.parametrize(
    ("files", "language", "manager"),
    [
        (["pyproject.toml", "poetry.lock"], "python", "poetry"),
        (["pyproject.toml", "uv.lock"], "python", "uv"),
        (["requirements.txt"], "python", "pip"),
        (["setup.py"], "python", "pip"),
        (["package.json"], "node", "npm"),
        (["package.json", "package-lock.json"], "node", "npm"),
        (["package.json", "yarn.lock"], "node", "yarn"),
        (["package.json", "pnpm-lock.yaml"], "node", "pnpm"),
        (["go.mod"], "go", "go"),
        (["Cargo.toml"], "rust", "cargo"),
        (["pom.xml"], "java", "maven"),
        (["build.gradle"], "java", "gradle"),
        (["build.gradle.kts", "gradlew"], "java", "gradle"),
    ],
)
def test_marker_files_name_the_toolchain_with_a_reason(tmp_path, files, language, manager):
    toolchain = detect_toolchain(make(tmp_path, *files))
    assert (toolchain.language, toolchain.manager) == (language, manager)
    assert 0 < toolchain.confidence <= 1 and toolchain.reason
    assert toolchain.test_command


def test_every_inferred_command_reports_junit_somewhere(tmp_path):
    for files in (["requirements.txt"], ["go.mod"], ["pom.xml"], ["package.json"], ["Cargo.toml"]):
        root = make(tmp_path / files[0], *files)
        toolchain = detect_toolchain(root)
        assert JUNIT_PLACEHOLDER in toolchain.test_command or toolchain.junit_glob


def test_a_lock_file_makes_detection_more_confident(tmp_path):
    loose = detect_toolchain(make(tmp_path / "a", "package.json"))
    locked = detect_toolchain(make(tmp_path / "b", "package.json", "package-lock.json"))
    assert locked.confidence > loose.confidence


def test_bare_test_files_are_detected_with_low_confidence(tmp_path):
    toolchain = detect_toolchain(make(tmp_path, "tests/test_thing.py"))
    assert toolchain.manager == "pip" and toolchain.confidence <= 0.5


def test_nothing_recognisable_detects_nothing(tmp_path):
    assert detect_toolchain(make(tmp_path, "README.md")) is None
    assert resolve_test_plan(tmp_path, CiSpec()).command == ""


def test_the_phase_command_beats_the_project_default_which_beats_detection(tmp_path):
    make(tmp_path, "requirements.txt")
    phase = resolve_test_plan(tmp_path, CiSpec(command="make check"), "tox -q")
    project = resolve_test_plan(tmp_path, CiSpec(), "tox -q")
    detected = resolve_test_plan(tmp_path, CiSpec(), "")
    assert (phase.command, phase.source) == ("make check", "phase")
    assert (project.command, project.source) == ("tox -q", "project")
    assert detected.source == "detected:pip" and "pytest" in detected.command


def test_a_pytest_command_without_junit_gets_it_added(tmp_path):
    plan = resolve_test_plan(tmp_path, CiSpec(command="python -m pytest -x"))
    assert plan.command == f"python -m pytest -x --junitxml={JUNIT_PLACEHOLDER}"
    kept = resolve_test_plan(tmp_path, CiSpec(command="pytest --junitxml=out.xml"))
    assert kept.command == "pytest --junitxml=out.xml"


def test_detection_is_done_in_the_working_directory(tmp_path):
    make(tmp_path, "backend/go.mod")
    plan = resolve_test_plan(tmp_path, CiSpec(working_directory="backend"))
    assert plan.toolchain.language == "go" and plan.working_directory == "backend"
