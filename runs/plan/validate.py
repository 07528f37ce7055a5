"""Validate a plan document: parse, fix loose input, check the schema and the cross-field rules, canonicalise.

``validate_plan`` is the one entry point; it raises ``PlanInvalid`` with every error found, or returns the
canonical plan (every default filled in, phases in execution order), its warnings and its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from runs.plan.errors import PlanError, PlanInvalid
from runs.plan.normalize import normalize_document
from runs.plan.parse import check_plain_data, check_size, parse_text
from runs.plan.paths import path_problem
from runs.plan.schema import PLAN_SCHEMA, SCOPE_SCHEMA, schema_errors

# Mirrors the Run model's defaults so an omitted budget and an explicit default hash the same.
DEFAULT_BUDGETS: dict[str, Any] = {
    "token_cap": 5_000_000,
    "usd_cap": 50,
    "max_phases": 25,
    "max_minutes": 120,
    "max_failures": 25,
    "max_patch_failures": 15,
}
DEFAULT_CI_TIMEOUT_SECONDS = 600
_TOP_LEVEL_ORDER = {name: rank for rank, name in enumerate(PLAN_SCHEMA["properties"])}
CI_PATH_FIELDS = ("working_directory", "junit_path", "coverage_json")
RESEARCH_CATEGORY = "research"


@dataclass(frozen=True)
class ValidatedPlan:
    plan: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    sha256: str = ""
    # source_positions[i] is where plan["phases"][i] was in the document, for error paths after reordering.
    source_positions: list[int] = field(default_factory=list)


def validate_plan(document: dict[str, Any] | str | bytes, *, source_name: str = "") -> ValidatedPlan:
    data = _load(document, source_name)
    data, warnings = normalize_document(data)
    errors = _unique(_without_research_deliverable_errors(data, schema_errors(data)) + semantic_errors(data))
    if errors:
        raise PlanInvalid(sorted(errors, key=_error_order))
    plan, positions, canonical_warnings = canonical_plan(data)
    warnings = sorted(warnings + canonical_warnings, key=_warning_order)
    if positions != sorted(positions):
        warnings.append("phases: reordered to follow the order of their tiers (phases run tier by tier)")
    return ValidatedPlan(plan=plan, warnings=warnings, sha256=plan_sha256(plan), source_positions=positions)


def _without_research_deliverable_errors(data: Any, errors: list[PlanError]) -> list[PlanError]:
    """A research phase's output is its report, not files: it needs no deliverables (the schema asks for them).

    Only the "required"/"at least one" complaints are dropped; a deliverables value of the wrong type or an
    unsafe path is still an error.
    """
    phases = data.get("phases") if isinstance(data, dict) and isinstance(data.get("phases"), list) else []
    exempt = {
        f"phases[{index}].scope.deliverables"
        for index, phase in enumerate(phases)
        if isinstance(phase, dict) and phase.get("category") == RESEARCH_CATEGORY
    }
    missing = ("is required", SCOPE_SCHEMA["properties"]["deliverables"]["x-message"])
    return [error for error in errors if not (error.path in exempt and error.message in missing)]


def _warning_order(warning: str) -> tuple[Any, ...]:
    """Warnings read in document order, like errors (a stable sort keeps each path's fixes in order)."""
    return _error_order(PlanError(warning.split(": ", 1)[0], ""))[0]


def _load(document: dict[str, Any] | str | bytes, source_name: str) -> Any:
    if isinstance(document, bytes):
        check_size(len(document))
        try:
            document = document.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PlanInvalid([PlanError("", f"the file is not UTF-8 text (byte {exc.start})")]) from None
    if isinstance(document, str):
        data = parse_text(document, source_name=source_name)
        check_plain_data(data)
        return data
    check_plain_data(document)
    check_size(len(json.dumps(document, default=str).encode("utf-8", "surrogatepass")))
    return document


def plan_sha256(plan: dict[str, Any]) -> str:
    canonical = json.dumps(plan, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _unique(errors: list[PlanError]) -> list[PlanError]:
    return list(dict.fromkeys(errors))


def _error_order(error: PlanError) -> tuple[Any, ...]:
    """Document order: ``phases[10]`` after ``phases[2]``, which plain string sorting gets wrong."""
    parts: list[tuple[int, Any, Any]] = []
    for token in error.path.replace("]", "").replace("[", ".").split("."):
        if token.isascii() and token.isdigit():  # '³'.isdigit() is true too, and int('³') fails
            parts.append((0, int(token), ""))
        else:  # top-level fields in the order a plan is written, nested ones alphabetically
            parts.append((1, _TOP_LEVEL_ORDER.get(token, len(_TOP_LEVEL_ORDER)) if not parts else 0, token))
    return (tuple(parts), error.message)


# --- cross-field rules ---------------------------------------------------------------------------------


def semantic_errors(data: Any) -> list[PlanError]:
    """Rules the schema cannot express. Defensive: values of the wrong type are the schema's to report."""
    if not isinstance(data, dict):
        return []
    tiers = data.get("tiers") if isinstance(data.get("tiers"), list) else []
    phases = data.get("phases") if isinstance(data.get("phases"), list) else []
    errors = _duplicate_ids(tiers, "tiers", "tier") + _duplicate_ids(phases, "phases", "phase")
    errors += _unknown_tiers(tiers, phases)
    errors += _phase_count(data, phases)
    for index, phase in enumerate(phases):
        if isinstance(phase, dict) and isinstance(phase.get("scope"), dict):
            errors += _scope_path_errors(phase["scope"], f"phases[{index}].scope")
    return errors


def _ids(items: list[Any]) -> list[tuple[int, str]]:
    return [
        (i, item["id"]) for i, item in enumerate(items) if isinstance(item, dict) and isinstance(item.get("id"), str)
    ]


def _duplicate_ids(items: list[Any], list_name: str, noun: str) -> list[PlanError]:
    first_seen: dict[str, int] = {}
    errors = []
    for index, item_id in _ids(items):
        if item_id in first_seen:
            errors.append(
                PlanError(
                    f"{list_name}[{index}].id",
                    f"duplicate {noun} id {item_id!r} (first used by {list_name}[{first_seen[item_id]}])",
                )
            )
        else:
            first_seen[item_id] = index
    return errors


def _unknown_tiers(tiers: list[Any], phases: list[Any]) -> list[PlanError]:
    known = list(dict.fromkeys(tier_id for _, tier_id in _ids(tiers)))
    if not known:
        return []  # no usable tier at all: the schema already says so
    errors = []
    for index, phase in enumerate(phases):
        tier = phase.get("tier") if isinstance(phase, dict) else None
        if isinstance(tier, str) and tier not in known:
            errors.append(PlanError(f"phases[{index}].tier", f"unknown tier {tier!r} (tiers: {', '.join(known)})"))
    return errors


def _phase_count(data: dict[str, Any], phases: list[Any]) -> list[PlanError]:
    budgets = data.get("budgets") if isinstance(data.get("budgets"), dict) else {}
    limit = budgets.get("max_phases", DEFAULT_BUDGETS["max_phases"])
    if not isinstance(limit, int) or isinstance(limit, bool) or len(phases) <= limit:
        return []
    source = "budgets.max_phases" if "max_phases" in budgets else "the default budgets.max_phases"
    return [PlanError("phases", f"the plan has {len(phases)} phases, more than {source} ({limit})")]


def _scope_path_errors(scope: dict[str, Any], path: str) -> list[PlanError]:
    candidates: list[tuple[str, Any]] = []
    for key in ("paths", "read_only_context", "deliverables"):
        if isinstance(scope.get(key), list):
            candidates += [(f"{path}.{key}[{i}]", value) for i, value in enumerate(scope[key])]
    ci = scope.get("ci")
    if isinstance(ci, dict):
        candidates += [(f"{path}.ci.{key}", ci.get(key)) for key in CI_PATH_FIELDS]
    errors = []
    for value_path, value in candidates:
        # junit_path may be a glob ("target/surefire-reports/*.xml"); scope entries may not.
        globbing = value_path.endswith(".junit_path")
        problem = path_problem(value, allow_wildcards=globbing) if isinstance(value, str) and value else None
        if problem:
            errors.append(PlanError(value_path, problem))
    return errors


# --- canonical form ------------------------------------------------------------------------------------


def canonical_plan(data: dict[str, Any]) -> tuple[dict[str, Any], list[int], list[str]]:
    """Fill every default and order phases by tier, so equal plans serialise (and hash) equally.

    Returns the plan, for each of its phases the phase's position in the document, and warnings."""
    tiers = [_canonical_tier(tier) for tier in data["tiers"]]
    tier_order = {tier["id"]: index for index, tier in enumerate(tiers)}
    phases = [_canonical_phase(phase) for phase in data["phases"]]
    warnings = [
        f"phases[{index}].scope.paths: none given; derived from the {len(phase['scope']['deliverables'])} "
        "deliverable(s)"
        for index, phase in enumerate(data["phases"])
        if not phase["scope"].get("paths") and phase["scope"].get("deliverables")
    ]
    positions = sorted(range(len(phases)), key=lambda position: tier_order[phases[position]["tier"]])
    ordered = [phases[position] for position in positions]
    budgets = {**DEFAULT_BUDGETS, **data.get("budgets", {})}
    if isinstance(budgets["usd_cap"], float) and budgets["usd_cap"].is_integer():
        budgets["usd_cap"] = int(budgets["usd_cap"])
    plan = {
        "version": 1,
        "name": data["name"],
        "goal": data.get("goal", ""),
        "budgets": budgets,
        "models": data.get("models", {}),
        "tiers": tiers,
        "phases": ordered,
    }
    return plan, positions, warnings


def _canonical_tier(tier: dict[str, Any]) -> dict[str, Any]:
    return {"id": tier["id"], "name": tier["name"], "description": tier.get("description", "")}


def _canonical_phase(phase: dict[str, Any]) -> dict[str, Any]:
    scope = phase["scope"]
    canonical_scope: dict[str, Any] = {
        "paths": scope.get("paths") or list(scope.get("deliverables", [])),
        "read_only_context": scope.get("read_only_context", []),
        "deliverables": scope.get("deliverables", []),
        "acceptance_criteria": scope.get("acceptance_criteria", []),
        "allow_test_edits": scope.get("allow_test_edits", False),
        "allow_noop": scope.get("allow_noop", False),
    }
    if "ci" in scope:
        canonical_scope["ci"] = {"timeout_seconds": DEFAULT_CI_TIMEOUT_SECONDS, **scope["ci"]}
    return {
        "id": phase["id"],
        "tier": phase["tier"],
        "name": phase["name"],
        "description": phase.get("description", ""),
        "category": phase.get("category", "feature"),
        "complexity": phase.get("complexity", "medium"),
        "scope": canonical_scope,
    }
