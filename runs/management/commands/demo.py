"""``manage.py demo``: seed the shipped sample project and drain its 3-phase plan with the replayed cassette.

``--seed-only`` (what ``make run`` uses) creates the user, the project, the repository and the started run, and
leaves the draining to the web worker; running it again changes nothing. Without it the run is drained here,
one phase attempt at a time, and a summary is printed. The run replays ``demo/cassette.jsonl`` (recorded by
``demo/build_cassette.py``), so the demo needs no API key and is the same on every machine.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any, TextIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from runs.engine.gitrepo import init_repository
from runs.models import Attempt, Phase, Project, Run, RunState

DEMO_DIR = Path(settings.BASE_DIR) / "demo"
CASSETTE = "demo/cassette.jsonl"
PROJECT_SLUG = "demo"
USERNAME, PASSWORD = "demo", "demo-password"
# The sample project needs no pytest plugins; not loading the ones installed here makes each run ~10x faster.
TEST_COMMAND = "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {python} -m pytest -q -p no:cacheprovider"


def demo_repository() -> Path:
    """The sample repository under DATA_DIR, created from ``demo/sample_repo`` once."""
    path = Path(settings.DATA_DIR) / "demo" / "textkit"
    if not (path / ".git").exists():
        init_repository(path, source=DEMO_DIR / "sample_repo")
    return path


def demo_user() -> Any:
    user, created = get_user_model().objects.get_or_create(username=USERNAME, defaults={"email": "demo@localhost"})
    if created or not user.is_superuser:
        user.is_staff = user.is_superuser = True
        user.set_password(PASSWORD)
        user.save()
    return user


def demo_project(user: Any) -> Project:
    from accounts.models import Membership, Role

    command = TEST_COMMAND.format(python=shlex.quote(sys.executable))
    project, _ = Project.objects.update_or_create(
        slug=PROJECT_SLUG,
        defaults={
            "name": "Demo: textkit",
            "repository_path": str(demo_repository()),
            "base_branch": "main",
            "default_test_command": command,
        },
    )
    Membership.objects.get_or_create(user=user, project=project, defaults={"role": Role.OWNER})
    return project


def import_demo_plan(project: Project, user: Any, *, name_suffix: str = "") -> Run:
    from runs.services.plan import plan_import

    document = json.loads((DEMO_DIR / "plan.json").read_text(encoding="utf-8"))
    document["name"] += name_suffix
    with transaction.atomic():
        run = plan_import(project=project, document=document, source_name="demo/plan.json", created_by=user).run
        # The run replays the shipped cassette whoever drains it (this command or the web worker).
        mapping = {**(run.model_mapping or {}), "provider": {"name": "replay", "cassette": CASSETTE}}
        Run.objects.filter(pk=run.pk).update(model_mapping=mapping)
    from runs.services.control import run_start

    return run_start(run_id=run.pk, actor=f"user:{user.get_username()}")


def seed_demo(*, new_run: bool = False) -> Run:
    """Idempotent: reuse the newest demo run unless ``new_run`` or it has finished (then import a fresh one)."""
    user = demo_user()
    project = demo_project(user)
    runs = Run.objects.filter(project=project).order_by("-created_at", "-id")
    latest = runs.first()
    if latest is not None and not new_run:
        return latest
    suffix = f" #{runs.count() + 1}" if latest is not None else ""
    return import_demo_plan(project, user, name_suffix=suffix)


def drain_run(run: Run, *, provider: Any = None, out: TextIO | None = None, worker: str = "demo") -> None:
    """Claim and execute the run's phases one attempt at a time until nothing is claimable."""
    from runs.execution import execute_claim
    from runs.services.leases import phase_claim

    while (claim := phase_claim(worker=worker, runs=[run.pk])) is not None:
        phase = Phase.objects.get(pk=claim.phase_id)
        outcome = execute_claim(claim, worker=worker, provider=provider)
        if out is not None:
            out.write(f"  {phase.phase_id} attempt {claim.attempt_number}: {_describe(outcome)}\n")


def _describe(outcome: Any) -> str:
    """One line per attempt: the verdict, why, and what the next attempt gets."""
    parts = [outcome.kind.value]
    if outcome.kind != "complete":
        parts.append(f"— {outcome.reason.splitlines()[0][:90]}")
    ci = outcome.summary.get("ci") or {}
    if ci.get("still_failing"):
        parts.append(f"[pre-existing failures ignored: {len(ci['still_failing'])}]")
    if outcome.budget_override:
        parts.append(f"[max_tokens escalated to {outcome.budget_override}]")
    if outcome.summary.get("doctor"):
        parts.append(f"[doctor: {outcome.summary['doctor'].get('action')}]")
    if outcome.escalate_model:
        parts.append("[next model up the ladder]")
    return " ".join(parts)


def run_summary(run: Run) -> dict[str, Any]:
    run.refresh_from_db()
    phases = list(run.phases.order_by("sequence"))
    attempts = Attempt.objects.filter(phase__run=run)
    return {
        "run": run.pk,
        "state": run.state,
        "failure_reason": run.failure_reason,
        "branch": run.branch,
        "phases": {
            phase.phase_id: {"state": phase.state, "attempts": phase.attempt_count, "commit": phase.commit_sha[:12]}
            for phase in phases
        },
        "attempts": attempts.count(),
        "tokens": run.tokens_used,
        "cost_usd": str(run.cost_usd),
        "doctor_calls": run.doctor_calls,
    }


class Command(BaseCommand):
    help = "Seed the demo project (user demo / demo-password) and drain its plan with the replayed cassette."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed-only", action="store_true", help="Seed and start the run; do not drain it.")
        parser.add_argument("--new-run", action="store_true", help="Import the plan again as a new run.")
        parser.add_argument("--json", action="store_true", help="Print the summary as JSON.")

    def handle(self, *args: Any, seed_only: bool, new_run: bool, json: bool, **options: Any) -> None:
        run = seed_demo(new_run=new_run)
        if seed_only:
            self.stdout.write(
                f"demo seeded: project {PROJECT_SLUG}, run #{run.pk} ({run.state}), user {USERNAME} / {PASSWORD}"
            )
            return
        if run.state != RunState.RUNNING:
            run = seed_demo(new_run=True)
        self.stdout.write(f"draining demo run #{run.pk} (replaying {CASSETTE})")
        drain_run(run, out=self.stdout)
        summary = run_summary(run)
        self.stdout.write(_render(summary, as_json=json))
        self._write_ledger(run, quiet=json)

    def _write_ledger(self, run: Run, *, quiet: bool) -> None:
        """The run's ledger entry, written now (idempotent) rather than when a worker next runs the queued task."""
        run.refresh_from_db()
        if not run.is_finished:
            return
        from research.services import ledger_append_for_run, ledger_file

        entry = ledger_append_for_run(run_id=run.pk)
        if not quiet:
            self.stdout.write(f"ledger: {entry.build_id} appended to {ledger_file(run.project)}")


def _render(summary: dict[str, Any], *, as_json: bool) -> str:
    if as_json:
        return json.dumps(summary, indent=2)
    lines = [
        f"run #{summary['run']}: {summary['state']}"
        + (f" ({summary['failure_reason']})" if summary["failure_reason"] else "")
    ]
    for phase_id, info in summary["phases"].items():
        lines.append(f"  {phase_id}: {info['state']} after {info['attempts']} attempt(s) {info['commit']}")
    lines.append(
        f"attempts {summary['attempts']}, tokens {summary['tokens']:,}, cost ${summary['cost_usd']}, "
        f"doctor calls {summary['doctor_calls']}"
    )
    lines.append(f"branch {summary['branch']} in {Project.objects.get(slug=PROJECT_SLUG).repository_path}")
    return "\n".join(lines)
