"""Input and output shapes of the runs API. Output serializers read only; inputs are per action."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import Role
from autopack_site.api_errors import redact_json
from runs.models import Attempt, AttemptEvent, Phase, PhaseState, PhaseTransition, Project, Run, RunTransition, Tier

# --- Projects -------------------------------------------------------------------------------------


class ProjectSerializer(serializers.ModelSerializer):
    role = serializers.ChoiceField(
        choices=Role.choices, read_only=True, allow_null=True, help_text="Your role here (owner for staff)."
    )

    class Meta:
        model = Project
        fields = [
            "id",
            "slug",
            "name",
            "repository_path",
            "base_branch",
            "protected_paths",
            "default_test_command",
            "ledger_path",
            "created_at",
            "role",
        ]
        read_only_fields = fields


class ProjectCreateInputSerializer(serializers.ModelSerializer):
    protected_paths = serializers.ListField(child=serializers.CharField(max_length=1000), required=False)

    class Meta:
        model = Project
        fields = [
            "slug",
            "name",
            "repository_path",
            "base_branch",
            "protected_paths",
            "default_test_command",
            "ledger_path",
        ]


# --- Runs -----------------------------------------------------------------------------------------


class BudgetSerializer(serializers.Serializer):
    token_cap = serializers.IntegerField()
    usd_cap = serializers.DecimalField(max_digits=12, decimal_places=4)
    max_phases = serializers.IntegerField()
    max_minutes = serializers.IntegerField()
    max_failures = serializers.IntegerField()
    max_patch_failures = serializers.IntegerField()


class RunSerializer(serializers.ModelSerializer):
    project = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    progress = serializers.FloatField(read_only=True)
    budget = serializers.SerializerMethodField()

    class Meta:
        model = Run
        fields = [
            "id",
            "project",
            "name",
            "state",
            "goal",
            "failure_reason",
            "failure_detail",
            "branch",
            "base_commit",
            "plan_sha256",
            "phases_total",
            "phases_done",
            "progress",
            "tokens_used",
            "cost_usd",
            "failures_count",
            "patch_failures_count",
            "doctor_calls",
            "budget",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(BudgetSerializer)
    def get_budget(self, run: Run) -> dict[str, Any]:
        return BudgetSerializer(run).data


class PhaseSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Phase
        fields = [
            "id",
            "phase_id",
            "name",
            "sequence",
            "category",
            "complexity",
            "state",
            "attempt_count",
            "commit_sha",
        ]
        read_only_fields = fields


class TierSerializer(serializers.ModelSerializer):
    phases = PhaseSummarySerializer(many=True, read_only=True)

    class Meta:
        model = Tier
        fields = ["id", "tier_id", "index", "name", "description", "phases"]
        read_only_fields = fields


class RunTransitionSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunTransition
        fields = ["from_state", "to_state", "actor", "reason", "created_at"]
        read_only_fields = fields


class RunDetailSerializer(RunSerializer):
    tiers = TierSerializer(many=True, read_only=True)
    transitions = RunTransitionSerializer(many=True, read_only=True)

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "model_mapping", "tiers", "transitions"]
        read_only_fields = fields


@extend_schema_field(
    {
        "oneOf": [
            {"type": "object", "description": "The plan as a JSON object (docs/plan-format.md)."},
            {"type": "string", "minLength": 1, "description": "The plan's YAML or JSON text."},
        ]
    }
)
class PlanDocumentField(serializers.JSONField):
    """A plan document: a JSON object, or YAML/JSON text; any other JSON value is a 400."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict | str):
            raise serializers.ValidationError("The plan must be a JSON object or a string.")
        return value


class RunCreateInputSerializer(serializers.Serializer):
    plan = PlanDocumentField(help_text="The plan document: a JSON object, or its YAML/JSON text as a string.")
    source_name = serializers.CharField(max_length=200, default="api", help_text="Where the plan came from.")
    start = serializers.BooleanField(default=False, help_text="Start the run right after import.")
    replace = serializers.BooleanField(default=False, help_text="Replace an identical queued run of this plan.")


class RunCreatedSerializer(serializers.Serializer):
    run = RunDetailSerializer()
    warnings = serializers.ListField(child=serializers.CharField())


class ReasonInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, allow_blank=False)


class CurrentPhaseSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    phase_id = serializers.CharField()
    name = serializers.CharField()
    state = serializers.ChoiceField(choices=PhaseState.choices)
    current_stage = serializers.CharField()
    attempt_count = serializers.IntegerField()


class RunProgressSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    state = serializers.CharField()
    phases_total = serializers.IntegerField()
    phases_done = serializers.IntegerField()
    progress = serializers.FloatField()
    phases_by_state = serializers.DictField(child=serializers.IntegerField())
    current_phase = CurrentPhaseSerializer(allow_null=True)
    tokens_used = serializers.IntegerField()
    token_cap = serializers.IntegerField()
    cost_usd = serializers.DecimalField(max_digits=14, decimal_places=6)
    usd_cap = serializers.DecimalField(max_digits=12, decimal_places=4)


# --- Phases ---------------------------------------------------------------------------------------


class PhaseSerializer(serializers.ModelSerializer):
    tier = serializers.SlugRelatedField(slug_field="tier_id", read_only=True)
    project = serializers.CharField(source="run.project.slug", read_only=True)
    attempts_since_requeue = serializers.IntegerField(read_only=True)

    class Meta:
        model = Phase
        fields = [
            "id",
            "run",
            "project",
            "tier",
            "phase_id",
            "index",
            "sequence",
            "name",
            "description",
            "category",
            "complexity",
            "scope",
            "state",
            "attempt_count",
            "attempts_since_requeue",
            "revision_epoch",
            "escalation_level",
            "last_failure_reason",
            "doctor_calls",
            "lease_owner",
            "lease_expires_at",
            "claim_epoch",
            "commit_sha",
            "tokens_used",
            "cost_usd",
            "current_stage",
            "created_at",
            "started_at",
            "finished_at",
            "updated_at",
        ]
        read_only_fields = fields


class PhaseTransitionSerializer(serializers.ModelSerializer):
    class Meta:
        model = PhaseTransition
        fields = ["from_state", "to_state", "actor", "reason", "claim_epoch", "created_at"]
        read_only_fields = fields


class PhaseDetailSerializer(PhaseSerializer):
    transitions = PhaseTransitionSerializer(many=True, read_only=True)

    class Meta(PhaseSerializer.Meta):
        fields = [*PhaseSerializer.Meta.fields, "builder_hint", "budget_override", "transitions"]
        read_only_fields = fields


# --- Attempts -------------------------------------------------------------------------------------


class AttemptSerializer(serializers.ModelSerializer):
    run = serializers.IntegerField(source="phase.run_id", read_only=True)
    phase_key = serializers.CharField(source="phase.phase_id", read_only=True, help_text="The plan's phase id.")

    class Meta:
        model = Attempt
        fields = [
            "id",
            "run",
            "phase",
            "phase_key",
            "number",
            "claim_epoch",
            "revision_epoch",
            "worker",
            "status",
            "outcome",
            "failure_reason",
            "model",
            "input_tokens",
            "output_tokens",
            "cost_usd",
            "started_at",
            "finished_at",
            "duration_ms",
        ]
        read_only_fields = fields


class AttemptEventSerializer(serializers.ModelSerializer):
    has_blob = serializers.SerializerMethodField()

    class Meta:
        model = AttemptEvent
        fields = ["seq", "stage", "kind", "data", "has_blob", "created_at"]
        read_only_fields = fields

    def get_has_blob(self, event: AttemptEvent) -> bool:
        return bool(event.has_blob)

    def to_representation(self, event: AttemptEvent) -> dict[str, Any]:
        # Events carry text from tools and models (logs, errors); a credential in them must not leave here.
        body = super().to_representation(event)
        body["data"] = redact_json(body["data"])
        return body


class AttemptDetailSerializer(AttemptSerializer):
    events = AttemptEventSerializer(many=True, read_only=True)

    class Meta(AttemptSerializer.Meta):
        fields = [*AttemptSerializer.Meta.fields, "events"]
        read_only_fields = fields


class AttemptDiffSerializer(serializers.Serializer):
    attempt = serializers.IntegerField()
    diff = serializers.CharField(allow_blank=True)


class AttemptSectionSerializer(serializers.Serializer):
    attempt = serializers.IntegerField()
    data = serializers.JSONField(allow_null=True, help_text="The section of the attempt summary, or null.")


class AttemptVerdictsSerializer(serializers.Serializer):
    attempt = serializers.IntegerField()
    auditor = serializers.JSONField(allow_null=True, help_text="{approved, issues, summary}, or null without an audit.")
    gates = serializers.JSONField(allow_null=True, help_text="The finalizer's gate results, or null.")
    decision = serializers.JSONField(allow_null=True, help_text="What the failure policy decided, or null.")
    doctor = serializers.JSONField(allow_null=True, help_text="The Doctor's advice, or null when not consulted.")
