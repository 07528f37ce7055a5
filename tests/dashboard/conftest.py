"""Fixtures for dashboard page tests: members with roles and signed-in clients."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import Role
from tests.factories import add_member, make_project, make_user


def login(client: Client, user) -> Client:
    client.force_login(user)
    return client


@pytest.fixture
def project():
    return make_project("alpha")


@pytest.fixture
def operator(project):
    user = make_user("olivia")
    add_member(user, project, Role.OPERATOR)
    return user


@pytest.fixture
def viewer(project):
    user = make_user("victor")
    add_member(user, project, Role.VIEWER)
    return user


@pytest.fixture
def operator_client(client, operator) -> Client:
    return login(client, operator)
