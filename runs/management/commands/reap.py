"""``manage.py reap``: requeue phases whose lease expired, once or every few seconds (``--every``)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from runs.services.leases import leases_reap


class Command(BaseCommand):
    help = "Requeue executing phases whose lease expired (blocking a phase after 3 lost leases in a row)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--every", type=float, default=0, help="Repeat every N seconds until interrupted.")

    def handle(self, *args: Any, **options: Any) -> None:
        while True:
            reaped = leases_reap()
            self.stdout.write(f"reaped {reaped} expired lease(s)")
            if not options["every"]:
                return
            try:
                time.sleep(options["every"])
            except KeyboardInterrupt:
                return
