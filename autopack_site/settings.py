"""Autopack settings: one module, driven by environment variables with safe development defaults.

A fresh checkout runs with no services (SQLite and the django-q2 ORM broker). Production sets
``DJANGO_DEBUG=0``, ``SECRET_KEY``, ``ALLOWED_HOSTS`` and ``DATABASE_URL``; those fail fast when missing.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from autopack_site import __version__
from autopack_site.lib.env import EnvError, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VERSION = __version__

try:
    DEBUG = env_bool("DJANGO_DEBUG", True)
    DATA_DIR = Path(env_str("AUTOPACK_DATA_DIR", str(BASE_DIR / "var"))).resolve()
    CONN_MAX_AGE = env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"] if DEBUG else [])
    CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
    Q_WORKERS = env_int("Q_WORKERS", 2, minimum=1)
except EnvError as exc:
    raise ImproperlyConfigured(str(exc)) from exc

DATA_DIR.mkdir(parents=True, exist_ok=True)
(DATA_DIR / "staticfiles").mkdir(exist_ok=True)  # whitenoise warns at start-up when it is missing

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "django-insecure-development-only-key-do-not-use-in-production"
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DJANGO_DEBUG is off")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "django_htmx",
    "accounts",
    "runs",
    "telemetry",
    "research",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "autopack_site.urls"
WSGI_APPLICATION = "autopack_site.wsgi.application"
ASGI_APPLICATION = "autopack_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=CONN_MAX_AGE)}
    if env_bool("DATABASE_SERVER_SIDE_BINDING", False) and DATABASES["default"]["ENGINE"].endswith("postgresql"):
        DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=2)
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "autopack.sqlite3",
            # Several worker processes share the file: wait for the write lock instead of failing.
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

# --- Security (only strict when DEBUG is off, so `check --deploy` is clean in production) --------
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024, minimum=1024)

# --- REST framework -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "autopack_site.api_errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
    "PAGE_SIZE": 50,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Autopack API",
    "DESCRIPTION": "Drive Autopack runs, phases and executors.",
    "VERSION": VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI served from our own static files: /api/docs/ must work on a machine without internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Queue (django-q2): ORM broker by default, Redis when REDIS_URL is set ----------------------
REDIS_URL = env_str("REDIS_URL")
Q_CLUSTER = {
    "name": "autopack",
    "workers": Q_WORKERS,
    # A task runs one phase attempt (LLM calls plus the project's tests) and may take up to `timeout`
    # seconds; `retry` must be longer so that a slow task is never handed to a second worker while the
    # first still runs it. Leases, not the broker, are what make a lost task safe to run again.
    "timeout": 1800,
    "retry": 2000,
    "max_attempts": 3,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "label": "Queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
    # Shared by every process, so rate limits and lockouts count across gunicorn workers.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "autopack",
        }
    }
else:
    Q_CLUSTER["orm"] = "default"

# --- Autopack -----------------------------------------------------------------------------------
AUTOPACK = {
    "WORKSPACES_DIR": DATA_DIR / "workspaces",
    "CASSETTES_DIR": DATA_DIR / "cassettes",
    "LEASE_SECONDS": env_int("AUTOPACK_LEASE_SECONDS", 30, minimum=2),
    "HEARTBEAT_SECONDS": env_int("AUTOPACK_HEARTBEAT_SECONDS", 10, minimum=1),
    "MAX_ATTEMPTS": env_int("AUTOPACK_MAX_ATTEMPTS", 5, minimum=1),
    "LLM_PROVIDER": env_str("AUTOPACK_LLM_PROVIDER", "anthropic"),
    "MODELS": {
        "builder": {"low": "claude-haiku-4-5", "medium": "claude-sonnet-4-6", "high": "claude-sonnet-4-6"},
        "auditor": {"low": "claude-haiku-4-5", "medium": "claude-sonnet-4-6", "high": "claude-sonnet-4-6"},
        "doctor": {"low": "claude-sonnet-4-6", "medium": "claude-sonnet-4-6", "high": "claude-opus-4-6"},
    },
    "WORKER_ENGINE": env_str("AUTOPACK_WORKER_ENGINE", "pipeline"),
    "ENQUEUE_TASKS": env_bool("AUTOPACK_ENQUEUE_TASKS", True),
    "ESCALATION_LADDER": ["claude-haiku-4-5", "claude-sonnet-4-6", "claude-opus-4-6"],
}

# --- Logging: one JSON object per line, secrets redacted ----------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "autopack_site.lib.logging.RedactSecretsFilter"}},
    "formatters": {"json": {"()": "autopack_site.lib.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- API, accounts and security settings live beside this file --------------------------------
from autopack_site.settings_api import *  # noqa: E402,F403
