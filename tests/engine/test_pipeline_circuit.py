"""The per-provider circuit breaker the claimer consults: file-backed, shared by processes, with a cool-down."""

from __future__ import annotations

from runs.engine.circuit import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_consecutive_failures_open_the_circuit_for_the_cool_down(tmp_path):
    clock = Clock()
    breaker = CircuitBreaker(tmp_path, threshold=3, cool_down=60, clock=clock)
    assert not breaker.record_failure("anthropic", "529")
    assert not breaker.record_failure("anthropic", "529")
    assert breaker.record_failure("anthropic", "timeout")
    assert breaker.is_open("anthropic") and not breaker.is_open("replay")
    clock.now += 61
    assert not breaker.is_open("anthropic")


def test_a_success_resets_the_count(tmp_path):
    breaker = CircuitBreaker(tmp_path, threshold=2, clock=Clock())
    breaker.record_failure("anthropic")
    breaker.record_success("anthropic")
    assert not breaker.record_failure("anthropic")
    assert not breaker.is_open("anthropic")


def test_another_process_sees_the_open_circuit_through_the_file(tmp_path):
    clock = Clock()
    writer = CircuitBreaker(tmp_path, threshold=1, cool_down=30, clock=clock)
    writer.record_failure("anthropic", "overloaded")
    reader = CircuitBreaker(tmp_path, clock=clock)  # e.g. the claimer in a different worker process
    assert reader.is_open("anthropic")
    assert reader.state("anthropic")["last_error"] == "overloaded"


def test_a_corrupt_state_file_counts_as_closed(tmp_path):
    (tmp_path / "anthropic.json").write_text("{not json")
    assert not CircuitBreaker(tmp_path).is_open("anthropic")
