"""What happens after a failed attempt: fingerprints, when to ask the Doctor, and the retry policy.

Order (DESIGN.md step 12): a stuck phase (same fingerprint a third time, or the attempt limit) blocks
without spending anything more; otherwise a deterministic hardening pattern gives the hint; otherwise the
Doctor is asked (only from the second failed attempt, at most 2 calls per phase and 10 per run); the same
fingerprint seen a second time also escalates the model (or replans when the ladder is at its top).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from runs.engine.hardening import Mitigation
from runs.engine.outcome import OutcomeKind
from runs.engine.prompts import DoctorAdvice
from runs.engine.spec import PhaseSpec

SAME_FINGERPRINT_LIMIT = 3
_VOLATILE = [
    (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),
    (re.compile(r"\b[0-9a-f]{7,40}\b"), "<sha>"),
    (re.compile(r"(/[\w.\-]+)+/"), "/…/"),  # absolute directories differ between workers and runs
    (re.compile(r"\d+(\.\d+)?\s*(s|ms|seconds)\b"), "<time>"),
    (re.compile(r"line \d+"), "line ?"),
    (re.compile(r":\d+:"), ":?:"),
    (re.compile(r"\s+"), " "),
]


@dataclass(frozen=True)
class Failure:
    category: str  # apply_refused, parse_failed, no_op, deliverables_missing, collection_errors, new_failures, ...
    feedback: str  # what the Builder is told
    detail: str  # the text fingerprinted: stable parts of the error
    patch_failure: bool = False

    @property
    def fingerprint(self) -> str:
        return failure_fingerprint(self.category, self.detail)


def normalise_error(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text.strip()[:4000]


def failure_fingerprint(category: str, detail: str) -> str:
    digest = hashlib.sha256(normalise_error(detail).encode("utf-8")).hexdigest()[:16]
    return f"{category}:{digest}"


def stuck_reason(spec: PhaseSpec, fingerprint: str) -> str:
    history = spec.history
    repeats = history.failure_fingerprints.count(fingerprint) + 1
    if repeats >= SAME_FINGERPRINT_LIMIT:
        return f"stuck: the same failure {repeats} times ({fingerprint})"
    if history.attempt_number >= history.max_attempts:
        return f"attempt limit reached ({history.attempt_number} of {history.max_attempts})"
    return ""


def doctor_allowed(spec: PhaseSpec) -> bool:
    history = spec.history
    return (
        history.attempt_number >= 2
        and history.phase_doctor_calls < history.max_doctor_calls_phase
        and history.run_doctor_calls < history.max_doctor_calls_run
    )


@dataclass(frozen=True)
class Decision:
    kind: OutcomeKind
    reason: str
    builder_hint: str = ""
    escalate_model: bool = False
    replan: bool = False
    run_failure_reason: str = ""
    source: str = "policy"  # "stuck", "hardening", "doctor", "policy"


def decide(
    *,
    spec: PhaseSpec,
    failure: Failure,
    mitigation: Mitigation | None,
    advice: DoctorAdvice | None,
    can_escalate_model: bool,
) -> Decision:
    stuck = stuck_reason(spec, failure.fingerprint)
    if stuck:
        return Decision(OutcomeKind.BLOCKED, f"{stuck}; last failure: {failure.feedback[:1500]}", source="stuck")
    repeated = failure.fingerprint in spec.history.failure_fingerprints
    escalate = repeated and can_escalate_model
    replan = repeated and not can_escalate_model
    if advice is not None:
        if advice.action == "skip_phase":
            return Decision(OutcomeKind.SKIPPED, f"doctor: skip phase: {advice.rationale}", source="doctor")
        if advice.action == "mark_fatal":
            return Decision(
                OutcomeKind.FAILED,
                f"doctor: fatal: {advice.rationale}",
                run_failure_reason="needs_human",
                source="doctor",
            )
        return Decision(
            OutcomeKind.RETRY,
            failure.feedback,
            builder_hint=advice.builder_hint,
            escalate_model=escalate,
            replan=replan or advice.action == "replan",
            source="doctor",
        )
    if mitigation is not None:
        return Decision(
            OutcomeKind.RETRY,
            failure.feedback,
            builder_hint=mitigation.hint,
            escalate_model=escalate,
            replan=replan,
            source="hardening",
        )
    return Decision(OutcomeKind.RETRY, failure.feedback, escalate_model=escalate, replan=replan)
