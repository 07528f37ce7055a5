"""Guess a repository's test command from the files at its root (the simple fallback detector).

``runs.engine.toolchains`` (Engine II) does richer detection; ``runs.services.plan`` prefers it when present.
"""

from __future__ import annotations

from pathlib import Path

# First match wins: a Python project with a package.json for its assets is still tested with pytest.
MARKERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("pyproject.toml", "pytest.ini", "setup.cfg", "tox.ini", "setup.py"), "python -m pytest"),
    (("package.json",), "npm test"),
    (("go.mod",), "go test ./..."),
    (("Cargo.toml",), "cargo test"),
)


def detect_test_command(repository: str | Path) -> str | None:
    root = Path(repository)
    if not root.is_dir():
        return None
    for names, command in MARKERS:
        if any((root / name).is_file() for name in names):
            return command
    return None
