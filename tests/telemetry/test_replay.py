import json
from datetime import UTC, datetime

import pytest
from django.core.management import call_command

from autopack_site.lib.errors import ValidationFailed
from runs.models import Phase, Run, RunState
from telemetry.replay import clone_run
from tests.factories import make_run

pytestmark = pytest.mark.django_db


def failed_run(**fields):
    run = make_run(
        state=RunState.FAILED,
        phases=3,
        tiers=2,
        base_commit="a1b2c3d4" * 5,
        plan={"run": {"name": "demo"}, "tiers": []},
        model_mapping={"builder": {"low": "claude-haiku-4-5"}},
        failure_reason="needs_human",
        **fields,
    )
    Phase.objects.filter(run=run).update(
        state="failed", attempt_count=4, claim_epoch=7, commit_sha="f" * 40, builder_hint="try harder", tokens_used=99
    )
    return run


def test_a_clone_is_a_queued_copy_of_the_plan_tiers_and_phases_linked_to_its_original():
    original = failed_run()
    clone = clone_run(run=original)

    assert clone.cloned_from_id == original.pk
    assert (clone.state, clone.plan, clone.plan_sha256, clone.base_commit) == (
        RunState.QUEUED,
        original.plan,
        original.plan_sha256,
        original.base_commit,
    )
    assert clone.model_mapping == original.model_mapping
    assert (clone.failure_reason, clone.tokens_used, clone.phases_total) == ("", 0, 3)
    assert list(clone.tiers.values_list("tier_id", "index")) == list(original.tiers.values_list("tier_id", "index"))
    phases = list(
        clone.phases.order_by("sequence").values(
            "phase_id", "tier__tier_id", "state", "attempt_count", "claim_epoch", "commit_sha", "scope"
        )
    )
    originals = list(original.phases.order_by("sequence").values("phase_id", "tier__tier_id", "scope"))
    assert [(p["phase_id"], p["tier__tier_id"], p["scope"]) for p in phases] == [
        (p["phase_id"], p["tier__tier_id"], p["scope"]) for p in originals
    ]
    assert {(p["state"], p["attempt_count"], p["claim_epoch"], p["commit_sha"]) for p in phases} == {
        ("queued", 0, 0, "")
    }


def test_a_clone_may_run_under_another_model_mapping():
    clone = clone_run(run=failed_run(), model_mapping={"builder": {"low": "claude-sonnet-4-5"}})
    assert clone.model_mapping == {"builder": {"low": "claude-sonnet-4-5"}}


def test_an_unfinished_run_cannot_be_replayed():
    with pytest.raises(ValidationFailed):
        clone_run(run=make_run(state=RunState.RUNNING))


def test_the_campaign_clones_failed_runs_in_the_window_and_dry_run_writes_nothing(capsys, tmp_path):
    inside = failed_run(created_at=datetime(2026, 11, 10, tzinfo=UTC))
    failed_run(created_at=datetime(2026, 10, 1, tzinfo=UTC))  # before the window
    make_run(state=RunState.COMPLETE, created_at=datetime(2026, 11, 10, tzinfo=UTC))  # not failed
    window = ["--since", "2026-11-01", "--until", "2026-12-01"]

    call_command("replay_campaign", *window, "--dry-run")
    assert f"would clone run #{inside.pk}" in capsys.readouterr().out
    assert Run.objects.filter(cloned_from__isnull=False).count() == 0

    mapping = tmp_path / "models.json"
    mapping.write_text(json.dumps({"builder": {"low": "claude-opus-4-1"}}))
    call_command("replay_campaign", *window, "--models", str(mapping))
    [clone] = Run.objects.filter(cloned_from__isnull=False)
    assert clone.cloned_from_id == inside.pk
    assert clone.model_mapping == {"builder": {"low": "claude-opus-4-1"}}
