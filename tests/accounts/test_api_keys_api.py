from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import ApiKey
from accounts.services import api_key_create
from tests.accounts.conftest import jwt_client, key_client
from tests.factories import make_user

pytestmark = pytest.mark.django_db

KEYS = "/api/auth/api-keys/"


def test_creating_a_key_shows_it_once():
    client = jwt_client(make_user("alice"))
    created = client.post(KEYS, {"name": "laptop", "scopes": ["read", "write"]}, format="json")
    assert created.status_code == 201
    body = created.json()
    raw_key = body.pop("key")
    assert raw_key.startswith(f"ak_{body['prefix']}_")
    assert body == {
        "id": body["id"],
        "name": "laptop",
        "owner": "alice",
        "prefix": body["prefix"],
        "display": f"ak_{body['prefix']}_…",
        "scopes": ["read", "write"],
        "created_at": body["created_at"],
        "expires_at": None,
        "revoked_at": None,
        "last_used_at": None,
        "is_usable": True,
    }
    listed = client.get(KEYS).json()["results"]
    assert [item["id"] for item in listed] == [body["id"]]
    assert "key" not in listed[0]
    assert raw_key not in client.get(f"{KEYS}{body['id']}/").content.decode()


def test_revoking_a_key_stops_it_working():
    user = make_user("alice")
    client = jwt_client(user)
    raw_key = client.post(KEYS, {"name": "ci", "scopes": ["read"]}, format="json").json()["key"]
    key = ApiKey.objects.get(owner=user)
    revoked = client.post(f"{KEYS}{key.pk}/revoke/")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    assert revoked.json()["is_usable"] is False
    from rest_framework.test import APIClient

    with_key = APIClient()
    with_key.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    assert with_key.get("/api/auth/me").status_code == 401


def test_another_users_key_is_not_found():
    make_user("alice")
    bob = make_user("bob")
    key_client(bob, "read")
    bobs_key = ApiKey.objects.get(owner=bob)
    alice = jwt_client(make_user("carol"))
    assert alice.get(f"{KEYS}{bobs_key.pk}/").status_code == 404
    assert alice.post(f"{KEYS}{bobs_key.pk}/revoke/").status_code == 404
    assert alice.get(KEYS).json()["results"] == []


def test_an_api_key_cannot_mint_keys():
    client = key_client(make_user("alice"), "read", "write")
    assert client.post(KEYS, {"name": "more", "scopes": ["write"]}, format="json").status_code == 403
    assert client.get(KEYS).status_code == 403


def test_only_staff_may_hold_executor_keys():
    response = jwt_client(make_user("alice")).post(KEYS, {"name": "x", "scopes": ["executor"]}, format="json")
    assert response.status_code == 403
    staff = jwt_client(make_user("root", staff=True))
    assert staff.post(KEYS, {"name": "x", "scopes": ["executor"]}, format="json").status_code == 201


def test_an_unknown_scope_is_a_validation_error():
    response = jwt_client(make_user()).post(KEYS, {"name": "x", "scopes": ["admin"]}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "scopes" in response.json()["error"]["details"]


def test_the_create_api_key_command_prints_a_working_key():
    user = make_user("worker", staff=True)
    out = StringIO()
    call_command(
        "create_api_key",
        user="worker",
        name="exec-1",
        scope=["executor"],
        expires_days=30,
        stdout=out,
        stderr=StringIO(),
    )
    raw_key = out.getvalue().strip()
    key = ApiKey.objects.get(owner=user)
    assert key.hash_key(raw_key) == key.key_hash
    assert key.scopes == ["executor"]
    assert key.expires_at is not None


def test_the_create_api_key_command_refuses_an_unknown_user():
    with pytest.raises(CommandError):
        call_command("create_api_key", user="ghost", name="x", scope=["read"], stdout=StringIO(), stderr=StringIO())


def test_listing_keys_costs_a_constant_number_of_queries(django_assert_max_num_queries):
    user = make_user("alice")
    for number in range(8):
        api_key_create(owner=user, name=f"k{number}", scopes=["read"])
    client = jwt_client(user)
    for page_size in (1, 8):
        with django_assert_max_num_queries(3):
            assert len(client.get(f"{KEYS}?page_size={page_size}").json()["results"]) == page_size
