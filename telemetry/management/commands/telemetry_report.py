"""``manage.py telemetry_report``: spend, avoided tokens and estimator accuracy, as tables or JSON."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from telemetry import queries, reporting
from telemetry.bulk import rebuild_rollups
from telemetry.management.commands._arguments import iso_date


class Command(BaseCommand):
    help = "Print telemetry figures: spend by period, avoided tokens (apart from spend), estimator accuracy."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", type=iso_date, help="First day (UTC) to include, YYYY-MM-DD or 7d.")
        parser.add_argument("--period", choices=queries.PERIODS, default="month")
        parser.add_argument("--stratify", action="store_true", help="Accuracy by category, complexity, deliverables.")
        parser.add_argument("--json", action="store_true", help="Print one JSON document instead of tables.")
        parser.add_argument("--rebuild-rollups", action="store_true", help="Recompute rollups from raw events first.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["rebuild_rollups"]:
            rebuild_rollups()
        report = reporting.build_report(since=options["since"], period=options["period"], stratify=options["stratify"])
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, default=str))
        else:
            self.stdout.write(reporting.render_text(report))
