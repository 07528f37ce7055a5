"""The runs REST API: projects, runs, phases and attempts.

Views are thin: validate input with a serializer, call a service (``runs.services``) or a scoped
queryset, serialize the result. Ownership is decided once, in ``get_queryset`` (objects of projects the
user is not a member of do not exist for them: 404); roles are checked as object permissions (403).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import BooleanField, Count, ExpressionWrapper, OuterRef, Prefetch, Q, QuerySet, Subquery, Value
from django.db.models.fields import CharField
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import Membership, Role
from accounts.permissions import HasProjectRole, ReadWriteScope
from accounts.services import projects_visible_to
from autopack_site.api_errors import ANY_SEGMENT, IdLookupMixin
from autopack_site.api_pagination import IdCursorPagination, OldestFirstCursorPagination
from runs import serializers as out
from runs.models import Attempt, AttemptEvent, AttemptStatus, Phase, PhaseState, Project, Run, RunState, Tier
from runs.services import control
from runs.services.plan import plan_import

MAX_ID = 2**63 - 1  # the largest primary key the database can hold; larger filters are a 400, not a 500

# --- Filters --------------------------------------------------------------------------------------


class CommaSeparatedChoices(serializers.ListField):
    """``?state=queued,running`` or ``?state=queued&state=running``."""

    def get_value(self, dictionary: Any) -> Any:
        if self.field_name not in dictionary:
            return serializers.empty
        values = dictionary.getlist(self.field_name)
        return [item for value in values for item in value.split(",") if item]


class DateRangeFilter(serializers.Serializer):
    created_after = serializers.DateTimeField(required=False, help_text="Created at or after (ISO 8601).")
    created_before = serializers.DateTimeField(required=False, help_text="Created before (ISO 8601).")

    date_field = "created_at"

    def apply(self, queryset: QuerySet) -> QuerySet:
        data = self.validated_data
        if "created_after" in data:
            queryset = queryset.filter(**{f"{self.date_field}__gte": data["created_after"]})
        if "created_before" in data:
            queryset = queryset.filter(**{f"{self.date_field}__lt": data["created_before"]})
        return queryset


class RunFilter(DateRangeFilter):
    state = CommaSeparatedChoices(child=serializers.ChoiceField(choices=RunState.choices), required=False)
    project = serializers.SlugField(required=False, help_text="Project slug.")

    def apply(self, queryset: QuerySet) -> QuerySet:
        data = self.validated_data
        if data.get("state"):
            queryset = queryset.filter(state__in=data["state"])
        if "project" in data:
            queryset = queryset.filter(project__slug=data["project"])
        return super().apply(queryset)


class PhaseFilter(DateRangeFilter):
    state = CommaSeparatedChoices(child=serializers.ChoiceField(choices=PhaseState.choices), required=False)
    project = serializers.SlugField(required=False, help_text="Project slug.")
    run = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)

    def apply(self, queryset: QuerySet) -> QuerySet:
        data = self.validated_data
        if data.get("state"):
            queryset = queryset.filter(state__in=data["state"])
        if "project" in data:
            queryset = queryset.filter(run__project__slug=data["project"])
        if "run" in data:
            queryset = queryset.filter(run_id=data["run"])
        return super().apply(queryset)


class AttemptFilter(DateRangeFilter):
    status = CommaSeparatedChoices(child=serializers.ChoiceField(choices=AttemptStatus.choices), required=False)
    project = serializers.SlugField(required=False, help_text="Project slug.")
    run = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    phase = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)

    date_field = "started_at"

    def apply(self, queryset: QuerySet) -> QuerySet:
        data = self.validated_data
        if data.get("status"):
            queryset = queryset.filter(status__in=data["status"])
        if "project" in data:
            queryset = queryset.filter(phase__run__project__slug=data["project"])
        if "run" in data:
            queryset = queryset.filter(phase__run_id=data["run"])
        if "phase" in data:
            queryset = queryset.filter(phase_id=data["phase"])
        return super().apply(queryset)


class FilteredListMixin:
    """Validates the list filters (400 on bad values) and applies them to the scoped queryset."""

    filter_class: type[DateRangeFilter] | None = None

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        if self.action != "list" or self.filter_class is None:
            return queryset
        filters = self.filter_class(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        return filters.apply(queryset)


def _actor(request: Request) -> str:
    return f"user:{request.user.get_username()}"


OPERATOR_ACTIONS = HasProjectRole(Role.OPERATOR)


class _ScopedViewSet(IdLookupMixin, viewsets.GenericViewSet):
    permission_classes = [IsAuthenticated, ReadWriteScope]
    operator_actions: frozenset[str] = frozenset()
    lookup_value_regex = ANY_SEGMENT

    def get_queryset(self) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user, only the model matters
            return self.queryset
        return self.scoped_queryset()

    def scoped_queryset(self) -> QuerySet:
        raise NotImplementedError

    def get_permissions(self) -> list:
        permissions = super().get_permissions()
        if self.action in self.operator_actions:
            permissions.append(OPERATOR_ACTIONS())
        return permissions


# --- Projects -------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="Projects you are a member of (staff: all)."),
    retrieve=extend_schema(summary="One project."),
)
class ProjectViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, _ScopedViewSet):
    """Projects: the git repositories Autopack builds in, and who may do what there."""

    queryset = Project.objects.none()
    serializer_class = out.ProjectSerializer
    pagination_class = OldestFirstCursorPagination
    lookup_field = "slug"
    operator_actions = frozenset({"create_run"})

    def scoped_queryset(self) -> QuerySet:
        user = self.request.user
        if user.is_staff or user.is_superuser:
            role = Value(Role.OWNER.value, output_field=CharField())
        else:
            role = Subquery(Membership.objects.filter(project=OuterRef("pk"), user=user).values("role")[:1])
        return projects_visible_to(user).annotate(role=role)

    @extend_schema(
        summary="Create a project (staff only); you become its owner.",
        request=out.ProjectCreateInputSerializer,
        responses={201: out.ProjectSerializer},
    )
    def create(self, request: Request) -> Response:
        if not (request.user.is_staff or request.user.is_superuser):
            self.permission_denied(request, message="Only staff may create projects.")
        payload = out.ProjectCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        with transaction.atomic():
            project = payload.save()
            Membership.objects.create(user=request.user, project=project, role=Role.OWNER)
        return Response(out.ProjectSerializer(self.scoped_queryset().get(pk=project.pk)).data, status=201)

    @extend_schema(
        summary="Create a run from a plan document (same validation as `manage.py import_plan`).",
        request=out.RunCreateInputSerializer,
        responses={201: out.RunCreatedSerializer},
    )
    @action(detail=True, methods=["post"], url_path="runs")
    def create_run(self, request: Request, slug: str) -> Response:
        project = self.get_object()
        payload = out.RunCreateInputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        result = plan_import(
            project=project,
            created_by=request.user,
            document=payload.validated_data["plan"],
            source_name=payload.validated_data["source_name"],
            start=payload.validated_data["start"],
            replace=payload.validated_data["replace"],
        )
        run = run_detail_queryset(Run.objects.all()).get(pk=result.run.pk)
        body = {"run": out.RunDetailSerializer(run).data, "warnings": list(result.warnings)}
        return Response(body, status=status.HTTP_201_CREATED)


# --- Runs -----------------------------------------------------------------------------------------


def run_detail_queryset(runs: QuerySet) -> QuerySet:
    phases = Phase.objects.order_by("sequence")
    return runs.select_related("project", "created_by").prefetch_related(
        Prefetch(
            "tiers", queryset=Tier.objects.order_by("index").prefetch_related(Prefetch("phases", queryset=phases))
        ),
        "transitions",
    )


@extend_schema_view(
    list=extend_schema(summary="Runs, newest first.", parameters=[RunFilter]),
    retrieve=extend_schema(summary="A run with its tiers, phases and transitions.", responses=out.RunDetailSerializer),
)
class RunViewSet(FilteredListMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, _ScopedViewSet):
    """Runs: a plan's tiers and phases being executed; actions need the operator role."""

    queryset = Run.objects.none()
    serializer_class = out.RunSerializer
    pagination_class = IdCursorPagination
    filter_class = RunFilter
    operator_actions = frozenset({"start", "pause", "resume", "cancel"})

    def scoped_queryset(self) -> QuerySet:
        runs = Run.objects.for_user(self.request.user)
        if self.action == "retrieve":
            return run_detail_queryset(runs)
        return runs.select_related("project", "created_by")

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return out.RunDetailSerializer if self.action == "retrieve" else out.RunSerializer

    def _respond(self, run: Run) -> Response:
        return Response(out.RunSerializer(self.scoped_queryset().get(pk=run.pk)).data)

    @extend_schema(summary="Start a queued run.", request=None, responses=out.RunSerializer)
    @action(detail=True, methods=["post"])
    def start(self, request: Request, pk: str) -> Response:
        return self._respond(control.run_start(run_id=self.get_object().pk, actor=_actor(request)))

    @extend_schema(summary="Pause a running run.", request=out.ReasonInputSerializer, responses=out.RunSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        run = self.get_object()
        return self._respond(control.run_pause(run_id=run.pk, actor=_actor(request), **_reason(request)))

    @extend_schema(summary="Resume a paused run.", request=None, responses=out.RunSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        return self._respond(control.run_resume(run_id=self.get_object().pk, actor=_actor(request)))

    @extend_schema(summary="Cancel a run.", request=out.ReasonInputSerializer, responses=out.RunSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        run = self.get_object()
        return self._respond(control.run_cancel(run_id=run.pk, actor=_actor(request), **_reason(request)))

    @extend_schema(summary="Progress of a run.", responses=out.RunProgressSerializer)
    @action(detail=True, methods=["get"])
    def progress(self, request: Request, pk: str) -> Response:
        return Response(out.RunProgressSerializer(run_progress(self.get_object())).data)


def _reason(request: Request) -> dict[str, str]:
    payload = out.ReasonInputSerializer(data=request.data)
    payload.is_valid(raise_exception=True)
    return {"reason": payload.validated_data["reason"]} if "reason" in payload.validated_data else {}


def run_progress(run: Run) -> dict[str, Any]:
    counts = dict(Phase.objects.filter(run=run).values_list("state").annotate(count=Count("id")).order_by())
    current = (
        Phase.objects.filter(run=run, state=PhaseState.EXECUTING).first()
        or Phase.objects.filter(run=run, state=PhaseState.QUEUED).order_by("sequence").first()
    )
    return {
        "run": run.pk,
        "state": run.state,
        "phases_total": run.phases_total,
        "phases_done": run.phases_done,
        "progress": run.progress,
        "phases_by_state": {state: counts.get(state, 0) for state in PhaseState.values},
        "current_phase": current,
        "tokens_used": run.tokens_used,
        "token_cap": run.token_cap,
        "cost_usd": run.cost_usd,
        "usd_cap": run.usd_cap,
    }


# --- Phases ---------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(summary="Phases, in creation order.", parameters=[PhaseFilter]),
    retrieve=extend_schema(summary="A phase with its transitions.", responses=out.PhaseDetailSerializer),
)
class PhaseViewSet(FilteredListMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, _ScopedViewSet):
    """Phases: units of work of a run, executed one at a time in order."""

    queryset = Phase.objects.none()
    serializer_class = out.PhaseSerializer
    pagination_class = OldestFirstCursorPagination
    filter_class = PhaseFilter
    operator_actions = frozenset({"requeue"})

    def scoped_queryset(self) -> QuerySet:
        phases = Phase.objects.for_user(self.request.user).select_related("run__project", "tier")
        if self.action == "retrieve":
            return phases.prefetch_related("transitions")
        return phases

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return out.PhaseDetailSerializer if self.action == "retrieve" else out.PhaseSerializer

    @extend_schema(
        summary="Requeue a blocked or failed phase (reopens a failed run).",
        request=out.ReasonInputSerializer,
        responses=out.PhaseSerializer,
    )
    @action(detail=True, methods=["post"])
    def requeue(self, request: Request, pk: str) -> Response:
        phase = self.get_object()
        control.phase_requeue(phase_id=phase.pk, actor=_actor(request), **_reason(request))
        return Response(out.PhaseSerializer(self.scoped_queryset().get(pk=phase.pk)).data)


# --- Attempts -------------------------------------------------------------------------------------


def _events() -> Prefetch:
    has_blob = ExpressionWrapper(Q(blob__isnull=False), output_field=BooleanField())
    return Prefetch("events", queryset=AttemptEvent.objects.defer("blob").annotate(has_blob=has_blob).order_by("seq"))


@extend_schema_view(
    list=extend_schema(summary="Attempts, newest first.", parameters=[AttemptFilter]),
    retrieve=extend_schema(summary="An attempt with its stage events.", responses=out.AttemptDetailSerializer),
)
class AttemptViewSet(FilteredListMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, _ScopedViewSet):
    """Attempts: one execution of a phase, with its stage events, diff, CI delta and verdicts."""

    queryset = Attempt.objects.none()
    serializer_class = out.AttemptSerializer
    pagination_class = IdCursorPagination
    filter_class = AttemptFilter

    def scoped_queryset(self) -> QuerySet:
        user = self.request.user
        attempts = Attempt.objects.select_related("phase")
        if not (user.is_staff or user.is_superuser):
            attempts = attempts.filter(phase__run__project__memberships__user=user)
        if self.action in ("diff", "ci", "verdicts"):
            return attempts
        # Diffs and summaries can be large; only their own endpoints load them.
        attempts = attempts.defer("diff", "summary")
        return attempts.prefetch_related(_events()) if self.action == "retrieve" else attempts

    def get_serializer_class(self) -> type[serializers.Serializer]:
        return out.AttemptDetailSerializer if self.action == "retrieve" else out.AttemptSerializer

    @extend_schema(summary="The attempt's diff.", responses=out.AttemptDiffSerializer)
    @action(detail=True, methods=["get"])
    def diff(self, request: Request, pk: str) -> Response:
        attempt = self.get_object()
        return Response({"attempt": attempt.pk, "diff": attempt.diff})

    @extend_schema(summary="The attempt's CI delta against the baseline.", responses=out.AttemptSectionSerializer)
    @action(detail=True, methods=["get"])
    def ci(self, request: Request, pk: str) -> Response:
        attempt = self.get_object()
        return Response({"attempt": attempt.pk, "data": attempt.summary.get("ci")})

    @extend_schema(
        summary="The auditor's verdict and the finalizer's gates and decision.", responses=out.AttemptVerdictsSerializer
    )
    @action(detail=True, methods=["get"])
    def verdicts(self, request: Request, pk: str) -> Response:
        attempt = self.get_object()
        summary = attempt.summary
        # Keys as the engine's pipeline writes them into the attempt summary.
        sections = {"auditor": "audit", "gates": "gates", "decision": "decision", "doctor": "doctor"}
        return Response({"attempt": attempt.pk, **{name: summary.get(key) for name, key in sections.items()}})
