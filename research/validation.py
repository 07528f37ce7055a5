"""Validation of research evidence and the quality score. Framework-free.

Quality score = 0.5 · evidence-count term + 0.3 · average evidence quality + 0.2 · source diversity, where
the count term is ``min(n / 5, 1)``, quality maps high/medium/low/unknown to 1.0/0.6/0.3/0.0, and diversity
is ``min(distinct source types / 3, 1)``. Each term lies in [0, 1], so the score does too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from urllib.parse import urlparse

COUNT_WEIGHT, QUALITY_WEIGHT, DIVERSITY_WEIGHT = 0.5, 0.3, 0.2
TARGET_EVIDENCE = 5
TARGET_SOURCE_TYPES = 3
MIN_EVIDENCE = 3
MIN_SOURCE_TYPES = 2
MAX_AGE_DAYS = 365
QUALITY_VALUES = {"high": 1.0, "medium": 0.6, "low": 0.3, "unknown": 0.0}
CITATION_SCHEMES = ("http", "https", "file", "autopack")


@dataclass(frozen=True)
class EvidenceFacts:
    """What validation needs to know of one piece of evidence."""

    source_type: str
    quality: str
    citation_urls: tuple[str, ...]
    published_on: date | None = None


@dataclass
class ValidationResult:
    is_valid: bool
    quality_score: float
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "is_valid": self.is_valid,
            "quality_score": self.quality_score,
            "errors": self.errors,
            "warnings": self.warnings,
        }


def citation_url_problem(url: str) -> str:
    """Empty when ``url`` is a well-formed citation, else why not.

    Web sources need http(s) and a host; local ones are ``file:///absolute/path`` or
    ``autopack://<project>/<kind>/<id>`` (ledger entries and memory items).
    """
    if not url or any(character.isspace() for character in url):
        return "empty or contains whitespace"
    parsed = urlparse(url)
    if parsed.scheme not in CITATION_SCHEMES:
        return f"scheme {parsed.scheme or '(none)'!r} is not one of {', '.join(CITATION_SCHEMES)}"
    if parsed.scheme in ("http", "https") and not (
        parsed.hostname and ("." in parsed.hostname or parsed.hostname == "localhost")
    ):
        return "web citation has no valid host"
    if parsed.scheme == "file" and (parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/")):
        return "file citation must be file:///absolute/path"
    if parsed.scheme == "autopack" and (not parsed.netloc or len(parsed.path.strip("/").split("/")) < 2):
        return "autopack citation must be autopack://<project>/<kind>/<id>"
    return ""


def quality_score(evidence: Sequence[EvidenceFacts]) -> float:
    if not evidence:
        return 0.0
    count_term = min(len(evidence) / TARGET_EVIDENCE, 1.0)
    average_quality = sum(QUALITY_VALUES.get(item.quality, 0.0) for item in evidence) / len(evidence)
    diversity = min(len({item.source_type for item in evidence}) / TARGET_SOURCE_TYPES, 1.0)
    score = COUNT_WEIGHT * count_term + QUALITY_WEIGHT * average_quality + DIVERSITY_WEIGHT * diversity
    return round(score, 4)


def validate_evidence(
    evidence: Sequence[EvidenceFacts], *, today: date, max_age_days: int = MAX_AGE_DAYS
) -> ValidationResult:
    """Errors make a report invalid (too little evidence, malformed or missing citations); warnings don't."""
    errors: list[str] = []
    warnings: list[str] = []
    if len(evidence) < MIN_EVIDENCE:
        errors.append(f"only {len(evidence)} pieces of evidence; at least {MIN_EVIDENCE} are needed")
    source_types = {item.source_type for item in evidence}
    if evidence and len(source_types) < MIN_SOURCE_TYPES:
        warnings.append(
            f"evidence comes from {len(source_types)} kind of source; {MIN_SOURCE_TYPES} or more are wanted"
        )
    for number, item in enumerate(evidence, start=1):
        if not item.citation_urls:
            errors.append(f"evidence {number} has no citation")
        for url in item.citation_urls:
            problem = citation_url_problem(url)
            if problem:
                errors.append(f"evidence {number}: citation {url!r}: {problem}")
        if item.published_on is None:
            warnings.append(f"evidence {number} has no date; its freshness is unknown")
        elif item.published_on > today:
            errors.append(f"evidence {number} is dated in the future ({item.published_on.isoformat()})")
        elif (today - item.published_on).days > max_age_days:
            warnings.append(f"evidence {number} is stale: {(today - item.published_on).days} days old")
    return ValidationResult(
        is_valid=not errors, quality_score=quality_score(evidence), errors=errors, warnings=warnings
    )
