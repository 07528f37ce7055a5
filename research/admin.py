"""Admin for the research app: ledger entries (filters by status, date, id; full-text search), research
sessions with their evidence and citations, memory items and goal-drift checks."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from research.models import (
    BuildHistoryEntry,
    Citation,
    Evidence,
    GoalDriftCheck,
    MemoryItem,
    ResearchSession,
)
from research.queries import search_entries


class BuildIdFilter(admin.SimpleListFilter):
    """Filter by build id: ids repeat across entries, so this groups every entry of one build."""

    title = "build id"
    parameter_name = "build_id"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        ids = BuildHistoryEntry.objects.order_by("build_id").values_list("build_id", flat=True).distinct()
        return [(build_id, build_id) for build_id in ids[:100]]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(build_id=self.value()) if self.value() else queryset


@admin.register(BuildHistoryEntry)
class BuildHistoryEntryAdmin(admin.ModelAdmin):
    list_display = ("build_id", "title", "date", "status", "project", "source_file", "line_number")
    list_filter = ("status", ("date", admin.DateFieldListFilter), BuildIdFilter, "project", "style")
    search_fields = ("build_id", "title", "summary")
    date_hierarchy = "date"
    readonly_fields = ("entry_key", "content_hash", "raw_markdown", "created_at", "updated_at")
    list_select_related = ("project",)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        """Same search as the dashboard: PostgreSQL full text, icontains on SQLite."""
        if not search_term.strip():
            return queryset, False
        matching = search_entries(query=search_term).values("pk")
        return queryset.filter(pk__in=matching), False


class CitationInline(admin.TabularInline):
    model = Citation
    extra = 0


@admin.register(Evidence)
class EvidenceAdmin(admin.ModelAdmin):
    list_display = ("title", "session", "rank", "source_type", "relevance", "quality")
    list_filter = ("source_type", "quality")
    search_fields = ("title", "content")
    inlines = [CitationInline]


class EvidenceInline(admin.TabularInline):
    model = Evidence
    extra = 0
    fields = ("rank", "source_type", "title", "relevance", "quality", "location")
    readonly_fields = fields
    show_change_link = True


@admin.register(ResearchSession)
class ResearchSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "question", "project", "status", "quality_score", "embedder", "created_at")
    list_filter = ("status", "project", ("created_at", admin.DateFieldListFilter))
    search_fields = ("question", "report")
    inlines = [EvidenceInline]


@admin.register(Citation)
class CitationAdmin(admin.ModelAdmin):
    list_display = ("url", "title", "published_on", "accessed_at")
    search_fields = ("url", "title")
    list_filter = (("published_on", admin.DateFieldListFilter),)


@admin.register(MemoryItem)
class MemoryItemAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "collection", "short_text", "created_at")
    list_filter = ("collection", "project", ("created_at", admin.DateFieldListFilter))
    search_fields = ("text",)

    @admin.display(description="text")
    def short_text(self, item: MemoryItem) -> str:
        return item.text[:80]


@admin.register(GoalDriftCheck)
class GoalDriftCheckAdmin(admin.ModelAdmin):
    list_display = ("attempt", "similarity", "drifted", "threshold", "embedder", "created_at")
    list_filter = ("drifted", "embedder", ("created_at", admin.DateFieldListFilter))
    search_fields = ("attempt__phase__phase_id",)
