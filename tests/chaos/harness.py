"""Chaos harness: drain worker processes executing no-op phases, killed with SIGKILL at random points.

Workers are real processes forked from this (Django-ready) process, each running ``runs.drain.Drain`` with
the no-op engine, which commits one marker file per phase on the run's real git branch. Kills come two ways:
- self-inflicted at named failpoints (``runs.drain.chaos_point``): after claim, mid-attempt, between the
  result write (the commit) and its acknowledgement (``phase_finish``), and during a heartbeat;
- from the harness, at a random moment, to a worker that holds a lease.
Dead workers are replaced until every phase is done. Then the invariants are counted from the database
and the git branches. Used by ``tests/chaos`` (30 kills) and ``bench/chaos.py`` (hundreds).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections

from runs.drain import Drain, GitBranch
from runs.models import Attempt, Phase, PhaseState, Project, Run, RunState
from runs.services.control import phase_requeue
from tests.factories import make_git_repo, make_project, make_run

FAILPOINTS = {"after_claim": 0.04, "mid_attempt": 0.02, "before_ack": 0.04, "heartbeat": 0.06}


@dataclass
class ChaosConfig:
    kills: int = 30
    workers: int = 5
    slots: int = 1
    runs: int = 8
    phases_per_run: int = 8
    lease_seconds: int = 3
    heartbeat_seconds: float = 0.5
    stage_seconds: float = 0.08
    external_kill_every: tuple[float, float] = (0.3, 0.8)
    timeout_seconds: float = 600.0
    seed: int = 1


@dataclass
class ChaosReport:
    kills: int = 0
    kills_by_point: Counter = field(default_factory=Counter)
    phases: int = 0
    runs: int = 0
    lost_phases: int = 0
    unfinished_phases: int = 0
    overlapping_leases: int = 0
    duplicate_commits: int = 0
    missing_commits: int = 0
    commit_mismatches: int = 0
    reaped_leases: int = 0
    requeued_after_block: int = 0
    recovery_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def invariants_hold(self) -> bool:
        return not (
            self.lost_phases
            or self.unfinished_phases
            or self.overlapping_leases
            or self.duplicate_commits
            or self.missing_commits
            or self.commit_mismatches
        )

    def lines(self) -> list[str]:
        recovery = sorted(self.recovery_seconds)
        lines = [
            f"kills: {self.kills} ({', '.join(f'{k}={v}' for k, v in sorted(self.kills_by_point.items()))})",
            f"runs: {self.runs}, phases: {self.phases}, wall time: {self.seconds:.1f}s",
            f"lost phases: {self.lost_phases}",
            f"unfinished phases: {self.unfinished_phases}",
            f"overlapping leases on one phase or run: {self.overlapping_leases}",
            f"duplicate phase commits: {self.duplicate_commits}, missing: {self.missing_commits}, "
            f"commit_sha mismatches: {self.commit_mismatches}",
            f"leases reaped: {self.reaped_leases}; phases blocked after 3 lost leases and requeued: "
            f"{self.requeued_after_block}",
        ]
        if recovery:
            p50, p95 = recovery[len(recovery) // 2], recovery[min(len(recovery) - 1, int(len(recovery) * 0.95))]
            lines.append(
                f"recovery kill -> re-claim ({len(recovery)} leases): p50 {p50:.2f}s, p95 {p95:.2f}s, "
                f"max {recovery[-1]:.2f}s"
            )
        return lines


class ChaosHarness:
    def __init__(self, config: ChaosConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.random = random.Random(config.seed)
        self.chaos_log = workdir / "chaos.log"
        self.children: dict[int, bool] = {}  # pid -> spawned with failpoints armed
        self.external: dict[int, tuple[float, str]] = {}  # pid -> (kill time, stage)
        self.deaths: dict[int, float] = {}  # pid -> time a SIGKILLed child was seen dead
        self.project: Project | None = None
        self.run_ids: list[int] = []
        self.report = ChaosReport()

    # Data -----------------------------------------------------------------------------------------------

    def add_runs(self, count: int) -> None:
        if self.project is None:
            repo = make_git_repo(self.workdir / "repo")
            self.project = make_project(repository_path=str(repo))
        for _ in range(count):
            run = make_run(self.project, phases=self.config.phases_per_run, tiers=2, state=RunState.RUNNING)
            Run.objects.filter(pk=run.pk).update(branch=f"autopack/chaos-{run.pk}")
            self.run_ids.append(run.pk)

    def remaining(self) -> int:
        return Phase.objects.filter(run_id__in=self.run_ids).exclude(state=PhaseState.COMPLETE).count()

    # Workers --------------------------------------------------------------------------------------------

    def spawn(self, *, armed: bool) -> int:
        connections.close_all()  # the child must not share the parent's database socket
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            self._child(armed)
        self.children[pid] = armed
        return pid

    def _child(self, armed: bool) -> None:
        code = 1
        try:
            random.seed(os.getpid() ^ int(time.time() * 1000))
            if armed:
                os.environ["AUTOPACK_CHAOS_KILL"] = ",".join(f"{k}={v}" for k, v in FAILPOINTS.items())
                os.environ["AUTOPACK_CHAOS_LOG"] = str(self.chaos_log)
            else:
                os.environ.pop("AUTOPACK_CHAOS_KILL", None)
            drain = Drain(
                runs=None,
                max_concurrent=self.config.slots,
                until_empty=True,
                engine="noop",
                poll_seconds=0.05,
                stage_seconds=self.config.stage_seconds,
            )
            drain.run()
            code = 0
        finally:
            os._exit(code)

    def collect_dead(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.pop(pid, None)
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
                self.deaths[pid] = time.time()

    def kill_someone(self) -> bool:
        """SIGKILL a live worker that holds a lease on a phase that has not lost one yet.

        Sparing phases that already lost a lease keeps the "3 lost leases in a row block the phase" rule from
        firing often; the failpoints still kill at random, so it does happen and the harness requeues them.
        """
        prefix = f"{socket.gethostname()}-"
        held = Phase.objects.filter(state=PhaseState.EXECUTING, lease_owner__startswith=prefix, lost_leases=0)
        holders = {}
        for owner, stage in held.values_list("lease_owner", "current_stage"):
            pid = int(owner[len(prefix) :].split("-")[0])
            if pid in self.children:
                holders[pid] = stage
        if not holders:
            return False
        pid = self.random.choice(sorted(holders))
        os.kill(pid, signal.SIGKILL)
        self.external[pid] = (time.time(), f"external@{holders[pid] or 'claimed'}")
        return True

    # Main loop ------------------------------------------------------------------------------------------

    def run(self) -> ChaosReport:
        config = self.config
        settings.AUTOPACK = {
            **settings.AUTOPACK,
            "LEASE_SECONDS": config.lease_seconds,
            "HEARTBEAT_SECONDS": config.heartbeat_seconds,
            # Workers poll; the django-q2 queue would only fill up with "drain this run" messages.
            "ENQUEUE_TASKS": False,
        }
        self.add_runs(config.runs)
        started = time.monotonic()
        next_kill = time.monotonic() + self.random.uniform(*config.external_kill_every)
        try:
            while True:
                self.collect_dead()
                kills = len(self.deaths)
                remaining = self.remaining()
                if remaining == 0 and kills >= config.kills:
                    break
                if time.monotonic() - started > config.timeout_seconds:
                    raise TimeoutError(f"chaos run did not finish: {remaining} phases left, {kills} kills")
                if kills < config.kills and remaining < config.phases_per_run * 2:
                    self.add_runs(2)  # keep work around until enough kills happened
                self.requeue_blocked()
                while len(self.children) < config.workers:
                    self.spawn(armed=kills < config.kills)
                if kills < config.kills and time.monotonic() >= next_kill:
                    self.kill_someone()
                    next_kill = time.monotonic() + self.random.uniform(*config.external_kill_every)
                time.sleep(0.02)
        finally:
            self.stop_children()
        self.report.seconds = time.monotonic() - started
        return self.measure()

    def requeue_blocked(self) -> None:
        """An operator's move: a phase blocked after 3 lost leases in a row is requeued (and counted)."""
        for phase in Phase.objects.filter(run_id__in=self.run_ids, state=PhaseState.BLOCKED):
            phase_requeue(phase_id=phase.pk, actor="user:chaos-harness", reason="requeued by the chaos harness")
            self.report.requeued_after_block += 1

    def stop_children(self) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self.children and time.monotonic() < deadline:
            self.collect_dead()
            time.sleep(0.05)
        for pid in list(self.children):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        self.children.clear()

    # Measurements ---------------------------------------------------------------------------------------

    def measure(self) -> ChaosReport:
        report = self.report
        report.kills = len(self.deaths)
        report.kills_by_point = self._kill_points()
        report.runs = len(self.run_ids)
        phases = Phase.objects.filter(run_id__in=self.run_ids)
        report.phases = phases.count()
        report.unfinished_phases = phases.exclude(state=PhaseState.COMPLETE).count()
        # Lost: neither done nor visibly waiting for a human; the loop only ends when none is left.
        report.lost_phases = phases.filter(state__in=[PhaseState.EXECUTING, PhaseState.QUEUED]).count()
        report.overlapping_leases = self._overlaps()
        self._check_branches(report)
        self._recovery(report)
        return report

    def _kills(self) -> dict[int, tuple[float, str]]:
        """pid -> (when it was killed, where): the harness's own kills, then the failpoints' log."""
        logged: dict[int, tuple[float, str]] = {}
        if self.chaos_log.exists():
            for line in self.chaos_log.read_text().splitlines():
                pid, point, when = line.split()
                logged[int(pid)] = (float(when), point)
        return {
            pid: self.external.get(pid) or logged.get(pid) or (died, "unknown") for pid, died in self.deaths.items()
        }

    def _kill_points(self) -> Counter:
        return Counter(point for _, point in self._kills().values())

    def _overlaps(self) -> int:
        overlaps = 0
        for run_id in self.run_ids:
            attempts = list(Attempt.objects.filter(phase__run_id=run_id).order_by("started_at", "pk"))
            for before, after in zip(attempts, attempts[1:], strict=False):
                if before.finished_at is None or after.started_at < before.finished_at:
                    overlaps += 1
        return overlaps

    def _check_branches(self, report: ChaosReport) -> None:
        repo = Path(self.project.repository_path)
        for run in Run.objects.filter(pk__in=self.run_ids):
            branch = GitBranch(repo, run.branch)
            counts = Counter(branch.phase_commits())
            expected = list(Phase.objects.filter(run=run).order_by("sequence").values_list("phase_id", "commit_sha"))
            report.duplicate_commits += sum(count - 1 for count in counts.values() if count > 1)
            report.missing_commits += sum(1 for phase_id, _ in expected if counts[phase_id] == 0)
            tip = branch.tip()
            for phase_id, sha in expected:
                if sha != branch.phase_commit(tip, phase_id):
                    report.commit_mismatches += 1

    def _recovery(self, report: ChaosReport) -> None:
        prefix = socket.gethostname()
        for pid, (killed_at, _) in self._kills().items():
            killed_dt = datetime.fromtimestamp(killed_at, tz=UTC)
            lost = Attempt.objects.filter(worker__startswith=f"{prefix}-{pid}-", outcome="lease_lost")
            for attempt in lost:
                report.reaped_leases += 1
                reclaimed = (
                    Attempt.objects.filter(phase_id=attempt.phase_id, number__gt=attempt.number)
                    .order_by("number")
                    .values_list("started_at", flat=True)
                    .first()
                )
                if reclaimed is not None:
                    report.recovery_seconds.append(max(0.0, (reclaimed - killed_dt).total_seconds()))


def run_chaos(config: ChaosConfig, workdir: Path | None = None) -> ChaosReport:
    with tempfile.TemporaryDirectory(prefix="autopack-chaos-") as scratch:
        return ChaosHarness(config, workdir or Path(scratch)).run()


def describe(config: ChaosConfig) -> dict[str, Any]:
    return {"lease_seconds": config.lease_seconds, "heartbeat_seconds": config.heartbeat_seconds}
