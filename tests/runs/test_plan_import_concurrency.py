"""Two imports of one plan at the same moment: exactly one run (PostgreSQL row locks)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connections

from autopack_site.lib.errors import Conflict
from runs.models import Run
from runs.services.plan import plan_import
from tests.factories import make_project

PLAN = {
    "name": "Twice",
    "tiers": [{"id": "t", "name": "T"}],
    "phases": [{"id": "p", "tier": "t", "name": "P", "scope": {"deliverables": ["a.py"]}}],
}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_imports_of_the_same_plan_create_one_run() -> None:
    project = make_project()
    barrier = threading.Barrier(4)
    outcomes: list[Any] = []

    def importer() -> None:
        try:
            barrier.wait()
            outcomes.append(plan_import(project=project, document=PLAN, source_name="x").run.pk)
        except Conflict as exc:
            outcomes.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=importer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len([outcome for outcome in outcomes if isinstance(outcome, int)]) == 1
    assert len([outcome for outcome in outcomes if isinstance(outcome, Conflict)]) == 3
    assert Run.objects.count() == 1
