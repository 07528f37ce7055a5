"""A circuit breaker per LLM provider, shared by every worker process on a machine through small files.

``threshold`` consecutive infrastructure failures (timeouts, 5xx, 529, connection errors) open the circuit
for ``cool_down`` seconds; any success closes it. While it is open the claimer should not claim phases
that need that provider (``CircuitBreaker(directory).is_open("anthropic")``). State is one JSON file per
provider, replaced atomically, so readers never see a half-written file; two writers racing may lose one
count, which only delays opening by one failure.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_THRESHOLD = 3
DEFAULT_COOL_DOWN = 60.0


class CircuitBreaker:
    def __init__(
        self,
        directory: Path | str,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        cool_down: float = DEFAULT_COOL_DOWN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = Path(directory)
        self.threshold = threshold
        self.cool_down = cool_down
        self.clock = clock

    def _path(self, provider: str) -> Path:
        return self.directory / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', provider)}.json"

    def state(self, provider: str) -> dict[str, Any]:
        try:
            return json.loads(self._path(provider).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"failures": 0, "open_until": 0.0, "last_error": ""}

    def _write(self, provider: str, state: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self._path(provider)
        temporary = target.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(state), encoding="utf-8")
        os.replace(temporary, target)

    def is_open(self, provider: str) -> bool:
        return self.state(provider).get("open_until", 0.0) > self.clock()

    def record_failure(self, provider: str, error: str = "") -> bool:
        """Count one infrastructure failure; True when this one opened the circuit."""
        state = self.state(provider)
        state["failures"] = int(state.get("failures", 0)) + 1
        state["last_error"] = error[:500]
        opened = state["failures"] >= self.threshold and not self.is_open(provider)
        if state["failures"] >= self.threshold:
            state["open_until"] = self.clock() + self.cool_down
            state["failures"] = 0
        self._write(provider, state)
        return opened

    def record_success(self, provider: str) -> None:
        state = self.state(provider)
        if state.get("failures") or state.get("open_until"):
            self._write(provider, {"failures": 0, "open_until": 0.0, "last_error": ""})
