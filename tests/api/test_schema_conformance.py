"""Every API operation's success response, on real data, matches the published OpenAPI schema exactly.

One scenario drives the whole API the way its users do (an admin, an operator, a remote executor), and
checks each 2xx body strictly (``tests.openapi_check``): a field the schema does not list, a missing
required field or a wrong type fails. The last assertion makes sure no documented operation was skipped.
schemathesis (``.ci/schemathesis.sh``) fuzzes the same schema against a live server; this test adds what a
fuzzer cannot reach without ids and state: claims, finished attempts, ledger entries, A/B results.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from accounts.models import Role, User
from research.services import ledger_import
from runs.models import Phase, PhaseState, Project, RunState
from telemetry import services as telemetry
from telemetry.ab import ab_compare
from tests.api.conftest import jwt_client, key_client
from tests.factories import add_member, make_run, make_user
from tests.openapi_check import assert_matches_schema, openapi_document

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PLAN = (FIXTURES / "plans" / "example_basic.yaml").read_text()
PASSWORD = "correct-horse-battery-9"
COMMIT = "3f47d86a0c1e5b2a9d7e6f5a4b3c2d1e0f9a8b7c"


class Checked:
    """Sends requests and validates each success body against the schema of the operation it hit."""

    def __init__(self) -> None:
        schema = openapi_document()
        self.templates = [
            (method, template, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"))
            for template, item in schema["paths"].items()
            for method in item
        ]
        self.covered: set[tuple[str, str]] = set()

    def __call__(self, client: APIClient, method: str, url: str, body: dict | None = None, *, status: int = 200):
        response = getattr(client, method)(url, body, format="json") if method != "get" else client.get(url, body)
        assert response.status_code == status, (method, url, response.content[:500])
        path = url.split("?", 1)[0]
        [template] = [t for m, t, pattern in self.templates if m == method and pattern.match(path)]
        self.covered.add((method, template))
        if response.content:
            assert_matches_schema(response.json(), template, method, status)
        return response.json() if response.content else None


@pytest.fixture
def check() -> Checked:
    return Checked()


def test_every_operation_answers_what_the_schema_says(check, tmp_path):
    admin = make_user("admin", staff=True, password=PASSWORD)
    staff = jwt_client(admin)

    # Accounts: login, refresh, me, keys, invitations, registration, JWKS, logout.
    anonymous = APIClient()
    pair = check(anonymous, "post", "/api/auth/login", {"username": "admin", "password": PASSWORD})
    pair = check(anonymous, "post", "/api/auth/refresh", {"refresh": pair["refresh"]})
    check(anonymous, "get", "/api/auth/.well-known/jwks.json")
    key = check(staff, "post", "/api/auth/api-keys/", {"name": "laptop", "scopes": ["read"]}, status=201)
    check(staff, "get", "/api/auth/api-keys/")
    check(staff, "get", f"/api/auth/api-keys/{key['id']}/")
    check(staff, "post", f"/api/auth/api-keys/{key['id']}/revoke/")

    # Projects and runs: create a project, an operator, a run from a plan; drive it.
    repository = tmp_path / "repo"
    (repository / "docs").mkdir(parents=True)
    project_body = {"slug": "autopack", "name": "Autopack", "repository_path": str(repository)}
    check(staff, "post", "/api/projects/", project_body, status=201)
    invitation = check(staff, "post", "/api/auth/invitations/", {"email": "op@example.com"}, status=201)
    check(staff, "get", "/api/auth/invitations/")
    check(
        anonymous,
        "post",
        "/api/auth/register",
        {"token": invitation["token"], "username": "op", "password": PASSWORD},
        status=201,
    )
    operator_user = User.objects.get(username="op")
    project = Project.objects.get(slug="autopack")
    add_member(operator_user, project, Role.OPERATOR)
    operator = jwt_client(operator_user)
    check(operator, "get", "/api/auth/me")
    check(operator, "get", "/api/projects/")
    check(operator, "get", "/api/projects/autopack/")
    created = check(
        operator, "post", "/api/projects/autopack/runs/", {"plan": PLAN, "source_name": "p.yaml"}, status=201
    )
    run_id = created["run"]["id"]
    check(operator, "post", f"/api/runs/{run_id}/start/")
    check(operator, "post", f"/api/runs/{run_id}/pause/")
    check(operator, "post", f"/api/runs/{run_id}/resume/")

    # A remote executor claims, beats, reports, finishes; a second claim is released.
    executor = key_client(admin, "executor")  # executor keys belong to staff
    claimed = check(executor, "post", "/api/executor/claim", {"worker": "box-1"})
    phase, epoch = claimed["claim"]["phase_id"], claimed["claim"]["claim_epoch"]
    lease = {"worker": "box-1", "epoch": epoch}
    check(executor, "post", f"/api/executor/phases/{phase}/heartbeat", {**lease, "stage": "builder"})
    blob = base64.b64encode(b"12 passed").decode()
    check(
        executor,
        "post",
        f"/api/executor/phases/{phase}/events",
        {**lease, "stage": "ci", "kind": "log", "data": {"passed": 12}, "blob": blob},
        status=201,
    )
    outcome = {
        "kind": "complete",
        "commit_sha": "a" * 40,
        "diff": "--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cost_usd": "0.0081",
        "model": "claude-sonnet-4-5",
        "summary": {"ci": {"fixed": ["t::a"], "new_failures": []}, "audit": {"approved": True, "issues": []}},
    }
    check(executor, "post", f"/api/executor/phases/{phase}/finish", {**lease, "outcome": outcome})
    second = check(executor, "post", "/api/executor/claim", {"worker": "box-1"})
    check(
        executor,
        "post",
        f"/api/executor/phases/{second['claim']['phase_id']}/release",
        {"worker": "box-1", "epoch": second["claim"]["claim_epoch"]},
    )
    Phase.objects.filter(run_id=run_id, state=PhaseState.QUEUED).update(state=PhaseState.COMPLETE)
    check(executor, "post", "/api/executor/claim", {"worker": "box-1"}, status=204)

    # Reading it all back.
    check(operator, "get", "/api/runs/")
    check(operator, "get", f"/api/runs/{run_id}/")
    check(operator, "get", f"/api/runs/{run_id}/progress/")
    check(operator, "get", f"/api/phases/?run={run_id}")
    check(operator, "get", f"/api/phases/{phase}/")
    attempts = check(operator, "get", f"/api/attempts/?phase={phase}")
    attempt = attempts["results"][0]["id"]
    for suffix in ("", "ci/", "diff/", "verdicts/"):
        check(operator, "get", f"/api/attempts/{attempt}/{suffix}")
    Phase.objects.filter(pk=phase).update(state=PhaseState.FAILED)
    check(operator, "post", f"/api/phases/{phase}/requeue/")
    check(operator, "post", f"/api/runs/{run_id}/cancel/")

    # Telemetry, with an A/B result to list.
    control = make_run(project, phases=1, state=RunState.COMPLETE, base_commit=COMMIT)
    treatment = make_run(project, phases=1, state=RunState.COMPLETE, base_commit=COMMIT)
    for run, tokens in ((control, 10_000), (treatment, 8_000)):
        telemetry.usage_record(
            provider="anthropic",
            model="claude-sonnet-4-5",
            role="builder",
            run_id=run.pk,
            input_tokens=tokens,
            output_tokens=100,
            request_id=f"r-{run.pk}",
            latency_ms=900,
            stop_reason="end_turn",
        )
    ab_compare(control_ids=[control.pk], treatment_ids=[treatment.pk], label="schema")
    check(operator, "get", "/api/telemetry/usage/?group_by=model,role")
    check(operator, "get", f"/api/telemetry/runs/{run_id}/status/")
    check(operator, "get", f"/api/telemetry/runs/{treatment.pk}/metrics/")
    check(operator, "get", "/api/telemetry/estimator/accuracy/?stratify=category")
    check(operator, "get", "/api/telemetry/events/")
    check(operator, "get", "/api/telemetry/ab-results/")

    # Research over an imported ledger.
    ledger_import(paths=[FIXTURES / "BUILD_HISTORY.md"], project=project)
    entries = check(operator, "get", "/api/research/entries/?q=truncation")
    check(operator, "get", f"/api/research/entries/{entries['results'][0]['id']}/")
    session = check(
        operator,
        "post",
        "/api/research/sessions/",
        {"project": "autopack", "question": "How was truncation fixed?"},
        status=201,
    )
    check(operator, "get", f"/api/research/sessions/{session['id']}/")
    check(operator, "get", "/api/research/embedder/")

    check(anonymous, "post", "/api/auth/logout", {"refresh": pair["refresh"]}, status=204)
    assert check.covered == {(method, template) for method, template, _ in check.templates}
