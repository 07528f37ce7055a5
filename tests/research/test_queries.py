"""search_entries: the filters shared by the admin and the dashboard, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import date

import pytest
from django.db import connection

from research.queries import search_entries
from research.services import ledger_import
from runs.models import Project
from tests.research.conftest import TABLE_LEDGER

pytestmark = pytest.mark.django_db


def test_status_and_date_filters_narrow_the_entries(imported_project) -> None:
    proposed = search_entries(project=imported_project, status="proposed")
    christmas = search_entries(project=imported_project, date_from=date(2025, 12, 24), date_to=date(2025, 12, 25))

    assert [entry.build_id for entry in proposed] == ["BUILD-041"]
    assert [entry.title for entry in christmas] == [
        "Token Estimator Overhead Model - Phase 3 P4-P10 Truncation Mitigation",
        "Token Estimator Overhead Model - Phase 3 Infrastructure",
        "Token Estimator Overhead Model - Phase 3 DOC_SYNTHESIS",
    ]


def test_text_search_finds_entries_by_words_in_their_text(imported_project) -> None:
    found = {entry.build_id for entry in search_entries(project=imported_project, query="coverage delta")}

    assert "BUILD-132" in found
    assert "BUILD-041" not in found


def test_search_is_scoped_to_the_project(imported_project, tmp_path) -> None:
    other = Project.objects.create(name="Other", slug="other", repository_path=str(tmp_path))
    ledger_import(paths=[TABLE_LEDGER], project=other)

    assert not search_entries(project=other, query="truncation").exists()
    assert search_entries(query="reaper").filter(project=other).exists()


@pytest.mark.postgres
def test_postgres_full_text_search_ranks_with_search_vectors(imported_project) -> None:
    results = list(search_entries(project=imported_project, query="truncation escalation"))

    assert results and results[0].build_id in {"BUILD-129", "BUILD-042"}
    assert all(result.search_vector for result in results)
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'research_ledger_search_gin'")
        assert "gin (search_vector)" in cursor.fetchone()[0]


@pytest.mark.postgres
def test_postgres_search_stems_words(imported_project) -> None:
    # "quarantined" matches the entry that says "Quarantine" thanks to the english configuration.
    titles = [entry.title for entry in search_entries(project=imported_project, query="quarantined")]

    assert "Phase A P14: Marker-Based Quarantine + XFAIL Budget Guard" in titles
