"""Every API error leaves as ``{"error": {code, message, details}}``, and the schema says so.

``exception_handler`` maps domain errors (``autopack_site.lib.errors``) and DRF's own exceptions to that
shape; ``AutoSchema`` documents the shape on every operation for the statuses the operation can return.
Messages never echo credentials: they are passed through ``redact`` on the way out.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from autopack_site.lib.errors import DomainError
from autopack_site.lib.logging import redact


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable error code, e.g. `not_found`, `stale_epoch`.")
    message = serializers.CharField(help_text="Human-readable explanation.")
    details = serializers.JSONField(allow_null=True, help_text="Field errors or structured context, or null.")


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()


def redact_json(value: Any) -> Any:
    """``redact`` applied to every string inside a JSON value."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_json(item) for item in value]
    if isinstance(value, dict):
        return {key: redact_json(item) for key, item in value.items()}
    return value


def _error_response(code: str, message: str, details: Any, http_status: int, headers: Any = None) -> Response:
    body = {"error": {"code": code, "message": redact(message), "details": redact_json(details)}}
    return Response(body, status=http_status, headers=headers)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return _error_response(exc.code, exc.message, exc.details, exc.http_status)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    headers = {name: value for name, value in response.items() if name in ("WWW-Authenticate", "Retry-After")}
    if isinstance(exc, exceptions.ValidationError):
        return _error_response("invalid", "Invalid request.", response.data, response.status_code, headers)
    if isinstance(exc, Http404) or response.status_code == status.HTTP_404_NOT_FOUND:
        return _error_response("not_found", "Not found.", None, status.HTTP_404_NOT_FOUND, headers)
    if isinstance(exc, DjangoPermissionDenied):
        return _error_response("permission_denied", "Permission denied.", None, response.status_code, headers)
    detail = getattr(exc, "detail", "")
    code = getattr(detail, "code", None) or getattr(exc, "default_code", "error")
    if isinstance(detail, dict):  # simplejwt raises with {"detail": ..., "code": ..., "messages": [...]}
        code = str(detail.get("code", code))
        detail = detail.get("detail", "")
    return _error_response(str(code), str(detail), None, response.status_code, headers)


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


_ERROR_DESCRIPTIONS = {
    "400": "Validation failed: `details` maps fields to messages.",
    "401": "Not authenticated, or the credential is invalid, expired or revoked.",
    "403": "Authenticated, but the credential's scope or the project role does not allow this.",
    "404": "No such object among those this user may see.",
    "409": "Conflict: illegal state transition or stale claim epoch.",
    "413": "Request body too large.",
    "429": "Rate limited, or the account is locked after failed logins.",
}


class AutoSchema(SpectacularAutoSchema):
    """Adds the error shape to every operation for the statuses it can produce."""

    def _error_statuses(self) -> list[str]:
        statuses = ["401", "403", "429"]
        if self.method in ("POST", "PUT", "PATCH") or self._get_filter_parameters() or self.method == "GET":
            statuses.append("400")
        if "{" in self.path:
            statuses.append("404")
        if self.method in ("POST", "PUT", "PATCH", "DELETE"):
            statuses += ["409", "413"]
        return statuses

    def _get_response_bodies(self, direction: str = "response") -> dict[str, Any]:
        responses = super()._get_response_bodies(direction=direction)
        if direction != "response":
            return responses
        for code in self._error_statuses():
            if code not in responses:
                responses[code] = self._get_response_for_code(
                    error_response(_ERROR_DESCRIPTIONS[code]), code, direction=direction
                )
        if self.method == "GET":
            # An over-long query string is refused by the HTTP server in front of Django, without a body.
            responses.setdefault("414", {"description": "Request line too long (answered by the HTTP server)."})
        return responses


# Routers accept any path segment as an object id, so that a malformed id reaches the view and is
# answered with a JSON 404 instead of Django's HTML "page not found".
ANY_SEGMENT = r"[^/]*"


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler404``: JSON under ``/api/``, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"code": "not_found", "message": "Not found.", "details": None}}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """``handler500``: JSON under ``/api/``, Django's page elsewhere. Never includes exception text."""
    if request.path.startswith("/api/"):
        body = {"error": {"code": "server_error", "message": "Internal server error.", "details": None}}
        return JsonResponse(body, status=500)
    return defaults.server_error(request)


_MAX_ID = 2**63 - 1


class IdLookupMixin:
    """A primary-key lookup that is not a database integer is a 404, never a database error (500)."""

    def get_object(self):  # noqa: ANN201 - DRF's signature
        field = getattr(self, "lookup_field", "pk")
        value = self.kwargs.get(getattr(self, "lookup_url_kwarg", None) or field)
        if field in ("pk", "id") and not (isinstance(value, str) and value.isascii() and value.isdigit()):
            raise Http404
        if field in ("pk", "id") and int(value) > _MAX_ID:
            raise Http404
        return super().get_object()


def integer_id_parameters(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """Schema postprocessing hook: document ``{id}`` path parameters as integers.

    The routes accept any segment (``ANY_SEGMENT``) so that a malformed id is a JSON 404, which makes
    drf-spectacular describe the parameter as a pattern-constrained string; clients should see an integer.
    """
    for item in result.get("paths", {}).values():
        for operation in item.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("in") == "path" and parameter.get("name") == "id":
                    parameter["schema"] = {"type": "integer"}
    return result


def doc_excludes() -> list[type]:
    """Classes whose docstrings never describe an API schema (``GET_LIB_DOC_EXCLUDES``).

    drf-spectacular's own list (DRF's base classes), plus our implementation mixins: a serializer without a
    docstring of its own must not be described by a mixin's notes on how it works.
    """
    from drf_spectacular.plumbing import get_lib_doc_excludes

    from runs.executor_api import LightFields

    return [*get_lib_doc_excludes(), LightFields, IdLookupMixin]
