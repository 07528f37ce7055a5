from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command

from autopack_site.lib.errors import ValidationFailed
from runs.models import Phase, RunState
from telemetry.ab import ab_compare, pair_problems
from telemetry.models import AbTestResult
from telemetry.queries import run_consolidated_metrics
from tests.factories import make_run

pytestmark = pytest.mark.django_db

COMMIT = "3f47d86a0c1e5b2a9d7e6f5a4b3c2d1e0f9a8b7c"
MAPPING = {"builder": {"low": "claude-haiku-4-5"}, "doctor": {"high": "claude-opus-4-1"}}
START = datetime(2026, 11, 1, 10, tzinfo=UTC)


def finished_run(record_call, *, tokens, minutes, commit=COMMIT, mapping=MAPPING, state=RunState.COMPLETE, retries=0):
    run = make_run(
        state=state,
        base_commit=commit,
        model_mapping=mapping,
        started_at=START,
        finished_at=START + timedelta(minutes=minutes),
        phases=2,
    )
    Phase.objects.filter(run=run).update(state="complete", attempt_count=1)
    Phase.objects.filter(run=run, sequence=0).update(attempt_count=1 + retries)
    record_call(run_id=run.pk, input_tokens=tokens - 1_000, output_tokens=1_000)
    return run


def test_a_pair_from_the_same_commit_and_models_is_valid(record_call):
    control = finished_run(record_call, tokens=100_000, minutes=30)
    # Same mapping written in another key order: the hash is of the content, not the spelling.
    treatment = finished_run(record_call, tokens=80_000, minutes=20, mapping=dict(reversed(list(MAPPING.items()))))
    assert pair_problems(control, treatment) == []


def test_a_pair_from_different_commits_is_invalid_and_says_so(record_call):
    control = finished_run(record_call, tokens=100_000, minutes=30)
    treatment = finished_run(record_call, tokens=80_000, minutes=20, commit="b" * 40)
    [problem] = pair_problems(control, treatment)
    assert problem == "commit SHA differs: control 3f47d86a0c1e, treatment bbbbbbbbbbbb"


def test_a_pair_under_different_model_mappings_is_invalid_and_says_so(record_call):
    control = finished_run(record_call, tokens=100_000, minutes=30)
    treatment = finished_run(record_call, tokens=80_000, minutes=20, mapping={"builder": {"low": "claude-sonnet-4-5"}})
    [problem] = pair_problems(control, treatment)
    assert problem.startswith("model-mapping hash differs: control ")


def test_runs_without_a_known_commit_are_never_a_valid_pair(record_call):
    control = finished_run(record_call, tokens=2_000, minutes=1, commit="")
    treatment = finished_run(record_call, tokens=2_000, minutes=1, commit="")
    assert pair_problems(control, treatment) == ["commit SHA unknown (base_commit is empty)"]


def test_deltas_are_aggregated_over_valid_pairs_only_and_stored(record_call):
    pairs = [
        (
            finished_run(record_call, tokens=100_000, minutes=30, retries=2),
            finished_run(record_call, tokens=80_000, minutes=20),
        ),
        (
            finished_run(record_call, tokens=50_000, minutes=10),
            finished_run(record_call, tokens=40_000, minutes=12, retries=1),
        ),
        (
            finished_run(record_call, tokens=10_000, minutes=5),
            finished_run(record_call, tokens=2_000, minutes=1, commit="c" * 40),
        ),
    ]
    result = ab_compare(control_ids=[c.pk for c, _ in pairs], treatment_ids=[t.pk for _, t in pairs], label="hardening")

    assert (result.valid, result.pair_count, result.valid_pair_count) == (False, 3, 2)
    tokens = result.deltas["tokens"]
    assert (tokens["n"], tokens["mean"], tokens["median"], tokens["total"]) == (2, -15_000, -15_000, -30_000)
    assert round(tokens["stdev"], 1) == 7_071.1
    assert tokens["percent_change"] == -20.0
    assert result.deltas["wall_seconds"]["mean"] == -240.0
    assert result.deltas["retries"]["total"] == -1
    assert result.problems == [
        f"pair {pairs[2][0].pk}/{pairs[2][1].pk}: commit SHA differs: control 3f47d86a0c1e, treatment cccccccccccc"
    ]
    assert AbTestResult.objects.get(pk=result.pk).pairs.filter(valid=True).count() == 2
    # The measured delta shows up in the treatment run's consolidated metrics.
    assert run_consolidated_metrics(pairs[0][1])["ab_measured_delta"]["tokens"] == -20_000
    assert run_consolidated_metrics(pairs[2][1])["ab_measured_delta"] is None


def test_control_and_treatment_lists_must_pair_up():
    with pytest.raises(ValidationFailed):
        ab_compare(control_ids=[1, 2], treatment_ids=[3])


def test_the_command_reports_which_field_differs(record_call, capsys):
    control = finished_run(record_call, tokens=100_000, minutes=30)
    treatment = finished_run(record_call, tokens=80_000, minutes=20, commit="d" * 40)
    call_command("ab_compare", "--control", str(control.pk), "--treatment", str(treatment.pk))
    out = capsys.readouterr().out
    assert "INVALID: commit SHA differs" in out
    assert "NOT VALID" in out
    assert AbTestResult.objects.count() == 1


def test_replayed_clones_are_compared_with_their_originals_by_default(record_call, capsys):
    from telemetry.replay import clone_run

    original = finished_run(record_call, tokens=100_000, minutes=30, state=RunState.FAILED)
    clone = clone_run(run=original)
    record_call(run_id=clone.pk, input_tokens=59_000, output_tokens=1_000)

    call_command("ab_compare", "--treatment", str(clone.pk))
    result = AbTestResult.objects.get()
    assert result.valid is True
    assert result.pairs.get().control_run_id == original.pk
    assert result.deltas["tokens"]["total"] == -40_000


def test_a_treatment_that_is_not_a_clone_needs_an_explicit_control(record_call):
    from django.core.management.base import CommandError

    run = finished_run(record_call, tokens=2_000, minutes=1)
    with pytest.raises(CommandError, match="not clones"):
        call_command("ab_compare", "--treatment", str(run.pk))
