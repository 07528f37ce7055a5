"""Fixtures for telemetry tests: a usage-recording helper with sensible defaults."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from telemetry import services
from telemetry.models import LlmUsageEvent
from tests.factories import make_user

_request_numbers = itertools.count(1)


@pytest.fixture
def record_call() -> Callable[..., LlmUsageEvent]:
    """``record_call(model=…, input_tokens=…)``: usage_record with defaults for what a test does not care about."""

    def record(**overrides: Any) -> LlmUsageEvent:
        fields: dict[str, Any] = {
            "provider": "anthropic",
            "model": "claude-sonnet-4-5",
            "role": "builder",
            "request_id": f"req-{next(_request_numbers)}",
            "input_tokens": 1_000,
            "output_tokens": 500,
            "latency_ms": 1_200,
            "stop_reason": "end_turn",
        }
        fields.update(overrides)
        return services.usage_record(**fields)

    return record


@pytest.fixture
def member():
    return make_user()


@pytest.fixture
def client(member) -> APIClient:
    """An API client signed in as ``member``, who belongs to no project until a test adds them."""
    api = APIClient()
    api.force_authenticate(member)
    return api
