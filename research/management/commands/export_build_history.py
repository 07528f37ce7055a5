"""``manage.py export_build_history --project SLUG [--output FILE]``: the ledger in the fixture's style."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from research.services import ledger_export
from runs.models import Project


class Command(BaseCommand):
    help = "Export a project's build history as a markdown ledger (re-imports as unchanged)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="Project slug")
        parser.add_argument("--output", help="Write to this file instead of standard output")

    def handle(self, *args: object, **options: object) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project with slug {options['project']!r}")
        text = ledger_export(project=project)
        if options["output"]:
            Path(options["output"]).write_text(text, encoding="utf-8")
        else:
            self.stdout.write(text, ending="")
