"""``runs.execution``: claimed phases run through the engine end to end, with the database and telemetry."""

from __future__ import annotations

import json
import sys
import zlib

import pytest

from runs.engine.budget import phase_overhead
from runs.engine.gitrepo import init_repository
from runs.engine.outcome import OutcomeKind
from runs.engine.providers import LLMResponse, Overloaded, ScriptedProvider, Usage
from runs.engine.recorder import Escalation
from runs.engine.spec import PhaseSpec
from runs.execution import (
    RESEARCH_NOTE,
    DjangoRecorder,
    build_phase_spec,
    circuit_breaker,
    execute_claim,
    provider_from_settings,
)
from runs.models import Attempt, AttemptEvent, AttemptStatus, Phase, PhaseState, RunFailureReason, RunState
from runs.services.control import run_cancel, run_pause
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


def enqueued(func: str) -> list[tuple]:
    """The arguments of the tasks named ``func`` waiting in the ORM broker."""
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    tasks = [SignedPackage.loads(row.payload) for row in OrmQ.objects.all()]
    return [tuple(task["args"]) for task in tasks if task["func"] == func]


def test_a_claimed_phase_is_committed_and_its_trajectory_and_telemetry_are_recorded(
    run, settings, django_capture_on_commit_callbacks
):
    from research.models import GoalDriftCheck
    from telemetry.models import LlmUsageEvent, TokenEstimationEvent

    provider = ScriptedProvider([answer(GOOD, request_id="req_1"), answer(APPROVE)])
    with django_capture_on_commit_callbacks(execute=True):
        claim, outcome = claim_and_execute(run, provider)
    phase = Phase.objects.get(pk=claim.phase_id)
    assert outcome.kind == OutcomeKind.COMPLETE and phase.state == PhaseState.COMPLETE
    assert phase.commit_sha == outcome.commit_sha
    run.refresh_from_db()
    assert run.state == RunState.COMPLETE and run.tokens_used == 2 * 900 + 2 * 200
    events = list(AttemptEvent.objects.filter(attempt_id=claim.attempt_id).order_by("seq"))
    stages = [f"{event.stage}:{event.kind}" for event in events]
    assert stages[0] == "workspace:ready" and stages[-1] == "commit:committed"
    prompt = next(event for event in events if (event.stage, event.kind) == ("builder", "prompt"))
    text = zlib.decompress(bytes(prompt.blob)).decode()
    assert "Add calc.mul.mul(a, b)." in text
    assert "## Run goal (keep every change in service of it)\nmultiplication" in text  # the goal anchor
    assert prompt.data["user"]["sha256"]
    assert LlmUsageEvent.objects.filter(run_id=run.pk).count() == 2
    assert TokenEstimationEvent.objects.filter(run_id=run.pk, truncated=False).count() == 1
    drift = GoalDriftCheck.objects.get(attempt_id=claim.attempt_id)  # advisory, recorded once the diff exists
    assert drift.embedder and -1.0 <= drift.similarity <= 1.0
    if "orm" in settings.Q_CLUSTER:
        assert enqueued("research.tasks.attempt_finished") == [(claim.attempt_id,)]


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
    assert escalation.output_tokens_used == 8192
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


def test_each_failed_attempt_records_its_error_so_different_failures_are_different_patterns(run):
    from telemetry.models import PhaseOutcomeEvent

    escaping = operations(("calc/mul.py", MUL), ("tests/test_mul.py", TEST_MUL), ("setup.py", "x = 1\n"))
    claim_and_execute(run, ScriptedProvider([answer(escaping)]))
    claim_and_execute(run, ScriptedProvider([answer(operations())]))

    rows = list(PhaseOutcomeEvent.objects.filter(run_id=run.pk).exclude(outcome="complete").order_by("id"))
    assert len(rows) == 2
    assert "setup.py is outside the phase scope" in rows[0].error_text
    assert all(row.error_signature for row in rows)
    assert rows[0].error_signature != rows[1].error_signature


def test_an_escalation_records_the_tokens_actually_used_not_the_escalation_base(run):
    from telemetry.models import BudgetEscalationEvent

    phase = Phase.objects.get(run=run)
    recorder = DjangoRecorder(phase.pk, phase.claim_epoch, None)
    # 95 % of an 8,192 ceiling used: the escalation multiplies the ceiling (its base), not the 7,900 used.
    recorder.escalation(Escalation("token_budget", "high_utilisation", "8192", "10240", base_value=8192, used=7900))
    event = BudgetEscalationEvent.objects.get(run_id=run.pk)
    assert (event.from_budget, event.to_budget, event.output_tokens_used) == (8192, 10240, 7900)


def test_a_paused_run_lets_the_executing_attempt_finish(run):
    claim = phase_claim(worker="test-worker", runs=[run.pk])
    run_pause(run_id=run.pk, actor="user:test")
    recorder = DjangoRecorder(claim.phase_id, claim.claim_epoch, claim.attempt_id)
    assert recorder.should_stop() == ""  # pause only stops new claims
    outcome = execute_claim(claim, worker="test-worker", provider=ScriptedProvider([answer(GOOD), answer(APPROVE)]))
    assert outcome.kind == OutcomeKind.COMPLETE, outcome.reason
    assert Phase.objects.get(pk=claim.phase_id).state == PhaseState.COMPLETE
    run_cancel(run_id=run.pk, actor="user:test")
    assert DjangoRecorder(claim.phase_id, claim.claim_epoch, claim.attempt_id).should_stop() == "lease_lost"


@pytest.mark.parametrize("calibrated", [True, False], ids=["calibrated", "uncalibrated"])
def test_the_token_estimator_uses_the_applied_calibration_when_there_is_one(run, calibrated):
    from telemetry.models import EstimatorCalibration

    if calibrated:
        EstimatorCalibration.objects.create(applied=False, damping=0.5, overheads={"backend/low": 99}, sample_size=9)
        EstimatorCalibration.objects.create(applied=True, damping=0.5, overheads={"backend/low": 1234}, sample_size=9)
    expected = 1234 if calibrated else phase_overhead("backend", "low")
    phase = Phase.objects.get(run=run)
    assert build_phase_spec(phase.pk).estimator_overheads == ({"backend/low": 1234} if calibrated else {})
    run.token_cap = 5000  # the attempt stops at the budget check, after the estimate, before any call
    run.save(update_fields=["token_cap"])
    claim, _ = claim_and_execute(run, ScriptedProvider([]))
    selected = AttemptEvent.objects.get(attempt_id=claim.attempt_id, stage="budget", kind="selected")
    assert selected.data["phase_overhead"] == expected


def test_a_replayed_run_ignores_calibrations_so_its_requests_match_the_cassette(run):
    from telemetry.models import EstimatorCalibration

    EstimatorCalibration.objects.create(applied=True, damping=0.5, overheads={"backend/low": 1234}, sample_size=9)
    run.model_mapping = {"provider": {"name": "replay", "cassette": "demo/cassette.jsonl"}}
    run.save(update_fields=["model_mapping"])
    assert build_phase_spec(Phase.objects.get(run=run).pk).estimator_overheads == {}


def test_a_phase_whose_tests_run_in_the_wrong_directory_is_hardened_and_passes_on_the_next_attempt(tmp_path):
    repo = tmp_path / "repo"
    # The package lives under backend/; the project's tests run from the repository root.
    init_repository(repo, files={"test_smoke.py": "def test_ok():\n    assert True\n", "backend/calc/__init__.py": ""})
    project = make_project("backend", repository_path=str(repo), default_test_command=PYTEST)
    plan = json.loads(json.dumps(PLAN))
    plan["phases"][0]["scope"] = {
        "paths": ["backend/"],
        "deliverables": ["backend/calc/mul.py", "backend/tests/test_mul.py"],
    }
    run = plan_import(project=project, document=plan, source_name="plan.json", start=True).run
    good = operations(("backend/calc/mul.py", MUL), ("backend/tests/test_mul.py", TEST_MUL))
    provider = ScriptedProvider([answer(good), answer(good), answer(APPROVE)])
    first_claim, first = claim_and_execute(run, provider)
    assert first.kind == OutcomeKind.RETRY and "No module named 'calc'" in first.reason
    stored = Attempt.objects.get(pk=first_claim.attempt_id)
    assert stored.summary["ci_overrides"] == {"working_directory": "backend"}  # phase_finish stored it
    assert stored.summary["hardening"]["pattern_id"] == "wrong_working_directory"
    spec = build_phase_spec(first_claim.phase_id)
    assert spec.ci.working_directory == "backend" and spec.history.ci_overrides == {"working_directory": "backend"}
    second_claim, second = claim_and_execute(run, provider)
    assert second.kind == OutcomeKind.COMPLETE, second.reason
    assert [call["role"] for call in provider.calls] == ["builder", "builder", "auditor"]  # no Doctor
    assert not Phase.objects.get(pk=second_claim.phase_id).doctor_calls
    assert Attempt.objects.get(pk=second_claim.attempt_id).summary["ci_overrides"] == {"working_directory": "backend"}


def test_an_abandoned_attempt_does_not_hide_the_ci_overrides_of_the_last_judged_one(run):
    phase = Phase.objects.get(run=run)
    for number, status, summary in [
        (1, AttemptStatus.FAILED, {"ci_overrides": {"working_directory": "backend", "junk": "x"}}),
        (2, AttemptStatus.ABANDONED, {}),
        (3, AttemptStatus.RUNNING, {}),
    ]:
        Attempt.objects.create(phase=phase, number=number, claim_epoch=number, status=status, summary=summary)
    assert build_phase_spec(phase.pk).history.ci_overrides == {"working_directory": "backend"}


RESEARCH_PLAN = {
    "name": "calc",
    "goal": "multiplication",
    "tiers": [{"id": "t", "name": "T"}],
    "phases": [
        {
            "id": "r1",
            "tier": "t",
            "name": "How is calc tested?",
            "category": "research",
            "complexity": "low",
            "description": "How are the calc package's functions tested?",
            # The plan validator wants a deliverable even here; the session's report is the real output.
            "scope": {"paths": [], "deliverables": ["RESEARCH.md"]},
        },
        {**PLAN["phases"][0], "id": "p1"},
    ],
}


def test_a_research_phase_stores_a_report_that_later_phases_see_in_their_context(tmp_path):
    from research.models import ResearchSession

    repo = tmp_path / "repo"
    init_repository(
        repo, files={"README.md": "calc: arithmetic helpers, tested with pytest.\n", "calc/__init__.py": ""}
    )
    project = make_project("calc", repository_path=str(repo), default_test_command=PYTEST)
    run = plan_import(project=project, document=RESEARCH_PLAN, source_name="plan.json", start=True).run
    provider = ScriptedProvider([])
    claim, outcome = claim_and_execute(run, provider)
    assert outcome.kind == OutcomeKind.COMPLETE and provider.calls == []  # no Builder for research
    session = ResearchSession.objects.get(phase_id=claim.phase_id)
    assert outcome.summary["research"]["session_id"] == session.pk and session.report
    event = AttemptEvent.objects.get(attempt_id=claim.attempt_id, stage="research", kind="report")
    assert zlib.decompress(bytes(event.blob)).decode() == session.report
    later = Phase.objects.get(run=run, phase_id="p1")
    spec = build_phase_spec(later.pk)
    assert f"(research session #{session.pk})" in spec.research
    from runs.engine.context import build_context

    assert "Research report (from this run's research phases)" in build_context(spec, repo).stable


def test_a_category_that_keeps_failing_gets_an_advisory_research_note_in_the_builder_context(run):
    phase = Phase.objects.get(run=run)
    assert RESEARCH_NOTE not in build_phase_spec(phase.pk, with_insights=True).insights
    for number in (1, 2, 3):
        Attempt.objects.create(phase=phase, number=number, claim_epoch=number, status=AttemptStatus.FAILED)
    assert RESEARCH_NOTE in build_phase_spec(phase.pk, with_insights=True).insights
    assert build_phase_spec(phase.pk, with_insights=False).insights == ""  # replays keep their prompts


def test_a_run_branches_from_the_commit_recorded_at_start_even_if_main_moved_since(run):
    # A replayed clone carries the original's base_commit: it must start from that commit, not from main's tip.
    import subprocess

    repo = run.project.repository_path
    git = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", "-C", repo]
    assert run.base_commit
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "main moves on"], check=True)
    claim, outcome = claim_and_execute(run, ScriptedProvider([answer(GOOD), answer(APPROVE)]))
    assert outcome.kind == OutcomeKind.COMPLETE
    parent = subprocess.run([*git, "rev-parse", f"{outcome.commit_sha}^"], capture_output=True, text=True, check=True)
    assert parent.stdout.strip() == run.base_commit


@pytest.mark.postgres
def test_the_prepared_spec_query_reads_what_the_orm_query_reads(run):
    from django.db import connection

    from research.models import ResearchSession
    from runs.execution import _spec_phase_orm, _spec_phase_prepared

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")
    phase = Phase.objects.filter(run=run).order_by("sequence").first()
    Attempt.objects.create(phase=phase, number=1, claim_epoch=1, status=AttemptStatus.FAILED, summary={"n": 1})
    Attempt.objects.create(phase=phase, number=2, claim_epoch=2, status=AttemptStatus.FAILED, summary={"n": 2})
    Attempt.objects.create(phase=phase, number=3, claim_epoch=3, status=AttemptStatus.RUNNING, summary={"n": 3})

    def fields(instance):
        return {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}

    for _ in range(2):
        expected, actual = _spec_phase_orm(phase.pk), _spec_phase_prepared(phase.pk)
        assert fields(actual[0]) == fields(expected[0])
        assert fields(actual[0].run) == fields(expected[0].run)
        assert fields(actual[0].run.project) == fields(expected[0].run.project)
        assert actual[1:] == expected[1:]
        assert actual[1] == {"n": 2}  # the last judged attempt's summary, not the running one's
        ResearchSession.objects.create(project=run.project, question="why?", status="complete", run=run)
    assert _spec_phase_prepared(phase.pk)[2] is True
    with pytest.raises(Phase.DoesNotExist):
        _spec_phase_prepared(10**12)
