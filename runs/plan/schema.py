"""The plan's JSON Schema (draft 2020-12) and the translation of schema violations into plain messages.

The schema checks shape, types and size caps. Rules that need more than one field at a time (tier
references, unique ids, path safety, phase count against ``budgets.max_phases``) live in ``validate``.
``x-message`` is our own annotation: the message used when a ``pattern`` does not match.
"""

from __future__ import annotations

import difflib
from typing import Any

from jsonschema import Draft202012Validator

from runs.plan.errors import PlanError, join_path

CATEGORIES = ("feature", "backend", "frontend", "tests", "docs", "config", "refactor", "bugfix", "database", "research")
COMPLEXITIES = ("low", "medium", "high")
ROLES = ("builder", "auditor", "doctor")

MAX_PHASES = 500
MAX_TIERS = 100
MAX_PATHS = 200
MAX_PATH_CHARS = 1024
MAX_TEXT_CHARS = 20_000
MAX_CRITERION_CHARS = 2_000

_IDENTIFIER = {
    "type": "string",
    "minLength": 1,
    "maxLength": 100,
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$",
    "x-message": "must start with a letter or digit and contain only letters, digits, '.', '_' and '-'",
}
_NAME = {"type": "string", "minLength": 1, "maxLength": 200}
_TEXT = {"type": "string", "maxLength": MAX_TEXT_CHARS}
_PATH = {"type": "string", "minLength": 1, "maxLength": MAX_PATH_CHARS}
_PATH_LIST = {"type": "array", "items": _PATH, "maxItems": MAX_PATHS}
_MODEL = {"type": "string", "minLength": 1, "maxLength": 100}

# Mirrors ``runs.engine.spec.CiSpec``; an omitted field falls back to the project's default and to detection.
CI_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "command": {"type": "string", "minLength": 1, "maxLength": 1000},
        "install_command": {"type": "string", "maxLength": 1000},
        "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 7200},
        "working_directory": _PATH,
        "junit_path": _PATH,
        "required_tests": {
            "type": "array",
            "maxItems": MAX_PATHS,
            "items": {"type": "string", "minLength": 1, "maxLength": 500},
        },
        "coverage": {"type": "boolean"},
        "coverage_json": _PATH,
        "coverage_drop_threshold": {"type": "number", "minimum": 0, "maximum": 100},
        "strict": {"type": "boolean"},
        "skip": {"type": "boolean"},
    },
}

SCOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["deliverables"],
    "properties": {
        "paths": _PATH_LIST,
        "read_only_context": _PATH_LIST,
        "deliverables": {**_PATH_LIST, "minItems": 1, "x-message": "must list at least one file the phase produces"},
        "acceptance_criteria": {
            "type": "array",
            "maxItems": 100,
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_CRITERION_CHARS},
        },
        "ci": CI_SCHEMA,
        "allow_test_edits": {"type": "boolean"},
        "allow_noop": {"type": "boolean"},
    },
}

PHASE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "tier", "name", "scope"],
    "properties": {
        "id": _IDENTIFIER,
        "tier": _IDENTIFIER,
        "name": _NAME,
        "description": _TEXT,
        "category": {"enum": list(CATEGORIES)},
        "complexity": {"enum": list(COMPLEXITIES)},
        "scope": SCOPE_SCHEMA,
    },
}

TIER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "name"],
    "properties": {"id": _IDENTIFIER, "name": _NAME, "description": _TEXT},
}

BUDGETS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "token_cap": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000},
        "usd_cap": {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000},
        "max_phases": {"type": "integer", "minimum": 1, "maximum": MAX_PHASES},
        "max_minutes": {"type": "integer", "minimum": 1, "maximum": 10_080},
        "max_failures": {"type": "integer", "minimum": 1, "maximum": 1000},
        "max_patch_failures": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
}

MODELS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        role: {
            "type": "object",
            "additionalProperties": False,
            "properties": {complexity: _MODEL for complexity in COMPLEXITIES},
        }
        for role in ROLES
    },
}

PLAN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://autopack.invalid/schemas/plan-v1.json",
    "title": "Autopack plan",
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "tiers", "phases"],
    "properties": {
        "version": {"const": 1},
        "name": _NAME,
        "goal": _TEXT,
        "budgets": BUDGETS_SCHEMA,
        "models": MODELS_SCHEMA,
        "tiers": {"type": "array", "minItems": 1, "maxItems": MAX_TIERS, "items": TIER_SCHEMA},
        "phases": {"type": "array", "minItems": 1, "maxItems": MAX_PHASES, "items": PHASE_SCHEMA},
    },
}

Draft202012Validator.check_schema(PLAN_SCHEMA)
_VALIDATOR = Draft202012Validator(PLAN_SCHEMA)

_TYPE_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}
_SCHEMA_TYPE_NAMES = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "boolean": "true or false",
    "integer": "an integer",
    "number": "a number",
}


def describe_type(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def schema_errors(document: Any) -> list[PlanError]:
    errors: list[PlanError] = []
    for error in _VALIDATOR.iter_errors(document):
        path = ""
        for key in error.absolute_path:
            path = join_path(path, key)
        errors.extend(_translate(error, path))
    return errors


def _translate(error: Any, path: str) -> list[PlanError]:
    handler = _HANDLERS.get(error.validator)
    if handler is None:
        return [PlanError(path, error.message)]
    return handler(error, path)


def _type(error: Any, path: str) -> list[PlanError]:
    wanted = _SCHEMA_TYPE_NAMES.get(error.validator_value, error.validator_value)
    return [PlanError(path, f"must be {wanted}, not {describe_type(error.instance)}")]


def _required(error: Any, path: str) -> list[PlanError]:
    present = set(error.instance)
    # jsonschema reports each missing name separately; ``validate`` removes the duplicates this makes.
    return [PlanError(join_path(path, name), "is required") for name in error.validator_value if name not in present]


def _additional(error: Any, path: str) -> list[PlanError]:
    known = list(error.schema.get("properties", {}))
    problems = []
    for key in error.instance:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; allowed: {', '.join(known)}"
        problems.append(PlanError(join_path(path, str(key)), f"unknown field{hint}"))
    return problems


def _enum(error: Any, path: str) -> list[PlanError]:
    choices = ", ".join(str(choice) for choice in error.validator_value)
    return [PlanError(path, f"must be one of {choices} (got {_short(error.instance)})")]


def _simple(template: str) -> Any:
    def handler(error: Any, path: str) -> list[PlanError]:
        instance = error.instance
        size = len(instance) if isinstance(instance, list | dict | str) else instance
        return [PlanError(path, template.format(limit=error.validator_value, size=size, value=_short(instance)))]

    return handler


def _min_length(error: Any, path: str) -> list[PlanError]:
    return [PlanError(path, "must not be empty")]


def _min_items(error: Any, path: str) -> list[PlanError]:
    limit = error.validator_value
    if "x-message" in error.schema:
        return [PlanError(path, error.schema["x-message"])]
    return [PlanError(path, f"must list at least {limit} item{'s' if limit != 1 else ''}")]


def _pattern(error: Any, path: str) -> list[PlanError]:
    message = error.schema.get("x-message", f"must match {error.validator_value}")
    return [PlanError(path, f"{message} (got {_short(error.instance)})")]


def _const(error: Any, path: str) -> list[PlanError]:
    return [PlanError(path, f"must be {error.validator_value!r} (got {_short(error.instance)})")]


_HANDLERS = {
    "type": _type,
    "required": _required,
    "additionalProperties": _additional,
    "enum": _enum,
    "const": _const,
    "pattern": _pattern,
    "minLength": _min_length,
    "maxLength": _simple("must be at most {limit:,} characters (got {size:,})"),
    "minItems": _min_items,
    "maxItems": _simple("must list at most {limit:,} items (got {size:,})"),
    "maxProperties": _simple("must have at most {limit:,} entries (got {size:,})"),
    "minimum": _simple("must be at least {limit:,} (got {value})"),
    "maximum": _simple("must be at most {limit:,} (got {value})"),
    "exclusiveMinimum": _simple("must be more than {limit:,} (got {value})"),
}
