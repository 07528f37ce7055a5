from __future__ import annotations

import pytest
from rest_framework.decorators import api_view, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory

from accounts.authentication import ApiKeyAuthentication
from accounts.models import Role
from accounts.permissions import HasScope
from accounts.services import api_key_create, project_role, user_has_project_role
from accounts.tokens import tokens_issue
from tests.factories import add_member, make_project, make_run, make_user

pytestmark = pytest.mark.django_db


@api_view(["POST"])
@permission_classes([HasScope("executor")])
def _executor_only(request: Request) -> Response:
    return Response({"ok": True})


def _post(authorization: str):
    request = APIRequestFactory().post("/", {}, format="json", HTTP_AUTHORIZATION=authorization)
    return _executor_only(request)


def test_an_executor_key_passes_the_executor_scope():
    _, raw_key = api_key_create(owner=make_user(staff=True), name="exec", scopes=["executor"])
    assert _post(f"Api-Key {raw_key}").status_code == 200


def test_a_read_write_key_does_not_pass_the_executor_scope():
    _, raw_key = api_key_create(owner=make_user(staff=True), name="rw", scopes=["read", "write"])
    response = _post(f"Api-Key {raw_key}")
    assert response.status_code == 403
    assert response.data["error"]["code"] == "permission_denied"


def test_a_signed_in_user_acts_as_executor_only_when_staff():
    assert _post(f"Bearer {tokens_issue(user=make_user())['access']}").status_code == 403
    assert _post(f"Bearer {tokens_issue(user=make_user(staff=True))['access']}").status_code == 200


def test_no_credential_is_a_401():
    assert _post("").status_code == 401


def test_project_roles_rank_viewer_operator_owner():
    project = make_project()
    viewer, operator, owner, outsider = make_user(), make_user(), make_user(), make_user()
    add_member(viewer, project, Role.VIEWER)
    add_member(operator, project, Role.OPERATOR)
    add_member(owner, project, Role.OWNER)
    assert project_role(outsider, project.pk) is None
    assert project_role(make_user(staff=True), project.pk) == Role.OWNER
    allowed = {
        (user.pk, role)
        for user in (viewer, operator, owner, outsider)
        for role in Role
        if user_has_project_role(user, project, role)
    }
    assert allowed == {
        (viewer.pk, Role.VIEWER),
        (operator.pk, Role.VIEWER),
        (operator.pk, Role.OPERATOR),
        (owner.pk, Role.VIEWER),
        (owner.pk, Role.OPERATOR),
        (owner.pk, Role.OWNER),
    }


def test_the_key_lookup_is_by_the_indexed_prefix():
    key, raw_key = api_key_create(owner=make_user(), name="x", scopes=["read"])
    assert ApiKeyAuthentication().authenticate_key(raw_key)[1].pk == key.pk
    field = type(key)._meta.get_field("prefix")
    assert field.unique  # unique implies an index: the lookup never scans


def test_an_operator_sees_only_runs_of_their_projects():
    user = make_user()
    mine = make_run()
    add_member(user, mine.project, Role.OPERATOR)
    make_run()
    from runs.models import Run

    assert list(Run.objects.for_user(user)) == [mine]
