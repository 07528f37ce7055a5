"""Research sessions: clarify the question, discover and rank evidence, validate, store a citable report.

A research phase (``Category.RESEARCH``) runs :func:`research_phase_execute`; later phases of the run cite
its stored report through :func:`research_report_for_run`.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from autopack_site.lib.errors import NotFound
from research.discovery import DiscoveredSource, discover, today
from research.embedders import get_embedder
from research.intent import ClarifiedIntent, clarify_intent
from research.models import Citation, Evidence, EvidenceQuality, ResearchSession, SessionStatus
from research.validation import EvidenceFacts, ValidationResult, validate_evidence
from runs.models import Phase, Project, Run

EXCERPT_CHARS = 600
REPORT_CITE_CHARS = 6000


def evidence_quality(relevance: float) -> str:
    if relevance >= 0.5:
        return EvidenceQuality.HIGH
    if relevance >= 0.3:
        return EvidenceQuality.MEDIUM
    if relevance >= 0.15:
        return EvidenceQuality.LOW
    return EvidenceQuality.UNKNOWN


def _facts(sources: list[DiscoveredSource]) -> list[EvidenceFacts]:
    return [
        EvidenceFacts(
            source_type=source.source_type,
            quality=evidence_quality(source.relevance),
            citation_urls=(source.url,),
            published_on=source.published_on,
        )
        for source in sources
    ]


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


def render_report(
    *, intent: ClarifiedIntent, sources: list[DiscoveredSource], validation: ValidationResult, embedder: str
) -> str:
    lines = [
        f"# Research: {intent.original_query}",
        "",
        f"Retrieval: {embedder} · quality score {validation.quality_score:.2f} · "
        f"{'valid' if validation.is_valid else 'NOT valid'} · {len(sources)} sources",
        "",
        "## Intent",
        f"- Key concepts: {', '.join(intent.key_concepts) or '(none)'}",
        f"- Aspects: {', '.join(intent.clarified_aspects) or '(none)'}",
        f"- Dimensions: {', '.join(intent.dimensions)}",
        f"- Time period: {intent.time_period or 'any'}",
        "- Questions:",
        *[f"  {number}. {question}" for number, question in enumerate(intent.key_questions, start=1)],
        "",
        "## Evidence",
    ]
    for number, source in enumerate(sources, start=1):
        day = f", {source.published_on.isoformat()}" if source.published_on else ""
        lines.append(
            f"[{number}] {source.title} ({source.source_type}, relevance {source.relevance:.2f}, "
            f"{evidence_quality(source.relevance)}{day}) <{source.url}>"
        )
        lines.append(f"    {_excerpt(source.content)}")
    if not sources:
        lines.append("(no relevant evidence found in the ledger, docs or memory)")
    if validation.errors or validation.warnings:
        lines += ["", "## Validation"]
        lines += [f"- error: {error}" for error in validation.errors]
        lines += [f"- warning: {warning}" for warning in validation.warnings]
    return "\n".join(lines) + "\n"


def research_session_run(
    *,
    project: Project,
    question: str,
    run: Run | None = None,
    phase: Phase | None = None,
    include_external: bool = False,
    limit: int = 8,
) -> ResearchSession:
    """Answer ``question`` from the project's local corpora and store session, evidence and report."""
    embedder = get_embedder()
    intent = clarify_intent(question)
    sources = discover(
        project=project, intent=intent, embedder=embedder, include_external=include_external, limit=limit
    )
    validation = validate_evidence(_facts(sources), today=today())
    with transaction.atomic():
        session = ResearchSession.objects.create(
            project=project,
            question=question,
            run=run,
            phase=phase,
            intent=intent.as_dict(),
            embedder=embedder.name,
            sources_enabled=["ledger", "docs", "readme", "memory"] + (["external"] if include_external else []),
        )
        for number, source in enumerate(sources, start=1):
            evidence = Evidence.objects.create(
                session=session,
                rank=number,
                source_type=source.source_type,
                title=source.title[:500],
                content=source.content,
                relevance=source.relevance,
                quality=evidence_quality(source.relevance),
                location=source.location,
            )
            Citation.objects.create(
                evidence=evidence, url=source.url, title=source.title[:500], published_on=source.published_on
            )
        session.report = render_report(intent=intent, sources=sources, validation=validation, embedder=embedder.name)
        session.validation = validation.as_dict()
        session.quality_score = validation.quality_score
        session.status = SessionStatus.COMPLETE
        session.finished_at = timezone.now()
        session.save()
    return session


def research_phase_execute(*, phase_id: int) -> ResearchSession:
    """The work of a research phase: its description (or name) is the question; the report is stored."""
    phase = Phase.objects.select_related("run__project").filter(pk=phase_id).first()
    if phase is None:
        raise NotFound(f"phase {phase_id} does not exist")
    question = phase.description.strip() or phase.name
    return research_session_run(project=phase.run.project, question=question, run=phase.run, phase=phase)


def research_report_for_run(run_id: int) -> str:
    """Reports of the run's finished research sessions, oldest first, for the next phases' prompts ("" if none)."""
    sessions = ResearchSession.objects.filter(run_id=run_id, status=SessionStatus.COMPLETE).order_by("created_at", "id")
    parts = [f"(research session #{session.pk})\n{session.report.strip()}" for session in sessions if session.report]
    text = "\n\n".join(parts)
    return text if len(text) <= REPORT_CITE_CHARS else text[: REPORT_CITE_CHARS - 1] + "…"
