"""Normalised failure signatures: the same failure in another checkout, line or run gets the same signature.

Only the lines that say what went wrong are kept (the exception line of a traceback, pytest's ``E`` lines,
``npm ERR!`` lines, compiler ``error:`` lines), then everything that varies between occurrences is replaced:
paths, line numbers, hex ids and addresses, UUIDs, quoted names, numbers.
"""

from __future__ import annotations

import hashlib
import re

MAX_KEY_LINES = 4

_KEY_LINE = re.compile(
    r"""^\s*(?:
        E\s{2,}\S                                   # pytest assertion/exception detail
      | (?:[\w.]+\.)?\w*(?:Error|Exception|Exit|Interrupt|Warning)\b(?::|$)   # Python exception line
      | npm\s+(?:ERR!|error)\s+(?i:code|errno|\d{3}|missing|ERESOLVE|Cannot|Could)  # npm failure summary
      | (?:ERROR|FAILED|FATAL)\b                     # pytest summary, generic tools
      | error(?:\[\w+\])?:                          # compilers, git, TypeScript-ish tools
      | fatal:
      | Traceback\ \(most\ recent\ call\ last\)
    )""",
    re.VERBOSE,
)
_NOISE_LINE = re.compile(r"^\s*(?:Traceback \(most recent call last\)|npm (?:ERR!|error) A complete log)")

_SUBSTITUTIONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I), "<uuid>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"), "<time>"),
    # Windows paths (C:\x\y or C:/x/y), then POSIX absolute or home paths, then relative paths with a slash.
    (re.compile(r"\b[A-Za-z]:[\\/][^\s'\"():,]*"), "<path>"),
    (re.compile(r"(?:(?<=\s)|(?<=^)|(?<=[\"'(=:]))~?/[^\s'\"():,]+"), "<path>"),
    (re.compile(r"\b(?:\.{1,2}/)?[\w.@+-]+(?:/[\w.@+-]+)+/?"), "<path>"),
    (re.compile(r"\b[\w-]+\.(?:py|js|mjs|cjs|ts|tsx|jsx|json|toml|cfg|ini|yml|yaml|txt|md|lock|rs|go)\b"), "<path>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,64}\b", re.I), "<hex>"),
    (re.compile(r"\bline \d+\b"), "line <n>"),
    (re.compile(r"(<path>):\d+(?::\d+)?"), r"\1:<n>"),
    (re.compile(r"'[^'\n]{1,200}'"), "'<q>'"),
    (re.compile(r'"[^"\n]{1,200}"'), '"<q>"'),
    (re.compile(r"\b\d+(?:\.\d+)?(?:ms|s|m|h|kb|mb|gb|%)?\b", re.I), "<n>"),
    (re.compile(r"[ \t]+"), " "),
]


def key_lines(error_text: str) -> list[str]:
    """The lines that identify the failure (at most ``MAX_KEY_LINES``); the last lines when nothing matches."""
    lines = [line.rstrip() for line in error_text.splitlines() if line.strip()]
    lines = [line for line in lines if not _NOISE_LINE.match(line)]
    picked = [line for line in lines if _KEY_LINE.match(line)] or lines[-MAX_KEY_LINES:]
    # Keep first occurrences only: pytest repeats the same E line per parametrised case.
    unique = list(dict.fromkeys(line.strip() for line in picked))
    return unique[:MAX_KEY_LINES]


def normalise_line(line: str) -> str:
    for pattern, replacement in _SUBSTITUTIONS:
        line = pattern.sub(replacement, line)
    return line.strip()


def normalise_error(error_text: str) -> str:
    """The normalised text that identifies a failure: key lines with variable parts replaced."""
    normalised = [normalise_line(line) for line in key_lines(error_text)]
    return "\n".join(dict.fromkeys(line for line in normalised if line))


def error_signature(error_text: str) -> str:
    """SHA-256 of the normalised error; empty for an empty text."""
    normalised = normalise_error(error_text or "")
    if not normalised:
        return ""
    return hashlib.sha256(normalised.encode()).hexdigest()


_ERROR_TYPES: list[tuple[str, re.Pattern[str]]] = [
    ("missing_python_dependency", re.compile(r"ModuleNotFoundError|No module named|ImportError")),
    ("missing_node_dependency", re.compile(r"Cannot find module|ERR_MODULE_NOT_FOUND|code E404|ERESOLVE")),
    ("collection_error", re.compile(r"ERROR collecting|no tests ran|collected 0 items|errors during collection")),
    ("syntax_error", re.compile(r"SyntaxError|IndentationError|Unexpected token")),
    ("permission_error", re.compile(r"PermissionError|EACCES|Permission denied")),
    ("file_not_found", re.compile(r"FileNotFoundError|ENOENT|No such file or directory")),
    ("assertion_failure", re.compile(r"AssertionError|^E\s+assert\b", re.M)),
    ("type_error", re.compile(r"TypeError")),
    ("attribute_error", re.compile(r"AttributeError")),
    ("name_error", re.compile(r"NameError")),
    ("timeout", re.compile(r"Timeout|timed out", re.I)),
]


def classify_error(error_text: str) -> str:
    for error_type, pattern in _ERROR_TYPES:
        if pattern.search(error_text or ""):
            return error_type
    return "other"
