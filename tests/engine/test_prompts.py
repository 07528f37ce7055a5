"""Versioned prompts and the tolerant parsing of Auditor and Doctor answers."""

from __future__ import annotations

import sys

from runs.engine.context import build_context
from runs.engine.prompts import (
    PROMPT_VERSIONS,
    builder_prompt,
    display_command,
    doctor_prompt,
    extract_json_object,
    parse_audit,
    parse_doctor,
)
from runs.engine.spec import History, PhaseSpec


def spec(**overrides) -> PhaseSpec:
    values = dict(
        run_id=1,
        phase_pk=1,
        phase_id="p1",
        name="Add mul",
        description="Add calc.mul",
        scope_paths=["calc/"],
        deliverables=["calc/mul.py"],
        acceptance_criteria=["mul(2, 3) == 6"],
        protected_paths=["config/prod.yaml"],
    )
    values.update(overrides)
    return PhaseSpec(**values)


def test_the_builder_is_told_format_scope_deliverables_criteria_protected_paths_and_the_hint():
    prompt = builder_prompt(
        spec(history=History(attempt_number=2)),
        stable_context="MAP",
        volatile_context="FILES",
        test_command=f"{sys.executable} -m pytest --junitxml=/tmp/x.xml",
        feedback="test_x failed",
        hint="use a * b",
    )
    assert '{"op":"write"' in prompt.system and "- calc/" in prompt.system and "config/prod.yaml" in prompt.system
    assert "Do not modify existing tests" in prompt.system
    for text in (
        "- calc/mul.py",
        "mul(2, 3) == 6",
        "attempt 2 of 5",
        "test_x failed",
        "use a * b",
        "`python -m pytest`",
    ):
        assert text in prompt.user
    assert prompt.cache_prefix == "MAP" and prompt.user.startswith("FILES")
    assert prompt.version == PROMPT_VERSIONS["builder"] == "builder_v1"


def test_the_first_attempt_has_no_feedback_section():
    prompt = builder_prompt(spec(), stable_context="", volatile_context="", test_command="", feedback="", hint="")
    assert "What went wrong" not in prompt.user and "Hint" not in prompt.user


def test_machine_paths_never_reach_a_prompt():
    assert display_command(f"{sys.executable} -m pytest -q --junitxml=/var/tmp/a.xml") == "python -m pytest -q"


def test_auditor_json_is_found_in_fences_and_prose_with_trailing_commas():
    verdict = parse_audit('Here you go:\n```json\n{"approved": true, "issues": [], "summary": "ok",}\n```\nThanks')
    assert verdict.parsed and verdict.approved and verdict.summary == "ok"


def test_a_major_issue_rejects_even_when_approved_says_true():
    verdict = parse_audit(
        '{"approved": true, "issues": [{"severity": "major", "category": "security", '
        '"description": "eval on input", "file_path": "cli.py", "line": 3}], "summary": "s"}'
    )
    assert not verdict.approved
    assert "[major] eval on input (cli.py:3)" in verdict.feedback()


def test_minor_issues_do_not_reject():
    verdict = parse_audit('{"approved": true, "issues": [{"severity": "minor", "description": "naming"}]}')
    assert verdict.approved


def test_unparseable_auditor_output_is_a_rejection():
    for text in ("LGTM!", '{"approved": maybe}', '{"summary": "no verdict"}', ""):
        verdict = parse_audit(text)
        assert not verdict.approved and not verdict.parsed


def test_doctor_json_is_parsed_tolerantly_and_normalised():
    advice = parse_doctor('Diagnosis:\n{"action": "Replan", "confidence": 1.7, "rationale": "r", "builder_hint": "h"}')
    assert (advice.action, advice.confidence, advice.builder_hint) == ("replan", 1.0, "h")


def test_unparseable_doctor_output_means_no_advice():
    assert parse_doctor("Try harder.") is None
    assert parse_doctor('{"action": "reboot_the_universe"}') is None


def test_braces_inside_json_strings_do_not_confuse_extraction():
    assert extract_json_object('x {"a": "} {", "b": {"c": 1}} y') == {"a": "} {", "b": {"c": 1}}


LONG_GOAL = "Rendre le café plus rapide à préparer, sans perdre l'arôme. " * 100  # ~6 KB, not ASCII


def test_the_builder_context_anchors_the_run_goal_in_at_most_2_kb(tmp_path):
    bundle = build_context(spec(goal="Ship multiplication."), tmp_path)
    assert "## Run goal\nShip multiplication." in bundle.stable
    long = build_context(spec(goal=LONG_GOAL), tmp_path).stable
    anchor = long[long.index("## Run goal\n") + len("## Run goal\n") :].strip()
    assert anchor.startswith("Rendre le café") and anchor.endswith("…")
    assert len(anchor.encode("utf-8")) <= 2048


def test_the_doctor_is_reminded_of_the_run_goal_in_at_most_512_bytes():
    short = doctor_prompt(spec(goal="Ship\nmultiplication."), failure="boom", diff="")
    assert "## Run goal\nShip multiplication.\n" in short.user
    long = doctor_prompt(spec(goal=LONG_GOAL), failure="boom", diff="").user
    reminder = long.split("## Run goal\n", 1)[1].split("\n## ", 1)[0].strip()
    assert reminder.startswith("Rendre le café") and len(reminder.encode("utf-8")) <= 512
    assert len(reminder.encode("utf-8")) > 480  # cut to the byte budget, not far below it
