"""``manage.py serve`` started from another directory (a service unit, a cron line) still serves."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from django.conf import settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_started_outside_the_project_directory_answers_health(tmp_path):
    port = free_port()
    manage = Path(settings.BASE_DIR) / "manage.py"
    env = {**os.environ, "AUTOPACK_DATA_DIR": str(tmp_path), "DATABASE_URL": ""}
    subprocess.run([sys.executable, str(manage), "migrate", "-v0"], cwd=tmp_path, env=env, check=True)
    server = subprocess.Popen(
        [sys.executable, str(manage), "serve", "--port", str(port), "--no-worker"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = None
        for _ in range(100):
            if server.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                    body = json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.2)
        assert body is not None and body["database"] == "ok", "serve did not come up"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
