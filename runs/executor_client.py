"""The remote executor's side of ``/api/executor/``: an HTTP client, an HTTP recorder and the work loop.

A remote executor talks only HTTP: it claims a phase (receiving the ``PhaseSpec`` as JSON), runs the same
engine as a local worker (``run_attempt``) in its own workspaces, heartbeats, streams stage events and
posts the outcome, every call carrying the claim epoch. Server errors and dropped connections are retried
with exponential backoff and full jitter; a 409 means the lease is gone and ends the attempt.

Research phases never come this way: a research session reads the server's corpora and memory, so the
server keeps them for its own workers (``runs.executor_api``) and a remote executor only runs Builder work.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from runs.engine.outcome import OutcomeKind, PhaseOutcome

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class ExecutorError(Exception):
    """The server refused a request for a reason retrying cannot fix."""

    def __init__(self, status_code: int, body: Any) -> None:
        super().__init__(f"HTTP {status_code}: {body}")
        self.status_code = status_code
        self.body = body


class LeaseGone(ExecutorError):
    """409: the claim epoch is stale (or the phase moved on); stop working on it."""


@dataclass(frozen=True)
class RemoteClaim:
    phase_id: int
    run_id: int
    claim_epoch: int
    attempt_id: int
    attempt_number: int
    spec: dict[str, Any]


@dataclass
class Backoff:
    """Exponential backoff with full jitter: sleep uniformly in [0, min(cap, base * 2**attempt))."""

    base: float = 0.5
    cap: float = 30.0
    max_elapsed: float = 300.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delays(self) -> Any:
        attempt, waited = 0, 0.0
        while waited < self.max_elapsed:
            delay = self.rng.uniform(0, min(self.cap, self.base * 2**attempt))
            yield delay
            waited += delay
            attempt += 1


def executor_api_url(api: str) -> str:
    """The executor API's base URL; the server's own URL (``http://host:8000``) is accepted too."""
    base = api.rstrip("/")
    if not base.endswith("/api/executor"):
        base += "/api/executor"
    return base + "/"


class ExecutorClient:
    def __init__(
        self,
        api: str,
        key: str,
        *,
        worker: str,
        timeout: float = 30.0,
        backoff: Backoff | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.worker = worker
        self.backoff = backoff or Backoff()
        self.http = httpx.Client(
            base_url=executor_api_url(api),
            headers={"Authorization": f"Api-Key {key}", "User-Agent": "autopack-executor"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()

    def post(self, path: str, payload: dict[str, Any]) -> httpx.Response:
        delays = self.backoff.delays()
        while True:
            try:
                response = self.http.post(path, json=payload)
            except httpx.TransportError as exc:
                failure: Any = exc
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return self._checked(response)
                failure = f"HTTP {response.status_code}"
            delay = next(delays, None)
            if delay is None:
                raise ExecutorError(0, f"gave up on {path}: {failure}")
            logger.warning("executor request failed, retrying", extra={"path": path, "delay": round(delay, 2)})
            self.backoff.sleep(delay)

    @staticmethod
    def _checked(response: httpx.Response) -> httpx.Response:
        if response.status_code < 400:
            return response
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
        error = LeaseGone if response.status_code == 409 else ExecutorError
        raise error(response.status_code, body or response.text[:300])  # not a whole HTML error page

    # Endpoints --------------------------------------------------------------------------------------------

    def claim(self, *, runs: list[int] | None = None) -> RemoteClaim | None:
        payload: dict[str, Any] = {"worker": self.worker}
        if runs:
            payload["runs"] = runs
        response = self.post("claim", payload)
        if response.status_code == 204:
            return None
        data = response.json()
        claim = data["claim"]
        return RemoteClaim(
            phase_id=claim["phase_id"],
            run_id=claim["run_id"],
            claim_epoch=claim["claim_epoch"],
            attempt_id=claim["attempt_id"],
            attempt_number=claim["attempt_number"],
            spec=data["spec"],
        )

    def _lease(self, claim: RemoteClaim, **fields: Any) -> dict[str, Any]:
        return {"worker": self.worker, "epoch": claim.claim_epoch, **fields}

    def heartbeat(self, claim: RemoteClaim, *, stage: str = "") -> dict[str, Any]:
        return self.post(f"phases/{claim.phase_id}/heartbeat", self._lease(claim, stage=stage)).json()

    def event(
        self, claim: RemoteClaim, *, stage: str, kind: str, data: dict[str, Any], blob: bytes | None = None
    ) -> None:
        encoded = base64.b64encode(blob).decode("ascii") if blob is not None else None
        self.post(
            f"phases/{claim.phase_id}/events", self._lease(claim, stage=stage, kind=kind, data=data, blob=encoded)
        )

    def finish(self, claim: RemoteClaim, outcome: PhaseOutcome) -> dict[str, Any]:
        return self.post(f"phases/{claim.phase_id}/finish", self._lease(claim, outcome=outcome.as_dict())).json()

    def release(self, claim: RemoteClaim, *, reason: str) -> dict[str, Any]:
        return self.post(f"phases/{claim.phase_id}/release", self._lease(claim, reason=reason)).json()


class HttpRecorder:
    """The engine's ``Recorder`` over HTTP: stage events and telemetry become attempt events on the server.

    Telemetry (LLM calls, estimations, escalations, hardening, Doctor outcomes) travels as events of stage
    ``telemetry`` so that a remote attempt's trajectory is as complete as a local one.
    """

    def __init__(self, client: ExecutorClient, claim: RemoteClaim) -> None:
        self.client = client
        self.claim = claim
        self.stage = "claimed"
        self.stop_reason = ""

    def event(self, stage: str, kind: str, data: dict[str, Any], blob: bytes | None = None) -> None:
        self.stage = stage
        self._send(stage, kind, data, blob)

    def _send(self, stage: str, kind: str, data: dict[str, Any], blob: bytes | None = None) -> None:
        try:
            self.client.event(self.claim, stage=stage, kind=kind, data=data, blob=blob)
        except LeaseGone:
            self.stop_reason = "lease_lost"
        except ExecutorError:
            logger.warning("could not record an event", extra={"phase_id": self.claim.phase_id, "stage": stage})

    def _telemetry(self, kind: str, value: Any) -> None:
        data = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value)
        self._send("telemetry", kind, data)

    def llm_call(self, call: Any) -> None:
        self._telemetry("llm_call", call)

    def estimation(self, estimation: Any) -> None:
        self._telemetry("estimation", estimation)

    def escalation(self, escalation: Any) -> None:
        self._telemetry("escalation", escalation)

    def hardening(self, *, pattern_id: str, mitigated: bool, doctor_tokens_avoided: int, detail: str) -> None:
        self._telemetry(
            "hardening",
            {
                "pattern_id": pattern_id,
                "mitigated": mitigated,
                "tokens_avoided": doctor_tokens_avoided,
                "detail": detail,
            },
        )

    def doctor_outcome(self, *, action: str, confidence: float, parsed: bool, tokens: int) -> None:
        self._telemetry(
            "doctor_outcome", {"action": action, "confidence": confidence, "parsed": parsed, "tokens": tokens}
        )

    def context(self, **fields: Any) -> None:
        self._telemetry("context", fields)

    def should_stop(self) -> str:
        return self.stop_reason


class RemoteHeartbeat(threading.Thread):
    def __init__(self, client: ExecutorClient, recorder: HttpRecorder, *, interval: float) -> None:
        super().__init__(name=f"heartbeat-{recorder.claim.phase_id}", daemon=True)
        self.client, self.recorder, self.interval = client, recorder, interval
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                beat = self.client.heartbeat(self.recorder.claim, stage=self.recorder.stage)
            except LeaseGone:
                self.recorder.stop_reason = "lease_lost"
                return
            except ExecutorError:
                continue
            if beat.get("should_stop") and not self.recorder.stop_reason:
                self.recorder.stop_reason = beat.get("run_state") or "stopped"


@dataclass
class RemoteExecutor:
    """Claim over HTTP and run phases with ``concurrency`` threads until stopped (or empty)."""

    api: str
    key: str
    worker: str
    workspaces: Path
    concurrency: int = 1
    engine: str = "pipeline"
    until_empty: bool = False
    poll_seconds: float = 2.0
    heartbeat_seconds: float = 10.0
    provider_factory: Callable[[dict[str, Any]], Any] | None = None
    transport: httpx.BaseTransport | None = None
    stopping: threading.Event = field(default_factory=threading.Event)
    results: list[tuple[int, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def run(self) -> list[tuple[int, str]]:
        threads = [threading.Thread(target=self._slot, args=(n,), daemon=True) for n in range(self.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
        return self.results

    def stop(self) -> None:
        self.stopping.set()

    def _slot(self, slot: int) -> None:
        client = ExecutorClient(self.api, self.key, worker=f"{self.worker}-{slot}", transport=self.transport)
        try:
            while not self.stopping.is_set():
                claim = client.claim()
                if claim is None:
                    if self.until_empty:
                        return
                    self.stopping.wait(self.poll_seconds)
                    continue
                self.results.append((claim.phase_id, self._execute(client, claim)))
        except Exception as exc:  # noqa: BLE001 - a slot that dies must make the executor fail, not vanish
            logger.exception("executor slot %s stopped", slot)
            self.errors.append(f"slot {slot}: {exc}")
            self.stopping.set()
        finally:
            client.close()

    def _execute(self, client: ExecutorClient, claim: RemoteClaim) -> str:
        recorder = HttpRecorder(client, claim)
        heartbeat = RemoteHeartbeat(client, recorder, interval=self.heartbeat_seconds)
        heartbeat.start()
        try:
            try:
                outcome = self._attempt(claim, recorder)
            except Exception as exc:  # noqa: BLE001 - a crashing engine must not leave its phase executing
                logger.exception("engine crashed", extra={"phase_id": claim.phase_id})
                outcome = crashed_outcome(exc)
            if self.stopping.is_set() and outcome.kind == OutcomeKind.ABANDONED:
                return client.release(claim, reason="executor shut down")["state"]
            return client.finish(claim, outcome)["state"]
        except LeaseGone:
            return ""
        finally:
            heartbeat.done.set()

    def _attempt(self, claim: RemoteClaim, recorder: HttpRecorder) -> PhaseOutcome:
        if self.engine == "noop":
            for stage in ("workspace", "build"):
                if self.stopping.is_set() or recorder.should_stop():
                    return PhaseOutcome(kind=OutcomeKind.ABANDONED, reason="stopped")
                recorder.event(stage, "start", {"engine": "noop", "executor": self.worker})
            return PhaseOutcome(kind=OutcomeKind.COMPLETE, reason="noop engine (remote)")
        from runs.engine.pipeline import run_attempt, workspace_for
        from runs.engine.spec import PhaseSpec

        spec = PhaseSpec.from_dict(claim.spec)
        workspace = workspace_for(spec, self.workspaces)
        provider = self.provider_factory(claim.spec) if self.provider_factory else None
        stop_aware = _StopAware(recorder, self.stopping)
        return run_attempt(spec, workspace=workspace, provider=provider, recorder=stop_aware)


def crashed_outcome(exc: Exception) -> PhaseOutcome:
    """A crash is a judged attempt (retry), as in a local drain: a phase that always crashes ends up blocked."""
    reason = f"executor error: {type(exc).__name__}: {exc}"[:1000]
    fingerprint = hashlib.sha256(f"crash:{type(exc).__name__}:{exc}".encode()).hexdigest()[:32]
    return PhaseOutcome(kind=OutcomeKind.RETRY, reason=reason, failure_fingerprint=fingerprint)


class _StopAware:
    """The recorder, plus the executor's own shutdown as a reason to stop at the next stage boundary."""

    def __init__(self, recorder: HttpRecorder, stopping: threading.Event) -> None:
        self._recorder, self._stopping = recorder, stopping

    def __getattr__(self, name: str) -> Any:
        return getattr(self._recorder, name)

    def should_stop(self) -> str:
        return "shutdown" if self._stopping.is_set() else self._recorder.should_stop()
