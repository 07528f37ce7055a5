"""``manage.py apply_edits``: apply an edit document to a directory under governed apply, print the result.

    manage.py apply_edits --workspace DIR [--scope PATH ...] [--protected PATH ...] [--allow-tests] [--dry-run] FILE

FILE holds model output in any supported format (NDJSON operations, full-file JSON, unified diff); ``-`` reads
standard input. Without ``--scope`` the whole workspace is in scope; every other rule still applies. Prints the
typed result as JSON. Exit status: 0 applied (or, with --dry-run, would apply), 1 refused or failed, 2 bad usage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from runs.engine.apply import ApplyPolicy, governed_apply
from runs.engine.edits import EditParseError, parse_edits


class Command(BaseCommand):
    help = "Apply an edit document (NDJSON, full-file JSON or unified diff) to a directory under governed apply."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file", help="the edit document, or - for standard input")
        parser.add_argument("--workspace", required=True, help="directory to apply to")
        parser.add_argument("--scope", action="append", default=None, help="writable path (dir/ prefix or file)")
        parser.add_argument("--protected", action="append", default=[], help="extra protected path")
        parser.add_argument("--allow-tests", action="store_true", help="allow changes to existing test files")
        parser.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        workspace = Path(options["workspace"])
        if not workspace.is_dir():
            raise CommandError(f"--workspace {workspace} is not a directory", returncode=2)
        text = self._read(options["file"])
        policy = ApplyPolicy(
            scope_paths=tuple(options["scope"]) if options["scope"] else None,
            protected_paths=tuple(options["protected"]),
            allow_test_edits=options["allow_tests"],
        )
        try:
            parsed = parse_edits(text)
        except EditParseError as error:
            self._emit({"applied": False, "ok": False, "error": str(error), "violations": []})
            sys.exit(1)
        result = governed_apply(workspace, parsed, policy=policy, dry_run=options["dry_run"])
        payload = {"format": str(parsed.format), **result.to_dict()}
        self._emit(payload)
        if not result.ok:
            sys.exit(1)

    def _read(self, name: str) -> str:
        if name == "-":
            return sys.stdin.read()
        path = Path(name)
        if not path.is_file():
            raise CommandError(f"{name} is not a readable file", returncode=2)
        return path.read_bytes().decode("utf-8", errors="surrogateescape")

    def _emit(self, payload: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
