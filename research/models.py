"""Research domain: the build history ledger, research sessions with evidence, and vector memory items.

The database is the source of truth; faiss indexes under ``DATA_DIR`` are caches rebuilt from
:class:`MemoryItem` rows (see ``research.memory``).
"""

from __future__ import annotations

from django.contrib.postgres.search import SearchVectorField
from django.db import models
from django.utils import timezone

from runs.models import Attempt, Phase, Project, Run


class EntryStatus(models.TextChoices):
    COMPLETE = "complete", "Complete"
    IN_PROGRESS = "in_progress", "In progress"
    BLOCKED = "blocked", "Blocked"
    FAILED = "failed", "Failed"
    PROPOSED = "proposed", "Proposed"
    PLANNED = "planned", "Planned"
    UNKNOWN = "unknown", "Unknown"


class BuildHistoryEntryQuerySet(models.QuerySet):
    def for_project(self, project: Project) -> BuildHistoryEntryQuerySet:
        return self.filter(project=project)

    def failures(self) -> BuildHistoryEntryQuerySet:
        return self.filter(status__in=[EntryStatus.FAILED, EntryStatus.BLOCKED])


class BuildHistoryEntry(models.Model):
    """One section of a build ledger. Ids may repeat: identity is ``entry_key`` (id, date, title, occurrence)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="build_history")
    build_id = models.CharField(max_length=100, db_index=True)
    title = models.CharField(max_length=500)
    date = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=EntryStatus.choices, default=EntryStatus.UNKNOWN)
    status_text = models.CharField(max_length=500, blank=True, default="")
    category = models.CharField(max_length=100, blank=True, default="")
    commits = models.JSONField(default=list, blank=True)
    summary = models.TextField(blank=True, default="")
    changes = models.TextField(blank=True, default="")
    files_modified = models.JSONField(default=list, blank=True)
    test_results = models.TextField(blank=True, default="")
    impact = models.TextField(blank=True, default="")
    sections = models.JSONField(default=dict, blank=True, help_text="Every bold-labelled section, repaired.")
    raw_markdown = models.TextField(help_text="The section exactly as read, before any repair.")
    source_file = models.CharField(max_length=1000, blank=True, default="")
    line_number = models.PositiveIntegerField(default=0)
    style = models.CharField(max_length=16, default="heading")
    entry_key = models.CharField(max_length=64)
    content_hash = models.CharField(max_length=64, db_index=True)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="ledger_entries")
    # Filled on PostgreSQL only (GIN-indexed by migration); unused on SQLite.
    search_vector = SearchVectorField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = BuildHistoryEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-date", "-id"]
        verbose_name_plural = "build history entries"
        constraints = [models.UniqueConstraint(fields=["project", "entry_key"], name="ledger_entry_unique_key")]
        indexes = [
            models.Index(fields=["project", "-date"], name="ledger_project_date"),
            # The ledger's fingerprint at every claim (count and latest change, research.insights).
            models.Index(fields=["project", "updated_at"], name="ledger_project_updated"),
        ]

    def __str__(self) -> str:
        return f"{self.build_id}: {self.title}"


class SessionStatus(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETE = "complete", "Complete"
    FAILED = "failed", "Failed"


class ResearchSession(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="research_sessions")
    question = models.TextField()
    status = models.CharField(max_length=16, choices=SessionStatus.choices, default=SessionStatus.RUNNING)
    intent = models.JSONField(default=dict, blank=True)
    report = models.TextField(blank=True, default="")
    quality_score = models.FloatField(default=0.0)
    validation = models.JSONField(default=dict, blank=True, help_text="is_valid, errors, warnings")
    embedder = models.CharField(max_length=200, blank=True, default="")
    sources_enabled = models.JSONField(default=list, blank=True)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="research_sessions")
    phase = models.ForeignKey(Phase, null=True, blank=True, on_delete=models.SET_NULL, related_name="research_sessions")
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"research #{self.pk}: {self.question[:60]}"


class EvidenceQuality(models.TextChoices):
    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"
    UNKNOWN = "unknown", "Unknown"


class SourceType(models.TextChoices):
    LEDGER = "ledger", "Build ledger"
    DOCS = "docs", "Project docs"
    README = "readme", "README"
    MEMORY = "memory", "Vector memory"
    EXTERNAL = "external", "External"


class Evidence(models.Model):
    session = models.ForeignKey(ResearchSession, on_delete=models.CASCADE, related_name="evidence")
    rank = models.PositiveIntegerField()
    source_type = models.CharField(max_length=16, choices=SourceType.choices)
    title = models.CharField(max_length=500)
    content = models.TextField()
    relevance = models.FloatField()
    quality = models.CharField(max_length=8, choices=EvidenceQuality.choices, default=EvidenceQuality.UNKNOWN)
    location = models.CharField(max_length=1000, blank=True, default="")

    class Meta:
        ordering = ["session", "rank"]
        verbose_name_plural = "evidence"

    def __str__(self) -> str:
        return f"[{self.rank}] {self.title}"


class Citation(models.Model):
    evidence = models.ForeignKey(Evidence, on_delete=models.CASCADE, related_name="citations")
    url = models.CharField(max_length=2000)
    title = models.CharField(max_length=500, blank=True, default="")
    published_on = models.DateField(null=True, blank=True)
    accessed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["evidence", "id"]

    def __str__(self) -> str:
        return self.url


class Collection(models.TextChoices):
    CODE = "code", "Code"
    RUN_SUMMARIES = "run_summaries", "Run summaries"
    CI_ERRORS = "ci_errors", "CI errors"
    DOCTOR_HINTS = "doctor_hints", "Doctor hints"
    PLANNING = "planning", "Planning"


class MemoryItem(models.Model):
    """One text remembered for a project; the faiss indexes are rebuilt from these rows."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memory_items")
    collection = models.CharField(max_length=16, choices=Collection.choices)
    text = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["project", "collection", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "collection", "content_hash"], name="memoryitem_unique_content")
        ]
        indexes = [models.Index(fields=["project", "collection", "created_at"], name="memoryitem_collection_age")]

    def __str__(self) -> str:
        return f"{self.collection}: {self.text[:60]}"


class GoalDriftCheck(models.Model):
    """An advisory goal-drift measurement for one attempt, shown to operators."""

    attempt = models.ForeignKey(Attempt, on_delete=models.CASCADE, related_name="goal_drift_checks")
    similarity = models.FloatField()
    drifted = models.BooleanField()
    threshold = models.FloatField()
    embedder = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"drift {self.similarity:.2f} ({'drifted' if self.drifted else 'on goal'})"
