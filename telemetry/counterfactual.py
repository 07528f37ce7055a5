"""The counterfactual "Doctor tokens avoided" when failure hardening handles a failure instead of the Doctor.

An estimate, never spend: the median tokens of a Doctor call, from this run's calls when it has at least
three, else from the last 100 anywhere, else a fixed figure by model family. The median rather than the mean,
so one huge Doctor call cannot inflate the claimed savings; the source and sample size go with every figure.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from telemetry.models import EstimateSource, LlmRole, LlmUsageEvent

# With no history at all (reference system: 10k for a cheap model, 12k unknown, 15k for a strong one).
DOCTOR_FALLBACK_TOKENS = {"haiku": 10_000, "sonnet": 12_000, "opus": 15_000}
DOCTOR_FALLBACK_DEFAULT = 12_000
RUN_LOCAL_MIN_SAMPLES = 3
GLOBAL_SAMPLE_SIZE = 100


@dataclass(frozen=True)
class DoctorEstimate:
    tokens: int
    source: str
    sample_size: int


def _doctor_call_tokens(*, run_id: int | None, doctor_model: str, limit: int) -> list[int]:
    calls = LlmUsageEvent.objects.filter(role=LlmRole.DOCTOR, total_tokens__isnull=False)
    if run_id is not None:
        calls = calls.filter(run_id=run_id)
    if doctor_model:
        calls = calls.filter(model=doctor_model)
    return list(calls.order_by("-id").values_list("total_tokens", flat=True)[:limit])


def doctor_fallback_tokens(doctor_model: str) -> int:
    family = next((name for name in DOCTOR_FALLBACK_TOKENS if name in doctor_model.lower()), None)
    return DOCTOR_FALLBACK_TOKENS[family] if family else DOCTOR_FALLBACK_DEFAULT


def doctor_tokens_avoided_estimate(*, run_id: int | None, doctor_model: str = "") -> DoctorEstimate:
    """Median tokens of a Doctor call: this run's (≥ 3 calls), else the last 100 anywhere, else a fixed figure.

    The median, not the mean, so that one huge Doctor call cannot inflate the claimed savings.
    """
    if run_id is not None:
        local = _doctor_call_tokens(run_id=run_id, doctor_model=doctor_model, limit=GLOBAL_SAMPLE_SIZE)
        if len(local) >= RUN_LOCAL_MIN_SAMPLES:
            return DoctorEstimate(int(statistics.median(local)), EstimateSource.RUN_LOCAL, len(local))
    recent = _doctor_call_tokens(run_id=None, doctor_model=doctor_model, limit=GLOBAL_SAMPLE_SIZE)
    if recent:
        return DoctorEstimate(int(statistics.median(recent)), EstimateSource.GLOBAL, len(recent))
    return DoctorEstimate(doctor_fallback_tokens(doctor_model), EstimateSource.FALLBACK, 0)
