"""Account workflows: project roles, API keys, invitations and login lockout."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.models import update_last_login
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone

from accounts.models import ROLE_RANK, ApiKey, ApiKeyScope, Invitation, LoginFailure, Membership, Role, User
from autopack_site.lib.errors import DomainError, PermissionDenied, ValidationFailed


def project_of(obj: Any):
    """The ``runs.Project`` an API object belongs to (project, run, tier, phase, attempt or event)."""
    from runs.models import Attempt, AttemptEvent, Phase, Project, Run, Tier

    if isinstance(obj, Project):
        return obj
    if isinstance(obj, Run):
        return obj.project
    if isinstance(obj, (Tier, Phase)):
        return obj.run.project
    if isinstance(obj, Attempt):
        return obj.phase.run.project
    if isinstance(obj, AttemptEvent):
        return obj.attempt.phase.run.project
    raise TypeError(f"no project for {type(obj).__name__}")


def projects_visible_to(user: User):
    """Projects the user is a member of; every project for staff."""
    from runs.models import Project

    if user.is_staff or user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


def project_role(user: User, project_id: int) -> Role | None:
    """The user's role in the project, ``OWNER`` for staff, None for a non-member."""
    if not user.is_authenticated:
        return None
    if user.is_staff or user.is_superuser:
        return Role.OWNER
    role = Membership.objects.filter(user=user, project_id=project_id).values_list("role", flat=True).first()
    return Role(role) if role else None


def user_has_project_role(user: User, project: Any, minimum: str) -> bool:
    role = project_role(user, project.pk)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[Role(minimum)]


# --- API keys -------------------------------------------------------------------------------------


def api_key_create(
    *, owner: User, name: str, scopes: list[str], expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key and return it with the raw ``ak_<prefix>_<secret>``, which is never stored or shown again."""
    scopes = sorted({ApiKeyScope(scope).value for scope in scopes})
    if not scopes:
        raise ValidationFailed("An API key needs at least one scope.", details={"scopes": ["empty"]})
    if ApiKeyScope.EXECUTOR in scopes and not owner.is_staff:
        raise PermissionDenied("Only staff users may hold executor keys.")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationFailed("The expiry must be in the future.", details={"expires_at": ["in the past"]})
    prefix, raw_key = ApiKey.generate()
    key = ApiKey.objects.create(
        name=name, owner=owner, prefix=prefix, key_hash=ApiKey.hash_key(raw_key), scopes=scopes, expires_at=expires_at
    )
    return key, raw_key


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke a key; revoking twice keeps the first revocation time."""
    if key.revoked_at is None:
        now = timezone.now()
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
        key.refresh_from_db(fields=["revoked_at"])
    return key


# --- Login lockout ----------------------------------------------------------------------------------


class AccountLocked(DomainError):
    code = "account_locked"
    http_status = 429


class InvalidCredentials(DomainError):
    code = "invalid_credentials"
    http_status = 401


def _lockout_window_start() -> datetime:
    return timezone.now() - timedelta(seconds=settings.LOGIN_LOCKOUT_WINDOW_SECONDS)


def login_is_locked(*, username: str) -> bool:
    recent = LoginFailure.objects.filter(username=username, created_at__gt=_lockout_window_start())
    return recent.count() >= settings.LOGIN_LOCKOUT_FAILURES


def login_authenticate(*, username: str, password: str, remote_addr: str | None, request=None) -> User:
    """Check a password login, counting failures per account name.

    The lock is checked before the password, so a locked account answers the same whether or not the
    password is right, and the answer never says whether the account exists.
    """
    if login_is_locked(username=username):
        raise AccountLocked("Too many failed logins for this account; try again later.")
    user = authenticate(request, username=username, password=password)
    if user is None:
        LoginFailure.objects.create(username=username, remote_addr=remote_addr)
        LoginFailure.objects.filter(created_at__lt=_lockout_window_start()).delete()
        raise InvalidCredentials("No active account with these credentials.")
    LoginFailure.objects.filter(username=username).delete()
    update_last_login(None, user)
    return user


# --- Invitations ------------------------------------------------------------------------------------


def invitation_create(
    *,
    email: str,
    created_by: User,
    project: Any = None,
    role: str = Role.VIEWER,
    valid_for: timedelta = timedelta(days=7),
) -> tuple[Invitation, str]:
    """Staff invite anyone; a project owner invites into that project. Returns the token, shown once."""
    allowed = created_by.is_staff or (project is not None and user_has_project_role(created_by, project, Role.OWNER))
    if not allowed:
        raise PermissionDenied("Only staff, or owners of the project, may invite users.")
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        email=email,
        token_hash=Invitation.hash_token(token),
        project=project,
        role=Role(role),
        created_by=created_by,
        expires_at=timezone.now() + valid_for,
    )
    return invitation, token


def invitation_accept(*, token: str, username: str, password: str) -> User:
    """Register a user from an open invitation; the invitation can be used once."""
    with transaction.atomic():
        invitation = Invitation.objects.select_for_update().filter(token_hash=Invitation.hash_token(token)).first()
        if invitation is None or not invitation.is_open():
            raise ValidationFailed("This invitation is not valid.", details={"token": ["invalid or used"]})
        if User.objects.filter(username__iexact=username).exists():
            raise ValidationFailed("This username is taken.", details={"username": ["taken"]})
        candidate = User(username=username, email=invitation.email)
        try:
            validate_password(password, user=candidate)
        except DjangoValidationError as exc:
            raise ValidationFailed("The password is too weak.", details={"password": list(exc.messages)}) from None
        candidate.set_password(password)
        candidate.save()
        if invitation.project_id is not None:
            Membership.objects.create(user=candidate, project_id=invitation.project_id, role=invitation.role)
        invitation.accepted_at = timezone.now()
        invitation.accepted_by = candidate
        invitation.save(update_fields=["accepted_at", "accepted_by"])
    return candidate
