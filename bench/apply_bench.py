"""Throughput of governed apply against plain ``git apply`` on the same large patch.

    .venv/bin/python bench/apply_bench.py [--files 500] [--repeats 5]

Builds a repository of ``--files`` Python modules (~60 lines each), changes every file (a few hunks each,
plus some adds, deletes and renames) in a second commit, and takes ``git diff --binary A B``. Each repeat
copies A into two fresh directories (not timed), then times ``git apply`` on one and
``governed_apply(parse_edits(diff))`` (parse, every rule, staging, ``git apply --check`` + ``git apply``,
verification incl. compiling every .py file, atomic writes) on the other. Prints the medians, files per
second and the ratio governed/git. A second line does the same for an NDJSON document of ``--files`` whole-file
writes (no git involved) for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runs.engine.apply import governed_apply  # noqa: E402
from runs.engine.edits import parse_edits  # noqa: E402

GIT_ENV = {
    **{key: value for key, value in os.environ.items() if not key.startswith("GIT_")},
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(cwd: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, input=stdin, capture_output=True, check=True).stdout


def module(index: int, version: int) -> str:
    lines = [f'"""Module {index}."""', "", "import math", ""]
    for function in range(12):
        value = index * 100 + function + (version if function % 4 == 0 else 0)
        lines += [
            f"def function_{function}(x):",
            f"    total = x + {value}",
            "    return math.sqrt(abs(total))",
            "",
            "",
        ]
    return "\n".join(lines) + "\n"


def build(root: Path, files: int) -> tuple[Path, bytes, dict[str, str]]:
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for index in range(files):
        path = repo / f"pkg{index % 20}" / f"module_{index}.py"
        path.parent.mkdir(exist_ok=True)
        path.write_text(module(index, 0))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "A")
    new_contents = {}
    for index in range(files):
        path = repo / f"pkg{index % 20}" / f"module_{index}.py"
        if index % 50 == 7:
            path.unlink()
            continue
        if index % 50 == 9:
            target = path.with_name(f"renamed_{index}.py")
            path.rename(target)
            path = target
        path.write_text(module(index, 1))
        new_contents[path.relative_to(repo).as_posix()] = module(index, 1)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "B")
    diff = git(repo, "diff", "--binary", "-M", "HEAD~1", "HEAD")
    git(repo, "checkout", "-q", "HEAD~1")
    shutil.rmtree(repo / ".git")
    return repo, diff, new_contents


def time_git_apply(source: Path, diff: bytes, scratch: Path) -> float:
    target = scratch / "git"
    shutil.copytree(source, target)
    started = time.perf_counter()
    subprocess.run(["git", "apply", "--whitespace=nowarn"], cwd=target, input=diff, env=GIT_ENV, check=True)
    elapsed = time.perf_counter() - started
    shutil.rmtree(target)
    return elapsed


def time_governed(source: Path, text: str, scratch: Path) -> float:
    target = scratch / "governed"
    shutil.copytree(source, target)
    started = time.perf_counter()
    result = governed_apply(target, parse_edits(text))
    elapsed = time.perf_counter() - started
    if not result.applied:
        raise SystemExit(f"governed apply refused the benchmark patch: {result.violations[:3]}")
    shutil.rmtree(target)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autopack-apply-bench-") as tmp:
        root = Path(tmp)
        source, diff, new_contents = build(root, args.files)
        text = diff.decode("utf-8")
        ndjson = "\n".join(json.dumps({"op": "write", "path": p, "content": c}) for p, c in new_contents.items())
        git_times, governed_times, ndjson_times = [], [], []
        for _ in range(args.repeats):
            git_times.append(time_git_apply(source, diff, root))
            governed_times.append(time_governed(source, text, root))
            ndjson_times.append(time_governed(source, ndjson, root))
    git_median, governed_median = statistics.median(git_times), statistics.median(governed_times)
    ndjson_median = statistics.median(ndjson_times)
    files = args.files
    print(f"patch: {files} files, {len(diff) / 1024:.0f} KiB unified diff, {args.repeats} repeats (medians)")
    print(f"git apply:       {git_median * 1000:8.1f} ms  {files / git_median:8.0f} files/s")
    print(f"governed apply:  {governed_median * 1000:8.1f} ms  {files / governed_median:8.0f} files/s")
    print(f"ratio governed/git apply: {governed_median / git_median:.2f}x the time")
    print(f"governed apply of the same change as {len(new_contents)} NDJSON writes: {ndjson_median * 1000:.1f} ms")


if __name__ == "__main__":
    main()
