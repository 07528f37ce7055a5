"""Request rate limits: per API key, per signed-in user, per address for anonymous requests.

Counters live in Django's cache; with several API processes the cache must be shared (Redis) for the
limits to be global rather than per process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from accounts.authentication import request_api_key

if TYPE_CHECKING:
    from rest_framework.views import APIView


class _SettingsRateThrottle(SimpleRateThrottle):
    """Reads its rate when used rather than at import, so a changed setting applies without a restart."""

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class ApiKeyRateThrottle(_SettingsRateThrottle):
    scope = "api_key"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        key = request_api_key(request)
        return None if key is None else self.cache_format % {"scope": self.scope, "ident": key.pk}


class UserRateThrottle(_SettingsRateThrottle):
    """Signed-in users (JWT or session); requests made with an API key are limited per key instead."""

    scope = "user"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        if request_api_key(request) is not None or not request.user.is_authenticated:
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}


class LoginRateThrottle(_SettingsRateThrottle):
    """Per client address on the credential endpoints, on top of the per-account lockout."""

    scope = "login"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
