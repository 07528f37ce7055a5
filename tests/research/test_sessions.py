"""Research sessions over the real ledger, a project README and docs, and vector memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings

from research.discovery import DiscoveredSource, deduplicate, discover, rank
from research.embedders import get_embedder
from research.intent import clarify_intent
from research.memory import memory_add
from research.models import Citation, Evidence, ResearchSession
from research.sessions import research_phase_execute, research_report_for_run, research_session_run
from research.validation import QUALITY_VALUES, citation_url_problem
from tests.research.conftest import make_phase

pytestmark = pytest.mark.django_db

TRUNCATION = "How did we stop max_tokens truncation of Builder output?"
README = """# Autopack

Autopack drains queued phases with an LLM Builder under governed apply.

## Token budgets

The token estimator picks max_tokens per phase; on truncation it escalates once with a 1.25 factor.
"""
DOCS = """# Operations

## Windows runners

Read and write files with encoding="utf-8": the Windows default code page breaks the calibration reporter.
"""


@pytest.fixture
def documented_project(imported_project, repository: Path):
    (repository / "README.md").write_text(README, encoding="utf-8")
    (repository / "docs" / "operations.md").write_text(DOCS, encoding="utf-8")
    return imported_project


def test_ledger_evidence_about_truncation_ranks_first(imported_project) -> None:
    sources = discover(project=imported_project, intent=clarify_intent(TRUNCATION), embedder=get_embedder())

    assert sources[0].title in {
        "BUILD-042: Eliminate max_tokens Truncation Issues",
        "BUILD-129: Token Estimator Overhead Model - Phase 3 P4-P10 Truncation Mitigation",
    }
    assert [source.relevance for source in sources] == sorted((s.relevance for s in sources), reverse=True)
    assert "BUILD-041: Executor State Persistence Fix" not in [source.title for source in sources[:3]]


def test_readme_docs_and_memory_are_searched_alongside_the_ledger(documented_project) -> None:
    memory_add(
        project_id=documented_project.pk,
        collection="doctor_hints",
        text="Windows CI: pass encoding='utf-8' to open() in the calibration reporter tests",
    )

    sources = discover(
        project=documented_project,
        intent=clarify_intent("Why do Windows runners fail on file encoding?"),
        embedder=get_embedder(),
    )

    kinds = {source.source_type for source in sources}
    assert {"docs", "memory", "ledger"} <= kinds
    docs = next(source for source in sources if source.source_type == "docs")
    assert docs.title == "docs/operations.md: Windows runners" and docs.location == "docs/operations.md:3"
    assert all(citation_url_problem(source.url) == "" for source in sources)


def test_duplicates_keep_their_most_relevant_copy() -> None:
    sources = [
        DiscoveredSource("docs", "a", "Same text  here", "file:///r/a.md#L1", relevance=0.2),
        DiscoveredSource("readme", "b", "same TEXT here", "file:///r/README.md#L1", relevance=0.5),
        DiscoveredSource("ledger", "c", "other", "file:///r/README.md#L1", relevance=0.1),
        DiscoveredSource("ledger", "d", "distinct", "autopack://p/ledger/4", relevance=0.3),
    ]

    kept = deduplicate(sources)

    # "a" repeats b's text and "c" b's citation: only the most relevant copy, b, stays.
    assert [source.title for source in kept] == ["b", "d"]


def test_ranking_orders_by_relevance_then_title_and_drops_the_irrelevant() -> None:
    sources = [
        DiscoveredSource("docs", "zeta", "", "u", relevance=0.4),
        DiscoveredSource("docs", "alpha", "", "u", relevance=0.4),
        DiscoveredSource("docs", "top", "", "u", relevance=0.9),
        DiscoveredSource("docs", "noise", "", "u", relevance=0.01),
    ]

    assert [source.title for source in rank(sources, limit=3)] == ["top", "alpha", "zeta"]


def test_a_session_stores_evidence_citations_validation_and_a_report(documented_project) -> None:
    session = research_session_run(project=documented_project, question=TRUNCATION)

    evidence = list(session.evidence.order_by("rank"))
    assert session.status == "complete" and session.embedder == "hashing-ngram-384"
    assert 3 <= len(evidence) <= 8
    assert Citation.objects.filter(evidence__session=session).count() == len(evidence)
    assert session.validation["is_valid"] is True
    assert session.intent["key_concepts"] == ["stop", "max_tokens", "truncation", "builder", "output"]
    assert session.report.startswith(f"# Research: {TRUNCATION}\n\nRetrieval: hashing-ngram-384 · quality score")
    assert f"[1] {evidence[0].title} ({evidence[0].source_type}, relevance" in session.report


def test_the_stored_quality_score_follows_the_formula_on_real_evidence(documented_project) -> None:
    session = research_session_run(project=documented_project, question=TRUNCATION)

    evidence = list(Evidence.objects.filter(session=session))
    count_term = min(len(evidence) / 5, 1.0)
    average_quality = sum(QUALITY_VALUES[item.quality] for item in evidence) / len(evidence)
    diversity = min(len({item.source_type for item in evidence}) / 3, 1.0)
    assert session.quality_score == pytest.approx(0.5 * count_term + 0.3 * average_quality + 0.2 * diversity, abs=1e-4)


def test_too_little_evidence_makes_the_report_say_so(project) -> None:
    session = research_session_run(project=project, question="What is the colour of the logo?")

    assert session.validation["is_valid"] is False
    assert "no relevant evidence found" in session.report
    assert "- error: only 0 pieces of evidence; at least 3 are needed" in session.report


class StaticWebSource:
    name = "static-web"

    def discover(self, intent):
        return [DiscoveredSource("external", "Web: truncation", " ".join(intent.key_concepts), "https://example.org/t")]


def test_external_sources_are_off_by_default_and_pluggable(imported_project, settings) -> None:
    plugged = {**settings.AUTOPACK, "RESEARCH_EXTERNAL_SOURCES": [f"{__name__}.StaticWebSource"]}
    default = research_session_run(project=imported_project, question=TRUNCATION)
    with override_settings(AUTOPACK=plugged):
        still_off = research_session_run(project=imported_project, question=TRUNCATION)
        switched_on = research_session_run(project=imported_project, question=TRUNCATION, include_external=True)

    assert not default.evidence.filter(source_type="external").exists()
    assert not still_off.evidence.filter(source_type="external").exists()
    assert switched_on.evidence.filter(source_type="external", title="Web: truncation").exists()


def test_a_research_phase_stores_a_report_the_next_phases_can_cite(documented_project) -> None:
    phase = make_phase(documented_project, run_name="with-research", phase_id="research", category="research")
    phase.description = TRUNCATION
    phase.save()
    assert research_report_for_run(phase.run_id) == ""

    session = research_phase_execute(phase_id=phase.pk)

    cited = research_report_for_run(phase.run_id)
    assert session.run_id == phase.run_id and session.phase_id == phase.pk
    assert cited.startswith(f"(research session #{session.pk})\n# Research: {TRUNCATION}")
    assert len(cited) <= 6000


def test_research_command_prints_the_report(documented_project, capsys) -> None:
    call_command("research", TRUNCATION, "--project", documented_project.slug)

    out = capsys.readouterr().out
    assert out.startswith(f"# Research: {TRUNCATION}")
    assert "## Evidence" in out and "autopack://autopack/ledger/" in out
    assert ResearchSession.objects.count() == 1
