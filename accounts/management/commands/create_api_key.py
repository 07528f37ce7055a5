"""``manage.py create_api_key --user alice --name ci-executor --scope executor`` prints a new key once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.models import ApiKeyScope, User
from accounts.services import api_key_create
from autopack_site.lib.errors import DomainError


class Command(BaseCommand):
    help = "Create an API key for a user and print it (it is shown only once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="Username of the key's owner.")
        parser.add_argument("--name", required=True, help="What the key is for, e.g. 'executor on build-2'.")
        parser.add_argument(
            "--scope", action="append", choices=ApiKeyScope.values, required=True, help="Repeat for several."
        )
        parser.add_argument("--expires-days", type=int, default=None, help="Expire after this many days.")

    def handle(self, *args: Any, **options: Any) -> None:
        owner = User.objects.filter(username=options["user"]).first()
        if owner is None:
            raise CommandError(f"no user named {options['user']!r}")
        days = options["expires_days"]
        if days is not None and days < 1:
            raise CommandError("--expires-days must be at least 1")
        expires_at = timezone.now() + timedelta(days=days) if days else None
        try:
            key, raw_key = api_key_create(
                owner=owner, name=options["name"], scopes=options["scope"], expires_at=expires_at
            )
        except DomainError as exc:
            raise CommandError(exc.message) from None
        self.stderr.write(f"Created API key {key.pk} ({', '.join(key.scopes)}) for {owner.username}; store it now:")
        self.stdout.write(raw_key)
