"""Fix what people write loosely in plan documents, with one warning per fix.

Runs before schema validation on a deep copy of the parsed document. It only rewrites values whose shape it
recognises; anything else is left untouched for the schema and the semantic checks to report. (Scope paths
derived from deliverables are filled in later, by ``validate.canonical_plan``, so that a bad deliverable is
reported once, not again as a bad scope path.)
"""

from __future__ import annotations

import copy
from typing import Any

from runs.plan.errors import join_path
from runs.plan.paths import tidy_path
from runs.plan.schema import CATEGORIES, COMPLEXITIES

SCOPE_KEYS = (
    "paths",
    "read_only_context",
    "deliverables",
    "acceptance_criteria",
    "ci",
    "allow_test_edits",
    "allow_noop",
)
PATH_LISTS = ("paths", "read_only_context", "deliverables")
DEFAULT_TIER = {"id": "main", "name": "Main"}

CATEGORY_SYNONYMS = {
    "test": "tests",
    "testing": "tests",
    "doc": "docs",
    "documentation": "docs",
    "bug": "bugfix",
    "fix": "bugfix",
    "bug-fix": "bugfix",
    "bug_fix": "bugfix",
    "db": "database",
    "sql": "database",
    "migration": "database",
    "migrations": "database",
    "configuration": "config",
    "infra": "config",
    "infrastructure": "config",
    "ui": "frontend",
    "api": "backend",
    "refactoring": "refactor",
    "spike": "research",
}
COMPLEXITY_SYNONYMS = {
    "easy": "low",
    "simple": "low",
    "small": "low",
    "trivial": "low",
    "med": "medium",
    "moderate": "medium",
    "normal": "medium",
    "hard": "high",
    "complex": "high",
    "large": "high",
}


def normalize_document(document: Any) -> tuple[Any, list[str]]:
    """Return a fixed copy of ``document`` and the warnings describing each fix."""
    if not isinstance(document, dict):
        return document, []
    document = copy.deepcopy(document)
    warnings: list[str] = []
    _hoist_nested_phases(document, warnings)
    _supply_tiers(document, warnings)
    phases = document.get("phases")
    if isinstance(phases, list):
        for index, phase in enumerate(phases):
            if isinstance(phase, dict):
                _normalize_phase(phase, join_path("phases", index), warnings)
    return document, warnings


def _hoist_nested_phases(document: dict[str, Any], warnings: list[str]) -> None:
    tiers = document.get("tiers")
    if not isinstance(tiers, list):
        return
    hoisted: list[Any] = []
    for index, tier in enumerate(tiers):
        if not isinstance(tier, dict) or not isinstance(tier.get("phases"), list):
            continue
        nested = tier.pop("phases")
        for phase in nested:
            if isinstance(phase, dict) and "tier" not in phase and isinstance(tier.get("id"), str):
                phase["tier"] = tier["id"]
        hoisted.extend(nested)
        warnings.append(f"tiers[{index}].phases: moved {len(nested)} nested phase(s) to the top-level phases list")
    if hoisted:
        existing = document.get("phases")
        document["phases"] = (existing if isinstance(existing, list) else []) + hoisted


def _supply_tiers(document: dict[str, Any], warnings: list[str]) -> None:
    """A plan without tiers gets one; with a single tier, phases that name none belong to it."""
    phases = document.get("phases")
    if not isinstance(phases, list):
        return
    untiered = [phase for phase in phases if isinstance(phase, dict) and "tier" not in phase]
    if "tiers" not in document and len(untiered) == len(phases):
        document["tiers"] = [dict(DEFAULT_TIER)]
        warnings.append(f"tiers: none given; added the tier '{DEFAULT_TIER['id']}'")
    tiers = document.get("tiers")
    if not (isinstance(tiers, list) and len(tiers) == 1 and isinstance(tiers[0], dict)):
        return
    tier_id = tiers[0].get("id")
    if not isinstance(tier_id, str):
        return
    for index, phase in enumerate(phases):
        if isinstance(phase, dict) and "tier" not in phase:
            phase["tier"] = tier_id
            warnings.append(f"phases[{index}].tier: not given; set to the only tier '{tier_id}'")


def _normalize_phase(phase: dict[str, Any], path: str, warnings: list[str]) -> None:
    _move_scope_keys(phase, path, warnings)
    _normalize_choice(phase, "category", CATEGORY_SYNONYMS, CATEGORIES, path, warnings)
    _normalize_choice(phase, "complexity", COMPLEXITY_SYNONYMS, COMPLEXITIES, path, warnings)
    scope = phase.get("scope")
    if not isinstance(scope, dict):
        return
    scope_path = join_path(path, "scope")
    _flatten_buckets(scope, scope_path, warnings)
    for key in (*PATH_LISTS, "acceptance_criteria"):
        _wrap_single_string(scope, key, scope_path, warnings)
    for key in PATH_LISTS:
        if isinstance(scope.get(key), list):
            scope[key] = _tidy_path_list(scope[key], join_path(scope_path, key), warnings)
    _normalize_ci(scope, scope_path, warnings)


def _move_scope_keys(phase: dict[str, Any], path: str, warnings: list[str]) -> None:
    """``deliverables: [...]`` written beside ``name`` instead of under ``scope`` is moved there."""
    if "scope" in phase and not isinstance(phase["scope"], dict):
        return
    for key in SCOPE_KEYS:
        if key not in phase:
            continue
        scope = phase.setdefault("scope", {})
        if key in scope:
            continue  # both places: leave the stray one for the schema to report as unknown
        scope[key] = phase.pop(key)
        warnings.append(f"{join_path(path, key)}: moved into {path}.scope")


def _normalize_choice(
    phase: dict[str, Any],
    field: str,
    synonyms: dict[str, str],
    allowed: tuple[str, ...],
    path: str,
    warnings: list[str],
) -> None:
    value = phase.get(field)
    if not isinstance(value, str):
        return
    folded = value.strip().lower()
    folded = synonyms.get(folded, folded)
    if folded != value and folded in allowed:
        phase[field] = folded
        warnings.append(f"{join_path(path, field)}: read {value!r} as {folded!r}")


def _flatten_buckets(scope: dict[str, Any], path: str, warnings: list[str]) -> None:
    buckets = scope.get("deliverables")
    if not isinstance(buckets, dict):
        return
    flat: list[Any] = []
    for items in buckets.values():
        if isinstance(items, str):
            flat.append(items)
        elif isinstance(items, list):
            flat.extend(items)
        else:
            return  # a bucket we cannot read: let the schema say deliverables must be a list
    scope["deliverables"] = flat
    names = ", ".join(str(name) for name in buckets)
    warnings.append(f"{path}.deliverables: flattened the buckets {names} into one list of {len(flat)} path(s)")


def _wrap_single_string(scope: dict[str, Any], key: str, path: str, warnings: list[str]) -> None:
    if isinstance(scope.get(key), str):
        scope[key] = [scope[key]]
        warnings.append(f"{path}.{key}: a single string; turned into a list")


def _tidy_path_list(items: list[Any], path: str, warnings: list[str]) -> list[Any]:
    result: list[Any] = []
    for index, item in enumerate(items):
        if not isinstance(item, str):
            result.append(item)
            continue
        tidy, fixes = tidy_path(item)
        if fixes:
            warnings.append(f"{path}[{index}]: {'; '.join(fixes)} ({item!r} → {tidy!r})")
        if tidy and tidy in result:
            warnings.append(f"{path}[{index}]: removed the duplicate {tidy!r}")
            continue
        result.append(tidy)
    return result


CI_ALIASES = {"junit": "junit_path", "timeout": "timeout_seconds", "cwd": "working_directory"}


def _normalize_ci(scope: dict[str, Any], path: str, warnings: list[str]) -> None:
    if isinstance(scope.get("ci"), str):
        scope["ci"] = {"command": scope["ci"]}
        warnings.append(f"{path}.ci: a bare command; turned into {{command: ...}}")
    ci = scope.get("ci")
    if not isinstance(ci, dict):
        return
    for alias, name in CI_ALIASES.items():
        if alias in ci and name not in ci:
            ci[name] = ci.pop(alias)
            warnings.append(f"{path}.ci.{alias}: read as {name}")
