"""The plan format: parsing, loose-input fixes, JSON Schema and cross-field validation, markdown notes → plan.

Framework-free (no Django imports); ``runs.services.plan`` turns a validated plan into database rows.
"""

from runs.plan.errors import PlanError, PlanInvalid
from runs.plan.validate import ValidatedPlan, plan_sha256, validate_plan

__all__ = ["PlanError", "PlanInvalid", "ValidatedPlan", "plan_sha256", "validate_plan"]
