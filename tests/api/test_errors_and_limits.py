"""The error shape, the body size limit, the stale-epoch 409 and the OpenAPI schema."""

from __future__ import annotations

import json

import pytest
import yaml
from django.test import override_settings
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory

from runs.models import RunState
from runs.services.leases import phase_claim, phase_heartbeat
from tests.api.conftest import jwt_client
from tests.factories import add_member, make_project, make_run, make_user

pytestmark = pytest.mark.django_db


@api_view(["POST"])
@permission_classes([AllowAny])
def _heartbeat_view(request: Request) -> Response:
    heartbeat = phase_heartbeat(
        phase_id=request.data["phase_id"], epoch=request.data["epoch"], worker=request.data["worker"]
    )
    return Response({"lease_expires_at": heartbeat.lease_expires_at})


def test_a_stale_epoch_from_a_service_is_a_409_with_the_error_shape():
    run = make_run(phases=1, state=RunState.RUNNING)
    claim = phase_claim(worker="host-1", runs=[run.pk])
    request = APIRequestFactory().post(
        "/", {"phase_id": claim.phase_id, "epoch": claim.claim_epoch - 1, "worker": "host-1"}, format="json"
    )
    response = _heartbeat_view(request)
    assert response.status_code == 409
    assert response.data == {
        "error": {
            "code": "stale_epoch",
            "message": f"phase {claim.phase_id} is not executing under claim epoch {claim.claim_epoch - 1}",
            "details": {"current_epoch": claim.claim_epoch, "state": "executing", "given_epoch": claim.claim_epoch - 1},
        }
    }


def test_unauthenticated_requests_get_401_with_the_error_shape():
    response = APIClient().get("/api/runs/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response.has_header("WWW-Authenticate")


def test_malformed_json_is_a_400():
    client = jwt_client(make_user())
    response = client.post("/api/auth/api-keys/", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_non_finite_numbers_are_not_json():
    response = jwt_client(make_user()).post(
        "/api/auth/api-keys/", data='{"name": "x", "scopes": ["read"], "n": NaN}', content_type="application/json"
    )
    assert response.status_code == 400


@override_settings(API_MAX_BODY_BYTES=2048)
def test_a_body_over_the_limit_is_refused_with_413():
    user = make_user("alice")
    add_member(user, make_project("alpha"), "owner")
    body = json.dumps({"plan": "x" * 4096})
    response = jwt_client(user).post("/api/projects/alpha/runs/", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_the_schema_documents_every_operation_with_error_shapes():
    response = APIClient().get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")
    operations = [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if path.startswith(("/api/runs", "/api/phases", "/api/attempts", "/api/projects", "/api/auth"))
    ]
    assert len(operations) > 25
    for path, method, operation in operations:
        responses = operation["responses"]
        assert any(code.startswith("2") for code in responses), (path, method)
        for code in ("400", "401", "403"):
            error_schema = responses[code]["content"]["application/json"]["schema"]
            assert error_schema == {"$ref": "#/components/schemas/Error"}, (path, method, code)
        if "{" in path:
            assert "404" in responses, (path, method)
        if method == "post" and "{" in path:
            assert "409" in responses, (path, method)
    assert set(schema["components"]["schemas"]["ErrorBody"]["required"]) == {"code", "message", "details"}


def test_the_docs_page_is_served():
    assert APIClient().get("/api/docs/").status_code == 200


def test_the_docs_page_loads_swagger_ui_from_this_server_not_a_cdn():
    # Operators run Autopack on machines without internet access: a CDN-hosted Swagger UI is a blank page.
    page = APIClient().get("/api/docs/").content.decode()
    assert "cdn.jsdelivr.net" not in page
    assert "swagger-ui-bundle.js" in page


@pytest.mark.parametrize(
    "path",
    [
        "/api/runs/99999999999999999999999/",
        "/api/runs/abc/start/",
        "/api/phases/%C2%84/requeue/",
        "/api/attempts/-1/diff/",
        "/api/runs//",
        "/api/auth/api-keys/1e3/",
    ],
)
def test_a_malformed_or_huge_id_is_a_json_404(path):
    user = make_user(staff=True)
    client = jwt_client(user)
    response = client.post(path) if path.endswith(("start/", "requeue/")) else client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_huge_id_filter_is_a_400():
    response = jwt_client(make_user(staff=True)).get("/api/attempts/?run=99999999999999999999999")
    assert response.status_code == 400


def _executor(user):
    from tests.api.conftest import key_client

    return key_client(user, "executor")


def test_a_stale_epoch_through_the_executor_endpoints_is_a_409_and_changes_nothing():
    from runs.models import Phase

    make_run(phases=1, state=RunState.RUNNING)
    executor = _executor(make_user("worker", staff=True))
    first = executor.post("/api/executor/claim", {"worker": "host-1"}, format="json").json()["claim"]
    phase_id, old_epoch = first["phase_id"], first["claim_epoch"]
    released = executor.post(
        f"/api/executor/phases/{phase_id}/release", {"worker": "host-1", "epoch": old_epoch}, format="json"
    )
    assert released.status_code == 200, released.content
    second = executor.post("/api/executor/claim", {"worker": "host-2"}, format="json").json()["claim"]
    assert (second["phase_id"], second["claim_epoch"]) == (phase_id, old_epoch + 1)
    before = Phase.objects.get(pk=phase_id)
    stale = executor.post(
        f"/api/executor/phases/{phase_id}/heartbeat", {"worker": "host-1", "epoch": old_epoch}, format="json"
    )
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "stale_epoch"
    after = Phase.objects.get(pk=phase_id)
    assert (after.lease_expires_at, after.lease_owner, after.claim_epoch) == (
        before.lease_expires_at,
        before.lease_owner,
        before.claim_epoch,
    )


def test_an_executor_key_cannot_act_on_a_lease_taken_with_another_key():
    make_run(phases=1, state=RunState.RUNNING)
    owner = make_user("worker", staff=True)
    first, second = _executor(owner), _executor(owner)
    claim = first.post("/api/executor/claim", {"worker": "host-1"}, format="json").json()["claim"]
    response = second.post(
        f"/api/executor/phases/{claim['phase_id']}/heartbeat",
        {"worker": "host-1", "epoch": claim["claim_epoch"]},
        format="json",
    )
    assert response.status_code in (403, 409)
    assert response.json()["error"]["code"] in ("permission_denied", "stale_epoch")


def test_a_read_write_key_cannot_use_the_executor_endpoints():
    from tests.api.conftest import key_client

    client = key_client(make_user("alice", staff=True), "read", "write")
    assert client.post("/api/executor/claim", {"worker": "host-1"}, format="json").status_code == 403


def test_the_not_found_handler_answers_json_under_api_and_html_elsewhere(rf):
    from autopack_site.api_errors import not_found, server_error

    api = not_found(rf.get("/api/no/such/thing"), None)
    assert api.status_code == 404
    assert json.loads(api.content) == {"error": {"code": "not_found", "message": "Not found.", "details": None}}
    assert not_found(rf.get("/no/such/page"), None)["Content-Type"].startswith("text/html")
    crashed = server_error(rf.get("/api/runs/"))
    assert crashed.status_code == 500
    assert json.loads(crashed.content)["error"]["code"] == "server_error"
