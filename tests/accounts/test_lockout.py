from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import LoginFailure
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def _login(username: str, password: str):
    # Each attempt from a fresh address bucket: the per-address throttle is tested separately.
    cache.clear()
    return APIClient().post("/api/auth/login", {"username": username, "password": password}, format="json")


def test_ten_failed_logins_lock_the_account_even_for_the_right_password():
    make_user("alice")
    for _ in range(10):
        assert _login("alice", "wrong").status_code == 401
    locked = _login("alice", "pw-for-tests")
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "account_locked"


def test_nine_failures_do_not_lock_and_a_success_clears_the_count():
    make_user("alice")
    for _ in range(9):
        _login("alice", "wrong")
    assert _login("alice", "pw-for-tests").status_code == 200
    assert not LoginFailure.objects.filter(username="alice").exists()


def test_the_lock_is_per_account():
    make_user("alice")
    make_user("bob")
    for _ in range(10):
        _login("alice", "wrong")
    assert _login("bob", "pw-for-tests").status_code == 200


def test_the_lock_lifts_after_an_hour():
    make_user("alice")
    for _ in range(10):
        _login("alice", "wrong")
    LoginFailure.objects.update(created_at=timezone.now() - timedelta(hours=1, seconds=1))
    assert _login("alice", "pw-for-tests").status_code == 200


def test_unknown_accounts_lock_too_so_the_lock_reveals_nothing():
    for _ in range(10):
        _login("nobody", "wrong")
    assert _login("nobody", "wrong").json()["error"]["code"] == "account_locked"


def test_login_requests_are_rate_limited_per_address():
    make_user("alice")
    client = APIClient()
    # A forged X-Forwarded-For does not buy a fresh budget.
    statuses = [
        client.post(
            "/api/auth/login", {"username": f"u{i}", "password": "x"}, format="json", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}"
        ).status_code
        for i in range(31)
    ]
    assert statuses[:30] == [401] * 30
    assert statuses[30] == 429
