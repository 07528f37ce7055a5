"""AnthropicProvider: the real anthropic SDK against the local fake Messages API."""

from __future__ import annotations

import pytest

from runs.engine.providers import (
    AnthropicProvider,
    BadRequest,
    ConnectionDropped,
    ContextTooLong,
    LLMProvider,
    ModelNotFound,
    Overloaded,
    RateLimited,
    RetryBudget,
    RetryBudgetExhausted,
    RetryPolicy,
    ServerError,
    Unauthorized,
)
from tests.engine.fake_anthropic import Drop, FakeAnthropic, Hang, Reply, Status, StreamError

REQUEST = {
    "role": "builder",
    "system": "You are the builder.",
    "messages": [{"role": "user", "content": "add a feature"}],
    "model": "claude-test-model",
    "max_tokens": 200,
}


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make_provider(fake: FakeAnthropic, **overrides) -> tuple[AnthropicProvider, RecordingSleep]:
    sleep = RecordingSleep()
    options = {
        "api_key": "test-key",
        "base_url": fake.base_url,
        "retry_policy": RetryPolicy(max_retries_per_call=4, base_delay=0.01, max_delay=0.02),
        "sleep": sleep,
        "timeout": 5.0,
    }
    options.update(overrides)
    return AnthropicProvider(**options), sleep


def test_a_normal_answer_returns_text_usage_stop_reason_and_request_id(fake_anthropic):
    fake_anthropic.enqueue(Reply("the answer", usage={"cache_read_input_tokens": 7, "cache_creation_input_tokens": 3}))
    provider, sleep = make_provider(fake_anthropic)

    response = provider.complete(**REQUEST)

    assert isinstance(provider, LLMProvider)
    assert response.text == "the answer"
    assert response.stop_reason == "end_turn"
    assert response.model == "claude-test-model"
    assert response.request_id == "req_fake_0001"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (11, 2)
    assert (response.usage.cache_creation_input_tokens, response.usage.cache_read_input_tokens) == (3, 7)
    assert response.attempts == 1 and not response.streamed and sleep.delays == []
    assert response.latency_ms >= 0


def test_absent_cache_usage_is_none_never_guessed(fake_anthropic):
    fake_anthropic.enqueue(Reply("x", usage={"cache_read_input_tokens": None, "cache_creation_input_tokens": None}))
    provider, _ = make_provider(fake_anthropic)

    usage = provider.complete(**REQUEST).usage

    assert usage.cache_read_input_tokens is None and usage.cache_creation_input_tokens is None
    assert usage.input_tokens == 11


def test_the_system_prompt_and_cache_prefix_are_marked_for_prompt_caching(fake_anthropic):
    provider, _ = make_provider(fake_anthropic)

    provider.complete(**REQUEST, cache_prefix="repository context")

    body = fake_anthropic.requests[0].body
    assert body["system"] == [{"type": "text", "text": "You are the builder.", "cache_control": {"type": "ephemeral"}}]
    first_block, second_block = body["messages"][0]["content"]
    assert first_block == {"type": "text", "text": "repository context", "cache_control": {"type": "ephemeral"}}
    assert second_block == {"type": "text", "text": "add a feature"}
    headers = fake_anthropic.requests[0].headers
    assert "test-key" in headers.get("x-api-key", "") + headers.get("authorization", "")


def test_large_max_tokens_streams_and_collects_the_whole_answer(fake_anthropic):
    text = " ".join(f"word{i}" for i in range(50))
    fake_anthropic.enqueue(Reply(text))
    provider, _ = make_provider(fake_anthropic, stream_threshold=100)

    response = provider.complete(**REQUEST)

    assert fake_anthropic.requests[0].body["stream"] is True
    assert response.streamed
    assert response.text == text
    assert response.usage.output_tokens == 50
    assert response.request_id == "req_fake_0001"


@pytest.mark.parametrize("stream_threshold", [100_000, 10], ids=["plain", "streamed"])
def test_an_answer_cut_at_max_tokens_reports_the_truncation(fake_anthropic, stream_threshold):
    fake_anthropic.enqueue(Reply(" ".join(["token"] * 500)))
    provider, _ = make_provider(fake_anthropic, stream_threshold=stream_threshold)

    response = provider.complete(**REQUEST)

    assert response.stop_reason == "max_tokens" and response.truncated
    assert response.usage.output_tokens == 200
    assert len(response.text.split()) == 200


def test_429_is_retried_after_at_least_the_retry_after_delay(fake_anthropic):
    fake_anthropic.enqueue(Status(429, "slow down", retry_after="0.05"), Reply("finally"))
    provider, sleep = make_provider(fake_anthropic)

    response = provider.complete(**REQUEST)

    assert response.text == "finally"
    assert response.attempts == 2
    assert len(fake_anthropic.requests) == 2
    assert sleep.delays == [pytest.approx(0.05)]


def test_529_and_500_are_retried_with_growing_backoff(fake_anthropic):
    fake_anthropic.enqueue(Status(529, "Overloaded"), Status(500), Status(503), Reply("done"))
    provider, sleep = make_provider(
        fake_anthropic, retry_policy=RetryPolicy(max_retries_per_call=4, base_delay=0.01, max_delay=1.0, jitter=False)
    )

    response = provider.complete(**REQUEST)

    assert response.text == "done" and response.attempts == 4
    assert sleep.delays == [pytest.approx(0.01), pytest.approx(0.02), pytest.approx(0.04)]


def test_a_connection_dropped_mid_stream_is_retried(fake_anthropic):
    fake_anthropic.enqueue(Drop(after_events=3), Reply("complete answer"))
    provider, sleep = make_provider(fake_anthropic, stream_threshold=10)

    response = provider.complete(**REQUEST)

    assert response.text == "complete answer"
    assert response.attempts == 2 and len(sleep.delays) == 1


def test_a_connection_dropped_before_any_answer_is_retried(fake_anthropic):
    fake_anthropic.enqueue(Drop(), Reply("ok"))
    provider, _ = make_provider(fake_anthropic)

    assert provider.complete(**REQUEST).attempts == 2


def test_an_overloaded_error_event_inside_a_stream_is_retried(fake_anthropic):
    fake_anthropic.enqueue(StreamError("overloaded_error"), Reply("ok"))
    provider, _ = make_provider(fake_anthropic, stream_threshold=10)

    assert provider.complete(**REQUEST).attempts == 2


def test_a_timeout_is_typed_and_retried(fake_anthropic):
    fake_anthropic.enqueue(Hang(1.0), Reply("ok"))
    provider, _ = make_provider(fake_anthropic, timeout=0.3)

    response = provider.complete(**REQUEST)

    assert response.text == "ok" and response.attempts == 2


@pytest.mark.parametrize(
    ("status", "message", "error_class"),
    [
        (400, "messages: field required", BadRequest),
        (400, "prompt is too long: 250000 tokens > 200000 maximum", ContextTooLong),
        (401, "invalid x-api-key", Unauthorized),
        (403, "forbidden", Unauthorized),
        (404, "model not found", ModelNotFound),
        (413, "request too large", ContextTooLong),
    ],
)
def test_client_errors_are_typed_and_never_retried(fake_anthropic, status, message, error_class):
    fake_anthropic.enqueue(Status(status, message), Reply("must not be reached"))
    provider, sleep = make_provider(fake_anthropic)

    with pytest.raises(error_class) as caught:
        provider.complete(**REQUEST)

    assert type(caught.value) is error_class
    assert caught.value.status_code == status
    assert caught.value.request_id == "req_fake_0001"
    assert len(fake_anthropic.requests) == 1 and sleep.delays == []


@pytest.mark.parametrize(
    ("status", "error_class"), [(429, RateLimited), (529, Overloaded), (500, ServerError), (502, ServerError)]
)
def test_retries_stop_at_the_per_call_limit_with_the_typed_error(fake_anthropic, status, error_class):
    fake_anthropic.enqueue(*[Status(status, retry_after="0") for _ in range(3)], Reply("never"))
    provider, sleep = make_provider(fake_anthropic, retry_policy=RetryPolicy(max_retries_per_call=2, base_delay=0.001))

    with pytest.raises(error_class) as caught:
        provider.complete(**REQUEST)

    assert caught.value.attempts == 3
    assert len(fake_anthropic.requests) == 3 and len(sleep.delays) == 2


def test_a_provider_without_credentials_raises_unauthorized_naming_the_variable(fake_anthropic, monkeypatch):
    # Without a key the SDK raises a bare TypeError, which a worker reported as a Builder failure three times.
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    provider, sleep = make_provider(fake_anthropic, api_key=None)

    with pytest.raises(Unauthorized) as caught:
        provider.complete(**REQUEST)

    assert "ANTHROPIC_API_KEY" in caught.value.message
    assert fake_anthropic.requests == []


def test_the_phase_retry_budget_is_shared_across_calls(fake_anthropic):
    budget = RetryBudget(max_retries=3)
    provider, _ = make_provider(fake_anthropic)
    fake_anthropic.enqueue(Status(529), Status(529), Reply("first call"))
    assert provider.complete(**REQUEST, retry_budget=budget).text == "first call"
    assert budget.remaining == 1

    fake_anthropic.enqueue(Status(500), Status(500), Reply("second call"))
    with pytest.raises(RetryBudgetExhausted) as caught:
        provider.complete(**REQUEST, retry_budget=budget)

    assert isinstance(caught.value.last_error, ServerError)
    assert budget.remaining == 0
    assert len(fake_anthropic.requests) == 5


def test_a_retry_after_longer_than_the_policy_allows_is_not_waited_for(fake_anthropic):
    fake_anthropic.enqueue(Status(429, retry_after="3600"), Reply("never"))
    provider, sleep = make_provider(fake_anthropic, retry_policy=RetryPolicy(max_retry_after=60))

    with pytest.raises(RateLimited) as caught:
        provider.complete(**REQUEST)

    assert caught.value.retry_after == 3600 and sleep.delays == []


@pytest.mark.parametrize(
    ("behaviour", "error_class"),
    [
        (Drop(after_events=3), ConnectionDropped),
        (Drop(), ConnectionDropped),
        (StreamError("overloaded_error"), Overloaded),
        (StreamError("api_error"), ServerError),
    ],
    ids=["drop-mid-stream", "drop-before-answer", "overloaded-event", "api-error-event"],
)
def test_failures_inside_a_stream_come_out_typed(fake_anthropic, behaviour, error_class):
    fake_anthropic.enqueue(behaviour)
    provider, _ = make_provider(fake_anthropic, stream_threshold=10, retry_policy=RetryPolicy(max_retries_per_call=0))

    with pytest.raises(error_class):
        provider.complete(**REQUEST)
