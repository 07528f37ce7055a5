"""``runs.execution``: claimed phases run through the engine end to end, with the database and telemetry."""

from __future__ import annotations

import json
import sys
import zlib

import pytest

from runs.engine.gitrepo import init_repository
from runs.engine.outcome import OutcomeKind
from runs.engine.providers import LLMResponse, Overloaded, ScriptedProvider, Usage
from runs.engine.spec import PhaseSpec
from runs.execution import build_phase_spec, circuit_breaker, execute_claim, provider_from_settings
from runs.models import AttemptEvent, Phase, PhaseState, RunFailureReason, RunState
from runs.services.control import run_cancel
from runs.services.leases import phase_claim
from runs.services.plan import plan_import
from tests.factories import make_project

pytestmark = pytest.mark.django_db
PYTEST = f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {sys.executable} -m pytest -q -p no:cacheprovider"
MUL = "def mul(a, b):\n    return a * b\n"
TEST_MUL = "from calc.mul import mul\n\n\ndef test_mul():\n    assert mul(3, 4) == 12\n"
APPROVE = json.dumps({"approved": True, "issues": [], "summary": "ok"})
PLAN = {
    "name": "calc",
    "goal": "multiplication",
    "tiers": [{"id": "t", "name": "T"}],
    "phases": [
        {
            "id": "p1",
            "tier": "t",
            "name": "Add mul",
            "category": "backend",
            "complexity": "low",
            "description": "Add calc.mul.mul(a, b).",
            "scope": {
                "paths": ["calc/mul.py", "tests/test_mul.py"],
                "deliverables": ["calc/mul.py", "tests/test_mul.py"],
            },
        }
    ],
}


def answer(text: str, *, output_tokens: int = 200, stop: str = "end_turn", request_id: str | None = None):
    return LLMResponse(
        text=text,
        usage=Usage(input_tokens=900, output_tokens=output_tokens),
        stop_reason=stop,
        model="claude-haiku-4-5",
        request_id=request_id,
        latency_ms=3,
        provider="scripted",
    )


def operations(*ops: tuple[str, str]) -> str:
    return "\n".join(json.dumps({"op": "write", "path": path, "content": content}) for path, content in ops)


GOOD = operations(("calc/mul.py", MUL), ("tests/test_mul.py", TEST_MUL))


@pytest.fixture(autouse=True)
def _no_task_queue(settings):
    settings.AUTOPACK = {**settings.AUTOPACK, "ENQUEUE_TASKS": False}


@pytest.fixture
def run(tmp_path):
    repo = tmp_path / "repo"
    init_repository(
        repo,
        files={
            "calc/__init__.py": "",
            "tests/__init__.py": "",
            "tests/test_calc.py": "def test_ok():\n    assert True\n",
        },
    )
    project = make_project("calc", repository_path=str(repo), default_test_command=PYTEST)
    return plan_import(project=project, document=PLAN, source_name="plan.json", start=True).run


def claim_and_execute(run, provider):
    claim = phase_claim(worker="test-worker", runs=[run.pk])
    assert claim is not None
    return claim, execute_claim(claim, worker="test-worker", provider=provider)


def test_a_claimed_phase_is_committed_and_its_trajectory_and_telemetry_are_recorded(run):
    from telemetry.models import LlmUsageEvent, TokenEstimationEvent

    claim, outcome = claim_and_execute(run, ScriptedProvider([answer(GOOD, request_id="req_1"), answer(APPROVE)]))
    phase = Phase.objects.get(pk=claim.phase_id)
    assert outcome.kind == OutcomeKind.COMPLETE and phase.state == PhaseState.COMPLETE
    assert phase.commit_sha == outcome.commit_sha
    run.refresh_from_db()
    assert run.state == RunState.COMPLETE and run.tokens_used == 2 * 900 + 2 * 200
    events = list(AttemptEvent.objects.filter(attempt_id=claim.attempt_id).order_by("seq"))
    stages = [f"{event.stage}:{event.kind}" for event in events]
    assert stages[0] == "workspace:ready" and stages[-1] == "commit:committed"
    prompt = next(event for event in events if (event.stage, event.kind) == ("builder", "prompt"))
    assert "Add calc.mul.mul(a, b)." in zlib.decompress(bytes(prompt.blob)).decode()
    assert prompt.data["user"]["sha256"]
    assert LlmUsageEvent.objects.filter(run_id=run.pk).count() == 2
    assert TokenEstimationEvent.objects.filter(run_id=run.pk, truncated=False).count() == 1


def test_an_escalated_budget_is_persisted_and_used_by_the_next_claim(run):
    cut = operations(("calc/mul.py", MUL)) + '\n{"op": "write", "path": "tests/test_mul.py", "content": "fr'
    _, first = claim_and_execute(run, ScriptedProvider([answer(cut, output_tokens=8192, stop="max_tokens")]))
    phase = Phase.objects.get(run=run)
    assert first.kind == OutcomeKind.RETRY and phase.state == PhaseState.QUEUED
    assert phase.budget_override == 10240  # in the database: survives a worker restart
    assert build_phase_spec(phase.pk).history.budget_override == 10240
    from telemetry.models import BudgetEscalationEvent, TokenEstimationEvent

    escalation = BudgetEscalationEvent.objects.get(run_id=run.pk)
    assert (escalation.reason, escalation.from_budget, escalation.to_budget) == ("truncated", 8192, 10240)
    assert TokenEstimationEvent.objects.get(run_id=run.pk).truncated
    provider = ScriptedProvider([answer(GOOD), answer(APPROVE)])
    _, second = claim_and_execute(run, provider)
    assert second.kind == OutcomeKind.COMPLETE and provider.calls[0]["max_tokens"] == 10240


def test_an_exhausted_run_budget_fails_the_run_with_the_typed_reason(run):
    run.token_cap = 5000
    run.save(update_fields=["token_cap"])
    provider = ScriptedProvider([])
    claim, outcome = claim_and_execute(run, provider)
    run.refresh_from_db()
    assert outcome.run_failure_reason == "budget_exhausted" and provider.calls == []
    assert Phase.objects.get(pk=claim.phase_id).state == PhaseState.FAILED
    assert (run.state, run.failure_reason) == (RunState.FAILED, RunFailureReason.BUDGET_EXHAUSTED)


def test_a_run_cancelled_during_the_attempt_stops_it_at_the_next_stage_boundary(run):
    claim = phase_claim(worker="test-worker", runs=[run.pk])
    run_cancel(run_id=run.pk, actor="user:test")
    provider = ScriptedProvider([answer(GOOD)])
    outcome = execute_claim(claim, worker="test-worker", provider=provider)
    assert outcome.kind == OutcomeKind.ABANDONED and provider.calls == []
    assert Phase.objects.get(pk=claim.phase_id).state == PhaseState.SKIPPED


def test_infrastructure_failures_give_the_phase_back_and_open_the_circuit(run):
    breaker = circuit_breaker()
    for _ in range(3):
        _, outcome = claim_and_execute(run, ScriptedProvider([Overloaded("529 overloaded", status_code=529)]))
        assert outcome.kind == OutcomeKind.ABANDONED
    assert breaker.is_open("scripted") and not breaker.is_open("anthropic")
    phase = Phase.objects.get(run=run)
    assert phase.state == PhaseState.QUEUED and phase.attempts_since_requeue == 0  # not judged attempts


def test_the_spec_survives_a_trip_through_json_for_remote_executors(run):
    spec = build_phase_spec(Phase.objects.get(run=run).pk)
    again = PhaseSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    assert again.ci.command == "" and again.default_test_command == PYTEST
    assert again.deliverables == ["calc/mul.py", "tests/test_mul.py"]


def test_a_run_can_name_a_replayed_cassette_as_its_provider(run, tmp_path, settings):
    cassette = tmp_path / "c.jsonl"
    cassette.write_text("")
    run.model_mapping = {"provider": {"name": "replay", "cassette": str(cassette)}}
    assert provider_from_settings(run=run).name == "replay"
    with pytest.raises(ValueError, match="unknown LLM provider"):
        provider_from_settings(name="carrier-pigeon")


def test_the_claimer_can_ask_whether_a_runs_provider_circuit_is_open(run):
    from runs.execution import provider_circuit_open, provider_name_for_run

    assert provider_name_for_run(run) == "anthropic" and not provider_circuit_open(run)
    breaker = circuit_breaker()
    for _ in range(breaker.threshold):
        breaker.record_failure("anthropic", "529 overloaded")
    assert provider_circuit_open(run)
    run.model_mapping = {"provider": {"name": "replay", "cassette": "demo/cassette.jsonl"}}
    assert not provider_circuit_open(run)


def test_a_refused_write_is_retried_with_the_violation_and_recorded_as_hardening_telemetry(run):
    from telemetry.models import BudgetEscalationEvent, FailureHardeningEvent, PhaseOutcomeEvent

    escaping = operations(("calc/mul.py", MUL), ("tests/test_mul.py", TEST_MUL), ("setup.py", "x = 1\n"))
    claim, outcome = claim_and_execute(run, ScriptedProvider([answer(escaping)]))
    phase = Phase.objects.get(pk=claim.phase_id)
    assert outcome.kind == OutcomeKind.RETRY and phase.state == PhaseState.QUEUED
    assert "setup.py is outside the phase scope" in phase.last_failure_reason
    assert "Only write to" in phase.builder_hint
    assert FailureHardeningEvent.objects.get(run_id=run.pk).pattern == "scope_mismatch"
    assert PhaseOutcomeEvent.objects.filter(run_id=run.pk, outcome="retry").count() == 1
    assert not BudgetEscalationEvent.objects.filter(run_id=run.pk).exists()
    run.refresh_from_db()
    assert run.patch_failures_count == 1
