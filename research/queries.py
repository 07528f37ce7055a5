"""Build history queries shared by the admin, the dashboard's build-history pages and the API.

On PostgreSQL, text search uses the GIN-indexed ``search_vector`` column (``django.contrib.postgres.search``)
ranked by ``SearchRank``; on SQLite it falls back to ``icontains`` over id, title, summary and raw text.
"""

from __future__ import annotations

from datetime import date

from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector
from django.db import connection
from django.db.models import Q, QuerySet

from research.models import BuildHistoryEntry
from runs.models import Project

SEARCH_CONFIG = "english"


def search_vector_expression() -> SearchVector:
    """The weighted document a ledger entry is searched by (kept in one place for update and query)."""
    return (
        SearchVector("build_id", weight="A", config=SEARCH_CONFIG)
        + SearchVector("title", weight="A", config=SEARCH_CONFIG)
        + SearchVector("summary", weight="B", config=SEARCH_CONFIG)
        + SearchVector("changes", "impact", "test_results", weight="C", config=SEARCH_CONFIG)
        + SearchVector("raw_markdown", weight="D", config=SEARCH_CONFIG)
    )


def search_entries(
    *,
    project: Project | None = None,
    query: str = "",
    status: str | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
) -> QuerySet[BuildHistoryEntry]:
    """Ledger entries matching every given filter; with a query, best matches first (PostgreSQL)."""
    entries = BuildHistoryEntry.objects.select_related("project")
    if project is not None:
        entries = entries.filter(project=project)
    if status:
        entries = entries.filter(status=status)
    if date_from:
        entries = entries.filter(date__gte=date_from)
    if date_to:
        entries = entries.filter(date__lte=date_to)
    query = query.strip()
    if not query:
        return entries.order_by("-date", "-id")
    if connection.vendor == "postgresql":
        search = SearchQuery(query, search_type="websearch", config=SEARCH_CONFIG)
        exact_id = Q(build_id__iexact=query)
        return (
            entries.filter(Q(search_vector=search) | exact_id)
            .annotate(rank=SearchRank("search_vector", search))
            .order_by("-rank", "-date", "-id")
        )
    return entries.filter(text_filter(query)).order_by("-date", "-id")


def text_filter(query: str) -> Q:
    """SQLite fallback: every word must appear in one of the searched fields."""
    condition = Q()
    for word in query.split():
        condition &= (
            Q(build_id__icontains=word)
            | Q(title__icontains=word)
            | Q(summary__icontains=word)
            | Q(raw_markdown__icontains=word)
        )
    return condition
