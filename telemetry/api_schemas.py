"""Response shapes of the telemetry read endpoints, for the OpenAPI schema.

The views return what ``telemetry.queries`` computes (plain dicts); these serializers only document those
dicts, field for field, so that clients and the schema fuzzer can check every figure's type.
``tests/telemetry/test_api_schemas.py`` validates real responses against the generated schema, with extra
fields refused, so a figure added to a query and not here fails the suite.
"""

from __future__ import annotations

from rest_framework import serializers

from runs.models import RunFailureReason, RunState
from telemetry.models import EstimateSource

DECIMAL_USD = r"^-?[0-9]+\.[0-9]{6}$"


def _usd(help_text: str = "US dollars, an exact decimal string with six places.") -> serializers.RegexField:
    return serializers.RegexField(DECIMAL_USD, help_text=help_text)


class SumsSerializer(serializers.Serializer):
    """Token and cost totals of a set of LLM calls."""

    events = serializers.IntegerField(help_text="LLM calls.")
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cache_creation_tokens = serializers.IntegerField()
    cache_read_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cost_usd = _usd()
    unsplit_events = serializers.IntegerField(
        help_text="Calls whose input/output split is unknown: their tokens are only in total_tokens."
    )
    unpriced_events = serializers.IntegerField(help_text="Calls without a known price: missing from cost_usd.")


class UsageRowSerializer(SumsSerializer):
    """One period (and group) of usage."""

    period = serializers.DateField(help_text="First day of the period.")
    provider = serializers.CharField(required=False, help_text="With group_by=provider.")
    model = serializers.CharField(required=False, help_text="With group_by=model.")
    role = serializers.CharField(required=False, help_text="With group_by=role.")
    project = serializers.IntegerField(
        required=False, allow_null=True, help_text="With group_by=project; null: calls recorded without a project."
    )


class UsageSerializer(serializers.Serializer):
    period = serializers.ChoiceField(choices=["day", "week", "month"])
    group_by = serializers.ListField(child=serializers.CharField())
    results = UsageRowSerializer(many=True)


class RunStatusSerializer(serializers.Serializer):
    run_id = serializers.IntegerField()
    project_id = serializers.IntegerField()
    state = serializers.ChoiceField(choices=RunState.choices)
    failure_reason = serializers.ChoiceField(choices=RunFailureReason.choices, allow_blank=True)
    phases_total = serializers.IntegerField()
    phases_done = serializers.IntegerField(help_text="Complete or skipped.")
    phase_states = serializers.DictField(child=serializers.IntegerField(), help_text="Phases per state.")
    progress = serializers.FloatField(help_text="phases_done / phases_total, 0 to 1.")
    tokens = serializers.IntegerField()
    cost_usd = _usd()
    llm_calls = serializers.IntegerField()
    unpriced_calls = serializers.IntegerField()
    token_cap = serializers.IntegerField(help_text="0: no token cap.")
    usd_cap = serializers.CharField(help_text="US dollars, a decimal string; 0: no dollar cap.")
    token_budget_used = serializers.FloatField(allow_null=True, help_text="tokens / token_cap; null without a cap.")
    usd_budget_used = serializers.FloatField(allow_null=True, help_text="cost_usd / usd_cap; null without a cap.")
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class RoleSpendSerializer(serializers.Serializer):
    events = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cost_usd = _usd()


class SpentSerializer(SumsSerializer):
    """What the run's LLM calls really cost: totals, and per role."""

    by_role = serializers.DictField(child=RoleSpendSerializer(), help_text="Spend per LLM role (builder, auditor…).")


class ContextAvoidedSerializer(serializers.Serializer):
    tokens = serializers.IntegerField(help_text="Tokens the context builder left out of prompts (measured).")
    tokens_included = serializers.IntegerField()
    prompts = serializers.IntegerField()


class EstimateCoverageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    total_n = serializers.IntegerField(help_text="Sample size behind the estimates.")
    tokens = serializers.IntegerField()


class DoctorAvoidedSerializer(serializers.Serializer):
    tokens = serializers.IntegerField(help_text="Doctor tokens avoided by failure hardening (an estimate).")
    events = serializers.IntegerField()
    coverage = serializers.DictField(
        child=EstimateCoverageSerializer(),
        help_text=f"Per estimate source ({', '.join(EstimateSource.values)}).",
    )
    is_estimate = serializers.BooleanField()


class AbDeltaSerializer(serializers.Serializer):
    tokens = serializers.IntegerField(help_text="Treatment minus control.")
    ab_result_id = serializers.IntegerField()
    control_run_id = serializers.IntegerField()
    treatment_run_id = serializers.IntegerField()


class RunMetricsSerializer(serializers.Serializer):
    run_id = serializers.IntegerField()
    spent = SpentSerializer(help_text="The only category that is money actually spent.")
    context_tokens_avoided = ContextAvoidedSerializer()
    doctor_tokens_avoided_estimate = DoctorAvoidedSerializer()
    ab_measured_delta = AbDeltaSerializer(
        allow_null=True, help_text="The latest valid A/B pair with this run as treatment; null if none."
    )


class AccuracyFiguresSerializer(serializers.Serializer):
    events = serializers.IntegerField()
    clean_events = serializers.IntegerField(help_text="Events that were not truncated (the SMAPE sample).")
    smape_median = serializers.FloatField(allow_null=True)
    smape_p90 = serializers.FloatField(allow_null=True)
    underestimation_rate = serializers.FloatField(allow_null=True)
    truncation_rate = serializers.FloatField(allow_null=True)
    waste_ratio_median = serializers.FloatField(allow_null=True)
    waste_ratio_p90 = serializers.FloatField(allow_null=True)


class EstimatorAccuracySerializer(serializers.Serializer):
    overall = AccuracyFiguresSerializer()
    strata = serializers.DictField(
        child=serializers.DictField(child=AccuracyFiguresSerializer()),
        help_text="Per requested stratum (category, complexity, deliverables), figures per value.",
    )
