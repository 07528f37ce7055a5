"""Which language and package manager a repository uses, and how to install and test it.

Detection reads marker files only (never runs anything) and says how sure it is and why. The phase's ``ci``
spec and the project's default test command override it (``resolve_test_plan``). Every inferred command writes
JUnit XML to ``{junit}`` (a path outside the worktree the CI runner fills in), so every toolchain reports
per-test identities.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from runs.engine.spec import CiSpec

JUNIT_PLACEHOLDER = "{junit}"


@dataclass(frozen=True)
class Toolchain:
    language: str
    manager: str
    confidence: float
    reason: str
    install_command: str
    test_command: str
    # Where JUnit XML lands when the tool cannot be told a path: a glob relative to the working directory.
    junit_glob: str = ""


@dataclass(frozen=True)
class CiPlan:
    command: str
    install_command: str
    working_directory: str
    junit_glob: str
    source: str  # "phase", "project" or "detected:<manager>"
    toolchain: Toolchain | None


def _python() -> str:
    return shlex.quote(sys.executable)


def _pytest(prefix: str) -> str:
    return f"{prefix} -q -p no:cacheprovider --junitxml={JUNIT_PLACEHOLDER}"


def _has(root: Path, *names: str) -> bool:
    return any((root / name).exists() for name in names)


def _read(root: Path, name: str) -> str:
    try:
        return (root / name).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _python_toolchain(root: Path) -> Toolchain | None:
    pyproject = _read(root, "pyproject.toml")
    if "[tool.poetry]" in pyproject or _has(root, "poetry.lock"):
        return Toolchain(
            "python",
            "poetry",
            0.9,
            "poetry.lock or [tool.poetry] in pyproject.toml",
            "poetry install --no-interaction",
            _pytest("poetry run pytest"),
        )
    if _has(root, "uv.lock") or "[tool.uv]" in pyproject:
        return Toolchain(
            "python", "uv", 0.9, "uv.lock or [tool.uv] in pyproject.toml", "uv sync", _pytest("uv run pytest")
        )
    markers = [
        name
        for name in (
            "pyproject.toml",
            "setup.py",
            "setup.cfg",
            "requirements.txt",
            "pytest.ini",
            "tox.ini",
            "conftest.py",
        )
        if _has(root, name)
    ]
    if markers:
        install = f"{_python()} -m pip install -r requirements.txt" if "requirements.txt" in markers else ""
        confidence = 0.8 if {"pytest.ini", "conftest.py"} & set(markers) or "pytest" in pyproject else 0.7
        return Toolchain(
            "python", "pip", confidence, f"found {', '.join(markers)}", install, _pytest(f"{_python()} -m pytest")
        )
    if any(root.glob("test_*.py")) or any(root.glob("tests/test_*.py")):
        return Toolchain(
            "python", "pip", 0.5, "test_*.py files without packaging metadata", "", _pytest(f"{_python()} -m pytest")
        )
    return None


def _node_toolchain(root: Path) -> Toolchain | None:
    if not _has(root, "package.json"):
        return None
    # jest-junit and mocha-junit-reporter both honour these variables; the runner exports them.
    if _has(root, "pnpm-lock.yaml"):
        return Toolchain(
            "node",
            "pnpm",
            0.9,
            "package.json and pnpm-lock.yaml",
            "pnpm install --frozen-lockfile",
            "pnpm test",
            "junit.xml",
        )
    if _has(root, "yarn.lock"):
        return Toolchain(
            "node",
            "yarn",
            0.9,
            "package.json and yarn.lock",
            "yarn install --frozen-lockfile",
            "yarn test",
            "junit.xml",
        )
    install = "npm ci" if _has(root, "package-lock.json") else "npm install"
    confidence = 0.85 if _has(root, "package-lock.json") else 0.7
    return Toolchain("node", "npm", confidence, "package.json", install, "npm test", "junit.xml")


def _other_toolchain(root: Path) -> Toolchain | None:
    if _has(root, "go.mod"):
        return Toolchain(
            "go", "go", 0.95, "go.mod", "go mod download", f"gotestsum --junitfile {JUNIT_PLACEHOLDER} -- ./..."
        )
    if _has(root, "Cargo.toml"):
        return Toolchain(
            "rust",
            "cargo",
            0.95,
            "Cargo.toml",
            "cargo fetch",
            "cargo nextest run --profile ci",
            "target/nextest/ci/junit.xml",
        )
    if _has(root, "pom.xml"):
        return Toolchain(
            "java",
            "maven",
            0.95,
            "pom.xml",
            "mvn -q -DskipTests install",
            "mvn -q test",
            "target/surefire-reports/*.xml",
        )
    if _has(root, "build.gradle", "build.gradle.kts"):
        wrapper = "./gradlew" if _has(root, "gradlew") else "gradle"
        return Toolchain("java", "gradle", 0.9, "build.gradle", "", f"{wrapper} test", "build/test-results/test/*.xml")
    return None


def detect_toolchain(root: Path) -> Toolchain | None:
    """The most specific toolchain whose markers are present, or None."""
    for detector in (_other_toolchain, _node_toolchain, _python_toolchain):
        found = detector(root)
        if found is not None:
            return found
    return None


def _with_junit(command: str) -> str:
    """A pytest command we did not write still has to report per-test results."""
    if "pytest" in command and "--junitxml" not in command and "--junit-xml" not in command:
        return f"{command} --junitxml={JUNIT_PLACEHOLDER}"
    return command


def resolve_test_plan(root: Path, ci: CiSpec, default_test_command: str = "") -> CiPlan:
    """Phase spec first, then the project's default command, then detection."""
    directory = root / ci.working_directory if ci.working_directory else root
    toolchain = detect_toolchain(directory)
    glob = ci.junit_path or (toolchain.junit_glob if toolchain else "")
    install = ci.install_command
    if ci.command:
        return CiPlan(_with_junit(ci.command), install, ci.working_directory, glob, "phase", toolchain)
    if default_test_command:
        return CiPlan(_with_junit(default_test_command), install, ci.working_directory, glob, "project", toolchain)
    if toolchain is None:
        return CiPlan("", install, ci.working_directory, glob, "none", None)
    # The inferred install command is reported, never run on its own: installing is the operator's call.
    return CiPlan(
        toolchain.test_command, install, ci.working_directory, glob, f"detected:{toolchain.manager}", toolchain
    )
