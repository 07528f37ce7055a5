"""The in-process drain: claim queued phases and execute them with bounded concurrency across runs.

``manage.py drain`` and the django-q2 task both end up in ``execute_one``, which keeps the claim's lease
alive from a heartbeat thread while the engine works and finishes (or releases) the phase under its epoch.

Engines:
- ``pipeline``: Engine II's ``runs.execution.execute_claim`` (LLM builder, CI, auditor, finalizer).
- ``noop``: one commit per phase on the run's branch, made with git plumbing and a compare-and-swap
  ``update-ref`` so it is idempotent per phase even across killed workers; used by chaos tests, benches
  and demos where no LLM is wanted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections

from autopack_site.lib.errors import DomainError, StaleEpoch
from runs.engine.outcome import OutcomeKind, PhaseOutcome
from runs.services.leases import Claim, phase_finish, phase_heartbeat, phase_release, phase_report_event

logger = logging.getLogger(__name__)

ENGINES = ("pipeline", "noop")
NOOP_STAGES = ("workspace", "build", "commit")


# --- failpoints -------------------------------------------------------------------------------------------


def chaos_point(name: str) -> None:
    """Kill this process with SIGKILL at a named point, with the probability the chaos harness set.

    ``AUTOPACK_CHAOS_KILL="after_claim=0.1,mid_attempt=0.1"``; unset in normal operation (one dict lookup).
    """
    spec = os.environ.get("AUTOPACK_CHAOS_KILL")
    if not spec:
        return
    for item in spec.split(","):
        point, _, probability = item.partition("=")
        if point.strip() == name and random.random() < float(probability or 0):
            log = os.environ.get("AUTOPACK_CHAOS_LOG")
            if log:
                with open(log, "a") as handle:
                    handle.write(f"{os.getpid()} {name} {time.time():.3f}\n")
            os.kill(os.getpid(), signal.SIGKILL)


# --- per-claim control and heartbeat ------------------------------------------------------------------------


@dataclass
class ClaimControl:
    """What the heartbeat learned that the engine must obey at its next stage boundary."""

    claim: Claim
    worker: str
    stop_reason: str = ""
    stage: str = "claimed"
    finished: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> str:
        return self.stop_reason


class HeartbeatThread(threading.Thread):
    """Extends the lease every ``HEARTBEAT_SECONDS`` until the claim ends.

    Flags a cancelled or failed run, or a lost lease, for the engine's next stage boundary. A paused run is not a reason to stop: ``run_pause`` lets the executing attempt finish.
    """

    def __init__(self, control: ClaimControl, *, interval: float | None = None) -> None:
        super().__init__(name=f"heartbeat-{control.claim.phase_id}", daemon=True)
        self.control = control
        self.interval = interval or float(settings.AUTOPACK["HEARTBEAT_SECONDS"])

    def run(self) -> None:
        try:
            while not self.control.finished.wait(self.interval):
                self.beat()
        finally:
            connections.close_all()

    def beat(self) -> None:
        claim = self.control.claim
        chaos_point("heartbeat")
        try:
            beat = phase_heartbeat(
                phase_id=claim.phase_id, epoch=claim.claim_epoch, worker=self.control.worker, stage=self.control.stage
            )
        except DomainError:
            self.control.stop_reason = "lease_lost"
            return
        except Exception:  # noqa: BLE001 - a database hiccup must not kill the heartbeat; the next beat retries
            return
        if beat.should_stop and not self.control.stop_reason:
            self.control.stop_reason = beat.run_state


# --- engines ---------------------------------------------------------------------------------------------


def execute_one(
    claim: Claim,
    *,
    worker: str,
    engine: str = "pipeline",
    provider: Any = None,
    control: ClaimControl | None = None,
    stage_seconds: float | None = None,
) -> str:
    """Execute a claimed phase to its end; return the phase's state afterwards ("" if the claim was lost)."""
    control = control or ClaimControl(claim=claim, worker=worker)
    heartbeat = HeartbeatThread(control)
    heartbeat.start()
    try:
        chaos_point("after_claim")
        if engine == "noop":
            return _execute_noop(control, stage_seconds=stage_seconds)
        return _execute_pipeline(control, provider=provider)
    except Exception as exc:  # noqa: BLE001 - a crashing engine must not leave its phase executing
        logger.exception("engine crashed", extra={"phase_id": claim.phase_id})
        return _finish_crashed(control, exc)
    finally:
        control.finished.set()
        heartbeat.join(timeout=5)


def _finish_crashed(control: ClaimControl, exc: Exception) -> str:
    """A crash is a judged attempt (retry), not a release: a phase that always crashes must end up blocked."""
    reason = f"worker error: {type(exc).__name__}: {exc}"[:1000]
    fingerprint = hashlib.sha256(f"crash:{type(exc).__name__}:{exc}".encode()).hexdigest()[:32]
    outcome = PhaseOutcome(kind=OutcomeKind.RETRY, reason=reason, failure_fingerprint=fingerprint)
    claim = control.claim
    try:
        return phase_finish(
            phase_id=claim.phase_id, epoch=claim.claim_epoch, outcome=outcome, worker=control.worker
        ).state
    except (DomainError, DatabaseError):
        return ""  # the lease is gone, or the database is: the reaper brings the phase back


def _execute_pipeline(control: ClaimControl, *, provider: Any) -> str:
    from runs.execution import execute_claim
    from runs.models import Phase

    claim = control.claim
    try:
        execute_claim(claim, worker=control.worker, provider=provider, control=control)
    except StaleEpoch:
        return ""
    return Phase.objects.filter(pk=claim.phase_id).values_list("state", flat=True).get()


def _execute_noop(control: ClaimControl, *, stage_seconds: float | None) -> str:
    claim = control.claim
    pause = stage_seconds if stage_seconds is not None else float(os.environ.get("AUTOPACK_NOOP_STAGE_SECONDS", "0"))
    commit_sha = ""
    for stage in NOOP_STAGES:
        if control.should_stop():
            return _give_back(control, reason=f"stopped at {stage}: {control.should_stop()}")
        control.stage = stage
        try:
            phase_report_event(
                phase_id=claim.phase_id, epoch=claim.claim_epoch, stage=stage, kind="start", data={"engine": "noop"}
            )
        except StaleEpoch:
            return ""
        if pause:
            time.sleep(pause)
        chaos_point("mid_attempt")
        if stage == "build" and _noop_scope(claim).get("noop_crash"):
            raise RuntimeError("the noop engine was asked to crash")
        if stage == "commit" and _noop_outcome(claim, "").kind == OutcomeKind.COMPLETE:
            commit_sha = noop_commit(claim)
    chaos_point("before_ack")
    try:
        phase = phase_finish(
            phase_id=claim.phase_id,
            epoch=claim.claim_epoch,
            worker=control.worker,
            outcome=_noop_outcome(claim, commit_sha),
        )
    except StaleEpoch:
        return ""
    return phase.state


def _noop_scope(claim: Claim) -> dict[str, Any]:
    from runs.models import Phase

    return Phase.objects.filter(pk=claim.phase_id).values_list("scope", flat=True).get() or {}


def _noop_outcome(claim: Claim, commit_sha: str) -> PhaseOutcome:
    """Complete, unless the phase's scope asks the noop engine for another verdict (demos and tests)."""
    kind = OutcomeKind(_noop_scope(claim).get("noop_outcome", OutcomeKind.COMPLETE))
    if kind != OutcomeKind.COMPLETE:
        return PhaseOutcome(kind=kind, reason=f"noop engine: {kind.value} as the plan asked")
    return PhaseOutcome(kind=kind, commit_sha=commit_sha, reason="noop engine")


def _give_back(control: ClaimControl, *, reason: str) -> str:
    claim = control.claim
    try:
        return phase_release(
            phase_id=claim.phase_id, epoch=claim.claim_epoch, worker=control.worker, reason=reason
        ).state
    except StaleEpoch:
        return ""


def noop_commit(claim: Claim) -> str:
    """Commit a marker file for the phase on the run branch, once per phase; "" when there is no repository."""
    from runs.models import Phase

    phase = Phase.objects.select_related("run__project").get(pk=claim.phase_id)
    run = phase.run
    repo = Path(run.project.repository_path)
    if not (repo / ".git").exists() and not (repo / "HEAD").exists():
        return ""
    branch = run.branch or run.default_branch_name()
    return GitBranch(repo, branch).commit_once(
        base=run.project.base_branch,
        phase_key=phase.phase_id,
        path=f".autopack/noop/{phase.phase_id}.txt",
        content=f"run {run.pk} phase {phase.phase_id} attempt {claim.attempt_number}\n",
        message=f"{phase.phase_id}: {phase.name}",
        trailers={
            "Autopack-Run": str(run.pk),
            "Autopack-Phase": phase.phase_id,
            "Autopack-Attempt": str(claim.attempt_number),
        },
    )


class GitBranch:
    """A branch changed only by compare-and-swap ``update-ref``, so racing writers cannot both commit."""

    ENV = {
        "GIT_AUTHOR_NAME": "Autopack",
        "GIT_AUTHOR_EMAIL": "autopack@localhost",
        "GIT_COMMITTER_NAME": "Autopack",
        "GIT_COMMITTER_EMAIL": "autopack@localhost",
    }

    def __init__(self, repo: Path, branch: str) -> None:
        self.repo = repo
        self.ref = f"refs/heads/{branch}"

    def git(self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            ["git", *args],
            cwd=self.repo,
            env={**os.environ, **self.ENV, **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout.strip() if result.returncode == 0 else ""

    def tip(self) -> str:
        return self.git("rev-parse", "--verify", "--quiet", self.ref, check=False)

    def commit_once(
        self, *, base: str, phase_key: str, path: str, content: str, message: str, trailers: dict[str, str]
    ) -> str:
        for _ in range(20):
            tip = self.tip()
            if not tip:
                base_sha = self.git("rev-parse", "--verify", f"{base}^{{commit}}")
                # The all-zero old value makes this create-only: two creators cannot both win.
                self.update_ref(base_sha, "0" * 40)
                continue
            existing = self.phase_commit(tip, trailers.get("Autopack-Phase", phase_key))
            if existing:
                return existing
            commit = self._make_commit(tip, path=path, content=content, message=message, trailers=trailers)
            if self.update_ref(commit, tip):
                return commit
            time.sleep(0.05)
        raise RuntimeError(f"could not move {self.ref}: too many concurrent writers")

    def update_ref(self, new: str, old: str) -> bool:
        result = subprocess.run(
            ["git", "update-ref", self.ref, new, old], cwd=self.repo, capture_output=True, text=True, check=False
        )
        return result.returncode == 0

    def phase_commit(self, tip: str, phase_key: str) -> str:
        pattern = f"^Autopack-Phase: {_regex_escape(phase_key)}$"
        return self.git("log", "-1", "--format=%H", "-E", f"--grep={pattern}", tip)

    def _make_commit(self, tip: str, *, path: str, content: str, message: str, trailers: dict[str, str]) -> str:
        blob = self.git("hash-object", "-w", "--stdin", stdin=content)
        with tempfile.TemporaryDirectory() as scratch:
            env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            self.git("read-tree", tip, env=env)
            self.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
            tree = self.git("write-tree", env=env)
        body = message + "\n\n" + "\n".join(f"{key}: {value}" for key, value in trailers.items()) + "\n"
        return self.git("commit-tree", tree, "-p", tip, stdin=body)

    def phase_commits(self) -> list[str]:
        """Every ``Autopack-Phase`` trailer on the branch, oldest first (duplicates included)."""
        tip = self.tip()
        if not tip:
            return []
        log = self.git("log", "--reverse", "--format=%(trailers:key=Autopack-Phase,valueonly)", tip)
        return [line.strip() for line in log.splitlines() if line.strip()]


def _regex_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in r".^$*+?()[]{}|\\" else char for char in text)


# --- the drain loop ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrainResult:
    phase_id: int
    run_id: int
    state: str  # the phase state after the attempt; "" when the claim was lost or released
    seconds: float


class Drain:
    """Claim and execute phases in ``max_concurrent`` threads until stopped (or empty, with ``until_empty``)."""

    def __init__(
        self,
        *,
        runs: list[int] | None = None,
        max_concurrent: int = 1,
        until_empty: bool = False,
        max_phases: int | None = None,
        engine: str = "pipeline",
        provider: Any = None,
        poll_seconds: float = 1.0,
        grace_seconds: float = 2.0,
        stage_seconds: float | None = None,
    ) -> None:
        from runs.tasks import worker_name

        self.runs = runs or None
        self.max_concurrent = max(1, max_concurrent)
        self.until_empty = until_empty
        self.claims_left = max_phases
        self.engine = engine
        self.provider = provider
        self.poll_seconds = poll_seconds
        self.grace_seconds = grace_seconds
        self.stage_seconds = stage_seconds
        self.worker_name = worker_name
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.active: dict[int, ClaimControl] = {}
        self.idle: set[int] = set()
        self.results: list[DrainResult] = []
        self.touched_runs: set[int] = set(runs or [])
        self.threads: list[threading.Thread] = []

    # Lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        for slot in range(self.max_concurrent):
            thread = threading.Thread(target=self._slot, args=(slot,), name=f"drain-{slot}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def stop(self, *, reason: str = "shutdown") -> None:
        """Stop claiming; running engines give their phase back at the next stage boundary."""
        self.stopping.set()
        with self.lock:
            for control in self.active.values():
                control.stop_reason = control.stop_reason or reason

    def release_all(self, *, reason: str = "worker shut down") -> int:
        """Release every lease still held (the engines did not reach a stage boundary within the grace)."""
        released = 0
        with self.lock:
            controls = list(self.active.values())
        for control in controls:
            if _give_back(control, reason=reason):
                released += 1
        connections.close_all()
        return released

    def shutdown(self) -> int:
        self.stop()
        self.wait(self.grace_seconds)
        return self.release_all()

    def run(self) -> list[DrainResult]:
        """Run to the end without a display (tests, django-q2)."""
        self.start()
        try:
            while self.alive():
                self.wait(0.2)
        except KeyboardInterrupt:
            self.shutdown()
        return self.results

    # Slots ------------------------------------------------------------------------------------------------

    def _reserve(self) -> bool:
        with self.lock:
            if self.claims_left is None:
                return True
            if self.claims_left <= 0:
                return False
            self.claims_left -= 1
            return True

    def _unreserve(self) -> None:
        with self.lock:
            if self.claims_left is not None:
                self.claims_left += 1

    def _slot(self, slot: int) -> None:
        from runs.services.leases import phase_claim

        worker = self.worker_name(slot)
        failures = 0
        try:
            while not self.stopping.is_set() and self._reserve():
                try:
                    claim = phase_claim(worker=worker, runs=self.runs)
                except DatabaseError:
                    # The database went away: keep the slot alive and try again, backing off up to 30 s.
                    self._unreserve()
                    failures += 1
                    logger.warning("claim failed; retrying", exc_info=True)
                    connections.close_all()
                    self.stopping.wait(min(30.0, 0.5 * 2**failures) * random.uniform(0.5, 1.0))
                    continue
                failures = 0
                if claim is None:
                    self._unreserve()
                    if self._idle(slot):
                        return
                    self.stopping.wait(self.poll_seconds)
                    continue
                self._execute(slot, claim, worker)
        finally:
            connections.close_all()

    def _idle(self, slot: int) -> bool:
        """Mark the slot idle; True when the drain should end (``until_empty`` and nothing left anywhere)."""
        with self.lock:
            self.idle.add(slot)
            everyone_idle = len(self.idle) == self.max_concurrent and not self.active
        if not (self.until_empty and everyone_idle):
            return False
        # A phase executing elsewhere (maybe a dead worker's) can still come back to the queue.
        return not self._executing_elsewhere()

    def _executing_elsewhere(self) -> bool:
        from runs.models import Phase, PhaseState

        executing = Phase.objects.filter(state=PhaseState.EXECUTING)
        if self.runs:
            executing = executing.filter(run_id__in=self.runs)
        return executing.exists()

    def _execute(self, slot: int, claim: Claim, worker: str) -> None:
        control = ClaimControl(claim=claim, worker=worker)
        with self.lock:
            self.idle.discard(slot)
            self.active[slot] = control
            self.touched_runs.add(claim.run_id)
        started = time.monotonic()
        state = execute_one(
            claim,
            worker=worker,
            engine=self.engine,
            provider=self.provider,
            control=control,
            stage_seconds=self.stage_seconds,
        )
        with self.lock:
            self.active.pop(slot, None)
            self.results.append(DrainResult(claim.phase_id, claim.run_id, state, time.monotonic() - started))

    # Reporting --------------------------------------------------------------------------------------------

    def stage_of(self, run_id: int) -> tuple[int, str] | None:
        with self.lock:
            for control in self.active.values():
                if control.claim.run_id == run_id:
                    return control.claim.phase_id, control.stage
        return None

    def failed_or_blocked(self) -> list[DrainResult]:
        return [result for result in self.results if result.state in ("failed", "blocked")]
