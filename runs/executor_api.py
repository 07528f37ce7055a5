"""HTTP endpoints for remote executors (``manage.py executor``), mounted at ``/api/executor/``.

An executor authenticates with an API key carrying the ``executor`` scope (staff may use a session or
JWT). Its lease identity is ``key:<prefix>/<worker>``: derived from the key, so one key cannot act on a
phase leased through another key, and from the worker id it sends, so two executors sharing a key hold
distinct leases. Every write carries the claim epoch; a stale one is answered 409 (``stale_epoch``) and
changes nothing. The views are thin: validate, call ``runs.services.leases``, serialize.

Every request and response body has an explicit serializer and every integer is bounded (ids and epochs
by PostgreSQL's bigint), so a malformed or out-of-range value is a 400 in the documented error shape
(``autopack_site.api_errors``), never a 500.

Research phases are not handed to remote executors: a research session reads the server's corpora and
memory through the ORM, so it runs on the server's own workers (``manage.py drain``, django-q2), which
``phase_finish`` and ``phase_release`` enqueue for the run. A remote claim leaves out runs whose next phase
is a research phase (inside the claim statement, so it cannot race with the run's head changing).
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
from decimal import Decimal, InvalidOperation
from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import request_api_key
from accounts.models import ApiKeyScope
from accounts.permissions import HasScope
from autopack_site.lib.prepared import fetchone_prepared
from runs import execution
from runs.engine.outcome import OutcomeKind, PhaseOutcome
from runs.models import Phase, RunFailureReason
from runs.services import leases

WORKER_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
MAX_ID = 2**63 - 1  # PostgreSQL bigint: ids, epochs and token counters
MAX_INT32 = 2**31 - 1  # PositiveIntegerField columns (budget_override)
MAX_COST_USD = Decimal("1000000")  # per attempt; the run's counter holds up to 10**8
RESEARCH_CATEGORY = execution.RESEARCH_CATEGORY
RESEARCH_RELEASE_REASON = "research phases run on the server's workers, not on remote executors"


def lease_identity(request: Request, worker: str) -> str:
    key = request_api_key(request)
    if key is not None:
        return f"key:{key.prefix}/{worker}"
    return f"user:{request.user.get_username()}/{worker}"


# --- request bodies ---------------------------------------------------------------------------------------


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


class LightFields:
    """Request serializers on the executor hot path: fields copied shallowly instead of deep-copied.

    DRF deep-copies every declared field for every serializer instance (each copy re-runs the field's
    ``__init__``), which cost as much CPU as the rest of an events request. A declared field is a prototype
    that is never bound or changed, so a shallow copy is as good: binding sets attributes on the copy only.
    Fields that hold other fields (a child, a nested serializer) are still deep-copied, since binding those
    reaches into the shared parts.
    """

    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            name: copy.deepcopy(field)
            if isinstance(field, serializers.BaseSerializer) or hasattr(field, "child")
            else copy.copy(field)
            for name, field in self._declared_fields.items()
        }


class JsonObjectField(serializers.DictField):
    """A JSON object stored in a JSON column: PostgreSQL's jsonb cannot hold NUL characters, so they are a 400."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        if _has_nul(value):
            raise serializers.ValidationError("strings may not contain NUL characters")
        return value


class ClaimInput(LightFields, serializers.Serializer):
    """Who is claiming and, optionally, which runs to take work from."""

    worker = serializers.RegexField(WORKER_ID, help_text="This executor's name; part of its lease identity.")
    runs = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        required=False,
        max_length=1000,
        help_text="Only claim phases of these runs.",
    )


class LeaseInput(LightFields, serializers.Serializer):
    """The lease a request acts under: the executor's name and the claim epoch its claim returned."""

    worker = serializers.RegexField(WORKER_ID)
    epoch = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="The claim epoch of the lease.")


class HeartbeatInput(LeaseInput):
    """The lease to extend and, optionally, the stage the attempt has reached."""

    stage = serializers.CharField(max_length=32, required=False, allow_blank=True)


class EventInput(LeaseInput):
    """A stage event to append to the attempt, under the lease."""

    stage = serializers.CharField(max_length=32)
    kind = serializers.CharField(max_length=32)
    data = JsonObjectField(required=False, default=dict, help_text="The event's JSON object.")
    blob = serializers.RegexField(
        r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        help_text="Base64 bytes (a log, a report); stored compressed.",
    )

    def validate_blob(self, value: str | None) -> bytes | None:
        if value is None:
            return None
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise serializers.ValidationError("not base64") from None


class OutcomeInput(LightFields, serializers.Serializer):
    """How the attempt ended, what it changed and what it cost."""

    kind = serializers.ChoiceField(choices=[kind.value for kind in OutcomeKind])
    reason = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    commit_sha = serializers.CharField(required=False, allow_blank=True, default="", max_length=64)
    failure_fingerprint = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    run_failure_reason = serializers.ChoiceField(
        choices=["", *RunFailureReason.values], required=False, allow_blank=True, default=""
    )
    builder_hint = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    budget_override = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1, max_value=MAX_INT32
    )
    escalate_model = serializers.BooleanField(required=False, default=False)
    replan = serializers.BooleanField(required=False, default=False)
    patch_failure = serializers.BooleanField(required=False, default=False)
    doctor_called = serializers.BooleanField(required=False, default=False)
    input_tokens = serializers.IntegerField(required=False, default=0, min_value=0, max_value=10**12)
    output_tokens = serializers.IntegerField(required=False, default=0, min_value=0, max_value=10**12)
    cost_usd = serializers.RegexField(
        r"^[0-9]{1,7}(?:\.[0-9]{1,12})?$",
        required=False,
        default="0",
        help_text="Decimal dollars as a string, e.g. `0.0123` (at most 1000000).",
    )
    model = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)
    diff = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    summary = JsonObjectField(required=False, default=dict)

    def validate_cost_usd(self, value: str) -> str:
        try:
            cost = Decimal(value)
        except (InvalidOperation, ValueError):  # the pattern already keeps these out; kept as a second guard
            raise serializers.ValidationError("not a decimal number") from None
        if not cost.is_finite() or cost < 0 or cost > MAX_COST_USD:
            raise serializers.ValidationError(f"must be between 0 and {MAX_COST_USD}")
        return value


class FinishInput(LeaseInput):
    """The attempt's outcome, under the lease."""

    outcome = OutcomeInput()


class ReleaseInput(LeaseInput):
    """Give the phase back without a verdict, under the lease."""

    reason = serializers.CharField(max_length=500, required=False, default="released by executor")


# --- response bodies --------------------------------------------------------------------------------------


class ClaimBody(serializers.Serializer):
    phase_id = serializers.IntegerField()
    run_id = serializers.IntegerField()
    claim_epoch = serializers.IntegerField()
    attempt_id = serializers.IntegerField()
    attempt_number = serializers.IntegerField()
    lease_expires_at = serializers.DateTimeField()
    worker = serializers.CharField(help_text="The lease identity: `key:<prefix>/<worker>` or `user:<name>/<worker>`.")


class ClaimOutput(serializers.Serializer):
    claim = ClaimBody()
    spec = serializers.DictField(
        help_text="Everything the executor's engine needs for the attempt: the phase, its scope, deliverables and "
        "acceptance criteria, the project and branch, the test command, models and prices, budgets, history, and "
        "the insights, memory and research context the server gathered."
    )


class HeartbeatOutput(serializers.Serializer):
    lease_expires_at = serializers.DateTimeField()
    run_state = serializers.CharField()
    should_stop = serializers.BooleanField(help_text="The run was cancelled or failed: stop at the next stage.")


class EventOutput(serializers.Serializer):
    seq = serializers.IntegerField()


class PhaseStateOutput(serializers.Serializer):
    phase_id = serializers.IntegerField()
    state = serializers.CharField()


PHASE_ID = OpenApiParameter(
    "phase_id",
    int,
    OpenApiParameter.PATH,
    description="The phase's numeric id (as in the claim); ids beyond 2**63-1 are 404.",
)


def _valid(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# --- views ------------------------------------------------------------------------------------------------


class ExecutorView(APIView):
    permission_classes = [HasScope(ApiKeyScope.EXECUTOR)]


class ClaimView(ExecutorView):
    """Claim the next runnable phase: 200 with the claim and the phase spec, 204 when there is no work."""

    @extend_schema(
        summary="Claim the next runnable phase.",
        request=ClaimInput,
        responses={200: ClaimOutput, 204: OpenApiResponse(description="Nothing to claim.")},
    )
    def post(self, request: Request) -> Response:
        data = _valid(ClaimInput, request)
        worker = lease_identity(request, data["worker"])
        narrowed = {
            "runs": data.get("runs"),
            "projects": _member_projects(request.user),
            # The claim statement itself passes over runs whose next phase is a research phase.
            "skip_categories": (RESEARCH_CATEGORY,),
        }
        for _ in range(3):
            claim = leases.phase_claim(worker=worker, **narrowed)
            if claim is None:
                break
            try:
                spec = execution.build_phase_spec(claim.phase_id)
            except Exception:
                # Nobody will ever work on this claim: give the phase back now rather than when the lease expires.
                leases.phase_release(
                    phase_id=claim.phase_id, epoch=claim.claim_epoch, worker=worker, reason="building the spec failed"
                )
                raise
            if spec.category != RESEARCH_CATEGORY:
                spec.attempt_id, spec.claim_epoch = claim.attempt_id, claim.claim_epoch
                return Response({"claim": claim.as_dict(), "spec": spec.to_dict()})
            # Not expected (the claim skips research heads), kept as a guard: a research phase is never run
            # remotely. Give it back (its run's work is enqueued for the server's workers) and look again.
            leases.phase_release(
                phase_id=claim.phase_id, epoch=claim.claim_epoch, worker=worker, reason=RESEARCH_RELEASE_REASON
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


def _member_projects(user) -> list[int] | None:
    """The projects a non-staff executor's owner belongs to (None: staff, any project)."""
    if user.is_staff or user.is_superuser:
        return None
    from accounts.models import Membership

    return list(Membership.objects.filter(user=user).values_list("project_id", flat=True))


class HeartbeatView(ExecutorView):
    @extend_schema(
        summary="Extend the lease; learn whether to stop.",
        parameters=[PHASE_ID],
        request=HeartbeatInput,
        responses=HeartbeatOutput,
    )
    def post(self, request: Request, phase_id: int) -> Response:
        data = _valid(HeartbeatInput, request)
        beat = leases.phase_heartbeat(
            phase_id=phase_id,
            epoch=data["epoch"],
            worker=lease_identity(request, data["worker"]),
            stage=data.get("stage") or None,
        )
        return Response(beat.as_dict())


class EventView(ExecutorView):
    @extend_schema(
        summary="Append a stage event to the attempt.",
        parameters=[PHASE_ID],
        request=EventInput,
        responses={201: EventOutput},
    )
    def post(self, request: Request, phase_id: int) -> Response:
        data = _valid(EventInput, request)
        event = leases.phase_report_event(
            phase_id=phase_id,
            epoch=data["epoch"],
            worker=lease_identity(request, data["worker"]),
            stage=data["stage"],
            kind=data["kind"],
            data=data["data"],
            blob=data["blob"],
        )
        if data["stage"] == "telemetry":
            execution.record_remote_telemetry(
                phase_id=phase_id,
                epoch=data["epoch"],
                attempt_id=event.attempt_id,
                worker=lease_identity(request, data["worker"]),
                seq=event.seq,
                kind=data["kind"],
                data=data["data"],
            )
        return Response({"seq": event.seq}, status=status.HTTP_201_CREATED)


class FinishView(ExecutorView):
    @extend_schema(
        summary="Post the attempt's outcome.",
        description="Applies the outcome exactly as a server-side worker's outcome is applied (commit, retry, "
        "block or fail the phase), then records the attempt's goal drift and enqueues its memory follow-ups.",
        parameters=[PHASE_ID],
        request=FinishInput,
        responses=PhaseStateOutput,
    )
    def post(self, request: Request, phase_id: int) -> Response:
        data = _valid(FinishInput, request)
        outcome = _outcome(data["outcome"])
        phase = leases.phase_finish(
            phase_id=phase_id, epoch=data["epoch"], outcome=outcome, worker=lease_identity(request, data["worker"])
        )
        _followups(phase, epoch=data["epoch"], outcome=outcome)
        return Response({"phase_id": phase.pk, "state": phase.state})


def _outcome(fields: dict[str, Any]) -> PhaseOutcome:
    return PhaseOutcome(**{**fields, "kind": OutcomeKind(fields["kind"])})


@functools.cache
def _followups_statement() -> str:
    """The attempt's id and number and its run's project and goal (a prepared statement on PostgreSQL)."""
    from django.db import connection

    from runs.models import Attempt, Run

    quote = connection.ops.quote_name
    return (
        f"SELECT a.id, a.number, r.project_id, r.goal FROM {quote(Attempt._meta.db_table)} a "
        f"JOIN {quote(Phase._meta.db_table)} p ON p.id = a.phase_id JOIN {quote(Run._meta.db_table)} r ON r.id = p.run_id "
        "WHERE a.phase_id = %s AND a.claim_epoch = %s"
    )


def _followups(phase: Phase, *, epoch: int, outcome: PhaseOutcome) -> None:
    """What ``execute_claim`` does after ``phase_finish`` for a local attempt: goal drift, memory.

    One query for what they need: the attempt, and the project and goal of its run.
    """
    found = fetchone_prepared(_followups_statement(), [phase.pk, epoch])
    if found is None:
        return
    attempt_id, number, project_id, goal = found
    execution.record_remote_outcome(
        phase_id=phase.pk,
        epoch=epoch,
        attempt_id=attempt_id,
        attempt_number=number,
        outcome=outcome,
        context=(phase.run_id, project_id, phase.category, phase.complexity),
    )
    goal = goal if outcome.diff else ""  # the goal is only read when there is a diff to compare
    execution.attempt_followups(attempt_id=attempt_id, goal=goal, description=phase.description, diff=outcome.diff)


class ReleaseView(ExecutorView):
    @extend_schema(
        summary="Give the phase back without a verdict.",
        parameters=[PHASE_ID],
        request=ReleaseInput,
        responses=PhaseStateOutput,
    )
    def post(self, request: Request, phase_id: int) -> Response:
        data = _valid(ReleaseInput, request)
        phase = leases.phase_release(
            phase_id=phase_id,
            epoch=data["epoch"],
            worker=lease_identity(request, data["worker"]),
            reason=data["reason"],
        )
        return Response({"phase_id": phase.pk, "state": phase.state})
