"""Pattern expansion: failures that failure hardening did not catch, grouped by normalised signature.

A failure is a phase outcome other than complete/skipped with an error text. It counts as caught when a
mitigating ``FailureHardeningEvent`` exists for the same attempt (or, without an attempt id, the same phase).
Frequent uncaught signatures are candidates for new deterministic patterns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Exists, Max, Min, OuterRef, Q

from telemetry.models import FailureHardeningEvent, PhaseOutcomeEvent
from telemetry.signatures import classify_error, normalise_error

FAILED_OUTCOMES = ("retry", "blocked", "failed")


@dataclass(frozen=True)
class PatternCandidate:
    signature: str
    error_type: str
    occurrences: int
    runs: int
    phases: int
    normalised: str
    sample: str
    first_seen: datetime
    last_seen: datetime

    @property
    def confidence(self) -> str:
        return "high" if self.occurrences >= 5 else "medium" if self.occurrences >= 3 else "low"

    @property
    def suggested_pattern_id(self) -> str:
        return f"{self.error_type}_{self.signature[:8]}"


def uncaught_failures(*, since: datetime | None = None):
    caught_attempt = FailureHardeningEvent.objects.filter(
        mitigated=True, attempt_id=OuterRef("attempt_id"), attempt_id__isnull=False
    )
    caught_phase = FailureHardeningEvent.objects.filter(
        mitigated=True, attempt_id__isnull=True, phase_id=OuterRef("phase_id"), phase_id__isnull=False
    )
    failures = PhaseOutcomeEvent.objects.filter(outcome__in=FAILED_OUTCOMES).exclude(error_signature="")
    if since:
        failures = failures.filter(occurred_at__gte=since)
    return failures.filter(~Q(Exists(caught_attempt)), ~Q(Exists(caught_phase)))


def pattern_candidates(*, min_occurrences: int = 2, since: datetime | None = None) -> list[PatternCandidate]:
    groups = (
        uncaught_failures(since=since)
        .values("error_signature")
        .annotate(
            occurrences=Count("id"),
            runs=Count("run_id", distinct=True),
            phases=Count("phase_id", distinct=True),
            first_seen=Min("occurred_at"),
            last_seen=Max("occurred_at"),
            sample_id=Min("id"),
        )
        .filter(occurrences__gte=min_occurrences)
        .order_by("-occurrences", "error_signature")
    )
    groups = list(groups)
    samples = PhaseOutcomeEvent.objects.in_bulk([group["sample_id"] for group in groups])
    candidates = []
    for group in groups:
        text = samples[group["sample_id"]].error_text
        candidates.append(
            PatternCandidate(
                signature=group["error_signature"],
                error_type=classify_error(text),
                occurrences=group["occurrences"],
                runs=group["runs"],
                phases=group["phases"],
                normalised=normalise_error(text),
                sample=text[-2000:],
                first_seen=group["first_seen"],
                last_seen=group["last_seen"],
            )
        )
    return candidates
