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

Hot path on PostgreSQL (``bench/claims.py``; the ORM version cost ~14 round trips and ~6 ms of worker CPU
+ ~3 ms of PostgreSQL CPU per claim+finish cycle, mostly ORM statement compilation and query planning):
- A claim is ONE statement, outside any transaction: pick and lock a runnable head (SKIP LOCKED), move it
  to executing with the legality condition in the WHERE (compare-and-swap), write its transition row and
  its Attempt, return the Claim's fields.
- A complete outcome in a running run that has more phases to go and stays within budget is ONE statement
  too (``_finish_fast``): its ``holder`` CTE locks phase and run and checks everything the general path
  would decide on; anything else matches no row and takes the general path.
- The general finish is one locked read (phase + run) and one write (attempt verdict, run counters as
  increments, phase, transition row) in a transaction.
- Those statements are raw SQL with parameters, PREPAREd once per connection (``execute_prepared``), so
  PostgreSQL plans them once; the SQLite path keeps the ORM (compare-and-swap claims, same rows).
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
import zlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, ProgrammingError, connection, transaction
from django.db.models import F, OuterRef, Subquery
from django.utils import timezone

from autopack_site.lib.errors import NotFound, PermissionDenied, StaleEpoch
from autopack_site.lib.prepared import RowReader
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
from runs.services.transitions import (
    execute_prepared,
    phase_legal_sources,
    phase_move_fields,
    phase_transition_fast,
    phase_transition_insert_sql,
    phase_transition_locked,
    prepared_statement_lost,
    sql_assignments,
)

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


@dataclass(frozen=True)
class ClaimFilter:
    """Which runs a claim may take a phase from. Empty means no restriction.

    ``runs``: only these runs. ``projects``: only runs of these projects (a non-staff remote executor's).
    ``skip_categories``: leave out runs whose next phase has one of these categories (remote executors
    leave research phases to the server's workers); the check is part of the claim itself, so it cannot
    race with the run's head changing.
    """

    runs: tuple[int, ...] = ()
    projects: tuple[int, ...] | None = None
    skip_categories: tuple[str, ...] = ()


def phase_claim(
    *,
    worker: str,
    runs: list[int] | None = None,
    lease_seconds: int | None = None,
    projects: list[int] | None = None,
    skip_categories: tuple[str, ...] | list[str] = (),
) -> Claim | None:
    """Claim the next runnable phase for ``worker``, or return None when there is nothing to claim.

    Runnable: its run is running, and it is the first phase of the run (by ``sequence``, i.e. tier index
    then phase index) that is not complete or skipped, and it is queued; so no other phase of the run is
    executing and every earlier phase is done. The partial unique index ``phase_one_executing_per_run``
    backs this up in the database. ``runs``, ``projects`` and ``skip_categories`` narrow it (``ClaimFilter``);
    ``projects=[]`` (a member of no project) claims nothing.
    """
    wanted = ClaimFilter(
        runs=tuple(runs or ()),
        projects=None if projects is None else tuple(projects),
        skip_categories=tuple(skip_categories),
    )
    if wanted.projects == ():
        return None
    reap_if_due()
    seconds = lease_seconds or lease_seconds_default()
    postgres = connection.vendor == "postgresql"
    claim_once = _claim_postgres if postgres else _claim_compare_and_swap
    for _ in range(3):
        try:
            with _single_statement_scope(postgres):
                return claim_once(worker=worker, wanted=wanted, lease_seconds=seconds)
        except (IntegrityError, _LostRace):
            # Another claimer won a phase of the same run in the meantime (phase_one_executing_per_run), or
            # won every candidate this claim looked at.
            continue
        except ProgrammingError as error:
            if not prepared_statement_lost(error):
                raise
            continue  # deallocated behind our back; prepared again on the next try
    return None


def _single_statement_scope(postgres: bool) -> contextlib.AbstractContextManager[Any]:
    # A PostgreSQL claim (or fast finish) is one statement, atomic on its own: outside a transaction it needs
    # no BEGIN and COMMIT round trips. Inside a caller's transaction a savepoint keeps a failure from breaking it.
    if postgres and connection.get_autocommit():
        return contextlib.nullcontext()
    return transaction.atomic()


def _claim_compare_and_swap(*, worker: str, wanted: ClaimFilter, lease_seconds: int) -> Claim | None:
    """SQLite has no row locks: compare-and-swap on the fencing token decides who owns the phase."""
    for phase in Phase.objects.filter(
        pk__in=_candidate_phase_ids(wanted), state=PhaseState.QUEUED, run__state=RunState.RUNNING
    ).order_by("run_id"):
        won = Phase.objects.filter(pk=phase.pk, state=PhaseState.QUEUED, claim_epoch=phase.claim_epoch).update(
            claim_epoch=phase.claim_epoch + 1
        )
        if won == 1:
            return _claim_locked(phase, worker=worker, lease_seconds=lease_seconds)
    return None


def _candidate_phase_ids(wanted: ClaimFilter) -> list[int]:
    head = Phase.objects.filter(run=OuterRef("pk"), state__in=OPEN_STATES).order_by("sequence").values("pk")[:1]
    running = Run.objects.filter(state=RunState.RUNNING)
    if wanted.runs:
        running = running.filter(pk__in=wanted.runs)
    if wanted.projects is not None:
        running = running.filter(project_id__in=wanted.projects)
    head_ids = running.annotate(head_id=Subquery(head)).values("head_id")
    return list(
        Phase.objects.filter(pk__in=head_ids, state=PhaseState.QUEUED)
        .exclude(category__in=wanted.skip_categories)
        .order_by("run_id")
        .values_list("pk", flat=True)[:CANDIDATES_PER_CLAIM]
    )


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


# PostgreSQL: the whole claim is one statement, one round trip.
# ``heads`` walks running runs oldest first (index run_state_created; ordered by exactly its columns, so the
# walk is an index scan that stops early whatever the statistics say, also in a generic plan), probes each
# one's first open phase (index phase_open_by_run) and stops after a few queued heads, so the cost does not
# grow with the queue's depth. It is MATERIALIZED, and ``candidate`` and ``claimed`` reach phases only
# through it by primary key: with stale statistics (a freshly loaded queue) the planner otherwise chose to
# walk every queued phase and re-probe the runs for each, 100+ ms for 1,600 phases instead of < 1 ms.
# ``candidate`` walks the heads in that order and locks the first one that nobody else holds and is still
# queued (SKIP LOCKED; the state is re-checked on the newest row version). The lock sits inside the lateral
# lookup and nothing above it sorts, so the walk stops at the first lock taken: a sort there once made every
# claim lock all the heads it looked at, and concurrent claimers then skipped them all and came back empty
# while work was queued. ``claimed`` moves it to executing with the legality condition in its WHERE
# (compare-and-swap, re-checked on the locked row); ``logged`` and ``attempt`` write its transition row and
# its Attempt. Plain SQL: the ORM cannot say LATERAL or data-modifying CTEs, and this runs for every claim.
_CLAIM_SQL = """
WITH heads AS MATERIALIZED (
    SELECT head.id FROM {run} r
    CROSS JOIN LATERAL (
        SELECT p.id, p.state, p.category FROM {phase} p
        WHERE p.run_id = r.id AND p.state IN ('queued', 'executing', 'blocked', 'failed')
        ORDER BY p.sequence LIMIT 1
    ) head
    WHERE r.state = %(run_state)s::text AND head.state = ANY(%(sources)s::text[]) {filters}
    ORDER BY r.created_at
    LIMIT {candidates:d}
), candidate AS MATERIALIZED (
    SELECT phase.id, phase.state FROM heads CROSS JOIN LATERAL (
        SELECT one.id, one.state FROM {phase} one
        WHERE one.id = heads.id AND one.state = ANY(%(sources)s::text[])
        FOR UPDATE SKIP LOCKED
    ) phase
    LIMIT 1
), claimed AS (
    UPDATE {phase} p SET
        state = %(to_state)s::text, claim_epoch = p.claim_epoch + 1, attempt_count = p.attempt_count + 1,
        lease_owner = %(worker)s::text,
        lease_expires_at = statement_timestamp() + %(lease_seconds)s::integer * interval '1 second',
        current_stage = 'claimed',
        started_at = COALESCE(p.started_at, statement_timestamp()), updated_at = statement_timestamp()
    WHERE p.id = (SELECT id FROM candidate) AND p.state = ANY(%(sources)s::text[])
    RETURNING p.id, p.run_id, p.claim_epoch, p.attempt_count, p.revision_epoch,
        (SELECT state FROM candidate) AS from_state, p.lease_expires_at
), logged AS (
    {transition_insert}
    SELECT id, from_state, %(to_state)s::text, %(actor)s::text, 'claimed, attempt ' || attempt_count, claim_epoch,
        statement_timestamp()
    FROM claimed
), attempt AS (
    INSERT INTO {attempt} ({attempt_columns})
    SELECT id, attempt_count, claim_epoch, revision_epoch, {attempt_values} FROM claimed
    RETURNING id, phase_id
)
SELECT claimed.id, claimed.run_id, claimed.claim_epoch, attempt.id, claimed.attempt_count, claimed.lease_expires_at,
    (SELECT count(*) FROM heads) AS heads
FROM (SELECT 1) AS one LEFT JOIN (claimed JOIN attempt ON attempt.phase_id = claimed.id) ON true
"""
# The Attempt columns the claim sets from the claimed row; every other column gets its model default.
_ATTEMPT_FROM_CLAIM = ("phase", "number", "claim_epoch", "revision_epoch")


@functools.cache
def _claim_statement(only_runs: bool, only_projects: bool, skip_categories: bool) -> tuple[str, dict[str, Any]]:
    """The claim SQL and its fixed parameters (built once per process from the models' metadata).

    Parameters carry casts: the statement is prepared once per connection (``execute_prepared``), and
    PostgreSQL cannot type a bare parameter in an INSERT ... SELECT list.
    """
    quote = connection.ops.quote_name
    rest = [f for f in Attempt._meta.concrete_fields if not f.primary_key and f.name not in _ATTEMPT_FROM_CLAIM]
    values = {"worker": "%(worker)s::text", "started_at": "statement_timestamp()"}
    fixed: dict[str, Any] = {}
    for field in rest:
        default = field.get_db_prep_save(field.get_default(), connection)
        if field.name in values:
            continue
        if default is None:
            values[field.name] = "NULL"
        else:
            values[field.name] = f"CAST(%(attempt_{field.name})s AS {field.db_type(connection)})"
            fixed[f"attempt_{field.name}"] = default
    sql = _CLAIM_SQL.format(
        phase=quote(Phase._meta.db_table),
        run=quote(Run._meta.db_table),
        attempt=quote(Attempt._meta.db_table),
        transition_insert=phase_transition_insert_sql(),
        filters=" ".join(
            condition
            for condition, wanted in (
                ("AND r.id = ANY(%(runs)s::bigint[])", only_runs),
                ("AND r.project_id = ANY(%(projects)s::bigint[])", only_projects),
                ("AND head.category <> ALL(%(skip)s::text[])", skip_categories),
            )
            if wanted
        ),
        candidates=CANDIDATES_PER_CLAIM,
        attempt_columns=", ".join(quote(Attempt._meta.get_field(name).column) for name in _ATTEMPT_FROM_CLAIM)
        + "".join(f", {quote(f.column)}" for f in rest),
        attempt_values=", ".join(values[f.name] for f in rest),
    )
    fixed.update(
        sources=phase_legal_sources(PhaseState.EXECUTING), to_state=PhaseState.EXECUTING, run_state=RunState.RUNNING
    )
    return sql, fixed


def claim_sql_postgres(
    *, worker: str, wanted: ClaimFilter | None = None, lease_seconds: int
) -> tuple[str, dict[str, Any]]:
    """The claim statement with its parameters.

    Its times come from the database's clock at the start of the statement, which runs after the run's
    previous phase finished and committed: an attempt can never appear to start before its predecessor
    ended (a time taken in Python before the statement could be earlier than that finish).
    """
    wanted = wanted or ClaimFilter()
    sql, fixed = _claim_statement(bool(wanted.runs), wanted.projects is not None, bool(wanted.skip_categories))
    params = {
        **fixed,
        "worker": worker,
        "actor": worker_actor(worker),
        "lease_seconds": int(lease_seconds),
    }
    if wanted.runs:
        params["runs"] = list(wanted.runs)
    if wanted.projects is not None:
        params["projects"] = list(wanted.projects)
    if wanted.skip_categories:
        params["skip"] = list(wanted.skip_categories)
    return sql, params


def _claim_postgres(*, worker: str, wanted: ClaimFilter, lease_seconds: int) -> Claim | None:
    sql, params = claim_sql_postgres(worker=worker, wanted=wanted, lease_seconds=lease_seconds)
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, params)
        row = cursor.fetchone()
    phase_id, run_id, epoch, attempt_id, number, expires, heads = row
    if phase_id is None:
        if heads:
            # Queued heads were there, but concurrent claimers took every one of them first: look again.
            raise _LostRace
        return None
    return Claim(phase_id, run_id, epoch, attempt_id, number, expires, worker)


class _LostRace(Exception):
    """A claim found work, but other claimers won all of it during the statement."""


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

    One conditional UPDATE: it only matches while the phase is executing under this epoch and owner (on
    PostgreSQL it also returns the run's state, so a beat is one round trip).
    """
    expires = timezone.now() + timedelta(seconds=lease_seconds or lease_seconds_default())
    stage = stage[:32] if stage else None
    if connection.vendor == "postgresql":
        run_state = _heartbeat_postgres(phase_id=phase_id, epoch=epoch, worker=worker, stage=stage, expires=expires)
        if run_state is not None:
            return Heartbeat(lease_expires_at=expires, run_state=run_state)
        _refuse(phase_id=phase_id, epoch=epoch, worker=worker)
    fields: dict[str, Any] = {"lease_expires_at": expires}
    if stage:
        fields["current_stage"] = stage
    updated = Phase.objects.filter(
        pk=phase_id, claim_epoch=epoch, state=PhaseState.EXECUTING, lease_owner=worker
    ).update(**fields)
    if updated != 1:
        _refuse(phase_id=phase_id, epoch=epoch, worker=worker)
    run_state = Run.objects.filter(phases__pk=phase_id).values_list("state", flat=True).first()
    return Heartbeat(lease_expires_at=expires, run_state=run_state or "")


# The heartbeat's conditional UPDATE, returning the run's state in the same round trip. ``COALESCE`` keeps
# the stage when the beat carries none (one statement text for both, so it is prepared once).
_HEARTBEAT_SQL = """
UPDATE {phase} AS p
SET lease_expires_at = %s::timestamptz, current_stage = COALESCE(%s::varchar, p.current_stage)
FROM {run} AS r
WHERE p.id = %s::bigint AND p.claim_epoch = %s::integer AND p.state = %s::varchar AND p.lease_owner = %s::varchar
  AND r.id = p.run_id
RETURNING r.state
"""


def _heartbeat_postgres(*, phase_id: int, epoch: int, worker: str, stage: str | None, expires: datetime) -> str | None:
    """The run's state after extending the lease, or None when the beat matched no phase (nothing changed)."""
    sql = _HEARTBEAT_SQL.format(phase=_table(Phase), run=_table(Run))
    params = [expires, stage, phase_id, epoch, PhaseState.EXECUTING, worker]
    for _ in range(2):
        try:
            with _single_statement_scope(postgres=True), connection.cursor() as cursor:
                execute_prepared(cursor, sql, params)
                row = cursor.fetchone()
            return None if row is None else row[0]
        except ProgrammingError as error:
            if not prepared_statement_lost(error):
                raise
            continue  # deallocated behind our back; prepared again on the next try
    return None


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
    _check_holder(phase, phase_id=phase_id, epoch=epoch, worker=worker)
    return phase


def _check_holder(phase: Phase | None, *, phase_id: int, epoch: int, worker: str | None) -> None:
    """Refuse a write that does not come from the current claim (nothing has been changed yet)."""
    if phase is None:
        raise NotFound(f"phase {phase_id} does not exist")
    if phase.claim_epoch != epoch or phase.state != PhaseState.EXECUTING:
        raise StaleEpoch(
            f"phase {phase_id} is not executing under claim epoch {epoch}",
            details={"current_epoch": phase.claim_epoch, "state": phase.state, "given_epoch": epoch},
        )
    if worker is not None and phase.lease_owner != worker:
        raise PermissionDenied(f"phase {phase_id} is leased to another worker")


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
    """Append a stage event to the attempt of the current claim; large text goes zlib-compressed in ``blob``.

    Stored as given: callers redact (the executor API at the edge, ``DjangoRecorder`` in process).
    """
    stage, kind = stage[:32], kind[:32]
    data = data or {}
    compressed = zlib.compress(blob) if blob is not None else None
    if connection.vendor == "postgresql" and worker is not None:
        event = _report_event_postgres(
            phase_id=phase_id, epoch=epoch, stage=stage, kind=kind, data=data, blob=compressed, worker=worker
        )
        if event is not None:
            return event
    return _report_event_orm(
        phase_id=phase_id, epoch=epoch, stage=stage, kind=kind, data=data, blob=compressed, worker=worker
    )


def _report_event_orm(
    *, phase_id: int, epoch: int, stage: str, kind: str, data: dict[str, Any], blob: bytes | None, worker: str | None
) -> AttemptEvent:
    """The general path (SQLite, and PostgreSQL whenever the one statement matched nothing): precise errors."""
    with transaction.atomic():
        phase = _locked_current(phase_id=phase_id, epoch=epoch, worker=worker)
        attempt = Attempt.objects.get(phase=phase, claim_epoch=epoch)
        last = AttemptEvent.objects.filter(attempt=attempt).order_by("-seq").values_list("seq", flat=True).first()
        event = AttemptEvent.objects.create(
            attempt=attempt, seq=(last or 0) + 1, stage=stage, kind=kind, data=data, blob=blob
        )
        if phase.current_stage != stage:
            Phase.objects.filter(pk=phase.pk).update(current_stage=stage)
        return event


# An event on PostgreSQL is ONE statement: ``holder`` locks the phase only while the claim is current (epoch,
# executing, owner), ``attempt`` is that claim's attempt, the event takes the attempt's next ``seq``, and the
# phase's ``current_stage`` is written only when it changes. A stale or foreign claim matches no row and
# changes nothing; the general path then raises the precise error.
_EVENT_SQL = """
WITH holder AS (
    SELECT p.id, p.current_stage FROM {phase} AS p
    WHERE p.id = %(phase)s::bigint AND p.claim_epoch = %(epoch)s::integer AND p.state = %(executing)s::varchar
      AND p.lease_owner = %(worker)s::varchar
    FOR UPDATE
), attempt AS (
    SELECT a.id FROM {attempt} AS a JOIN holder ON a.phase_id = holder.id WHERE a.claim_epoch = %(epoch)s::integer
), inserted AS (
    INSERT INTO {event} (attempt_id, seq, stage, kind, data, blob, created_at)
    SELECT attempt.id, COALESCE((SELECT MAX(e.seq) FROM {event} AS e WHERE e.attempt_id = attempt.id), 0) + 1,
        %(stage)s::varchar, %(kind)s::varchar, %(data)s::jsonb, %(blob)s::bytea, %(now)s::timestamptz
    FROM attempt
    RETURNING id, attempt_id, seq
), staged AS (
    UPDATE {phase} AS p SET current_stage = %(stage)s::varchar FROM holder, inserted
    WHERE p.id = holder.id AND holder.current_stage <> %(stage)s::varchar
)
SELECT id, attempt_id, seq FROM inserted
"""


def _report_event_postgres(
    *, phase_id: int, epoch: int, stage: str, kind: str, data: dict[str, Any], blob: bytes | None, worker: str
) -> AttemptEvent | None:
    """The event written in one statement, or None when the general path must decide (nothing written)."""
    now = timezone.now()
    sql = _EVENT_SQL.format(
        phase=_table(Phase), attempt=_table(Attempt), event=connection.ops.quote_name(AttemptEvent._meta.db_table)
    )
    params = {
        "phase": phase_id,
        "epoch": epoch,
        "executing": PhaseState.EXECUTING,
        "worker": worker,
        "stage": stage,
        "kind": kind,
        "data": json.dumps(data),
        "blob": blob,
        "now": now,
    }
    try:
        with _single_statement_scope(postgres=True), connection.cursor() as cursor:
            execute_prepared(cursor, sql, params)
            row = cursor.fetchone()
    except IntegrityError:
        # A concurrent event of the same claim took this seq: the statement's snapshot predates the lock
        # it waited for. Rolled back; the general path reads the max under the lock.
        return None
    except ProgrammingError as error:
        if not prepared_statement_lost(error):
            raise
        return None  # deallocated behind our back; rolled back, the general path writes it
    if row is None:
        return None
    event_id, attempt_id, seq = row
    event = AttemptEvent(
        id=event_id, attempt_id=attempt_id, seq=seq, stage=stage, kind=kind, data=data, blob=blob, created_at=now
    )
    event._state.adding = False
    event._state.db = connection.alias
    return event


# --- finish ---------------------------------------------------------------------------------------------


@dataclass
class _RunDelta:
    """Counter changes for the run, written in one UPDATE (F() increments) with the finish's other writes."""

    tokens: int = 0
    cost: Decimal = Decimal("0")
    doctor_calls: int = 0
    failures: int = 0
    patch_failures: int = 0
    phases_done: int = 0

    def increments(self) -> dict[str, Any]:
        return {
            "tokens_used": self.tokens,
            "cost_usd": self.cost,
            "doctor_calls": self.doctor_calls,
            "failures_count": self.failures,
            "patch_failures_count": self.patch_failures,
            "phases_done": self.phases_done,
        }

    def write(self, run: Run) -> None:
        Run.objects.filter(pk=run.pk).update(**{name: F(name) + value for name, value in self.increments().items()})

    def sql(self, run: Run) -> tuple[str, list[Any]]:
        """The same UPDATE as a common table expression for ``phase_transition_fast``."""
        increments = self.increments()
        assignments = ", ".join(f"{name} = {name} + %s" for name in increments)
        return f", counted AS (UPDATE {_table(Run)} SET {assignments} WHERE id = %s)", [*increments.values(), run.pk]

    def add_to(self, run: Run) -> None:
        # The run row is locked by this transaction, so these in-memory sums are the stored values.
        for name, value in self.increments().items():
            setattr(run, name, getattr(run, name) + value)


@dataclass(frozen=True)
class _Move:
    """Where a finish takes the phase: state, transition reason, fields, and (failure reason, detail) if it
    stops the run. Decided first, then written in one go (one statement on PostgreSQL)."""

    to_state: str
    reason: str
    fields: dict[str, Any]
    stop: tuple[str, str] | None = None


def phase_finish(*, phase_id: int, epoch: int, outcome: PhaseOutcome, worker: str | None = None) -> Phase:
    """Apply the outcome of the attempt held under ``epoch``; ``StaleEpoch`` (nothing changed) otherwise.

    Two statements inside the transaction: one locked read of the phase and its run, one write of the
    attempt's verdict, the run's counters, the phase and its transition row (ORM statements on SQLite).
    """
    outcome = replace(outcome, kind=OutcomeKind(outcome.kind))  # tolerate a plain string kind
    try:
        return _finish_fast(phase_id=phase_id, epoch=epoch, outcome=outcome, worker=worker) or _finish_once(
            phase_id=phase_id, epoch=epoch, outcome=outcome, worker=worker
        )
    except ProgrammingError as error:
        if not prepared_statement_lost(error):
            raise
        # Rolled back, nothing written; the statements are prepared again on this second try.
        return _finish_once(phase_id=phase_id, epoch=epoch, outcome=outcome, worker=worker)


def _finish_once(*, phase_id: int, epoch: int, outcome: PhaseOutcome, worker: str | None) -> Phase:
    postgres = connection.vendor == "postgresql"
    with transaction.atomic():
        lock = _locked_phase_and_run if postgres else _locked_phase_and_run_orm
        phase, run = lock(phase_id=phase_id, epoch=epoch, worker=worker)
        actor = worker_actor(worker or phase.lease_owner)
        delta = _RunDelta()
        _accumulate_usage(phase=phase, outcome=outcome, delta=delta)
        kind = outcome.kind
        if run.state == RunState.CANCELLED and kind != OutcomeKind.COMPLETE:
            kind = OutcomeKind.SKIPPED
        move = _FINISHERS[kind](phase=phase, run=run, outcome=outcome, delta=delta)
        write = _write_finish if postgres else _write_finish_orm
        phase = write(phase=phase, run=run, epoch=epoch, outcome=outcome, move=move, actor=actor, delta=delta)
        delta.add_to(run)
        _settle_run(phase=phase, run=run, actor=actor, stop=move.stop, done=delta.phases_done > 0)
        # A retried phase, or the next phase of a run that goes on: the queue drains the run step by step.
        enqueue = run.state == RunState.RUNNING and phase.state in _STATES_WITH_NEXT_STEP
    if enqueue:
        _enqueue_after_commit(phase.run_id)
    return phase


_STATES_WITH_NEXT_STEP = (PhaseState.QUEUED, PhaseState.COMPLETE, PhaseState.SKIPPED)


# The common finish, a phase completing in a running run that has more phases to go and stays within its
# budgets, is one statement on PostgreSQL: ``holder`` locks the phase and its run and checks, compare-and-swap
# style, everything the general path would decide on (the claim is current and the move legal; no run
# completion or budget failure follows); the other CTEs write what the general path writes. Anything else
# (a stale or foreign claim, the last phase, a budget reached, a paused run) matches no row, changes
# nothing, and goes the general way, which also raises the precise error.
_FINISH_COMPLETE_SQL = """
WITH holder AS (
    SELECT p.id, p.run_id FROM {phase} p JOIN {run} r ON r.id = p.run_id
    WHERE p.id = %s AND p.claim_epoch = %s AND p.state = %s::text
        AND p.lease_owner = %s::text
        AND r.state = %s::text AND r.phases_total > 0 AND r.phases_done + 1 < r.phases_total
        AND r.failures_count < r.max_failures AND r.patch_failures_count < r.max_patch_failures
        AND r.tokens_used + %s::bigint < r.token_cap AND r.cost_usd + %s::numeric < r.usd_cap
    FOR UPDATE OF p, r
), moved AS (
    UPDATE {phase} p SET {assignments}, tokens_used = p.tokens_used + %s::bigint,
        cost_usd = p.cost_usd + %s::numeric, doctor_calls = p.doctor_calls + %s::integer
    FROM holder WHERE p.id = holder.id
    RETURNING {returning}
), logged AS (
    {transition_insert}
    SELECT id, %s::text, %s::text, %s::text, %s::text, claim_epoch, %s::timestamptz FROM moved
){attempt}, counted AS (
    UPDATE {run} r SET tokens_used = r.tokens_used + %s::bigint, cost_usd = r.cost_usd + %s::numeric,
        doctor_calls = r.doctor_calls + %s::integer, phases_done = r.phases_done + 1
    FROM holder WHERE r.id = holder.run_id
)
SELECT * FROM moved
"""


def _finish_fast(*, phase_id: int, epoch: int, outcome: PhaseOutcome, worker: str | None) -> Phase | None:
    """A complete outcome in one statement (PostgreSQL), or None when the general path must decide."""
    if outcome.kind != OutcomeKind.COMPLETE or worker is None or connection.vendor != "postgresql":
        return None
    if PhaseState.EXECUTING not in phase_legal_sources(PhaseState.COMPLETE):
        return None  # the legality table says otherwise: let the general path refuse it
    now = timezone.now()
    tokens, cost = int(outcome.input_tokens) + int(outcome.output_tokens), Decimal(str(outcome.cost_usd or "0"))
    doctor = 1 if outcome.doctor_called else 0
    fields = phase_move_fields(to_state=PhaseState.COMPLETE, now=now)
    fields.update(commit_sha=outcome.commit_sha[:64], lost_leases=0, last_failure_reason="")
    assignments, assignment_params = sql_assignments(Phase, fields)
    attempt_sql, attempt_params = _attempt_verdict_sql(epoch=epoch, outcome=outcome, now=now)
    reader = _finish_read()[1]
    sql = _FINISH_COMPLETE_SQL.format(
        phase=_table(Phase),
        run=_table(Run),
        assignments=assignments,
        returning=reader.columns("p"),
        transition_insert=phase_transition_insert_sql(),
        attempt=attempt_sql,
    )
    params = [phase_id, epoch, PhaseState.EXECUTING, worker, RunState.RUNNING, tokens, cost]
    params += [*assignment_params, tokens, cost, doctor]
    params += [PhaseState.EXECUTING, PhaseState.COMPLETE, worker_actor(worker), outcome.reason or "complete", now]
    params += [*attempt_params, tokens, cost, doctor]
    with _single_statement_scope(postgres=True), connection.cursor() as cursor:
        execute_prepared(cursor, sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    phase = reader.read(row)
    _enqueue_after_commit(phase.run_id)  # the run is running and has more phases: its next step
    return phase


def _locked_phase_and_run_orm(*, phase_id: int, epoch: int, worker: str | None) -> tuple[Phase, Run]:
    phase = _locked_current(phase_id=phase_id, epoch=epoch, worker=worker, with_run=True)
    return phase, phase.run


# What a finish needs of the run: its state, counters and budgets (not its plan document).
_RUN_FIELDS_FOR_FINISH = (
    "id",
    "state",
    "tokens_used",
    "cost_usd",
    "doctor_calls",
    "failures_count",
    "patch_failures_count",
    "phases_done",
    "phases_total",
    "max_failures",
    "max_patch_failures",
    "token_cap",
    "usd_cap",
)


@functools.cache
def _finish_read() -> tuple[str, RowReader, RowReader]:
    phase, run = RowReader.of(Phase), RowReader.of(Run, _RUN_FIELDS_FOR_FINISH)
    sql = (
        f"SELECT {phase.columns('p')}, {run.columns('r')} FROM {_table(Phase)} p "
        f"JOIN {_table(Run)} r ON r.id = p.run_id WHERE p.id = %s FOR UPDATE OF p, r"
    )
    return sql, phase, run


def _locked_phase_and_run(*, phase_id: int, epoch: int, worker: str | None) -> tuple[Phase, Run]:
    """One round trip: lock the phase and its run (phase first, then run, like every other writer)."""
    sql, phase_reader, run_reader = _finish_read()
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, [phase_id])
        row = cursor.fetchone()
    phase = phase_reader.read(row[: len(phase_reader.fields)]) if row else None
    _check_holder(phase, phase_id=phase_id, epoch=epoch, worker=worker)
    run = run_reader.read(row[len(phase_reader.fields) :])
    phase._state.fields_cache["run"] = run  # phase.run without another query (only the fields above)
    return phase, run


def _table(model: type[Phase] | type[Run] | type[Attempt]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _write_finish(
    *, phase: Phase, run: Run, epoch: int, outcome: PhaseOutcome, move: _Move, actor: str, delta: _RunDelta
) -> Phase:
    """PostgreSQL: attempt verdict, run counters, phase and transition row in one statement."""
    attempt_sql, attempt_params = _attempt_verdict_sql(epoch=epoch, outcome=outcome, phase_id=phase.pk)
    run_sql, run_params = delta.sql(run)
    return phase_transition_fast(
        phase=phase,
        to_state=move.to_state,
        actor=actor,
        reason=move.reason,
        fields=move.fields,
        also=attempt_sql + run_sql,
        also_params=[*attempt_params, *run_params],
    )


def _write_finish_orm(
    *, phase: Phase, run: Run, epoch: int, outcome: PhaseOutcome, move: _Move, actor: str, delta: _RunDelta
) -> Phase:
    _record_attempt(phase=phase, epoch=epoch, outcome=outcome)
    phase = phase_transition_locked(
        phase=phase, to_state=move.to_state, actor=actor, reason=move.reason, fields=move.fields
    )
    delta.write(run)
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


def _attempt_verdict(outcome: PhaseOutcome) -> dict[str, Any]:
    status = {
        OutcomeKind.COMPLETE: AttemptStatus.SUCCEEDED,
        OutcomeKind.ABANDONED: AttemptStatus.ABANDONED,
        OutcomeKind.SKIPPED: AttemptStatus.SUCCEEDED,
    }.get(outcome.kind, AttemptStatus.FAILED)
    return {
        "status": status,
        "outcome": outcome.kind.value,
        "failure_reason": outcome.reason if outcome.kind != OutcomeKind.COMPLETE else "",
        "model": outcome.model[:100],
        "diff": outcome.diff,
        "summary": outcome.summary or {},
    }


def _attempt_usage(outcome: PhaseOutcome) -> tuple[int, int, Decimal]:
    return int(outcome.input_tokens), int(outcome.output_tokens), Decimal(str(outcome.cost_usd or "0"))


def _record_attempt(*, phase: Phase, epoch: int, outcome: PhaseOutcome) -> None:
    now = timezone.now()
    input_tokens, output_tokens, cost = _attempt_usage(outcome)
    attempt = Attempt.objects.only("pk", "started_at").get(phase=phase, claim_epoch=epoch)
    Attempt.objects.filter(pk=attempt.pk).update(
        **_attempt_verdict(outcome),
        input_tokens=F("input_tokens") + input_tokens,
        output_tokens=F("output_tokens") + output_tokens,
        cost_usd=F("cost_usd") + cost,
        finished_at=now,
        duration_ms=int((now - attempt.started_at).total_seconds() * 1000),
    )


def _attempt_verdict_sql(
    *, epoch: int, outcome: PhaseOutcome, phase_id: int | None = None, now: datetime | None = None
) -> tuple[str, list[Any]]:
    """``_record_attempt`` as a common table expression: for ``phase_id``, or for the ``holder`` CTE's phase."""
    assignments, params = sql_assignments(Attempt, _attempt_verdict(outcome))
    now = now or timezone.now()
    table = _table(Attempt)
    where = (
        "phase_id = %s AND claim_epoch = %s" if phase_id is not None else "holder.id = phase_id AND claim_epoch = %s"
    )
    sql = (
        f", attempt AS (UPDATE {table} SET {assignments}, input_tokens = input_tokens + %s::bigint, "
        "output_tokens = output_tokens + %s::bigint, cost_usd = cost_usd + %s::numeric, finished_at = %s, "
        "duration_ms = GREATEST(0, FLOOR(EXTRACT(EPOCH FROM (%s::timestamptz - started_at)) * 1000))::bigint "
        f"{'FROM holder ' if phase_id is None else ''}WHERE {where})"
    )
    ids = [phase_id, epoch] if phase_id is not None else [epoch]
    return sql, [*params, *_attempt_usage(outcome), now, now, *ids]


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


def _finish_complete(*, phase: Phase, run: Run, outcome: PhaseOutcome, delta: _RunDelta) -> _Move:
    delta.phases_done = 1
    fields = {
        "commit_sha": outcome.commit_sha[:64],
        "lost_leases": 0,
        "last_failure_reason": "",
        **_usage_fields(phase),
    }
    return _Move(PhaseState.COMPLETE, outcome.reason or "complete", fields)


def _finish_skipped(*, phase: Phase, run: Run, outcome: PhaseOutcome, delta: _RunDelta) -> _Move:
    delta.phases_done = 1
    reason = outcome.reason or ("run cancelled" if run.state == RunState.CANCELLED else "skipped")
    return _Move(PhaseState.SKIPPED, reason, {"lost_leases": 0, **_usage_fields(phase)})


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


def _finish_retry(*, phase: Phase, run: Run, outcome: PhaseOutcome, delta: _RunDelta) -> _Move:
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
        stop = (RunFailureReason.NEEDS_HUMAN, f"phase {phase.phase_id}: {stuck}")
        return _Move(PhaseState.BLOCKED, stuck, fields, stop)
    return _Move(PhaseState.QUEUED, f"retry: {outcome.reason}", fields)


def _stuck_reason(*, phase: Phase, fingerprints: list[str], fingerprint: str) -> str:
    limit = int(settings.AUTOPACK["MAX_ATTEMPTS"])
    if phase.attempts_since_requeue >= limit:
        return f"attempt limit reached ({phase.attempts_since_requeue} of {limit})"
    if fingerprint and fingerprints.count(fingerprint) >= SAME_FINGERPRINT_BEFORE_BLOCK:
        return f"same failure {SAME_FINGERPRINT_BEFORE_BLOCK} times (fingerprint {fingerprint[:16]})"
    return ""


def _finish_blocked(*, phase: Phase, run: Run, outcome: PhaseOutcome, delta: _RunDelta) -> _Move:
    fields = _failure_fields(phase, outcome, delta)
    stop = (RunFailureReason.NEEDS_HUMAN, f"phase {phase.phase_id} blocked: {outcome.reason}")
    return _Move(PhaseState.BLOCKED, outcome.reason or "blocked", fields, stop)


def _finish_failed(*, phase: Phase, run: Run, outcome: PhaseOutcome, delta: _RunDelta) -> _Move:
    fields = _failure_fields(phase, outcome, delta)
    stop = (
        outcome.run_failure_reason or RunFailureReason.NEEDS_HUMAN,
        f"phase {phase.phase_id} failed: {outcome.reason}",
    )
    return _Move(PhaseState.FAILED, outcome.reason or "failed", fields, stop)


def _finish_abandoned(*, phase: Phase, run: Run, outcome: PhaseOutcome, delta: _RunDelta) -> _Move:
    return _give_back_move(phase=phase, reason=outcome.reason or "abandoned by worker", extra=_usage_fields(phase))


_FINISHERS = {
    OutcomeKind.COMPLETE: _finish_complete,
    OutcomeKind.RETRY: _finish_retry,
    OutcomeKind.BLOCKED: _finish_blocked,
    OutcomeKind.FAILED: _finish_failed,
    OutcomeKind.SKIPPED: _finish_skipped,
    OutcomeKind.ABANDONED: _finish_abandoned,
}


def _give_back_move(*, phase: Phase, reason: str, lost: bool = False, extra: dict[str, Any] | None = None) -> _Move:
    """Return a claim without a verdict: not a builder attempt (``attempt_base`` follows ``attempt_count``)."""
    fields: dict[str, Any] = {"attempt_base": phase.attempt_base + 1, **(extra or {})}
    if lost:
        fields["lost_leases"] = phase.lost_leases + 1
    return _Move(PhaseState.QUEUED, reason, fields)


def _give_back(
    *, phase: Phase, actor: str, reason: str, lost: bool = False, extra: dict[str, Any] | None = None
) -> Phase:
    move = _give_back_move(phase=phase, reason=reason, lost=lost, extra=extra)
    return phase_transition_locked(phase=phase, to_state=move.to_state, actor=actor, reason=reason, fields=move.fields)


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
