"""Plan validation without the database: exact error messages, loose-input fixes, canonical form."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from runs.plan import PlanInvalid, validate_plan
from runs.plan.schema import PLAN_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
PLANS = ROOT / "tests" / "fixtures" / "plans"


def valid_plan() -> dict[str, Any]:
    return {
        "name": "Demo",
        "goal": "Ship it",
        "budgets": {"max_phases": 5},
        "tiers": [{"id": "t1", "name": "One"}, {"id": "t2", "name": "Two"}],
        "phases": [
            {"id": "p1", "tier": "t1", "name": "First", "scope": {"paths": ["src/a.py"], "deliverables": ["src/a.py"]}},
            {"id": "p2", "tier": "t2", "name": "Second", "scope": {"paths": ["src/"], "deliverables": ["src/b.py"]}},
        ],
    }


def errors_of(document: Any) -> list[str]:
    with pytest.raises(PlanInvalid) as caught:
        validate_plan(document)
    return [str(error) for error in caught.value.errors]


def mutated(change: Any) -> dict[str, Any]:
    plan = valid_plan()
    change(plan)
    return plan


def phase0(plan: dict[str, Any]) -> dict[str, Any]:
    return plan["phases"][0]


BAD_PLANS = {
    "wrong type for the name": (lambda p: p.update(name=5), "name: must be a string, not an integer"),
    "wrong type for a flag": (
        lambda p: phase0(p)["scope"].update(allow_noop="yes"),
        "phases[0].scope.allow_noop: must be true or false, not a string",
    ),
    "phases not a list": (lambda p: p.update(phases={"p1": {}}), "phases: must be a list, not an object"),
    "unknown tier": (
        lambda p: p["phases"][1].update(tier="t9"),
        "phases[1].tier: unknown tier 't9' (tiers: t1, t2)",
    ),
    "duplicate phase id": (
        lambda p: p["phases"][1].update(id="p1"),
        "phases[1].id: duplicate phase id 'p1' (first used by phases[0])",
    ),
    "unknown field inside scope": (
        lambda p: phase0(p)["scope"].update(path=["a.py"]),
        "phases[0].scope.path: unknown field (did you mean 'paths'?)",
    ),
    "absolute scope path": (
        lambda p: phase0(p)["scope"].update(paths=["/etc/passwd"]),
        "phases[0].scope.paths[0]: absolute paths are not allowed",
    ),
    "parent traversal in a scope path": (
        lambda p: phase0(p)["scope"].update(paths=["src/../../secrets.txt"]),
        "phases[0].scope.paths[0]: '..' segments are not allowed",
    ),
    "a deliverable under .git": (
        lambda p: phase0(p)["scope"].update(deliverables=[".git/hooks/pre-commit"]),
        "phases[0].scope.deliverables[0]: paths under .git are not allowed",
    ),
    "a wildcard in scope": (
        lambda p: phase0(p)["scope"].update(paths=["src/*.py"]),
        "phases[0].scope.paths[0]: wildcards are not supported; name a directory ending in '/' instead",
    ),
    "a Windows drive in read-only context": (
        lambda p: phase0(p)["scope"].update(read_only_context=["C:/repo/x.py"]),
        "phases[0].scope.read_only_context[0]: Windows drive paths are not allowed",
    ),
    "empty deliverables": (
        lambda p: phase0(p)["scope"].update(deliverables=[]),
        "phases[0].scope.deliverables: must list at least one file the phase produces",
    ),
    "bad complexity": (
        lambda p: phase0(p).update(complexity="extreme"),
        "phases[0].complexity: must be one of low, medium, high (got 'extreme')",
    ),
    "bad category": (
        lambda p: phase0(p).update(category="marketing"),
        "phases[0].category: must be one of feature, backend, frontend, tests, docs, config, refactor, bugfix, "
        "database, research (got 'marketing')",
    ),
    "unknown field with a likely typo": (
        lambda p: phase0(p).update(descripton="x"),
        "phases[0].descripton: unknown field (did you mean 'description'?)",
    ),
    "unknown top-level field": (
        lambda p: p.update(colour="red"),
        "colour: unknown field; allowed: version, name, goal, budgets, models, tiers, phases",
    ),
    "missing phase name": (lambda p: phase0(p).pop("name"), "phases[0].name: is required"),
    "too many phases for max_phases": (
        lambda p: p["budgets"].update(max_phases=1),
        "phases: the plan has 2 phases, more than budgets.max_phases (1)",
    ),
    "negative token cap": (
        lambda p: p["budgets"].update(token_cap=-5),
        "budgets.token_cap: must be at least 1 (got -5)",
    ),
    "overlong description": (
        lambda p: phase0(p).update(description="x" * 20_001),
        "phases[0].description: must be at most 20,000 characters (got 20,001)",
    ),
    "bad phase id": (
        lambda p: phase0(p).update(id="p 1"),
        "phases[0].id: must start with a letter or digit and contain only letters, digits, '.', '_' and '-' "
        "(got 'p 1')",
    ),
    "no tiers": (lambda p: p.update(tiers=[]), "tiers: must list at least 1 item"),
    "a ci timeout of zero": (
        lambda p: phase0(p)["scope"].update(ci={"command": "pytest", "timeout_seconds": 0}),
        "phases[0].scope.ci.timeout_seconds: must be more than 0 (got 0)",
    ),
    "unknown model role": (
        lambda p: p.update(models={"planner": {"low": "x"}}),
        "models.planner: unknown field; allowed: builder, auditor, doctor",
    ),
    "NaN for a budget": (
        lambda p: p["budgets"].update(usd_cap=float("nan")),
        "budgets.usd_cap: must be a finite number",
    ),
    "absurd nesting": (
        lambda p: p.update(goal=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
        "goal" + "[0]" * 31 + ": nested more than 32 levels deep",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_PLANS))
def test_bad_plan_is_refused_with_an_exact_message(case: str) -> None:
    change, message = BAD_PLANS[case]
    assert errors_of(mutated(change)) == [message]


def test_a_bad_deliverable_is_reported_once_not_again_as_a_derived_scope_path() -> None:
    plan = mutated(lambda p: phase0(p).update(scope={"deliverables": ["ok.py", "/abs.py"]}))
    assert errors_of(plan) == ["phases[0].scope.deliverables[1]: absolute paths are not allowed"]


def test_top_level_errors_come_in_the_order_a_plan_is_written() -> None:
    plan = mutated(lambda p: p.update(phases=[], tiers="x", name=""))
    assert errors_of(plan) == [
        "name: must not be empty",
        "tiers: must be a list, not a string",
        "phases: must list at least 1 item",
    ]


@pytest.mark.parametrize("key", ["³", "٣", "10"])
def test_a_stray_key_that_looks_like_a_number_is_reported_not_a_crash(key: str) -> None:
    plan = valid_plan()
    plan[key] = {}
    plan["phases"][0][key] = 1
    errors = errors_of(plan)
    assert errors and all(isinstance(error, str) for error in errors)


def test_several_errors_are_reported_at_once_in_document_order() -> None:
    plan = valid_plan()
    plan["phases"] = [copy.deepcopy(plan["phases"][0]) for _ in range(12)]
    for index, phase in enumerate(plan["phases"]):
        phase["id"] = f"p{index}"
    plan["budgets"]["max_phases"] = 20
    plan["phases"][2]["scope"]["paths"] = ["/abs.py"]
    plan["phases"][10]["tier"] = "nope"
    plan["phases"][3]["complexity"] = "huge"
    assert errors_of(plan) == [
        "phases[2].scope.paths[0]: absolute paths are not allowed",
        "phases[3].complexity: must be one of low, medium, high (got 'huge')",
        "phases[10].tier: unknown tier 'nope' (tiers: t1, t2)",
    ]


def test_duplicate_tier_ids_are_refused_and_phases_of_the_lost_tier_are_reported() -> None:
    plan = mutated(lambda p: p["tiers"][1].update(id="t1"))
    assert errors_of(plan) == [
        "tiers[1].id: duplicate tier id 't1' (first used by tiers[0])",
        "phases[1].tier: unknown tier 't2' (tiers: t1)",
    ]


def test_plan_invalid_is_a_validation_failure_carrying_every_error() -> None:
    from autopack_site.lib.errors import ValidationFailed

    with pytest.raises(ValidationFailed) as caught:
        validate_plan(mutated(lambda p: (p.update(name=""), phase0(p).update(complexity="x"))))
    assert caught.value.details == [
        {"path": "name", "message": "must not be empty"},
        {"path": "phases[0].complexity", "message": "must be one of low, medium, high (got 'x')"},
    ]
    assert caught.value.message.startswith("the plan has 2 errors:\n")


def test_a_document_over_one_mebibyte_is_refused_before_parsing() -> None:
    text = "name: big\n# " + "x" * (1024 * 1024) + "\n"
    assert errors_of(text) == ["document: the plan is 1,048,589 bytes; the limit is 1,048,576 bytes (1 MiB)"]


def test_a_huge_dict_document_is_refused_too() -> None:
    plan = valid_plan()
    plan["goal"] = "y" * (1024 * 1024)
    assert errors_of(plan)[0].startswith("document: the plan is 1,04")


def test_invalid_yaml_names_the_line_and_column() -> None:
    text = "name: Demo\ntiers:\n  - id: t1\n    name: [unclosed\nphases: []\n"
    assert errors_of(text) == ["document: invalid YAML at line 5, column 7: expected ',' or ']', but got ':'"]


def test_invalid_json_names_the_line_and_column() -> None:
    text = '{\n  "name": "Demo",\n  "tiers": [,]\n}'
    assert errors_of(text) == ["document: invalid JSON at line 3, column 13: Expecting value"]


def test_yaml_aliases_are_refused_so_a_small_file_cannot_expand() -> None:
    text = "name: &a Demo\ngoal: *a\n"
    assert errors_of(text) == ["document: invalid YAML at line 2, column 7: aliases (*name) are not allowed in plans"]


def test_duplicate_yaml_keys_are_refused() -> None:
    assert errors_of("name: A\nname: B\n") == ["document: invalid YAML at line 2, column 1: duplicate key 'name'"]


def test_a_document_that_is_not_an_object_is_refused() -> None:
    assert errors_of("- a\n- b\n") == ["document: must be an object, not a list"]


def test_loose_input_is_fixed_with_one_warning_per_fix() -> None:
    plan = valid_plan()
    phase = plan["phases"][0]
    phase["scope"] = {
        "deliverables": {"code": ["./src/a.py", "src\\b.py"], "tests": ["tests/test_a.py (10+ tests)"]},
    }
    phase["complexity"] = "Hard"
    validated = validate_plan(plan)
    scope = validated.plan["phases"][0]["scope"]
    assert scope["deliverables"] == ["src/a.py", "src/b.py", "tests/test_a.py"]
    assert scope["paths"] == ["src/a.py", "src/b.py", "tests/test_a.py"]
    assert validated.plan["phases"][0]["complexity"] == "high"
    assert validated.warnings == [
        "phases[0].complexity: read 'Hard' as 'high'",
        "phases[0].scope.deliverables: flattened the buckets code, tests into one list of 3 path(s)",
        "phases[0].scope.deliverables[0]: removed './' ('./src/a.py' → 'src/a.py')",
        "phases[0].scope.deliverables[1]: replaced '\\' with '/' ('src\\\\b.py' → 'src/b.py')",
        "phases[0].scope.deliverables[2]: stripped the annotation '(10+ tests)' "
        "('tests/test_a.py (10+ tests)' → 'tests/test_a.py')",
        "phases[0].scope.paths: none given; derived from the 3 deliverable(s)",
    ]


def test_a_plan_without_tiers_gets_one_and_phases_join_it() -> None:
    plan = {"name": "Solo", "phases": [{"id": "p1", "name": "Only", "scope": {"deliverables": ["a.py"]}}]}
    validated = validate_plan(plan)
    assert validated.plan["tiers"] == [{"id": "main", "name": "Main", "description": ""}]
    assert validated.plan["phases"][0]["tier"] == "main"
    assert validated.warnings == [
        "tiers: none given; added the tier 'main'",
        "phases[0].scope.paths: none given; derived from the 1 deliverable(s)",
        "phases[0].tier: not given; set to the only tier 'main'",
    ]


def test_canonical_plan_fills_defaults_and_orders_phases_by_tier() -> None:
    plan = valid_plan()
    plan["phases"].reverse()
    validated = validate_plan(plan)
    assert [phase["id"] for phase in validated.plan["phases"]] == ["p1", "p2"]
    assert validated.warnings == ["phases: reordered to follow the order of their tiers (phases run tier by tier)"]
    assert validated.plan["budgets"] == {
        "token_cap": 5_000_000,
        "usd_cap": 50,
        "max_phases": 5,
        "max_minutes": 120,
        "max_failures": 25,
        "max_patch_failures": 15,
    }
    assert validated.plan["phases"][0] == {
        "id": "p1",
        "tier": "t1",
        "name": "First",
        "description": "",
        "category": "feature",
        "complexity": "medium",
        "scope": {
            "paths": ["src/a.py"],
            "read_only_context": [],
            "deliverables": ["src/a.py"],
            "acceptance_criteria": [],
            "allow_test_edits": False,
            "allow_noop": False,
        },
    }


def test_the_same_plan_written_as_yaml_or_json_hashes_the_same() -> None:
    as_dict = validate_plan(valid_plan())
    as_json = validate_plan(json.dumps(valid_plan()), source_name="plan.json")
    explicit = valid_plan()
    explicit["budgets"].update(token_cap=5_000_000, usd_cap=50.0)
    as_explicit = validate_plan(explicit)
    assert as_dict.sha256 == as_json.sha256 == as_explicit.sha256
    assert len(as_dict.sha256) == 64
    assert validate_plan(mutated(lambda p: p.update(goal="other"))).sha256 != as_dict.sha256


def test_the_schema_in_the_docs_is_the_schema_in_the_code() -> None:
    doc = (ROOT / "docs" / "plan-format.md").read_text()
    block = doc.split("## JSON Schema (draft 2020-12)", 1)[1]
    schema_text = re.search(r"```json\n(.*?)```", block, re.S).group(1)
    assert json.loads(schema_text) == PLAN_SCHEMA


def test_the_worked_examples_in_the_docs_are_the_fixture_files_and_validate() -> None:
    doc = (ROOT / "docs" / "plan-format.md").read_text()
    yaml_example = (PLANS / "example_basic.yaml").read_text()
    json_example = (PLANS / "example_loose.json").read_text()
    assert f"```yaml\n{yaml_example}```" in doc
    assert f"```json\n{json_example}```" in doc
    assert validate_plan(yaml_example, source_name="example_basic.yaml").warnings == []
    warnings = validate_plan(json_example, source_name="example_loose.json").warnings
    for warning in warnings:
        assert warning in doc
    assert len(warnings) == 13


def test_yaml_infinity_is_refused_and_a_byte_order_mark_is_not() -> None:
    assert errors_of("name: Demo\nbudgets: {usd_cap: .inf}\n")[0] == "budgets.usd_cap: must be a finite number"
    text = "\ufeff" + json.dumps(valid_plan())
    assert validate_plan(text).plan["name"] == "Demo"
    assert validate_plan(text.encode("utf-8")).plan["name"] == "Demo"


def test_a_file_that_is_not_utf8_is_refused() -> None:
    assert errors_of(b"name: \xff\xfe\n") == ["document: the file is not UTF-8 text (byte 6)"]


@pytest.mark.parametrize("scope", [{}, {"deliverables": []}], ids=["no deliverables key", "empty deliverables"])
def test_a_research_phase_needs_no_deliverables_because_its_output_is_its_report(scope: dict[str, Any]) -> None:
    plan = mutated(lambda p: phase0(p).update(category="research", scope=scope))

    validated = validate_plan(plan)

    research = next(phase for phase in validated.plan["phases"] if phase["id"] == "p1")
    assert research["category"] == "research"
    assert research["scope"]["deliverables"] == [] and research["scope"]["paths"] == []
    assert not any(warning.startswith("phases[0].scope.paths") for warning in validated.warnings)


@pytest.mark.parametrize("category", ["feature", "docs", None])
def test_every_other_category_still_needs_a_deliverable(category: str | None) -> None:
    def change(plan: dict[str, Any]) -> None:
        phase0(plan).update(scope={})
        if category:
            phase0(plan)["category"] = category

    assert errors_of(mutated(change)) == ["phases[0].scope.deliverables: is required"]


def test_a_research_phase_with_a_bad_deliverable_is_still_refused() -> None:
    plan = mutated(lambda p: phase0(p).update(category="research", scope={"deliverables": ["/abs.md"]}))

    assert errors_of(plan) == ["phases[0].scope.deliverables[0]: absolute paths are not allowed"]
