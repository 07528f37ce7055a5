"""DRF exception handler: every error leaves the API as ``{"error": {code, message, details}}``."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from autopack_site.lib.errors import DomainError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response({"error": exc.as_dict()}, status=exc.http_status)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = getattr(exc, "default_code", "error")
    if isinstance(exc, exceptions.ValidationError):
        message, details = "Invalid request.", response.data
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else response.data
        message, details = str(detail), None
        code = getattr(getattr(exc, "detail", None), "code", code) or code
    if response.status_code == status.HTTP_404_NOT_FOUND:
        code = "not_found"
    response.data = {"error": {"code": str(code), "message": message, "details": details}}
    return response
