"""Replay campaigns: clone finished runs as new queued runs from the same plan and base commit.

A clone copies the plan, tiers, phases (definition only: no attempts, counters, leases or commits), budgets
and base commit, links back with ``cloned_from`` so ``ab_compare`` can pair it with its original, and may run
under another model mapping. It is created ``queued``; starting it is ``runs.services.run_start``'s job.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet

from autopack_site.lib.errors import ValidationFailed
from runs.models import Phase, PhaseState, Run, RunState, Tier

FINISHED_STATES = (RunState.COMPLETE, RunState.FAILED, RunState.CANCELLED)
_COPIED_RUN_FIELDS = (
    "project_id",
    "goal",
    "plan",
    "plan_sha256",
    "base_commit",
    "token_cap",
    "usd_cap",
    "max_phases",
    "max_minutes",
    "max_failures",
    "max_patch_failures",
    "created_by_id",
)
_COPIED_PHASE_FIELDS = ("phase_id", "index", "sequence", "name", "description", "category", "complexity", "scope")


def replay_candidates(
    *, states: Iterable[str] = (RunState.FAILED,), since: datetime | None = None, until: datetime | None = None
) -> QuerySet:
    """Finished runs in ``states`` created in [since, until), oldest first."""
    states = list(states)
    unfinished = sorted(set(states) - set(FINISHED_STATES))
    if unfinished:
        raise ValidationFailed(f"only finished runs can be replayed, not {unfinished}")
    runs = Run.objects.filter(state__in=states)
    if since:
        runs = runs.filter(created_at__gte=since)
    if until:
        runs = runs.filter(created_at__lt=until)
    return runs.order_by("created_at", "id")


@transaction.atomic
def clone_run(*, run: Run, model_mapping: dict | None = None, name: str = "") -> Run:
    if run.state not in FINISHED_STATES:
        raise ValidationFailed(f"run {run.pk} is {run.state}; only finished runs can be replayed")
    clone = Run.objects.create(
        **{field: getattr(run, field) for field in _COPIED_RUN_FIELDS},
        name=name or f"{run.name} (replay of #{run.pk})"[:200],
        state=RunState.QUEUED,
        model_mapping=run.model_mapping if model_mapping is None else model_mapping,
        cloned_from=run,
        phases_total=run.phases.count(),
    )
    tiers = {tier.pk: tier for tier in run.tiers.all()}
    tier_copies = {
        pk: Tier.objects.create(
            run=clone, index=tier.index, tier_id=tier.tier_id, name=tier.name, description=tier.description
        )
        for pk, tier in tiers.items()
    }
    Phase.objects.bulk_create(
        Phase(
            run=clone,
            tier=tier_copies[phase.tier_id],
            state=PhaseState.QUEUED,
            **{field: getattr(phase, field) for field in _COPIED_PHASE_FIELDS},
        )
        for phase in run.phases.order_by("sequence")
    )
    return clone
