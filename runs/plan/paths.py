"""Plan path rules: tidy what people write loosely, and refuse what governed apply would never allow.

``tidy_path`` fixes harmless spelling (annotations, backticks, backslashes, ``./``, ``//``) and says what it
changed. ``path_problem`` names the first rule a tidy path breaks, or returns None. A trailing ``/`` is kept:
in a scope it means "anything under this directory".
"""

from __future__ import annotations

import re

_BACKTICKED = re.compile(r"^`([^`]+)`\s*(.*)$")
_TRAILING_NOTE = re.compile(r"^(?P<path>\S.*?)\s+(?P<note>\(.*\)|\[.*\]|#.*|[-–—]+\s.*|[-–—]+)$")
_COLON_NOTE = re.compile(r"^(?P<path>[^\s:]+):\s+(?P<note>.*)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
_WILDCARD = re.compile(r"[*?]")


def tidy_path(raw: str) -> tuple[str, list[str]]:
    """Return the tidied path and one description per fix applied (empty when nothing changed)."""
    fixes: list[str] = []
    path = raw
    if path != path.strip():
        path = path.strip()
        fixes.append("trimmed surrounding whitespace")
    path = _strip_annotations(path, fixes)
    if "\\" in path:
        path = path.replace("\\", "/")
        fixes.append("replaced '\\' with '/'")
    if path.startswith("./") or "/./" in path:
        while path.startswith("./"):
            path = path[2:]
        while "/./" in path:
            path = path.replace("/./", "/")
        fixes.append("removed './'")
    if "//" in path[1:]:
        head, rest = path[:1], path[1:]
        while "//" in rest:
            rest = rest.replace("//", "/")
        path = head + rest
        fixes.append("collapsed '//'")
    return path, fixes


def _strip_annotations(path: str, fixes: list[str]) -> str:
    backticked = _BACKTICKED.match(path)
    if backticked:
        path, note = backticked.group(1).strip(), backticked.group(2).strip()
        fixes.append(f"removed backticks and the annotation {note!r}" if note else "removed backticks")
    for pattern in (_TRAILING_NOTE, _COLON_NOTE):
        match = pattern.match(path)
        if match:
            path = match.group("path").strip()
            fixes.append(f"stripped the annotation {match.group('note')!r}")
    return path


def path_problem(path: str, *, allow_wildcards: bool = False) -> str | None:
    if not path.strip():
        return "must not be empty"
    if _CONTROL.search(path):
        return "control characters are not allowed"
    if _DRIVE.match(path):
        return "Windows drive paths are not allowed"
    if path.startswith(("/", "\\")):
        return "absolute paths are not allowed"
    if path.startswith("~"):
        return "home-relative paths are not allowed"
    parts = [part for part in path.replace("\\", "/").split("/") if part not in ("", ".")]
    if not parts:
        return "must name a file or directory below the repository root"
    if any(part.strip() == ".." for part in parts):
        return "'..' segments are not allowed"
    if any(part.lower().rstrip(". ") in (".git", "git~1") for part in parts):
        return "paths under .git are not allowed"
    if not allow_wildcards and _WILDCARD.search(path):
        return "wildcards are not supported; name a directory ending in '/' instead"
    return None
