"""``manage.py serve``: the web server and a django-q2 worker cluster together, for `make run`.

Both run as child processes; Ctrl-C or SIGTERM stops both, and if either exits the other is stopped too,
so a newcomer never ends up with a half-running system.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Run the web server and a django-q2 worker cluster until interrupted."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-worker", action="store_true", help="Serve the web only.")

    def handle(self, *args: Any, host: str, port: int, no_worker: bool, **options: Any) -> None:
        # The project's manage.py, not the current directory's: serve may be started from anywhere.
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        commands = [[sys.executable, manage, "runserver", f"{host}:{port}", "--noreload"]]
        if not no_worker:
            commands.append([sys.executable, manage, "qcluster"])
        children = [subprocess.Popen(command) for command in commands]
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            while not stopping and all(child.poll() is None for child in children):
                time.sleep(0.5)
        finally:
            self._stop(children)
        failed = [child.args[2] for child in children if child.returncode not in (0, -signal.SIGTERM, None)]
        if failed and not stopping:
            self.stderr.write(f"stopped because {', '.join(failed)} exited")
            sys.exit(1)

    def _stop(self, children: list[subprocess.Popen]) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
