"""Django glue around the framework-free engine: build the spec, record the trajectory, run a claimed phase.

- ``build_phase_spec(phase_id)``: a ``PhaseSpec`` from the Phase, its Run and Project, settings and prices.
- ``DjangoRecorder``: stage events through ``phase_report_event`` (under the claim epoch), telemetry rows
  through ``telemetry.services``; telemetry failures are logged, never fatal to the attempt.
- ``provider_from_settings``: the LLM provider (Anthropic, a replayed cassette, or recording either).
- ``execute_claim(claim, *, worker, provider=None, control=None)``: run the engine for a claimed phase (or, for
  a research phase, a research session) and apply its outcome with ``phase_finish``; then record goal drift
  (advisory) and enqueue ``research.tasks.attempt_finished`` after commit.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Subquery

from autopack_site.api_errors import redact_json
from autopack_site.lib.errors import DomainError
from autopack_site.lib.logging import redact
from autopack_site.lib.prepared import RowReader, fetchone_prepared
from runs.engine.circuit import CircuitBreaker
from runs.engine.doctor import failure_fingerprint
from runs.engine.outcome import OutcomeKind, PhaseOutcome
from runs.engine.pipeline import run_attempt, workspace_for
from runs.engine.providers import AnthropicProvider, LLMProvider, RecordingProvider, ReplayProvider
from runs.engine.recorder import Escalation, Estimation, LlmCall
from runs.engine.spec import DEFAULT_LADDER, DEFAULT_MODELS, Budgets, CiSpec, History, PhaseSpec
from runs.models import Attempt, AttemptStatus, Phase, PhaseState, Project, Run, RunState
from runs.services.leases import Claim, phase_finish, phase_report_event

logger = logging.getLogger(__name__)
_replay_providers: dict[str, ReplayProvider] = {}
_replay_lock = threading.Lock()


# --- the spec -------------------------------------------------------------------------------------------------


def _autopack(name: str, default: Any) -> Any:
    return settings.AUTOPACK.get(name, default)


def _models(run: Run) -> dict[str, dict[str, str]]:
    configured = _autopack("MODELS", DEFAULT_MODELS)
    models = {role: dict(table) for role, table in configured.items()}
    for role, table in (run.model_mapping or {}).items():
        if role in models and isinstance(table, dict):
            models[role].update({key: value for key, value in table.items() if isinstance(value, str)})
    return models


def _prices(models: dict[str, dict[str, str]], ladder: list[str]) -> dict[str, dict[str, float]]:
    """Per-million prices of the models this phase may use, from the telemetry price table (if installed).

    Cached (``_spec_cached``): every claim asks for the same few models, and a lookup costs two queries each.
    """
    names = tuple(sorted({model for table in models.values() for model in table.values()} | set(ladder)))
    return _spec_cached(f"prices:{'|'.join(names)}", lambda: _price_lookup(names))


def _price_lookup(names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    try:
        from telemetry.pricing import model_price
    except ImportError:
        return {}
    prices = {}
    for name in names:
        price = model_price(name)
        if price is not None:
            prices[name] = {
                "input": float(price.input_per_mtok),
                "output": float(price.output_per_mtok),
                "cache_write": float(price.cache_write_per_mtok),
                "cache_read": float(price.cache_read_per_mtok),
            }
    return prices


# Price tables and estimator calibrations change rarely (an operator's act) but are read on every claim: they are
# kept in the cache for ``AUTOPACK["SPEC_CACHE_SECONDS"]`` (default 60) and dropped as soon as this process saves
# one; other processes see a change within that time. A new price table takes effect at its ``effective_from``
# anyway, and a calibration only tunes the token estimator.
_SPEC_CACHE_KEY = "runs.execution.spec-inputs"


def _spec_cached(name: str, compute: Any) -> Any:
    """``compute()``, remembered under ``name`` in one cache entry shared by every spec input (one cache read)."""
    from django.core.cache import cache

    seconds = int(_autopack("SPEC_CACHE_SECONDS", 60))
    if seconds <= 0:
        return compute()
    entries = cache.get(_SPEC_CACHE_KEY) or {}
    if name not in entries:
        entries = {**entries, name: compute()}
        cache.set(_SPEC_CACHE_KEY, entries, seconds)
    return entries[name]


def spec_cache_clear(**_: Any) -> None:
    """Forget the cached prices and calibrations (connected to their models' save and delete signals)."""
    from django.core.cache import cache

    cache.delete(_SPEC_CACHE_KEY)


def _connect_spec_cache_signals() -> None:
    from django.db.models.signals import post_delete, post_save

    try:
        from telemetry.models import EstimatorCalibration, ModelPrice, PriceTable
    except ImportError:
        return
    for model in (PriceTable, ModelPrice, EstimatorCalibration):
        for signal in (post_save, post_delete):
            signal.connect(spec_cache_clear, sender=model, dispatch_uid=f"spec-cache-{model.__name__}-{id(signal)}")


_connect_spec_cache_signals()


RESEARCH_NOTE = (
    "Phases of this category failed repeatedly in this project lately. Before changing code, check the "
    "build-history insights above and the project's docs for what went wrong; consider asking for a research "
    "phase if the approach is unclear. (Advisory.)"
)


def _research_context(phase: Phase, paths: list[str]) -> tuple[str, str]:
    """Build-history insights (with a research recommendation when the category keeps failing) and the goal
    anchor, when the research app provides them (never fatal)."""
    goal = phase.run.goal
    try:
        from research.insights import claim_insights, goal_anchor
    except ImportError:
        return "", goal
    try:
        insights, needs_research = claim_insights(
            project_id=phase.run.project_id, category=phase.category, paths=paths, goal=goal
        )
        if needs_research:
            insights = f"{insights}\n\n{RESEARCH_NOTE}".strip()
    except Exception:  # noqa: BLE001 - insights are a hint; a broken index must not stop a phase
        logger.warning("builder insights failed for phase %s", phase.pk, exc_info=True)
        insights = ""
    return insights, goal_anchor(goal)


def _research_reports(run: Run, *, has_sessions: bool | None = None) -> str:
    """Reports of the run's finished research phases (the run's own output, so replays get them too).

    ``has_sessions`` False (known from the phase query) saves the lookup for the usual run without research.
    """
    if has_sessions is False:
        return ""
    try:
        from research.sessions import research_report_for_run
    except ImportError:
        return ""
    return research_report_for_run(run.pk)


def _research_sessions_exist() -> Any:
    """``Exists`` of the phase's run's complete research sessions, to annotate the phase query (None: no app)."""
    try:
        from research.models import ResearchSession, SessionStatus
    except ImportError:
        return None
    return Exists(ResearchSession.objects.filter(run_id=OuterRef("run_id"), status=SessionStatus.COMPLETE))


def _calibrated_overheads() -> dict[str, int]:
    """The token estimator's calibrated phase overheads ({} when none applied, or telemetry is absent)."""
    try:
        from telemetry.calibration import current_overheads
    except ImportError:
        return {}
    overheads = _spec_cached("overheads", current_overheads)
    return {str(key): int(value) for key, value in overheads.items() if isinstance(value, int | float)}


def _last_judged_summary() -> Subquery:
    """The summary of the phase's last judged attempt (what failure hardening's ``ci_overrides`` live in)."""
    return Subquery(
        Attempt.objects.filter(phase=OuterRef("pk"), status__in=[AttemptStatus.FAILED, AttemptStatus.SUCCEEDED])
        .order_by("-number")
        .values("summary")[:1]
    )


def _ci_overrides(summary: Any) -> dict[str, str]:
    """What failure hardening changed in the CI settings, as of the phase's last judged attempt."""
    overrides = summary.get("ci_overrides") if isinstance(summary, dict) else None
    if not isinstance(overrides, dict):
        return {}
    known = set(CiSpec.__dataclass_fields__)
    return {str(key): value for key, value in overrides.items() if key in known and isinstance(value, str)}


def _spec_phase(phase_id: int) -> tuple[Phase, Any, bool | None]:
    """The phase with its run and project, its last judged attempt's summary and whether its run has research
    reports: one query (they used to be three); on PostgreSQL a prepared statement (every claim runs it, and
    compiling it in the ORM cost more than the rest of the spec)."""
    if connection.vendor == "postgresql":
        return _spec_phase_prepared(phase_id)
    return _spec_phase_orm(phase_id)


def _spec_phase_orm(phase_id: int) -> tuple[Phase, Any, bool | None]:
    annotations: dict[str, Any] = {"last_judged_summary": _last_judged_summary()}
    sessions = _research_sessions_exist()
    if sessions is not None:
        annotations["has_research_sessions"] = sessions
    phase = Phase.objects.select_related("run__project").annotate(**annotations).get(pk=phase_id)
    summary = phase.last_judged_summary
    if isinstance(summary, str):  # JSON from a subquery is not decoded by every backend
        summary = json.loads(summary)
    return phase, summary, getattr(phase, "has_research_sessions", None)


@functools.cache
def _spec_statement() -> tuple[str, RowReader, RowReader, RowReader, bool]:
    quote = connection.ops.quote_name
    phase, run, project = RowReader.of(Phase), RowReader.of(Run), RowReader.of(Project)
    try:
        from research.models import ResearchSession
    except ImportError:
        sessions = "NULL"
    else:
        sessions = (
            f"EXISTS(SELECT 1 FROM {quote(ResearchSession._meta.db_table)} s "
            "WHERE s.run_id = p.run_id AND s.status = %(complete)s)"
        )
    sql = (
        f"SELECT {phase.columns('p')}, {run.columns('r')}, {project.columns('j')}, "
        f"(SELECT a.summary FROM {quote(Attempt._meta.db_table)} a WHERE a.phase_id = p.id "
        "AND a.status IN (%(failed)s, %(succeeded)s) ORDER BY a.number DESC LIMIT 1), "
        f"{sessions} "
        f"FROM {quote(Phase._meta.db_table)} p JOIN {quote(Run._meta.db_table)} r ON r.id = p.run_id "
        f"JOIN {quote(Project._meta.db_table)} j ON j.id = r.project_id WHERE p.id = %(phase)s"
    )
    return sql, phase, run, project, sessions != "NULL"


def _spec_phase_prepared(phase_id: int) -> tuple[Phase, Any, bool | None]:
    sql, phases, runs, projects, with_sessions = _spec_statement()
    params: dict[str, Any] = {"phase": phase_id, "failed": AttemptStatus.FAILED, "succeeded": AttemptStatus.SUCCEEDED}
    if with_sessions:
        from research.models import SessionStatus

        params["complete"] = SessionStatus.COMPLETE
    row = fetchone_prepared(sql, params)
    if row is None:
        raise Phase.DoesNotExist(f"phase {phase_id} does not exist")
    ends = (
        len(phases.fields),
        len(phases.fields) + len(runs.fields),
        len(phases.fields) + len(runs.fields) + len(projects.fields),
    )
    phase, run, project = (
        phases.read(row[: ends[0]]),
        runs.read(row[ends[0] : ends[1]]),
        projects.read(row[ends[1] : ends[2]]),
    )
    run.project, phase.run = project, run
    summary, has_sessions = row[ends[2]], row[ends[2] + 1]
    if isinstance(summary, str):
        summary = json.loads(summary)
    return phase, summary, has_sessions if with_sessions else None


def _replays(run: Run) -> dict[str, Any] | None:
    override = (run.model_mapping or {}).get("provider")
    return override if isinstance(override, dict) else None


def build_phase_spec(phase_id: int, *, with_insights: bool | None = None) -> PhaseSpec:
    """The phase as the engine sees it. A run that replays a cassette gets no live insights and no calibrated
    estimator by default: its prompts (and max_tokens) must be exactly the recorded ones.

    Failure hardening's ``ci_overrides`` from the last judged attempt are applied to the CI settings.
    """
    phase, last_summary, has_research_sessions = _spec_phase(phase_id)
    run, project = phase.run, phase.run.project
    override = _replays(run)
    if with_insights is None:
        with_insights = override is None
    scope = phase.scope or {}
    overrides = _ci_overrides(last_summary)
    ci = {**dict(scope.get("ci") or {}), **overrides}
    models = _models(run)
    ladder = list(_autopack("ESCALATION_LADDER", DEFAULT_LADDER))
    deliverables = list(scope.get("deliverables", []))
    paths = list(scope.get("paths", []))
    insights, anchor = _research_context(phase, paths + deliverables) if with_insights else ("", run.goal)
    return PhaseSpec(
        run_id=run.pk,
        phase_pk=phase.pk,
        phase_id=phase.phase_id,
        name=phase.name,
        attempt_id=None,
        claim_epoch=phase.claim_epoch,
        description=phase.description,
        category=phase.category,
        complexity=phase.complexity,
        scope_paths=paths,
        read_only_context=list(scope.get("read_only_context", [])),
        deliverables=deliverables,
        acceptance_criteria=list(scope.get("acceptance_criteria", [])),
        allow_test_edits=bool(scope.get("allow_test_edits")),
        allow_noop=bool(scope.get("allow_noop")),
        ci=CiSpec.from_dict(ci),
        project_slug=project.slug,
        repository_path=project.repository_path,
        # The commit recorded at start, so a replayed clone starts where its original did.
        base_branch=run.base_commit or project.base_branch,
        branch=run.branch or run.default_branch_name(),
        protected_paths=list(project.protected_paths or []),
        default_test_command=project.default_test_command,
        goal=run.goal,
        goal_anchor=anchor,
        insights=insights,
        provider=provider_name_for_run(run),
        provider_cassette=str((override or {}).get("cassette") or ""),
        models=models,
        escalation_ladder=ladder,
        prices=_prices(models, ladder),
        estimator_overheads=_calibrated_overheads() if with_insights else {},
        research=_research_reports(run, has_sessions=has_research_sessions),
        budgets=Budgets(
            run_token_cap=run.token_cap,
            run_usd_cap=float(run.usd_cap),
            run_tokens_used=run.tokens_used,
            run_cost_usd=float(run.cost_usd),
            phase_token_cap=int(_autopack("PHASE_TOKEN_CAP", 1_000_000)),
            phase_usd_cap=float(_autopack("PHASE_USD_CAP", 10)),
            phase_tokens_used=phase.tokens_used,
            phase_cost_usd=float(phase.cost_usd),
        ),
        history=History(
            attempt_number=max(phase.attempts_since_requeue, 1),
            attempt_count=max(phase.attempt_count - 1, 0),
            max_attempts=int(_autopack("MAX_ATTEMPTS", 5)),
            revision_epoch=phase.revision_epoch,
            escalation_level=phase.escalation_level,
            budget_override=phase.budget_override,
            builder_hint=phase.builder_hint,
            last_failure_reason=phase.last_failure_reason,
            failure_fingerprints=list(phase.failure_fingerprints or []),
            phase_doctor_calls=phase.doctor_calls,
            run_doctor_calls=run.doctor_calls,
            ci_overrides=overrides,
        ),
    )


# --- the recorder ---------------------------------------------------------------------------------------------


class StopSource(Protocol):
    def should_stop(self) -> str: ...


class DjangoRecorder:
    """Writes the trajectory as AttemptEvents and the telemetry rows; knows when to stop."""

    def __init__(
        self,
        phase_id: int,
        epoch: int,
        attempt_id: int | None,
        *,
        worker: str | None = None,
        control: StopSource | None = None,
        context: tuple[int, int, str, str] | None = None,
    ) -> None:
        """``context``: the phase's (run id, project id, category, complexity) when the caller has them."""
        self.phase_id = phase_id
        self.epoch = epoch
        self.attempt_id = attempt_id
        self.worker = worker
        self.control = control
        if context is None:
            context = (
                Phase.objects.filter(pk=phase_id)
                .values_list("run_id", "run__project_id", "category", "complexity")
                .get()
            )
        self.run_id, self.project_id, self.category, self.complexity = context
        self.calls = 0
        self.lost = False

    def _links(self) -> dict[str, Any]:
        return {
            "project_id": self.project_id,
            "run_id": self.run_id,
            "phase_id": self.phase_id,
            "attempt_id": self.attempt_id,
        }

    def event(self, stage: str, kind: str, data: dict[str, Any], blob: bytes | None = None) -> None:
        if hasattr(self.control, "stage"):
            self.control.stage = stage  # the heartbeat reports where the attempt is
        try:
            phase_report_event(
                phase_id=self.phase_id,
                epoch=self.epoch,
                stage=stage,
                kind=kind,
                # Prompts, responses, logs and diffs can carry credentials; none may be stored.
                data=redact_json(data),
                blob=self._redacted(blob),
                worker=self.worker,
            )
        except DomainError:
            self.lost = True  # stale epoch: the lease is gone; the attempt stops at the next boundary

    @staticmethod
    def _redacted(blob: bytes | None) -> bytes | None:
        if blob is None:
            return None
        # surrogateescape round-trips bytes that are not UTF-8, so a binary blob is stored unchanged.
        return redact(blob.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")

    def _telemetry(self, name: str, **fields: Any) -> None:
        try:
            from telemetry import services
        except ImportError:
            return
        try:
            getattr(services, name)(**fields, **self._links())
        except Exception:  # noqa: BLE001 - losing a telemetry row must not lose the attempt
            logger.warning("telemetry %s failed for phase %s", name, self.phase_id, exc_info=True)

    def llm_call(self, call: LlmCall) -> None:
        self.calls += 1
        request_id = call.request_id
        if call.provider != "anthropic" or not request_id:
            # Replayed and scripted calls repeat their recorded ids; each replay is still a call of its own.
            request_id = f"{call.provider}:{self.attempt_id}:{self.calls}:{request_id}"
        # Replayed and scripted calls stand for calls to the model's vendor: price them as such.
        provider = "anthropic" if call.model.startswith("claude") else call.provider
        self._telemetry(
            "usage_record",
            provider=provider,
            model=call.model,
            role=call.role,
            request_id=request_id,
            input_tokens=call.input_tokens,
            output_tokens=call.output_tokens,
            cache_creation_tokens=call.cache_creation_tokens,
            cache_read_tokens=call.cache_read_tokens,
            latency_ms=call.latency_ms,
            stop_reason=call.stop_reason,
        )

    def estimation(self, estimation: Estimation) -> None:
        self._telemetry(
            "estimation_record",
            category=estimation.category,
            complexity=estimation.complexity,
            deliverable_count=estimation.deliverable_count,
            predicted=estimation.predicted,
            actual=estimation.actual,
            selected_budget=estimation.selected_budget,
            final_ceiling=estimation.final_ceiling,
            truncated=estimation.truncated,
            model=estimation.model,
            phase_overhead=estimation.phase_overhead,
        )

    def escalation(self, escalation: Escalation) -> None:
        if escalation.kind == "token_budget":
            self._telemetry(
                "escalation_record",
                reason=escalation.reason,
                from_budget=int(escalation.from_value),
                to_budget=int(escalation.to_value),
                output_tokens_used=escalation.used,
            )
        else:
            self._telemetry(
                "escalation_record",
                reason=escalation.reason,
                from_model=escalation.from_value,
                to_model=escalation.to_value,
            )

    def hardening(self, *, pattern_id: str, mitigated: bool, doctor_tokens_avoided: int, detail: str) -> None:
        # Telemetry makes its own counterfactual estimate of the Doctor tokens avoided (from recorded calls).
        self._telemetry("hardening_record", pattern=pattern_id, mitigated=mitigated, detail=detail, error_text=detail)

    def doctor_outcome(self, *, action: str, confidence: float, parsed: bool, tokens: int) -> None:
        self._telemetry(
            "doctor_outcome_record",
            action=action,
            confidence=confidence if parsed else None,
            tokens=tokens,
            error_text="" if parsed else "unparseable doctor answer",
        )

    def context(self, *, tokens_included: int, tokens_avoided: int, files: int, files_cut: int) -> None:
        self._telemetry(
            "context_record",
            tokens_included=tokens_included,
            tokens_avoided=tokens_avoided,
            files_included=files,
            files_cut=files_cut,
        )

    def should_stop(self) -> str:
        if self.lost:
            return "lease_lost"
        if self.control is not None:
            return self.control.should_stop()
        # No heartbeat thread told us: ask the database (one small query per stage boundary).
        row = Phase.objects.filter(pk=self.phase_id).values_list("claim_epoch", "state", "run__state").first()
        if row is None or row[0] != self.epoch or row[1] != PhaseState.EXECUTING:
            return "lease_lost"
        # A pause only stops new claims: the executing attempt finishes (DESIGN.md, run_pause).
        return "" if row[2] in (RunState.RUNNING, RunState.PAUSED) else str(row[2])


# --- providers ------------------------------------------------------------------------------------------------


def _cassette_path(cassette: str | Path) -> Path:
    path = Path(cassette)
    return path if path.is_absolute() else Path(settings.BASE_DIR) / path


def replay_provider(cassette: str | Path, *, run_id: int | None = None) -> ReplayProvider:
    """One replay per (cassette, run) per process: a run's repeated identical requests get successive recordings."""
    path = str(_cassette_path(cassette).resolve())
    key = f"{path}#{run_id}"
    with _replay_lock:
        if key not in _replay_providers:
            _replay_providers[key] = ReplayProvider(path)
        return _replay_providers[key]


def provider_from_settings(
    *, name: str | None = None, cassette: str | None = None, record: str | None = None, run: Run | None = None
) -> LLMProvider:
    """The provider for a run: explicit arguments, then the run's own mapping, then ``AUTOPACK["LLM_PROVIDER"]``.

    A run whose ``model_mapping`` carries ``{"provider": {"name": "replay", "cassette": "demo/cassette.jsonl"}}``
    replays that cassette (the demo seeds one so ``make run`` works without an API key).
    """
    override = (run.model_mapping or {}).get("provider") if run is not None else None
    if name is None and isinstance(override, dict):
        name, cassette = override.get("name"), cassette or override.get("cassette")
    name = name or ("replay" if cassette else str(_autopack("LLM_PROVIDER", "anthropic")))
    if name == "replay":
        if not cassette:
            raise ValueError("the replay provider needs a cassette")
        provider: LLMProvider = replay_provider(cassette, run_id=run.pk if run is not None else None)
    elif name == "anthropic":
        provider = AnthropicProvider(
            api_key=os.environ.get("ANTHROPIC_API_KEY") or None, base_url=os.environ.get("ANTHROPIC_BASE_URL") or None
        )
    else:
        raise ValueError(f"unknown LLM provider {name!r}")
    return RecordingProvider(provider, _cassette_path(record)) if record else provider


def provider_name_for_run(run: Run) -> str:
    """The provider a run's phases call: the run's own override, else ``AUTOPACK["LLM_PROVIDER"]``."""
    override = _replays(run)
    if override and override.get("name"):
        return str(override["name"])
    return str(_autopack("LLM_PROVIDER", "anthropic"))


def provider_circuit_open(run: Run) -> bool:
    """True while the circuit of the run's provider is open: the claimer should skip the run's phases."""
    return circuit_breaker().is_open(provider_name_for_run(run))


def circuit_breaker() -> CircuitBreaker:
    """The per-provider breaker shared by every worker on this machine (state under DATA_DIR/circuit)."""
    return CircuitBreaker(
        Path(settings.DATA_DIR) / "circuit",
        threshold=int(_autopack("CIRCUIT_THRESHOLD", 3)),
        cool_down=float(_autopack("CIRCUIT_COOL_DOWN_SECONDS", 60)),
    )


# --- execution ------------------------------------------------------------------------------------------------


def execute_claim(
    claim: Claim,
    *,
    worker: str,
    provider: LLMProvider | None = None,
    control: Any = None,
    with_insights: bool | None = None,
) -> PhaseOutcome:
    """Run one attempt of the claimed phase and apply the outcome; ``StaleEpoch`` if the lease was lost.

    ``control`` (the drain's ClaimControl) tells the engine to stop at the next stage boundary; without it the
    recorder asks the database. A research phase runs a research session instead of the Builder.
    """
    run = Run.objects.get(pk=claim.run_id)
    spec = build_phase_spec(claim.phase_id, with_insights=with_insights)
    spec.attempt_id, spec.claim_epoch = claim.attempt_id, claim.claim_epoch
    # Local paths only: a remote executor's spec leaves them empty and the engine uses its workspaces dir.
    spec.artifacts_dir = str(Path(settings.DATA_DIR) / "artifacts")
    spec.cache_dir = str(Path(settings.DATA_DIR) / "baselines")
    recorder = DjangoRecorder(claim.phase_id, claim.claim_epoch, claim.attempt_id, worker=worker, control=control)
    if spec.category == RESEARCH_CATEGORY:
        outcome = _research_attempt(spec, recorder)
    else:
        if provider is None:
            provider = provider_from_settings(run=run)
        workspace = workspace_for(spec, settings.AUTOPACK["WORKSPACES_DIR"])
        outcome = run_attempt(
            spec, workspace=workspace, provider=provider, recorder=recorder, circuit=circuit_breaker()
        )
    context = outcome.summary.get("context")
    if context:
        recorder.context(
            tokens_included=context["tokens"],
            tokens_avoided=context["tokens_avoided"],
            files=context["files"],
            files_cut=context["files_cut"],
        )
    phase_finish(phase_id=claim.phase_id, epoch=claim.claim_epoch, outcome=outcome, worker=worker)
    _record_outcome(recorder, spec, outcome)
    if claim.attempt_id is not None:
        attempt_followups(attempt_id=claim.attempt_id, goal=run.goal, description=spec.description, diff=outcome.diff)
    return outcome


def attempt_followups(*, attempt_id: int, goal: str, description: str, diff: str) -> None:
    """After ``phase_finish``: record goal drift when there is a diff (advisory) and, after commit, enqueue
    ``research.tasks.attempt_finished``. The executor API calls it for remotely executed attempts too."""
    if diff:
        _record_goal_drift(attempt_id, goal=goal, description=description, diff=diff)
    _enqueue_attempt_finished(attempt_id)


RESEARCH_CATEGORY = "research"


def _research_attempt(spec: PhaseSpec, recorder: DjangoRecorder) -> PhaseOutcome:
    """A research phase: its question is answered from the project's corpora and the report is its output."""
    from research.sessions import research_phase_execute

    stop = recorder.should_stop()
    if stop:
        return PhaseOutcome(kind=OutcomeKind.ABANDONED, reason=f"stopped before research: {stop}")
    try:
        with transaction.atomic():
            session = research_phase_execute(phase_id=spec.phase_pk)
    except Exception as error:  # noqa: BLE001 - a failed session is a failed attempt, retried by the policy
        logger.warning("research phase %s failed", spec.phase_pk, exc_info=True)
        detail = f"research failed: {type(error).__name__}: {error}"[:2000]
        recorder.event("research", "failed", {"error": detail})
        return PhaseOutcome(
            kind=OutcomeKind.RETRY,
            reason=detail,
            failure_fingerprint=failure_fingerprint("research_failed", f"{type(error).__name__}: {error}"),
            summary={"research": {"error": detail}},
        )
    summary = {
        "research": {
            "session_id": session.pk,
            "quality_score": session.quality_score,
            "report_chars": len(session.report),
            "embedder": session.embedder,
        }
    }
    recorder.event("research", "report", summary["research"], session.report.encode("utf-8"))
    return PhaseOutcome(kind=OutcomeKind.COMPLETE, reason=f"research session #{session.pk} stored", summary=summary)


def diff_summary(diff: str, *, max_chars: int = 2000) -> str:
    """The files a diff touches and the lines it adds: what goal drift compares with the run's goal."""
    files = [line[6:] for line in diff.splitlines() if line.startswith("+++ b/")]
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    text = "Files: " + ", ".join(files) + "\n" + "\n".join(line for line in added if line)
    return text[:max_chars]


def _record_goal_drift(attempt_id: int, *, goal: str, description: str, diff: str) -> None:
    """Advisory: how far the change drifts from the run's goal. It only records, so replays run it too."""
    try:
        from research.services import goal_drift_record
    except ImportError:
        return
    try:
        with transaction.atomic():
            goal_drift_record(attempt_id=attempt_id, goal=goal, text=f"{description}\n{diff_summary(diff)}")
    except Exception:  # noqa: BLE001 - advisory: never fails the phase
        logger.warning("goal drift check failed for attempt %s", attempt_id, exc_info=True)


def _enqueue_attempt_finished(attempt_id: int) -> None:
    """After commit, let the research app remember what the attempt teaches (failures, Doctor hints).

    Not tied to ``ENQUEUE_TASKS`` (which is about run work): like the run's ``run_finished``, it is memory.
    """

    def enqueue() -> None:
        try:
            from django_q.tasks import async_task

            async_task("research.tasks.attempt_finished", attempt_id, group=f"attempt-{attempt_id}")
        except Exception:  # noqa: BLE001 - memory is a nicety; a broker hiccup must not fail the worker
            logger.warning("could not enqueue attempt_finished for attempt %s", attempt_id, exc_info=True)

    transaction.on_commit(enqueue)


def _record_outcome(recorder: DjangoRecorder, spec: PhaseSpec, outcome: PhaseOutcome) -> None:
    timings = outcome.summary.get("timings", {})
    recorder._telemetry(
        "phase_outcome_record",
        outcome=outcome.kind.value,
        reason=outcome.reason[:2000],
        # The failure text gives the row its error signature: without it every failure is one "pattern".
        error_text="" if outcome.kind == OutcomeKind.COMPLETE else outcome.reason,
        category=spec.category,
        complexity=spec.complexity,
        attempt_number=spec.history.attempt_number,
        tokens=outcome.input_tokens + outcome.output_tokens,
        duration_ms=timings.get("total_ms"),
    )


# --- remote attempts ------------------------------------------------------------------------------------------


def _dataclass_from(cls: type, data: dict[str, Any]) -> Any:
    return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


def record_remote_telemetry(
    *, phase_id: int, epoch: int, attempt_id: int | None, worker: str, seq: int, kind: str, data: dict[str, Any]
) -> None:
    """A remote executor's telemetry event (stage ``telemetry``) written as the rows a local attempt writes.

    ``seq`` numbers the calls: replayed calls carry no unique request id, and the usage row is idempotent on it.
    """
    recorder = DjangoRecorder(phase_id, epoch, attempt_id, worker=worker)
    try:
        if kind == "llm_call":
            recorder.calls = seq - 1
            recorder.llm_call(_dataclass_from(LlmCall, data))
        elif kind == "estimation":
            recorder.estimation(_dataclass_from(Estimation, data))
        elif kind == "escalation":
            recorder.escalation(_dataclass_from(Escalation, data))
        elif kind == "hardening":
            recorder.hardening(
                pattern_id=data["pattern_id"],
                mitigated=data["mitigated"],
                doctor_tokens_avoided=data.get("tokens_avoided", 0),
                detail=data.get("detail", ""),
            )
        elif kind == "doctor_outcome":
            recorder.doctor_outcome(**{key: data[key] for key in ("action", "confidence", "parsed", "tokens")})
        elif kind == "context":
            recorder.context(**{key: data[key] for key in ("tokens_included", "tokens_avoided", "files", "files_cut")})
    except (KeyError, TypeError):  # a malformed event stays in the trajectory; it just makes no telemetry row
        logger.warning("unreadable remote telemetry %s for phase %s", kind, phase_id, exc_info=True)


def record_remote_outcome(
    *,
    phase_id: int,
    epoch: int,
    attempt_id: int,
    attempt_number: int,
    outcome: PhaseOutcome,
    context: tuple[int, int, str, str] | None = None,
):
    """The phase-outcome telemetry row of a remotely executed attempt (``execute_claim`` writes a local one's).

    ``context``: the phase's (run id, project id, category, complexity), if known (saves a query)."""
    recorder = DjangoRecorder(phase_id, epoch, attempt_id, context=context)
    timings = outcome.summary.get("timings", {})
    recorder._telemetry(
        "phase_outcome_record",
        outcome=outcome.kind.value,
        reason=outcome.reason[:2000],
        error_text="" if outcome.kind == OutcomeKind.COMPLETE else outcome.reason,
        category=recorder.category,
        complexity=recorder.complexity,
        attempt_number=attempt_number,
        tokens=outcome.input_tokens + outcome.output_tokens,
        duration_ms=timings.get("total_ms"),
    )
