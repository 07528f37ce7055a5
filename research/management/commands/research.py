"""``manage.py research "question" --project SLUG``: run a research session and print its report."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from research.embedders import EmbedderUnavailable
from research.sessions import research_session_run
from runs.models import Project


class Command(BaseCommand):
    help = "Research a question over the project's build ledger, docs, README and vector memory."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("question")
        parser.add_argument("--project", required=True, help="Project slug")
        parser.add_argument("--limit", type=int, default=8, help="Most evidence to keep")
        parser.add_argument("--external", action="store_true", help="Also ask configured external sources")

    def handle(self, *args: object, **options: object) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project with slug {options['project']!r}")
        try:
            session = research_session_run(
                project=project,
                question=str(options["question"]),
                include_external=bool(options["external"]),
                limit=int(options["limit"]),
            )
        except EmbedderUnavailable as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(session.report, ending="")
