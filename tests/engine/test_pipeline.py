"""End-to-end attempts through the whole pipeline: real git worktrees, real pytest subprocesses, replayed LLM.

Each test drives one or more attempts of a phase the way the drain does (the outcome of one attempt feeds
the next attempt's history), without the database: ``runs.execution`` tests cover the Django side.

The model answers come from cassettes in ``tests/fixtures/cassettes/pipeline`` through ``ReplayProvider``, which
matches every request exactly: a change to a prompt, the context or the CI feedback makes these tests fail
loudly. The answers written in each test are what the cassettes hold; after an intended prompt change,
re-record them with ``AUTOPACK_RECORD_CASSETTES=1 pytest tests/engine/test_pipeline.py``.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

import pytest

from runs.engine.gitrepo import init_repository
from runs.engine.outcome import OutcomeKind, PhaseOutcome
from runs.engine.pipeline import run_attempt, workspace_for
from runs.engine.providers import LLMResponse, RecordingProvider, ReplayProvider, ScriptedProvider, Usage, read_cassette
from runs.engine.recorder import MemoryRecorder
from runs.engine.spec import Budgets, CiSpec, History, PhaseSpec
from runs.engine.workspace import git

PYTEST = f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {sys.executable} -m pytest -q -p no:cacheprovider"
CALC = "def add(a, b):\n    return a + b\n"
TEST_CALC = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
MUL_OK = "def mul(a, b):\n    return a * b\n"
MUL_BAD = "def mul(a, b):\n    return a + b\n"
TEST_MUL = "from calc.mul import mul\n\n\ndef test_mul():\n    assert mul(3, 4) == 12\n"
CASSETTES = Path(__file__).resolve().parent.parent / "fixtures" / "cassettes" / "pipeline"
RECORD = os.environ.get("AUTOPACK_RECORD_CASSETTES") == "1"
APPROVE = json.dumps({"approved": True, "issues": [], "summary": "looks right"})


def answer(text: str, *, output_tokens: int = 300, stop: str = "end_turn", model: str = "claude-sonnet-4-6"):
    return LLMResponse(
        text=text,
        usage=Usage(input_tokens=1000, output_tokens=output_tokens),
        stop_reason=stop,
        model=model,
        request_id=None,
        latency_ms=5,
        provider="scripted",
    )


def ndjson(*operations: dict) -> str:
    return "\n".join(json.dumps(op) for op in operations)


def write(path: str, content: str) -> dict:
    return {"op": "write", "path": path, "content": content}


@pytest.fixture
def llm(request):
    """``llm(answers)``: the provider for one attempt, replaying (or recording) its own cassette."""
    numbers = itertools.count(1)

    def provider(answers: list):
        path = CASSETTES / f"{request.node.name}-{next(numbers)}.jsonl"
        if RECORD:
            path.unlink(missing_ok=True)
            return RecordingProvider(ScriptedProvider(list(answers)), path)
        return ReplayProvider(path)

    return provider


def sent(provider) -> list[dict]:
    """The requests a provider answered, as the cassette holds them."""
    if isinstance(provider, RecordingProvider):
        return provider.inner.calls
    recorded = {
        (entry["fingerprint"], entry["occurrence"]): entry["request"] for entry in read_cassette(provider.cassette_path)
    }
    return [recorded[(call["fingerprint"], call["occurrence"])] for call in provider.calls]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    init_repository(path, files={"calc/__init__.py": CALC, "tests/__init__.py": "", "tests/test_calc.py": TEST_CALC})
    return path


def make_spec(repo: Path, tmp_path: Path, **overrides) -> PhaseSpec:
    values = dict(
        run_id=1,
        phase_pk=10,
        phase_id="p1",
        name="Add multiplication",
        description="Add calc.mul.mul(a, b).",
        category="backend",
        complexity="low",
        scope_paths=["calc/", "tests/"],
        deliverables=["calc/mul.py", "tests/test_mul.py"],
        acceptance_criteria=["mul(3, 4) == 12"],
        ci=CiSpec(command=PYTEST, timeout_seconds=60),
        repository_path=str(repo),
        branch="autopack/demo-1",
        artifacts_dir=str(tmp_path / "artifacts"),
        cache_dir=str(tmp_path / "cache"),
    )
    values.update(overrides)
    return PhaseSpec(**values)


def next_history(spec: PhaseSpec, outcome: PhaseOutcome) -> History:
    """What phase_finish persists for a retry, reduced to the fields the engine reads."""
    old = spec.history
    return History(
        attempt_number=old.attempt_number + 1,
        attempt_count=old.attempt_count + 1,
        max_attempts=old.max_attempts,
        revision_epoch=old.revision_epoch + int(outcome.replan),
        escalation_level=old.escalation_level + int(outcome.escalate_model),
        budget_override=outcome.budget_override if outcome.budget_override is not None else old.budget_override,
        builder_hint=outcome.builder_hint,
        last_failure_reason=outcome.reason,
        failure_fingerprints=[*old.failure_fingerprints, outcome.failure_fingerprint],
        phase_doctor_calls=old.phase_doctor_calls + int(outcome.doctor_called),
        run_doctor_calls=old.run_doctor_calls + int(outcome.doctor_called),
    )


def attempt(spec: PhaseSpec, tmp_path: Path, provider) -> tuple[PhaseOutcome, MemoryRecorder]:
    recorder = MemoryRecorder()
    outcome = run_attempt(
        spec, workspace=workspace_for(spec, tmp_path / "workspaces"), provider=provider, recorder=recorder
    )
    return outcome, recorder


def test_a_phase_that_passes_first_time_is_committed_on_the_run_branch(repo, tmp_path, llm):
    spec = make_spec(repo, tmp_path)
    provider = llm(
        [answer(ndjson(write("calc/mul.py", MUL_OK), write("tests/test_mul.py", TEST_MUL))), answer(APPROVE)]
    )
    outcome, recorder = attempt(spec, tmp_path, provider)
    assert outcome.kind == OutcomeKind.COMPLETE, outcome.reason
    files = git(repo, "show", "--name-only", "--format=", "autopack/demo-1").split()
    assert sorted(files) == ["calc/mul.py", "tests/test_mul.py"]
    assert outcome.commit_sha == git(repo, "rev-parse", "autopack/demo-1")
    stages = recorder.stages()
    for stage in (
        "workspace:ready",
        "baseline:ready",
        "context:built",
        "budget:selected",
        "builder:prompt",
        "builder:response",
        "parse:parsed",
        "apply:applied",
        "deliverables:checked",
        "ci:delta",
        "audit:approved",
        "finalize:complete",
        "commit:committed",
    ):
        assert stage in stages
    assert outcome.summary["ci"]["new_failures"] == []
    assert [call.role for call in recorder.calls] == ["builder", "auditor"]


def test_a_truncated_answer_is_salvaged_and_the_next_attempt_gets_an_escalated_budget(repo, tmp_path, llm):
    spec = make_spec(repo, tmp_path)
    cut = ndjson(write("calc/mul.py", MUL_OK)) + '\n{"op": "write", "path": "tests/test_mul.py", "content": "from'
    provider = llm([answer(cut, output_tokens=8192, stop="max_tokens")])
    first, recorder = attempt(spec, tmp_path, provider)
    assert first.kind == OutcomeKind.RETRY
    assert "tests/test_mul.py" in first.reason
    assert first.budget_override == 10240  # min(max(8192, 8192, 8192) × 1.25, 64,000)
    assert recorder.escalations[0].reason == "truncated"
    assert recorder.estimations[0].truncated
    retry = make_spec(repo, tmp_path, history=next_history(spec, first))
    provider = llm(
        [answer(ndjson(write("calc/mul.py", MUL_OK), write("tests/test_mul.py", TEST_MUL))), answer(APPROVE)]
    )
    second, recorder = attempt(retry, tmp_path, provider)
    assert second.kind == OutcomeKind.COMPLETE, second.reason
    assert sent(provider)[0]["max_tokens"] == 10240
    assert second.budget_override is None  # escalate once: never twice


def test_a_new_failure_twice_then_the_doctor_hint_leads_to_success(repo, tmp_path, llm):
    spec = make_spec(repo, tmp_path)
    broken = answer(ndjson(write("calc/mul.py", MUL_BAD), write("tests/test_mul.py", TEST_MUL)))
    first, recorder = attempt(spec, tmp_path, llm([broken]))
    assert first.kind == OutcomeKind.RETRY
    assert "test_mul" in first.reason and "assert 7 == 12" in first.reason
    delta = next(event["data"] for event in recorder.events if (event["stage"], event["kind"]) == ("ci", "delta"))
    assert delta["rerun"]["command"].endswith(" tests/test_mul.py::test_mul")  # only the new failure ran again
    assert delta["rerun"]["counts"] == {"failed": 1}
    assert not first.doctor_called  # never on the first failed attempt
    second_spec = make_spec(repo, tmp_path, history=next_history(spec, first))
    doctor = json.dumps(
        {
            "action": "retry_with_fix",
            "confidence": 0.9,
            "rationale": "adds instead of multiplying",
            "builder_hint": "mul must return a * b",
        }
    )
    provider = llm([broken, answer(doctor)])
    second, recorder = attempt(second_spec, tmp_path, provider)
    assert second.kind == OutcomeKind.RETRY and second.doctor_called
    assert second.builder_hint == "mul must return a * b"
    assert "assert 7 == 12" in sent(provider)[0]["messages"][0]["content"]  # the failure went back as feedback
    assert second.escalate_model  # the same failure twice climbs the model ladder
    third_spec = make_spec(repo, tmp_path, history=next_history(second_spec, second))
    provider = llm(
        [answer(ndjson(write("calc/mul.py", MUL_OK), write("tests/test_mul.py", TEST_MUL))), answer(APPROVE)]
    )
    third, _ = attempt(third_spec, tmp_path, provider)
    assert third.kind == OutcomeKind.COMPLETE, third.reason
    assert "mul must return a * b" in sent(provider)[0]["messages"][0]["content"]
    assert sent(provider)[0]["model"] == "claude-sonnet-4-6"  # haiku escalated one rung


def test_the_same_failure_three_times_blocks_the_phase(repo, tmp_path, llm):
    spec = make_spec(repo, tmp_path)
    broken = ndjson(write("calc/mul.py", MUL_BAD), write("tests/test_mul.py", TEST_MUL))
    unparseable_doctor = "I think the multiplication is wrong."
    outcomes = []
    for answers in ([broken], [broken, unparseable_doctor], [broken]):
        outcome, _ = attempt(spec, tmp_path, llm([answer(text) for text in answers]))
        outcomes.append(outcome)
        spec = make_spec(repo, tmp_path, history=next_history(spec, outcome))
    assert [o.kind for o in outcomes] == [OutcomeKind.RETRY, OutcomeKind.RETRY, OutcomeKind.BLOCKED]
    assert outcomes[1].doctor_called and outcomes[1].builder_hint == ""  # unparseable Doctor: retry, no hint
    assert outcomes[2].reason.startswith("stuck: the same failure 3 times")
    assert len({o.failure_fingerprint for o in outcomes}) == 1


def test_a_run_budget_too_small_for_the_call_ends_with_the_typed_reason(repo, tmp_path):
    spec = make_spec(repo, tmp_path, budgets=Budgets(run_token_cap=100_000, run_tokens_used=95_000))
    provider = ScriptedProvider([])
    outcome, recorder = attempt(spec, tmp_path, provider)
    assert outcome.kind == OutcomeKind.FAILED
    assert outcome.run_failure_reason == "budget_exhausted"
    assert outcome.reason.startswith("budget_exhausted: run_tokens")
    assert provider.calls == []  # checked before the call, never after
    assert "budget:exhausted" in recorder.stages()


def test_a_write_outside_the_scope_is_refused_and_retried_with_the_violation(repo, tmp_path, llm):
    spec = make_spec(repo, tmp_path)
    escaping = answer(
        ndjson(write("calc/mul.py", MUL_OK), write("tests/test_mul.py", TEST_MUL), write("setup.py", "print('hi')\n"))
    )
    first, recorder = attempt(spec, tmp_path, llm([escaping]))
    assert first.kind == OutcomeKind.RETRY and first.patch_failure
    assert "setup.py is outside the phase scope" in first.reason
    assert "scope" in first.builder_hint and "calc/" in first.builder_hint
    assert recorder.hardenings[0]["pattern_id"] == "scope_mismatch"
    assert not (repo / "setup.py").exists()
    retry = make_spec(repo, tmp_path, history=next_history(spec, first))
    provider = llm(
        [answer(ndjson(write("calc/mul.py", MUL_OK), write("tests/test_mul.py", TEST_MUL))), answer(APPROVE)]
    )
    second, _ = attempt(retry, tmp_path, provider)
    assert second.kind == OutcomeKind.COMPLETE
    assert "setup.py is outside the phase scope" in sent(provider)[0]["messages"][0]["content"]


def test_an_auditor_rejection_retries_with_the_issues_and_resets_the_worktree(repo, tmp_path, llm):
    spec = make_spec(repo, tmp_path)
    reject = json.dumps(
        {
            "approved": True,
            "issues": [
                {
                    "severity": "major",
                    "category": "correctness",
                    "description": "no negative numbers test",
                    "file_path": "tests/test_mul.py",
                    "line": 1,
                }
            ],
            "summary": "needs more tests",
        }
    )
    provider = llm([answer(ndjson(write("calc/mul.py", MUL_OK), write("tests/test_mul.py", TEST_MUL))), answer(reject)])
    outcome, _ = attempt(spec, tmp_path, provider)
    assert outcome.kind == OutcomeKind.RETRY
    assert "no negative numbers test" in outcome.reason
    worktree = workspace_for(spec, tmp_path / "workspaces").path
    assert not (worktree / "calc/mul.py").exists()


def test_a_cancel_at_a_stage_boundary_abandons_the_attempt(repo, tmp_path):
    spec = make_spec(repo, tmp_path)
    recorder = MemoryRecorder(stop_reason="cancelled")
    outcome = run_attempt(
        spec, workspace=workspace_for(spec, tmp_path / "workspaces"), provider=ScriptedProvider([]), recorder=recorder
    )
    assert outcome.kind == OutcomeKind.ABANDONED
    assert "cancelled" in outcome.reason


def test_a_collection_error_caused_by_the_change_is_retried_with_the_error(repo, tmp_path, llm):
    spec = make_spec(repo, tmp_path)
    broken_test = "import yaml_that_is_not_installed\n\n\ndef test_mul():\n    pass\n"
    provider = llm([answer(ndjson(write("calc/mul.py", MUL_OK), write("tests/test_mul.py", broken_test)))])
    outcome, recorder = attempt(spec, tmp_path, provider)
    assert outcome.kind == OutcomeKind.RETRY
    assert outcome.failure_fingerprint.startswith("collection_errors:")
    assert "No module named 'yaml_that_is_not_installed'" in outcome.reason
    assert recorder.hardenings[0]["pattern_id"] == "missing_python_dependency"
    assert len(sent(provider)) == 1  # the auditor is not asked about a change that cannot even be collected


def test_a_phase_that_allows_no_ops_completes_with_an_empty_commit_after_tests_and_audit(repo, tmp_path, llm):
    spec = make_spec(repo, tmp_path, deliverables=["calc/__init__.py"], allow_noop=True)
    nothing = json.dumps({"op": "meta", "summary": "add() already exists", "total_operations": 0})
    outcome, recorder = attempt(spec, tmp_path, llm([answer(nothing), answer(APPROVE)]))
    assert outcome.kind == OutcomeKind.COMPLETE, outcome.reason
    assert "ci:delta" in recorder.stages() and "audit:approved" in recorder.stages()
    assert git(repo, "show", "--name-only", "--format=", outcome.commit_sha) == ""


def test_leftovers_of_a_crashed_attempt_are_cleared_before_the_next_one(repo, tmp_path, llm):
    spec = make_spec(repo, tmp_path)
    worktree = workspace_for(spec, tmp_path / "workspaces").create().path
    (worktree / "calc/__init__.py").write_text("half written by a killed worker")
    (worktree / "stray.txt").write_text("left behind")
    provider = llm(
        [answer(ndjson(write("calc/mul.py", MUL_OK), write("tests/test_mul.py", TEST_MUL))), answer(APPROVE)]
    )
    outcome, _ = attempt(spec, tmp_path, provider)
    assert outcome.kind == OutcomeKind.COMPLETE, outcome.reason
    files = git(repo, "show", "--name-only", "--format=", outcome.commit_sha).split()
    assert sorted(files) == ["calc/mul.py", "tests/test_mul.py"]
    assert (worktree / "calc/__init__.py").read_text() == CALC and not (worktree / "stray.txt").exists()


def test_ci_overrides_from_earlier_hardening_are_carried_forward_by_every_outcome(repo, tmp_path):
    history = History(ci_overrides={"working_directory": "backend"})
    spec = make_spec(repo, tmp_path, history=history)
    recorder = MemoryRecorder(stop_reason="cancelled")  # even an attempt stopped before its tests
    outcome = run_attempt(
        spec, workspace=workspace_for(spec, tmp_path / "workspaces"), provider=ScriptedProvider([]), recorder=recorder
    )
    assert outcome.kind == OutcomeKind.ABANDONED
    assert outcome.summary["ci_overrides"] == {"working_directory": "backend"}
