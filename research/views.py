"""Dashboard build-history browser: ledger entries by date, status and build id, with full-text search.

Searching is ``research.queries.search_entries`` (PostgreSQL full-text search, ``icontains`` on SQLite);
this view only scopes it to the projects the user belongs to and paginates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from autopack_site.dashboard_auth import ProjectAccess, login_required_page
from research.models import BuildHistoryEntry, EntryStatus
from research.queries import search_entries
from runs.models import Project

ENTRIES_PER_PAGE = 50


def _date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


@dataclass(frozen=True)
class HistoryFilters:
    query: str
    status: str
    project: str
    date_from: date | None
    date_to: date | None
    page: str

    @classmethod
    def from_request(cls, request: HttpRequest) -> HistoryFilters:
        status = request.GET.get("status", "")
        return cls(
            query=request.GET.get("q", "").strip()[:200],
            status=status if status in EntryStatus.values else "",
            project=request.GET.get("project", ""),
            date_from=_date(request.GET.get("from", "")),
            date_to=_date(request.GET.get("to", "")),
            page=request.GET.get("page", "1"),
        )

    @property
    def is_filtered(self) -> bool:
        return bool(self.query or self.status or self.project or self.date_from or self.date_to)


def _entries(access: ProjectAccess, filters: HistoryFilters) -> QuerySet[BuildHistoryEntry]:
    entries = search_entries(
        query=filters.query, status=filters.status, date_from=filters.date_from, date_to=filters.date_to
    )
    project_ids = access.project_ids()
    if project_ids is not None:
        entries = entries.filter(project_id__in=project_ids)
    if filters.project:
        entries = entries.filter(project__slug=filters.project)
    # The list shows neither the raw markdown nor the parsed sections: don't ship them from the database.
    return entries.defer("raw_markdown", "sections", "changes", "test_results", "impact", "search_vector")


@login_required_page
def history_list(request: HttpRequest) -> HttpResponse:
    access = ProjectAccess(request)
    filters = HistoryFilters.from_request(request)
    page = Paginator(_entries(access, filters), ENTRIES_PER_PAGE).get_page(filters.page)
    project_ids = access.project_ids()
    projects = Project.objects.only("slug", "name")
    context = {
        "page": page,
        "filters": filters,
        "statuses": EntryStatus.choices,
        "projects": projects if project_ids is None else projects.filter(pk__in=project_ids),
        "query_string": request.GET.urlencode(),
    }
    return render(request, "research/history_list.html", context)


@login_required_page
def history_detail(request: HttpRequest, entry_id: int) -> HttpResponse:
    access = ProjectAccess(request)
    entry = get_object_or_404(BuildHistoryEntry.objects.select_related("project", "run"), pk=entry_id)
    access.require_view(entry.project_id)
    return render(request, "research/history_detail.html", {"entry": entry})
