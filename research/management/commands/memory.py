"""``manage.py memory rebuild|retention --project SLUG``: maintain a project's vector memory."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from research.memory import (
    DEFAULT_MAX_AGE_DAYS,
    DEFAULT_MAX_ITEMS,
    active_embedder_name,
    memory_apply_retention,
    memory_rebuild,
)
from runs.models import Project


class Command(BaseCommand):
    help = "Rebuild a project's faiss indexes from the database, or apply the retention caps."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=["rebuild", "retention"])
        parser.add_argument("--project", required=True, help="Project slug")
        parser.add_argument("--max-age-days", type=int, default=DEFAULT_MAX_AGE_DAYS)
        parser.add_argument("--max-items", type=int, default=DEFAULT_MAX_ITEMS)

    def handle(self, *args: object, **options: object) -> None:
        project = Project.objects.filter(slug=options["project"]).first()
        if project is None:
            raise CommandError(f"no project with slug {options['project']!r}")
        self.stdout.write(f"embedder: {active_embedder_name()}")
        if options["action"] == "rebuild":
            for collection, count in memory_rebuild(project_id=project.pk).items():
                self.stdout.write(f"{collection}: {count} vectors")
        else:
            deleted = memory_apply_retention(
                project_id=project.pk, max_age_days=options["max_age_days"], max_items=options["max_items"]
            )
            self.stdout.write(f"deleted {deleted} items")
