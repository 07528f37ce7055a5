"""``manage.py drain``: execute queued phases in this process, with a live progress display.

Ctrl-C or SIGTERM stops claiming, lets engines give their phase back at the next stage boundary and
releases whatever lease is still held within a couple of seconds; a second signal releases at once.
Exit status 1 when a phase ended failed or blocked (or the engine crashed), 0 otherwise.
"""

from __future__ import annotations

import signal
import time
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from runs.drain import ENGINES, Drain
from runs.models import Phase, Run


class Command(BaseCommand):
    help = "Claim and execute queued phases in this process (bounded concurrency across runs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--run", dest="runs", type=int, nargs="+", action="extend", default=[], help="Only these runs (ids)."
        )
        parser.add_argument(
            "--max-concurrent", type=int, default=1, help="Phases executing at once (runs in parallel)."
        )
        parser.add_argument("--until-empty", action="store_true", help="Exit when nothing is left to claim.")
        parser.add_argument("--max-phases", type=int, default=None, help="Stop after claiming this many phases.")
        parser.add_argument("--engine", choices=ENGINES, default="pipeline", help="noop: one marker commit per phase.")
        parser.add_argument("--provider", default=None, help="LLM provider (anthropic, replay, ...).")
        parser.add_argument("--cassette", default=None, help="Cassette to replay (with --provider replay).")
        parser.add_argument("--record", default=None, metavar="CASSETTE", help="Record every LLM call to this file.")
        parser.add_argument("--poll", type=float, default=1.0, help="Seconds between claims when idle.")
        parser.add_argument("--no-progress", action="store_true", help="Plain output instead of the live display.")

    def handle(self, *args: Any, **options: Any) -> None:
        unknown = sorted(
            set(options["runs"]) - set(Run.objects.filter(pk__in=options["runs"]).values_list("pk", flat=True))
        )
        if unknown:  # a typo would otherwise drain nothing and exit 0
            raise CommandError(f"no run {', '.join(map(str, unknown))}")
        provider = self._provider(options)
        drain = Drain(
            runs=options["runs"],
            max_concurrent=options["max_concurrent"],
            until_empty=options["until_empty"],
            max_phases=options["max_phases"],
            engine=options["engine"],
            provider=provider,
            poll_seconds=options["poll"],
        )
        console = Console(file=self.stdout._out, force_terminal=None)
        if not console.is_terminal:
            # Piped into a log, rich assumes 80 columns and cuts every cell of the summary to "compl…".
            console.width = max(console.width, SUMMARY_WIDTH)
        interrupted = _install_signal_handlers(drain)
        drain.start()
        display = not options["no_progress"] and console.is_terminal
        if display:
            _live_progress(drain, console)
        else:
            _plain_progress(drain, console)
        if interrupted["count"]:
            released = drain.release_all()
            console.print(f"[yellow]stopped by signal; {released} lease(s) released[/yellow]")
        console.print(_summary_table(drain))
        if drain.failed_or_blocked():
            raise CommandError(f"{len(drain.failed_or_blocked())} phase(s) ended failed or blocked", returncode=1)

    def _provider(self, options: dict[str, Any]) -> Any:
        if options["engine"] != "pipeline" or not (options["provider"] or options["cassette"] or options["record"]):
            return None
        from runs.execution import provider_from_settings

        return provider_from_settings(name=options["provider"], cassette=options["cassette"], record=options["record"])


def _install_signal_handlers(drain: Drain) -> dict[str, int]:
    interrupted = {"count": 0}

    def on_signal(signum: int, frame: Any) -> None:
        interrupted["count"] += 1
        drain.stop(reason="shutdown")
        if interrupted["count"] > 1:
            drain.release_all(reason="worker shut down (second signal)")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return interrupted


def _wait_for_end(drain: Drain, tick: float) -> bool:
    """Wait one tick; False once the drain is over (or the shutdown grace has passed)."""
    if drain.stopping.is_set():
        deadline = time.monotonic() + drain.grace_seconds
        while drain.alive() and time.monotonic() < deadline:
            drain.wait(0.1)
        return False
    drain.wait(tick)
    return drain.alive()


def _plain_progress(drain: Drain, console: Console) -> None:
    reported = 0
    while _wait_for_end(drain, 0.5):
        reported = _print_new_results(drain, console, reported)
    _print_new_results(drain, console, reported)


def _print_new_results(drain: Drain, console: Console, reported: int) -> int:
    with drain.lock:
        new = drain.results[reported:]
    for result in new:
        console.print(
            f"run {result.run_id} phase {result.phase_id}: {result.state or 'released'} ({result.seconds:.1f}s)"
        )
    return reported + len(new)


def _live_progress(drain: Drain, console: Console) -> None:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[phase]}"),
        TextColumn("[cyan]{task.fields[stage]}"),
        TextColumn("{task.fields[tokens]} tok"),
        TextColumn("${task.fields[cost]}"),
        console=console,
        refresh_per_second=4,
    )
    tasks: dict[int, TaskID] = {}
    with progress:
        while _wait_for_end(drain, 0.5):
            _refresh(drain, progress, tasks)
        _refresh(drain, progress, tasks)


def _refresh(drain: Drain, progress: Progress, tasks: dict[int, TaskID]) -> None:
    runs = Run.objects.filter(pk__in=_runs_in_view(drain)).select_related("project")
    for run in runs:
        current = drain.stage_of(run.pk)
        phase_name, stage = "", run.state
        if current:
            phase_name = Phase.objects.filter(pk=current[0]).values_list("phase_id", flat=True).first() or ""
            stage = current[1]
        fields = {"phase": phase_name, "stage": stage, "tokens": f"{run.tokens_used:,}", "cost": f"{run.cost_usd:.4f}"}
        if run.pk not in tasks:
            tasks[run.pk] = progress.add_task(f"{run.project.slug}/{run.name}", total=run.phases_total, **fields)
        progress.update(tasks[run.pk], completed=run.phases_done, total=run.phases_total, **fields)


def _runs_in_view(drain: Drain) -> set[int]:
    if drain.runs:
        return set(drain.runs)
    with drain.lock:
        return set(drain.touched_runs)


SUMMARY_WIDTH = 132


def _summary_table(drain: Drain) -> Table:
    table = Table(title="Drain summary")
    for column in (
        "run",
        "state",
        "phases done",
        "attempts",
        "complete",
        "retried",
        "blocked/failed",
        "tokens",
        "cost",
    ):
        # Only the run's name may wrap: a cut state, count or cost would be misread.
        if column == "run":
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, no_wrap=True)
    per_run: dict[int, list[str]] = {}
    for result in drain.results:
        per_run.setdefault(result.run_id, []).append(result.state)
    for run in Run.objects.filter(pk__in=_runs_in_view(drain)).order_by("pk"):
        states = per_run.get(run.pk, [])
        table.add_row(
            f"#{run.pk} {run.name}",
            run.state + (f" ({run.failure_reason})" if run.failure_reason else ""),
            f"{run.phases_done}/{run.phases_total}",
            str(len(states)),
            str(states.count("complete")),
            str(states.count("queued")),
            str(sum(states.count(state) for state in ("blocked", "failed", "error"))),
            f"{run.tokens_used:,}",
            f"${Decimal(run.cost_usd):.4f}",
        )
    return table
