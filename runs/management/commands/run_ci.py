"""``manage.py run_ci --workspace DIR [--command CMD] [--baseline-ref REF]``: the engine's CI step, as JSON.

Runs the project's tests in DIR exactly as a phase attempt would (toolchain detection, scrubbed environment,
process-group timeout, JUnit results). With ``--baseline-ref`` the same command also runs on that commit
(exported to a temporary directory, so DIR is not touched) and the delta is classified: fixed, still failing,
new failure, flaky (a new failure that passes on a re-run).
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.engine.ci import compute_delta, needs_rerun, run_tests
from runs.engine.spec import CiSpec
from runs.engine.toolchains import resolve_test_plan


def _export(repository: Path, ref: str, target: Path) -> None:
    archive = target / "tree.tar"
    completed = subprocess.run(
        ["git", "archive", "--format=tar", "-o", str(archive), ref],
        cwd=repository,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise CommandError(f"cannot export {ref}: {completed.stderr.strip()}")
    with tarfile.open(archive) as tar:
        tar.extractall(target / "tree", filter="data")


class Command(BaseCommand):
    help = "Run a workspace's tests like the engine does and print the result (and delta) as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", required=True, help="The directory to test.")
        parser.add_argument("--command", default="", help="Test command (default: detected from the toolchain).")
        parser.add_argument("--baseline-ref", default="", help="Also test this commit and classify the delta.")
        parser.add_argument("--timeout", type=float, default=600.0, help="Wall-clock seconds per test run.")

    def handle(self, *args: Any, workspace: str, command: str, baseline_ref: str, timeout: float, **options: Any):
        root = Path(workspace).resolve()
        if not root.is_dir():
            raise CommandError(f"{root} is not a directory")
        ci = CiSpec(command=command, timeout_seconds=timeout)
        plan = resolve_test_plan(root, ci)
        if not plan.command:
            raise CommandError("no test command: none given and no toolchain detected")
        with tempfile.TemporaryDirectory(prefix="autopack-ci-") as scratch:
            artifacts = Path(scratch) / "artifacts"
            after = run_tests(root=root, plan=plan, ci=ci, artifacts_dir=artifacts, label="after")
            result: dict[str, Any] = {
                "workspace": str(root),
                "source": plan.source,
                "toolchain": _toolchain(plan),
                "after": {**after.summary(), "failing": sorted(after.failing()), "tail": after.tail[-2000:]},
            }
            if baseline_ref:
                _export(root, baseline_ref, Path(scratch))
                baseline = run_tests(
                    root=Path(scratch) / "tree", plan=plan, ci=ci, artifacts_dir=artifacts, label="baseline"
                )
                rerun = None
                if needs_rerun(baseline, after):
                    rerun = run_tests(root=root, plan=plan, ci=ci, artifacts_dir=artifacts, label="rerun")
                result["baseline"] = {**baseline.summary(), "ref": baseline_ref, "failing": sorted(baseline.failing())}
                result["delta"] = compute_delta(baseline, after, rerun, ci).to_dict()
        self.stdout.write(json.dumps(result, indent=2, default=str))


def _toolchain(plan: Any) -> dict[str, Any] | None:
    toolchain = plan.toolchain
    if toolchain is None:
        return None
    return {
        "language": toolchain.language,
        "manager": toolchain.manager,
        "confidence": toolchain.confidence,
        "reason": toolchain.reason,
        "install_command": toolchain.install_command,
    }
