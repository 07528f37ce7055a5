"""Source discovery for research sessions: local corpora first, external sources only when switched on.

Local corpora: the project's build ledger (database), its README and ``docs/`` markdown (read from
``Project.repository_path``), and its vector memory. External sources implement :class:`ExternalSource`
and are listed by dotted path in ``settings.AUTOPACK["RESEARCH_EXTERNAL_SOURCES"]`` (empty by default, so
no research ever leaves the machine unless an operator asks for it).

Relevance = 0.6 · cosine similarity (active embedder) + 0.4 · share of the key concepts the text contains.
Duplicates (same citation URL, or same normalised text) keep their most relevant copy; ranking is by
relevance, then title for a stable order.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from research.embedders import Embedder
from research.intent import ClarifiedIntent
from research.memory import COLLECTIONS, memory_search
from research.models import BuildHistoryEntry, SourceType
from runs.models import Project

SIMILARITY_WEIGHT = 0.6
CONCEPT_WEIGHT = 0.4
MAX_DOC_FILES = 200
MAX_DOC_BYTES = 256 * 1024
CHUNK_CHARS = 1500


@dataclass
class DiscoveredSource:
    source_type: str
    title: str
    content: str
    url: str
    location: str = ""
    published_on: date | None = None
    relevance: float = 0.0
    metadata: dict = field(default_factory=dict)


class ExternalSource(Protocol):
    """A pluggable source outside the machine (web, papers, ...). Never enabled by default."""

    name: str

    def discover(self, intent: ClarifiedIntent) -> list[DiscoveredSource]: ...


# --- local corpora ------------------------------------------------------------------------------


def ledger_sources(project: Project) -> list[DiscoveredSource]:
    sources = []
    for entry in BuildHistoryEntry.objects.filter(project=project).order_by("-date", "-id"):
        text = "\n".join(part for part in (entry.summary, entry.changes, entry.impact, entry.test_results) if part)
        sources.append(
            DiscoveredSource(
                source_type=SourceType.LEDGER,
                title=f"{entry.build_id}: {entry.title}",
                content=text or entry.raw_markdown,
                url=f"autopack://{project.slug}/ledger/{entry.pk}",
                location=f"{Path(entry.source_file).name or 'ledger'}:{entry.line_number}",
                published_on=entry.date,
                metadata={"status": entry.status},
            )
        )
    return sources


def _markdown_chunks(text: str) -> list[tuple[int, str, str]]:
    """(first line, heading, text) per heading-delimited chunk, long chunks cut at ``CHUNK_CHARS``."""
    chunks: list[tuple[int, str, str]] = []
    heading, start, lines = "", 1, []
    for number, line in enumerate(text.split("\n"), start=1):
        if re.match(r"^#{1,4}\s", line) and lines:
            chunks.append((start, heading, "\n".join(lines)))
            lines, start = [], number
        if re.match(r"^#{1,4}\s", line):
            heading = line.lstrip("#").strip()
        lines.append(line)
    if lines:
        chunks.append((start, heading, "\n".join(lines)))
    return [(line, title, body[:CHUNK_CHARS]) for line, title, body in chunks if body.strip()]


def _doc_files(root: Path) -> list[Path]:
    readmes = sorted(path for path in root.glob("README*") if path.is_file())
    docs_dir = root / "docs"
    docs = sorted(docs_dir.rglob("*.md")) if docs_dir.is_dir() else []
    return (readmes + docs)[:MAX_DOC_FILES]


def document_sources(project: Project) -> list[DiscoveredSource]:
    root = Path(project.repository_path)
    if not project.repository_path or not root.is_dir():
        return []
    sources = []
    for path in _doc_files(root):
        if path.stat().st_size > MAX_DOC_BYTES:
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        modified = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC).date()
        kind = SourceType.README if path.parent == root else SourceType.DOCS
        relative = path.relative_to(root).as_posix()
        for line, heading, body in _markdown_chunks(text):
            sources.append(
                DiscoveredSource(
                    source_type=kind,
                    title=f"{relative}: {heading}" if heading else relative,
                    content=body,
                    url=f"{path.resolve().as_uri()}#L{line}",
                    location=f"{relative}:{line}",
                    published_on=modified,
                )
            )
    return sources


def memory_sources(project: Project, intent: ClarifiedIntent, *, per_collection: int = 3) -> list[DiscoveredSource]:
    sources = []
    for collection in COLLECTIONS:
        for hit in memory_search(
            project_id=project.pk, collection=collection, query=intent.original_query, limit=per_collection
        ):
            sources.append(
                DiscoveredSource(
                    source_type=SourceType.MEMORY,
                    title=f"memory/{collection} #{hit.item_id}",
                    content=hit.text,
                    url=f"autopack://{project.slug}/memory/{collection}/{hit.item_id}",
                    location=f"{collection}:{hit.item_id}",
                    metadata={"embedder": hit.embedder, "score": hit.score},
                )
            )
    return sources


def external_sources() -> list[ExternalSource]:
    paths = settings.AUTOPACK.get("RESEARCH_EXTERNAL_SOURCES", [])
    return [import_string(path)() for path in paths]


# --- scoring ------------------------------------------------------------------------------------


def concept_coverage(text: str, concepts: list[str]) -> float:
    if not concepts:
        return 0.0
    lowered = text.lower()
    return sum(concept in lowered for concept in concepts) / len(concepts)


def score_sources(sources: list[DiscoveredSource], intent: ClarifiedIntent, embedder: Embedder) -> None:
    """Set each source's relevance to the question, in place."""
    if not sources:
        return
    vectors = embedder.embed([intent.original_query, *[f"{source.title}\n{source.content}" for source in sources]])
    similarities = vectors[1:] @ vectors[0]
    for source, similarity in zip(sources, similarities, strict=True):
        coverage = concept_coverage(f"{source.title}\n{source.content}", intent.key_concepts)
        source.relevance = round(SIMILARITY_WEIGHT * max(float(similarity), 0.0) + CONCEPT_WEIGHT * coverage, 4)


def _fingerprint(text: str) -> str:
    return hashlib.sha256(" ".join(text.lower().split())[:500].encode("utf-8")).hexdigest()


def deduplicate(sources: list[DiscoveredSource]) -> list[DiscoveredSource]:
    """One copy per citation URL and per normalised text: the most relevant one."""
    kept: list[DiscoveredSource] = []
    seen: set[str] = set()
    for source in sorted(sources, key=lambda item: -item.relevance):
        keys = {"url:" + source.url, "text:" + _fingerprint(source.content)}
        if keys & seen:
            continue
        seen |= keys
        kept.append(source)
    return kept


def rank(sources: list[DiscoveredSource], *, limit: int = 8, min_relevance: float = 0.05) -> list[DiscoveredSource]:
    ordered = sorted(sources, key=lambda item: (-item.relevance, item.title))
    return [source for source in ordered if source.relevance >= min_relevance][:limit]


def discover(
    *, project: Project, intent: ClarifiedIntent, embedder: Embedder, include_external: bool = False, limit: int = 8
) -> list[DiscoveredSource]:
    """Gather, score, de-duplicate and rank sources for ``intent``; best first, at most ``limit``."""
    sources = ledger_sources(project) + document_sources(project) + memory_sources(project, intent)
    if include_external:
        for source in external_sources():
            sources += source.discover(intent)
    score_sources(sources, intent, embedder)
    return rank(deduplicate(sources), limit=limit)


def today() -> date:
    return datetime.now(tz=UTC).date()
