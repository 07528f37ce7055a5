"""Who may do what through the API.

Two independent checks:
- **scopes** restrict what an API key may do (``executor``, ``read``, ``write``); a user signed in with a
  JWT or a session is not limited by scopes, except that only staff act as an executor without a key;
- **project roles** (viewer < operator < owner) restrict what a user may do in a project; staff may do
  everything. Objects of projects a user is not a member of are never found (querysets are scoped), so
  a missing role surfaces as 404, an insufficient role as 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from accounts.authentication import request_api_key
from accounts.models import ApiKeyScope, Role
from accounts.services import project_of, user_has_project_role

if TYPE_CHECKING:
    from rest_framework.views import APIView


def request_has_scope(request: Request, scope: str) -> bool:
    key = request_api_key(request)
    if key is not None:
        return key.has_scope(scope)
    user = request.user
    if not (user and user.is_authenticated):
        return False
    if scope == ApiKeyScope.EXECUTOR:
        return bool(user.is_staff)
    return True


def HasScope(*scopes: str) -> type[BasePermission]:  # noqa: N802 - reads like a class in permission_classes
    """Permission class allowing an authenticated request that carries any of ``scopes``."""
    wanted = tuple(ApiKeyScope(scope) for scope in scopes)

    class _HasScope(BasePermission):
        message = f"This credential lacks the required scope ({' or '.join(wanted)})."

        def has_permission(self, request: Request, view: APIView) -> bool:
            return any(request_has_scope(request, scope) for scope in wanted)

    _HasScope.__name__ = f"HasScope_{'_'.join(wanted)}"
    return _HasScope


class ReadWriteScope(BasePermission):
    """Reads need the ``read`` or ``write`` scope; anything else needs ``write``."""

    message = "This credential lacks the required scope."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if request.method in SAFE_METHODS:
            return request_has_scope(request, ApiKeyScope.READ) or request_has_scope(request, ApiKeyScope.WRITE)
        return request_has_scope(request, ApiKeyScope.WRITE)


def HasProjectRole(role: str) -> type[BasePermission]:  # noqa: N802
    """Object permission: the user holds at least ``role`` in the object's project (staff always do)."""
    minimum = Role(role)

    class _HasProjectRole(BasePermission):
        message = f"This action needs the {minimum.label.lower()} role in the project."

        def has_permission(self, request: Request, view: APIView) -> bool:
            return bool(request.user and request.user.is_authenticated)

        def has_object_permission(self, request: Request, view: APIView, obj: Any) -> bool:
            return user_has_project_role(request.user, project_of(obj), minimum)

    _HasProjectRole.__name__ = f"HasProjectRole_{minimum}"
    return _HasProjectRole
