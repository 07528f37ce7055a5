"""``manage.py pattern_expansion``: group failures hardening did not catch; suggest new patterns."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from telemetry.management.commands._arguments import iso_date, start_of
from telemetry.patterns import pattern_candidates


class Command(BaseCommand):
    help = "Group uncaught failures by normalised signature and suggest deterministic patterns."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--min-occurrences", type=int, default=2)
        parser.add_argument("--since", type=iso_date)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        candidates = pattern_candidates(min_occurrences=options["min_occurrences"], since=start_of(options["since"]))
        if options["json"]:
            payload = [
                {**asdict(c), "confidence": c.confidence, "suggested_pattern_id": c.suggested_pattern_id}
                for c in candidates
            ]
            self.stdout.write(json.dumps(payload, indent=2, default=str))
            return
        if not candidates:
            self.stdout.write(f"No uncaught failure signature occurs {options['min_occurrences']} times or more.")
            return
        for candidate in candidates:
            self.stdout.write(
                f"{candidate.suggested_pattern_id}  ({candidate.error_type}, {candidate.confidence} confidence)\n"
                f"  {candidate.occurrences} occurrences in {candidate.runs} runs / {candidate.phases} phases, "
                f"{candidate.first_seen:%Y-%m-%d} .. {candidate.last_seen:%Y-%m-%d}\n"
                f"  signature {candidate.signature[:16]}\n"
                + "".join(f"  | {line}\n" for line in candidate.normalised.splitlines())
            )
