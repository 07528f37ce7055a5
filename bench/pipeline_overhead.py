"""The engine's own time per phase on a 2,000-file repository (everything except the LLM and the test run).

    .venv/bin/python bench/pipeline_overhead.py [--files 2000] [--phases 12]

Builds a repository of ``--files`` files (Python modules with a few top-level functions, some docs and
config), then runs ``--phases`` successive phases through ``run_attempt`` with a scripted LLM (instant) and a
real pytest subprocess on a small test directory. Each attempt reports its total time, the time spent waiting
for the LLM and for test subprocesses, and the rest: the engine's overhead (workspace reset, baseline cache,
context and repository map, estimate, parse, governed apply, deliverables, delta, finalize, commit, events).
Target: median under 200 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runs.engine.gitrepo import init_repository  # noqa: E402
from runs.engine.pipeline import run_attempt, workspace_for  # noqa: E402
from runs.engine.providers import LLMResponse, ScriptedProvider, Usage  # noqa: E402
from runs.engine.recorder import MemoryRecorder  # noqa: E402
from runs.engine.spec import CiSpec, PhaseSpec  # noqa: E402

PYTEST = f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {sys.executable} -m pytest -q -p no:cacheprovider tests"
APPROVE = json.dumps({"approved": True, "issues": [], "summary": "ok"})


def repository_files(count: int) -> dict[str, str]:
    files = {
        "tests/__init__.py": "",
        "tests/test_smoke.py": "def test_smoke():\n    assert True\n",
        "pyproject.toml": "[project]\nname = 'big'\n",
        "README.md": "# big\n",
    }
    index = 0
    while len(files) < count:
        package = f"pkg{index // 50:02d}"
        if index % 50 == 0:
            files[f"{package}/__init__.py"] = ""
        if index % 10 == 9:
            files[f"docs/{package}/note{index}.md"] = f"# Note {index}\n\nSome text about module {index}.\n" * 5
        else:
            body = "".join(f"def function_{index}_{n}(value):\n    return value + {n}\n\n\n" for n in range(6))
            files[f"{package}/module_{index}.py"] = f'"""Module {index}."""\n\n\n{body}class Thing{index}:\n    pass\n'
        index += 1
    return files


def answer(text: str) -> LLMResponse:
    return LLMResponse(
        text=text,
        usage=Usage(input_tokens=5000, output_tokens=400),
        stop_reason="end_turn",
        model="claude-sonnet-4-5",
        request_id=None,
        latency_ms=0,
        provider="scripted",
    )


def phase_answer(number: int) -> str:
    module = f"def feature_{number}(x):\n    return x * {number}\n"
    test = f"from features.f{number} import feature_{number}\n\n\ndef test_feature():\n    assert feature_{number}(2) == {2 * number}\n"
    return "\n".join(
        json.dumps(op)
        for op in (
            {"op": "write", "path": f"features/f{number}.py", "content": module},
            {"op": "write", "path": f"tests/test_f{number}.py", "content": test},
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--phases", type=int, default=12)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autopack-bench-") as scratch:
        root = Path(scratch)
        repo = root / "repo"
        files = repository_files(arguments.files)
        files["features/__init__.py"] = ""
        init_repository(repo, files=files)
        rows = []
        for number in range(1, arguments.phases + 1):
            spec = PhaseSpec(
                run_id=1,
                phase_pk=number,
                phase_id=f"p{number}",
                name=f"Feature {number}",
                category="backend",
                complexity="low",
                scope_paths=["features/", "tests/"],
                deliverables=[f"features/f{number}.py", f"tests/test_f{number}.py"],
                read_only_context=["pkg00/module_1.py"],
                ci=CiSpec(command=PYTEST, timeout_seconds=120),
                repository_path=str(repo),
                branch="autopack/bench-1",
                artifacts_dir=str(root / "artifacts"),
                cache_dir=str(root / "cache"),
            )
            provider = ScriptedProvider([answer(phase_answer(number)), answer(APPROVE)])
            started = time.monotonic()
            outcome = run_attempt(
                spec, workspace=workspace_for(spec, root / "workspaces"), provider=provider, recorder=MemoryRecorder()
            )
            wall = (time.monotonic() - started) * 1000
            if outcome.kind != "complete":
                raise SystemExit(f"phase {number} did not complete: {outcome.reason}")
            timings = outcome.summary["timings"]
            rows.append((timings["engine_ms"], timings["ci_ms"], timings["llm_ms"], wall, timings["stages"]))
            print(
                f"phase {number:2d}: engine {timings['engine_ms']:4d} ms  (tests {timings['ci_ms']:4d} ms, "
                f"LLM {timings['llm_ms']:3d} ms, wall {wall:5.0f} ms)"
            )
        engine = [row[0] for row in rows]
        # The first phase builds the repository map and the worktree from nothing; later ones hit caches.
        print(f"\nrepository: {arguments.files} files; phases: {len(rows)}")
        print(
            f"engine overhead per phase: median {statistics.median(engine):.0f} ms, "
            f"p90 {sorted(engine)[int(0.9 * (len(engine) - 1))]:.0f} ms, max {max(engine)} ms, "
            f"first {engine[0]} ms (target: median < 200 ms)"
        )
        stages = {name: statistics.median(row[4].get(name, 0) for row in rows) for name in rows[-1][4]}
        print(
            "median per stage (ms, includes tests inside baseline/ci): "
            + ", ".join(f"{name} {value:.0f}" for name, value in stages.items())
        )


if __name__ == "__main__":
    main()
