"""The scale benchmark still runs end to end (tiny size); its timings are printed, never asserted."""

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
@pytest.mark.slow
def test_the_scale_benchmark_loads_events_and_prints_every_endpoint():
    parts = urlsplit(os.environ["DATABASE_URL"])
    environment = {**os.environ, "BENCH_DATABASE_URL": urlunsplit((parts.scheme, parts.netloc, "", "", ""))}
    command = [sys.executable, "bench/telemetry_scale.py", "--events", "20000", "--quick", "--repeat", "2"]
    command += ["--database", "bench_telemetry_pytest"]
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "20,000 LLM usage events" in result.stdout
    for endpoint in ("usage day x model x role", "run status", "consolidated metrics", "event list page 1 "):
        assert endpoint in result.stdout
    assert "deep page / page 1 (p95)" in result.stdout
