"""``manage.py calibrate_estimator``: propose damped phase-overhead coefficients; write them with --apply."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from telemetry import calibration, reporting
from telemetry.management.commands._arguments import iso_date, start_of


class Command(BaseCommand):
    help = "Propose new estimator overheads from estimation events; show SMAPE before/after on held-back events."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--damping", type=float, default=0.5, help="Share of the way to move (0 < d <= 1).")
        parser.add_argument("--min-samples", type=int, default=5, help="Training events a stratum needs to move.")
        parser.add_argument("--since", type=iso_date)
        parser.add_argument("--apply", action="store_true", help="Store the proposal as the applied calibration.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            proposal = calibration.propose(
                damping=options["damping"], min_samples=options["min_samples"], since=start_of(options["since"])
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if not proposal.strata:
            self.stdout.write("No usable estimation events (non-truncated, with the overhead recorded).")
            return
        rows = [(s.key, s.training_events, s.current, s.proposed, s.proposed - s.current) for s in proposal.strata]
        self.stdout.write(reporting.table(("stratum", "events", "current", "proposed", "change"), rows))
        self.stdout.write(
            f"\ntraining events: {proposal.training_events}, held back: {proposal.held_back_events}, "
            f"damping: {proposal.damping}"
        )
        self.stdout.write(
            f"mean SMAPE on held-back events: before {_fmt(proposal.smape_before)}, after {_fmt(proposal.smape_after)}"
        )
        if options["apply"]:
            stored = calibration.apply(proposal)
            self.stdout.write(self.style.SUCCESS(f"Applied as calibration #{stored.pk}."))
        else:
            self.stdout.write("Nothing written (use --apply).")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"
