"""``manage.py ab_compare --control RUN... --treatment RUN...``: measured deltas between paired runs."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from autopack_site.lib.errors import DomainError
from telemetry import reporting
from telemetry.ab import METRICS, ab_compare, originals_of


class Command(BaseCommand):
    help = "Compare control and treatment runs pairwise (i-th with i-th); valid only for same commit and models."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--control", type=int, nargs="+", metavar="RUN", help="Default: the run each treatment was cloned from."
        )
        parser.add_argument("--treatment", type=int, nargs="+", required=True, metavar="RUN")
        parser.add_argument("--label", default="")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            controls = options["control"] or originals_of(options["treatment"])
            result = ab_compare(control_ids=controls, treatment_ids=options["treatment"], label=options["label"])
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        if options["json"]:
            pairs = list(result.pairs.values("control_run_id", "treatment_run_id", "valid", "problems", "token_delta"))
            self.stdout.write(
                json.dumps(
                    {
                        "id": result.pk,
                        "valid": result.valid,
                        "deltas": result.deltas,
                        "problems": result.problems,
                        "pairs": pairs,
                    },
                    indent=2,
                    default=str,
                )
            )
            return
        for pair in result.pairs.all():
            verdict = "valid" if pair.valid else "INVALID: " + "; ".join(pair.problems)
            self.stdout.write(f"pair control #{pair.control_run_id} / treatment #{pair.treatment_run_id}: {verdict}")
        rows = [
            (metric, d["n"], _num(d["mean"]), _num(d["median"]), _num(d["stdev"]), _num(d["percent_change"]))
            for metric, d in ((metric, result.deltas[metric]) for metric in METRICS)
        ]
        self.stdout.write("\ndeltas (treatment - control) over valid pairs")
        self.stdout.write(reporting.table(("metric", "pairs", "mean", "median", "stdev", "% change"), rows))
        summary = f"A/B result #{result.pk}: {result.valid_pair_count}/{result.pair_count} valid pairs"
        if result.valid:
            self.stdout.write(self.style.SUCCESS(summary + " - VALID"))
        else:
            self.stdout.write(self.style.ERROR(summary + " - NOT VALID (commit or model mapping differ)"))


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"
