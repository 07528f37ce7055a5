"""What finished runs and attempts leave behind: a ledger entry and memory fed back into prompts."""

from __future__ import annotations

import pytest
from django.utils import timezone

from research.insights import memory_context
from research.models import BuildHistoryEntry, MemoryItem
from research.tasks import attempt_finished, run_finished
from tests.research.conftest import fail_attempt, make_phase

pytestmark = pytest.mark.django_db


def test_a_failed_attempt_and_its_doctor_hint_are_remembered_once(project) -> None:
    phase = make_phase(project, phase_id="deps", category="config", state="queued")
    phase.builder_hint = "Add PyYAML to requirements.txt before importing yaml"
    phase.save()
    attempt = fail_attempt(phase, 1, reason="ModuleNotFoundError: No module named 'yaml'")

    first = attempt_finished(attempt.pk)
    again = attempt_finished(attempt.pk)

    assert first == again and len(first) == 2
    assert set(MemoryItem.objects.values_list("collection", flat=True)) == {"ci_errors", "doctor_hints"}


def test_remembered_failures_come_back_in_the_prompt_context(project) -> None:
    phase = make_phase(project, phase_id="deps", category="config")
    phase.builder_hint = "Add PyYAML to requirements.txt before importing yaml"
    phase.save()
    attempt_finished(fail_attempt(phase, 1, reason="ModuleNotFoundError: No module named 'yaml'").pk)

    text = memory_context(project_id=project.pk, query="No module named yaml when importing the plan loader")

    assert text.startswith("## Retrieved memory (retrieval: hashing-ngram-384)")
    assert "- [doctor_hints] config phase deps: Add PyYAML to requirements.txt" in text
    assert "- [ci_errors] config phase deps: ModuleNotFoundError" in text
    assert memory_context(project_id=project.pk, query="") == ""


def test_a_finished_run_is_written_to_the_ledger_and_remembered(project, repository) -> None:
    phase = make_phase(project, run_name="finished", state="complete", goal="Ship the lease reaper")
    phase.run.state = "complete"
    phase.run.finished_at = timezone.now()
    phase.run.save()

    entry_id = run_finished(phase.run.pk)
    run_finished(phase.run.pk)

    assert BuildHistoryEntry.objects.get(pk=entry_id).build_id == f"RUN-{phase.run.pk}"
    assert (repository / "BUILD_HISTORY.md").read_text(encoding="utf-8").count(f"### RUN-{phase.run.pk}:") == 1
    assert MemoryItem.objects.filter(collection="run_summaries").count() == 1
