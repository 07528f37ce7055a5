"""Read-only telemetry API, mounted at ``/api/telemetry/`` (routes in ``telemetry/api_urls.py``).

Thin views: validate query parameters, call ``telemetry.queries``, return the figures. Authentication and
permissions are the project defaults (JWT or session, authenticated). Every result is scoped to the projects
the user is a member of (staff see all); a run outside that scope is a 404, not a 403, so ids don't leak.
"""

from __future__ import annotations

from typing import Any

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from autopack_site.api_pagination import CursorPagination
from runs.api import MAX_ID
from runs.models import Run
from telemetry import api_schemas, queries
from telemetry.models import AbTestResult, LlmUsageEvent


def _comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class UsageQuerySerializer(serializers.Serializer):
    period = serializers.ChoiceField(choices=queries.PERIODS, default="day")
    group_by = serializers.CharField(
        required=False, default="", allow_blank=True, help_text="Comma list of provider, model, role, project."
    )
    since = serializers.DateField(required=False)
    until = serializers.DateField(required=False)
    project = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID, help_text="Only this project.")

    def validate_group_by(self, value: str) -> list[str]:
        names = _comma_list(value)
        unknown = sorted(set(names) - set(queries.GROUP_FIELDS))
        if unknown:
            raise serializers.ValidationError(f"unknown group {unknown}; choose from {sorted(queries.GROUP_FIELDS)}")
        return names


class AccuracyQuerySerializer(serializers.Serializer):
    stratify = serializers.CharField(
        required=False, default="", allow_blank=True, help_text="Comma list of category, complexity, deliverables."
    )
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)

    def validate_stratify(self, value: str) -> list[str]:
        names = _comma_list(value)
        unknown = sorted(set(names) - set(queries.STRATA))
        if unknown:
            raise serializers.ValidationError(f"unknown stratum {unknown}; choose from {list(queries.STRATA)}")
        return names


def _project_scope(request: Request, project: int | None) -> list[int] | None:
    allowed = queries.accessible_project_ids(request.user)
    if project is None:
        return allowed
    if allowed is not None and project not in allowed:
        return []
    return [project]


def _visible_run(request: Request, pk: int) -> Run:
    return get_object_or_404(Run.objects.for_user(request.user).distinct(), pk=pk)


class UsageByPeriodView(APIView):
    @extend_schema(
        summary="Token and cost totals per day, week or month",
        parameters=[UsageQuerySerializer],
        responses={200: api_schemas.UsageSerializer},
        tags=["telemetry"],
    )
    def get(self, request: Request) -> Response:
        params = UsageQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        rows = queries.usage_by_period(
            period=data["period"],
            group_by=data["group_by"],
            since=data.get("since"),
            until=data.get("until"),
            project_ids=_project_scope(request, data.get("project")),
        )
        return Response({"period": data["period"], "group_by": data["group_by"], "results": rows})


class RunStatusView(APIView):
    @extend_schema(
        summary="Progress, tokens, cost and budget use of a run",
        responses={200: api_schemas.RunStatusSerializer},
        tags=["telemetry"],
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(queries.run_status(_visible_run(request, pk)))


class RunMetricsView(APIView):
    @extend_schema(
        summary="Consolidated token metrics of a run in four independent categories",
        description="Spent (real), context tokens avoided (measured), Doctor tokens avoided (estimate), "
        "A/B measured delta. The categories never overlap and must not be added together.",
        responses={200: api_schemas.RunMetricsSerializer},
        tags=["telemetry"],
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(queries.run_consolidated_metrics(_visible_run(request, pk)))


class EstimatorAccuracyView(APIView):
    @extend_schema(
        summary="Token estimator accuracy (SMAPE excludes truncated events)",
        parameters=[AccuracyQuerySerializer],
        responses={200: api_schemas.EstimatorAccuracySerializer},
        tags=["telemetry"],
    )
    def get(self, request: Request) -> Response:
        params = AccuracyQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        return Response(
            queries.estimator_accuracy(
                stratify=data["stratify"],
                since=data.get("since"),
                until=data.get("until"),
                project_ids=queries.accessible_project_ids(request.user),
            )
        )


class UsageEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = LlmUsageEvent
        fields = [
            "id",
            "request_id",
            "occurred_at",
            "provider",
            "model",
            "role",
            "project_id",
            "run_id",
            "phase_id",
            "attempt_id",
            "input_tokens",
            "output_tokens",
            "cache_creation_tokens",
            "cache_read_tokens",
            "total_tokens",
            "cost_usd",
            "latency_ms",
            "stop_reason",
        ]


class KeysetPagination(CursorPagination):
    """Cursor (keyset) pages by id: page 10,000 costs what page 1 costs; a malformed cursor is a 400."""

    ordering = "-id"
    page_size = 50
    max_page_size = 500
    page_size_query_param = "page_size"


class EventFilterSerializer(serializers.Serializer):
    run = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    project = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    phase = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    role = serializers.CharField(required=False, allow_blank=True, max_length=100)
    model = serializers.CharField(required=False, allow_blank=True, max_length=200)


EVENT_FILTERS = {"run": "run_id", "project": "project_id", "phase": "phase_id", "role": "role", "model": "model"}


class UsageEventListView(generics.ListAPIView):
    serializer_class = UsageEventSerializer
    pagination_class = KeysetPagination

    @extend_schema(
        summary="LLM usage events, newest first, keyset-paginated",
        parameters=[EventFilterSerializer],
        tags=["telemetry"],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        params = EventFilterSerializer(data=self.request.query_params)
        params.is_valid(raise_exception=True)
        filters = {column: params.validated_data.get(name) for name, column in EVENT_FILTERS.items()}
        return queries.usage_events(project_ids=queries.accessible_project_ids(self.request.user), filters=filters)


class AbResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = AbTestResult
        fields = ["id", "created_at", "label", "valid", "pair_count", "valid_pair_count", "deltas", "problems"]


class AbResultListView(generics.ListAPIView):
    """Stored ``ab_compare`` results. Staff see all; others see results whose runs are all theirs."""

    serializer_class = AbResultSerializer
    pagination_class = KeysetPagination

    @extend_schema(summary="Stored A/B comparison results", tags=["telemetry"])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> Any:
        results = AbTestResult.objects.all()
        allowed = queries.accessible_project_ids(self.request.user)
        if allowed is None:
            return results
        foreign_runs = Run.objects.exclude(project_id__in=allowed).values("pk")
        return results.exclude(pairs__control_run_id__in=foreign_runs).exclude(pairs__treatment_run_id__in=foreign_runs)
