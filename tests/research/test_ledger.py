"""The pure ledger parser on the real fixture and on the table and day-section styles."""

from __future__ import annotations

from datetime import date

from research.ledger import decode_ledger, format_entry, insert_entry, parse_ledger
from tests.research.conftest import DAY_LOG, LEDGER, TABLE_LEDGER

FIXTURE_ENTRIES = [
    ("BUILD-146", "2025-12-31", "complete", "Phase A P16+: Windows/Test Hardening - UTF-8 + In-Memory DB Safety"),
    (
        "BUILD-146",
        "2025-12-31",
        "complete",
        "Phase A P16: Production Hardening - Research Module Implementation & 3-Gate CI Maturity",
    ),
    ("BUILD-146", "2025-12-31", "complete", "Phase A P15: Test Suite Cleanup - XPASS Graduation & 3-Gate CI"),
    ("BUILD-146", "2025-12-31", "complete", "Phase A P14: Marker-Based Quarantine + XFAIL Budget Guard"),
    ("BUILD-146", "2025-12-31", "complete", "Phase A P13: Test Suite Stabilization - Extended Tests + API Drift Fixes"),
    ("BUILD-146", "2025-12-31", "complete", "Phase A P12 Critical Fixes + Test Stabilization"),
    ("BUILD-146", "2025-12-31", "complete", "Phase A P12 Phase 5: Auth Consolidation & Backend Removal"),
    ("BUILD-146", "2025-12-31", "planned", "Phase 6 P12: Production Hardening Roadmap"),
    ("BUILD-146", "2025-12-31", "complete", "Phase 6 P11: API Split-Brain Fix"),
    ("BUILD-146", "2025-12-31", "complete", "True Autonomy Implementation Complete (Phases 0-5)"),
    ("BUILD-146", "2025-12-31", "complete", "Phase 6: True Autonomy Integration"),
    ("BUILD-146", "2025-12-31", "complete", "Phase 6 Production Polish - COMPLETE"),
    ("BUILD-146", "2025-12-31", "complete", "Phase 6 P11: Operational Maturity"),
    ("BUILD-144", "2025-12-30", "complete", "NULL-Safe Token Accounting (P0 + P0.1 + P0.2)"),
    ("TELEMETRY-V5", "2025-12-29", "complete", "25-Phase Telemetry Collection + Batch Drain Fixes"),
    ("BUILD-132", "2025-12-28", "complete", "Research System CI Collection Remediation"),
    ("BUILD-129", "2025-12-25", "complete", "Token Estimator Overhead Model - Phase 3 P4-P10 Truncation Mitigation"),
    ("BUILD-129", "2025-12-24", "complete", "Token Estimator Overhead Model - Phase 3 DOC_SYNTHESIS"),
    ("BUILD-129", "2025-12-24", "complete", "Token Estimator Overhead Model - Phase 3 Infrastructure"),
    ("BUILD-132", "2025-12-23", "complete", "Coverage Delta Integration"),
    ("BUILD-042", "2025-12-17", "complete", "Eliminate max_tokens Truncation Issues"),
    ("BUILD-041", "2025-12-17", "proposed", "Executor State Persistence Fix"),
]


def parse_file(path):
    return parse_ledger(decode_ledger(path.read_bytes()))


def test_fixture_yields_exactly_its_22_entries_with_ids_dates_statuses_and_titles() -> None:
    parsed = parse_file(LEDGER)

    assert parsed.style == "heading"
    assert parsed.problems == []
    found = [(entry.build_id, entry.date.isoformat(), entry.status, entry.title) for entry in parsed.entries]
    assert found == FIXTURE_ENTRIES


def test_fixture_line_numbers_point_at_each_heading() -> None:
    lines = LEDGER.read_text(encoding="utf-8").split("\n")
    for entry in parse_file(LEDGER).entries:
        assert lines[entry.line_number - 1].startswith(f"### {entry.build_id}")


def test_mojibake_is_repaired_in_fields_while_the_raw_markdown_keeps_the_original_bytes() -> None:
    first = parse_file(LEDGER).entries[0]

    assert first.status_text == "✅ COMPLETE"
    assert "âœ…" not in first.test_results and "19/19 passed ✅" in first.test_results
    assert "**Status**: âœ… COMPLETE" in first.raw_markdown
    assert first.raw_markdown in LEDGER.read_text(encoding="utf-8")


def test_entries_already_in_clean_utf8_are_left_as_they_are() -> None:
    autonomy = parse_file(LEDGER).entries[9]

    assert autonomy.status_text.startswith("COMPLETE")
    assert "PLANNED" in parse_file(LEDGER).entries[7].status_text
    assert parse_file(LEDGER).entries[7].status_text.startswith("📋")


def test_text_ftfy_cannot_repair_survives_in_the_raw_markdown() -> None:
    # The warning sign lost a byte in the original ledger; ftfy leaves it, the raw copy keeps it.
    maturity = parse_file(LEDGER).entries[12]

    assert "âš\xa0ï¸ Warning: DATABASE_URL not set" in maturity.raw_markdown


def test_sections_files_and_commits_are_read_from_bold_labels() -> None:
    first = parse_file(LEDGER).entries[0]

    assert first.commits == ["b07f3d91"]
    assert first.files_modified == [
        "tests/autopack/test_calibration_reporter.py",
        "tests/conftest.py",
        "tests/autopack/memory/test_memory_service_init_validation.py",
    ]
    assert first.summary.startswith("Three production reliability improvements")
    assert first.impact.startswith("- **Windows Compatibility**")
    assert "Rationale" in first.sections


def test_headings_inside_code_fences_do_not_start_or_end_entries() -> None:
    polish = parse_file(LEDGER).entries[11]

    assert "# P3: Run database migrations" in polish.raw_markdown


def test_table_style_ledger_merges_rows_with_headings_and_reports_malformed_parts_by_line() -> None:
    parsed = parse_file(TABLE_LEDGER)

    assert parsed.style == "table"
    assert [entry.build_id for entry in parsed.entries] == [
        "BUILD-101",
        "BUILD-102",
        "BUILD-103",
        "BUILD-104",
        "BUILD-105",
    ]
    assert [problem.line for problem in parsed.problems] == [11, 45]
    reaper = parsed.entries[0]
    assert (reaper.title, reaper.date, reaper.category, reaper.status) == (
        "Lease reaper for crashed workers",
        date(2025, 11, 3),
        "backend",
        "complete",
    )
    assert reaper.commits == ["1a2b3c4d"]
    assert parsed.entries[4].status == "in_progress"
    assert "—" in parsed.entries[4].summary  # repaired from "â€”"


def test_day_section_log_gives_one_entry_per_sub_heading_or_per_quiet_day() -> None:
    parsed = parse_file(DAY_LOG)

    assert parsed.style == "daylog"
    assert [(entry.build_id, entry.date.isoformat()) for entry in parsed.entries] == [
        ("BUILD-040", "2025-12-15"),
        ("LOG-2025-12-15-2", "2025-12-15"),
        ("LOG-2025-12-16", "2025-12-16"),
        ("BUILD-041", "2025-12-17"),
        ("BUILD-042", "2025-12-17"),
    ]
    assert [problem.line for problem in parsed.problems] == [26]
    assert parsed.entries[4].status_text == "COMPLETE ✅"


def test_windows_1252_bytes_decode_without_losing_a_character() -> None:
    text = decode_ledger("### BUILD-7: Café — naïve (2025-01-02)\n\n**Status**: COMPLETE\n".encode("cp1252"))

    entry = parse_ledger(text).entries[0]
    assert entry.title == "Café — naïve"


def test_a_formatted_entry_parses_back_to_the_same_fields() -> None:
    original = parse_file(LEDGER).entries[0]

    again = parse_ledger(format_entry(original)).entries[0]
    assert (again.build_id, again.title, again.date, again.status) == (
        original.build_id,
        original.title,
        original.date,
        original.status,
    )
    assert again.files_modified == original.files_modified
    assert again.commits == original.commits
    assert again.summary == original.summary


def test_new_entries_go_to_the_top_of_the_chronological_index() -> None:
    ledger = LEDGER.read_text(encoding="utf-8")
    entry = parse_ledger("### RUN-1: First run (2026-01-01)\n\n**Status**: COMPLETE\n").entries[0]

    updated = insert_entry(ledger, format_entry(entry))
    parsed = parse_ledger(updated)
    assert [e.build_id for e in parsed.entries[:2]] == ["RUN-1", "BUILD-146"]
    assert len(parsed.entries) == 23
