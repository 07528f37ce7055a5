"""Importing, re-importing, exporting and writing back build ledgers through the database."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command
from django.utils import timezone

from autopack_site.lib.errors import ValidationFailed
from research.ledger import parse_ledger
from research.models import BuildHistoryEntry
from research.services import ledger_append_for_run, ledger_export, ledger_import
from runs.models import Project
from tests.research.conftest import DAY_LOG, LEDGER, TABLE_LEDGER, make_phase

pytestmark = pytest.mark.django_db


def test_importing_the_fixture_stores_22_entries_and_reimporting_changes_nothing(project) -> None:
    first = ledger_import(paths=[LEDGER], project=project)
    again = ledger_import(paths=[LEDGER], project=project)

    assert (first.added, first.updated, first.unchanged, first.errors) == (22, 0, 0, [])
    assert (again.added, again.updated, again.unchanged) == (0, 0, 22)
    assert BuildHistoryEntry.objects.filter(project=project).count() == 22
    assert BuildHistoryEntry.objects.filter(project=project, build_id="BUILD-146").count() == 13


def test_stored_entries_keep_raw_text_and_repaired_fields(imported_project) -> None:
    entry = BuildHistoryEntry.objects.get(project=imported_project, line_number=19)

    assert entry.status_text == "✅ COMPLETE"
    assert "âœ… COMPLETE" in entry.raw_markdown
    assert entry.source_file.endswith("BUILD_HISTORY.md")
    assert len(entry.content_hash) == 64


def test_an_edited_section_is_reported_as_updated(project, ledger_copy: Path) -> None:
    ledger_import(paths=[ledger_copy], project=project)
    text = ledger_copy.read_text(encoding="utf-8")
    ledger_copy.write_text(
        text.replace(
            "Executor State Persistence Fix (2025-12-17)\n\n**Status**: PROPOSED",
            "Executor State Persistence Fix (2025-12-17)\n\n**Status**: BLOCKED",
        ),
        encoding="utf-8",
    )

    report = ledger_import(paths=[ledger_copy], project=project)

    assert (report.added, report.updated, report.unchanged) == (0, 1, 21)
    assert BuildHistoryEntry.objects.get(project=project, build_id="BUILD-041").status == "blocked"


def test_a_malformed_section_is_reported_with_its_line_and_the_rest_still_imports(project, ledger_copy) -> None:
    text = ledger_copy.read_text(encoding="utf-8")
    ledger_copy.write_text(
        text.replace(
            "### BUILD-144: NULL-Safe Token Accounting (P0 + P0.1 + P0.2) (2025-12-30)",
            "### BUILD-144: NULL-Safe Token Accounting, date forgotten",
        ),
        encoding="utf-8",
    )

    report = ledger_import(paths=[ledger_copy], project=project)

    assert report.added == 21
    assert len(report.errors) == 1
    assert f"{ledger_copy}:line 1272:" in report.errors[0]


def test_table_and_day_section_ledgers_import_with_their_counts(project) -> None:
    report = ledger_import(paths=[TABLE_LEDGER, DAY_LOG], project=project)

    assert (report.added, report.updated, report.unchanged) == (10, 0, 0)
    assert len(report.errors) == 3
    assert ledger_import(paths=[TABLE_LEDGER, DAY_LOG], project=project).unchanged == 10


def test_a_missing_file_is_an_error_not_a_crash(project, tmp_path) -> None:
    report = ledger_import(paths=[tmp_path / "nope.md", LEDGER], project=project)

    assert report.added == 22
    assert "nope.md:0: cannot read" in report.errors[0]


def test_export_then_reimport_round_trips(imported_project, tmp_path) -> None:
    exported = ledger_export(project=imported_project)
    path = tmp_path / "exported.md"
    path.write_text(exported, encoding="utf-8")

    same_project = ledger_import(paths=[path], project=imported_project)
    fresh = Project.objects.create(name="Copy", slug="copy", repository_path=str(tmp_path))
    into_fresh = ledger_import(paths=[path], project=fresh)

    assert (same_project.added, same_project.updated, same_project.unchanged) == (0, 0, 22)
    assert into_fresh.added == 22
    fields = ("build_id", "title", "date", "status", "summary", "files_modified", "commits", "raw_markdown")
    original = list(BuildHistoryEntry.objects.filter(project=imported_project).order_by("entry_key").values(*fields))
    copied = list(BuildHistoryEntry.objects.filter(project=fresh).order_by("entry_key").values(*fields))
    assert copied == original


def test_a_finished_run_is_appended_to_the_ledger_file_and_the_database(project, repository) -> None:
    (repository / "BUILD_HISTORY.md").write_bytes(LEDGER.read_bytes())
    phase = make_phase(project, run_name="ledger-writeback", state="complete", goal="Add the lease reaper")
    phase.scope = {"paths": ["runs/"], "deliverables": ["runs/services/reaper.py"]}
    phase.commit_sha = "0123456789abcdef"
    phase.save()
    run = phase.run
    run.state = "complete"
    run.finished_at = timezone.now()
    run.save()

    entry = ledger_append_for_run(run_id=run.pk)

    assert (entry.build_id, entry.title, entry.status, entry.run_id) == (
        f"RUN-{run.pk}",
        "ledger-writeback",
        "complete",
        run.pk,
    )
    assert entry.files_modified == ["runs/services/reaper.py"]
    assert entry.commits == ["01234567"]
    parsed = parse_ledger((repository / "BUILD_HISTORY.md").read_text(encoding="utf-8"))
    assert len(parsed.entries) == 23
    assert parsed.entries[0].build_id == f"RUN-{run.pk}"
    assert parsed.entries[0].summary == "Add the lease reaper"
    assert ledger_append_for_run(run_id=run.pk).pk == entry.pk  # delivered twice, written once
    assert len(parse_ledger((repository / "BUILD_HISTORY.md").read_text(encoding="utf-8")).entries) == 23
    report = ledger_import(paths=[repository / "BUILD_HISTORY.md"], project=project)
    assert (report.added, report.updated, report.unchanged) == (22, 0, 1)


def test_the_ledger_path_setting_is_honoured_and_the_file_created(project, repository) -> None:
    project.ledger_path = "docs/LEDGER.md"
    project.save()
    phase = make_phase(project, run_name="custom-ledger", state="failed")
    phase.run.state = "failed"
    phase.run.failure_detail = "needs a human"
    phase.run.save()

    entry = ledger_append_for_run(run_id=phase.run.pk)

    assert entry.status == "failed"
    assert "needs a human" in (repository / "docs" / "LEDGER.md").read_text(encoding="utf-8")


def test_an_unfinished_run_is_not_written(project) -> None:
    phase = make_phase(project, run_name="still-running")

    with pytest.raises(ValidationFailed):
        ledger_append_for_run(run_id=phase.run.pk)


def test_import_command_prints_its_report(project, capsys) -> None:
    call_command("import_build_history", str(LEDGER), str(TABLE_LEDGER), "--project", project.slug)

    out, err = capsys.readouterr()
    assert "added 27, updated 0, unchanged 0, errors 2" in out
    assert "line 11" in err and "line 45" in err


def test_table_and_day_log_entries_export_in_the_fixture_style_and_read_back_the_same(project, tmp_path) -> None:
    ledger_import(paths=[TABLE_LEDGER, DAY_LOG], project=project)
    path = tmp_path / "exported.md"
    path.write_text(ledger_export(project=project), encoding="utf-8")
    fresh = Project.objects.create(name="Copy", slug="copy", repository_path=str(tmp_path))

    report = ledger_import(paths=[path], project=fresh)

    assert (report.added, report.errors) == (10, [])
    fields = ("build_id", "title", "date", "status", "status_text", "category", "summary", "files_modified", "commits")
    original = list(BuildHistoryEntry.objects.filter(project=project).order_by("entry_key").values(*fields))
    copied = list(BuildHistoryEntry.objects.filter(project=fresh).order_by("entry_key").values(*fields))
    assert copied == original
    assert set(BuildHistoryEntry.objects.filter(project=fresh).values_list("style", flat=True)) == {"heading"}
