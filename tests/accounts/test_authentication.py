from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_revoke
from tests.factories import make_user

pytestmark = pytest.mark.django_db

ME = "/api/auth/me"


def _client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return client


def test_a_valid_key_authenticates_as_its_owner():
    user = make_user("alice")
    _, raw_key = api_key_create(owner=user, name="script", scopes=["read"])
    response = _client(raw_key).get(ME)
    assert response.status_code == 200
    assert response.json()["username"] == "alice"


def test_a_key_has_the_documented_format_and_only_its_hash_is_stored():
    key, raw_key = api_key_create(owner=make_user(), name="script", scopes=["read"])
    prefix, secret = raw_key.removeprefix("ak_").split("_", 1)
    assert prefix == key.prefix
    assert len(secret) >= 22  # ≥ 128 bits in base64url
    assert key.key_hash == ApiKey.hash_key(raw_key)
    assert raw_key not in str(ApiKey.objects.filter(pk=key.pk).values().get())


def test_a_key_with_a_wrong_secret_is_refused():
    _, raw_key = api_key_create(owner=make_user(), name="script", scopes=["read"])
    tampered = raw_key[:-4] + ("AAAA" if not raw_key.endswith("AAAA") else "BBBB")
    response = _client(tampered).get(ME)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert tampered not in response.content.decode()


def test_a_malformed_key_is_refused():
    assert _client("not-a-key").get(ME).status_code == 401


def test_a_revoked_key_is_refused():
    key, raw_key = api_key_create(owner=make_user(), name="script", scopes=["read"])
    api_key_revoke(key=key)
    response = _client(raw_key).get(ME)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_revoked"


def test_an_expired_key_is_refused():
    key, raw_key = api_key_create(
        owner=make_user(), name="script", scopes=["read"], expires_at=timezone.now() + timedelta(hours=1)
    )
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = _client(raw_key).get(ME)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "api_key_expired"


def test_a_key_of_an_inactive_user_is_refused():
    user = make_user()
    _, raw_key = api_key_create(owner=user, name="script", scopes=["read"])
    user.is_active = False
    user.save()
    assert _client(raw_key).get(ME).status_code == 401


def test_last_used_is_written_at_most_once_a_minute(django_assert_num_queries):
    key, raw_key = api_key_create(owner=make_user(), name="script", scopes=["read"])
    client = _client(raw_key)
    client.get(ME)
    first_use = ApiKey.objects.get(pk=key.pk).last_used_at
    assert first_use is not None
    client.get(ME)
    assert ApiKey.objects.get(pk=key.pk).last_used_at == first_use
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    client.get(ME)
    assert ApiKey.objects.get(pk=key.pk).last_used_at > first_use


def test_a_key_lookup_costs_one_query(django_assert_num_queries):
    from accounts.authentication import ApiKeyAuthentication

    key, raw_key = api_key_create(owner=make_user(), name="script", scopes=["read", "write"])
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    # On PostgreSQL the statement is prepared once per connection (one PREPARE the first time), then reused.
    ApiKeyAuthentication().authenticate_key(raw_key)
    with django_assert_num_queries(1):
        user, authenticated_key = ApiKeyAuthentication().authenticate_key(raw_key)
    assert authenticated_key.pk == key.pk and user.pk == key.owner_id


def test_the_looked_up_key_and_owner_are_whole_decoded_instances():
    from accounts.authentication import ApiKeyAuthentication

    owner = make_user("carol")
    expires = timezone.now() + timedelta(days=3)
    key, raw_key = api_key_create(owner=owner, name="ci", scopes=["read", "write"], expires_at=expires)
    user, found = ApiKeyAuthentication().authenticate_key(raw_key)
    assert found.scopes == ["read", "write"] and found.has_scope("write") and not found.has_scope("executor")
    assert found.name == "ci" and found.prefix == key.prefix and found.expires_at == expires
    assert found.owner is user and user.username == "carol" and user.is_active and not user.is_staff
    assert user.email == owner.email and user.date_joined == owner.date_joined  # deferred fields load on use
    assert found._state.adding is False  # a saved row: save() updates it rather than inserting a copy
    found.name = "renamed"
    found.save(update_fields=["name"])
    assert ApiKey.objects.get(pk=key.pk).name == "renamed" and ApiKey.objects.count() == 1
