"""Dashboard sign-in and project-level access for the server-rendered pages.

The dashboard uses the Django session (the same users as the API). What a person may see or do is decided by
their ``Membership`` in the project: viewers look, operators and owners act, staff see and act everywhere.
All checks read one dict of ``project_id -> role`` fetched once per request, so a page of many runs costs one
query for permissions however many projects it shows.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth import views as auth_views
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django_htmx.http import HttpResponseClientRedirect

from accounts.models import ROLE_RANK, Membership, Role


class DashboardLoginView(auth_views.LoginView):
    template_name = "dashboard/login.html"
    redirect_authenticated_user = True


class DashboardLogoutView(auth_views.LogoutView):
    """Logout is a POST (with CSRF) from the navigation bar; Django refuses a GET logout."""

    next_page = "/login/"


def login_required_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Like ``login_required``, but a live (htmx) poll whose session ended sends the whole page to the login
    form instead of swapping the login page into the table it was refreshing."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if getattr(request, "htmx", False):
            path = request.htmx.current_url_abs_path or request.get_full_path()
            return HttpResponseClientRedirect(redirect_to_login(path)["Location"])  # the HX-Redirect header
        return redirect_to_login(request.get_full_path())

    return wrapper


class ProjectAccess:
    """The signed-in user's roles by project, read once and reused by every check on the page."""

    def __init__(self, request: HttpRequest) -> None:
        self.user = request.user
        self.is_staff = bool(self.user.is_staff or self.user.is_superuser)
        self._roles: dict[int, str] | None = None

    @property
    def roles(self) -> dict[int, str]:
        if self._roles is None:
            self._roles = dict(Membership.objects.filter(user=self.user).values_list("project_id", "role"))
        return self._roles

    def role(self, project_id: int) -> str | None:
        if self.is_staff:
            return Role.OWNER
        return self.roles.get(project_id)

    def can_view(self, project_id: int) -> bool:
        return self.role(project_id) is not None

    def can_act(self, project_id: int) -> bool:
        role = self.role(project_id)
        return role is not None and ROLE_RANK[Role(role)] >= ROLE_RANK[Role.OPERATOR]

    def require_view(self, project_id: int) -> None:
        if not self.can_view(project_id):
            raise PermissionDenied("You are not a member of this project. Ask one of its owners to add you.")

    def require_act(self, project_id: int) -> None:
        self.require_view(project_id)
        if not self.can_act(project_id):
            raise PermissionDenied("Viewers can look but not act. Ask a project owner for the operator role.")

    def project_ids(self) -> list[int] | None:
        """Projects the user may see, or ``None`` for staff (every project)."""
        return None if self.is_staff else list(self.roles)


def actor_for(request: HttpRequest) -> str:
    return f"user:{request.user.get_username()}"
