"""Versioned Builder, Auditor and Doctor prompts, and tolerant parsing of the JSON answers.

Templates live in ``prompt_templates/<role>_v<N>.txt`` (system part) and ``<role>_task_v<N>.txt`` (user
part); ``PROMPT_VERSIONS`` names the ones in use and is recorded with every call, so a change of wording is a
new version, never a silent edit. Prompts must be deterministic for a given repository state (cassettes
match on them): machine-specific paths are replaced by placeholders (``sanitize``).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

from runs.engine.spec import GOAL_REMINDER_BYTES, PhaseSpec, truncate_utf8

TEMPLATES_DIR = Path(__file__).with_name("prompt_templates")
PROMPT_VERSIONS = {"builder": "builder_v1", "auditor": "auditor_v1", "doctor": "doctor_v1"}
SEVERITIES = ("minor", "major", "critical")
DOCTOR_ACTIONS = ("retry_with_fix", "replan", "skip_phase", "mark_fatal")
_PYTHON_FRAME = re.compile(r"<python>[^\s:]*(?::\d+)?")
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATES_DIR / f"{name}.txt").read_text(encoding="utf-8"))


def _task_template(role: str) -> Template:
    version = PROMPT_VERSIONS[role]
    base, _, number = version.rpartition("_")
    return _template(f"{base}_task_{number}")


def sanitize(text: str, root: Path | str | None = None) -> str:
    """Replace machine-specific absolute paths so prompts are the same on every machine."""
    replacements = []
    if root:
        replacements.append((str(root), "<repo>"))
    replacements += [(sys.executable, "python"), (sys.prefix, "<python>"), (sys.base_prefix, "<python>")]
    for old, new in replacements:
        if old:
            text = text.replace(old, new)
    # Frames inside the interpreter's own library differ between Python versions: keep only that they exist.
    return _PYTHON_FRAME.sub("<python>", text)


def display_command(command: str) -> str:
    """The test command as shown to a model: no interpreter path, no JUnit plumbing."""
    shown = re.sub(r"\s*--junit-?xml=\S+", "", sanitize(command))
    return shown.strip() or "(no test command)"


def _bullets(items: list[str], empty: str = "(none)") -> str:
    return "\n".join(f"- {item}" for item in items) if items else empty


@dataclass
class Prompt:
    role: str
    version: str
    system: str
    cache_prefix: str
    user: str

    @property
    def messages(self) -> list[dict[str, Any]]:
        return [{"role": "user", "content": self.user}]

    def full_text(self) -> str:
        return f"[system]\n{self.system}\n[cache_prefix]\n{self.cache_prefix}\n[user]\n{self.user}"


def builder_prompt(
    spec: PhaseSpec, *, stable_context: str, volatile_context: str, test_command: str, feedback: str, hint: str
) -> Prompt:
    test_policy = (
        "You may add or change tests."
        if spec.allow_test_edits
        else "Do not modify existing tests; you may only add test files that are deliverables."
    )
    system = _template(PROMPT_VERSIONS["builder"]).substitute(
        scope=_bullets(spec.scope_paths + spec.deliverables),
        protected=", ".join(spec.protected_paths) or "(none beyond the defaults)",
        test_policy=test_policy,
    )
    task = _task_template("builder").substitute(
        phase_id=spec.phase_id,
        name=spec.name,
        category=spec.category,
        complexity=spec.complexity,
        attempt=spec.history.attempt_number,
        max_attempts=spec.history.max_attempts,
        description=spec.description or spec.name,
        deliverables=_bullets(spec.deliverables),
        acceptance=_bullets(spec.acceptance_criteria),
        test_command=display_command(test_command),
        feedback=f"\n## What went wrong in the previous attempt\n{feedback.strip()}\n" if feedback.strip() else "",
        hint=f"\n## Hint for this attempt\n{hint.strip()}\n" if hint.strip() else "",
    )
    return Prompt("builder", PROMPT_VERSIONS["builder"], system, stable_context, f"{volatile_context}\n{task}")


def auditor_prompt(spec: PhaseSpec, *, diff: str, ci_summary: str, max_diff_chars: int = 60_000) -> Prompt:
    shown = diff if len(diff) <= max_diff_chars else diff[:max_diff_chars] + "\n[... diff cut ...]\n"
    user = _task_template("auditor").substitute(
        phase_id=spec.phase_id,
        name=spec.name,
        description=spec.description or spec.name,
        deliverables=_bullets(spec.deliverables),
        acceptance=_bullets(spec.acceptance_criteria),
        ci_summary=ci_summary or "(tests not run)",
        diff=shown or "(empty diff)",
    )
    return Prompt("auditor", PROMPT_VERSIONS["auditor"], _template(PROMPT_VERSIONS["auditor"]).template, "", user)


def doctor_prompt(spec: PhaseSpec, *, failure: str, diff: str, max_diff_chars: int = 20_000) -> Prompt:
    user = _task_template("doctor").substitute(
        phase_id=spec.phase_id,
        name=spec.name,
        attempt=spec.history.attempt_number,
        max_attempts=spec.history.max_attempts,
        description=spec.description or spec.name,
        run_goal=truncate_utf8(" ".join(spec.goal.split()), GOAL_REMINDER_BYTES) or "(none)",
        deliverables=_bullets(spec.deliverables),
        scope=_bullets(spec.scope_paths),
        failure=failure[:6000] or "(no detail)",
        history=_bullets(spec.history.failure_fingerprints[-10:]),
        diff=(diff[:max_diff_chars] or "(no change)"),
    )
    return Prompt("doctor", PROMPT_VERSIONS["doctor"], _template(PROMPT_VERSIONS["doctor"]).template, "", user)


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text``: code fences, prose and trailing commas tolerated."""
    start = text.find("{")
    while start != -1:
        end = _matching_brace(text, start)
        if end is None:
            return None
        candidate = text[start : end + 1]
        for attempt in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
            try:
                value = json.loads(attempt)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
        start = text.find("{", start + 1)
    return None


def _matching_brace(text: str, start: int) -> int | None:
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            escaped = char == "\\" and not escaped
            if char == '"' and not escaped:
                in_string = False
            elif char != "\\":
                escaped = False
            continue
        if char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


@dataclass
class AuditVerdict:
    approved: bool
    parsed: bool
    issues: list[dict[str, Any]] = field(default_factory=list)
    summary: str = ""

    @property
    def blocking_issues(self) -> list[dict[str, Any]]:
        return [issue for issue in self.issues if issue.get("severity") in ("major", "critical")]

    def feedback(self) -> str:
        if not self.parsed:
            return "The auditor's answer could not be parsed; the change was rejected."
        lines = [f"The auditor rejected the change: {self.summary}".strip()]
        for issue in self.blocking_issues or self.issues:
            where = f" ({issue.get('file_path')}:{issue.get('line')})" if issue.get("file_path") else ""
            lines.append(f"- [{issue.get('severity')}] {issue.get('description', '')}{where}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"approved": self.approved, "parsed": self.parsed, "issues": self.issues, "summary": self.summary}


def parse_audit(text: str) -> AuditVerdict:
    """Unparseable output is a rejection; any major or critical issue rejects whatever ``approved`` says."""
    data = extract_json_object(text)
    if data is None or not isinstance(data.get("approved"), bool | str):
        return AuditVerdict(approved=False, parsed=False, summary="unparseable auditor output")
    approved = data["approved"] if isinstance(data["approved"], bool) else data["approved"].lower() == "true"
    issues = [_normalise_issue(issue) for issue in data.get("issues") or [] if isinstance(issue, dict)]
    verdict = AuditVerdict(approved=approved, parsed=True, issues=issues, summary=str(data.get("summary") or ""))
    if verdict.blocking_issues:
        verdict.approved = False
    return verdict


def _normalise_issue(issue: dict[str, Any]) -> dict[str, Any]:
    severity = str(issue.get("severity", "major")).lower()
    return {
        "severity": severity if severity in SEVERITIES else "major",
        "category": str(issue.get("category") or "other"),
        "description": str(issue.get("description") or ""),
        "file_path": issue.get("file_path"),
        "line": issue.get("line"),
    }


@dataclass
class DoctorAdvice:
    action: str
    confidence: float
    rationale: str
    builder_hint: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_doctor(text: str) -> DoctorAdvice | None:
    """None when unparseable (the caller retries without a hint)."""
    data = extract_json_object(text)
    if data is None:
        return None
    action = str(data.get("action", "")).strip().lower()
    if action not in DOCTOR_ACTIONS:
        return None
    try:
        confidence = min(max(float(data.get("confidence", 0.5)), 0.0), 1.0)
    except (TypeError, ValueError):
        confidence = 0.5
    return DoctorAdvice(action, confidence, str(data.get("rationale") or ""), str(data.get("builder_hint") or ""))
