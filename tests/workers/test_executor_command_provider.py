"""The remote executor uses the provider the run asks for unless the command line says otherwise."""

from __future__ import annotations

from pathlib import Path

from runs.engine.providers import AnthropicProvider, ReplayProvider
from runs.management.commands.executor import _provider_factory

CASSETTE = str(Path(__file__).resolve().parents[2] / "demo" / "cassette.jsonl")


def test_a_replayed_run_replays_its_cassette_on_a_remote_executor() -> None:
    factory = _provider_factory({"engine": "pipeline", "provider": None, "cassette": None})

    provider = factory({"provider": "replay", "provider_cassette": CASSETTE})

    assert isinstance(provider, ReplayProvider)


def test_the_command_line_provider_wins_over_the_run(monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-not-used")
    factory = _provider_factory({"engine": "pipeline", "provider": "anthropic", "cassette": None})

    provider = factory({"provider": "replay", "provider_cassette": CASSETTE})

    assert isinstance(provider, AnthropicProvider)


def test_the_noop_engine_needs_no_provider() -> None:
    assert _provider_factory({"engine": "noop", "provider": None, "cassette": None}) is None
