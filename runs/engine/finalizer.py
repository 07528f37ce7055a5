"""The single completion authority: a phase completes only when every gate passes.

Gates (DESIGN.md step 11, in order): the answer parsed and applied, the change is not a no-op (unless the
phase allows it), deliverables exist, no collection/import errors caused by the change, no new persistent
test failures, required tests pass, coverage did not drop (strict phases), and the Auditor approved. The
first failing gate names the failure; the feedback joins all of them so the next attempt sees everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runs.engine.ci import PASSED, CiDelta, CiRun, normalise_test_id
from runs.engine.doctor import Failure
from runs.engine.prompts import AuditVerdict


@dataclass
class Evidence:
    parse_error: str = ""
    operations: int = 0
    truncated: bool = False
    apply_error: str = ""
    apply_rules: list[str] = field(default_factory=list)
    changed_paths: list[str] = field(default_factory=list)
    allow_noop: bool = False
    missing_deliverables: list[str] = field(default_factory=list)
    delta: CiDelta | None = None
    after: CiRun | None = None
    required_tests: list[str] = field(default_factory=list)
    strict: bool = False
    verdict: AuditVerdict | None = None


@dataclass
class FinalVerdict:
    complete: bool
    gates: dict[str, str]
    failures: list[Failure]

    @property
    def primary(self) -> Failure | None:
        return self.failures[0] if self.failures else None

    def feedback(self, limit: int = 4000) -> str:
        return "\n\n".join(failure.feedback for failure in self.failures)[:limit]

    def as_dict(self) -> dict[str, Any]:
        return {
            "complete": self.complete,
            "gates": self.gates,
            "failures": [{"category": f.category, "fingerprint": f.fingerprint} for f in self.failures],
        }


def missing_deliverables(root: Path, deliverables: list[str]) -> list[str]:
    missing = []
    for path in deliverables:
        target = root / path.rstrip("/")
        if path.endswith("/"):
            if not target.is_dir() or not any(item.is_file() for item in target.rglob("*")):
                missing.append(path)
        elif not target.is_file():
            missing.append(path)
    return missing


def required_tests_failing(after: CiRun, required: list[str]) -> list[str]:
    failing = []
    for test in required:
        wanted = normalise_test_id(test)
        statuses = [
            status for test_id, status in after.results.items() if test_id == wanted or test_id.endswith(wanted)
        ]
        if not statuses or any(status != PASSED for status in statuses):
            failing.append(test)
    return failing


def _gate_apply(evidence: Evidence) -> Failure | None:
    if evidence.parse_error:
        return Failure(
            "parse_failed",
            f"Your answer could not be parsed: {evidence.parse_error}",
            evidence.parse_error,
            patch_failure=True,
        )
    if evidence.apply_error:
        return Failure(
            "apply_refused",
            f"The change was refused by governed apply: {evidence.apply_error}",
            " ".join(sorted(evidence.apply_rules)) + evidence.apply_error,
            patch_failure=True,
        )
    return None


def _gate_noop(evidence: Evidence) -> Failure | None:
    if evidence.changed_paths or evidence.allow_noop:
        return None
    detail = "no operations" if not evidence.operations else "operations changed nothing"
    return Failure("no_op", f"The answer changed no file ({detail}); the phase needs a change.", detail)


def _gate_deliverables(evidence: Evidence) -> Failure | None:
    if not evidence.missing_deliverables:
        return None
    missing = ", ".join(evidence.missing_deliverables)
    cut = " Your previous answer was cut off at max_tokens; be more concise." if evidence.truncated else ""
    return Failure("deliverables_missing", f"Required deliverables are missing: {missing}.{cut}", missing)


def _gate_ci(evidence: Evidence) -> list[Failure]:
    delta, failures = evidence.delta, []
    if delta is None or delta.skipped:
        return failures
    if delta.collection_errors:
        failures.append(Failure("collection_errors", delta.feedback(), "\n".join(delta.collection_errors)))
    if delta.timed_out:
        failures.append(Failure("ci_timeout", "The tests timed out after your change.", "timeout"))
    if delta.no_tests_collected:
        failures.append(Failure("no_tests_collected", "No tests were collected after your change.", "no tests"))
    if delta.new_failures:
        detail = "\n".join(f"{test} {_last_line(delta.messages.get(test, ''))}" for test in delta.new_failures)
        failures.append(Failure("new_failures", delta.feedback(), detail))
    if delta.coverage_dropped and evidence.strict:
        failures.append(Failure("coverage_drop", delta.feedback(), "coverage"))
    return failures


def _last_line(message: str) -> str:
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _gate_required(evidence: Evidence) -> Failure | None:
    if not evidence.required_tests or evidence.after is None:
        return None
    failing = required_tests_failing(evidence.after, evidence.required_tests)
    if not failing:
        return None
    return Failure("required_tests", f"Required tests do not pass: {', '.join(failing)}", " ".join(failing))


def _gate_audit(evidence: Evidence) -> Failure | None:
    verdict = evidence.verdict
    if verdict is None or verdict.approved:
        return None
    detail = " ".join(sorted(f"{i['severity']}:{i['category']}:{i.get('file_path')}" for i in verdict.blocking_issues))
    return Failure("audit_rejected", verdict.feedback(), detail or verdict.summary)


def finalize(evidence: Evidence) -> FinalVerdict:
    gates: dict[str, str] = {}
    failures: list[Failure] = []
    applied = _gate_apply(evidence)
    gates["apply"] = "fail" if applied else "pass"
    if applied:
        return FinalVerdict(False, gates, [applied])
    for name, gate in (("no_op", _gate_noop), ("deliverables", _gate_deliverables)):
        found = gate(evidence)
        gates[name] = "fail" if found else "pass"
        failures += [found] if found else []
    ci_failures = _gate_ci(evidence)
    gates["ci"] = "skip" if evidence.delta is None or evidence.delta.skipped else ("fail" if ci_failures else "pass")
    failures += ci_failures
    for name, gate in (("required_tests", _gate_required), ("audit", _gate_audit)):
        found = gate(evidence)
        skipped = (name == "audit" and evidence.verdict is None) or (
            name == "required_tests" and evidence.after is None
        )
        gates[name] = "skip" if skipped else ("fail" if found else "pass")
        failures += [found] if found else []
    complete = not failures and evidence.verdict is not None and evidence.verdict.approved
    if not failures and not complete:
        failures.append(Failure("audit_missing", "The change was not audited.", "no audit"))
    return FinalVerdict(complete, gates, failures)
