"""Deterministic failure hardening: known failure patterns recognised in real error text, each with a fix.

Runs before the Doctor: a recognised pattern gives the next attempt a precise hint (and, where the fix is
mechanical, a concrete action), and saves a Doctor call. Every pattern is a detector (regular expressions
over the failure text, plus the structured apply violations) and a mitigation.

Actions named ``ci_<field>`` change the phase's CI settings (``CiSpec.<field>``) from the next attempt on
(``ci_overrides``): tests run from the directory where the package is importable, or a dependency the project
declares but the environment lacks is installed before the tests. A module the project does not declare is
never installed: the hint tells the Builder not to use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runs.engine.toolchains import detect_toolchain

# A Doctor call costs roughly this many tokens (prompt with diff and history + answer); used for the
# counterfactual "Doctor tokens avoided" figure, reported separately from spend.
DOCTOR_TOKENS_ESTIMATE = 10_000


@dataclass
class FailureInfo:
    text: str  # CI tail, collection errors, apply errors: whatever the attempt failed with
    root: Path | None = None
    scope_paths: list[str] = field(default_factory=list)
    violation_rules: list[str] = field(default_factory=list)
    violation_paths: list[str] = field(default_factory=list)
    no_tests_collected: bool = False
    # The CI settings the failing attempt ran with: an override that is already in place is not proposed again.
    ci_working_directory: str = ""
    ci_install_command: str = ""


@dataclass(frozen=True)
class Mitigation:
    pattern_id: str
    hint: str
    detail: str
    # A mechanical change for the next attempt, e.g. {"ci_working_directory": "backend"}.
    actions: dict[str, str] = field(default_factory=dict)

    def ci_overrides(self) -> dict[str, str]:
        """The ``ci_*`` actions as CiSpec fields: {"working_directory": "backend"}."""
        return {key.removeprefix("ci_"): value for key, value in self.actions.items() if key.startswith("ci_")}


_PY_MISSING = re.compile(r"ModuleNotFoundError: No module named '([A-Za-z0-9_.]+)'")
_NODE_MISSING = re.compile(r"(?:Cannot find module|Can't resolve|Module not found: Error: Can't resolve) '([^']+)'")
_NO_FILE = re.compile(
    r"(?:ERROR: file or directory not found: (\S+)|can't open file '([^']+)'|"
    r"ENOENT: no such file or directory, \w+ '([^']+)'|No such file or directory: '([^']+)')"
)
_NO_TESTS = re.compile(r"(no tests ran|collected 0 items|No tests found|no test files)", re.IGNORECASE)
_PERMISSION = re.compile(
    r"(PermissionError: \[Errno 13\] Permission denied: '([^']+)'|EACCES[^\n]*'([^']+)'|"
    r"Permission denied)"
)
_SCOPE_RULES = {"out_of_scope", "protected_path", "test_file_protected"}


def _is_local_module(root: Path | None, module: str) -> Path | None:
    """Where the repository has this top-level module, if anywhere (then it is a path problem, not a dependency)."""
    if root is None:
        return None
    top = module.split(".")[0]
    for candidate in sorted(root.rglob(f"{top}")):
        if ".git" in candidate.parts:
            continue
        if (candidate.is_dir() and (candidate / "__init__.py").exists()) or candidate.with_suffix(".py").exists():
            return candidate
    for candidate in sorted(root.rglob(f"{top}.py")):
        if ".git" not in candidate.parts:
            return candidate
    return None


def detect_missing_python_dependency(info: FailureInfo) -> Mitigation | None:
    match = _PY_MISSING.search(info.text)
    if not match or _is_local_module(info.root, match.group(1)):
        return None
    module = match.group(1).split(".")[0]
    # The hint never names the command: it holds this machine's interpreter path, and prompts must not.
    install = _install_for_declared(info, module, _PY_MANIFESTS)
    if install:
        return Mitigation(
            "missing_python_dependency",
            f"The module '{module}' is declared by the project but was not installed in the test environment; "
            f"the next attempt installs the project's dependencies before the tests: keep using it.",
            match.group(0),
            {"missing_module": module, "ci_install_command": install},
        )
    return Mitigation(
        "missing_python_dependency",
        f"The module '{module}' is not installed in the test environment. Do not import it: use the standard "
        f"library or code already in the repository. If it is truly required, add it to the project's "
        f"dependency file and say so in the summary.",
        match.group(0),
        {"missing_module": module},
    )


_PY_MANIFESTS = ("requirements.txt", "pyproject.toml", "setup.cfg", "setup.py")
_NODE_MANIFESTS = ("package.json",)


def _declares(text: str, name: str) -> bool:
    """Whether a manifest names the package (``-``/``_`` and case folded; a whole word, not a substring)."""
    wanted = re.escape(name.lower().replace("_", "-")).replace("\\-", "[-_]")
    return re.search(rf"(?<![\w.-]){wanted}(?![\w-])", text.lower()) is not None


def _install_for_declared(info: FailureInfo, name: str, manifests: tuple[str, ...]) -> str:
    """The toolchain's install command when the project declares ``name`` and none ran yet; "" otherwise."""
    if info.root is None or info.ci_install_command:
        return ""
    directory = info.root / info.ci_working_directory if info.ci_working_directory else info.root
    declared = False
    for manifest in manifests:
        try:
            declared = declared or _declares((directory / manifest).read_text(encoding="utf-8", errors="replace"), name)
        except OSError:
            continue
    toolchain = detect_toolchain(directory) if declared else None
    return toolchain.install_command if toolchain else ""


def detect_missing_node_dependency(info: FailureInfo) -> Mitigation | None:
    match = _NODE_MISSING.search(info.text)
    if not match:
        return None
    module = match.group(1)
    install = "" if module.startswith((".", "/")) else _install_for_declared(info, module, _NODE_MANIFESTS)
    if install:
        return Mitigation(
            "missing_node_dependency",
            f"The package '{module}' is in package.json but was not installed; the next attempt installs the "
            f"project's dependencies before the tests: keep using it.",
            match.group(0),
            {"missing_package": module, "ci_install_command": install},
        )
    if module.startswith((".", "/")):
        return Mitigation(
            "missing_node_dependency",
            f"The relative import '{module}' does not resolve: check the file exists at that path relative to the "
            f"importing file (and its extension).",
            match.group(0),
        )
    return Mitigation(
        "missing_node_dependency",
        f"The package '{module}' is not installed. Add it to package.json dependencies (not only import it), "
        f"or implement without it.",
        match.group(0),
        {"missing_package": module},
    )


def detect_wrong_working_directory(info: FailureInfo) -> Mitigation | None:
    match = _NO_FILE.search(info.text)
    module = _PY_MISSING.search(info.text)
    if module and (local := _is_local_module(info.root, module.group(1))) is not None and info.root is not None:
        package_root = local.parent.relative_to(info.root).as_posix()
        if package_root not in ("", ".", info.ci_working_directory.strip("/")):
            return Mitigation(
                "wrong_working_directory",
                f"'{module.group(1)}' exists under '{package_root}/' but the tests ran from "
                f"'{info.ci_working_directory or '.'}', where it is not importable. From the next attempt on the "
                f"tests run from '{package_root}/': import it as '{module.group(1)}' and keep test paths relative "
                f"to that directory.",
                module.group(0),
                {"ci_working_directory": package_root},
            )
    if not match:
        return None
    missing = next(group for group in match.groups() if group)
    return Mitigation(
        "wrong_working_directory",
        f"'{missing}' was not found from the directory the command runs in (the repository root). Use paths "
        f"relative to the repository root, and do not assume a different current directory.",
        match.group(0),
    )


def detect_no_tests_collected(info: FailureInfo) -> Mitigation | None:
    if not info.no_tests_collected and not _NO_TESTS.search(info.text):
        return None
    return Mitigation(
        "no_tests_collected",
        "The test runner collected no tests. Test files must be named test_*.py (or *_test.py) under the "
        "test directory, test functions must start with test_, and test classes must start with Test and have "
        "no __init__.",
        "no tests collected",
    )


def detect_scope_mismatch(info: FailureInfo) -> Mitigation | None:
    rules = set(info.violation_rules) & _SCOPE_RULES
    if not rules and "outside the phase scope" not in info.text:
        return None
    allowed = ", ".join(info.scope_paths) or "(the deliverables only)"
    refused = ", ".join(info.violation_paths[:10]) or "(see the error)"
    return Mitigation(
        "scope_mismatch",
        f"Writes to {refused} were refused: they are outside the phase scope or protected. Only write to: "
        f"{allowed}. Achieve the goal within these paths.",
        ", ".join(sorted(rules)) or "outside the phase scope",
    )


def detect_permission_error(info: FailureInfo) -> Mitigation | None:
    match = _PERMISSION.search(info.text)
    if not match:
        return None
    path = match.group(2) or match.group(3) or ""
    return Mitigation(
        "permission_error",
        f"Permission denied{f' on {path!r}' if path else ''}. Only write inside the repository (use relative "
        f"paths or a temporary directory from tempfile/tmp_path in tests), never to system or home directories; "
        f"run scripts through their interpreter (python script.py) rather than relying on the executable bit.",
        match.group(0),
    )


# Order matters: the most specific explanation first (a local module is a path problem, not a dependency).
PATTERNS: list[tuple[str, Callable[[FailureInfo], Mitigation | None]]] = [
    ("scope_mismatch", detect_scope_mismatch),
    ("wrong_working_directory", detect_wrong_working_directory),
    ("missing_python_dependency", detect_missing_python_dependency),
    ("missing_node_dependency", detect_missing_node_dependency),
    ("permission_error", detect_permission_error),
    ("no_tests_collected", detect_no_tests_collected),
]


def find_mitigation(info: FailureInfo) -> Mitigation | None:
    for _name, detector in PATTERNS:
        found = detector(info)
        if found is not None:
            return found
    return None
