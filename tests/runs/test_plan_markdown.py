"""Markdown notes → plan (runs.plan.markdown) and manage.py normalize_plan."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command

from runs.models import Phase, Run
from runs.plan import validate_plan
from runs.plan.markdown import NotesUnusable, find_paths, notes_to_plan, read_sections
from runs.plan.testcommand import detect_test_command
from runs.services.plan import plan_import, project_test_command
from tests.factories import make_project

PLANS = Path(__file__).resolve().parents[1] / "fixtures" / "plans"
PYTEST = "python -m pytest"


def summary(plan: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [
        (
            phase["id"],
            phase["tier"],
            phase["name"],
            phase["category"],
            phase["complexity"],
            phase["scope"]["deliverables"],
            phase["scope"]["read_only_context"],
            phase["scope"]["acceptance_criteria"],
            phase["scope"]["allow_test_edits"],
        )
        for phase in plan["phases"]
    ]


def normalise(name: str, test_command: str | None = PYTEST) -> Any:
    return notes_to_plan((PLANS / name).read_text(), default_name=Path(name).stem, test_command=test_command)


def test_numbered_lists_under_tier_headings() -> None:
    result = normalise("notes_numbered.md")
    plan = result.plan
    assert (plan["name"], plan["goal"]) == (
        "Invoice export",
        "let accountants download a month of invoices as CSV and PDF from the dashboard.",
    )
    assert [(tier["id"], tier["name"]) for tier in plan["tiers"]] == [("t1", "Data layer"), ("t2", "Delivery")]
    assert summary(plan) == [
        (
            "p1-add-an-invoiceexport-model-and-its-migration",
            "t1",
            "Add an InvoiceExport model and its migration",
            "database",
            "medium",
            ["billing/models.py", "billing/migrations/0007_invoiceexport.py"],
            [],
            [],
            False,
        ),
        (
            "p2-write-the-csv-renderer",
            "t1",
            "Write the CSV renderer",
            "feature",
            "low",
            ["billing/export/csv.py"],
            ["billing/export/base.py"],
            [],
            False,
        ),
        (
            "p3-tests-for-the-renderer",
            "t1",
            "Tests for the renderer",
            "tests",
            "low",
            ["tests/billing/test_export_csv.py"],
            [],
            [],
            True,
        ),
        (
            "p4-new-endpoint-get-api-invoices-export",
            "t2",
            "New endpoint GET /api/invoices/export",
            "backend",
            "low",
            ["billing/api.py"],
            ["billing/urls.py"],
            [],
            False,
        ),
        (
            "p5-dashboard-button-on-the-invoices-page",
            "t2",
            "Dashboard button on the invoices page",
            "frontend",
            "medium",
            ["templates/billing/invoices.html", "static/billing/export.js"],
            [],
            [],
            False,
        ),
        (
            "p6-document-the-export",
            "t2",
            "Document the export",
            "docs",
            "low",
            ["docs/billing/export.md"],
            [],
            [],
            False,
        ),
    ]
    assert plan["phases"][0]["scope"]["paths"] == plan["phases"][0]["scope"]["deliverables"]
    assert plan["phases"][0]["scope"]["ci"] == {"command": PYTEST, "timeout_seconds": 600}
    assert "- Double-check rounding of totals with finance" in plan["phases"][2]["description"]
    assert result.warnings == [
        "item 'Double-check rounding of totals with finance' names no file; folded into phase "
        "'Tests for the renderer' (give it files to make it a phase of its own)"
    ]
    assert result.confidence == 0.87


def test_nested_bullets_under_a_setext_title() -> None:
    result = normalise("notes_nested.md")
    plan = result.plan
    assert plan["name"] == "Rate limiting for the public API"
    assert plan["goal"] == "We keep getting hammered by scrapers. This plan adds per-key rate limits backed by Redis."
    assert [(tier["id"], tier["name"]) for tier in plan["tiers"]] == [("t1", "Rate limiting for the public API")]
    assert summary(plan) == [
        (
            "p1-token-bucket-limiter",
            "t1",
            "Token bucket limiter",
            "feature",
            "high",
            ["ratelimit/bucket.py", "ratelimit/__init__.py"],
            [],
            ["a burst of 100 requests allows exactly the bucket size"],
            False,
        ),
        (
            "p2-middleware-that-applies-the-limiter",
            "t1",
            "Middleware that applies the limiter",
            "backend",
            "low",
            ["ratelimit/middleware.py"],
            ["settings.py"],
            ["429 responses carry a Retry-After header"],
            False,
        ),
        ("p3-fix-the-flaky-clock", "t1", "Fix the flaky clock", "bugfix", "low", ["tests/conftest.py"], [], [], True),
        (
            "p4-tests",
            "t1",
            "Tests",
            "tests",
            "medium",
            ["tests/ratelimit/test_bucket.py", "tests/ratelimit/test_middleware.py"],
            [],
            [],
            True,
        ),
        (
            "p5-readme-md-a-short-section-on-limits",
            "t1",
            "README.md: a short section on limits",
            "docs",
            "low",
            ["README.md"],
            [],
            [],
            False,
        ),
    ]
    assert result.confidence == 0.77


def test_phase_headings_with_prose() -> None:
    result = normalise("notes_prose.md")
    plan = result.plan
    assert (plan["name"], plan["goal"]) == ("Search rewrite", "")
    assert summary(plan) == [
        (
            "p1-index-schema",
            "t1",
            "Index schema",
            "database",
            "high",
            ["search/schema.sql", "search/loader.py"],
            ["search/legacy.py"],
            [],
            False,
        ),
        (
            "p2-query-parser",
            "t1",
            "Query parser",
            "feature",
            "medium",
            ["search/query_parser.py", "search/tests/test_query_parser.py"],
            [],
            [],
            True,
        ),
        ("p3-docs", "t1", "Docs", "docs", "low", ["docs/search.md"], [], [], False),
    ]
    assert result.warnings == [
        "item 'Performance notes' names no file; folded into phase 'Query parser' "
        "(give it files to make it a phase of its own)"
    ]
    assert result.confidence == 0.79


def test_a_checklist_without_headings_or_test_command() -> None:
    result = normalise("notes_checklist.md", test_command=None)
    plan = result.plan
    assert plan["name"] == "notes_checklist"
    assert plan["goal"] == "TODO for the CLI release (no headings, just a checklist)"
    assert plan["tiers"] == [{"id": "t1", "name": "notes_checklist", "description": ""}]
    assert [(p["name"], p["category"], p["complexity"]) for p in plan["phases"]] == [
        ("rename cli/main.py to cli/__main__.py so python -m cli works", "refactor", "low"),
        ("add --json output", "feature", "low"),
        ("CHANGELOG.md entry and docs/cli.md usage section", "docs", "medium"),
        ("bump version", "config", "low"),
    ]
    assert all("ci" not in phase["scope"] for phase in plan["phases"])
    assert result.warnings[-1] == (
        "no test command found for the project; phases have no ci (set Project.default_test_command)"
    )
    assert result.confidence == 0.6


@pytest.mark.parametrize("name", ["notes_numbered.md", "notes_nested.md", "notes_prose.md", "notes_checklist.md"])
def test_normalised_notes_are_valid_plans_and_the_same_every_time(name: str) -> None:
    first, second = normalise(name), normalise(name)
    assert first == second
    validated = validate_plan(first.plan)
    assert validated.warnings == []
    assert validated.plan["phases"] == first.plan["phases"]


def test_notes_without_any_file_cannot_make_a_plan() -> None:
    with pytest.raises(NotesUnusable, match="no item names a file path"):
        notes_to_plan("# Ideas\n\n- make it faster\n- make it nicer\n", default_name="ideas")


def test_paths_are_found_in_prose_but_not_urls_versions_or_slashed_words() -> None:
    text = (
        "See https://example.com/a/b.py and ./src/app.py, then `lib\\util.js`; and/or v3.11 is fine. "
        "Put it under static/css/ or Makefile; not e.g. or 1.2.3."
    )
    assert find_paths(text) == ["src/app.py", "lib/util.js", "static/css/", "Makefile"]


def test_code_fences_are_ignored() -> None:
    sections = read_sections("# T\n\n- real item src/a.py\n\n```\n- fake item src/b.py\n```\n")
    assert [item.text for section in sections for item in section.items] == ["real item src/a.py"]


# --- the project's test command ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "command"),
    [
        ("pytest.ini", "python -m pytest"),
        ("setup.cfg", "python -m pytest"),
        ("package.json", "npm test"),
        ("go.mod", "go test ./..."),
        ("Cargo.toml", "cargo test"),
    ],
)
def test_simple_detector_reads_marker_files(tmp_path: Path, marker: str, command: str) -> None:
    (tmp_path / marker).write_text("")
    assert detect_test_command(tmp_path) == command


def test_simple_detector_finds_nothing_in_an_empty_or_missing_directory(tmp_path: Path) -> None:
    assert detect_test_command(tmp_path) is None
    assert detect_test_command(tmp_path / "missing") is None


@pytest.mark.django_db
def test_project_test_command_prefers_the_project_setting_then_detection(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert project_test_command(make_project(repository_path=str(tmp_path))) == "python -m pytest"
    configured = make_project(repository_path=str(tmp_path), default_test_command="make check")
    assert project_test_command(configured) == "make check"
    node = tmp_path / "node"
    node.mkdir()
    (node / "package.json").write_text("{}")
    assert project_test_command(make_project(repository_path=str(node))) == "npm test"
    assert project_test_command(make_project(repository_path=str(tmp_path / "none"))) is None


# --- manage.py normalize_plan ------------------------------------------------------------------------


@pytest.mark.django_db
def test_normalize_plan_writes_a_plan_that_import_plan_accepts(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    make_project("demo", repository_path=str(tmp_path))
    output = tmp_path / "plan.yaml"
    out = io.StringIO()
    call_command(
        "normalize_plan", str(PLANS / "notes_numbered.md"), "--project", "demo", "--output", str(output), stdout=out
    )
    assert out.getvalue().splitlines()[:2] == [f"wrote {output}: 2 tiers, 6 phases", "confidence: 0.87"]
    text = output.read_text()
    assert text.startswith("# Generated by normalize_plan from notes_numbered.md; confidence 0.87.\n")
    assert yaml.safe_load(text)["phases"][0]["scope"]["ci"] == {"command": "python -m pytest", "timeout_seconds": 600}
    assert Run.objects.count() == 0  # normalising never creates a run
    imported = io.StringIO()
    call_command("import_plan", str(output), "--project", "demo", stdout=imported)
    run = Run.objects.get()
    assert imported.getvalue() == f"run {run.pk}: 'Invoice export', 6 phases, queued\n"
    assert Phase.objects.filter(run=run).count() == 6


@pytest.mark.django_db
def test_normalize_plan_prints_the_plan_to_stdout_and_the_report_to_stderr(tmp_path: Path) -> None:
    project = make_project("demo", default_test_command="pytest -q")
    out, err = io.StringIO(), io.StringIO()
    call_command("normalize_plan", str(PLANS / "notes_prose.md"), "--project", "demo", stdout=out, stderr=err)
    plan = yaml.safe_load(out.getvalue())
    assert plan["phases"][0]["scope"]["ci"]["command"] == "pytest -q"
    assert err.getvalue().splitlines()[0] == "confidence: 0.79"
    assert plan_import(project=project, document=out.getvalue(), source_name="stdin").run.phases_total == 3
    json_out = tmp_path / "plan.json"
    call_command(
        "normalize_plan", str(PLANS / "notes_prose.md"), "--project", "demo", "--output", str(json_out), stdout=out
    )
    assert json.loads(json_out.read_text()) == validate_plan(plan).plan


@pytest.mark.django_db
def test_normalize_plan_errors(tmp_path: Path) -> None:
    make_project("demo")
    with pytest.raises(CommandError) as unknown:
        call_command("normalize_plan", str(PLANS / "notes_prose.md"), "--project", "nope")
    assert unknown.value.returncode == 2
    notes = tmp_path / "ideas.md"
    notes.write_text("- make it faster\n")
    err = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("normalize_plan", str(notes), "--project", "demo", stderr=err)
    assert exited.value.code == 1
    assert err.getvalue() == f"{notes}: no item names a file path, so no phase can be made\n"


def test_two_heading_levels_give_tiers_and_phases_and_prose_after_a_list_stays_prose() -> None:
    notes = (
        "# Payments\n\n"
        "## Backend\n\nServer side first.\n\n"
        "### Stripe client\n\nWrap the API in payments/stripe_client.py.\n"
        "- acceptance: retries on 5xx\n\n"
        "### Webhooks\n\nA view in payments/webhooks.py, see payments/stripe_client.py.\n\n"
        "## Frontend\n\n"
        "- Checkout page templates/payments/checkout.html\n"
        "  with a css tweak in static/payments/checkout.css\n\n"
        "Remember the legal text, reviewed in legal/terms.md.\n"
    )
    result = notes_to_plan(notes, default_name="x", test_command=PYTEST)
    assert [(tier["id"], tier["name"], tier["description"]) for tier in result.plan["tiers"]] == [
        ("t1", "Backend", "Server side first."),
        ("t2", "Frontend", "Remember the legal text, reviewed in legal/terms.md."),
    ]
    assert result.warnings == []
    assert [
        (
            p["tier"],
            p["name"],
            p["scope"]["deliverables"],
            p["scope"]["read_only_context"],
            p["scope"]["acceptance_criteria"],
        )
        for p in result.plan["phases"]
    ] == [
        ("t1", "Stripe client", ["payments/stripe_client.py"], [], ["retries on 5xx"]),
        ("t1", "Webhooks", ["payments/webhooks.py"], ["payments/stripe_client.py"], []),
        ("t2", "Checkout page", ["templates/payments/checkout.html", "static/payments/checkout.css"], [], []),
    ]
    assert result.plan["phases"][2]["category"] == "frontend"
    assert validate_plan(result.plan).warnings == []


def test_a_parenthesised_see_makes_only_its_own_paths_context() -> None:
    notes = (
        "# Caching\n\n## Core\n\n1. Add textkit/cache.py\n2. Use the cache from textkit/core.py (see textkit/slug.py)\n"
    )
    plan = notes_to_plan(notes, default_name="notes", test_command=PYTEST).plan
    second = plan["phases"][1]["scope"]
    assert (second["deliverables"], second["read_only_context"]) == (["textkit/core.py"], ["textkit/slug.py"])
