"""HTTP endpoints for remote executors (``manage.py executor``), mounted at ``/api/executor/``.

An executor authenticates with an API key carrying the ``executor`` scope (staff may use a session or
JWT). Its lease identity is ``key:<prefix>/<worker>``: derived from the key, so one key cannot act on a
phase leased through another key, and from the worker id it sends, so two executors sharing a key hold
distinct leases. Every write carries the claim epoch; a stale one is answered 409 (``stale_epoch``) and
changes nothing. The views are thin: validate, call ``runs.services.leases``, serialize.
"""

from __future__ import annotations

import base64
import binascii
from decimal import Decimal
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import request_api_key
from accounts.models import ApiKeyScope
from accounts.permissions import HasScope
from autopack_site.lib.errors import ValidationFailed
from runs.engine.outcome import PhaseOutcome
from runs.models import Run, RunFailureReason, RunState
from runs.services import leases

WORKER_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"


def lease_identity(request: Request, worker: str) -> str:
    key = request_api_key(request)
    if key is not None:
        return f"key:{key.prefix}/{worker}"
    return f"user:{request.user.get_username()}/{worker}"


class ClaimInput(serializers.Serializer):
    worker = serializers.RegexField(WORKER_ID)
    runs = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=1000)


class LeaseInput(serializers.Serializer):
    worker = serializers.RegexField(WORKER_ID)
    epoch = serializers.IntegerField(min_value=1)


class HeartbeatInput(LeaseInput):
    stage = serializers.CharField(max_length=32, required=False, allow_blank=True)


class EventInput(LeaseInput):
    stage = serializers.CharField(max_length=32)
    kind = serializers.CharField(max_length=32)
    data = serializers.JSONField(required=False, default=dict)
    blob = serializers.CharField(required=False, allow_null=True, default=None, help_text="base64")


class FinishInput(LeaseInput):
    outcome = serializers.JSONField()


class ReleaseInput(LeaseInput):
    reason = serializers.CharField(max_length=500, required=False, default="released by executor")


class ClaimBody(serializers.Serializer):
    phase_id = serializers.IntegerField()
    run_id = serializers.IntegerField()
    claim_epoch = serializers.IntegerField()
    attempt_id = serializers.IntegerField()
    attempt_number = serializers.IntegerField()
    lease_expires_at = serializers.DateTimeField()
    worker = serializers.CharField()


class ClaimOutput(serializers.Serializer):
    claim = ClaimBody()
    spec = serializers.JSONField(help_text="PhaseSpec.to_dict(): everything the engine needs for the attempt")


class HeartbeatOutput(serializers.Serializer):
    lease_expires_at = serializers.DateTimeField()
    run_state = serializers.CharField()
    should_stop = serializers.BooleanField()


class EventOutput(serializers.Serializer):
    seq = serializers.IntegerField()


class PhaseStateOutput(serializers.Serializer):
    phase_id = serializers.IntegerField()
    state = serializers.CharField()


def _valid(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


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
        runs = _claimable_runs(request, data.get("runs"))
        if runs == []:
            return Response(status=status.HTTP_204_NO_CONTENT)
        claim = leases.phase_claim(worker=lease_identity(request, data["worker"]), runs=runs)
        if claim is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"claim": claim.as_dict(), "spec": _spec_for(claim)})


def _claimable_runs(request: Request, wanted: list[int] | None) -> list[int] | None:
    """Staff executors may take any run; others only runs of projects their key's owner belongs to."""
    user = request.user
    if user.is_staff or user.is_superuser:
        return wanted
    visible = Run.objects.for_user(user).filter(state=RunState.RUNNING)
    if wanted:
        visible = visible.filter(pk__in=wanted)
    return list(visible.values_list("pk", flat=True).distinct())


def _spec_for(claim: leases.Claim) -> dict[str, Any]:
    from runs.execution import build_phase_spec

    spec = build_phase_spec(claim.phase_id)
    spec.attempt_id, spec.claim_epoch = claim.attempt_id, claim.claim_epoch
    return spec.to_dict()


class HeartbeatView(ExecutorView):
    @extend_schema(
        summary="Extend the lease; learn whether to stop.", request=HeartbeatInput, responses=HeartbeatOutput
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
    @extend_schema(summary="Append a stage event to the attempt.", request=EventInput, responses={201: EventOutput})
    def post(self, request: Request, phase_id: int) -> Response:
        data = _valid(EventInput, request)
        event = leases.phase_report_event(
            phase_id=phase_id,
            epoch=data["epoch"],
            worker=lease_identity(request, data["worker"]),
            stage=data["stage"],
            kind=data["kind"],
            data=data["data"] if isinstance(data["data"], dict) else {"value": data["data"]},
            blob=_decode_blob(data["blob"]),
        )
        return Response({"seq": event.seq}, status=status.HTTP_201_CREATED)


def _decode_blob(blob: str | None) -> bytes | None:
    if blob is None:
        return None
    try:
        return base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("blob must be base64", details={"blob": ["not base64"]}) from None


class FinishView(ExecutorView):
    @extend_schema(summary="Post the attempt's outcome.", request=FinishInput, responses=PhaseStateOutput)
    def post(self, request: Request, phase_id: int) -> Response:
        data = _valid(FinishInput, request)
        outcome = _parse_outcome(data["outcome"])
        phase = leases.phase_finish(
            phase_id=phase_id, epoch=data["epoch"], outcome=outcome, worker=lease_identity(request, data["worker"])
        )
        return Response({"phase_id": phase.pk, "state": phase.state})


def _parse_outcome(raw: Any) -> PhaseOutcome:
    """``PhaseOutcome.from_dict`` with the field types checked, so a malformed outcome is a 400, not a 500."""
    try:
        outcome = PhaseOutcome.from_dict(raw)
        for name in ("input_tokens", "output_tokens"):
            if not isinstance(getattr(outcome, name), int) or getattr(outcome, name) < 0:
                raise ValueError(f"{name} must be a non-negative integer")
        if outcome.budget_override is not None and not isinstance(outcome.budget_override, int):
            raise ValueError("budget_override must be an integer")
        text_fields = (
            "reason",
            "commit_sha",
            "failure_fingerprint",
            "run_failure_reason",
            "builder_hint",
            "model",
            "diff",
        )
        if not all(isinstance(getattr(outcome, name), str) for name in text_fields):
            raise ValueError("text fields must be strings")
        if not isinstance(outcome.summary, dict):
            raise ValueError("summary must be an object")
        if Decimal(str(outcome.cost_usd)) < 0:
            raise ValueError("cost_usd must not be negative")
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise ValidationFailed("invalid outcome", details={"outcome": [str(exc)]}) from None
    if outcome.run_failure_reason and outcome.run_failure_reason not in RunFailureReason.values:
        raise ValidationFailed("invalid outcome", details={"run_failure_reason": ["unknown reason"]})
    return outcome


class ReleaseView(ExecutorView):
    @extend_schema(summary="Give the phase back without a verdict.", request=ReleaseInput, responses=PhaseStateOutput)
    def post(self, request: Request, phase_id: int) -> Response:
        data = _valid(ReleaseInput, request)
        phase = leases.phase_release(
            phase_id=phase_id,
            epoch=data["epoch"],
            worker=lease_identity(request, data["worker"]),
            reason=data["reason"],
        )
        return Response({"phase_id": phase.pk, "state": phase.state})
