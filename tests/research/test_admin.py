"""The research admin: every model's list renders; ledger entries filter by status, date and id, and search."""

from __future__ import annotations

import pytest

from research.sessions import research_session_run
from tests.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = make_user("admin", staff=True)
    user.is_superuser = True
    user.save()
    client.force_login(user)
    return client


def test_every_research_model_has_a_working_changelist(admin_client, imported_project) -> None:
    research_session_run(project=imported_project, question="How was max_tokens truncation fixed?")

    for model in ("buildhistoryentry", "researchsession", "evidence", "citation", "memoryitem", "goaldriftcheck"):
        assert admin_client.get(f"/admin/research/{model}/").status_code == 200


def test_ledger_entries_filter_by_status_id_and_date_and_search(admin_client, imported_project) -> None:
    url = "/admin/research/buildhistoryentry/"

    proposed = admin_client.get(url, {"status__exact": "proposed"}).content.decode()
    by_id = admin_client.get(url, {"build_id": "BUILD-129"}).context["cl"].result_count
    by_date = admin_client.get(url, {"date__gte": "2025-12-30", "date__lt": "2026-01-01"}).context["cl"].result_count
    searched = admin_client.get(url, {"q": "coverage delta"}).context["cl"].result_list

    assert "Executor State Persistence Fix" in proposed and "Coverage Delta Integration" not in proposed
    assert by_id == 3
    assert by_date == 14
    assert "BUILD-132" in {entry.build_id for entry in searched}
