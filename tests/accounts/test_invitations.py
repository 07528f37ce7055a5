from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.models import Membership, User
from accounts.services import invitation_create
from tests.accounts.conftest import jwt_client
from tests.factories import add_member, make_project, make_user

pytestmark = pytest.mark.django_db

INVITES = "/api/auth/invitations/"
REGISTER = "/api/auth/register"
STRONG = "correct-horse-battery-9"


def test_staff_invite_and_the_invitee_registers_once():
    staff = jwt_client(make_user("root", staff=True))
    invitation = staff.post(INVITES, {"email": "new@example.com"}, format="json")
    assert invitation.status_code == 201
    token = invitation.json()["token"]
    registered = APIClient().post(REGISTER, {"token": token, "username": "newbie", "password": STRONG}, format="json")
    assert registered.status_code == 201
    assert registered.json()["username"] == "newbie"
    assert User.objects.get(username="newbie").email == "new@example.com"
    again = APIClient().post(REGISTER, {"token": token, "username": "other", "password": STRONG}, format="json")
    assert again.status_code == 400


def test_a_project_owner_invites_into_the_project_with_a_role():
    owner = make_user("owner")
    project = make_project("alpha")
    add_member(owner, project, "owner")
    token = (
        jwt_client(owner)
        .post(INVITES, {"email": "x@example.com", "project": "alpha", "role": "operator"}, format="json")
        .json()["token"]
    )
    APIClient().post(REGISTER, {"token": token, "username": "joiner", "password": STRONG}, format="json")
    assert Membership.objects.get(user__username="joiner").role == "operator"


def test_a_plain_user_cannot_invite():
    client = jwt_client(make_user("alice"))
    assert client.post(INVITES, {"email": "x@example.com"}, format="json").status_code == 403


def test_an_operator_cannot_invite_into_the_project():
    user = make_user("alice")
    add_member(user, make_project("alpha"), "operator")
    response = jwt_client(user).post(INVITES, {"email": "x@example.com", "project": "alpha"}, format="json")
    assert response.status_code == 403


def test_inviting_into_another_users_project_is_refused_as_unknown():
    make_project("secret")
    response = jwt_client(make_user("alice")).post(
        INVITES, {"email": "x@example.com", "project": "secret"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["details"] == {"project": ["not found"]}


def test_registration_without_a_valid_invitation_is_refused():
    response = APIClient().post(REGISTER, {"token": "made-up", "username": "x", "password": STRONG}, format="json")
    assert response.status_code == 400
    assert not User.objects.filter(username="x").exists()


def test_a_weak_password_is_refused_at_registration():
    staff = jwt_client(make_user("root", staff=True))
    token = staff.post(INVITES, {"email": "new@example.com"}, format="json").json()["token"]
    response = APIClient().post(REGISTER, {"token": token, "username": "newbie", "password": "123"}, format="json")
    assert response.status_code == 400
    assert "password" in response.json()["error"]["details"]


def test_invitations_sent_by_others_are_not_listed():
    owner = make_user("owner")
    add_member(owner, make_project("alpha"), "owner")
    jwt_client(owner).post(INVITES, {"email": "x@example.com", "project": "alpha"}, format="json")
    other = make_user("other")
    add_member(other, make_project("beta"), "owner")
    assert jwt_client(other).get(INVITES).json()["results"] == []
    assert len(jwt_client(make_user("root", staff=True)).get(INVITES).json()["results"]) == 1


def test_me_pins_the_signed_in_user_with_memberships():
    user = make_user("alice")
    add_member(user, make_project("alpha"), "viewer")
    body = jwt_client(user).get("/api/auth/me").json()
    assert body == {
        "id": user.pk,
        "username": "alice",
        "email": "",
        "first_name": "",
        "last_name": "",
        "is_staff": False,
        "date_joined": user.date_joined.isoformat().replace("+00:00", "Z"),
        "memberships": [{"project": "alpha", "role": "viewer"}],
    }


def test_listing_invitations_costs_a_constant_number_of_queries(django_assert_max_num_queries):
    staff = make_user("root", staff=True)
    project = make_project("alpha")
    for number in range(6):
        invitation_create(email=f"u{number}@example.com", created_by=staff, project=project)
    client = jwt_client(staff)
    for page_size in (1, 6):
        with django_assert_max_num_queries(3):
            assert len(client.get(f"{INVITES}?page_size={page_size}").json()["results"]) == page_size
