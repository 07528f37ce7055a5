from __future__ import annotations

from io import StringIO

import httpx
import pytest
from django.core.management import CommandError, call_command

from accounts.services import api_key_create
from runs.executor_client import Backoff, ExecutorClient, ExecutorError, LeaseGone
from runs.models import AttemptEvent, Phase, PhaseState, RunState
from tests.factories import make_run, make_user


def flaky_server(failures: list[int | str]) -> httpx.MockTransport:
    """Answers with the listed failures first (status codes, or "drop" for a dropped connection), then 204."""

    def handle(request: httpx.Request) -> httpx.Response:
        if failures:
            failure = failures.pop(0)
            if failure == "drop":
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(failure)
        return httpx.Response(204)

    return httpx.MockTransport(handle)


def test_server_errors_are_retried_with_growing_jittered_backoff():
    slept: list[float] = []
    backoff = Backoff(base=0.5, cap=4.0, sleep=slept.append)
    client = ExecutorClient(
        "http://127.0.0.1:9/api/executor/",
        "ak_x",
        worker="w",
        backoff=backoff,
        transport=flaky_server([503, "drop", 500, 502, 504]),
    )
    assert client.claim() is None
    assert len(slept) == 5
    assert all(0 <= delay <= min(4.0, 0.5 * 2**n) for n, delay in enumerate(slept))


def test_retrying_gives_up_after_the_time_budget():
    backoff = Backoff(base=1.0, cap=1.0, max_elapsed=2.0, sleep=lambda _: None)
    backoff.rng.seed(3)
    client = ExecutorClient(
        "http://127.0.0.1:9/", "ak_x", worker="w", backoff=backoff, transport=flaky_server([503] * 100)
    )
    with pytest.raises(ExecutorError, match="gave up"):
        client.claim()


def test_a_conflict_is_not_retried_and_means_the_lease_is_gone():
    calls = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(409, json={"error": {"code": "stale_epoch"}})

    client = ExecutorClient("http://127.0.0.1:9/", "ak_x", worker="w", transport=httpx.MockTransport(handle))
    with pytest.raises(LeaseGone):
        client.post("phases/1/heartbeat", {})
    assert len(calls) == 1


@pytest.mark.django_db(transaction=True)
def test_the_executor_command_drains_runs_over_http(live_server, tmp_path):
    run = make_run(state=RunState.RUNNING, phases=3)
    _, key = api_key_create(owner=make_user(staff=True), name="remote", scopes=["executor"])
    out = StringIO()
    call_command(
        "executor",
        "--api",
        f"{live_server.url}/api/executor/",
        "--key",
        key,
        "--engine",
        "noop",
        "--until-empty",
        "--worker-id",
        "remote-box",
        "--workspaces",
        str(tmp_path),
        stdout=out,
    )
    assert out.getvalue().count(": complete") == 3
    run.refresh_from_db()
    assert run.state == RunState.COMPLETE
    assert set(Phase.objects.filter(run=run).values_list("state", flat=True)) == {PhaseState.COMPLETE}
    assert AttemptEvent.objects.filter(attempt__phase__run=run, stage="build").count() == 3
    worker = Phase.objects.filter(run=run).first().attempts.get().worker
    assert worker.startswith("key:") and worker.endswith("/remote-box-0")


@pytest.mark.django_db(transaction=True)
def test_a_remote_executor_leaves_research_phases_to_the_servers_workers(live_server, tmp_path):
    research_run = make_run(state=RunState.RUNNING, phases=2)
    Phase.objects.filter(run=research_run, sequence=0).update(category="research")
    builder_run = make_run(state=RunState.RUNNING, phases=2)
    _, key = api_key_create(owner=make_user(staff=True), name="remote", scopes=["executor"])
    out = StringIO()
    call_command(
        "executor",
        *("--api", f"{live_server.url}/api/executor/", "--key", key, "--engine", "noop", "--until-empty"),
        *("--workspaces", str(tmp_path)),
        stdout=out,
    )
    assert out.getvalue().count(": complete") == 2
    builder_run.refresh_from_db()
    assert builder_run.state == RunState.COMPLETE
    research_phases = Phase.objects.filter(run=research_run).order_by("sequence")
    assert [(phase.state, phase.attempt_count) for phase in research_phases] == [(PhaseState.QUEUED, 0)] * 2


def test_the_client_accepts_the_servers_root_url_as_well_as_the_executor_api_url():
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(204)

    for api in (
        "http://127.0.0.1:9",
        "http://127.0.0.1:9/",
        "http://127.0.0.1:9/api/executor",
        "http://h/api/executor/",
    ):
        ExecutorClient(api, "ak_x", worker="w", transport=httpx.MockTransport(handle)).claim()
    assert seen == ["/api/executor/claim"] * 4


@pytest.mark.django_db(transaction=True)
def test_the_executor_command_fails_loudly_when_the_server_refuses_its_key(live_server, tmp_path):
    # It used to print a thread traceback and exit 0, which a supervisor reads as "drained, all fine".
    make_run(state=RunState.RUNNING, phases=1)
    with pytest.raises(CommandError, match="403|401"):
        call_command(
            "executor",
            "--api",
            f"{live_server.url}/api/executor/",
            "--key",
            "ak_nothing_wrong",
            "--engine",
            "noop",
            "--until-empty",
            "--workspaces",
            str(tmp_path),
            stdout=StringIO(),
        )


@pytest.mark.django_db(transaction=True)
def test_an_engine_crash_on_a_remote_executor_is_a_judged_attempt_so_the_phase_ends_blocked(live_server, tmp_path):
    # Like a local drain: a crash used to kill the executor's thread and leave the phase leased until reaped.
    run = make_run(state=RunState.RUNNING, phases=1)  # its repository does not exist: the engine crashes
    _, key = api_key_create(owner=make_user(staff=True), name="remote", scopes=["executor"])
    with pytest.raises(CommandError, match="failed or blocked"):
        call_command(
            "executor",
            "--api",
            live_server.url,
            "--key",
            key,
            "--provider",
            "replay",
            "--cassette",
            str(tmp_path / "none.jsonl"),
            "--until-empty",
            "--workspaces",
            str(tmp_path),
            stdout=StringIO(),
        )
    phase = Phase.objects.get(run=run)
    assert phase.state == PhaseState.BLOCKED
    assert "executor error" in phase.last_failure_reason
