"""Texts research stores from runs (memory items, ledger entries) never keep a credential."""

from __future__ import annotations

import pytest
from django.utils import timezone

from autopack_site.lib.logging import REDACTED
from research.models import BuildHistoryEntry, MemoryItem
from research.services import ledger_append_for_run, memory_record_attempt, memory_record_run
from tests.research.conftest import fail_attempt, make_phase

pytestmark = pytest.mark.django_db

PROVIDER_KEY = "sk-ant-api03-" + "Q7x" * 12  # built at run time: no credential-shaped literal in the source


def finished_run_failing_with(project, text: str):
    phase = make_phase(project, run_name="leaky", state="failed", goal="Add the lease reaper")
    run = phase.run
    run.state, run.finished_at, run.failure_detail = "failed", timezone.now(), text
    run.save()
    return phase


def test_a_failure_remembered_from_an_attempt_is_stored_redacted(project) -> None:
    attempt = fail_attempt(make_phase(project), 1, reason=f"401 from the provider: x-api-key={PROVIDER_KEY}")

    ids = memory_record_attempt(attempt_id=attempt.pk)

    stored = MemoryItem.objects.get(pk=ids[0])
    assert PROVIDER_KEY not in stored.text
    assert stored.text == f"backend phase p1: 401 from the provider: x-api-key={REDACTED}"


def test_a_run_written_to_the_ledger_and_to_memory_keeps_no_key(project, repository) -> None:
    phase = finished_run_failing_with(project, f"the builder printed {PROVIDER_KEY} into the log")

    entry = ledger_append_for_run(run_id=phase.run.pk)
    memory = MemoryItem.objects.get(pk=memory_record_run(run_id=phase.run.pk))

    stored = BuildHistoryEntry.objects.get(pk=entry.pk)
    assert PROVIDER_KEY not in stored.summary and REDACTED in stored.summary
    assert PROVIDER_KEY not in stored.raw_markdown
    assert PROVIDER_KEY not in (repository / "BUILD_HISTORY.md").read_text(encoding="utf-8")
    assert PROVIDER_KEY not in memory.text and REDACTED in memory.text
