"""Validation of evidence (citations, freshness, amount, diversity) and the quality score formula."""

from __future__ import annotations

from datetime import date

import pytest

from research.validation import EvidenceFacts, citation_url_problem, quality_score, validate_evidence

TODAY = date(2026, 1, 15)


def facts(source_type: str = "ledger", quality: str = "high", url: str = "autopack://autopack/ledger/1", day=TODAY):
    return EvidenceFacts(source_type=source_type, quality=quality, citation_urls=(url,), published_on=day)


@pytest.mark.parametrize(
    "url",
    [
        "https://docs.djangoproject.com/en/5.2/ref/contrib/postgres/search/",
        "http://localhost:8000/runs/3",
        "file:///srv/repo/docs/BUILD-132_COVERAGE_DELTA_INTEGRATION.md#L12",
        "autopack://autopack/ledger/17",
        "autopack://autopack/memory/ci_errors/4",
    ],
)
def test_well_formed_citations_pass(url: str) -> None:
    assert citation_url_problem(url) == ""


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "empty"),
        ("BUILD-132_COVERAGE_DELTA_INTEGRATION.md", "scheme '(none)'"),
        ("ftp://example.org/report", "scheme 'ftp'"),
        ("https://intranet/report", "no valid host"),
        ("file://relative/docs/a.md", "file:///absolute/path"),
        ("autopack://autopack", "autopack://<project>/<kind>/<id>"),
        ("https://example.org/a b", "whitespace"),
    ],
)
def test_malformed_citations_are_named(url: str, problem: str) -> None:
    assert problem in citation_url_problem(url)


def test_the_quality_score_is_half_count_three_tenths_quality_one_fifth_diversity() -> None:
    evidence = [facts("ledger", "high"), facts("ledger", "medium"), facts("docs", "low"), facts("readme", "unknown")]

    # count 4/5 = 0.8; quality (1.0 + 0.6 + 0.3 + 0.0) / 4 = 0.475; diversity 3 kinds / 3 = 1.0
    assert quality_score(evidence) == pytest.approx(0.5 * 0.8 + 0.3 * 0.475 + 0.2 * 1.0)
    assert quality_score([]) == 0.0
    assert quality_score([facts(quality="high")] * 9) == pytest.approx(0.5 + 0.3 + 0.2 / 3, abs=1e-4)


def test_too_little_evidence_is_an_error_and_one_kind_of_source_a_warning() -> None:
    result = validate_evidence([facts(), facts()], today=TODAY)

    assert not result.is_valid
    assert result.errors == ["only 2 pieces of evidence; at least 3 are needed"]
    assert result.warnings == ["evidence comes from 1 kind of source; 2 or more are wanted"]


def test_stale_undated_and_future_evidence_is_flagged() -> None:
    evidence = [facts(day=date(2024, 6, 1)), facts("docs", day=None), facts("readme", day=date(2026, 2, 1))]

    result = validate_evidence(evidence, today=TODAY)

    assert result.errors == ["evidence 3 is dated in the future (2026-02-01)"]
    assert result.warnings == ["evidence 1 is stale: 593 days old", "evidence 2 has no date; its freshness is unknown"]


def test_valid_evidence_passes_with_its_score() -> None:
    evidence = [
        facts(),
        facts("docs", url="file:///repo/docs/a.md#L1"),
        facts("memory", url="autopack://p/memory/code/2"),
    ]

    result = validate_evidence(evidence, today=TODAY)

    assert result.is_valid and result.errors == [] and result.warnings == []
    assert result.quality_score == pytest.approx(0.5 * 0.6 + 0.3 * 1.0 + 0.2 * 1.0)


def test_missing_and_broken_citations_make_evidence_invalid() -> None:
    evidence = [facts(), facts(url="not a url"), EvidenceFacts("docs", "high", (), TODAY)]

    result = validate_evidence(evidence, today=TODAY)

    assert "evidence 2: citation 'not a url': empty or contains whitespace" in result.errors
    assert "evidence 3 has no citation" in result.errors
