"""One attempt of one phase, end to end (DESIGN.md "The phase pipeline").

workspace → baseline → context → budget → builder → parse → apply → deliverables → CI → auditor → finalize,
then on failure: reset, hardening, Doctor, policy. Every stage appends an event to the trajectory through the
recorder; the attempt ends with a ``PhaseOutcome`` that the caller applies to the database. Between stages the
recorder is asked whether to stop (run cancelled or paused, lease lost). Nothing here imports Django.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runs.engine import budget as budgeting
from runs.engine.apply import ApplyPolicy, ApplyResult, governed_apply
from runs.engine.ci import BaselineCache, CiDelta, CiRun, compute_delta, rerun_plan, run_tests
from runs.engine.circuit import CircuitBreaker
from runs.engine.context import ContextBundle, build_context
from runs.engine.doctor import Decision, Failure, decide, doctor_allowed, stuck_reason
from runs.engine.edits import EditParseError, ParseResult, parse_edits
from runs.engine.finalizer import Evidence, FinalVerdict, finalize, missing_deliverables
from runs.engine.hardening import DOCTOR_TOKENS_ESTIMATE, FailureInfo, Mitigation, find_mitigation
from runs.engine.llm import BudgetExhausted, LlmCaller
from runs.engine.outcome import OutcomeKind, PhaseOutcome
from runs.engine.prompts import (
    AuditVerdict,
    DoctorAdvice,
    auditor_prompt,
    builder_prompt,
    doctor_prompt,
    parse_audit,
    parse_doctor,
    sanitize,
)
from runs.engine.providers import LLMProvider, LLMResponse, ProviderError
from runs.engine.recorder import Escalation, Estimation, Recorder, fingerprint_text
from runs.engine.spec import PhaseSpec
from runs.engine.toolchains import CiPlan, resolve_test_plan
from runs.engine.workspace import Workspace, git

INFRA_ERRORS = (
    "RateLimited",
    "Overloaded",
    "ServerError",
    "ProviderTimeout",
    "ConnectionDropped",
    "RetryBudgetExhausted",
)


class StopRequested(Exception):
    pass


def workspace_for(spec: PhaseSpec, workspaces_dir: Path | str) -> Workspace:
    """The run's worktree; the branch name is the run's (``autopack/<key>``)."""
    key = spec.branch.removeprefix("autopack/") if spec.branch.startswith("autopack/") else f"run-{spec.run_id}"
    return Workspace(repo=spec.repository_path, workspaces_dir=workspaces_dir, run=key, base_branch=spec.base_branch)


def run_attempt(
    spec: PhaseSpec,
    *,
    workspace: Workspace,
    provider: LLMProvider,
    recorder: Recorder,
    circuit: CircuitBreaker | None = None,
) -> PhaseOutcome:
    """Run one attempt; never raises for anything the phase itself caused."""
    attempt = _Attempt(spec, workspace, provider, recorder, circuit)
    with workspace.locked(timeout=60.0):
        return attempt.run()


@dataclass
class _Timings:
    started: float = field(default_factory=time.monotonic)
    llm_ms: int = 0
    ci_ms: int = 0
    stages: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        total = int((time.monotonic() - self.started) * 1000)
        return {
            "total_ms": total,
            "llm_ms": self.llm_ms,
            "ci_ms": self.ci_ms,
            "engine_ms": max(total - self.llm_ms - self.ci_ms, 0),
            "stages": self.stages,
        }


class _Attempt:
    def __init__(
        self,
        spec: PhaseSpec,
        workspace: Workspace,
        provider: LLMProvider,
        recorder: Recorder,
        circuit: CircuitBreaker | None,
    ) -> None:
        self.spec = spec
        self.workspace = workspace
        self.provider = provider
        self.recorder = recorder
        self.circuit = circuit
        self.llm = LlmCaller(spec, provider, recorder, circuit)
        self.ledger = self.llm.ledger
        self.timings = _Timings()
        self.evidence = Evidence(
            allow_noop=spec.allow_noop, required_tests=list(spec.ci.required_tests), strict=spec.ci.strict
        )
        self.summary: dict[str, Any] = {}
        if spec.history.ci_overrides:
            self.summary["ci_overrides"] = dict(spec.history.ci_overrides)
        self.builder_model = budgeting.model_for(spec, "builder")
        self.budget_override: int | None = None
        self.doctor_called = False
        self.diff = ""
        self.root = Path()
        self.start_sha = ""
        self.plan: CiPlan | None = None
        self.baseline: CiRun | None = None
        self.commit_summary = ""
        self.violation_paths: list[str] = []

    # -- plumbing -------------------------------------------------------------------------------------------
    def event(self, stage: str, kind: str, data: dict[str, Any], blob: str | None = None) -> None:
        self.recorder.event(stage, kind, data, blob.encode("utf-8") if blob is not None else None)

    def checkpoint(self, stage: str) -> None:
        reason = self.recorder.should_stop()
        if reason:
            raise StopRequested(f"stopped before {stage}: {reason}")

    def timed(self, stage: str, started: float) -> int:
        elapsed = int((time.monotonic() - started) * 1000)
        self.timings.stages[stage] = self.timings.stages.get(stage, 0) + elapsed
        return elapsed

    # -- the attempt ----------------------------------------------------------------------------------------
    def run(self) -> PhaseOutcome:
        try:
            return self._run()
        except StopRequested as stop:
            self._reset()
            self.event("finalize", "stopped", {"reason": str(stop)})
            return self._outcome(OutcomeKind.ABANDONED, str(stop))
        except BudgetExhausted as exhausted:
            self._reset()
            self.event("budget", "exhausted", {"cap": exhausted.cap, "detail": str(exhausted)})
            self.summary["budget_exhausted"] = exhausted.cap
            return self._outcome(
                OutcomeKind.FAILED, f"budget_exhausted: {exhausted}", run_failure_reason="budget_exhausted"
            )
        except ProviderError as error:
            self._reset()
            return self._provider_failure(error)

    def _run(self) -> PhaseOutcome:
        existing = self._prepare_workspace()
        if existing:
            return self._outcome(OutcomeKind.COMPLETE, "already committed", commit_sha=existing)
        self.checkpoint("baseline")
        self._baseline()
        self.checkpoint("context")
        context = self._context()
        estimate, max_tokens = self._budget(context)
        self.checkpoint("builder")
        response = self._builder(context, max_tokens)
        self._estimation(estimate, max_tokens, response)
        parsed = self._parse(response)
        if parsed is not None:
            self._apply(parsed)
        evidence = self.evidence
        # A no-op answer only goes on to the tests and the auditor when the phase allows no-ops.
        if not evidence.parse_error and not evidence.apply_error and (evidence.changed_paths or self.spec.allow_noop):
            self._deliverables()
            if not self.evidence.missing_deliverables:
                self.checkpoint("ci")
                self._ci()
                if self._gates_pass_so_far():
                    self.checkpoint("audit")
                    self._audit()
        return self._finalize()

    # -- stages ---------------------------------------------------------------------------------------------
    def _prepare_workspace(self) -> str:
        started = time.monotonic()
        self.workspace.create()
        self.root = self.workspace.path
        commits = self.workspace.phase_commits()
        existing = next((commit.sha for commit in commits if commit.phase == self.spec.phase_id), "")
        self.start_sha, pristine = self._head_and_pristine()
        if not existing:
            target = commits[0].sha if commits else self.workspace.base_sha()
            # A reset walks the whole tree twice; a clean worktree already at the target needs none.
            if self.start_sha != target or not pristine:
                self.workspace.reset_to(target)
                self.start_sha = target
        self.event(
            "workspace",
            "ready",
            {
                "head": self.start_sha,
                "branch": self.workspace.branch,
                "already_committed": existing or "",
                "ms": self.timed("workspace", started),
            },
        )
        return existing or ""

    def _artifacts(self) -> Path:
        base = Path(self.spec.artifacts_dir) if self.spec.artifacts_dir else self.workspace.workspaces_dir / "artifacts"
        return base / f"run-{self.spec.run_id}" / f"{self.spec.phase_id}-{self.spec.history.attempt_count + 1}"

    def _cache_dir(self) -> Path:
        return Path(self.spec.cache_dir) if self.spec.cache_dir else self.workspace.workspaces_dir / "baselines"

    def _baseline(self) -> None:
        started = time.monotonic()
        self.plan = resolve_test_plan(self.root, self.spec.ci, self.spec.default_test_command)
        if self.spec.ci.skip or not self.plan.command:
            self.event("baseline", "skipped", {"source": self.plan.source, "reason": "no test command"})
            return
        cache = BaselineCache(self._cache_dir())
        cached = cache.get(self.start_sha, self.plan)
        was_cached = cached is not None
        if cached is None:
            cached = run_tests(
                root=self.root,
                plan=self.plan,
                ci=self.spec.ci,
                artifacts_dir=self._artifacts(),
                label="baseline",
                commit=self.start_sha,
            )
            self.timings.ci_ms += cached.duration_ms
            cache.put(self.start_sha, self.plan, cached)
            self._remove_leftovers(keep=set())
        self.baseline = cached
        toolchain = self.plan.toolchain
        self.event(
            "baseline",
            "ready",
            {
                "cached": was_cached,
                "source": self.plan.source,
                "toolchain": None
                if toolchain is None
                else {
                    "language": toolchain.language,
                    "manager": toolchain.manager,
                    "confidence": toolchain.confidence,
                    "reason": toolchain.reason,
                },
                "run": cached.summary(),
                "failing": sorted(cached.failing())[:50],
                "ms": self.timed("baseline", started),
            },
        )

    def _context(self) -> ContextBundle:
        started = time.monotonic()
        bundle = build_context(self.spec, self.root)
        report = bundle.report()
        report["ms"] = self.timed("context", started)
        self.summary["context_tokens_avoided"] = bundle.tokens_avoided
        self.summary["context"] = {
            "tokens": bundle.tokens,
            "tokens_avoided": bundle.tokens_avoided,
            "files": len(bundle.files),
            "files_cut": sum(1 for f in bundle.files if f.cut_chars),
            "skipped": len(bundle.skipped),
        }
        self.event("context", "built", report)
        return bundle

    def _budget(self, context: ContextBundle) -> tuple[budgeting.Estimate, int]:
        spec = self.spec
        estimate = budgeting.estimate_tokens(
            category=spec.category,
            complexity=spec.complexity,
            deliverables=spec.deliverables,
            description=spec.description,
            root=self.root,
            context_quality="strong" if context.files else "some",
            overheads=spec.estimator_overheads,
        )
        max_tokens = spec.history.budget_override or estimate.selected
        self.summary["estimate"] = estimate.as_dict()
        self.summary["max_tokens"] = max_tokens
        self.event(
            "budget",
            "selected",
            {
                **estimate.as_dict(),
                "max_tokens": max_tokens,
                "override": spec.history.budget_override,
                "model": self.builder_model,
            },
        )
        return estimate, max_tokens

    def _builder(self, context: ContextBundle, max_tokens: int) -> LLMResponse:
        history = self.spec.history
        prompt = builder_prompt(
            self.spec,
            stable_context=context.stable,
            volatile_context=context.volatile,
            test_command=self.plan.command if self.plan else "",
            feedback=history.last_failure_reason,
            hint=history.builder_hint,
        )
        started = time.monotonic()
        response = self.llm.call("builder", prompt, self.builder_model, max_tokens)
        self.timed("builder", started)
        return response

    def _estimation(self, estimate: budgeting.Estimate, max_tokens: int, response: LLMResponse) -> None:
        used = response.usage.output_tokens or 0
        truncated = response.truncated
        self.recorder.estimation(
            Estimation(
                category=self.spec.category,
                complexity=self.spec.complexity,
                deliverable_count=estimate.deliverable_count,
                predicted=estimate.predicted,
                actual=used,
                selected_budget=estimate.selected,
                final_ceiling=max_tokens,
                phase_overhead=estimate.phase_overhead,
                truncated=truncated,
                model=response.model,
            )
        )
        escalation = budgeting.escalate_once(
            selected=estimate.selected,
            ceiling=max_tokens,
            used=used,
            truncated=truncated,
            already_escalated=self.spec.history.budget_override is not None,
        )
        self.evidence.truncated = truncated
        if escalation is None:
            return
        self.budget_override = escalation.new_max_tokens
        self.recorder.escalation(
            Escalation(
                "token_budget",
                escalation.reason,
                str(max_tokens),
                str(escalation.new_max_tokens),
                base_value=escalation.base,
                used=used,
            )
        )
        self.event(
            "budget",
            "escalated",
            {"reason": escalation.reason, "base": escalation.base, "from": max_tokens, "to": escalation.new_max_tokens},
        )

    def _parse(self, response: LLMResponse) -> ParseResult | None:
        started = time.monotonic()
        try:
            parsed = parse_edits(response.text, known_truncated=response.truncated)
        except EditParseError as error:
            self.evidence.parse_error = str(error)[:1500]
            self.event("parse", "error", {"error": self.evidence.parse_error, "ms": self.timed("parse", started)})
            return None
        self.evidence.operations = len(parsed.operations)
        self.event(
            "parse",
            "parsed",
            {
                "format": str(parsed.format),
                "truncated": parsed.truncated,
                "warnings": parsed.warnings[:20],
                "operations": [{"op": op.op, "path": op.path} for op in parsed.operations],
                "dropped_chars": len(parsed.dropped_text),
                "summary": parsed.summary,
                "ms": self.timed("parse", started),
            },
        )
        self.summary["parse"] = {
            "operations": len(parsed.operations),
            "truncated": parsed.truncated,
            "dropped_chars": len(parsed.dropped_text),
            "format": str(parsed.format),
        }
        self.commit_summary = parsed.summary or ""
        return parsed

    def _apply(self, parsed: ParseResult) -> ApplyResult | None:
        if not parsed.operations:
            self.event("apply", "skipped", {"reason": "no operations"})
            return None
        started = time.monotonic()
        spec = self.spec
        policy = ApplyPolicy(
            scope_paths=tuple(spec.scope_paths),
            deliverables=tuple(spec.deliverables),
            protected_paths=tuple(spec.protected_paths),
            allow_test_edits=spec.allow_test_edits,
        )
        result = governed_apply(self.root, parsed, policy=policy)
        data = result.to_dict()
        data.pop("diff")
        data["diff"] = fingerprint_text(result.diff)
        data["ms"] = self.timed("apply", started)
        self.event("apply", "applied" if result.applied else "refused", data, blob=result.diff or None)
        self.evidence.changed_paths = result.touched
        if result.violations:
            self.evidence.apply_error = "; ".join(f"{v.path or '(answer)'}: {v.reason}" for v in result.violations)[
                :2000
            ]
            self.evidence.apply_rules = sorted({str(v.rule) for v in result.violations})
            self.violation_paths = [v.path for v in result.violations]
        self.diff = result.diff
        self.summary["apply"] = {"touched": result.touched, "violations": len(result.violations)}
        return result

    def _deliverables(self) -> None:
        missing = missing_deliverables(self.root, self.spec.deliverables)
        self.evidence.missing_deliverables = missing
        self.event("deliverables", "checked", {"required": self.spec.deliverables, "missing": missing})

    def _ci(self) -> None:
        if self.baseline is None or self.plan is None:
            self.evidence.delta = CiDelta(skipped=True)
            self.event("ci", "skipped", {"reason": "no test command"})
            return
        started = time.monotonic()
        artifacts = self._artifacts()
        after = run_tests(
            root=self.root, plan=self.plan, ci=self.spec.ci, artifacts_dir=artifacts, label="after", commit=""
        )
        self.timings.ci_ms += after.duration_ms
        rerun = None
        newly_failing = sorted(after.failing() - self.baseline.failing())
        if newly_failing:
            # Once, and only the new failures: one that passes now is flaky, not caused by the change.
            plan = rerun_plan(self.plan, newly_failing, self.root)
            rerun = run_tests(root=self.root, plan=plan, ci=self.spec.ci, artifacts_dir=artifacts, label="rerun")
            self.timings.ci_ms += rerun.duration_ms
        self._remove_leftovers(keep=set(self.evidence.changed_paths))
        delta = compute_delta(self.baseline, after, rerun, self.spec.ci)
        delta.messages = {test: sanitize(message, self.root) for test, message in delta.messages.items()}
        delta.collection_errors = [sanitize(error, self.root) for error in delta.collection_errors]
        self.evidence.delta, self.evidence.after = delta, after
        if delta.coverage_dropped and not self.spec.ci.strict:
            # Only strict phases block on coverage; the others carry the warning in their trajectory.
            self.event("ci", "coverage_warning", {"before": delta.coverage_before, "after": delta.coverage_after})
        self.summary["ci"] = {key: value for key, value in delta.to_dict().items() if key != "messages"}
        self.event(
            "ci",
            "delta",
            {
                **self.summary["ci"],
                "after": after.summary(),
                "rerun": rerun.summary() if rerun else None,
                "ms": self.timed("ci", started),
            },
            blob=after.tail,
        )

    def _gates_pass_so_far(self) -> bool:
        verdict = finalize(Evidence(**{**self.evidence.__dict__, "verdict": AuditVerdict(True, True)}))
        return verdict.complete

    def _audit(self) -> None:
        started = time.monotonic()
        delta = self.evidence.delta
        ci_summary = (
            "tests not run"
            if delta is None or delta.skipped
            else (
                f"{delta.passed} passing; fixed {len(delta.fixed)}, still failing (pre-existing) "
                f"{len(delta.still_failing)}, new failures {len(delta.new_failures)}, flaky {len(delta.flaky)}"
            )
        )
        prompt = auditor_prompt(self.spec, diff=self.diff, ci_summary=ci_summary)
        response = self.llm.call("auditor", prompt, budgeting.model_for(self.spec, "auditor", escalation_level=0), 4096)
        verdict = parse_audit(response.text)
        self.evidence.verdict = verdict
        self.summary["audit"] = verdict.as_dict()
        self.event(
            "audit",
            "approved" if verdict.approved else "rejected",
            {**verdict.as_dict(), "ms": self.timed("audit", started)},
        )

    # -- the end --------------------------------------------------------------------------------------------
    def _finalize(self) -> PhaseOutcome:
        verdict = finalize(self.evidence)
        self.summary["gates"] = verdict.gates
        self.event("finalize", "complete" if verdict.complete else "incomplete", verdict.as_dict())
        if verdict.complete:
            return self._commit()
        return self._on_failure(verdict)

    def _commit(self) -> PhaseOutcome:
        started = time.monotonic()
        spec = self.spec
        message = f"{spec.phase_id}: {spec.name}"
        if self.commit_summary:
            message += f"\n\n{self.commit_summary}"
        sha = self.workspace.commit_phase(
            message, run=self.workspace.run, phase=spec.phase_id, attempt=spec.history.attempt_count + 1
        )
        if self.plan is not None and self.evidence.after is not None:
            # The tree just committed is the tree just tested: its results are the next phase's baseline.
            BaselineCache(self._cache_dir()).put(sha, self.plan, self.evidence.after)
        self.event("commit", "committed", {"sha": sha, "ms": self.timed("commit", started)})
        return self._outcome(OutcomeKind.COMPLETE, "all gates passed", commit_sha=sha)

    def _on_failure(self, verdict: FinalVerdict) -> PhaseOutcome:
        self._reset()
        primary = verdict.primary
        assert primary is not None
        failure = Failure(primary.category, verdict.feedback(), primary.detail, primary.patch_failure)
        mitigation = advice = None
        if not stuck_reason(self.spec, failure.fingerprint):
            mitigation = self._hardening(failure)
            if mitigation is None and doctor_allowed(self.spec):
                advice = self._doctor(failure)
        decision = decide(
            spec=self.spec,
            failure=failure,
            mitigation=mitigation,
            advice=advice,
            can_escalate_model=budgeting.can_escalate_model(self.spec),
        )
        return self._decided(decision, failure)

    def _hardening(self, failure: Failure) -> Mitigation | None:
        delta = self.evidence.delta
        text = "\n".join(
            [failure.feedback, self.evidence.apply_error, self.evidence.after.tail if self.evidence.after else ""]
        )
        info = FailureInfo(
            text=text,
            root=self.root,
            scope_paths=self.spec.scope_paths + self.spec.deliverables,
            violation_rules=self.evidence.apply_rules,
            violation_paths=self.violation_paths,
            no_tests_collected=bool(delta and delta.no_tests_collected),
            ci_working_directory=self.spec.ci.working_directory,
            ci_install_command=self.spec.ci.install_command,
        )
        mitigation = find_mitigation(info)
        if mitigation is None:
            return None
        overrides = mitigation.ci_overrides()
        if overrides:
            # A mechanical fix: the next attempt runs its CI with it (build_phase_spec applies ci_overrides).
            self.summary["ci_overrides"] = {**self.spec.history.ci_overrides, **overrides}
        avoided = DOCTOR_TOKENS_ESTIMATE if doctor_allowed(self.spec) else 0
        self.recorder.hardening(
            pattern_id=mitigation.pattern_id,
            mitigated=True,
            doctor_tokens_avoided=avoided,
            detail=mitigation.detail[:500],
        )
        self.summary["hardening"] = {"pattern_id": mitigation.pattern_id, "actions": mitigation.actions}
        self.event(
            "hardening",
            mitigation.pattern_id,
            {
                "hint": mitigation.hint,
                "detail": mitigation.detail,
                "actions": mitigation.actions,
                "doctor_tokens_avoided": avoided,
            },
        )
        return mitigation

    def _doctor(self, failure: Failure) -> DoctorAdvice | None:
        prompt = doctor_prompt(self.spec, failure=failure.feedback, diff=self.diff)
        try:
            response = self.llm.call(
                "doctor", prompt, budgeting.model_for(self.spec, "doctor", escalation_level=0), 2048
            )
        except BudgetExhausted as exhausted:
            self.event("doctor", "skipped", {"reason": str(exhausted)})
            return None
        self.doctor_called = True
        advice = parse_doctor(response.text)
        tokens = (response.usage.input_tokens or 0) + (response.usage.output_tokens or 0)
        self.recorder.doctor_outcome(
            action=advice.action if advice else "unparseable",
            confidence=advice.confidence if advice else 0.0,
            parsed=advice is not None,
            tokens=tokens,
        )
        self.summary["doctor"] = advice.as_dict() if advice else {"action": "unparseable"}
        self.event("doctor", advice.action if advice else "unparseable", self.summary["doctor"])
        return advice

    def _decided(self, decision: Decision, failure: Failure) -> PhaseOutcome:
        if decision.escalate_model:
            upper = budgeting.model_for(self.spec, "builder", escalation_level=self.spec.history.escalation_level + 1)
            self.recorder.escalation(Escalation("model", "repeated_failure", self.builder_model, upper))
        self.summary["decision"] = {
            "kind": decision.kind.value,
            "source": decision.source,
            "escalate_model": decision.escalate_model,
            "replan": decision.replan,
        }
        self.summary["failure"] = {"category": failure.category, "fingerprint": failure.fingerprint}
        self.event(
            "policy",
            decision.kind.value,
            {**self.summary["decision"], "reason": decision.reason[:2000], "hint": decision.builder_hint[:2000]},
        )
        return self._outcome(
            decision.kind,
            decision.reason[:4000],
            failure_fingerprint=failure.fingerprint,
            builder_hint=decision.builder_hint,
            escalate_model=decision.escalate_model,
            replan=decision.replan,
            patch_failure=failure.patch_failure,
            run_failure_reason=decision.run_failure_reason,
        )

    def _provider_failure(self, error: ProviderError) -> PhaseOutcome:
        kind = type(error).__name__
        detail = f"{kind}: {error.message}"[:1000]
        self.event(
            "provider", "error", {"type": kind, "message": error.message[:1000], "status_code": error.status_code}
        )
        if kind in INFRA_ERRORS:
            opened = False
            if self.circuit is not None:
                opened = self.circuit.record_failure(getattr(self.provider, "name", self.spec.provider), detail)
            self.summary["infra"] = {"error": kind, "circuit_opened": opened}
            return self._outcome(OutcomeKind.ABANDONED, f"infrastructure: {detail}")
        self.summary["provider_error"] = kind
        return self._outcome(OutcomeKind.FAILED, f"provider: {detail}", run_failure_reason="environment")

    def _head_and_pristine(self) -> tuple[str, bool]:
        """HEAD and whether the tree has no change, untracked or ignored file: one git call for both."""
        status = git(self.root, "status", "--porcelain=v2", "--branch", "--untracked-files=all", "--ignored")
        lines = status.splitlines()
        head = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), "")
        return head, not any(not line.startswith("#") for line in lines)

    def _reset(self) -> None:
        if self.start_sha and self.root != Path():
            self.workspace.reset_to(self.start_sha)

    def _remove_leftovers(self, *, keep: set[str]) -> None:
        """Files the test run created in the worktree must not end up in the phase commit."""
        untracked = git(self.root, "ls-files", "--others", "--exclude-standard", "-z")
        for name in untracked.split("\0"):
            if name and name not in keep:
                (self.root / name).unlink(missing_ok=True)

    def _outcome(self, kind: OutcomeKind, reason: str, **fields: Any) -> PhaseOutcome:
        self.timings.llm_ms = self.llm.llm_ms
        self.summary["timings"] = self.timings.summary()
        self.summary["tokens"] = {"input": self.ledger.input_tokens, "output": self.ledger.output_tokens}
        return PhaseOutcome(
            kind=kind,
            reason=reason,
            budget_override=self.budget_override,
            doctor_called=self.doctor_called,
            input_tokens=self.ledger.input_tokens,
            output_tokens=self.ledger.output_tokens,
            cost_usd=f"{self.ledger.cost:.6f}",
            model=self.builder_model,
            diff=self.diff,
            summary=self.summary,
            **fields,
        )
