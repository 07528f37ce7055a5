from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from tests.accounts.conftest import jwt_client, key_client
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def _rates(**rates: str) -> dict:
    return {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates},
    }


def test_requests_are_limited_per_api_key():
    user = make_user("alice")
    with override_settings(REST_FRAMEWORK=_rates(api_key="3/min")):
        first_key, second_key = key_client(user, "read"), key_client(user, "read")
        statuses = [first_key.get("/api/auth/me").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = first_key.get("/api/auth/me")
        assert limited.json()["error"]["code"] == "throttled"
        assert limited.has_header("Retry-After")
        # Another key of the same user has its own budget.
        assert second_key.get("/api/auth/me").status_code == 200


def test_requests_are_limited_per_signed_in_user():
    user = make_user("alice")
    with override_settings(REST_FRAMEWORK=_rates(user="2/min")):
        client = jwt_client(user)
        assert [client.get("/api/auth/me").status_code for _ in range(3)] == [200, 200, 429]
        assert jwt_client(make_user("bob")).get("/api/auth/me").status_code == 200
