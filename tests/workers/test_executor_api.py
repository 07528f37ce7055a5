from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from accounts.services import api_key_create
from runs.engine.outcome import OutcomeKind, PhaseOutcome
from runs.models import AttemptEvent, Phase, PhaseState, RunState
from tests.factories import make_run, make_user

pytestmark = pytest.mark.django_db


def client_for(scopes: list[str], *, staff: bool = True) -> APIClient:
    _, raw = api_key_create(owner=make_user(staff=staff), name="executor", scopes=scopes)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


@pytest.fixture
def executor() -> APIClient:
    return client_for(["executor"])


def claim(client: APIClient, worker: str = "box-1") -> dict:
    response = client.post("/api/executor/claim", {"worker": worker}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["claim"]


def test_claim_returns_the_lease_and_the_phase_spec(executor):
    run = make_run(state=RunState.RUNNING)
    response = executor.post("/api/executor/claim", {"worker": "box-1"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["claim"]["run_id"] == run.pk and body["claim"]["claim_epoch"] == 1
    assert body["claim"]["worker"].startswith("key:") and body["claim"]["worker"].endswith("/box-1")
    assert body["spec"]["phase_id"] == "P1" and body["spec"]["claim_epoch"] == 1


def test_claim_without_work_is_204(executor):
    assert executor.post("/api/executor/claim", {"worker": "box-1"}, format="json").status_code == 204


def test_a_key_without_the_executor_scope_cannot_claim():
    make_run(state=RunState.RUNNING)
    reader = client_for(["read"])
    assert reader.post("/api/executor/claim", {"worker": "box-1"}, format="json").status_code == 403
    assert not Phase.objects.filter(state=PhaseState.EXECUTING).exists()


def test_heartbeat_events_and_finish_carry_the_epoch(executor):
    run = make_run(state=RunState.RUNNING, phases=1)
    held = claim(executor)
    url = f"/api/executor/phases/{held['phase_id']}"
    lease = {"worker": "box-1", "epoch": held["claim_epoch"]}
    beat = executor.post(f"{url}/heartbeat", {**lease, "stage": "build"}, format="json")
    assert beat.status_code == 200 and beat.json()["should_stop"] is False
    event = executor.post(
        f"{url}/events",
        {**lease, "stage": "build", "kind": "start", "data": {"x": 1}, "blob": "aGVsbG8="},
        format="json",
    )
    assert event.status_code == 201 and event.json() == {"seq": 1}
    assert bytes(AttemptEvent.objects.get().blob) != b"hello"  # stored compressed
    outcome = PhaseOutcome(kind=OutcomeKind.COMPLETE, commit_sha="c0ffee", input_tokens=5).as_dict()
    done = executor.post(f"{url}/finish", {**lease, "outcome": outcome}, format="json")
    assert done.status_code == 200 and done.json() == {"phase_id": held["phase_id"], "state": "complete"}
    run.refresh_from_db()
    assert (run.state, run.tokens_used) == (RunState.COMPLETE, 5)


def test_a_stale_epoch_is_409_and_changes_nothing(executor):
    make_run(state=RunState.RUNNING)
    held = claim(executor)
    url = f"/api/executor/phases/{held['phase_id']}"
    stale = {"worker": "box-1", "epoch": held["claim_epoch"] + 1}
    outcome = PhaseOutcome(kind=OutcomeKind.COMPLETE).as_dict()
    for path, extra in (("heartbeat", {}), ("events", {"stage": "s", "kind": "k"}), ("finish", {"outcome": outcome})):
        response = executor.post(f"{url}/{path}", {**stale, **extra}, format="json")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "stale_epoch"
    assert Phase.objects.get(pk=held["phase_id"]).state == PhaseState.EXECUTING
    assert not AttemptEvent.objects.exists()


def test_another_key_cannot_act_on_a_phase_it_does_not_hold(executor):
    make_run(state=RunState.RUNNING)
    held = claim(executor)
    intruder = client_for(["executor"])
    response = intruder.post(
        f"/api/executor/phases/{held['phase_id']}/finish",
        {"worker": "box-1", "epoch": held["claim_epoch"], "outcome": {"kind": "complete"}},
        format="json",
    )
    assert response.status_code == 403
    assert Phase.objects.get(pk=held["phase_id"]).state == PhaseState.EXECUTING


def test_release_gives_the_phase_back(executor):
    make_run(state=RunState.RUNNING)
    held = claim(executor)
    response = executor.post(
        f"/api/executor/phases/{held['phase_id']}/release",
        {"worker": "box-1", "epoch": held["claim_epoch"], "reason": "shutting down"},
        format="json",
    )
    assert response.json()["state"] == "queued"


def test_an_invalid_outcome_is_a_400(executor):
    make_run(state=RunState.RUNNING)
    held = claim(executor)
    response = executor.post(
        f"/api/executor/phases/{held['phase_id']}/finish",
        {"worker": "box-1", "epoch": held["claim_epoch"], "outcome": {"kind": "teleported"}},
        format="json",
    )
    assert response.status_code == 400


# --- bounded input, documented errors -------------------------------------------------------------------


def lease_of(held: dict, **extra) -> dict:
    return {"worker": "box-1", "epoch": held["claim_epoch"], **extra}


def test_an_epoch_beyond_bigint_is_a_400_in_the_error_shape_not_a_500(executor):
    make_run(state=RunState.RUNNING)
    held = claim(executor)
    response = executor.post(
        f"/api/executor/phases/{held['phase_id']}/heartbeat", {"worker": "box-1", "epoch": 2**63}, format="json"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and "epoch" in error["details"]


def test_a_run_id_beyond_bigint_in_a_claim_is_a_400(executor):
    make_run(state=RunState.RUNNING)
    response = executor.post("/api/executor/claim", {"worker": "box-1", "runs": [2**63]}, format="json")
    assert response.status_code == 400 and "runs" in response.json()["error"]["details"]
    assert not Phase.objects.filter(state=PhaseState.EXECUTING).exists()


def test_a_phase_id_beyond_bigint_or_unknown_is_a_json_404(executor):
    for phase_id in (2**63, 10**30, 2**63 - 1):
        response = executor.post(
            f"/api/executor/phases/{phase_id}/heartbeat", {"worker": "box-1", "epoch": 1}, format="json"
        )
        assert response.status_code == 404, phase_id
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "field, value",
    [
        ("input_tokens", 2**63),
        ("output_tokens", -1),
        ("budget_override", 2**31),
        ("cost_usd", "1e30"),
        ("cost_usd", "NaN"),
        ("cost_usd", "-1"),
        ("summary", [1, 2]),
        ("run_failure_reason", "bored"),
        ("commit_sha", "x" * 65),
    ],
)
def test_an_out_of_range_or_mistyped_outcome_field_is_a_400_and_finishes_nothing(executor, field, value):
    make_run(state=RunState.RUNNING)
    held = claim(executor)
    outcome = {"kind": "complete", field: value}
    response = executor.post(
        f"/api/executor/phases/{held['phase_id']}/finish", lease_of(held, outcome=outcome), format="json"
    )
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]["outcome"]
    assert Phase.objects.get(pk=held["phase_id"]).state == PhaseState.EXECUTING


def test_a_blob_that_is_not_base64_is_a_400(executor):
    make_run(state=RunState.RUNNING)
    held = claim(executor)
    response = executor.post(
        f"/api/executor/phases/{held['phase_id']}/events",
        lease_of(held, stage="s", kind="k", blob="%%%"),
        format="json",
    )
    assert response.status_code == 400 and "blob" in response.json()["error"]["details"]
    assert not AttemptEvent.objects.exists()


def test_the_schema_documents_every_executor_operation_with_bodies_and_error_shapes():
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    operations = {path: item["post"] for path, item in schema["paths"].items() if path.startswith("/api/executor/")}
    assert len(operations) == 5
    for path, operation in operations.items():
        assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"], path
        for code in ("400", "401", "403", "409", "413", "429"):
            assert operation["responses"][code]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }, (path, code)
        if "{phase_id}" in path:
            assert "404" in operation["responses"]
    outcome = schema["components"]["schemas"]["OutcomeInputRequest"]["properties"]
    assert outcome["input_tokens"]["maximum"] == 10**12 and outcome["budget_override"]["maximum"] == 2**31 - 1
    # Each request body is described by its own docstring, never by the notes of an implementation mixin.
    from runs.executor_api import LightFields

    mixin_notes = LightFields.__doc__.splitlines()[0]
    for name in ("Claim", "Heartbeat", "Event", "Finish", "Release", "Outcome"):
        description = schema["components"]["schemas"][f"{name}InputRequest"]["description"]
        assert description and mixin_notes not in description, name


# --- follow-ups and research ----------------------------------------------------------------------------


def test_a_remote_finish_records_goal_drift_and_enqueues_the_memory_follow_up(
    executor, settings, django_capture_on_commit_callbacks
):
    from research.models import GoalDriftCheck

    make_run(state=RunState.RUNNING, phases=1, goal="multiplication for the calc package")
    held = claim(executor)
    diff = "--- a/calc/mul.py\n+++ b/calc/mul.py\n+def mul(a, b):\n+    return a * b\n"
    outcome = PhaseOutcome(kind=OutcomeKind.COMPLETE, commit_sha="c0ffee", diff=diff).as_dict()
    with django_capture_on_commit_callbacks(execute=True):
        done = executor.post(
            f"/api/executor/phases/{held['phase_id']}/finish", lease_of(held, outcome=outcome), format="json"
        )
    assert done.status_code == 200
    drift = GoalDriftCheck.objects.get(attempt_id=held["attempt_id"])
    assert drift.embedder and -1.0 <= drift.similarity <= 1.0
    if "orm" in settings.Q_CLUSTER:
        from django_q.models import OrmQ
        from django_q.signing import SignedPackage

        tasks = [SignedPackage.loads(row.payload) for row in OrmQ.objects.all()]
        assert [task["args"] for task in tasks if task["func"] == "research.tasks.attempt_finished"] == [
            (held["attempt_id"],)
        ]


def test_a_remote_finish_without_a_diff_records_no_goal_drift(executor):
    from research.models import GoalDriftCheck

    make_run(state=RunState.RUNNING, phases=1)
    held = claim(executor)
    outcome = PhaseOutcome(kind=OutcomeKind.RETRY, reason="tests failed").as_dict()
    done = executor.post(
        f"/api/executor/phases/{held['phase_id']}/finish", lease_of(held, outcome=outcome), format="json"
    )
    assert done.json()["state"] == "queued"
    assert not GoalDriftCheck.objects.exists()


def make_research_headed_run() -> tuple:
    run = make_run(state=RunState.RUNNING, phases=2)
    Phase.objects.filter(run=run, sequence=0).update(category="research")
    return run


def test_a_remote_executor_is_not_handed_a_research_phase(executor):
    research_run = make_research_headed_run()
    builder_run = make_run(state=RunState.RUNNING, phases=1)
    held = claim(executor)
    assert held["run_id"] == builder_run.pk
    assert executor.post("/api/executor/claim", {"worker": "box-2"}, format="json").status_code == 204
    head = Phase.objects.get(run=research_run, sequence=0)
    assert (head.state, head.attempt_count) == (PhaseState.QUEUED, 0)  # left for the server's workers


def test_a_non_staff_executor_is_not_handed_a_research_phase_of_its_project_either():
    from accounts.models import Membership

    client_user = make_user(staff=True)
    _, raw = api_key_create(owner=client_user, name="executor", scopes=["executor"])
    client_user.is_staff = False  # demoted after the key was issued: it keeps working for its projects only
    client_user.save()
    run = make_research_headed_run()
    Membership.objects.create(user=client_user, project=run.project, role="operator")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    assert client.post("/api/executor/claim", {"worker": "box-1"}, format="json").status_code == 204
    other = make_run(project=run.project, state=RunState.RUNNING, phases=1)
    assert claim(client)["run_id"] == other.pk


def test_a_research_phase_claimed_anyway_is_given_back_and_the_claim_moves_on(executor, monkeypatch):
    from runs.services import leases

    research_run = make_research_headed_run()
    builder_run = make_run(state=RunState.RUNNING, phases=1)
    # The claim statement passes over research heads; the view's guard behind it is tested by letting the
    # first claim ignore that filter (as a claim statement without it would), so it wins the research phase.
    calls = []
    real = leases.phase_claim

    def first_claim_unfiltered(**kwargs):
        calls.append(kwargs["skip_categories"])
        return real(**{**kwargs, "skip_categories": () if len(calls) == 1 else kwargs["skip_categories"]})

    monkeypatch.setattr(leases, "phase_claim", first_claim_unfiltered)
    held = claim(executor)
    assert held["run_id"] == builder_run.pk and calls == [("research",), ("research",)]
    head = Phase.objects.get(run=research_run, sequence=0)
    assert head.state == PhaseState.QUEUED and head.attempts.get().status == "abandoned"


def test_the_claim_statement_itself_skips_runs_headed_by_a_research_phase():
    from runs.services.leases import phase_claim

    research_run = make_research_headed_run()
    assert phase_claim(worker="box", skip_categories=["research"]) is None
    builder_run = make_run(state=RunState.RUNNING, phases=1)
    assert phase_claim(worker="box", skip_categories=["research"]).run_id == builder_run.pk
    assert phase_claim(worker="box", runs=[builder_run.pk]) is None  # its one phase is held now
    assert phase_claim(worker="box").run_id == research_run.pk  # unfiltered (the server's own workers)


def test_a_claim_narrowed_to_projects_takes_only_their_runs_and_none_for_no_project():
    from runs.services.leases import phase_claim

    mine = make_run(state=RunState.RUNNING, phases=1)
    other = make_run(state=RunState.RUNNING, phases=1)
    assert phase_claim(worker="box", projects=[]) is None
    assert phase_claim(worker="box", projects=[other.project_id]).run_id == other.pk
    assert phase_claim(worker="box", projects=[other.project_id]) is None
    assert phase_claim(worker="box", projects=[mine.project_id, other.project_id]).run_id == mine.pk


def test_a_new_price_table_reaches_the_next_claims_spec_despite_the_price_cache(executor):
    from django.utils import timezone

    from telemetry.models import ModelPrice, PriceTable

    make_run(state=RunState.RUNNING, phases=1)
    make_run(state=RunState.RUNNING, phases=1)
    first = executor.post("/api/executor/claim", {"worker": "box-1"}, format="json").json()["spec"]["prices"]
    table = PriceTable.objects.create(version="test-next", effective_from=timezone.now(), source="test")
    ModelPrice.objects.create(
        table=table,
        model="claude-haiku-4-5",
        input_per_mtok=7,
        output_per_mtok=11,
        cache_write_per_mtok=13,
        cache_read_per_mtok=17,
    )
    second = executor.post("/api/executor/claim", {"worker": "box-2"}, format="json").json()["spec"]["prices"]
    assert first.get("claude-haiku-4-5", {}).get("input") != 7.0
    assert second == {"claude-haiku-4-5": {"input": 7.0, "output": 11.0, "cache_write": 13.0, "cache_read": 17.0}}


def test_a_nul_character_in_event_data_is_a_400_because_jsonb_cannot_store_it(executor):
    make_run(state=RunState.RUNNING)
    held = claim(executor)
    response = executor.post(
        f"/api/executor/phases/{held['phase_id']}/events",
        lease_of(held, stage="s", kind="k", data={"log": "a\x00b"}),
        format="json",
    )
    assert response.status_code == 400 and "data" in response.json()["error"]["details"]
    assert not AttemptEvent.objects.exists()


def test_a_claim_whose_spec_cannot_be_built_gives_the_phase_back_at_once(executor, monkeypatch):
    from runs import execution

    make_run(state=RunState.RUNNING, phases=1)

    def broken(phase_id, **_):
        raise RuntimeError("spec exploded")

    monkeypatch.setattr(execution, "build_phase_spec", broken)
    executor.raise_request_exception = False
    assert executor.post("/api/executor/claim", {"worker": "box-1"}, format="json").status_code == 500
    phase = Phase.objects.get()
    assert (phase.state, phase.lease_owner) == (PhaseState.QUEUED, "")


def test_a_remote_attempts_llm_calls_and_outcome_become_telemetry_rows(executor):
    # A remote executor's spend must show on the telemetry page and in telemetry_report like a local one's.
    from telemetry.models import LlmUsageEvent, PhaseOutcomeEvent, TokenEstimationEvent

    run = make_run(state=RunState.RUNNING, phases=1)
    held = claim(executor)
    url = f"/api/executor/phases/{held['phase_id']}"
    lease = {"worker": "box-1", "epoch": held["claim_epoch"]}
    call = {
        "role": "builder",
        "provider": "replay",
        "model": "claude-haiku-4-5",
        "request_id": "",
        "input_tokens": 900,
        "output_tokens": 120,
        "cache_creation_tokens": 0,
        "cache_read_tokens": 0,
        "latency_ms": 4,
        "stop_reason": "end_turn",
        "max_tokens": 4096,
        "cost_usd": None,
    }
    estimation = {
        "category": "backend",
        "complexity": "low",
        "deliverable_count": 2,
        "predicted": 300,
        "actual": 120,
        "selected_budget": 4096,
        "final_ceiling": 4096,
        "phase_overhead": 0,
        "truncated": False,
        "model": "claude-haiku-4-5",
    }
    for kind, data in (("llm_call", call), ("llm_call", {**call, "role": "auditor"}), ("estimation", estimation)):
        sent = executor.post(
            f"{url}/events", {**lease, "stage": "telemetry", "kind": kind, "data": data}, format="json"
        )
        assert sent.status_code == 201
    outcome = PhaseOutcome(kind=OutcomeKind.RETRY, reason="New failing test tests/test_a.py::test_b").as_dict()
    assert executor.post(f"{url}/finish", {**lease, "outcome": outcome}, format="json").status_code == 200

    usage = LlmUsageEvent.objects.filter(run_id=run.pk)
    assert sorted(usage.values_list("role", flat=True)) == ["auditor", "builder"]
    assert sum(row.input_tokens for row in usage) == 1800
    assert TokenEstimationEvent.objects.filter(run_id=run.pk, predicted=300, actual=120).count() == 1
    recorded = PhaseOutcomeEvent.objects.get(run_id=run.pk)
    assert recorded.outcome == "retry" and recorded.error_signature


def test_light_fields_give_each_serializer_its_own_bound_fields_and_leave_the_prototypes_alone():
    from runs.executor_api import EventInput, FinishInput

    good = EventInput(data={"worker": "box-1", "epoch": 3, "stage": "builder", "kind": "info", "data": {"a": 1}})
    bad = EventInput(data={"worker": "no spaces", "epoch": 0, "stage": "x" * 33, "kind": "info", "data": []})
    assert good.is_valid() and not bad.is_valid()
    assert set(bad.errors) == {"worker", "epoch", "stage", "data"} and good.validated_data["data"] == {"a": 1}
    for name, prototype in EventInput._declared_fields.items():
        assert prototype.parent is None and prototype.field_name is None  # never bound
        assert good.fields[name] is not bad.fields[name] and good.fields[name].parent is good
    # The nested outcome serializer (and its fields) is bound per instance as well.
    first = FinishInput(data={"worker": "w", "epoch": 1, "outcome": {"kind": "complete", "cost_usd": "0.5"}})
    second = FinishInput(data={"worker": "w", "epoch": 1, "outcome": {"kind": "nonsense"}})
    assert first.is_valid() and not second.is_valid() and "outcome" in second.errors
    assert first.fields["outcome"] is not second.fields["outcome"] and first.fields["outcome"].parent is first
