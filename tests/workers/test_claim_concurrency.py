"""Many claimers at once on PostgreSQL: every phase exactly once, never two phases of one run at once."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict

import pytest
from django.db import connections, transaction

from runs.engine.outcome import OutcomeKind, PhaseOutcome
from runs.models import Attempt, Phase, PhaseState, RunState
from runs.services.leases import phase_claim, phase_finish
from tests.factories import make_project, make_run

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 8
RUNS = 20
PHASES_PER_RUN = 10


class Ledger:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.executing_runs: set[int] = set()
        self.overlaps: list[int] = []
        self.claims: Counter[int] = Counter()
        self.order: dict[int, list[int]] = defaultdict(list)
        self.errors: list[BaseException] = []

    def claimed(self, run_id: int, phase_id: int) -> None:
        with self.lock:
            if run_id in self.executing_runs:
                self.overlaps.append(run_id)
            self.executing_runs.add(run_id)
            self.claims[phase_id] += 1
            self.order[run_id].append(phase_id)

    def finishing(self, run_id: int) -> None:
        # Leave before finishing: the run's next claim can only commit after our finish commits.
        with self.lock:
            self.executing_runs.discard(run_id)


def claimer(number: int, ledger: Ledger, start: threading.Barrier) -> None:
    try:
        start.wait()
        empty_rounds = 0
        while empty_rounds < 20:
            claim = phase_claim(worker=f"thread-{number}")
            if claim is None:
                empty_rounds += 1
                continue
            empty_rounds = 0
            ledger.claimed(claim.run_id, claim.phase_id)
            ledger.finishing(claim.run_id)
            phase_finish(
                phase_id=claim.phase_id,
                epoch=claim.claim_epoch,
                worker=f"thread-{number}",
                outcome=PhaseOutcome(kind=OutcomeKind.COMPLETE, commit_sha=f"sha-{claim.phase_id}"),
            )
    except BaseException as exc:  # noqa: BLE001 - reported by the test, not swallowed
        ledger.errors.append(exc)
    finally:
        connections.close_all()


def test_eight_claimers_take_every_phase_exactly_once_and_one_per_run_at_a_time():
    project = make_project()
    runs = [make_run(project, phases=PHASES_PER_RUN, tiers=2, state=RunState.RUNNING) for _ in range(RUNS)]
    ledger = Ledger()
    start = threading.Barrier(THREADS)
    threads = [threading.Thread(target=claimer, args=(n, ledger, start)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert ledger.errors == []
    phases = Phase.objects.filter(run__in=runs)
    assert phases.count() == RUNS * PHASES_PER_RUN
    assert set(ledger.claims) == set(phases.values_list("pk", flat=True))
    assert set(ledger.claims.values()) == {1}
    assert ledger.overlaps == []
    assert set(phases.values_list("state", flat=True)) == {PhaseState.COMPLETE}
    assert set(phases.values_list("claim_epoch", flat=True)) == {1}
    assert Attempt.objects.filter(phase__in=phases).count() == RUNS * PHASES_PER_RUN
    for run in runs:
        in_sequence = list(Phase.objects.filter(run=run).order_by("sequence").values_list("pk", flat=True))
        assert ledger.order[run.pk] == in_sequence
        run.refresh_from_db()
        assert run.state == RunState.COMPLETE


def test_a_claim_locks_only_the_phase_it_takes_and_takes_the_oldest_run_first():
    # A claim that also locked the other heads it looked at would make every concurrent claimer skip them
    # (SKIP LOCKED) and come back empty while work is queued.
    project = make_project()
    runs = [make_run(project, phases=3, state=RunState.RUNNING) for _ in range(5)]
    seen_by_other: list[int] = []

    def other_connection() -> None:
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT id FROM runs_phase WHERE state = 'queued' ORDER BY id FOR UPDATE SKIP LOCKED")
                seen_by_other.extend(row[0] for row in cursor.fetchall())
        finally:
            connections.close_all()

    with transaction.atomic():
        claim = phase_claim(worker="holder")
        other = threading.Thread(target=other_connection)
        other.start()
        other.join(timeout=30)

    first_phase = Phase.objects.filter(run=runs[0]).order_by("sequence").first()
    assert claim is not None and claim.phase_id == first_phase.pk
    every_phase = set(Phase.objects.filter(run__in=runs).values_list("pk", flat=True))
    assert seen_by_other == sorted(every_phase - {claim.phase_id})
