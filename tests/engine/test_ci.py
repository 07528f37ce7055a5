"""The CI runner on real subprocesses: process groups, scrubbed environment, JUnit results, baseline delta."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from runs.engine.ci import (
    BaselineCache,
    CiRun,
    compute_delta,
    needs_rerun,
    pytest_node_id,
    rerun_plan,
    run_tests,
    scrubbed_environment,
    severity_for,
)
from runs.engine.gitrepo import init_repository
from runs.engine.spec import CiSpec
from runs.engine.toolchains import CiPlan, resolve_test_plan

PYTEST = f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {sys.executable} -m pytest -q -p no:cacheprovider"


def plan_for(command: str, junit_glob: str = "") -> CiPlan:
    return CiPlan(
        command=command, install_command="", working_directory="", junit_glob=junit_glob, source="phase", toolchain=None
    )


def pytest_plan(root: Path) -> CiPlan:
    return resolve_test_plan(root, CiSpec(command=PYTEST))


def flaky_test(counter: Path) -> str:
    # Passes on the 1st, 3rd, ... run and fails on the 2nd, 4th, ...: the counter lives outside the repository.
    lines = [
        "import pathlib",
        f"COUNTER = pathlib.Path({str(counter)!r})",
        "def test_sometimes():",
        "    runs = int(COUNTER.read_text()) if COUNTER.exists() else 0",
        "    COUNTER.write_text(str(runs + 1))",
        "    assert runs % 2 == 0",
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def baseline_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    init_repository(
        repo,
        files={
            "pkg/__init__.py": "def double(x):\n    return 2 * x\n\n\ndef half(x):\n    return x / 2\n",
            "tests/__init__.py": "",
            "tests/test_pkg.py": (
                "from pkg import double, half\n\n\ndef test_double():\n    assert double(2) == 4\n\n\n"
                "def test_half():\n    assert half(4) == 2\n\n\ndef test_known_bug_one():\n    assert double(0.1) == 0.3\n\n\n"
                "def test_known_bug_two():\n    assert half(1) == 0\n"
            ),
            "tests/test_flaky.py": flaky_test(tmp_path / "flaky-counter"),
        },
    )
    return repo


def test_a_regression_is_classified_exactly_against_failing_and_flaky_baseline_tests(baseline_repo, tmp_path):
    plan, ci = pytest_plan(baseline_repo), CiSpec(command=PYTEST)
    baseline = run_tests(root=baseline_repo, plan=plan, ci=ci, artifacts_dir=tmp_path / "a", label="baseline")
    assert baseline.failing() == {"tests.test_pkg::test_known_bug_one", "tests.test_pkg::test_known_bug_two"}
    init = baseline_repo / "pkg/__init__.py"
    init.write_text(init.read_text().replace("return 2 * x", "return 3 * x"))  # the regression
    after = run_tests(root=baseline_repo, plan=plan, ci=ci, artifacts_dir=tmp_path / "a", label="after")
    assert needs_rerun(baseline, after)
    new = sorted(after.failing() - baseline.failing())
    assert new == ["tests.test_flaky::test_sometimes", "tests.test_pkg::test_double"]
    again = rerun_plan(plan, new, baseline_repo)
    assert again.command.endswith(" tests/test_flaky.py::test_sometimes tests/test_pkg.py::test_double")
    rerun = run_tests(root=baseline_repo, plan=again, ci=ci, artifacts_dir=tmp_path / "a", label="rerun")
    assert sorted(rerun.results) == new  # only the new failures ran again, not the whole suite
    delta = compute_delta(baseline, after, rerun, ci)
    assert delta.still_failing == ["tests.test_pkg::test_known_bug_one", "tests.test_pkg::test_known_bug_two"]
    assert delta.flaky == ["tests.test_flaky::test_sometimes"]
    assert delta.new_failures == ["tests.test_pkg::test_double"]
    assert delta.fixed == []
    assert delta.severity == "low"
    assert "assert 4 == 4" not in delta.feedback() and "test_double" in delta.feedback()


def test_run_ci_prints_the_delta_against_a_baseline_ref_as_json(baseline_repo, capsys):
    from django.core.management import call_command

    init = baseline_repo / "pkg/__init__.py"
    init.write_text(init.read_text().replace("return x / 2", "return x / 3"))
    call_command("run_ci", workspace=str(baseline_repo), command=PYTEST, baseline_ref="HEAD")
    result = json.loads(capsys.readouterr().out)
    assert result["delta"]["new_failures"] == ["tests.test_pkg::test_half"]
    assert result["delta"]["still_failing"] == [
        "tests.test_pkg::test_known_bug_one",
        "tests.test_pkg::test_known_bug_two",
    ]
    assert result["baseline"]["ref"] == "HEAD"


def test_a_fixed_test_is_reported_as_fixed(tmp_path):
    repo = tmp_path / "repo"
    init_repository(repo, files={"test_x.py": "def test_x():\n    assert 1 == 2\n"})
    plan, ci = pytest_plan(repo), CiSpec(command=PYTEST)
    baseline = run_tests(root=repo, plan=plan, ci=ci, artifacts_dir=tmp_path / "a", label="baseline")
    (repo / "test_x.py").write_text("def test_x():\n    assert 1 == 1\n")
    after = run_tests(root=repo, plan=plan, ci=ci, artifacts_dir=tmp_path / "a", label="after")
    delta = compute_delta(baseline, after, None, ci)
    assert delta.fixed == ["test_x::test_x"] and delta.severity == "none"


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    command = f"sleep 60 & echo $! > {pid_file}; sleep 60"
    started = time.monotonic()
    run = run_tests(
        root=tmp_path, plan=plan_for(command), ci=CiSpec(timeout_seconds=1), artifacts_dir=tmp_path / "a", label="slow"
    )
    assert time.monotonic() - started < 30
    assert run.timed_out and run.exit_code is None
    assert "wall-clock timeout" in run.tail
    child = int(pid_file.read_text())
    for _ in range(100):  # the kill is asynchronous; a killed child is a zombie until init reaps it
        if not alive(child):
            break
        time.sleep(0.02)
    assert not alive(child)


def alive(pid: int) -> bool:
    """Running or sleeping: neither gone nor a zombie (state Z in /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_secrets_never_reach_the_project_tests(tmp_path, monkeypatch):
    for name in (
        "ANTHROPIC_API_KEY",
        "AUTOPACK_EXECUTOR_TOKEN",
        "DATABASE_URL",
        "SECRET_KEY",
        "GITHUB_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "PGPASSWORD",
        "STRIPE_KEY",
    ):
        monkeypatch.setenv(name, "s3cret")
    monkeypatch.setenv("HARMLESS_SETTING", "kept")
    dump = tmp_path / "env.txt"
    run_tests(root=tmp_path, plan=plan_for(f"env > {dump}"), ci=CiSpec(), artifacts_dir=tmp_path / "a", label="env")
    seen = dump.read_text()
    assert "s3cret" not in seen
    assert "HARMLESS_SETTING=kept" in seen and "PATH=" in seen
    assert "ANTHROPIC_API_KEY" not in scrubbed_environment({"ANTHROPIC_API_KEY": "x", "HOME": "/h"})


def test_output_goes_to_a_log_file_and_only_the_tail_is_kept(tmp_path):
    command = f"{sys.executable} -c \"print('first line'); print('x' * 20000); print('last line')\""
    run = run_tests(root=tmp_path, plan=plan_for(command), ci=CiSpec(), artifacts_dir=tmp_path / "a", label="big")
    assert "first line" in Path(run.log_path).read_text()
    assert "first line" not in run.tail and run.tail.rstrip().endswith("last line")
    assert run.results == {"(suite)": "passed"}  # no JUnit XML: the suite is one test


def test_an_import_error_in_a_test_module_is_a_collection_error(tmp_path):
    repo = tmp_path / "repo"
    init_repository(
        repo,
        files={
            "test_ok.py": "def test_ok():\n    pass\n",
            "test_broken.py": "import not_installed_anywhere\n\ndef test_x():\n    pass\n",
        },
    )
    run = run_tests(root=repo, plan=pytest_plan(repo), ci=CiSpec(), artifacts_dir=tmp_path / "a", label="after")
    assert run.collection_errors and "No module named 'not_installed_anywhere'" in run.collection_errors[0]
    baseline = CiRun(command="", results={"test_ok::test_ok": "passed"})
    assert compute_delta(baseline, run, None, CiSpec()).collection_errors == run.collection_errors


def test_no_tests_collected_is_detected(tmp_path):
    repo = tmp_path / "repo"
    init_repository(repo, files={"README.md": "nothing to test\n"})
    run = run_tests(root=repo, plan=pytest_plan(repo), ci=CiSpec(), artifacts_dir=tmp_path / "a", label="after")
    assert run.no_tests_collected and run.exit_code == 5


def test_junit_reports_of_other_toolchains_are_read_from_their_glob(tmp_path):
    report = (
        '<testsuite name="CalcTest" tests="2"><testcase classname="com.example.CalcTest" name="adds"/>'
        '<testcase classname="com.example.CalcTest" name="divides"><failure message="expected 2">'
        "boom</failure></testcase></testsuite>"
    )
    command = f"mkdir -p target/surefire-reports && printf '%s' '{report}' > target/surefire-reports/TEST-Calc.xml"
    run = run_tests(
        root=tmp_path,
        plan=plan_for(command, "target/surefire-reports/*.xml"),
        ci=CiSpec(),
        artifacts_dir=tmp_path / "a",
        label="maven",
    )
    assert run.results == {"com.example.CalcTest::adds": "passed", "com.example.CalcTest::divides": "failed"}


def test_coverage_drop_beyond_the_threshold_is_flagged(tmp_path):
    ci = CiSpec(coverage=True, coverage_drop_threshold=2.0)

    def coverage_command(percent: float) -> str:
        payload = json.dumps({"totals": {"percent_covered": percent}})
        return f"printf '%s' '{payload}' > coverage.json"

    before = run_tests(
        root=tmp_path, plan=plan_for(coverage_command(91.0)), ci=ci, artifacts_dir=tmp_path / "a", label="b"
    )
    after = run_tests(
        root=tmp_path, plan=plan_for(coverage_command(85.5)), ci=ci, artifacts_dir=tmp_path / "a", label="c"
    )
    assert (before.coverage_percent, after.coverage_percent) == (91.0, 85.5)
    assert not (tmp_path / "coverage.json").exists()  # an artefact, never committed
    assert compute_delta(before, after, None, ci).coverage_dropped
    small = run_tests(
        root=tmp_path, plan=plan_for(coverage_command(90.0)), ci=ci, artifacts_dir=tmp_path / "a", label="d"
    )
    assert not compute_delta(before, small, None, ci).coverage_dropped


def test_the_baseline_is_cached_per_commit_and_command(tmp_path):
    cache = BaselineCache(tmp_path / "cache")
    plan = plan_for("true")
    run = CiRun(command="true", commit="abc", results={"t::a": "failed"})
    assert cache.get("abc", plan) is None
    cache.put("abc", plan, run)
    assert cache.get("abc", plan).results == {"t::a": "failed"}
    assert cache.get("abd", plan) is None and cache.get("abc", plan_for("false")) is None


@pytest.mark.parametrize(
    ("count", "severity"),
    [
        (0, "none"),
        (1, "low"),
        (2, "medium"),
        (4, "medium"),
        (5, "high"),
        (9, "high"),
        (10, "critical"),
        (40, "critical"),
    ],
)
def test_severity_grows_with_the_number_of_persistent_new_failures(count, severity):
    assert severity_for(count) == severity


def test_junit_ids_map_back_to_pytest_node_ids_through_the_files_that_exist(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests/test_x.py").write_text("")
    assert pytest_node_id("tests.test_x::test_a[1-2]", tmp_path) == "tests/test_x.py::test_a[1-2]"
    assert pytest_node_id("tests.test_x.TestA::test_b", tmp_path) == "tests/test_x.py::TestA::test_b"
    assert pytest_node_id("tests.test_gone::test_a", tmp_path) is None
    assert pytest_node_id("(suite)", tmp_path) is None


def test_other_toolchains_and_unmappable_tests_re_run_the_whole_command(tmp_path):
    (tmp_path / "test_x.py").write_text("")
    npm = plan_for("npm test", junit_glob="junit.xml")
    assert rerun_plan(npm, ["suite::test_a"], tmp_path).command == "npm test"
    pytest = CiPlan(f"{PYTEST} --junitxml={{junit}}", "pip install -r r.txt", "", "", "phase", None)
    assert rerun_plan(pytest, ["test_gone::test_a"], tmp_path).command == pytest.command
    only = rerun_plan(pytest, ["test_x::test_a"], tmp_path)
    assert only.command == f"{pytest.command} test_x.py::test_a" and only.install_command == ""
