"""The engine's recorder stores prompts, responses and event data with every credential redacted."""

from __future__ import annotations

import json
import sys
import zlib

import pytest

from autopack_site.lib.logging import REDACTED
from runs.engine.gitrepo import init_repository
from runs.engine.outcome import OutcomeKind
from runs.engine.providers import LLMResponse, ScriptedProvider, Usage
from runs.execution import DjangoRecorder, execute_claim
from runs.models import AttemptEvent
from runs.services.leases import phase_claim
from runs.services.plan import plan_import
from tests.factories import make_project

pytestmark = pytest.mark.django_db

# Built at run time so that no credential-shaped literal sits in the source.
PROVIDER_KEY = "sk-ant-api03-" + "Q7x" * 12
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9." + "c2lnbmF0dXJl" * 3
PYTEST = f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {sys.executable} -m pytest -q -p no:cacheprovider"
PLAN = {
    "name": "calc",
    "tiers": [{"id": "t", "name": "T"}],
    "phases": [
        {
            "id": "p1",
            "tier": "t",
            "name": "Add mul",
            "category": "backend",
            "complexity": "low",
            "description": "Add calc.mul.mul(a, b).",
            "scope": {"deliverables": ["calc/mul.py"]},
        }
    ],
}


@pytest.fixture(autouse=True)
def _no_task_queue(settings):
    settings.AUTOPACK = {**settings.AUTOPACK, "ENQUEUE_TASKS": False}


@pytest.fixture
def claim(tmp_path):
    repo = tmp_path / "repo"
    init_repository(repo, files={"calc/__init__.py": "", "tests/test_calc.py": "def test_ok():\n    assert True\n"})
    project = make_project("calc", repository_path=str(repo), default_test_command=PYTEST)
    run = plan_import(project=project, document=PLAN, source_name="plan.json", start=True).run
    claimed = phase_claim(worker="test-worker", runs=[run.pk])
    assert claimed is not None
    return claimed


def answer(text: str) -> LLMResponse:
    return LLMResponse(
        text=text,
        usage=Usage(input_tokens=900, output_tokens=200),
        stop_reason="end_turn",
        model="claude-haiku-4-5",
        request_id=None,
        latency_ms=3,
        provider="scripted",
    )


def stored_text(event: AttemptEvent) -> str:
    return json.dumps(event.data) + zlib.decompress(bytes(event.blob)).decode("utf-8", "surrogateescape")


def test_event_data_and_blob_are_stored_redacted(claim):
    recorder = DjangoRecorder(claim.phase_id, claim.claim_epoch, claim.attempt_id, worker="test-worker")

    recorder.event("ci", "log", {"stderr": f"Authorization: Bearer {JWT}"}, f"export KEY={PROVIDER_KEY}\n".encode())

    event = AttemptEvent.objects.get(attempt_id=claim.attempt_id, stage="ci", kind="log")
    assert event.data == {"stderr": f"Authorization: {REDACTED}"}
    assert zlib.decompress(bytes(event.blob)) == f"export KEY={REDACTED}\n".encode()


def test_a_blob_that_is_not_utf8_is_stored_byte_for_byte(claim):
    recorder = DjangoRecorder(claim.phase_id, claim.claim_epoch, claim.attempt_id, worker="test-worker")
    binary = bytes(range(256))

    recorder.event("apply", "applied", {}, binary)

    event = AttemptEvent.objects.get(attempt_id=claim.attempt_id, stage="apply")
    assert zlib.decompress(bytes(event.blob)) == binary


def test_a_key_in_an_llm_response_is_not_stored_in_the_attempts_events(claim):
    mul = f"# the provider key was {PROVIDER_KEY}\ndef mul(a, b):\n    return a * b\n"
    builder = json.dumps({"op": "write", "path": "calc/mul.py", "content": mul})
    auditor = json.dumps({"approved": True, "issues": [], "summary": f"ok; saw {PROVIDER_KEY}"})

    outcome = execute_claim(claim, worker="test-worker", provider=ScriptedProvider([answer(builder), answer(auditor)]))

    assert outcome.kind == OutcomeKind.COMPLETE, outcome.reason
    events = AttemptEvent.objects.filter(attempt_id=claim.attempt_id)
    responses = [event for event in events if event.kind == "response" and event.blob]
    assert len(responses) == 2
    assert all(REDACTED in stored_text(event) for event in responses)
    for event in events:
        text = json.dumps(event.data) + (stored_text(event) if event.blob else "")
        assert PROVIDER_KEY not in text, (event.stage, event.kind)
