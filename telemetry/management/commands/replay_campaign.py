"""``manage.py replay_campaign``: clone finished runs as new queued runs, linked to their originals."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from runs.models import RunState
from telemetry.management.commands._arguments import iso_date, model_mapping, start_of
from telemetry.replay import FINISHED_STATES, clone_run, replay_candidates


class Command(BaseCommand):
    help = "Clone finished runs (same plan and base commit, optionally other models) as queued runs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--state", choices=[str(state) for state in FINISHED_STATES], nargs="+", default=[RunState.FAILED]
        )
        parser.add_argument("--since", type=iso_date, help="Runs created on or after this day (UTC).")
        parser.add_argument("--until", type=iso_date, help="Runs created before this day (UTC).")
        parser.add_argument("--models", type=model_mapping, help="Model mapping for the clones (JSON or JSON file).")
        parser.add_argument("--limit", type=int, default=None)
        parser.add_argument("--dry-run", action="store_true", help="List what would be cloned; write nothing.")
        parser.add_argument("--start", action="store_true", help="Start each clone (runs.services.run_start).")

    def handle(self, *args: Any, **options: Any) -> None:
        runs = replay_candidates(
            states=options["state"], since=start_of(options["since"]), until=start_of(options["until"])
        )
        if options["limit"]:
            runs = runs[: options["limit"]]
        runs = list(runs)
        if not runs:
            self.stdout.write("No finished run matches.")
            return
        for run in runs:
            if options["dry_run"]:
                self.stdout.write(
                    f"would clone run #{run.pk} {run.name!r} ({run.state}, commit {run.base_commit[:12] or '?'})"
                )
                continue
            clone = clone_run(run=run, model_mapping=options["models"])
            if options["start"]:
                from runs.services import run_start

                run_start(run_id=clone.pk, actor="replay_campaign")
            self.stdout.write(f"run #{run.pk} -> clone #{clone.pk} ({clone.phases_total} phases, queued)")
        verb = "would clone" if options["dry_run"] else "cloned"
        self.stdout.write(self.style.SUCCESS(f"{verb} {len(runs)} run(s)."))
