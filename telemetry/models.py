"""Telemetry rows: one per LLM call, per estimate, per escalation, per outcome; daily and per-run rollups.

Volume drives the shape. LLM usage events reach tens of millions of rows, so their links to runs, phases and
attempts are foreign keys *without* database constraints (``db_constraint=False``, ``DO_NOTHING``): a
constraint check per insert and a cascade scan per deleted run are costs we do not want, and telemetry must
outlive the rows it describes. ``project_id`` is denormalised onto every event so that scoping by project
never joins through runs. Token splits are nullable: NULL means "the provider did not say", never zero.

Rows are written only through ``telemetry.services``; dashboards read the rollups through ``telemetry.queries``.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

from django.db import models
from django.utils import timezone

MICRO_DOLLARS_PER_USD = Decimal(1_000_000)


def _loose_fk(to: str) -> models.ForeignKey:
    """A nullable link that the database does not enforce and that deleting the target leaves alone."""
    return models.ForeignKey(
        to, null=True, blank=True, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )


class LinkedEvent(models.Model):
    """When an event happened and the project, run, phase and attempt it belongs to (loose links)."""

    occurred_at = models.DateTimeField(default=timezone.now)
    project = _loose_fk("runs.Project")
    run = _loose_fk("runs.Run")
    phase = _loose_fk("runs.Phase")
    attempt = _loose_fk("runs.Attempt")

    class Meta:
        abstract = True


class PriceTable(models.Model):
    """One version of the provider price list; the newest whose ``effective_from`` is not in the future wins."""

    version = models.CharField(max_length=50, unique=True)
    provider = models.CharField(max_length=50, default="anthropic")
    effective_from = models.DateTimeField()
    source = models.TextField(help_text="Where the prices were read, and when.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-effective_from"]
        indexes = [models.Index(fields=["provider", "-effective_from"], name="pricetable_provider_from")]

    def __str__(self) -> str:
        return f"{self.provider} {self.version}"


class ModelPrice(models.Model):
    """USD per million tokens for one model id; its dated snapshots (``-20250929``) and ``-latest`` match too.

    Matching is deliberately narrow: ``claude-opus-4`` does not price ``claude-opus-4-7``, because a newer model
    of the same family may cost something else, and an unknown price must stay NULL rather than be guessed.
    """

    table = models.ForeignKey(PriceTable, on_delete=models.CASCADE, related_name="prices")
    model = models.CharField(max_length=100)
    input_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    output_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    cache_write_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)
    cache_read_per_mtok = models.DecimalField(max_digits=12, decimal_places=6)

    class Meta:
        ordering = ["table", "model"]
        constraints = [models.UniqueConstraint(fields=["table", "model"], name="modelprice_unique_model")]

    def __str__(self) -> str:
        return f"{self.model} @ {self.table.version}"


class LlmRole(models.TextChoices):
    BUILDER = "builder", "Builder"
    AUDITOR = "auditor", "Auditor"
    DOCTOR = "doctor", "Doctor"
    OTHER = "other", "Other"


class LlmUsageEvent(models.Model):
    """One LLM call. ``request_id`` is unique so a retried write cannot count the call twice."""

    request_id = models.CharField(max_length=200, unique=True)
    occurred_at = models.DateTimeField(default=timezone.now)
    provider = models.CharField(max_length=50)
    model = models.CharField(max_length=100)
    role = models.CharField(max_length=32)
    project = _loose_fk("runs.Project")
    run = _loose_fk("runs.Run")
    phase = _loose_fk("runs.Phase")
    attempt = _loose_fk("runs.Attempt")
    input_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    output_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    cache_creation_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    cache_read_tokens = models.PositiveBigIntegerField(null=True, blank=True)
    total_tokens = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Sum of the known parts, or the provider's total when it gave no split."
    )
    cost_usd = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, help_text="NULL when the price is unknown."
    )
    price_table = models.ForeignKey(PriceTable, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    latency_ms = models.PositiveIntegerField(null=True, blank=True)
    stop_reason = models.CharField(max_length=50, blank=True, default="")

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The event list pages by id within a project or a run (keyset); the Doctor baseline walks a run's
            # calls newest first. Only two secondary indexes: each one is paid on every insert.
            models.Index(fields=["project", "id"], name="usage_project_id"),
            models.Index(fields=["run", "id"], name="usage_run_id"),
        ]

    def __str__(self) -> str:
        return f"{self.role} {self.model} {self.request_id}"

    @property
    def has_split(self) -> bool:
        return self.input_tokens is not None and self.output_tokens is not None


class RollupGrain(models.TextChoices):
    DAY = "day", "UTC day"
    MONTH = "month", "UTC month"


NO_PROJECT = 0
ALL_PROJECTS = -1


class UsageRollup(models.Model):
    """Totals per period × project × provider × model × role, kept current as events are written.

    Each call adds to four rows: its UTC day and its month (``grain``), each for its project and for
    ``ALL_PROJECTS`` (-1). The day × project rows are the base; the others exist so that a whole-system
    dashboard (staff) or a monthly view reads a few thousand rows instead of aggregating a year of days ×
    projects. ``project_id`` ``NO_PROJECT`` (0) stands for "no project", so the unique key has no NULLs
    (NULLs never conflict). Token sums add only known values; ``unsplit_events`` and ``unpriced_events`` count
    the calls whose split or price is unknown.
    """

    grain = models.CharField(max_length=8, choices=RollupGrain.choices, default=RollupGrain.DAY)
    period_start = models.DateField(help_text="The UTC day, or the first day of the month.")
    project_id = models.BigIntegerField(default=NO_PROJECT)
    provider = models.CharField(max_length=50)
    model = models.CharField(max_length=100)
    role = models.CharField(max_length=32)
    events = models.PositiveBigIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    cost_micro_usd = models.BigIntegerField(default=0, help_text="USD × 1,000,000: exact, and summed as an integer")
    unsplit_events = models.PositiveBigIntegerField(default=0)
    unpriced_events = models.PositiveBigIntegerField(default=0)
    latency_ms_sum = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["grain", "period_start", "project_id", "provider", "model", "role"]
        constraints = [
            models.UniqueConstraint(
                fields=["grain", "period_start", "project_id", "provider", "model", "role"],
                name="usagerollup_unique_key",
            )
        ]
        indexes = [models.Index(fields=["grain", "project_id", "period_start"], name="usagerollup_scope")]

    def __str__(self) -> str:
        return f"{self.grain} {self.period_start} p{self.project_id} {self.model} {self.role}"

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.cost_micro_usd) / MICRO_DOLLARS_PER_USD


class RunUsageRollup(models.Model):
    """Totals per run × role × model, so run status and consolidated metrics never scan a run's events."""

    run_id = models.BigIntegerField()
    project_id = models.BigIntegerField(default=0)
    role = models.CharField(max_length=32)
    model = models.CharField(max_length=100)
    events = models.PositiveBigIntegerField(default=0)
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_creation_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    cost_micro_usd = models.BigIntegerField(default=0, help_text="USD × 1,000,000: exact, and summed as an integer")
    unsplit_events = models.PositiveBigIntegerField(default=0)
    unpriced_events = models.PositiveBigIntegerField(default=0)
    latency_ms_sum = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["run_id", "role", "model"]
        constraints = [models.UniqueConstraint(fields=["run_id", "role", "model"], name="runusagerollup_unique_key")]

    def __str__(self) -> str:
        return f"run {self.run_id} {self.role} {self.model}"

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.cost_micro_usd) / MICRO_DOLLARS_PER_USD


class TokenEstimationEvent(LinkedEvent):
    """The estimator's prediction for one Builder call against what the call really produced."""

    category = models.CharField(max_length=32)
    complexity = models.CharField(max_length=16)
    deliverable_count = models.PositiveIntegerField()
    predicted = models.PositiveIntegerField()
    actual = models.PositiveIntegerField()
    selected_budget = models.PositiveIntegerField()
    final_ceiling = models.PositiveIntegerField()
    phase_overhead = models.PositiveIntegerField(
        null=True, blank=True, help_text="Overhead term the estimate used; lets calibration move it."
    )
    truncated = models.BooleanField()
    model = models.CharField(max_length=100, blank=True, default="")
    smape = models.FloatField(help_text="200·|a−p|/(|a|+|p|); reported only for events that were not truncated.")
    waste_ratio = models.FloatField(null=True, blank=True, help_text="selected budget / actual output")
    underestimated = models.BooleanField()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["occurred_at"], name="estimation_occurred"),
            models.Index(fields=["run", "id"], name="estimation_run_id"),
        ]

    def __str__(self) -> str:
        return f"{self.category}/{self.complexity} p={self.predicted} a={self.actual}"


class EscalationReason(models.TextChoices):
    TRUNCATED = "truncated", "Output truncated"
    HIGH_UTILISATION = "high_utilisation", "≥ 95 % of the budget used"
    MODEL_LADDER = "model_ladder", "Stronger model"
    REPEATED_FAILURE = "repeated_failure", "Same failure repeated"
    OTHER = "other", "Other"


class BudgetEscalationEvent(LinkedEvent):
    reason = models.CharField(max_length=32, choices=EscalationReason.choices)
    from_budget = models.PositiveIntegerField(null=True, blank=True)
    to_budget = models.PositiveIntegerField(null=True, blank=True)
    output_tokens_used = models.PositiveIntegerField(null=True, blank=True)
    from_model = models.CharField(max_length=100, blank=True, default="")
    to_model = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["run", "id"], name="escalation_run_id")]

    def __str__(self) -> str:
        return f"{self.reason} {self.from_budget}→{self.to_budget}"


class PhaseOutcomeEvent(LinkedEvent):
    """What the finalizer decided for one attempt; failures keep their normalised error signature."""

    outcome = models.CharField(max_length=32, help_text="complete, retry, blocked, failed, skipped")
    reason = models.CharField(max_length=200, blank=True, default="")
    error_text = models.TextField(blank=True, default="")
    error_signature = models.CharField(max_length=64, blank=True, default="", db_index=True)
    category = models.CharField(max_length=32, blank=True, default="")
    complexity = models.CharField(max_length=16, blank=True, default="")
    attempt_number = models.PositiveIntegerField(null=True, blank=True)
    tokens = models.PositiveBigIntegerField(null=True, blank=True)
    duration_ms = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["run", "id"], name="phaseoutcome_run_id")]

    def __str__(self) -> str:
        return f"{self.outcome} {self.reason}"


class DoctorOutcomeEvent(LinkedEvent):
    action = models.CharField(max_length=32, help_text="retry_with_fix, replan, skip_phase, mark_fatal")
    confidence = models.FloatField(null=True, blank=True)
    model = models.CharField(max_length=100, blank=True, default="")
    request_id = models.CharField(max_length=200, blank=True, default="")
    tokens = models.PositiveBigIntegerField(null=True, blank=True)
    rationale = models.TextField(blank=True, default="")
    error_signature = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["run", "id"], name="doctoroutcome_run_id")]

    def __str__(self) -> str:
        return f"{self.action} ({self.confidence})"


class EstimateSource(models.TextChoices):
    RUN_LOCAL = "run_local", "Median of this run's Doctor calls"
    GLOBAL = "global", "Median of the last 100 Doctor calls"
    FALLBACK = "fallback", "Fixed fallback"


class FailureHardeningEvent(LinkedEvent):
    """A deterministic pattern handled a failure, so the Doctor was not called.

    ``doctor_tokens_avoided_estimate`` is a counterfactual: it is never added to spend and is always reported
    with its ``estimate_source`` and ``estimate_sample_size``.
    """

    pattern = models.CharField(max_length=100)
    mitigated = models.BooleanField(default=True)
    error_signature = models.CharField(max_length=64, blank=True, default="")
    detail = models.TextField(blank=True, default="")
    doctor_tokens_avoided_estimate = models.PositiveBigIntegerField()
    estimate_source = models.CharField(max_length=16, choices=EstimateSource.choices)
    estimate_sample_size = models.PositiveIntegerField()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["run", "id"], name="hardening_run_id"),
            models.Index(fields=["attempt"], name="hardening_attempt"),
        ]

    def __str__(self) -> str:
        return f"{self.pattern} (~{self.doctor_tokens_avoided_estimate} tokens avoided, {self.estimate_source})"


class ContextBudgetEvent(LinkedEvent):
    """What the context builder left out (cuts and summaries), in tokens, for one prompt."""

    role = models.CharField(max_length=32, default=LlmRole.BUILDER)
    tokens_included = models.PositiveBigIntegerField()
    tokens_avoided = models.PositiveBigIntegerField()
    files_included = models.PositiveIntegerField(default=0)
    files_cut = models.PositiveIntegerField(default=0)
    files_summarised = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["run", "id"], name="context_run_id")]

    def __str__(self) -> str:
        return f"context {self.tokens_included} in, {self.tokens_avoided} avoided"


def model_mapping_hash(mapping: dict) -> str:
    """A stable hash of a run's model mapping: key order and whitespace do not matter."""
    canonical = json.dumps(mapping or {}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class AbTestResult(models.Model):
    """One ``ab_compare`` invocation: aggregate deltas over its valid pairs (treatment − control)."""

    created_at = models.DateTimeField(default=timezone.now)
    label = models.CharField(max_length=200, blank=True, default="")
    valid = models.BooleanField(help_text="True only when every pair has the same commit and model-mapping hash.")
    pair_count = models.PositiveIntegerField()
    valid_pair_count = models.PositiveIntegerField()
    deltas = models.JSONField(default=dict, help_text="metric -> {mean, median, stdev, total, control, treatment}")
    problems = models.JSONField(default=list)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"A/B {self.pk} ({'valid' if self.valid else 'invalid'})"


class AbPair(models.Model):
    result = models.ForeignKey(AbTestResult, on_delete=models.CASCADE, related_name="pairs")
    control_run = _loose_fk("runs.Run")
    treatment_run = _loose_fk("runs.Run")
    valid = models.BooleanField()
    problems = models.JSONField(default=list)
    control_metrics = models.JSONField(default=dict)
    treatment_metrics = models.JSONField(default=dict)
    token_delta = models.BigIntegerField(help_text="treatment tokens − control tokens (negative = saved)")

    class Meta:
        ordering = ["result", "id"]
        indexes = [models.Index(fields=["treatment_run", "valid"], name="abpair_treatment_valid")]

    def __str__(self) -> str:
        return f"{self.control_run_id} vs {self.treatment_run_id}"


class EstimatorCalibration(models.Model):
    """Overhead coefficients per ``category/complexity`` proposed by ``calibrate_estimator``; applied rows win."""

    created_at = models.DateTimeField(default=timezone.now)
    applied = models.BooleanField(default=False)
    damping = models.FloatField()
    overheads = models.JSONField(help_text='{"backend/medium": 4200, ...}')
    sample_size = models.PositiveIntegerField()
    smape_before = models.FloatField(null=True, blank=True)
    smape_after = models.FloatField(null=True, blank=True)
    held_back = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"calibration {self.pk} ({'applied' if self.applied else 'proposed'})"
