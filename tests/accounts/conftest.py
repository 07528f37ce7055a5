"""Fixtures for accounts tests: clients signed in with a real RS256 JWT or a real API key."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from accounts.models import User
from accounts.services import api_key_create
from accounts.tokens import tokens_issue


@pytest.fixture(autouse=True)
def _fresh_throttle_counters() -> None:
    # Throttle counters live in the (process-local) cache; one test's requests must not limit another's.
    cache.clear()


def jwt_client(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens_issue(user=user)['access']}")
    return client


def key_client(user: User, *scopes: str) -> APIClient:
    _, raw_key = api_key_create(owner=user, name="test key", scopes=list(scopes))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return client
