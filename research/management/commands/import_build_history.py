"""``manage.py import_build_history FILE ... --project SLUG``: import ledgers, idempotently."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from research.services import ledger_import
from runs.models import Project


class Command(BaseCommand):
    help = "Import build ledgers (heading, table or day-section style) into a project's build history."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", help="Ledger files, e.g. BUILD_HISTORY.md BUILD_LOG.md")
        parser.add_argument("--project", required=True, help="Project slug")

    def handle(self, *args: object, **options: object) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project with slug {options['project']!r}")
        report = ledger_import(paths=list(options["files"]), project=project)
        for error in report.errors:
            self.stderr.write(f"malformed: {error}")
        self.stdout.write(str(report))
