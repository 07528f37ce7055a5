"""How the engine reports what it does, without knowing who listens.

The Django side implements ``Recorder`` with AttemptEvent rows and telemetry rows
(``runs.execution.DjangoRecorder``); a remote executor implements it over HTTP; tests and benchmarks use
``MemoryRecorder``. Every method must be cheap and must not raise for a telemetry hiccup: losing a
telemetry row is better than losing an attempt.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class LlmCall:
    role: str
    provider: str
    model: str
    request_id: str
    input_tokens: int | None
    output_tokens: int | None
    cache_creation_tokens: int | None
    cache_read_tokens: int | None
    latency_ms: int
    stop_reason: str
    max_tokens: int
    cost_usd: float | None


@dataclass(frozen=True)
class Estimation:
    category: str
    complexity: str
    deliverable_count: int
    predicted: int
    actual: int
    selected_budget: int
    final_ceiling: int
    phase_overhead: int
    truncated: bool
    model: str


@dataclass(frozen=True)
class Escalation:
    kind: str  # "token_budget" or "model"
    reason: str  # "truncated", "high_utilisation", "repeated_failure"
    from_value: str
    to_value: str
    base_value: int = 0  # max(selected, ceiling, used): what the escalation multiplied
    used: int = 0  # output tokens the model used in the call that triggered it


class Recorder(Protocol):
    def event(self, stage: str, kind: str, data: dict[str, Any], blob: bytes | None = None) -> None: ...

    def llm_call(self, call: LlmCall) -> None: ...

    def estimation(self, estimation: Estimation) -> None: ...

    def escalation(self, escalation: Escalation) -> None: ...

    def hardening(self, *, pattern_id: str, mitigated: bool, doctor_tokens_avoided: int, detail: str) -> None: ...

    def doctor_outcome(self, *, action: str, confidence: float, parsed: bool, tokens: int) -> None: ...

    def should_stop(self) -> str:
        """A non-empty reason ("cancelled", "paused", "lease_lost") when the attempt must stop now."""
        ...


def compress_text(text: str) -> bytes:
    return zlib.compress(text.encode("utf-8"), 6)


def decompress_text(blob: bytes) -> str:
    return zlib.decompress(blob).decode("utf-8")


def fingerprint_text(text: str) -> dict[str, Any]:
    """Size and hash of an input, so a trajectory says what went in without storing it twice."""
    raw = text.encode("utf-8")
    return {"chars": len(text), "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()[:16]}


@dataclass
class MemoryRecorder:
    """Keeps everything in lists; ``stop_reason`` lets a test simulate a cancel at a stage boundary."""

    events: list[dict[str, Any]] = field(default_factory=list)
    calls: list[LlmCall] = field(default_factory=list)
    estimations: list[Estimation] = field(default_factory=list)
    escalations: list[Escalation] = field(default_factory=list)
    hardenings: list[dict[str, Any]] = field(default_factory=list)
    doctor_outcomes: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""

    def event(self, stage: str, kind: str, data: dict[str, Any], blob: bytes | None = None) -> None:
        self.events.append({"stage": stage, "kind": kind, "data": data, "blob": blob})

    def llm_call(self, call: LlmCall) -> None:
        self.calls.append(call)

    def estimation(self, estimation: Estimation) -> None:
        self.estimations.append(estimation)

    def escalation(self, escalation: Escalation) -> None:
        self.escalations.append(escalation)

    def hardening(self, *, pattern_id: str, mitigated: bool, doctor_tokens_avoided: int, detail: str) -> None:
        self.hardenings.append(
            {"pattern_id": pattern_id, "mitigated": mitigated, "tokens": doctor_tokens_avoided, "detail": detail}
        )

    def doctor_outcome(self, *, action: str, confidence: float, parsed: bool, tokens: int) -> None:
        self.doctor_outcomes.append({"action": action, "confidence": confidence, "parsed": parsed, "tokens": tokens})

    def should_stop(self) -> str:
        return self.stop_reason

    def stages(self) -> list[str]:
        return [f"{event['stage']}:{event['kind']}" for event in self.events]
