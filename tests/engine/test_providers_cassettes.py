"""ReplayProvider, RecordingProvider, ScriptedProvider and cassette helpers."""

from __future__ import annotations

import json

import pytest

from runs.engine.providers import (
    AnthropicProvider,
    CassetteMiss,
    LLMResponse,
    Overloaded,
    ProviderTimeout,
    RateLimited,
    RecordingProvider,
    ReplayProvider,
    RetryPolicy,
    ScriptedProvider,
    Usage,
    cassette_entry,
    request_fingerprint,
    write_cassette,
)
from tests.engine.fake_anthropic import Hang, Reply, Status

REQUEST = {
    "role": "builder",
    "system": "system prompt",
    "messages": [{"role": "user", "content": "do it"}],
    "model": "claude-test-model",
    "max_tokens": 300,
}


def test_the_fingerprint_covers_exactly_the_documented_fields():
    base = request_fingerprint(**REQUEST)

    assert request_fingerprint(**REQUEST, temperature=0.3) == base
    assert request_fingerprint(**{**REQUEST, "role": "auditor"}) != base
    assert request_fingerprint(**{**REQUEST, "model": "other"}) != base
    assert request_fingerprint(**{**REQUEST, "system": "other"}) != base
    assert request_fingerprint(**{**REQUEST, "messages": [{"role": "user", "content": "x"}]}) != base
    assert request_fingerprint(**{**REQUEST, "max_tokens": 301}) != base
    assert request_fingerprint(**REQUEST, cache_prefix="ctx") != base
    reordered = {"content": "do it", "role": "user"}
    assert request_fingerprint(**{**REQUEST, "messages": [reordered]}) == base


def test_a_scripted_cassette_replays_answers_and_usage(tmp_path):
    usage = Usage(input_tokens=100, output_tokens=20, cache_creation_input_tokens=None, cache_read_input_tokens=50)
    path = write_cassette(
        tmp_path / "demo.jsonl", [cassette_entry(REQUEST, "the patch", usage=usage, stop_reason="max_tokens")]
    )

    response = ReplayProvider(path).complete(**REQUEST)

    assert response.text == "the patch"
    assert response.usage == usage
    assert response.stop_reason == "max_tokens" and response.truncated
    assert response.model == "claude-test-model"


def test_a_request_with_no_recording_names_its_fingerprint(tmp_path):
    path = write_cassette(tmp_path / "c.jsonl", [cassette_entry(REQUEST, "x")])
    other = {**REQUEST, "max_tokens": 999}

    with pytest.raises(CassetteMiss) as caught:
        ReplayProvider(path).complete(**other)

    assert request_fingerprint(**other) in str(caught.value)
    assert caught.value.fingerprint == request_fingerprint(**other)


def test_the_same_request_twice_gets_each_recorded_answer_in_order(tmp_path):
    path = write_cassette(
        tmp_path / "c.jsonl",
        [cassette_entry(REQUEST, "first attempt"), cassette_entry(REQUEST, "second attempt")],
    )
    replay = ReplayProvider(path)

    answers = [replay.complete(**REQUEST).text, replay.complete(**REQUEST).text]

    assert answers == ["first attempt", "second attempt"]
    with pytest.raises(CassetteMiss) as caught:
        replay.complete(**REQUEST)
    assert caught.value.occurrence == 2


def test_sequential_mode_fails_loudly_when_requests_come_in_another_order(tmp_path):
    auditor = {**REQUEST, "role": "auditor"}
    path = write_cassette(tmp_path / "c.jsonl", [cassette_entry(REQUEST, "build"), cassette_entry(auditor, "audit")])

    in_order = ReplayProvider(path, match="sequential")
    assert [in_order.complete(**REQUEST).text, in_order.complete(**auditor).text] == ["build", "audit"]
    with pytest.raises(CassetteMiss):
        ReplayProvider(path, match="sequential").complete(**auditor)


def test_a_recorded_error_is_replayed_as_the_same_typed_error(tmp_path):
    path = write_cassette(tmp_path / "c.jsonl", [cassette_entry(REQUEST, error=Overloaded("busy", status_code=529))])

    with pytest.raises(Overloaded) as caught:
        ReplayProvider(path).complete(**REQUEST)

    assert caught.value.status_code == 529


def test_recording_the_real_sdk_then_replaying_gives_identical_responses(tmp_path, fake_anthropic):
    fake_anthropic.enqueue(Reply("answer one"), Reply("answer two"), Status(429, retry_after="0"))
    real = AnthropicProvider(
        api_key="test", base_url=fake_anthropic.base_url, retry_policy=RetryPolicy(max_retries_per_call=0)
    )
    recorder = RecordingProvider(real, tmp_path / "run.jsonl")
    recorded = [recorder.complete(**REQUEST), recorder.complete(**{**REQUEST, "role": "auditor"})]
    with pytest.raises(RateLimited):
        recorder.complete(**REQUEST)

    replay = ReplayProvider(tmp_path / "run.jsonl")
    replayed = [replay.complete(**REQUEST), replay.complete(**{**REQUEST, "role": "auditor"})]

    for original, copy in zip(recorded, replayed, strict=True):
        assert (copy.text, copy.usage, copy.stop_reason, copy.model, copy.request_id) == (
            original.text,
            original.usage,
            original.stop_reason,
            original.model,
            original.request_id,
        )
    with pytest.raises(RateLimited):
        replay.complete(**REQUEST)
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert [line["occurrence"] for line in lines] == [0, 0, 1]


def test_a_timeout_surfaces_as_provider_timeout_once_retries_are_spent(fake_anthropic):
    fake_anthropic.enqueue(Hang(1.0))
    provider = AnthropicProvider(
        api_key="test", base_url=fake_anthropic.base_url, timeout=0.2, retry_policy=RetryPolicy(max_retries_per_call=0)
    )

    with pytest.raises(ProviderTimeout):
        provider.complete(**REQUEST)


def test_the_scripted_provider_hands_out_answers_and_errors_in_order():
    canned = LLMResponse("canned", Usage(1, 2), "end_turn", "m", "req_1", 5)
    scripted = ScriptedProvider(["plain text", canned, RateLimited("slow")])

    assert scripted.complete(**REQUEST).text == "plain text"
    assert scripted.complete(**REQUEST) is canned
    with pytest.raises(RateLimited):
        scripted.complete(**REQUEST)
    with pytest.raises(CassetteMiss):
        scripted.complete(**REQUEST)
    assert len(scripted.calls) == 4


def test_fresh_request_ids_make_repeated_replays_distinct(tmp_path):
    path = write_cassette(tmp_path / "c.jsonl", [cassette_entry(REQUEST, "x", request_id="req_1")])

    first = ReplayProvider(path, fresh_request_ids=True).complete(**REQUEST).request_id
    second = ReplayProvider(path, fresh_request_ids=True).complete(**REQUEST).request_id

    assert first != second and first.startswith("req_1-")
    assert ReplayProvider(path).complete(**REQUEST).request_id == "req_1"
