"""Shared fixtures. App-specific fixtures live in each tests/<app>/conftest.py."""

from __future__ import annotations

import pytest
from django.db import connection


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _isolated_data_dir(settings, tmp_path) -> None:
    """Each test writes workspaces, cassettes and vector indexes under its own temporary directory."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    settings.DATA_DIR = data_dir
    settings.AUTOPACK = {
        **settings.AUTOPACK,
        "WORKSPACES_DIR": data_dir / "workspaces",
        "CASSETTES_DIR": data_dir / "cassettes",
    }


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    """Rate-limit counters live in the cache; no test may inherit another's counts."""
    from django.core.cache import cache

    cache.clear()


def pytest_collection_modifyitems(config, items) -> None:
    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)
