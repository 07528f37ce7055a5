"""Plan import: validate a plan document and create its run, tiers and phases in one transaction.

The format and its validation live in ``runs.plan`` (framework-free); this module adds what needs the
database: duplicate detection, replacing a run that has not started, the project's protected paths, rows.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import transaction

from autopack_site.lib.errors import Conflict
from runs.models import Phase, Project, Run, RunState, Tier
from runs.plan import PlanError, PlanInvalid, ValidatedPlan, validate_plan
from runs.plan.testcommand import detect_test_command as detect_from_files
from runs.services.control import run_start

__all__ = [
    "ImportResult",
    "PlanError",
    "PlanInvalid",
    "plan_import",
    "plan_validate",
    "project_test_command",
]


@dataclass(frozen=True)
class ImportResult:
    run: Run
    warnings: list[str]


def plan_validate(document: dict[str, Any] | str | bytes, *, source_name: str = "") -> tuple[dict[str, Any], list[str]]:
    """Validate without writing: the normalised plan and the warnings, or ``PlanInvalid``."""
    validated = validate_plan(document, source_name=source_name)
    return validated.plan, validated.warnings


def plan_import(
    *,
    project: Project,
    document: dict[str, Any] | str | bytes,
    source_name: str,
    created_by: Any = None,
    start: bool = False,
    replace: bool = False,
) -> ImportResult:
    """Create a run from a plan; all rows or none. Raises ``PlanInvalid`` or ``Conflict``."""
    validated = validate_plan(document, source_name=source_name)
    protected = _protected_path_errors(project, validated)
    if protected:
        raise PlanInvalid(protected)
    warnings = list(validated.warnings)
    with transaction.atomic():
        # Serialise imports into one project so two concurrent imports of a plan cannot both pass the check.
        Project.objects.select_for_update().only("pk").get(pk=project.pk)
        previous = _run_to_replace(project, validated, replace)
        if previous is not None:
            warnings.append(f"replaced run #{previous.pk} {previous.name!r}, which had not started")
            previous.delete()
        run = _create_rows(project, validated, created_by)
        if start:
            run = run_start(run_id=run.pk, actor=_actor(created_by))
    return ImportResult(run=run, warnings=warnings)


def _actor(user: Any) -> str:
    return f"user:{user.get_username()}" if user is not None else "system:plan_import"


def _run_to_replace(project: Project, validated: ValidatedPlan, replace: bool) -> Run | None:
    """The same plan already imported is refused; with ``replace`` a not-yet-started twin (same plan, or the
    same run name when the plan was edited) is replaced. Cancelled runs never count: re-importing is how a
    cancelled plan is tried again."""
    live = Run.objects.filter(project=project).exclude(state=RunState.CANCELLED).order_by("-created_at", "-id")
    same_plan = live.filter(plan_sha256=validated.sha256).first()
    if not replace:
        if same_plan is not None:
            raise Conflict(
                f"this plan is already imported into project {project.slug} as run #{same_plan.pk} "
                f"{same_plan.name!r} ({same_plan.state}); use replace (--replace) to replace it before it starts",
                details={"run_id": same_plan.pk},
            )
        return None
    target = same_plan or live.filter(name=validated.plan["name"]).first()
    if target is None:
        return None
    if target.state != RunState.QUEUED or target.started_at is not None:
        raise Conflict(
            f"run #{target.pk} {target.name!r} has already started ({target.state}); only a run that has not "
            "started can be replaced",
            details={"run_id": target.pk},
        )
    return target


def _create_rows(project: Project, validated: ValidatedPlan, created_by: Any) -> Run:
    plan = validated.plan
    budgets = plan["budgets"]
    run = Run.objects.create(
        project=project,
        name=plan["name"],
        goal=plan["goal"],
        plan=plan,
        plan_sha256=validated.sha256,
        model_mapping=plan["models"],
        token_cap=budgets["token_cap"],
        usd_cap=Decimal(str(budgets["usd_cap"])),
        max_phases=budgets["max_phases"],
        max_minutes=budgets["max_minutes"],
        max_failures=budgets["max_failures"],
        max_patch_failures=budgets["max_patch_failures"],
        phases_total=len(plan["phases"]),
        created_by=created_by,
    )
    tiers = {
        tier["id"]: Tier.objects.create(
            run=run, index=index, tier_id=tier["id"], name=tier["name"], description=tier["description"]
        )
        for index, tier in enumerate(plan["tiers"])
    }
    Phase.objects.bulk_create(_phase_rows(run, tiers, plan["phases"]), batch_size=100)
    return run


def _phase_rows(run: Run, tiers: dict[str, Tier], phases: list[dict[str, Any]]) -> list[Phase]:
    """Canonical plans list phases tier by tier, so list position is the run-wide sequence."""
    per_tier: dict[str, int] = {}
    rows = []
    for sequence, phase in enumerate(phases):
        index = per_tier.get(phase["tier"], 0)
        per_tier[phase["tier"]] = index + 1
        rows.append(
            Phase(
                run=run,
                tier=tiers[phase["tier"]],
                phase_id=phase["id"],
                index=index,
                sequence=sequence,
                name=phase["name"],
                description=phase["description"],
                category=phase["category"],
                complexity=phase["complexity"],
                scope=phase["scope"],
            )
        )
    return rows


def _protected_path_errors(project: Project, validated: ValidatedPlan) -> list[PlanError]:
    """A scope path or deliverable that is (or lies under) one of the project's protected paths."""
    protected = [entry for entry in project.protected_paths or [] if isinstance(entry, str) and entry]
    errors = []
    for position, phase in enumerate(validated.plan["phases"]):
        index = validated.source_positions[position]
        for key in ("paths", "deliverables"):
            for item, path in enumerate(phase["scope"][key]):
                hit = next((entry for entry in protected if _covers(entry, path)), None)
                if hit:
                    errors.append(
                        PlanError(
                            f"phases[{index}].scope.{key}[{item}]",
                            f"{path!r} is protected in project {project.slug} ({hit!r})",
                        )
                    )
    return sorted(errors, key=lambda error: error.path.split(".scope")[0])


def _covers(protected: str, path: str) -> bool:
    """The rule governed apply uses: an entry ending ``/`` protects everything under it, others one file."""
    protected = protected.replace("\\", "/").removeprefix("./")
    return path == protected or (protected.endswith("/") and path.startswith(protected))


def project_test_command(project: Project) -> str | None:
    """The project's test command: its setting, else what its repository's marker files suggest."""
    if project.default_test_command.strip():
        return project.default_test_command.strip()
    try:
        toolchains = importlib.import_module("runs.engine.toolchains")
    except ImportError:  # the richer detector is optional
        return detect_from_files(project.repository_path)
    toolchain = toolchains.detect_toolchain(Path(project.repository_path))
    if toolchain is None:
        return None
    if toolchain.language == "python" and toolchain.manager == "pip":
        # The detector names this machine's interpreter; a plan file must stay portable.
        return "python -m pytest"
    return toolchain.test_command
