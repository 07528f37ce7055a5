"""Insights for prompts: past builds and failures under a cap, the research rule, the goal, drift."""

from __future__ import annotations

import pytest

from research.insights import (
    DRIFT_THRESHOLD,
    builder_insights,
    goal_anchor,
    goal_drift,
    goal_reminder,
    needs_research_step,
)
from research.models import GoalDriftCheck
from research.services import goal_drift_record
from tests.research.conftest import fail_attempt, make_phase

pytestmark = pytest.mark.django_db

TRUNCATION_GOAL = "Stop max_tokens truncation in the token estimator and escalate the budget once"


def test_insights_put_the_most_relevant_past_builds_first(imported_project) -> None:
    text = builder_insights(
        project_id=imported_project.pk,
        category="backend",
        paths=["src/autopack/anthropic_clients.py"],
        goal=TRUNCATION_GOAL,
    )

    lines = [line for line in text.split("\n") if line.startswith("- ")]
    assert text.startswith("## Build history insights (retrieval: hashing-ngram-384)")
    # The four entries that touched that file, all about token budgets and truncation, lead.
    assert sorted(line.split(" ")[1] for line in lines[:4]) == ["BUILD-042", "BUILD-129", "BUILD-129", "BUILD-129"]
    assert "- BUILD-042 (2025-12-17, complete): Eliminate max_tokens Truncation Issues." in text


def test_insights_stay_under_the_cap_and_end_on_a_whole_line(imported_project) -> None:
    text = builder_insights(
        project_id=imported_project.pk, category="tests", paths=[], goal="test suite", max_chars=700
    )

    assert 0 < len(text) <= 700
    assert text.split("\n")[-1].startswith("- ")


def test_failures_of_similar_phases_come_first_with_overlapping_files(project) -> None:
    failed = make_phase(
        project,
        run_name="earlier",
        phase_id="apply-scope",
        category="backend",
        state="failed",
        paths=["runs/engine/apply.py"],
        failure="new test failure: test_symlink_escape_is_refused",
    )
    make_phase(project, run_name="earlier", phase_id="docs", category="docs", state="failed", failure="typo")

    text = builder_insights(project_id=project.pk, category="backend", paths=["runs/engine/"])

    assert "### Past failures of similar phases" in text
    assert f"phase {failed.phase_id} (backend, failed; overlapping files: runs/engine/apply.py)" in text
    assert "test_symlink_escape_is_refused" in text
    assert "typo" not in text


def test_insights_are_empty_when_there_is_nothing_to_say(project) -> None:
    assert builder_insights(project_id=project.pk, category="backend", paths=["x.py"], goal="anything") == ""


def test_a_category_that_failed_repeatedly_needs_a_research_step_first(project) -> None:
    phase = make_phase(project, category="database", state="failed", failure="migration conflict")
    fail_attempt(phase, 1)
    fail_attempt(phase, 2)
    assert not needs_research_step(project_id=project.pk, category="database")

    fail_attempt(phase, 3)

    assert needs_research_step(project_id=project.pk, category="database")
    assert not needs_research_step(project_id=project.pk, category="frontend")


def test_the_goal_anchor_fits_2_kb_and_the_reminder_512_bytes_even_in_multibyte_text() -> None:
    goal = "Réduire la troncature des sorties ✅ " * 200

    anchor = goal_anchor(goal)
    reminder = goal_reminder(goal)

    assert len(anchor.encode("utf-8")) <= 2048 and anchor.endswith("…")
    assert anchor.startswith("## Run goal")
    assert len(reminder.encode("utf-8")) <= 512 and reminder.startswith("Run goal: Réduire")
    assert goal_anchor("") == goal_reminder("  ") == ""
    assert goal_anchor("Short goal.").endswith("\nShort goal.")


def test_goal_drift_compares_work_with_the_goal_by_embedding_similarity() -> None:
    on_goal = goal_drift(goal=TRUNCATION_GOAL, text=TRUNCATION_GOAL + " in the estimator module")
    off_goal = goal_drift(goal=TRUNCATION_GOAL, text="Restyle the dashboard login page with a darker colour palette")

    assert on_goal.similarity > DRIFT_THRESHOLD and not on_goal.drifted
    assert off_goal.similarity < DRIFT_THRESHOLD and off_goal.drifted
    assert on_goal.embedder == "hashing-ngram-384"


def test_goal_drift_is_recorded_on_the_attempt(project) -> None:
    attempt = fail_attempt(make_phase(project), 1)

    check = goal_drift_record(attempt_id=attempt.pk, goal=TRUNCATION_GOAL, text="Restyle the login page")

    assert check.drifted and check.threshold == 0.7
    assert GoalDriftCheck.objects.get(attempt=attempt).embedder == "hashing-ngram-384"


class CountingEmbedder:
    """The real hashing embedder, counting the texts it is asked to embed."""

    def __init__(self) -> None:
        from research.embedders import HashingEmbedder

        self.inner = HashingEmbedder()
        self.name, self.dim, self.texts = self.inner.name, self.inner.dim, 0

    def embed(self, texts):
        self.texts += len(texts)
        return self.inner.embed(texts)


def test_ledger_vectors_are_embedded_once_and_again_only_when_an_entry_changes(imported_project, monkeypatch) -> None:
    import research.insights as insights
    from research.models import BuildHistoryEntry

    embedder = CountingEmbedder()
    monkeypatch.setattr(insights, "get_embedder", lambda: embedder)
    monkeypatch.setattr(insights, "_entry_vectors", {})
    entries = BuildHistoryEntry.objects.filter(project=imported_project).count()
    ask = dict(project_id=imported_project.pk, category="backend", paths=["src/autopack/anthropic_clients.py"])

    cold = builder_insights(**ask, goal=TRUNCATION_GOAL)
    assert embedder.texts == entries + 1  # every entry, and the query

    warm = builder_insights(**ask, goal=TRUNCATION_GOAL)
    assert embedder.texts == entries + 2  # the query only
    assert warm == cold

    entry = BuildHistoryEntry.objects.filter(project=imported_project).order_by("-date", "-id").first()
    entry.summary = "Rewrote the retry loop of the token estimator."
    entry.save(update_fields=["summary"])
    builder_insights(**ask, goal=TRUNCATION_GOAL)
    assert embedder.texts == entries + 4  # the edited entry and the query


def test_a_phase_that_failed_an_attempt_and_is_queued_for_retry_counts_as_a_past_failure(project) -> None:
    retrying = make_phase(project, run_name="earlier", phase_id="retry-me", state="queued", failure="lint failed")
    fail_attempt(retrying, 1, reason="lint failed")
    # A failure reason without a failed attempt (say, a lost lease) is not a failure of similar work.
    make_phase(project, run_name="earlier", phase_id="lost-lease", state="queued", failure="lease lost twice")

    text = builder_insights(project_id=project.pk, category="backend", paths=[])

    assert "phase retry-me (backend, queued)" in text and "lint failed" in text
    assert "lost-lease" not in text


def test_claim_insights_cost_one_query_until_what_they_read_changes(imported_project, django_assert_max_num_queries):
    from research.insights import claim_insights
    from research.models import BuildHistoryEntry

    ask = dict(project_id=imported_project.pk, category="backend", paths=["src/autopack/anthropic_clients.py"])
    first, research = claim_insights(**ask, goal=TRUNCATION_GOAL)
    assert first == builder_insights(**ask, goal=TRUNCATION_GOAL) and research is False
    with django_assert_max_num_queries(2):  # the fingerprint (plus a PREPARE the first time on a connection)
        assert claim_insights(**ask, goal=TRUNCATION_GOAL) == (first, False)

    # A new failure of a similar phase shows at once.
    phase = make_phase(imported_project, run_name="now", phase_id="p-new", state="failed", failure="flaky import")
    text, _ = claim_insights(**ask, goal=TRUNCATION_GOAL)
    assert "flaky import" in text and text != first

    # So does the phase leaving the failures (its failure reason cleared on success)...
    phase.last_failure_reason, phase.state = "", "complete"
    phase.save()
    assert claim_insights(**ask, goal=TRUNCATION_GOAL)[0] == first

    # ...and an edited ledger entry.
    entry = BuildHistoryEntry.objects.get(build_id="BUILD-042")
    entry.title = "Eliminate truncation for good"
    entry.save()
    assert "Eliminate truncation for good" in claim_insights(**ask, goal=TRUNCATION_GOAL)[0]


def test_claim_insights_apply_the_research_rule_exactly(project):
    from research.insights import claim_insights

    phase = make_phase(project, category="database", state="failed", failure="migration conflict")
    fail_attempt(phase, 1)
    fail_attempt(phase, 2)
    assert claim_insights(project_id=project.pk, category="database", paths=[], goal="")[1] is False
    fail_attempt(phase, 3)
    assert claim_insights(project_id=project.pk, category="database", paths=[], goal="")[1] is True
    assert claim_insights(project_id=project.pk, category="frontend", paths=[], goal="")[1] is False
