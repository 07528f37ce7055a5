"""manage.py import_plan FILE --project SLUG [--start] [--replace] [--user USERNAME]

Prints the new run's id and any warnings. Plan errors go to stderr one per line (exit 1); usage errors such
as an unknown project or a missing file exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from autopack_site.lib.errors import Conflict, IllegalTransition
from runs.models import Project
from runs.services.plan import PlanInvalid, plan_import


def usage_error(message: str) -> CommandError:
    return CommandError(message, returncode=2)


def project_by_slug(slug: str) -> Project:
    try:
        return Project.objects.get(slug=slug)
    except Project.DoesNotExist:
        known = ", ".join(Project.objects.values_list("slug", flat=True)[:20]) or "none"
        raise usage_error(f"unknown project {slug!r} (projects: {known})") from None


def read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise usage_error(f"{path}: no such file") from None
    except OSError as exc:
        raise usage_error(f"{path}: cannot read the file ({exc.strerror})") from None


class Command(BaseCommand):
    help = "Validate a JSON or YAML plan and create its run, tiers and phases in one transaction."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the plan file (.json, .yaml or .yml)")
        parser.add_argument("--project", required=True, help="slug of the project the run belongs to")
        parser.add_argument("--start", action="store_true", help="start the run once it is created")
        parser.add_argument("--replace", action="store_true", help="replace the same plan's run if not started")
        parser.add_argument("--user", help="username recorded as the run's creator")

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_by_slug(options["project"])
        user = self._user(options["user"])
        content = read_bytes(options["file"])
        try:
            result = plan_import(
                project=project,
                document=content,
                source_name=options["file"],
                created_by=user,
                start=options["start"],
                replace=options["replace"],
            )
        except PlanInvalid as exc:
            for error in exc.errors:
                self.stderr.write(str(error))
            raise SystemExit(1) from None
        except (Conflict, IllegalTransition) as exc:
            self.stderr.write(exc.message)
            raise SystemExit(1) from None
        run = result.run
        for warning in result.warnings:
            self.stdout.write(f"warning: {warning}")
        self.stdout.write(f"run {run.pk}: {run.name!r}, {run.phases_total} phases, {run.state}")

    def _user(self, username: str | None) -> Any:
        if not username:
            return None
        try:
            return get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise usage_error(f"unknown user {username!r}") from None
