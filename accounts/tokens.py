"""JWT issue, refresh rotation and logout on top of simplejwt (RS256, blacklist app).

A refresh token is single use: refreshing blacklists it in the same transaction that checks it was not
already blacklisted, so a replayed (stolen) refresh token is refused even when two requests race.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.utils import datetime_from_epoch, get_md5_hash_password

from accounts.models import User
from autopack_site.lib.errors import DomainError


class TokenRejected(DomainError):
    code = "token_not_valid"
    http_status = 401


def tokens_issue(*, user: User) -> dict[str, Any]:
    refresh = RefreshToken.for_user(user)
    return {
        "access": str(refresh.access_token),
        "refresh": str(refresh),
        "access_expires_in": int(api_settings.ACCESS_TOKEN_LIFETIME.total_seconds()),
    }


def _decode_refresh(raw_refresh: str) -> RefreshToken:
    try:
        return RefreshToken(raw_refresh)
    except TokenError:
        # The library's message can quote the token's claims; say only that it was refused.
        raise TokenRejected("Refresh token is invalid, expired or revoked.") from None


def _token_user(refresh: RefreshToken) -> User:
    user = User.objects.filter(pk=refresh.get(api_settings.USER_ID_CLAIM)).first()
    if user is None or not user.is_active:
        raise TokenRejected("No active account for this token.", details={"reason": "user_inactive"})
    if api_settings.CHECK_REVOKE_TOKEN and refresh.get(api_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(
        user.password
    ):
        raise TokenRejected("Refresh token is invalid, expired or revoked.")
    return user


def _blacklist_once(refresh: RefreshToken, user: User | None) -> None:
    """Blacklist the token; raise if it already was (a replay that raced past the first check)."""
    jti = refresh[api_settings.JTI_CLAIM]
    with transaction.atomic():
        outstanding, _ = OutstandingToken.objects.get_or_create(
            jti=jti,
            defaults={
                "user": user,
                "token": str(refresh),
                "expires_at": datetime_from_epoch(refresh["exp"]),
            },
        )
        _, created = BlacklistedToken.objects.get_or_create(token=outstanding)
    if not created:
        raise TokenRejected("Refresh token is invalid, expired or revoked.")


def tokens_refresh(*, raw_refresh: str) -> dict[str, Any]:
    refresh = _decode_refresh(raw_refresh)
    user = _token_user(refresh)
    _blacklist_once(refresh, user)
    return tokens_issue(user=user)


def tokens_revoke(*, raw_refresh: str) -> None:
    """Log out: the refresh token can no longer be used (access tokens expire within minutes)."""
    refresh = _decode_refresh(raw_refresh)
    _blacklist_once(refresh, User.objects.filter(pk=refresh.get(api_settings.USER_ID_CLAIM)).first())
