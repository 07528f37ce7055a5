"""Claiming, heartbeats, stage events, finishing, releasing and reaping phases (DESIGN "Claiming and leases").

A claim moves a phase ``queued -> executing`` in one transaction, sets the lease and increments
``claim_epoch``, the fencing token every later write must carry. A stale epoch is refused with
``StaleEpoch`` (HTTP 409) and changes nothing, so a killed or slow worker's late result cannot land.

Attempt bookkeeping (deliberate):
- ``attempt_count`` counts claims: every claim creates one ``Attempt`` numbered ``attempt_count + 1``, so
  attempt numbers stay unique and monotonic even when a claim ends without a verdict.
- A claim that ends without a verdict (graceful release, lost lease, abandoned outcome) is not a builder
  attempt: its ``Attempt`` is marked ``abandoned`` and ``attempt_base`` rises by one, so
  ``attempts_since_requeue`` (what ``MAX_ATTEMPTS`` limits) counts only judged attempts.
- ``lost_leases`` counts consecutive leases lost to the reaper; three in a row block the phase. Any
  judged outcome resets it; a graceful release leaves it alone.

A phase that ends blocked or failed stops its run: blocked fails the run ``needs_human``, failed with the
outcome's ``run_failure_reason``; ``phase_requeue`` reopens it.
"""

from __future__ import annotations

import threading
import time
import zlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, OuterRef, Subquery
from django.utils import timezone

from autopack_site.lib.errors import NotFound, PermissionDenied, StaleEpoch
from runs.engine.outcome import OutcomeKind, PhaseOutcome
from runs.models import (
    Attempt,
    AttemptEvent,
    AttemptStatus,
    Phase,
    PhaseState,
    Run,
    RunFailureReason,
    RunState,
)
from runs.services.control import run_complete_if_done, run_fail
from runs.services.transitions import phase_transition_locked

# Phases that still stand in the way of later phases of their run.
OPEN_STATES = (PhaseState.QUEUED, PhaseState.EXECUTING, PhaseState.BLOCKED, PhaseState.FAILED)
LOST_LEASES_BEFORE_BLOCK = 3
SAME_FINGERPRINT_BEFORE_BLOCK = 3
# How many head-of-run candidates one claim looks at before giving up; SKIP LOCKED passes over the ones
# other claimers hold, so a handful is plenty for any realistic number of concurrent claimers.
CANDIDATES_PER_CLAIM = 16


@dataclass(frozen=True)
class Claim:
    phase_id: int
    run_id: int
    claim_epoch: int
    attempt_id: int
    attempt_number: int
    lease_expires_at: datetime
    worker: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase_id": self.phase_id,
            "run_id": self.run_id,
            "claim_epoch": self.claim_epoch,
            "attempt_id": self.attempt_id,
            "attempt_number": self.attempt_number,
            "lease_expires_at": self.lease_expires_at.isoformat(),
            "worker": self.worker,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Claim:
        return cls(
            phase_id=int(data["phase_id"]),
            run_id=int(data["run_id"]),
            claim_epoch=int(data["claim_epoch"]),
            attempt_id=int(data["attempt_id"]),
            attempt_number=int(data["attempt_number"]),
            lease_expires_at=datetime.fromisoformat(data["lease_expires_at"]),
            worker=data.get("worker", ""),
        )


@dataclass(frozen=True)
class Heartbeat:
    """What a heartbeat tells the worker: the new lease end and whether to stop at the next stage boundary."""

    lease_expires_at: datetime
    run_state: str

    @property
    def should_stop(self) -> bool:
        # A paused run lets the executing attempt finish (``run_pause``); cancelled or failed runs stop it.
        return self.run_state not in (RunState.RUNNING, RunState.PAUSED)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lease_expires_at": self.lease_expires_at.isoformat(),
            "run_state": self.run_state,
            "should_stop": self.should_stop,
        }


def lease_seconds_default() -> int:
    return int(settings.AUTOPACK["LEASE_SECONDS"])


def worker_actor(worker: str) -> str:
    return worker if ":" in worker.split("/")[0] else f"worker:{worker}"


# --- claim ------------------------------------------------------------------------------------------


def phase_claim(*, worker: str, runs: list[int] | None = None, lease_seconds: int | None = None) -> Claim | None:
    """Claim the next runnable phase for ``worker``, or return None when there is nothing to claim.

    Runnable: its run is running, and it is the first phase of the run (by ``sequence``, i.e. tier index
    then phase index) that is not complete or skipped, and it is queued; so no other phase of the run is
    executing and every earlier phase is done. The partial unique index ``phase_one_executing_per_run``
    backs this up in the database.
    """
    reap_if_due()
    seconds = lease_seconds or lease_seconds_default()
    for _ in range(3):
        try:
            with transaction.atomic():
                phase = _lock_next_runnable(runs)
                return _claim_locked(phase, worker=worker, lease_seconds=seconds) if phase else None
        except IntegrityError:
            # Another claimer won a phase of the same run in the meantime (phase_one_executing_per_run).
            continue
    return None


def _lock_next_runnable(runs: list[int] | None) -> Phase | None:
    if connection.vendor == "postgresql":
        # One round trip: find the heads of running runs, lock the first queued one nobody else holds.
        sql, params = _claim_sql_postgres(runs)
        return next(iter(Phase.objects.raw(sql, params)), None)
    # SQLite has no row locks: compare-and-swap on the fencing token decides who owns the phase.
    for phase in Phase.objects.filter(
        pk__in=_candidate_phase_ids(runs), state=PhaseState.QUEUED, run__state=RunState.RUNNING
    ).order_by("run_id"):
        won = Phase.objects.filter(pk=phase.pk, state=PhaseState.QUEUED, claim_epoch=phase.claim_epoch).update(
            claim_epoch=phase.claim_epoch + 1
        )
        if won == 1:
            return phase
    return None


def _candidate_phase_ids(runs: list[int] | None) -> list[int]:
    head = Phase.objects.filter(run=OuterRef("pk"), state__in=OPEN_STATES).order_by("sequence").values("pk")[:1]
    running = Run.objects.filter(state=RunState.RUNNING)
    if runs:
        running = running.filter(pk__in=runs)
    head_ids = running.annotate(head_id=Subquery(head)).values("head_id")
    return list(
        Phase.objects.filter(pk__in=head_ids, state=PhaseState.QUEUED)
        .order_by("run_id")
        .values_list("pk", flat=True)[:CANDIDATES_PER_CLAIM]
    )


# Walk running runs oldest first (index run_state_created), probe each one's first open phase (index
# phase_open_by_run) and stop after a few queued heads, so the cost does not grow with the queue's depth;
# then lock the first of those nobody else holds. Plain SQL: the ORM cannot say LATERAL, and this keeps
# the statement small to plan, since it runs for every claim.
_CLAIM_SQL = """
SELECT phase.* FROM {phase} phase
WHERE phase.state = 'queued' AND phase.id IN (
    SELECT head.id FROM {run} r
    CROSS JOIN LATERAL (
        SELECT p.id, p.state FROM {phase} p
        WHERE p.run_id = r.id AND p.state IN ('queued', 'executing', 'blocked', 'failed')
        ORDER BY p.sequence LIMIT 1
    ) head
    WHERE r.state = 'running' AND head.state = 'queued' {only_runs}
    ORDER BY r.created_at, r.id
    LIMIT %s
)
ORDER BY phase.run_id
LIMIT 1
FOR UPDATE OF phase SKIP LOCKED
"""


def _claim_sql_postgres(runs: list[int] | None) -> tuple[str, list[Any]]:
    sql = _CLAIM_SQL.format(
        run=Run._meta.db_table, phase=Phase._meta.db_table, only_runs="AND r.id = ANY(%s)" if runs else ""
    )
    return sql, ([list(runs), CANDIDATES_PER_CLAIM] if runs else [CANDIDATES_PER_CLAIM])


def _claim_locked(phase: Phase, *, worker: str, lease_seconds: int) -> Claim:
    now = timezone.now()
    expires = now + timedelta(seconds=lease_seconds)
    number = phase.attempt_count + 1
    phase = phase_transition_locked(
        phase=phase,
        to_state=PhaseState.EXECUTING,
        actor=worker_actor(worker),
        reason=f"claimed, attempt {number}",
        fields={
            "claim_epoch": phase.claim_epoch + 1,
            "attempt_count": number,
            "lease_owner": worker,
            "lease_expires_at": expires,
            "current_stage": "claimed",
        },
    )
    attempt = Attempt.objects.create(
        phase=phase,
        number=number,
        claim_epoch=phase.claim_epoch,
        revision_epoch=phase.revision_epoch,
        worker=worker,
        started_at=now,
    )
    return Claim(phase.pk, phase.run_id, phase.claim_epoch, attempt.pk, number, expires, worker)


# --- heartbeat and events ------------------------------------------------------------------------------


def _stale(phase_id: int, epoch: int) -> StaleEpoch:
    current = Phase.objects.filter(pk=phase_id).values_list("claim_epoch", "state").first()
    if current is None:
        return StaleEpoch(f"phase {phase_id} does not exist", details={"given_epoch": epoch})
    return StaleEpoch(
        f"phase {phase_id} is not executing under claim epoch {epoch}",
        details={"current_epoch": current[0], "state": current[1], "given_epoch": epoch},
    )


def phase_heartbeat(
    *, phase_id: int, epoch: int, worker: str, stage: str | None = None, lease_seconds: int | None = None
) -> Heartbeat:
    """Extend the lease of a phase ``worker`` holds under ``epoch``; report the run's state.

    One conditional UPDATE: it only matches while the phase is executing under this epoch and owner.
    """
    expires = timezone.now() + timedelta(seconds=lease_seconds or lease_seconds_default())
    fields: dict[str, Any] = {"lease_expires_at": expires}
    if stage:
        fields["current_stage"] = stage[:32]
    updated = Phase.objects.filter(
        pk=phase_id, claim_epoch=epoch, state=PhaseState.EXECUTING, lease_owner=worker
    ).update(**fields)
    if updated != 1:
        _refuse(phase_id=phase_id, epoch=epoch, worker=worker)
    run_state = Run.objects.filter(phases__pk=phase_id).values_list("state", flat=True).first()
    return Heartbeat(lease_expires_at=expires, run_state=run_state or "")


def _refuse(*, phase_id: int, epoch: int, worker: str) -> None:
    row = Phase.objects.filter(pk=phase_id).values_list("claim_epoch", "state", "lease_owner").first()
    if row is None:
        raise NotFound(f"phase {phase_id} does not exist")
    current_epoch, state, owner = row
    if current_epoch == epoch and state == PhaseState.EXECUTING and owner != worker:
        raise PermissionDenied(f"phase {phase_id} is leased to another worker")
    raise _stale(phase_id, epoch)


def _locked_current(*, phase_id: int, epoch: int, worker: str | None, with_run: bool = False) -> Phase:
    rows = Phase.objects.filter(pk=phase_id)
    if with_run:
        # Lock the run too (phase first, then run, like every other writer), in the same round trip.
        rows = rows.select_related("run").select_for_update(of=("self", "run"))
    else:
        rows = rows.select_for_update()
    phase = rows.first()
    if phase is None:
        raise NotFound(f"phase {phase_id} does not exist")
    if phase.claim_epoch != epoch or phase.state != PhaseState.EXECUTING:
        raise StaleEpoch(
            f"phase {phase_id} is not executing under claim epoch {epoch}",
            details={"current_epoch": phase.claim_epoch, "state": phase.state, "given_epoch": epoch},
        )
    if worker is not None and phase.lease_owner != worker:
        raise PermissionDenied(f"phase {phase_id} is leased to another worker")
    return phase


def phase_report_event(
    *,
    phase_id: int,
    epoch: int,
    stage: str,
    kind: str,
    data: dict[str, Any] | None = None,
    blob: bytes | None = None,
    worker: str | None = None,
) -> AttemptEvent:
    """Append a stage event to the attempt of the current claim; large text goes zlib-compressed in ``blob``."""
    with transaction.atomic():
        phase = _locked_current(phase_id=phase_id, epoch=epoch, worker=worker)
        attempt = Attempt.objects.get(phase=phase, claim_epoch=epoch)
        last = AttemptEvent.objects.filter(attempt=attempt).order_by("-seq").values_list("seq", flat=True).first()
        event = AttemptEvent.objects.create(
            attempt=attempt,
            seq=(last or 0) + 1,
            stage=stage[:32],
            kind=kind[:32],
            data=data or {},
            blob=zlib.compress(blob) if blob is not None else None,
        )
        if phase.current_stage != stage[:32]:
            Phase.objects.filter(pk=phase.pk).update(current_stage=stage[:32])
        return event


# --- finish ---------------------------------------------------------------------------------------------


@dataclass
class _RunDelta:
    """Counter changes for the run, written in one UPDATE at the end of ``phase_finish``."""

    tokens: int = 0
    cost: Decimal = Decimal("0")
    doctor_calls: int = 0
    failures: int = 0
    patch_failures: int = 0
    phases_done: int = 0

    def write(self, run: Run) -> None:
        Run.objects.filter(pk=run.pk).update(
            tokens_used=F("tokens_used") + self.tokens,
            cost_usd=F("cost_usd") + self.cost,
            doctor_calls=F("doctor_calls") + self.doctor_calls,
            failures_count=F("failures_count") + self.failures,
            patch_failures_count=F("patch_failures_count") + self.patch_failures,
            phases_done=F("phases_done") + self.phases_done,
        )
        # The run row is locked by this transaction, so these in-memory sums are the stored values.
        run.tokens_used += self.tokens
        run.cost_usd += self.cost
        run.doctor_calls += self.doctor_calls
        run.failures_count += self.failures
        run.patch_failures_count += self.patch_failures
        run.phases_done += self.phases_done


def phase_finish(*, phase_id: int, epoch: int, outcome: PhaseOutcome, worker: str | None = None) -> Phase:
    """Apply the outcome of the attempt held under ``epoch``; ``StaleEpoch`` (nothing changed) otherwise."""
    outcome = replace(outcome, kind=OutcomeKind(outcome.kind))  # tolerate a plain string kind
    with transaction.atomic():
        phase = _locked_current(phase_id=phase_id, epoch=epoch, worker=worker, with_run=True)
        run = phase.run
        actor = worker_actor(worker or phase.lease_owner)
        delta = _RunDelta()
        _record_attempt(phase=phase, epoch=epoch, outcome=outcome)
        _accumulate_usage(phase=phase, outcome=outcome, delta=delta)
        kind = outcome.kind
        if run.state == RunState.CANCELLED and kind != OutcomeKind.COMPLETE:
            kind = OutcomeKind.SKIPPED
        phase, stop = _FINISHERS[kind](phase=phase, run=run, outcome=outcome, actor=actor, delta=delta)
        delta.write(run)
        _settle_run(phase=phase, run=run, actor=actor, stop=stop, done=delta.phases_done > 0)
        enqueue = phase.state == PhaseState.QUEUED and run.state == RunState.RUNNING
    if enqueue:
        _enqueue_after_commit(phase.run_id)
    return phase


def _settle_run(*, phase: Phase, run: Run, actor: str, stop: tuple[str, str] | None, done: bool) -> None:
    """After the phase moved: stop the run (blocked/failed), fail it on a budget, or complete it."""
    if stop is not None:
        _stop_run(run=run, failure_reason=stop[0], detail=stop[1])
        return
    exceeded = _exceeded_budget(run) if run.state == RunState.RUNNING else ""
    if exceeded:
        run_fail(run_id=run.pk, failure_reason=RunFailureReason.BUDGET_EXHAUSTED, detail=exceeded, actor=actor)
        run.state = RunState.FAILED
        return
    # Counting the open phases on every finish is wasted work while the counters say more are to come.
    maybe_last = not run.phases_total or run.phases_done >= run.phases_total
    if done and maybe_last and not Phase.objects.filter(run_id=run.pk, state__in=OPEN_STATES).exists():
        run.state = run_complete_if_done(run_id=run.pk, actor=actor).state


def _record_attempt(*, phase: Phase, epoch: int, outcome: PhaseOutcome) -> None:
    status = {
        OutcomeKind.COMPLETE: AttemptStatus.SUCCEEDED,
        OutcomeKind.ABANDONED: AttemptStatus.ABANDONED,
        OutcomeKind.SKIPPED: AttemptStatus.SUCCEEDED,
    }.get(outcome.kind, AttemptStatus.FAILED)
    now = timezone.now()
    attempt = Attempt.objects.only("pk", "started_at").get(phase=phase, claim_epoch=epoch)
    Attempt.objects.filter(pk=attempt.pk).update(
        status=status,
        outcome=outcome.kind.value,
        failure_reason=outcome.reason if outcome.kind != OutcomeKind.COMPLETE else "",
        model=outcome.model[:100],
        input_tokens=F("input_tokens") + int(outcome.input_tokens),
        output_tokens=F("output_tokens") + int(outcome.output_tokens),
        cost_usd=F("cost_usd") + Decimal(str(outcome.cost_usd or "0")),
        diff=outcome.diff,
        summary=outcome.summary or {},
        finished_at=now,
        duration_ms=int((now - attempt.started_at).total_seconds() * 1000),
    )


def _accumulate_usage(*, phase: Phase, outcome: PhaseOutcome, delta: _RunDelta) -> None:
    delta.tokens = int(outcome.input_tokens) + int(outcome.output_tokens)
    delta.cost = Decimal(str(outcome.cost_usd or "0"))
    delta.doctor_calls = 1 if outcome.doctor_called else 0
    # Written with the phase's transition (same UPDATE), as plain values: the phase row is locked.
    phase.tokens_used += delta.tokens
    phase.cost_usd += delta.cost
    phase.doctor_calls += delta.doctor_calls


def _usage_fields(phase: Phase) -> dict[str, Any]:
    return {"tokens_used": phase.tokens_used, "cost_usd": phase.cost_usd, "doctor_calls": phase.doctor_calls}


Finished = tuple[Phase, "tuple[str, str] | None"]


def _finish_complete(*, phase: Phase, run: Run, outcome: PhaseOutcome, actor: str, delta: _RunDelta) -> Finished:
    delta.phases_done = 1
    phase = phase_transition_locked(
        phase=phase,
        to_state=PhaseState.COMPLETE,
        actor=actor,
        reason=outcome.reason or "complete",
        fields={
            "commit_sha": outcome.commit_sha[:64],
            "lost_leases": 0,
            "last_failure_reason": "",
            **_usage_fields(phase),
        },
    )
    return phase, None


def _finish_skipped(*, phase: Phase, run: Run, outcome: PhaseOutcome, actor: str, delta: _RunDelta) -> Finished:
    delta.phases_done = 1
    reason = outcome.reason or ("run cancelled" if run.state == RunState.CANCELLED else "skipped")
    phase = phase_transition_locked(
        phase=phase,
        to_state=PhaseState.SKIPPED,
        actor=actor,
        reason=reason,
        fields={"lost_leases": 0, **_usage_fields(phase)},
    )
    return phase, None


def _failure_fields(phase: Phase, outcome: PhaseOutcome, delta: _RunDelta) -> dict[str, Any]:
    delta.failures = 1
    delta.patch_failures = 1 if outcome.patch_failure else 0
    fingerprints = list(phase.failure_fingerprints or [])
    if outcome.failure_fingerprint:
        fingerprints.append(outcome.failure_fingerprint)
    return {
        "last_failure_reason": outcome.reason,
        "failure_fingerprints": fingerprints,
        "lost_leases": 0,
        **_usage_fields(phase),
    }


def _finish_retry(*, phase: Phase, run: Run, outcome: PhaseOutcome, actor: str, delta: _RunDelta) -> Finished:
    fields = _failure_fields(phase, outcome, delta)
    fields["builder_hint"] = outcome.builder_hint
    if outcome.budget_override is not None:
        fields["budget_override"] = outcome.budget_override
    if outcome.escalate_model:
        fields["escalation_level"] = phase.escalation_level + 1
    if outcome.replan:
        fields["revision_epoch"] = phase.revision_epoch + 1
    stuck = _stuck_reason(
        phase=phase, fingerprints=fields["failure_fingerprints"], fingerprint=outcome.failure_fingerprint
    )
    if stuck:
        fields["last_failure_reason"] = f"{stuck}; last failure: {outcome.reason}"
        phase = phase_transition_locked(
            phase=phase, to_state=PhaseState.BLOCKED, actor=actor, reason=stuck, fields=fields
        )
        return phase, (RunFailureReason.NEEDS_HUMAN, f"phase {phase.phase_id}: {stuck}")
    phase = phase_transition_locked(
        phase=phase, to_state=PhaseState.QUEUED, actor=actor, reason=f"retry: {outcome.reason}", fields=fields
    )
    return phase, None


def _stuck_reason(*, phase: Phase, fingerprints: list[str], fingerprint: str) -> str:
    limit = int(settings.AUTOPACK["MAX_ATTEMPTS"])
    if phase.attempts_since_requeue >= limit:
        return f"attempt limit reached ({phase.attempts_since_requeue} of {limit})"
    if fingerprint and fingerprints.count(fingerprint) >= SAME_FINGERPRINT_BEFORE_BLOCK:
        return f"same failure {SAME_FINGERPRINT_BEFORE_BLOCK} times (fingerprint {fingerprint[:16]})"
    return ""


def _finish_blocked(*, phase: Phase, run: Run, outcome: PhaseOutcome, actor: str, delta: _RunDelta) -> Finished:
    fields = _failure_fields(phase, outcome, delta)
    phase = phase_transition_locked(
        phase=phase, to_state=PhaseState.BLOCKED, actor=actor, reason=outcome.reason or "blocked", fields=fields
    )
    return phase, (RunFailureReason.NEEDS_HUMAN, f"phase {phase.phase_id} blocked: {outcome.reason}")


def _finish_failed(*, phase: Phase, run: Run, outcome: PhaseOutcome, actor: str, delta: _RunDelta) -> Finished:
    fields = _failure_fields(phase, outcome, delta)
    phase = phase_transition_locked(
        phase=phase, to_state=PhaseState.FAILED, actor=actor, reason=outcome.reason or "failed", fields=fields
    )
    reason = outcome.run_failure_reason or RunFailureReason.NEEDS_HUMAN
    return phase, (reason, f"phase {phase.phase_id} failed: {outcome.reason}")


def _finish_abandoned(*, phase: Phase, run: Run, outcome: PhaseOutcome, actor: str, delta: _RunDelta) -> Finished:
    phase = _give_back(
        phase=phase, actor=actor, reason=outcome.reason or "abandoned by worker", extra=_usage_fields(phase)
    )
    return phase, None


_FINISHERS = {
    OutcomeKind.COMPLETE: _finish_complete,
    OutcomeKind.RETRY: _finish_retry,
    OutcomeKind.BLOCKED: _finish_blocked,
    OutcomeKind.FAILED: _finish_failed,
    OutcomeKind.SKIPPED: _finish_skipped,
    OutcomeKind.ABANDONED: _finish_abandoned,
}


def _give_back(
    *, phase: Phase, actor: str, reason: str, lost: bool = False, extra: dict[str, Any] | None = None
) -> Phase:
    """Return a claim without a verdict: not a builder attempt (``attempt_base`` follows ``attempt_count``)."""
    fields: dict[str, Any] = {"attempt_base": phase.attempt_base + 1, **(extra or {})}
    if lost:
        fields["lost_leases"] = phase.lost_leases + 1
    return phase_transition_locked(phase=phase, to_state=PhaseState.QUEUED, actor=actor, reason=reason, fields=fields)


def _stop_run(*, run: Run, failure_reason: str, detail: str) -> None:
    # A paused run cannot fail (paused -> failed is not a legal move); it stays paused with the phase blocked.
    if run.state == RunState.RUNNING:
        run_fail(run_id=run.pk, failure_reason=failure_reason, detail=detail, actor="system:leases")
        run.state = RunState.FAILED


def _exceeded_budget(run: Run) -> str:
    if run.failures_count >= run.max_failures:
        return f"{run.failures_count} failed attempts (limit {run.max_failures})"
    if run.patch_failures_count >= run.max_patch_failures:
        return f"{run.patch_failures_count} patch failures (limit {run.max_patch_failures})"
    if run.tokens_used >= run.token_cap:
        return f"{run.tokens_used} tokens used (cap {run.token_cap})"
    if run.cost_usd >= run.usd_cap:
        return f"${run.cost_usd} spent (cap ${run.usd_cap})"
    return ""


def _enqueue_after_commit(run_id: int) -> None:
    def enqueue() -> None:
        from runs import tasks

        tasks.enqueue_run_work(run_id)

    transaction.on_commit(enqueue)


# --- release and reap -----------------------------------------------------------------------------------


def phase_release(*, phase_id: int, epoch: int, worker: str | None = None, reason: str = "released") -> Phase:
    """Give a held phase back at once (graceful shutdown): queued again, not counted as a builder attempt.

    In a cancelled run the phase is skipped instead, which also ends the lease.
    """
    with transaction.atomic():
        phase = _locked_current(phase_id=phase_id, epoch=epoch, worker=worker)
        outcome = PhaseOutcome(kind=OutcomeKind.ABANDONED, reason=reason)
        _record_attempt(phase=phase, epoch=epoch, outcome=outcome)
        run_state = Run.objects.filter(pk=phase.run_id).values_list("state", flat=True).get()
        actor = worker_actor(worker or phase.lease_owner)
        if run_state == RunState.CANCELLED:
            phase = phase_transition_locked(phase=phase, to_state=PhaseState.SKIPPED, actor=actor, reason=reason)
            run_complete_if_done(run_id=phase.run_id, actor=actor)
            return phase
        phase = _give_back(phase=phase, actor=actor, reason=reason)
    if run_state == RunState.RUNNING:
        _enqueue_after_commit(phase.run_id)
    return phase


def leases_reap(*, now: datetime | None = None) -> int:
    """Requeue (or block, after 3 in a row) every executing phase whose lease expired; return how many."""
    now = now or timezone.now()
    expired = list(
        Phase.objects.filter(state=PhaseState.EXECUTING, lease_expires_at__lt=now).values_list("pk", flat=True)
    )
    return sum(1 for phase_id in expired if _reap_one(phase_id=phase_id, now=now))


def _reap_one(*, phase_id: int, now: datetime) -> bool:
    with transaction.atomic():
        rows = Phase.objects.filter(pk=phase_id, state=PhaseState.EXECUTING, lease_expires_at__lt=now)
        if connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True)
        phase = rows.first()
        if phase is None:
            return False
        reason = f"lease of {phase.lease_owner or 'unknown worker'} expired at {phase.lease_expires_at:%H:%M:%S}"
        Attempt.objects.filter(phase=phase, claim_epoch=phase.claim_epoch).update(
            status=AttemptStatus.ABANDONED, outcome="lease_lost", failure_reason=reason, finished_at=now
        )
        run = Run.objects.get(pk=phase.run_id)
        _reap_transition(phase=phase, run=run, reason=reason)
    return True


def _reap_transition(*, phase: Phase, run: Run, reason: str) -> None:
    actor = "system:reaper"
    if run.state == RunState.CANCELLED:
        phase_transition_locked(
            phase=phase, to_state=PhaseState.SKIPPED, actor=actor, reason=f"{reason}; run cancelled"
        )
        run_complete_if_done(run_id=run.pk, actor=actor)
        return
    if phase.lost_leases + 1 >= LOST_LEASES_BEFORE_BLOCK:
        detail = f"{LOST_LEASES_BEFORE_BLOCK} leases lost in a row; {reason}"
        phase_transition_locked(
            phase=phase,
            to_state=PhaseState.BLOCKED,
            actor=actor,
            reason=detail,
            fields={"lost_leases": phase.lost_leases + 1, "attempt_base": phase.attempt_base + 1},
        )
        _stop_run(run=run, failure_reason=RunFailureReason.ENVIRONMENT, detail=f"phase {phase.phase_id}: {detail}")
        return
    _give_back(phase=phase, actor=actor, reason=reason, lost=True)
    if run.state == RunState.RUNNING:
        _enqueue_after_commit(run.pk)


# Claimers reap in passing, so a killed worker's phase comes back within a lease plus this interval even
# when no scheduler runs; the django-q2 schedule is the backstop. Per process, cheap (an index range scan).
_reap_state = {"last": 0.0}
_reap_lock = threading.Lock()


def reap_if_due(*, interval: float | None = None) -> int:
    interval = interval if interval is not None else max(0.5, lease_seconds_default() / 6)
    with _reap_lock:
        now = time.monotonic()
        if now - _reap_state["last"] < interval:
            return 0
        _reap_state["last"] = now
    return leases_reap()
