"""The runs domain: projects, runs made of tiers and phases, attempts and their stage events.

State changes go only through ``runs.services``; the models hold row-level rules and query vocabulary.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Project(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    repository_path = models.CharField(max_length=1000, help_text="Path of the operator's git repository.")
    base_branch = models.CharField(max_length=200, default="main")
    protected_paths = models.JSONField(default=list, blank=True)
    default_test_command = models.CharField(max_length=1000, blank=True, default="")
    ledger_path = models.CharField(
        max_length=1000, blank=True, default="", help_text="Build history ledger, relative to the repository."
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class RunState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    COMPLETE = "complete", "Complete"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class RunFailureReason(models.TextChoices):
    NONE = "", "—"
    BUDGET_EXHAUSTED = "budget_exhausted", "Budget exhausted"
    POLICY_VIOLATION = "policy_violation", "Policy violation"
    NEEDS_HUMAN = "needs_human", "Needs a human"
    ENVIRONMENT = "environment", "Environment"


# from-state -> allowed to-states. `failed -> running` reopens a run when an operator requeues a phase.
RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    RunState.QUEUED: frozenset({RunState.RUNNING, RunState.CANCELLED}),
    RunState.RUNNING: frozenset({RunState.PAUSED, RunState.COMPLETE, RunState.FAILED, RunState.CANCELLED}),
    RunState.PAUSED: frozenset({RunState.RUNNING, RunState.CANCELLED}),
    RunState.FAILED: frozenset({RunState.RUNNING}),
    RunState.COMPLETE: frozenset(),
    RunState.CANCELLED: frozenset(),
}
RUN_TERMINAL = frozenset({RunState.COMPLETE, RunState.CANCELLED})
RUN_ACTIVE = frozenset({RunState.QUEUED, RunState.RUNNING, RunState.PAUSED})


class RunQuerySet(models.QuerySet):
    def active(self) -> RunQuerySet:
        return self.filter(state__in=RUN_ACTIVE)

    def for_user(self, user: settings.AUTH_USER_MODEL) -> RunQuerySet:
        if user.is_staff or user.is_superuser:
            return self
        return self.filter(project__memberships__user=user)


class Run(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    name = models.CharField(max_length=200)
    state = models.CharField(max_length=16, choices=RunState.choices, default=RunState.QUEUED)
    goal = models.TextField(blank=True, default="")
    plan = models.JSONField(default=dict, help_text="The validated, normalised plan document.")
    plan_sha256 = models.CharField(max_length=64, db_index=True)
    base_commit = models.CharField(max_length=64, blank=True, default="")
    branch = models.CharField(max_length=255, blank=True, default="")
    model_mapping = models.JSONField(default=dict, blank=True)
    cloned_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="clones")

    token_cap = models.PositiveBigIntegerField(default=5_000_000)
    usd_cap = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("50"))
    max_phases = models.PositiveIntegerField(default=25)
    max_minutes = models.PositiveIntegerField(default=120)
    max_failures = models.PositiveIntegerField(default=25)
    max_patch_failures = models.PositiveIntegerField(default=15)

    tokens_used = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    failures_count = models.PositiveIntegerField(default=0)
    patch_failures_count = models.PositiveIntegerField(default=0)
    doctor_calls = models.PositiveIntegerField(default=0)
    phases_total = models.PositiveIntegerField(default=0)
    phases_done = models.PositiveIntegerField(default=0)

    failure_reason = models.CharField(
        max_length=32, choices=RunFailureReason.choices, blank=True, default=RunFailureReason.NONE
    )
    failure_detail = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["state", "created_at"], name="run_state_created"),
            models.Index(fields=["project", "-created_at"], name="run_project_created"),
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name} #{self.pk}"

    def can_transition_to(self, state: str) -> bool:
        return state in RUN_TRANSITIONS[RunState(self.state)]

    def can_cancel(self) -> bool:
        return self.can_transition_to(RunState.CANCELLED)

    def can_pause(self) -> bool:
        return self.can_transition_to(RunState.PAUSED)

    def can_resume(self) -> bool:
        return self.state == RunState.PAUSED

    def can_start(self) -> bool:
        return self.state == RunState.QUEUED

    @property
    def is_finished(self) -> bool:
        return self.state in (RunState.COMPLETE, RunState.FAILED, RunState.CANCELLED)

    @property
    def progress(self) -> float:
        return self.phases_done / self.phases_total if self.phases_total else 0.0

    def default_branch_name(self) -> str:
        return f"autopack/{self.project.slug}-{self.pk}"


class Tier(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tiers")
    index = models.PositiveIntegerField()
    tier_id = models.CharField(max_length=100)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["run", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="tier_unique_run_index"),
            models.UniqueConstraint(fields=["run", "tier_id"], name="tier_unique_run_tier_id"),
        ]

    def __str__(self) -> str:
        return f"{self.tier_id}: {self.name}"


class PhaseState(models.TextChoices):
    QUEUED = "queued", "Queued"
    EXECUTING = "executing", "Executing"
    COMPLETE = "complete", "Complete"
    BLOCKED = "blocked", "Blocked"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class Category(models.TextChoices):
    FEATURE = "feature", "Feature"
    BACKEND = "backend", "Backend"
    FRONTEND = "frontend", "Frontend"
    TESTS = "tests", "Tests"
    DOCS = "docs", "Documentation"
    CONFIG = "config", "Configuration"
    REFACTOR = "refactor", "Refactor"
    BUGFIX = "bugfix", "Bug fix"
    DATABASE = "database", "Database"
    RESEARCH = "research", "Research"


class Complexity(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"


# `executing -> queued` is a retry, a lost lease or a released lease; `queued -> skipped` is an operator
# skipping a phase that never started; blocked/failed -> queued is an operator requeue.
PHASE_TRANSITIONS: dict[str, frozenset[str]] = {
    PhaseState.QUEUED: frozenset({PhaseState.EXECUTING, PhaseState.SKIPPED}),
    PhaseState.EXECUTING: frozenset(
        {PhaseState.COMPLETE, PhaseState.QUEUED, PhaseState.BLOCKED, PhaseState.FAILED, PhaseState.SKIPPED}
    ),
    PhaseState.BLOCKED: frozenset({PhaseState.QUEUED}),
    PhaseState.FAILED: frozenset({PhaseState.QUEUED}),
    PhaseState.COMPLETE: frozenset(),
    PhaseState.SKIPPED: frozenset(),
}
PHASE_DONE = frozenset({PhaseState.COMPLETE, PhaseState.SKIPPED})


class PhaseQuerySet(models.QuerySet):
    def for_user(self, user: settings.AUTH_USER_MODEL) -> PhaseQuerySet:
        if user.is_staff or user.is_superuser:
            return self
        return self.filter(run__project__memberships__user=user)

    def in_order(self) -> PhaseQuerySet:
        return self.order_by("run_id", "tier__index", "index")


class Phase(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="phases")
    tier = models.ForeignKey(Tier, on_delete=models.CASCADE, related_name="phases")
    phase_id = models.CharField(max_length=100)
    index = models.PositiveIntegerField(help_text="Position within the tier.")
    sequence = models.PositiveIntegerField(help_text="Position within the run, over all tiers.")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    category = models.CharField(max_length=16, choices=Category.choices, default=Category.FEATURE)
    complexity = models.CharField(max_length=8, choices=Complexity.choices, default=Complexity.MEDIUM)
    scope = models.JSONField(
        default=dict,
        help_text="paths, read_only_context, deliverables, acceptance_criteria, ci, allow_test_edits, allow_noop",
    )

    state = models.CharField(max_length=16, choices=PhaseState.choices, default=PhaseState.QUEUED)
    attempt_count = models.PositiveIntegerField(default=0)
    attempt_base = models.PositiveIntegerField(
        default=0, help_text="attempt_count when an operator last requeued; limits count attempts since then."
    )
    revision_epoch = models.PositiveIntegerField(default=0)
    escalation_level = models.PositiveIntegerField(default=0)
    last_failure_reason = models.TextField(blank=True, default="")
    failure_fingerprints = models.JSONField(default=list, blank=True)
    doctor_calls = models.PositiveIntegerField(default=0)
    builder_hint = models.TextField(blank=True, default="")
    budget_override = models.PositiveIntegerField(
        null=True, blank=True, help_text="max_tokens chosen by an escalation; survives restarts."
    )

    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claim_epoch = models.PositiveBigIntegerField(default=0)
    lost_leases = models.PositiveIntegerField(default=0, help_text="Consecutive leases lost to the reaper.")
    commit_sha = models.CharField(max_length=64, blank=True, default="")

    tokens_used = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    current_stage = models.CharField(max_length=32, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PhaseQuerySet.as_manager()

    class Meta:
        ordering = ["run", "sequence"]
        constraints = [
            models.UniqueConstraint(fields=["run", "phase_id"], name="phase_unique_run_phase_id"),
            models.UniqueConstraint(fields=["run", "sequence"], name="phase_unique_run_sequence"),
            # At most one phase of a run executes at a time: the database enforces it, not only the claimer.
            models.UniqueConstraint(fields=["run"], condition=Q(state="executing"), name="phase_one_executing_per_run"),
        ]
        indexes = [
            models.Index(fields=["state", "run", "sequence"], name="phase_claim_order"),
            models.Index(fields=["state", "lease_expires_at"], name="phase_lease_expiry"),
            # The claim looks up each running run's first open phase; this keeps that one index probe.
            models.Index(
                fields=["run", "sequence"],
                condition=Q(state__in=["queued", "executing", "blocked", "failed"]),
                name="phase_open_by_run",
            ),
            # Past failures of similar phases, for the Builder's insights at every claim: only phases that
            # carry a failure reason, newest first per category.
            models.Index(
                fields=["category", "-updated_at"],
                condition=~Q(last_failure_reason=""),
                name="phase_failure_by_category",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.phase_id}: {self.name}"

    def can_transition_to(self, state: str) -> bool:
        return state in PHASE_TRANSITIONS[PhaseState(self.state)]

    def can_requeue(self) -> bool:
        return self.state in (PhaseState.BLOCKED, PhaseState.FAILED)

    @property
    def attempts_since_requeue(self) -> int:
        return self.attempt_count - self.attempt_base

    @property
    def deliverables(self) -> list[str]:
        return list(self.scope.get("deliverables", []))

    @property
    def scope_paths(self) -> list[str]:
        return list(self.scope.get("paths", []))


class Actor(models.TextChoices):
    """Kinds of actors recorded on transitions; the free-form `actor` field says which one exactly."""

    USER = "user"
    WORKER = "worker"
    SYSTEM = "system"


class RunTransition(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=16, choices=RunState.choices)
    to_state = models.CharField(max_length=16, choices=RunState.choices)
    actor = models.CharField(max_length=200)
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["run", "created_at"], name="runtransition_run_time")]

    def __str__(self) -> str:
        return f"{self.from_state} → {self.to_state}"


class PhaseTransition(models.Model):
    phase = models.ForeignKey(Phase, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=16, choices=PhaseState.choices)
    to_state = models.CharField(max_length=16, choices=PhaseState.choices)
    actor = models.CharField(max_length=200)
    reason = models.TextField(blank=True, default="")
    claim_epoch = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["phase", "created_at"], name="phasetransition_phase_time")]

    def __str__(self) -> str:
        return f"{self.from_state} → {self.to_state}"


class AttemptStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    ABANDONED = "abandoned", "Abandoned (lease lost or cancelled)"


class Attempt(models.Model):
    phase = models.ForeignKey(Phase, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    claim_epoch = models.PositiveBigIntegerField()
    revision_epoch = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=16, choices=AttemptStatus.choices, default=AttemptStatus.RUNNING)
    outcome = models.CharField(max_length=32, blank=True, default="")
    failure_reason = models.TextField(blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=Decimal("0"))
    diff = models.TextField(blank=True, default="")
    summary = models.JSONField(default=dict, blank=True, help_text="ci delta, verdicts, apply result, ...")
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["phase", "number"]
        constraints = [models.UniqueConstraint(fields=["phase", "number"], name="attempt_unique_phase_number")]
        # Recent failed attempts (whether a category needs a research step, checked at every claim).
        indexes = [models.Index(fields=["status", "started_at"], name="attempt_status_started")]

    def __str__(self) -> str:
        return f"{self.phase.phase_id} attempt {self.number}"


class AttemptEvent(models.Model):
    """One stage event of an attempt's trajectory; large payloads (prompts, responses) are compressed."""

    attempt = models.ForeignKey(Attempt, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    stage = models.CharField(max_length=32)
    kind = models.CharField(max_length=32, default="info")
    data = models.JSONField(default=dict, blank=True)
    blob = models.BinaryField(null=True, blank=True, help_text="zlib-compressed large text (prompt/response)")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["attempt", "seq"]
        constraints = [models.UniqueConstraint(fields=["attempt", "seq"], name="attemptevent_unique_seq")]

    def __str__(self) -> str:
        return f"{self.stage}:{self.kind}"
