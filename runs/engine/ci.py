"""Run a project's tests safely and compare them with the baseline of the pre-attempt commit.

The test command runs as a subprocess in its own process group (so a timeout kills every child it
spawned), in an environment with secrets removed (no provider key or Autopack credential reaches the
project's tests), with its output in a log file of which only the tail is kept in memory. Per-test results
come from JUnit XML. The baseline is cached per (commit SHA, command, working directory).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from runs.engine.spec import CiSpec
from runs.engine.toolchains import JUNIT_PLACEHOLDER, CiPlan

TAIL_CHARS = 6000
SUITE_ID = "(suite)"  # the one "test" of a run whose tool wrote no JUnit XML
PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"
_SECRET_EXACT = {"ANTHROPIC_API_KEY", "DATABASE_URL", "SECRET_KEY", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
_SECRET_PATTERN = re.compile(r"(_KEY$|_TOKEN$|SECRET|PASSWORD|PASSWD|CREDENTIAL|^AUTOPACK_|^PYTEST_)", re.IGNORECASE)
_COLLECTION_MARKERS = (
    "ERROR collecting",
    "ImportError while importing test module",
    "error during collection",
    "errors during collection",
)
_NO_TESTS_MARKERS = ("no tests ran", "collected 0 items", "No tests found", "no test files")


def scrubbed_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the project's commands see: ours minus anything that looks like a credential."""
    source = dict(os.environ if base is None else base)
    env = {
        name: value for name, value in source.items() if name not in _SECRET_EXACT and not _SECRET_PATTERN.search(name)
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep __pycache__ out of the worktree (and out of phase commits)
    env.setdefault("CI", "true")
    return env


@dataclass
class CommandResult:
    exit_code: int | None
    timed_out: bool
    duration_ms: int
    tail: str


def run_command(*, command: str, cwd: Path, timeout: float, log_path: Path, env: dict[str, str]) -> CommandResult:
    """Run ``command`` through the shell in a new session; on timeout kill the whole process group."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            shell=True,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process)
    duration_ms = int((time.monotonic() - started) * 1000)
    tail = _read_tail(log_path)
    if timed_out:
        tail += f"\n[autopack: killed after {timeout:g} s wall-clock timeout]"
    return CommandResult(None if timed_out else process.returncode, timed_out, duration_ms, tail)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _read_tail(path: Path, limit: int = TAIL_CHARS) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - limit * 2))
        return handle.read().decode("utf-8", errors="replace")[-limit:]


@dataclass
class CiRun:
    command: str
    commit: str = ""
    exit_code: int | None = None
    timed_out: bool = False
    duration_ms: int = 0
    results: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    collection_errors: list[str] = field(default_factory=list)
    no_tests_collected: bool = False
    junit_found: bool = False
    log_path: str = ""
    tail: str = ""
    coverage_percent: float | None = None

    def failing(self) -> set[str]:
        return {test for test, status in self.results.items() if status in (FAILED, ERROR)}

    def passing(self) -> set[str]:
        return {test for test, status in self.results.items() if status == PASSED}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CiRun:
        return cls(**{key: value for key, value in data.items() if key in cls.__dataclass_fields__})

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for status in self.results.values():
            counts[status] = counts.get(status, 0) + 1
        return {
            "command": self.command,
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "duration_ms": self.duration_ms,
            "counts": counts,
            "collection_errors": self.collection_errors[:5],
            "no_tests_collected": self.no_tests_collected,
            "junit_found": self.junit_found,
            "log_path": self.log_path,
            "coverage_percent": self.coverage_percent,
        }


def parse_junit(paths: list[Path]) -> tuple[dict[str, str], dict[str, str], list[str], bool]:
    """Per-test statuses and messages, collection errors, and whether any file parsed."""
    results: dict[str, str] = {}
    messages: dict[str, str] = {}
    collection_errors: list[str] = []
    parsed_any = False
    for path in paths:
        try:
            tree = ElementTree.parse(path)
        except (ElementTree.ParseError, OSError):
            continue
        parsed_any = True
        for case in tree.iter("testcase"):
            _read_case(case, results, messages, collection_errors)
    return results, messages, collection_errors, parsed_any


def _read_case(case: ElementTree.Element, results: dict, messages: dict, collection_errors: list) -> None:
    classname, name = case.get("classname", ""), case.get("name", "")
    test_id = f"{classname}::{name}" if classname else name
    status, message = PASSED, ""
    for child in case:
        if child.tag in ("failure", "error"):
            status = FAILED if child.tag == "failure" else ERROR
            message = (child.get("message") or "") + "\n" + (child.text or "")
            break
        if child.tag == "skipped":
            status = SKIPPED
    # pytest reports a module that failed to import as a nameless-class "test" with this message.
    if status == ERROR and not classname and "collection failure" in message:
        collection_errors.append(f"{name}: {_last_error_line(message)}")
        return
    results[test_id] = status
    if message:
        messages[test_id] = message.strip()[-1500:]


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E ") or "Error" in line]
    return (errors or lines or [""])[-1][:500]


def normalise_test_id(test_id: str) -> str:
    """``tests/test_x.py::TestA::test_b`` (a pytest node id) → the JUnit id ``tests.test_x.TestA::test_b``."""
    if ".py::" not in test_id:
        return test_id
    path, _, rest = test_id.partition(".py::")
    parts = rest.split("::")
    module = path.replace("/", ".")
    return f"{'.'.join([module, *parts[:-1]])}::{parts[-1]}"


def run_tests(*, root: Path, plan: CiPlan, ci: CiSpec, artifacts_dir: Path, label: str, commit: str = "") -> CiRun:
    cwd = root / plan.working_directory if plan.working_directory else root
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    junit_file = artifacts_dir / f"{label}.junit.xml"
    junit_file.unlink(missing_ok=True)
    command = plan.command.replace(JUNIT_PLACEHOLDER, str(junit_file))
    env = scrubbed_environment()
    env["JEST_JUNIT_OUTPUT_FILE"] = env["MOCHA_FILE"] = str(junit_file)
    if plan.install_command:
        installed = run_command(
            command=plan.install_command,
            cwd=cwd,
            timeout=ci.timeout_seconds,
            log_path=artifacts_dir / f"{label}.install.log",
            env=env,
        )
        if installed.exit_code != 0:
            return CiRun(
                command=command,
                commit=commit,
                exit_code=installed.exit_code,
                timed_out=installed.timed_out,
                duration_ms=installed.duration_ms,
                tail="install failed:\n" + installed.tail,
                collection_errors=["install command failed"],
                log_path=str(artifacts_dir),
            )
    outcome = run_command(
        command=command, cwd=cwd, timeout=ci.timeout_seconds, log_path=artifacts_dir / f"{label}.log", env=env
    )
    run = CiRun(
        command=command,
        commit=commit,
        exit_code=outcome.exit_code,
        timed_out=outcome.timed_out,
        duration_ms=outcome.duration_ms,
        log_path=str(artifacts_dir / f"{label}.log"),
        tail=outcome.tail,
    )
    _fill_results(run, cwd, plan, junit_file)
    if ci.coverage:
        run.coverage_percent = read_coverage(cwd / ci.coverage_json)
    return run


def _fill_results(run: CiRun, cwd: Path, plan: CiPlan, junit_file: Path) -> None:
    paths = [junit_file] if junit_file.exists() else []
    if not paths and plan.junit_glob:
        paths = [Path(found) for found in sorted(glob.glob(str(cwd / plan.junit_glob)))]
    results, messages, collection_errors, parsed = parse_junit(paths)
    run.results, run.messages, run.junit_found = results, messages, parsed
    run.collection_errors = collection_errors or _collection_errors_from_log(run.tail)
    if run.timed_out:
        return
    run.no_tests_collected = (
        not results
        and not run.collection_errors
        and (run.exit_code == 5 or any(marker in run.tail for marker in _NO_TESTS_MARKERS) or parsed)
    )
    if not parsed and not run.collection_errors and not run.no_tests_collected:
        # No per-test identities from this tool: the whole suite is one test.
        run.results = {SUITE_ID: PASSED if run.exit_code == 0 else FAILED}
        if run.exit_code != 0:
            run.messages = {SUITE_ID: run.tail[-1500:]}


def _collection_errors_from_log(tail: str) -> list[str]:
    found = [line.strip() for line in tail.splitlines() if any(marker in line for marker in _COLLECTION_MARKERS)]
    return found[:20]


def read_coverage(path: Path) -> float | None:
    """Total line coverage from a coverage.py JSON report (removed after reading: it is an artefact)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        path.unlink()
        return float(data["totals"]["percent_covered"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class BaselineCache:
    """Baseline runs on disk, keyed by commit SHA, command and working directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, commit: str, plan: CiPlan) -> Path:
        key = hashlib.sha256(f"{commit}\0{plan.command}\0{plan.working_directory}".encode()).hexdigest()[:32]
        return self.directory / f"{key}.json"

    def get(self, commit: str, plan: CiPlan) -> CiRun | None:
        try:
            return CiRun.from_dict(json.loads(self._path(commit, plan).read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def put(self, commit: str, plan: CiPlan, run: CiRun) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self._path(commit, plan)
        temporary = target.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(run.to_dict()), encoding="utf-8")
        os.replace(temporary, target)


def severity_for(count: int) -> str:
    if count <= 0:
        return "none"
    if count == 1:
        return "low"
    if count <= 4:
        return "medium"
    if count <= 9:
        return "high"
    return "critical"


@dataclass
class CiDelta:
    fixed: list[str] = field(default_factory=list)
    still_failing: list[str] = field(default_factory=list)
    new_failures: list[str] = field(default_factory=list)
    flaky: list[str] = field(default_factory=list)
    severity: str = "none"
    collection_errors: list[str] = field(default_factory=list)
    preexisting_collection_errors: list[str] = field(default_factory=list)
    no_tests_collected: bool = False
    timed_out: bool = False
    coverage_before: float | None = None
    coverage_after: float | None = None
    coverage_dropped: bool = False
    messages: dict[str, str] = field(default_factory=dict)
    passed: int = 0
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def feedback(self, limit: int = 3000) -> str:
        """What the Builder is told on the next attempt."""
        parts: list[str] = []
        if self.collection_errors:
            parts.append("Test collection/import errors caused by the change:\n" + "\n".join(self.collection_errors))
        if self.timed_out:
            parts.append("The test command timed out.")
        if self.no_tests_collected:
            parts.append("No tests were collected.")
        for test in self.new_failures:
            parts.append(f"New failing test {test}:\n{self.messages.get(test, '')[-800:]}")
        if self.coverage_dropped:
            parts.append(f"Coverage dropped from {self.coverage_before:.1f}% to {self.coverage_after:.1f}%.")
        return "\n\n".join(parts)[:limit]


def compute_delta(baseline: CiRun, after: CiRun, rerun: CiRun | None, ci: CiSpec) -> CiDelta:
    """Classify every test against the baseline; a new failure that passes on the re-run is flaky."""
    before_failing = baseline.failing()
    after_failing = after.failing()
    candidates = sorted(after_failing - before_failing)
    flaky = sorted(test for test in candidates if rerun is not None and rerun.results.get(test) == PASSED)
    # A module that already failed to import before the change is reported, not blamed on the change.
    known_errors = {_error_key(error) for error in baseline.collection_errors}
    delta = CiDelta(
        fixed=sorted(test for test in before_failing if after.results.get(test) == PASSED),
        still_failing=sorted(before_failing & after_failing),
        new_failures=[test for test in candidates if test not in flaky],
        flaky=flaky,
        collection_errors=[error for error in after.collection_errors if _error_key(error) not in known_errors],
        preexisting_collection_errors=[error for error in after.collection_errors if _error_key(error) in known_errors],
        no_tests_collected=after.no_tests_collected and not baseline.no_tests_collected,
        timed_out=after.timed_out,
        coverage_before=baseline.coverage_percent,
        coverage_after=after.coverage_percent,
        messages={test: after.messages.get(test, "") for test in candidates},
        passed=len(after.passing()),
    )
    delta.severity = severity_for(len(delta.new_failures))
    if delta.coverage_before is not None and delta.coverage_after is not None:
        delta.coverage_dropped = delta.coverage_before - delta.coverage_after > ci.coverage_drop_threshold
    return delta


def _error_key(error: str) -> str:
    return error.split(":", 1)[0].strip()


def needs_rerun(baseline: CiRun, after: CiRun) -> bool:
    return bool(after.failing() - baseline.failing())


def pytest_node_id(test_id: str, cwd: Path) -> str | None:
    """The pytest node id of a JUnit id (``tests.test_x.TestA::test_b`` → ``tests/test_x.py::TestA::test_b``).

    The dotted class name is split where a real file exists under ``cwd``; None when no file matches.
    """
    dotted, separator, name = test_id.rpartition("::")
    if not separator or not dotted or test_id == SUITE_ID:
        return None
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        path = "/".join(parts[:cut]) + ".py"
        if (cwd / path).is_file():
            return "::".join([path, *parts[cut:], name])
    return None


def rerun_plan(plan: CiPlan, tests: list[str], root: Path) -> CiPlan:
    """The plan that re-runs only ``tests`` (new failures): pytest gets their node ids; any other tool, or a
    test whose file cannot be found, re-runs the whole command. Nothing is installed again."""
    cwd = root / plan.working_directory if plan.working_directory else root
    node_ids = [pytest_node_id(test, cwd) for test in tests]
    if "pytest" not in plan.command or not node_ids or any(node is None for node in node_ids):
        return replace(plan, install_command="")
    selected = " ".join(shlex.quote(node) for node in node_ids if node)
    return replace(plan, command=f"{plan.command} {selected}", install_command="")
