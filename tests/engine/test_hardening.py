"""Each failure-hardening pattern recognised in error text produced by the real tools, with its mitigation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runs.engine.apply import ApplyPolicy, governed_apply
from runs.engine.edits import WriteOp
from runs.engine.gitrepo import init_repository
from runs.engine.hardening import FailureInfo, find_mitigation

PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
QUIET_ENV = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}


def output_of(command: list[str], cwd: Path) -> str:
    completed = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=QUIET_ENV, check=False)
    return completed.stdout + completed.stderr


def test_a_missing_python_dependency_is_recognised_in_real_pytest_output(tmp_path):
    repo = tmp_path / "repo"
    init_repository(repo, files={"test_api.py": "import requests_that_do_not_exist\n\n\ndef test_x():\n    pass\n"})
    text = output_of(PYTEST, repo)
    mitigation = find_mitigation(FailureInfo(text=text, root=repo))
    assert mitigation.pattern_id == "missing_python_dependency"
    assert mitigation.actions == {"missing_module": "requests_that_do_not_exist"}
    assert "not installed" in mitigation.hint


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node")
def test_a_missing_node_dependency_is_recognised_in_real_node_output(tmp_path):
    text = output_of(["node", "-e", "require('left-pad-that-does-not-exist')"], tmp_path)
    mitigation = find_mitigation(FailureInfo(text=text, root=tmp_path))
    assert mitigation.pattern_id == "missing_node_dependency"
    assert mitigation.actions == {"missing_package": "left-pad-that-does-not-exist"}
    assert "package.json" in mitigation.hint


def test_a_test_path_missing_from_the_working_directory_is_a_wrong_working_directory(tmp_path):
    repo = tmp_path / "repo"
    init_repository(repo, files={"backend/tests/test_a.py": "def test_a():\n    pass\n"})
    text = output_of([*PYTEST, "tests/test_a.py"], repo)
    assert "file or directory not found" in text
    mitigation = find_mitigation(FailureInfo(text=text, root=repo))
    assert mitigation.pattern_id == "wrong_working_directory"
    assert "relative to the repository root" in mitigation.hint


def test_a_local_package_under_a_subdirectory_points_at_that_directory(tmp_path):
    repo = tmp_path / "repo"
    init_repository(
        repo,
        files={
            "backend/app/__init__.py": "VALUE = 1\n",
            "tests/test_app.py": "from app import VALUE\n\n\ndef test_value():\n    assert VALUE\n",
        },
    )
    text = output_of(PYTEST, repo)
    mitigation = find_mitigation(FailureInfo(text=text, root=repo))
    assert mitigation.pattern_id == "wrong_working_directory"
    assert mitigation.actions == {"ci_working_directory": "backend"}


def test_no_tests_collected_is_recognised_in_real_pytest_output(tmp_path):
    repo = tmp_path / "repo"
    init_repository(repo, files={"checks.py": "def check_something():\n    assert True\n"})
    text = output_of(PYTEST, repo)
    mitigation = find_mitigation(FailureInfo(text=text, root=repo))
    assert mitigation.pattern_id == "no_tests_collected"
    assert "test_*.py" in mitigation.hint


def test_a_scope_violation_from_governed_apply_names_the_allowed_paths(tmp_path):
    repo = tmp_path / "repo"
    init_repository(repo, files={"app/main.py": "x = 1\n"})
    result = governed_apply(
        repo,
        [WriteOp("app/main.py", "x = 2\n"), WriteOp("deploy/secrets.yaml", "a: 1\n")],
        policy=ApplyPolicy(scope_paths=("app/",)),
    )
    assert not result.ok
    info = FailureInfo(
        text="; ".join(v.reason for v in result.violations),
        root=repo,
        scope_paths=["app/"],
        violation_rules=[str(v.rule) for v in result.violations],
        violation_paths=[v.path for v in result.violations],
    )
    mitigation = find_mitigation(info)
    assert mitigation.pattern_id == "scope_mismatch"
    assert "deploy/secrets.yaml" in mitigation.hint and "app/" in mitigation.hint


def test_a_permission_error_from_running_a_script_without_its_executable_bit(tmp_path):
    script = tmp_path / "build.sh"
    script.write_text("echo built\n")
    script.chmod(0o644)
    text = output_of([sys.executable, "-c", "import subprocess; subprocess.run(['./build.sh'])"], tmp_path)
    assert "Permission denied" in text
    mitigation = find_mitigation(FailureInfo(text=text, root=tmp_path))
    assert mitigation.pattern_id == "permission_error"
    assert "'./build.sh'" in mitigation.hint and "interpreter" in mitigation.hint


def test_an_ordinary_assertion_failure_matches_no_pattern(tmp_path):
    repo = tmp_path / "repo"
    init_repository(repo, files={"test_math.py": "def test_math():\n    assert 1 + 1 == 3\n"})
    assert find_mitigation(FailureInfo(text=output_of(PYTEST, repo), root=repo)) is None


def test_a_dependency_the_project_declares_but_lacks_gets_its_install_command_for_the_next_attempt(tmp_path):
    repo = tmp_path / "repo"
    init_repository(
        repo,
        files={
            "requirements.txt": "Requests_That_Do-Not-Exist>=1.0\n",
            "test_api.py": "import requests_that_do_not_exist\n\n\ndef test_x():\n    pass\n",
        },
    )
    text = output_of(PYTEST, repo)
    mitigation = find_mitigation(FailureInfo(text=text, root=repo))
    assert mitigation.pattern_id == "missing_python_dependency"
    install = mitigation.ci_overrides()["install_command"]
    assert install.endswith("-m pip install -r requirements.txt")
    # Once the install command is in place it is not proposed again: the hint says what to do instead.
    again = find_mitigation(FailureInfo(text=text, root=repo, ci_install_command=install))
    assert again.ci_overrides() == {} and "Do not import it" in again.hint


def test_a_module_named_only_as_part_of_another_requirement_is_not_declared(tmp_path):
    repo = tmp_path / "repo"
    init_repository(repo, files={"requirements.txt": "django-yaml-helpers==1\n"})
    info = FailureInfo(text="ModuleNotFoundError: No module named 'yaml'", root=repo)
    assert find_mitigation(info).ci_overrides() == {}


def test_a_working_directory_already_in_place_is_not_proposed_again(tmp_path):
    repo = tmp_path / "repo"
    init_repository(repo, files={"backend/app/__init__.py": "", "tests/test_app.py": "from app import VALUE\n"})
    text = "E   ModuleNotFoundError: No module named 'app'"
    first = find_mitigation(FailureInfo(text=text, root=repo))
    assert first.ci_overrides() == {"working_directory": "backend"}
    again = find_mitigation(FailureInfo(text=text, root=repo, ci_working_directory="backend"))
    assert again is None or again.ci_overrides() == {}
