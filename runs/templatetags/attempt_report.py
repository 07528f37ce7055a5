"""Reads an attempt's summary and stage events into the sections the attempt page shows.

The engine (``runs/engine/pipeline.py``) writes short figures into ``Attempt.summary`` (``apply`` holds only a
violation *count*, ``ci`` the delta lists, ``audit`` the verdict, ``doctor`` the advice, ``decision`` the
finalizer's choice) and the full details into the stage events (the ``apply`` event lists each violation, the
``ci`` event's blob is the log tail, ``builder``/``auditor``/``doctor`` events carry the prompt and response
text as compressed blobs). Each section therefore merges the latest event of its stage over the summary.
The keys belong to the engine, so this reads defensively and the page also shows the raw JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django import template

register = template.Library()

SECTION_NAMES = {
    "apply": ("apply", "apply_result", "governed_apply"),
    "ci": ("ci", "ci_delta", "ci_result"),
    "auditor": ("audit", "auditor", "auditor_verdict", "verdict"),
    "doctor": ("doctor", "diagnosis"),
    "deliverables": ("deliverables",),
    "parse": ("parse",),
    "decision": ("policy", "decision"),
    "hardening": ("hardening",),
}
# Events that are not a stage's result: a skipped stage, and the LLM exchange (stage named after the role).
SKIPPED_KINDS = frozenset({"skipped", "prompt", "response"})
CI_BUCKETS = (
    ("new_failures", "New failures", "danger"),
    ("still_failing", "Still failing (pre-existing)", "warn"),
    ("fixed", "Fixed", "ok"),
    ("flaky", "Flaky (passed on re-run)", "muted"),
)
PROMPT_KINDS = ("prompt", "request", "system")


@dataclass
class AttemptReport:
    apply: dict[str, Any] = field(default_factory=dict)
    ci: dict[str, Any] = field(default_factory=dict)
    auditor: dict[str, Any] = field(default_factory=dict)
    doctor: dict[str, Any] = field(default_factory=dict)
    deliverables: dict[str, Any] = field(default_factory=dict)
    parse: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)
    hardening: dict[str, Any] = field(default_factory=dict)
    ci_buckets: list[dict[str, Any]] = field(default_factory=list)
    violations: list[dict[str, str]] = field(default_factory=list)
    auditor_issues: list[dict[str, Any]] = field(default_factory=list)
    log_tail: str = ""


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _latest_event(events: list[Any], names: tuple[str, ...]) -> Any:
    for event in reversed(events):
        if event.stage in names and isinstance(event.data, dict) and event.kind not in SKIPPED_KINDS:
            return event
    return None


def _section(summary: dict[str, Any], events: list[Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The summary's figures with the latest matching event's (richer) data over them."""
    merged: dict[str, Any] = {}
    for name in reversed(names):
        merged.update(_as_dict(summary.get(name)))
    event = _latest_event(events, names)
    if event is not None:
        merged.update(event.data)
    return merged


def _first(mapping: dict[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if mapping.get(name) not in (None, ""):
            return mapping[name]
    return default


def describe(item: Any) -> dict[str, str]:
    """A test id or violation, whether the engine wrote a plain string or a small dict."""
    if not isinstance(item, dict):
        return {"name": str(item), "detail": ""}
    name = _first(item, "nodeid", "test", "name", "path", "id", default="")
    detail = _first(item, "message", "reason", "detail", "error", "description", default="")
    if item.get("rule") and item["rule"] not in str(detail):
        detail = f"{detail} ({item['rule']})" if detail else str(item["rule"])
    return {"name": str(name), "detail": str(detail)}


def _ci_buckets(ci: dict[str, Any]) -> list[dict[str, Any]]:
    delta = _as_dict(ci.get("delta")) or ci
    buckets = []
    for key, label, level in CI_BUCKETS:
        items = delta.get(key) or []
        if isinstance(items, dict):
            items = list(items)
        buckets.append({"key": key, "label": label, "level": level, "items": [describe(item) for item in items]})
    return buckets


def _violations(apply: dict[str, Any]) -> list[dict[str, str]]:
    items = apply.get("violations") or []
    if isinstance(items, int):  # only the summary's count survived
        return [{"name": f"{items} violation{'s' if items != 1 else ''}", "detail": "no details recorded"}]
    return [describe(item) for item in items] if isinstance(items, list) else [describe(items)]


def _auditor_issues(auditor: dict[str, Any]) -> list[dict[str, Any]]:
    verdict = _as_dict(auditor.get("verdict")) or auditor
    issues = verdict.get("issues") or []
    return [issue if isinstance(issue, dict) else {"description": str(issue)} for issue in issues]


@register.simple_tag
def attempt_report(attempt: Any, events: list[Any]) -> AttemptReport:
    summary = _as_dict(getattr(attempt, "summary", None))
    report = AttemptReport(**{name: _section(summary, events, names) for name, names in SECTION_NAMES.items()})
    report.ci_buckets = _ci_buckets(report.ci)
    report.violations = _violations(report.apply)
    report.auditor_issues = _auditor_issues(report.auditor)
    report.log_tail = _log_tail(report.ci, events)
    return report


def _log_tail(ci: dict[str, Any], events: list[Any]) -> str:
    from runs.templatetags.dashboard import blob_text

    event = _latest_event(events, SECTION_NAMES["ci"])
    if event is not None and event.blob:
        return blob_text(event.blob)
    return str(_first(ci, "log_tail", "tail", default=""))
