"""What one attempt of a phase ends with: the contract between the engine and whoever records it.

The engine (framework-free) returns a ``PhaseOutcome``; the Django side (``runs.services.leases``
``phase_finish``) applies it to the database under the attempt's claim epoch. Keep this module free of
Django imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class OutcomeKind(StrEnum):
    COMPLETE = "complete"  # committed to the run branch
    RETRY = "retry"  # back to the queue for another attempt
    BLOCKED = "blocked"  # needs a human
    FAILED = "failed"  # cannot succeed (fatal); the run fails with `run_failure_reason`
    SKIPPED = "skipped"  # the Doctor chose skip_phase, or the run was cancelled mid-attempt
    ABANDONED = "abandoned"  # the worker gives the phase back without judging it (shutdown, cancelled)


@dataclass(frozen=True)
class PhaseOutcome:
    kind: OutcomeKind
    reason: str = ""
    commit_sha: str = ""
    # Normalised failure text hash for stuck detection (same fingerprint ×3 → blocked).
    failure_fingerprint: str = ""
    # One of RunFailureReason values when the whole run must stop (budget_exhausted, policy_violation, ...).
    run_failure_reason: str = ""
    builder_hint: str = ""
    # Persisted so an escalation survives a restart: the next attempt's max_tokens.
    budget_override: int | None = None
    escalate_model: bool = False
    replan: bool = False
    patch_failure: bool = False
    doctor_called: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: str = "0"
    model: str = ""
    diff: str = ""
    summary: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["kind"] = self.kind.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhaseOutcome:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["kind"] = OutcomeKind(known["kind"])
        return cls(**known)
