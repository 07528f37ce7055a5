from __future__ import annotations

import pytest

from accounts.models import ApiKey, User
from accounts.services import api_key_create, invitation_create
from tests.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    User.objects.create_superuser("root", "root@example.com", "pw-for-tests")
    client.login(username="root", password="pw-for-tests")
    return client


def test_the_accounts_admin_pages_render_without_secrets(admin_client):
    user = make_user("alice", staff=True)
    key, raw_key = api_key_create(owner=user, name="exec", scopes=["executor"])
    invitation_create(email="new@example.com", created_by=user)
    for url in (
        "/admin/accounts/user/",
        f"/admin/accounts/user/{user.pk}/change/",
        "/admin/accounts/apikey/",
        f"/admin/accounts/apikey/{key.pk}/change/",
        "/admin/accounts/invitation/",
        "/admin/accounts/loginfailure/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert raw_key not in response.content.decode()


def test_keys_are_revoked_from_the_admin(admin_client):
    key, _ = api_key_create(owner=make_user(), name="x", scopes=["read"])
    response = admin_client.post("/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    assert response.status_code == 302
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
