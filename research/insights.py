"""What past builds teach the next phase, as plain strings for the engine's context builder.

The engine (``runs/engine/context.py``) imports no Django; the Django side calls these functions and hands
their strings (or the functions as callables) to it:

* :func:`builder_insights` — relevant ledger entries and past failures of similar phases, under a cap.
* :func:`needs_research_step` — whether a phase's category failed repeatedly, so research should go first.
* :func:`goal_anchor` (≤ 2 KB, every Builder prompt) and :func:`goal_reminder` (≤ 512 bytes, Doctor).
* :func:`goal_drift` — embedding similarity of a phase's description and diff summary to the run's goal.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from research.embedders import get_embedder
from research.models import BuildHistoryEntry, EntryStatus
from runs.models import Attempt, AttemptStatus, Phase, PhaseState

GOAL_ANCHOR_BYTES = 2048
GOAL_REMINDER_BYTES = 512
DRIFT_THRESHOLD = 0.7
RESEARCH_FAILURE_THRESHOLD = 3  # failed attempts in one category within the window below
RESEARCH_WINDOW_DAYS = 30
MAX_LEDGER_CANDIDATES = 500
ENTRY_SNIPPET_CHARS = 400


def _truncate_bytes(text: str, limit: int) -> str:
    """At most ``limit`` UTF-8 bytes, cut on a character boundary, marked with an ellipsis when cut."""
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[: limit - len("…".encode())].decode("utf-8", errors="ignore") + "…"


def goal_anchor(goal: str) -> str:
    """The run's goal as the Builder's intention anchor: a short header and the goal, ≤ 2 KB in UTF-8."""
    goal = goal.strip()
    if not goal:
        return ""
    return _truncate_bytes(f"## Run goal (keep every change in service of it)\n{goal}", GOAL_ANCHOR_BYTES)


def goal_reminder(goal: str) -> str:
    """A one-paragraph reminder of the goal for the Doctor, ≤ 512 bytes in UTF-8."""
    goal = " ".join(goal.split())
    if not goal:
        return ""
    return _truncate_bytes(f"Run goal: {goal}", GOAL_REMINDER_BYTES)


@dataclass(frozen=True)
class DriftResult:
    similarity: float
    drifted: bool
    embedder: str
    threshold: float = DRIFT_THRESHOLD


def goal_drift(*, goal: str, text: str) -> DriftResult:
    """Cosine similarity of ``text`` (phase description + diff summary) to ``goal``; advisory only.

    ``drifted`` is true below the 0.7 threshold. The embedder's name is part of the result because the
    same texts score differently under the hashing and the semantic embedder.
    """
    embedder = get_embedder()
    if not goal.strip() or not text.strip():
        return DriftResult(similarity=1.0, drifted=False, embedder=embedder.name)
    vectors = embedder.embed([goal, text])
    similarity = float(np.clip(np.dot(vectors[0], vectors[1]), -1.0, 1.0))
    return DriftResult(similarity=round(similarity, 4), drifted=similarity < DRIFT_THRESHOLD, embedder=embedder.name)


def _overlap(paths: list[str], files: list[str]) -> list[str]:
    """Paths shared exactly, or where one is a directory prefix (``x/``) of the other."""
    shared = []
    for path in paths:
        for other in files:
            if (
                path == other
                or (path.endswith("/") and other.startswith(path))
                or (other.endswith("/") and path.startswith(other))
            ):
                shared.append(other)
    return sorted(set(shared))


def _entry_text(entry: BuildHistoryEntry) -> str:
    return " ".join([entry.build_id, entry.title, entry.category, entry.summary, " ".join(entry.files_modified)])


# Ledger entry vectors by (embedder, digest of the entry's text), so a claim embeds its query and not the
# project's whole ledger again (500 entries cost the hashing embedder ~100 ms). The key is the text itself,
# so an edited entry is embedded afresh; the dict is dropped whole when it reaches the bound.
_ENTRY_VECTORS_MAX = 20_000
_entry_vectors: dict[tuple[str, bytes], np.ndarray] = {}
_entry_vectors_lock = threading.Lock()
_RANKED_FIELDS = ("id", "build_id", "title", "category", "summary", "files_modified", "date", "status")


def _entry_vectors_for(embedder, texts: list[str]) -> np.ndarray:
    keys = [(embedder.name, hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()) for text in texts]
    with _entry_vectors_lock:
        found = [_entry_vectors.get(key) for key in keys]
    missing = [n for n, vector in enumerate(found) if vector is None]
    if missing:
        fresh = embedder.embed([texts[n] for n in missing])
        with _entry_vectors_lock:
            if len(_entry_vectors) + len(missing) > _ENTRY_VECTORS_MAX:
                _entry_vectors.clear()
            for n, vector in zip(missing, fresh, strict=True):
                found[n] = _entry_vectors[keys[n]] = vector
    return np.stack(found) if found else np.zeros((0, embedder.dim), dtype=np.float32)


def _ranked_entries(*, project_id: int, category: str, paths: list[str], goal: str) -> list[BuildHistoryEntry]:
    entries = list(
        BuildHistoryEntry.objects.filter(project_id=project_id)
        .only(*_RANKED_FIELDS)
        .order_by("-date", "-id")[:MAX_LEDGER_CANDIDATES]
    )
    if not entries:
        return []
    embedder = get_embedder()
    query = " ".join([goal, category, " ".join(paths)])
    similarities = _entry_vectors_for(embedder, [_entry_text(entry) for entry in entries]) @ embedder.embed([query])[0]
    scored = []
    for entry, similarity in zip(entries, similarities, strict=True):
        score = float(similarity) + 0.3 * bool(_overlap(paths, entry.files_modified))
        score += 0.1 * (category.lower() in (entry.category + " " + entry.title).lower())
        score += 0.1 * (entry.status in (EntryStatus.FAILED, EntryStatus.BLOCKED))
        scored.append((score, entry))
    scored.sort(key=lambda pair: pair[0], reverse=True)
    return [entry for score, entry in scored if score > 0.05]


def _similar_failures(*, project_id: int, category: str, paths: list[str]) -> list[tuple[Phase, list[str]]]:
    # EXISTS rather than a join to attempts and DISTINCT over every column (the run's plan among them); the
    # partial index phase_failure_by_category holds just the phases with a failure reason.
    failed_attempt = Attempt.objects.filter(phase=OuterRef("pk"), status=AttemptStatus.FAILED)
    failed = (
        Phase.objects.filter(run__project_id=project_id, category=category)
        .exclude(last_failure_reason="")
        .filter(Q(state__in=[PhaseState.FAILED, PhaseState.BLOCKED]) | Q(Exists(failed_attempt)))
        .select_related("run")
        .order_by("-updated_at")[:50]
    )
    found = [(phase, _overlap(paths, phase.scope_paths + phase.deliverables)) for phase in failed]
    found.sort(key=lambda pair: len(pair[1]), reverse=True)
    return found


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def builder_insights(*, project_id: int, category: str, paths: list[str], goal: str = "", max_chars: int = 4000) -> str:
    """Most relevant past ledger entries and past failures of similar phases, at most ``max_chars`` long.

    Similar phases share the category; those whose scope overlaps ``paths`` come first. Returns "" when the
    project has neither entries nor such failures.
    """
    entries = _ranked_entries(project_id=project_id, category=category, paths=paths, goal=goal)
    failures = _similar_failures(project_id=project_id, category=category, paths=paths)
    if not entries and not failures:
        return ""
    lines = [f"## Build history insights (retrieval: {get_embedder().name})"]
    if failures:
        lines.append("### Past failures of similar phases")
        for phase, shared in failures:
            overlap = f"; overlapping files: {', '.join(shared)}" if shared else ""
            lines.append(
                f"- run {phase.run.name}, phase {phase.phase_id} ({phase.category}, {phase.state}{overlap}): "
                + _one_line(phase.last_failure_reason, ENTRY_SNIPPET_CHARS)
            )
    if entries:
        lines.append("### Relevant past builds")
        for entry in entries:
            day = entry.date.isoformat() if entry.date else "undated"
            files = f" Files: {', '.join(entry.files_modified[:5])}." if entry.files_modified else ""
            lines.append(
                f"- {entry.build_id} ({day}, {entry.status}): {entry.title}. "
                + _one_line(entry.summary, ENTRY_SNIPPET_CHARS)
                + files
            )
    return _fit(lines, max_chars)


def _fit(lines: list[str], max_chars: int) -> str:
    """Whole lines while they fit; headings left with nothing under them are dropped."""
    kept: list[str] = []
    used = 0
    for line in lines:
        if used + len(line) + 1 > max_chars:
            break
        kept.append(line)
        used += len(line) + 1
    while kept and kept[-1].startswith("#"):
        kept.pop()
    return "\n".join(kept)


# --- at every claim -------------------------------------------------------------------------------------
#
# ``builder_insights`` costs several queries and a ranking; a claim only needs them again when their inputs
# changed. One statement reads a fingerprint of those inputs: the project's ledger (count and latest
# ``updated_at``: an import or edit moves it), its phases of the category that carry a failure reason (count
# and latest ``updated_at``: every transition and finish moves it), and the recent failed attempts of the
# category, counted up to the research threshold (exact, so the research rule never reads a stale count).
# The text is cached per process under that fingerprint, so it is never stale; only a renamed run shows its
# old name until the next change.
_FINGERPRINT_SQL = """
SELECT
    (SELECT count(*) FROM {ledger} WHERE project_id = %(project)s),
    (SELECT max(updated_at) FROM {ledger} WHERE project_id = %(project)s),
    (SELECT count(*) FROM {phase} p JOIN {run} r ON r.id = p.run_id
        WHERE r.project_id = %(project)s AND p.category = %(category)s AND p.last_failure_reason <> ''),
    (SELECT max(p.updated_at) FROM {phase} p JOIN {run} r ON r.id = p.run_id
        WHERE r.project_id = %(project)s AND p.category = %(category)s AND p.last_failure_reason <> ''),
    (SELECT count(*) FROM (
        SELECT 1 FROM {attempt} a JOIN {phase} p ON p.id = a.phase_id JOIN {run} r ON r.id = p.run_id
        WHERE a.status = %(failed)s AND a.started_at >= %(since)s AND p.category = %(category)s
            AND r.project_id = %(project)s
        LIMIT %(threshold)s
    ) recent)
"""
_INSIGHTS_CACHE_MAX = 2_000
_insights_cache: dict[tuple, str] = {}
_insights_cache_lock = threading.Lock()


@functools.cache
def _fingerprint_sql() -> str:
    from django.db import connection

    from runs.models import Run

    quote = connection.ops.quote_name
    return _FINGERPRINT_SQL.format(
        ledger=quote(BuildHistoryEntry._meta.db_table),
        phase=quote(Phase._meta.db_table),
        run=quote(Run._meta.db_table),
        attempt=quote(Attempt._meta.db_table),
    )


def claim_insights(*, project_id: int, category: str, paths: list[str], goal: str) -> tuple[str, bool]:
    """``builder_insights`` and ``needs_research_step`` for a claim: one query when nothing they read changed."""
    from django.db import connection

    from autopack_site.lib.prepared import fetchone_prepared

    since = timezone.now() - timedelta(days=RESEARCH_WINDOW_DAYS)
    row = fetchone_prepared(
        _fingerprint_sql(),
        {
            "project": project_id,
            "category": category,
            "failed": AttemptStatus.FAILED,
            "since": connection.ops.adapt_datetimefield_value(since),
            "threshold": RESEARCH_FAILURE_THRESHOLD,
        },
    )
    needs_research = row[4] >= RESEARCH_FAILURE_THRESHOLD
    key = (project_id, category, tuple(paths), goal, get_embedder().name, tuple(row))
    with _insights_cache_lock:
        text = _insights_cache.get(key)
    if text is None:
        text = builder_insights(project_id=project_id, category=category, paths=paths, goal=goal)
        with _insights_cache_lock:
            if len(_insights_cache) >= _INSIGHTS_CACHE_MAX:
                _insights_cache.clear()
            _insights_cache[key] = text
    return text, needs_research


def needs_research_step(*, project_id: int, category: str, now: datetime | None = None) -> bool:
    """True when phases of this category failed repeatedly lately (≥ 3 failed attempts in 30 days)."""
    since = (now or timezone.now()) - timedelta(days=RESEARCH_WINDOW_DAYS)
    # Counting stops at the threshold; index attempt_status_started keeps the scan to recent failures.
    failed_attempts = Attempt.objects.filter(
        phase__run__project_id=project_id,
        phase__category=category,
        status=AttemptStatus.FAILED,
        started_at__gte=since,
    )[:RESEARCH_FAILURE_THRESHOLD].count()
    return failed_attempts >= RESEARCH_FAILURE_THRESHOLD


def memory_context(
    *,
    project_id: int,
    query: str,
    collections: tuple[str, ...] = ("doctor_hints", "ci_errors", "run_summaries"),
    per_collection: int = 3,
    max_chars: int = 3000,
) -> str:
    """Remembered hints, CI errors and run summaries closest to ``query``, under ``max_chars`` ("" if none).

    The heading names the embedder, so whoever reads the prompt knows which retrieval produced it.
    """
    from research.memory import memory_search

    lines: list[str] = []
    for collection in collections:
        hits = memory_search(
            project_id=project_id, collection=collection, query=query, limit=per_collection, min_score=0.1
        )
        lines += [f"- [{collection}] {_one_line(hit.text, ENTRY_SNIPPET_CHARS)}" for hit in hits]
    if not lines:
        return ""
    return _fit([f"## Retrieved memory (retrieval: {get_embedder().name})", *lines], max_chars)
