"""One domain error hierarchy, mapped to HTTP status codes by the API's exception handler."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class for every error a service function raises on purpose."""

    code = "domain_error"
    http_status = 400

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class ValidationFailed(DomainError):
    code = "validation_failed"
    http_status = 400


class NotFound(DomainError):
    code = "not_found"
    http_status = 404


class PermissionDenied(DomainError):
    code = "permission_denied"
    http_status = 403


class Conflict(DomainError):
    code = "conflict"
    http_status = 409


class IllegalTransition(Conflict):
    code = "illegal_transition"


class StaleEpoch(Conflict):
    """A write carried a claim epoch that is no longer the phase's current one (fencing token)."""

    code = "stale_epoch"


class BudgetExhausted(DomainError):
    code = "budget_exhausted"
    http_status = 409
