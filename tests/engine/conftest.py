"""Engine test fixtures: the fake Anthropic server, Hypothesis profiles and small git helpers.

- ``fake_anthropic``: a started ``tests.engine.fake_anthropic.FakeAnthropic`` on 127.0.0.1 (stopped after the
  test). Point ``AnthropicProvider(base_url=fake_anthropic.base_url, api_key="test")`` at it.
- Hypothesis profiles: "ci" (default; no example database, no deadline, derandomized so CI is reproducible),
  "dev" (random), "fuzz" (long campaigns). Pick one with HYPOTHESIS_PROFILE=... . Property tests set their own
  ``max_examples``; the confinement tests add up to at least 2,000 examples per run.
- ``make_git_repo(path)``: a real repository with one commit on ``main``, for workspace tests.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.engine.fake_anthropic import FakeAnthropic

settings.register_profile(
    "ci",
    database=None,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "fuzz", database=None, deadline=None, max_examples=20_000, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def run_git(cwd: Path, *args: str) -> str:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, **GIT_ENV}
    completed = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True)
    return completed.stdout.decode("utf-8", "surrogateescape")


def make_git_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    run_git(path, "init", "-q", "-b", "main")
    for name, content in (files or {"README.md": "hello\n"}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content)
    run_git(path, "add", "-A")
    run_git(path, "commit", "-q", "-m", "initial")
    return path
