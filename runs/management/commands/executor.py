"""``manage.py executor``: run phases on this machine for a remote Autopack server, over HTTP only.

    manage.py executor --api https://autopack.example/api/executor/ --key ak_... --concurrency 2

The repository named in each phase spec must be reachable at the same path here (a shared volume or a
clone); worktrees go under ``--workspaces``. SIGTERM or Ctrl-C stops claiming, and each running attempt
gives its phase back at the next stage boundary.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.executor_client import RemoteExecutor


class Command(BaseCommand):
    help = "Execute phases for a remote Autopack server, talking only HTTP."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--api", required=True, help="The server's URL, or its executor API's (…/api/executor/).")
        parser.add_argument("--key", required=True, help="An API key with the executor scope.")
        parser.add_argument("--workspaces", default=None, help="Directory for the run worktrees.")
        parser.add_argument("--concurrency", type=int, default=1)
        parser.add_argument("--worker-id", default=None, help="This executor's name (default: the host name).")
        parser.add_argument("--engine", choices=("pipeline", "noop"), default="pipeline")
        parser.add_argument("--provider", default=None, help="LLM provider for the pipeline engine.")
        parser.add_argument("--cassette", default=None, help="Cassette for --provider replay.")
        parser.add_argument("--until-empty", action="store_true", help="Exit when the server has no work.")
        parser.add_argument("--poll", type=float, default=2.0, help="Seconds between claims when idle.")

    def handle(self, *args: Any, **options: Any) -> None:
        workspaces = Path(options["workspaces"] or settings.AUTOPACK["WORKSPACES_DIR"])
        workspaces.mkdir(parents=True, exist_ok=True)
        executor = RemoteExecutor(
            api=options["api"],
            key=options["key"],
            worker=options["worker_id"] or socket.gethostname(),
            workspaces=workspaces,
            concurrency=max(1, options["concurrency"]),
            engine=options["engine"],
            until_empty=options["until_empty"],
            poll_seconds=options["poll"],
            heartbeat_seconds=float(settings.AUTOPACK["HEARTBEAT_SECONDS"]),
            provider_factory=_provider_factory(options),
        )
        signal.signal(signal.SIGINT, lambda *_: executor.stop())
        signal.signal(signal.SIGTERM, lambda *_: executor.stop())
        results = executor.run()
        for phase_id, state in results:
            self.stdout.write(f"phase {phase_id}: {state or 'lease lost'}")
        if executor.errors:
            raise CommandError("executor stopped: " + "; ".join(executor.errors), returncode=1)
        bad = [phase_id for phase_id, state in results if state in ("failed", "blocked")]
        if bad:
            raise CommandError(f"{len(bad)} phase(s) ended failed or blocked", returncode=1)


def _provider_factory(options: dict[str, Any]):
    if options["engine"] != "pipeline":
        return None

    def factory(spec: dict[str, Any]) -> Any:
        from runs.execution import provider_from_settings

        # Command-line choices win; otherwise the run's own choice travels in the spec (a replayed run
        # replays its cassette remotely too, instead of falling back to a live provider).
        name = options["provider"] or spec.get("provider") or None
        cassette = options["cassette"] or spec.get("provider_cassette") or None
        return provider_from_settings(name=name, cassette=cassette)

    return factory
