"""API-key authentication for executors and scripts: ``Authorization: Api-Key ak_<prefix>_<secret>``.

The prefix is stored in clear (unique, indexed), the whole key only as SHA-256, so a lookup is one
indexed query and a database leak does not leak usable keys.
"""

from __future__ import annotations

import functools
import hmac
import re
from datetime import timedelta

from django.db import connection
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from accounts.models import ApiKey, User
from autopack_site.lib.prepared import RowReader, fetchone_prepared

KEYWORD = "Api-Key"
_KEY_FORMAT = re.compile(r"^ak_(?P<prefix>[0-9a-f]{4,16})_(?P<secret>[A-Za-z0-9_\-]{16,128})$")
# Writing last_used_at on every request would turn every read into a write; a minute is precise enough.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyAuthentication(BaseAuthentication):
    """Sets ``request.user`` to the key's owner and ``request.auth`` to the ``ApiKey`` row."""

    def authenticate(self, request: Request) -> tuple[User, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].decode("latin-1").lower() != KEYWORD.lower():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Invalid Api-Key header.", code="invalid_api_key")
        return self.authenticate_key(parts[1].decode("latin-1"))

    def authenticate_key(self, raw_key: str) -> tuple[User, ApiKey]:
        match = _KEY_FORMAT.match(raw_key)
        if match is None:
            raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key")
        key = _key_with_owner(match["prefix"])
        # Compare in constant time so that response timing says nothing about the stored hash.
        if key is None or not hmac.compare_digest(key.key_hash, ApiKey.hash_key(raw_key)):
            raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key")
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("API key revoked.", code="api_key_revoked")
        now = timezone.now()
        if key.expires_at is not None and key.expires_at <= now:
            raise exceptions.AuthenticationFailed("API key expired.", code="api_key_expired")
        if not key.owner.is_active:
            raise exceptions.AuthenticationFailed("API key owner is inactive.", code="user_inactive")
        _touch_last_used(key, now)
        return key.owner, key

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD


def _key_with_owner(prefix: str) -> ApiKey | None:
    """The key with this prefix and its owner (``key.owner``), in one indexed query.

    Every executor request pays for this lookup. On PostgreSQL it is a statement prepared once per
    connection and the row becomes model instances directly, because compiling the equivalent ORM query
    cost more CPU than everything else the events endpoint does. Elsewhere: the ORM.
    """
    if connection.vendor != "postgresql":
        return ApiKey.objects.select_related("owner").filter(prefix=prefix).first()
    sql, keys, users = _key_lookup_statement()
    row = fetchone_prepared(sql, [prefix])
    if row is None:
        return None
    key = keys.read(row[: len(keys.fields)])
    key.owner = users.read(row[len(keys.fields) :])
    return key


_OWNER_FIELDS = ("id", "username", "is_active", "is_staff", "is_superuser")


@functools.cache
def _key_lookup_statement() -> tuple[str, RowReader, RowReader]:
    quote = connection.ops.quote_name
    # The owner's fields that authorization reads; the others are deferred (loaded if ever touched).
    keys, users = RowReader.of(ApiKey), RowReader.of(User, _OWNER_FIELDS)
    owner_column = quote(ApiKey._meta.get_field("owner").column)
    sql = (
        f"SELECT {keys.columns('k')}, {users.columns('u')} FROM {quote(ApiKey._meta.db_table)} k "
        f"JOIN {quote(User._meta.db_table)} u ON u.{quote(User._meta.pk.column)} = k.{owner_column} "
        f"WHERE k.{quote(ApiKey._meta.get_field('prefix').column)} = %s::varchar"
    )
    return sql, keys, users


def _touch_last_used(key: ApiKey, now) -> None:
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    key.last_used_at = now


def request_api_key(request: Request) -> ApiKey | None:
    """The API key a request authenticated with, or None for a user session or JWT."""
    return request.auth if isinstance(request.auth, ApiKey) else None
