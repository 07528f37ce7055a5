"""Writing telemetry: one function per kind of event, called by the run recorder (``runs/recorder.py``).

Every function takes keyword-only arguments and plain ids (``project_id``, ``run_id``, ``phase_id``,
``attempt_id``), so a caller never loads rows just to record something. When ``project_id`` is not given but
``run_id`` is, the project is looked up once, because every event carries its project for scoping.

Usage events are idempotent on ``request_id`` and update the rollups in the same transaction, so a retried
write can neither double count nor leave the rollups behind the events.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from autopack_site.lib.errors import ValidationFailed
from autopack_site.lib.logging import redact
from runs.models import Run
from telemetry import counterfactual, export, pricing, rollups
from telemetry.models import (
    BudgetEscalationEvent,
    ContextBudgetEvent,
    DoctorOutcomeEvent,
    FailureHardeningEvent,
    LlmRole,
    LlmUsageEvent,
    PhaseOutcomeEvent,
    TokenEstimationEvent,
)
from telemetry.signatures import error_signature

logger = logging.getLogger(__name__)

UNDERESTIMATION_TOLERANCE = 1.0


def _links(
    *, project_id: int | None, run_id: int | None, phase_id: int | None, attempt_id: int | None
) -> dict[str, int | None]:
    if project_id is None and run_id is not None:
        project_id = Run.objects.filter(pk=run_id).values_list("project_id", flat=True).first()
    return {"project_id": project_id, "run_id": run_id, "phase_id": phase_id, "attempt_id": attempt_id}


def _known_total(parts: list[int | None], provider_total: int | None) -> int | None:
    known = [part for part in parts if part is not None]
    if known:
        return sum(known)
    return provider_total


# --- LLM usage ----------------------------------------------------------------------------------------------


def usage_record(
    *,
    provider: str,
    model: str,
    role: str,
    request_id: str,
    input_tokens: int | None,
    output_tokens: int | None,
    cache_creation_tokens: int | None = None,
    cache_read_tokens: int | None = None,
    total_tokens: int | None = None,
    latency_ms: int | None,
    stop_reason: str,
    project_id: int | None = None,
    run_id: int | None = None,
    phase_id: int | None = None,
    attempt_id: int | None = None,
    occurred_at: datetime | None = None,
) -> LlmUsageEvent:
    """Record one LLM call and add it to the rollups; recording the same ``request_id`` again changes nothing.

    Token counts the provider did not report stay ``None`` (never 0). ``total_tokens`` is only used when the
    provider gave a total without a split. The cost comes from the price table in force at ``occurred_at``;
    it is ``None`` (and a warning is logged) for an unknown model or a call without an input/output split.
    Returns the stored event: the existing one when the request id was already recorded.
    """
    if not request_id:
        raise ValidationFailed("request_id is required: it is what makes recording a call idempotent")
    counts = (input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, total_tokens, latency_ms)
    if any(count is not None and count < 0 for count in counts):
        raise ValidationFailed("token counts and latency cannot be negative")
    occurred_at = occurred_at or timezone.now()
    priced = pricing.price_call(
        model, input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, at=occurred_at, provider=provider
    )
    fields = {
        "occurred_at": occurred_at,
        "provider": provider,
        "model": model,
        "role": role,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_tokens": cache_creation_tokens,
        "cache_read_tokens": cache_read_tokens,
        "total_tokens": _known_total(
            [input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens], total_tokens
        ),
        "cost_usd": priced.cost_usd,
        "price_table": priced.price_table,
        "latency_ms": latency_ms,
        "stop_reason": stop_reason or "",
        **_links(project_id=project_id, run_id=run_id, phase_id=phase_id, attempt_id=attempt_id),
    }
    with transaction.atomic():
        # get_or_create inserts under a savepoint and re-reads on IntegrityError, so two concurrent writers of
        # the same request id end with one row, and only the one that inserted it touches the rollups.
        event, created = LlmUsageEvent.objects.get_or_create(request_id=request_id, defaults=fields)
        if created:
            rollups.add_event(event)
    if created:
        export.export_llm_call(event)
    return event


def rollups_rebuild() -> None:
    """Recompute every rollup from the raw events in two set-based statements (repair, bulk loads)."""
    from telemetry.bulk import rebuild_rollups

    rebuild_rollups()


# --- Token estimation, escalation, outcomes -----------------------------------------------------------------


def smape(*, predicted: float, actual: float) -> float:
    """Symmetric mean absolute percentage error of one estimate, 0–200."""
    denominator = abs(actual) + abs(predicted)
    return 0.0 if denominator == 0 else 200.0 * abs(actual - predicted) / denominator


def estimation_record(
    *,
    category: str,
    complexity: str,
    deliverable_count: int,
    predicted: int,
    actual: int,
    selected_budget: int,
    final_ceiling: int,
    truncated: bool,
    model: str = "",
    phase_overhead: int | None = None,
    project_id: int | None = None,
    run_id: int | None = None,
    phase_id: int | None = None,
    attempt_id: int | None = None,
    occurred_at: datetime | None = None,
) -> TokenEstimationEvent:
    """Record one estimate against the output it predicted.

    ``predicted`` is the estimator's token estimate, ``actual`` the output tokens used, ``selected_budget`` the
    max_tokens the estimator chose, ``final_ceiling`` the max_tokens really sent (after overrides and caps).
    SMAPE is stored for every event, but accuracy figures exclude truncated ones (their ``actual`` is censored).
    ``phase_overhead`` is the overhead term the estimate used; ``calibrate_estimator`` needs it to move it.
    """
    if min(deliverable_count, predicted, actual, selected_budget, final_ceiling) < 0:
        raise ValidationFailed("token figures cannot be negative")
    return TokenEstimationEvent.objects.create(
        occurred_at=occurred_at or timezone.now(),
        category=category,
        complexity=complexity,
        deliverable_count=deliverable_count,
        predicted=predicted,
        actual=actual,
        selected_budget=selected_budget,
        final_ceiling=final_ceiling,
        phase_overhead=phase_overhead,
        truncated=truncated,
        model=model,
        smape=smape(predicted=predicted, actual=actual),
        waste_ratio=(selected_budget / actual) if actual else None,
        underestimated=actual > predicted * UNDERESTIMATION_TOLERANCE,
        **_links(project_id=project_id, run_id=run_id, phase_id=phase_id, attempt_id=attempt_id),
    )


def escalation_record(
    *,
    reason: str,
    from_budget: int | None = None,
    to_budget: int | None = None,
    output_tokens_used: int | None = None,
    from_model: str = "",
    to_model: str = "",
    project_id: int | None = None,
    run_id: int | None = None,
    phase_id: int | None = None,
    attempt_id: int | None = None,
    occurred_at: datetime | None = None,
) -> BudgetEscalationEvent:
    """Record a budget or model escalation (``reason`` is an ``EscalationReason``): from → to, and why."""
    return BudgetEscalationEvent.objects.create(
        occurred_at=occurred_at or timezone.now(),
        reason=reason,
        from_budget=from_budget,
        to_budget=to_budget,
        output_tokens_used=output_tokens_used,
        from_model=from_model,
        to_model=to_model,
        **_links(project_id=project_id, run_id=run_id, phase_id=phase_id, attempt_id=attempt_id),
    )


def phase_outcome_record(
    *,
    outcome: str,
    reason: str = "",
    error_text: str = "",
    category: str = "",
    complexity: str = "",
    attempt_number: int | None = None,
    tokens: int | None = None,
    duration_ms: int | None = None,
    project_id: int | None = None,
    run_id: int | None = None,
    phase_id: int | None = None,
    attempt_id: int | None = None,
    occurred_at: datetime | None = None,
) -> PhaseOutcomeEvent:
    """Record the finalizer's decision for an attempt (complete, retry, blocked, failed, skipped).

    ``error_text`` (test output, traceback, apply error) is stored with its normalised signature, which
    ``pattern_expansion`` groups to suggest new failure-hardening patterns.
    """
    return PhaseOutcomeEvent.objects.create(
        occurred_at=occurred_at or timezone.now(),
        outcome=outcome,
        reason=redact(reason)[:200],
        # Test output and tracebacks can echo keys from the environment; none may be stored.
        error_text=redact(error_text),
        error_signature=error_signature(redact(error_text)),
        category=category,
        complexity=complexity,
        attempt_number=attempt_number,
        tokens=tokens,
        duration_ms=duration_ms,
        **_links(project_id=project_id, run_id=run_id, phase_id=phase_id, attempt_id=attempt_id),
    )


def doctor_outcome_record(
    *,
    action: str,
    confidence: float | None = None,
    model: str = "",
    request_id: str = "",
    tokens: int | None = None,
    rationale: str = "",
    error_text: str = "",
    project_id: int | None = None,
    run_id: int | None = None,
    phase_id: int | None = None,
    attempt_id: int | None = None,
    occurred_at: datetime | None = None,
) -> DoctorOutcomeEvent:
    """Record the Doctor's verdict (``retry_with_fix``, ``replan``, ``skip_phase``, ``mark_fatal``).

    The Doctor call's tokens and cost are recorded by ``usage_record`` (role ``doctor``); ``tokens`` here is
    informational and never added to spend.
    """
    return DoctorOutcomeEvent.objects.create(
        occurred_at=occurred_at or timezone.now(),
        action=action,
        confidence=confidence,
        model=model,
        request_id=request_id,
        tokens=tokens,
        rationale=redact(rationale),
        error_signature=error_signature(redact(error_text)),
        **_links(project_id=project_id, run_id=run_id, phase_id=phase_id, attempt_id=attempt_id),
    )


def context_record(
    *,
    tokens_included: int,
    tokens_avoided: int,
    role: str = LlmRole.BUILDER,
    files_included: int = 0,
    files_cut: int = 0,
    files_summarised: int = 0,
    project_id: int | None = None,
    run_id: int | None = None,
    phase_id: int | None = None,
    attempt_id: int | None = None,
    occurred_at: datetime | None = None,
) -> ContextBudgetEvent:
    """Record what the context builder put in a prompt and what its cuts and summaries kept out (tokens)."""
    return ContextBudgetEvent.objects.create(
        occurred_at=occurred_at or timezone.now(),
        role=role,
        tokens_included=tokens_included,
        tokens_avoided=tokens_avoided,
        files_included=files_included,
        files_cut=files_cut,
        files_summarised=files_summarised,
        **_links(project_id=project_id, run_id=run_id, phase_id=phase_id, attempt_id=attempt_id),
    )


# --- Failure hardening and the counterfactual Doctor estimate -----------------------------------------------


def hardening_record(
    *,
    pattern: str,
    run_id: int | None,
    phase_id: int | None,
    attempt_id: int | None = None,
    project_id: int | None = None,
    mitigated: bool = True,
    error_text: str = "",
    detail: str = "",
    doctor_model: str = "",
    occurred_at: datetime | None = None,
) -> FailureHardeningEvent:
    """Record that deterministic pattern ``pattern`` handled a failure, with the Doctor tokens it avoided.

    The avoided tokens are a counterfactual estimate (see ``telemetry.counterfactual``); its source and
    sample size are stored with it, and it is never mixed into spend.
    """
    estimate = counterfactual.doctor_tokens_avoided_estimate(run_id=run_id, doctor_model=doctor_model)
    return FailureHardeningEvent.objects.create(
        occurred_at=occurred_at or timezone.now(),
        pattern=pattern,
        mitigated=mitigated,
        error_signature=error_signature(redact(error_text)),
        detail=redact(detail),
        doctor_tokens_avoided_estimate=estimate.tokens if mitigated else 0,
        estimate_source=estimate.source,
        estimate_sample_size=estimate.sample_size,
        **_links(project_id=project_id, run_id=run_id, phase_id=phase_id, attempt_id=attempt_id),
    )


def run_replay_clone(*, run: Run, model_mapping: dict | None = None, name: str = "") -> Run:
    """Clone a finished run as a new queued run from the same plan and base commit (see ``telemetry.replay``)."""
    from telemetry.replay import clone_run

    return clone_run(run=run, model_mapping=model_mapping, name=name)
