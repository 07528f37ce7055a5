"""API, accounts and security settings; imported at the end of ``settings.py`` with ``import *``.

Kept apart so the API work can evolve without editing the main settings module. It extends values of
the main module (read through ``_base``, which is already populated when this file is imported).
"""

from __future__ import annotations

from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured

from autopack_site import settings as _base
from autopack_site.lib.env import EnvError, env_int, env_str
from autopack_site.lib.keys import load_signing_keys

try:
    _ACCESS_MINUTES = env_int("JWT_ACCESS_MINUTES", 5, minimum=1)
    _REFRESH_HOURS = env_int("JWT_REFRESH_HOURS", 24, minimum=1)
    API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", _base.DATA_UPLOAD_MAX_MEMORY_SIZE, minimum=1024)
    LOGIN_LOCKOUT_FAILURES = env_int("LOGIN_LOCKOUT_FAILURES", 10, minimum=1)
    LOGIN_LOCKOUT_WINDOW_SECONDS = env_int("LOGIN_LOCKOUT_WINDOW_SECONDS", 3600, minimum=1)
    # Reverse proxies in front of the API; 0 means X-Forwarded-For is ignored (a client could forge it).
    _NUM_PROXIES = env_int("API_NUM_PROXIES", 0, minimum=0)
except EnvError as _exc:
    raise ImproperlyConfigured(str(_exc)) from _exc
if _ACCESS_MINUTES > 5:
    raise ImproperlyConfigured("JWT_ACCESS_MINUTES may be at most 5: access tokens cannot be revoked")

_JWT_KEYS = load_signing_keys(
    data_dir=_base.DATA_DIR,
    private_key_file=env_str("JWT_PRIVATE_KEY_FILE"),
    public_key_file=env_str("JWT_PUBLIC_KEY_FILE"),
)

REST_FRAMEWORK = {
    **_base.REST_FRAMEWORK,
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "accounts.permissions.ReadWriteScope",
    ],
    "DEFAULT_PARSER_CLASSES": ["autopack_site.api_parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_CLASSES": [
        "accounts.throttling.ApiKeyRateThrottle",
        "accounts.throttling.UserRateThrottle",
        "rest_framework.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "api_key": env_str("API_KEY_RATE", "6000/min"),
        "user": env_str("API_USER_RATE", "1200/min"),
        "anon": env_str("API_ANON_RATE", "60/min"),
        "login": env_str("API_LOGIN_RATE", "30/min"),
    },
    "DEFAULT_SCHEMA_CLASS": "autopack_site.api_errors.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "autopack_site.api_pagination.CursorPagination",
    "NUM_PROXIES": _NUM_PROXIES,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SIMPLE_JWT = {
    "ALGORITHM": "RS256",
    "SIGNING_KEY": _JWT_KEYS.private_pem,
    "VERIFYING_KEY": _JWT_KEYS.public_pem,
    "ISSUER": env_str("JWT_ISSUER", "autopack"),
    "AUDIENCE": env_str("JWT_AUDIENCE", "autopack-api"),
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=_ACCESS_MINUTES),
    "REFRESH_TOKEN_LIFETIME": timedelta(hours=_REFRESH_HOURS),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": True,
    "CHECK_USER_IS_ACTIVE": True,
    # Tokens carry a hash of the password hash: changing the password revokes every token issued before.
    "CHECK_REVOKE_TOKEN": True,
    "AUTH_HEADER_TYPES": ("Bearer",),
}

SPECTACULAR_SETTINGS = {
    **_base.SPECTACULAR_SETTINGS,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "RunStateEnum": "runs.models.RunState",
        "PhaseStateEnum": "runs.models.PhaseState",
        "AttemptStatusEnum": "runs.models.AttemptStatus",
        "ProjectRoleEnum": "accounts.models.Role",
        "ApiKeyScopeEnum": "accounts.models.ApiKeyScope",
        "LedgerEntryStatusEnum": "research.models.EntryStatus",
    },
    "SCHEMA_PATH_PREFIX": r"/api/",
    "GET_LIB_DOC_EXCLUDES": "autopack_site.api_errors.doc_excludes",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "autopack_site.api_errors.integer_id_parameters",
    ],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
}

# `from autopack_site.settings_api import *` brings in the settings only, not the helpers imported above.
__all__ = [name for name in dir() if name.isupper()]
