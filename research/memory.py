"""Vector memory: per-project faiss collections persisted under ``settings.DATA_DIR``.

The rows of :class:`research.models.MemoryItem` are the truth; each (embedder, project, collection) has a
faiss ``IndexIDMap2(IndexFlatIP)`` over L2-normalised vectors (so inner product is cosine similarity),
keyed by the row id and stored at ``DATA_DIR/memory/<embedder>/project-<id>/<collection>.faiss``. An index
that is missing or disagrees with the rows is rebuilt from the database on first use.

Interface used by others:

* :func:`active_embedder_name` — cheap, never raises; ``/health`` and the dashboard show it.
* :func:`memory_add`, :func:`memory_search` (hits carry the embedder name), :func:`memory_rebuild`,
  :func:`memory_apply_retention`.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from research.embedders import (
    HASHING_NAME,
    SEMANTIC_NAME,
    Embedder,
    EmbedderUnavailable,
    configuration_problem,
    get_embedder,
    requested_kind,
)
from research.models import Collection, MemoryItem

COLLECTIONS: tuple[str, ...] = tuple(Collection.values)
DEFAULT_MAX_AGE_DAYS = 180
DEFAULT_MAX_ITEMS = 5000

__all__ = [
    "COLLECTIONS",
    "EmbedderUnavailable",
    "MemoryHit",
    "active_embedder_name",
    "memory_add",
    "memory_apply_retention",
    "memory_rebuild",
    "memory_search",
]


def active_embedder_name() -> str:
    """Name of the embedder retrieval uses now, e.g. ``hashing-ngram-384``.

    When the configured embedder cannot load, the answer starts with ``unavailable:`` and says why, so
    ``/health`` shows the problem instead of a silently weaker retrieval. Cheap (imports no torch) and
    never raises.
    """
    try:
        problem = configuration_problem()
        if problem:
            return f"unavailable: {problem}"
        return SEMANTIC_NAME if requested_kind() == "semantic" else HASHING_NAME
    except Exception as exc:  # /health must answer whatever happens here
        return f"error: {exc}"


@dataclass(frozen=True)
class MemoryHit:
    item_id: int
    collection: str
    text: str
    score: float
    embedder: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _index_path(embedder: Embedder, project_id: int, collection: str) -> Path:
    return Path(settings.DATA_DIR) / "memory" / embedder.name / f"project-{project_id}" / f"{collection}.faiss"


SEARCH_THREADS = 1


def _faiss():
    """faiss, imported on first use: loading it logs and costs time that ``/health`` and commands don't need."""
    import faiss

    # Searches here are one query at a time, in several worker processes on a few cores: OpenMP threads
    # only contend (measured by bench/retrieval.py: one thread is faster at 100,000 vectors).
    faiss.omp_set_num_threads(SEARCH_THREADS)
    return faiss


# One lock per process: faiss indexes are not safe to mutate from several threads at once.
_lock = threading.RLock()


def _empty_index(dim: int):
    faiss = _faiss()
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _write(index, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    _faiss().write_index(index, str(temporary))
    temporary.replace(path)  # atomic: a reader never sees a half-written index


def _build(embedder: Embedder, project_id: int, collection: str) -> Any:
    rows = list(
        MemoryItem.objects.filter(project_id=project_id, collection=collection).order_by("id").values_list("id", "text")
    )
    index = _empty_index(embedder.dim)
    if rows:
        ids = np.array([row[0] for row in rows], dtype=np.int64)
        index.add_with_ids(embedder.embed([row[1] for row in rows]), ids)
    _write(index, _index_path(embedder, project_id, collection))
    return index


def _load(embedder: Embedder, project_id: int, collection: str) -> Any:
    """The persisted index, rebuilt from the database when missing, unreadable or out of step with it."""
    path = _index_path(embedder, project_id, collection)
    expected = MemoryItem.objects.filter(project_id=project_id, collection=collection).count()
    if path.exists():
        try:
            index = _faiss().read_index(str(path))
        except RuntimeError:
            index = None
        if index is not None and index.ntotal == expected and index.d == embedder.dim:
            return index
    return _build(embedder, project_id, collection)


def _check_collection(collection: str) -> None:
    if collection not in COLLECTIONS:
        raise ValueError(f"unknown memory collection {collection!r}; expected one of {', '.join(COLLECTIONS)}")


def memory_add(*, project_id: int, collection: str, text: str, metadata: dict[str, Any] | None = None) -> MemoryItem:
    """Remember ``text`` in a project's collection (idempotent on identical text) and index it."""
    _check_collection(collection)
    embedder = get_embedder()
    content_hash = _content_hash(text)
    rows = MemoryItem.objects.filter(project_id=project_id, collection=collection)
    with _lock, transaction.atomic():
        existing = rows.filter(content_hash=content_hash).first()
        if existing is not None:
            return existing
        # Load before inserting: the index then agrees with the row count and needs no rebuild.
        index = _load(embedder, project_id, collection)
        item = MemoryItem.objects.create(
            project_id=project_id,
            collection=collection,
            content_hash=content_hash,
            text=text,
            metadata=metadata or {},
        )
        index.add_with_ids(embedder.embed([text]), np.array([item.pk], dtype=np.int64))
        _write(index, _index_path(embedder, project_id, collection))
    return item


def memory_search(
    *, project_id: int, collection: str, query: str, limit: int = 5, min_score: float = 0.0
) -> list[MemoryHit]:
    """The ``limit`` items most similar to ``query``, best first; each hit names the embedder used."""
    _check_collection(collection)
    embedder = get_embedder()
    with _lock:
        index = _load(embedder, project_id, collection)
    if index.ntotal == 0 or not query.strip():
        return []
    scores, ids = index.search(embedder.embed([query]), min(limit, index.ntotal))
    found = {item.pk: item for item in MemoryItem.objects.filter(pk__in=[int(i) for i in ids[0] if i >= 0])}
    hits = []
    for score, item_id in zip(scores[0], ids[0], strict=True):
        item = found.get(int(item_id))
        if item is not None and float(score) >= min_score:
            hits.append(MemoryHit(item.pk, collection, item.text, float(score), embedder.name, item.metadata))
    return hits


def memory_rebuild(*, project_id: int, collections: tuple[str, ...] = COLLECTIONS) -> dict[str, int]:
    """Rebuild a project's indexes from the database; returns the vector count per collection."""
    embedder = get_embedder()
    with _lock:
        return {collection: _build(embedder, project_id, collection).ntotal for collection in collections}


def memory_apply_retention(
    *,
    project_id: int,
    max_age_days: int = DEFAULT_MAX_AGE_DAYS,
    max_items: int = DEFAULT_MAX_ITEMS,
    now: Any = None,
) -> int:
    """Delete items older than ``max_age_days`` and all but the newest ``max_items`` per collection.

    Returns how many items were deleted; the touched indexes are rebuilt so they never point at gone rows.
    """
    cutoff = (now or timezone.now()) - timedelta(days=max_age_days)
    deleted = 0
    touched = []
    for collection in COLLECTIONS:
        rows = MemoryItem.objects.filter(project_id=project_id, collection=collection)
        removed, _ = rows.filter(created_at__lt=cutoff).delete()
        keep = list(rows.order_by("-created_at", "-id").values_list("id", flat=True)[:max_items])
        extra, _ = rows.exclude(id__in=keep).delete()
        if removed or extra:
            touched.append(collection)
            deleted += removed + extra
    if touched:
        memory_rebuild(project_id=project_id, collections=tuple(touched))
    return deleted
