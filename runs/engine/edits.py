"""Parse untrusted model output into typed edit operations, salvaging what a truncated answer completed.

Public API:
    parse_edits(text, *, expected_format=None, known_truncated=False) -> ParseResult
    ParseResult(operations, format, warnings, truncated, dropped_text, summary, declared_total)
    WriteOp(path, content) | EditOp(path, search, replace) | DeleteOp(path) | RenameOp(path, to) | DiffOp(...)
    EditFormat: NDJSON | FILES_JSON | UNIFIED_DIFF | NONE
    apply_search_replace(content, search, replace, *, path) -> (new_content, warning | None)
    Errors: EditParseError (base) > MalformedOperation ; EditMatchError (search text matched 0 or 2+ times)

Formats (DESIGN.md "Edit formats"):
- NDJSON operations (canonical): ``{"op":"write","path","content"}``, ``{"op":"edit","path","search","replace"}``,
  ``{"op":"delete","path"}``, ``{"op":"rename","path","to"}``, optional first ``{"op":"meta","summary",
  "total_operations"}``.
- Full-file JSON: ``{"summary", "files":[{"path","mode":create|modify|delete,"new_content"}]}``. Entries shaped
  like NDJSON operations are accepted in the wrapper too (a common malformation).
- Unified diff (``git diff`` style, including ``GIT binary patch``): split into one ``DiffOp`` per file.

Tolerated: code fences, prose around the payload, single quotes, trailing commas, literal newlines inside
strings, a missing ``op`` inferred from the fields present (``to`` = rename, ``search``+``replace`` = edit,
``content``/``new_content`` = write; a bare ``path`` is never guessed to be a delete).

Salvage: a JSON object that is still open when the text ends, or a diff hunk with fewer lines than its header
announced, is the truncated tail: every complete operation before it is returned, ``truncated`` is True and
``dropped_text`` holds the tail verbatim. No repair ever closes an open object, so a cut can never turn into a
different, "complete" operation. A complete but invalid operation is not silently skipped: it raises
``MalformedOperation``, because applying its neighbours alone would be a partial apply of the model's intent.
Output with no operations at all is not an error here: the result has ``operations == []`` and a warning.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EditFormat(StrEnum):
    NDJSON = "ndjson"
    FILES_JSON = "files_json"
    UNIFIED_DIFF = "unified_diff"
    NONE = "none"


@dataclass(frozen=True)
class WriteOp:
    path: str
    content: str
    op: str = field(default="write", init=False)


@dataclass(frozen=True)
class EditOp:
    path: str
    search: str
    replace: str
    op: str = field(default="edit", init=False)


@dataclass(frozen=True)
class DeleteOp:
    path: str
    op: str = field(default="delete", init=False)


@dataclass(frozen=True)
class RenameOp:
    path: str
    to: str
    op: str = field(default="rename", init=False)


@dataclass(frozen=True)
class DiffOp:
    """One file's section of a unified diff, as written (paths still raw: governed apply checks them)."""

    text: str
    old_path: str | None  # None for a created file
    new_path: str | None  # None for a deleted file
    binary: bool = False
    modes: tuple[str, ...] = ()  # every file mode the headers mention, as written, e.g. ("100644", "100755")
    op: str = field(default="diff", init=False)

    @property
    def path(self) -> str:
        return self.new_path or self.old_path or ""


Operation = WriteOp | EditOp | DeleteOp | RenameOp | DiffOp


@dataclass
class ParseResult:
    operations: list[Operation]
    format: EditFormat
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False
    dropped_text: str = ""
    summary: str | None = None
    declared_total: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": str(self.format),
            "operations": [operation_to_dict(op) for op in self.operations],
            "warnings": list(self.warnings),
            "truncated": self.truncated,
            "dropped_text": self.dropped_text,
            "summary": self.summary,
            "declared_total": self.declared_total,
        }


class EditParseError(ValueError):
    """Base of every parse error."""


class MalformedOperation(EditParseError):
    def __init__(self, reason: str, *, snippet: str = "", index: int | None = None) -> None:
        where = f" (operation {index + 1})" if index is not None else ""
        super().__init__(f"malformed edit operation{where}: {reason}: {snippet[:200]!r}")
        self.reason = reason
        self.snippet = snippet
        self.index = index


class EditMatchError(EditParseError):
    """An ``edit`` whose search text matched zero or several times (also after the whitespace-tolerant try)."""

    def __init__(self, path: str, count: int, candidates: list[tuple[int, str]]) -> None:
        shown = "; ".join(f"line {number}: {text.strip()[:120]}" for number, text in candidates) or "none"
        what = "no match" if count == 0 else f"{count} matches"
        super().__init__(f"edit of {path}: search text has {what}; nearest candidate lines: {shown}")
        self.path = path
        self.count = count
        self.candidates = candidates


def operation_to_dict(op: Operation) -> dict[str, Any]:
    if isinstance(op, WriteOp):
        return {"op": "write", "path": op.path, "content": op.content}
    if isinstance(op, EditOp):
        return {"op": "edit", "path": op.path, "search": op.search, "replace": op.replace}
    if isinstance(op, DeleteOp):
        return {"op": "delete", "path": op.path}
    if isinstance(op, RenameOp):
        return {"op": "rename", "path": op.path, "to": op.to}
    return {"op": "diff", "old_path": op.old_path, "new_path": op.new_path, "binary": op.binary, "text": op.text}


# --------------------------------------------------------------------------------------------------------------
# Entry point


def parse_edits(
    text: str, *, expected_format: EditFormat | str | None = None, known_truncated: bool = False
) -> ParseResult:
    """Parse a model answer. ``known_truncated`` (stop_reason == "max_tokens") marks the result truncated."""
    expected = EditFormat(expected_format) if expected_format else None
    if expected is EditFormat.UNIFIED_DIFF or (expected is None and _looks_like_diff(text)):
        result = parse_unified_diff(text, known_truncated=known_truncated)
    else:
        result = _parse_json_payload(text)
    if expected and result.format not in (expected, EditFormat.NONE):
        result.warnings.append(f"expected {expected} but found {result.format}")
    if known_truncated and not result.truncated:
        result.truncated = True
        result.warnings.append("the model stopped at max_tokens: the answer may be incomplete")
    if result.declared_total is not None and len(result.operations) < result.declared_total:
        result.truncated = True
        result.warnings.append(
            f"meta announced {result.declared_total} operations but only {len(result.operations)} are complete"
        )
    if not result.operations:
        result.warnings.append("no edit operations found")
    return result


_DIFF_START = re.compile(r"^(diff --git |--- (?:a/|/dev/null|\S)[^\n]*\n\+\+\+ )", re.MULTILINE)
_JSON_START = re.compile(r"""\{\s*["'](?:op|files|path|summary)["']""")


def _looks_like_diff(text: str) -> bool:
    diff = _DIFF_START.search(text)
    if diff is None:
        return False
    json_start = _JSON_START.search(text)
    return json_start is None or diff.start() < json_start.start()


# --------------------------------------------------------------------------------------------------------------
# JSON formats


@dataclass
class _Span:
    start: int
    end: int | None  # None: still open when the text ended (the truncated tail)
    unclosed_before_more: bool = False  # never closed, yet more objects follow: a malformed operation


_MAX_UNCLOSED_PROSE_BRACES = 20
_NEXT_LINE_OBJECT = re.compile(r"\n[ \t]*\{")


def _scan_objects(text: str, start: int = 0, stop_at_close_bracket: bool = False) -> Iterator[_Span]:
    """Yield top-level ``{...}`` spans, honouring "double" and 'single' quoted strings and escapes.

    A brace that never closes is the truncated tail only if no later line starts another object; otherwise
    it was prose (``{the user's name}``: the apostrophe opened a "string") and scanning goes on after it.
    """
    index, length, skipped = start, len(text), 0
    while index < length:
        char = text[index]
        if char == "]" and stop_at_close_bracket:
            return
        if char != "{":
            index += 1
            continue
        end = _match_object(text, index) or _match_object(text, index, quotes='"')
        if end is not None:
            yield _Span(index, end)
            index = end
            continue
        following = _NEXT_LINE_OBJECT.search(text, index + 1)
        if following is None:
            yield _Span(index, None)
            return
        skipped += 1
        if _OP_HINT.search(text, index, following.start()) or skipped > _MAX_UNCLOSED_PROSE_BRACES:
            # The cap keeps hostile "{{{{..." output linear: each unclosed brace costs a scan to the end.
            yield _Span(index, None, unclosed_before_more=True)
            return
        index += 1


_SPECIAL = {"\"'": re.compile(r"[{}\"'\\]"), '"': re.compile(r'[{}"\\]')}


def _match_object(text: str, start: int, quotes: str = "\"'") -> int | None:
    """Index just past the ``}`` closing the object at ``start``, or None; jumps between special characters."""
    special = _SPECIAL[quotes]
    depth, quote, position = 0, "", start
    while True:
        match = special.search(text, position)
        if match is None:
            return None
        char, index = match.group(), match.start()
        position = index + 1
        if quote:
            if char == "\\":
                position = index + 2
            elif char == quote:
                quote = ""
        elif char in quotes:
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return position


_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_SINGLE_QUOTED_KEY = re.compile(r"[{,]\s*'\w+'\s*:")


def _load_object(raw: str, warnings: list[str]) -> Any:
    try:
        return json.loads(raw, strict=False)  # strict=False: literal newlines and tabs inside strings
    except ValueError:
        pass
    repaired = _TRAILING_COMMA.sub(r"\1", raw)
    try:
        value = json.loads(repaired, strict=False)
        warnings.append("repaired trailing commas")
        return value
    except ValueError:
        pass
    if len(raw) <= 2_000_000 and _SINGLE_QUOTED_KEY.search(raw):
        try:
            value = ast.literal_eval(raw.replace("\r\n", "\\n").replace("\n", "\\n") if "'" in raw else raw)
            warnings.append("repaired a Python-style object (single quotes)")
            return value
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            pass
    raise ValueError("not a JSON object")


_OP_HINT = re.compile(r"""["'](?:op|path|content|search|new_content)["']\s*:""")


def _parse_json_payload(text: str) -> ParseResult:
    result = ParseResult(operations=[], format=EditFormat.NONE)
    for span in _scan_objects(text):
        if span.unclosed_before_more:
            snippet = text[span.start : span.start + 200]
            raise MalformedOperation("an operation is never closed", snippet=snippet, index=len(result.operations))
        if span.end is None:
            _salvage_open_object(text, span.start, result)
            return result
        raw = text[span.start : span.end]
        try:
            value = _load_object(raw, result.warnings)
        except ValueError:
            if _OP_HINT.search(raw):
                raise MalformedOperation("not valid JSON", snippet=raw, index=len(result.operations)) from None
            result.warnings.append(f"ignored text that is not an operation: {raw[:80]!r}")
            continue
        _absorb_value(value, raw, result)
    return result


def _absorb_value(value: Any, raw: str, result: ParseResult) -> None:
    if not isinstance(value, dict):
        result.warnings.append(f"ignored a non-object value: {raw[:80]!r}")
        return
    if isinstance(value.get("files"), list) and "op" not in value:
        if result.format is EditFormat.NONE:
            result.format = EditFormat.FILES_JSON
        result.summary = _text_or_none(value.get("summary")) or result.summary
        for entry in value["files"]:
            _add_operation(entry, json.dumps(entry)[:200], result)
        return
    if value.get("op") == "meta":
        result.summary = _text_or_none(value.get("summary"))
        total = value.get("total_operations")
        result.declared_total = total if isinstance(total, int) and not isinstance(total, bool) else None
        result.format = EditFormat.NDJSON
        return
    if not ({"op", "path", "content", "search", "new_content", "to"} & value.keys()):
        result.warnings.append(f"ignored an object that is not an operation: {raw[:80]!r}")
        return
    if result.format is EditFormat.NONE:
        result.format = EditFormat.NDJSON
    _add_operation(value, raw, result)


def _salvage_open_object(text: str, start: int, result: ParseResult) -> None:
    """The object at ``start`` never closed: keep the complete entries of a ``files`` array inside it, if any."""
    tail = text[start:]
    files = re.search(r"""["']files["']\s*:\s*\[""", tail)
    if files is not None and "op" not in tail[: files.start()]:
        result.format = EditFormat.FILES_JSON
        summary = re.search(r'"summary"\s*:\s*"((?:[^"\\]|\\.)*)"', tail[: files.start()])
        if summary:
            result.summary = json.loads(f'"{summary.group(1)}"')
        offset = start + files.end()
        for span in _scan_objects(text, offset, stop_at_close_bracket=True):
            if span.unclosed_before_more:
                raise MalformedOperation("an entry is never closed", snippet=text[span.start : span.start + 200])
            if span.end is None:
                _mark_truncated(text, span.start, result)
                return
            raw = text[span.start : span.end]
            try:
                entry = _load_object(raw, result.warnings)
            except ValueError:
                raise MalformedOperation("not valid JSON", snippet=raw, index=len(result.operations)) from None
            _add_operation(entry, raw, result)
            offset = span.end
        _mark_truncated(text, offset, result)
        return
    if result.format is EditFormat.NONE and _OP_HINT.search(tail):
        result.format = EditFormat.NDJSON
    _mark_truncated(text, start, result)


def _mark_truncated(text: str, start: int, result: ParseResult) -> None:
    result.truncated = True
    result.dropped_text = text[start:]
    result.warnings.append(f"output was truncated: dropped {len(result.dropped_text)} characters of an open operation")


def _add_operation(entry: Any, raw: str, result: ParseResult) -> None:
    index = len(result.operations)
    if not isinstance(entry, dict):
        raise MalformedOperation("an operation must be an object", snippet=raw, index=index)
    result.operations.append(_to_operation(entry, raw, index, result.warnings))


def _to_operation(entry: dict[str, Any], raw: str, index: int, warnings: list[str]) -> Operation:
    kind = entry.get("op") or entry.get("mode") or entry.get("action")
    if not kind:
        kind = _infer_kind(entry)
        if kind is None:
            raise MalformedOperation("no 'op' and none can be inferred from the fields", snippet=raw, index=index)
        warnings.append(f"operation {index + 1}: inferred op '{kind}' from its fields")
    path = entry.get("path") or entry.get("file") or entry.get("file_path")
    if not isinstance(path, str) or not path:
        raise MalformedOperation("missing 'path'", snippet=raw, index=index)
    kind = str(kind).lower()
    if kind in ("write", "create", "modify", "replace_file", "overwrite"):
        content = entry.get("content", entry.get("new_content"))
        return WriteOp(path=path, content=_required_text(content, "content", raw, index))
    if kind == "edit":
        search = _required_text(entry.get("search"), "search", raw, index)
        replace = _required_text(entry.get("replace"), "replace", raw, index)
        return EditOp(path=path, search=search, replace=replace)
    if kind in ("delete", "remove"):
        return DeleteOp(path=path)
    if kind in ("rename", "move"):
        target = entry.get("to") or entry.get("new_path")
        return RenameOp(path=path, to=_required_text(target, "to", raw, index))
    raise MalformedOperation(f"unknown op {kind!r}", snippet=raw, index=index)


def _infer_kind(entry: dict[str, Any]) -> str | None:
    if "to" in entry or "new_path" in entry:
        return "rename"
    if "search" in entry and "replace" in entry:
        return "edit"
    if "content" in entry or "new_content" in entry:
        return "write"
    return None


def _required_text(value: Any, name: str, raw: str, index: int) -> str:
    if not isinstance(value, str):
        raise MalformedOperation(f"'{name}' must be a string", snippet=raw, index=index)
    return value


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------------------------------------------
# Unified diff

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_EXTENDED = (
    "index ",
    "old mode ",
    "new mode ",
    "deleted file mode ",
    "new file mode ",
    "similarity index ",
    "dissimilarity index ",
    "rename from ",
    "rename to ",
    "copy from ",
    "copy to ",
    "Binary files ",
)
_BASE85_LINE = re.compile(r"^[A-Za-z][0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]*$")


class _Truncated(Exception):
    pass


def parse_unified_diff(text: str, *, known_truncated: bool = False) -> ParseResult:
    """Split a unified diff into per-file ``DiffOp``s; a file section cut short is dropped (salvage).

    When the model is known to have stopped at max_tokens, a last line without its newline is a cut line, not
    a stripped one: it is set aside, so the hunk it belonged to comes up short and its file is dropped. (A
    "\\ No newline" marker cut short takes the line it qualifies with it.) The file section running up to the
    cut is dropped too, even if its hunks look complete: further hunks of it may have been cut off. Otherwise
    (not known to be truncated) a missing final newline is taken as whitespace stripped from the answer.
    """
    result = ParseResult(operations=[], format=EditFormat.UNIFIED_DIFF)
    lines = text.splitlines(keepends=True)
    cut_tail = ""
    if known_truncated and lines and not lines[-1].endswith("\n"):
        cut_tail = lines.pop()
        if cut_tail.startswith("\\") and lines:
            cut_tail = lines.pop() + cut_tail
    index = _first_header(lines)
    if index is None:
        result.format = EditFormat.NONE
        return result
    while index < len(lines):
        if not _is_section_start(lines, index):
            trailing = "".join(lines[index:])
            if known_truncated:
                cut_tail = trailing + cut_tail  # it may be the start of a header that was cut
            elif trailing.strip():
                result.warnings.append(f"ignored text after the diff: {trailing.strip()[:80]!r}")
            break
        start = index
        try:
            index = _read_section(lines, index)
        except _Truncated:
            result.truncated = True
            result.dropped_text = "".join(lines[start:]) + cut_tail
            result.warnings.append(f"diff was truncated: dropped {len(result.dropped_text)} characters")
            return result
        section = "".join(lines[start:index])
        if not section.endswith("\n"):
            section += "\n"
        result.operations.append(_diff_op(section))
        if known_truncated and index >= len(lines):
            # The text stops right after this file: more of its hunks may have been cut off at a line boundary.
            result.operations.pop()
            cut_tail = section + cut_tail
    if cut_tail:
        result.truncated = True
        result.dropped_text = cut_tail
    return result


def _first_header(lines: list[str]) -> int | None:
    for index in range(len(lines)):
        if _is_section_start(lines, index):
            return index
    return None


def _is_section_start(lines: list[str], index: int) -> bool:
    line = lines[index]
    if line.startswith("diff --git "):
        return True
    return line.startswith("--- ") and index + 1 < len(lines) and lines[index + 1].startswith("+++ ")


def _read_section(lines: list[str], index: int) -> int:
    """Return the index just past this file's section; raise _Truncated if the text ends inside it."""
    if lines[index].startswith("diff --git "):
        index += 1
        while index < len(lines) and lines[index].startswith(_EXTENDED):
            index += 1
        if index < len(lines) and lines[index].startswith("GIT binary patch"):
            return _read_binary(lines, index + 1)
    if index < len(lines) and lines[index].startswith("--- "):
        if index + 1 >= len(lines) or not lines[index + 1].startswith("+++ "):
            raise _Truncated
        index += 2
        if index >= len(lines) or not lines[index].startswith("@@"):
            raise _Truncated
    while index < len(lines) and lines[index].startswith("@@"):
        index = _read_hunk(lines, index)
    return index


def _read_hunk(lines: list[str], index: int) -> int:
    match = _HUNK.match(lines[index])
    if match is None:
        raise _Truncated
    old_left = int(match.group(2)) if match.group(2) is not None else 1
    new_left = int(match.group(4)) if match.group(4) is not None else 1
    index += 1
    while old_left > 0 or new_left > 0:
        if index >= len(lines):
            raise _Truncated
        line = lines[index]
        marker = line[:1]
        if marker == " " or line in ("\n", "\r\n"):
            old_left, new_left = old_left - 1, new_left - 1
        elif marker == "-":
            old_left -= 1
        elif marker == "+":
            new_left -= 1
        elif marker != "\\":
            raise _Truncated
        if not line.endswith("\n") and index == len(lines) - 1 and (old_left > 0 or new_left > 0):
            raise _Truncated
        index += 1
    if old_left < 0 or new_left < 0:
        raise _Truncated
    while index < len(lines) and lines[index].startswith("\\"):
        index += 1
    return index


def _read_binary(lines: list[str], index: int) -> int:
    """``GIT binary patch``: one or two ``literal N``/``delta N`` blocks of base85 lines, each ended by a blank."""
    blocks = 0
    while index < len(lines) and lines[index].startswith(("literal ", "delta ")):
        index += 1
        while True:
            if index >= len(lines):
                raise _Truncated
            line = lines[index].rstrip("\r\n")
            index += 1
            if line == "":
                break
            if not _BASE85_LINE.match(line) or not _base85_length_ok(line) or not lines[index - 1].endswith("\n"):
                raise _Truncated
        blocks += 1
    if blocks == 0:
        raise _Truncated
    return index


def _base85_length_ok(line: str) -> bool:
    first = line[0]
    count = ord(first) - ord("A") + 1 if first <= "Z" else ord(first) - ord("a") + 27
    return len(line) - 1 == (count + 3) // 4 * 5


def _diff_op(section: str) -> DiffOp:
    old_path: str | None = None
    new_path: str | None = None
    git_old, git_new = None, None
    created = deleted = binary = False
    modes: list[str] = []
    for line in section.splitlines():
        if line.startswith("@@") or line.startswith("GIT binary patch"):
            binary = binary or line.startswith("GIT binary patch")
            break
        if line.startswith("diff --git "):
            git_old, git_new = _split_git_header(line[len("diff --git ") :])
        elif line.startswith("--- "):
            old_path = _header_path(line[4:])
        elif line.startswith("+++ "):
            new_path = _header_path(line[4:])
        elif line.startswith(("rename from ", "copy from ")):
            old_path = unquote_git_path(line.split(" ", 2)[2])
        elif line.startswith(("rename to ", "copy to ")):
            new_path = unquote_git_path(line.split(" ", 2)[2])
        elif line.startswith("Binary files "):
            binary = True
        created = created or line.startswith("new file mode ")
        deleted = deleted or line.startswith("deleted file mode ")
        if line.startswith(("old mode ", "new mode ", "deleted file mode ", "new file mode ")):
            modes.append(line.split()[-1] if line.split() else "")
        elif line.startswith("index ") and len(line.split()) >= 3:
            modes.append(line.split()[2])
    old_path = old_path if old_path is not None else git_old
    new_path = new_path if new_path is not None else git_new
    if created or old_path == "/dev/null":
        old_path = None
    if deleted or new_path == "/dev/null":
        new_path = None
    return DiffOp(text=section, old_path=old_path, new_path=new_path, binary=binary, modes=tuple(modes))


def _header_path(value: str) -> str:
    value = value.rstrip("\r\n")
    if not value.startswith('"') and "\t" in value:
        value = value.split("\t", 1)[0]  # "--- a/x\t2024-01-01 ..." timestamps
    return _strip_prefix(unquote_git_path(value))


def _strip_prefix(path: str) -> str:
    if path == "/dev/null":
        return path
    return path[2:] if path.startswith(("a/", "b/")) else path


def _split_git_header(rest: str) -> tuple[str | None, str | None]:
    rest = rest.rstrip("\r\n")
    if rest.startswith('"'):
        end = _closing_quote(rest)
        first, second = rest[: end + 1], rest[end + 2 :]
        return _strip_prefix(unquote_git_path(first)), _strip_prefix(unquote_git_path(second))
    if ' "' in rest:
        first, second = rest.split(' "', 1)
        return _strip_prefix(first), _strip_prefix(unquote_git_path('"' + second))
    # Unquoted "a/X b/X": ambiguous with spaces, so only trust it when both halves agree.
    half = (len(rest) - 1) // 2
    first, second = rest[:half], rest[half + 1 :]
    if first[2:] == second[2:]:
        return _strip_prefix(first), _strip_prefix(second)
    if " b/" in rest:
        first, second = rest.split(" b/", 1)
        return _strip_prefix(first), second
    return None, None


def _closing_quote(text: str) -> int:
    index = 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
            continue
        if text[index] == '"':
            return index
        index += 1
    return len(text) - 1


_ESCAPES = {"n": b"\n", "t": b"\t", '"': b'"', "\\": b"\\", "a": b"\a", "b": b"\b", "f": b"\f", "r": b"\r", "v": b"\v"}


def unquote_git_path(value: str) -> str:
    """Undo git's C-style quoting (``"t\\303\\251st"`` -> ``tést``); unquoted values come back unchanged."""
    if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
        return value
    body, out, index = value[1:-1], bytearray(), 0
    while index < len(body):
        char = body[index]
        if char != "\\":
            out.extend(char.encode("utf-8"))
            index += 1
            continue
        following = body[index + 1 : index + 4]
        if re.match(r"[0-7]{3}", following):
            out.append(int(following, 8) & 0xFF)
            index += 4
        else:
            out.extend(_ESCAPES.get(body[index + 1 : index + 2], body[index + 1 : index + 2].encode()))
            index += 2
    return out.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------------------------------------------
# Search / replace


def apply_search_replace(content: str, search: str, replace: str, *, path: str) -> tuple[str, str | None]:
    """Replace the unique occurrence of ``search``; fall back to a whitespace-tolerant line match if unique.

    Returns ``(new_content, warning)``; the warning says when the tolerant match was used.
    Raises ``EditMatchError`` naming the file, the number of matches and the nearest candidate lines.
    """
    if not search:
        raise EditMatchError(path, 0, [])
    positions = _find_all(content, search)
    if len(positions) == 1:
        start = positions[0]
        return content[:start] + replace + content[start + len(search) :], None
    if len(positions) > 1:
        raise EditMatchError(
            path, len(positions), [(content.count("\n", 0, p) + 1, _line_at(content, p)) for p in positions[:5]]
        )
    tolerant = _tolerant_match(content, search, replace)
    if tolerant is not None:
        return tolerant, f"edit of {path}: used a whitespace-tolerant match"
    count = len(_tolerant_windows(content.splitlines(keepends=True), _significant_lines(search)))
    raise EditMatchError(path, count, _nearest_lines(content, search))


def _find_all(content: str, search: str) -> list[int]:
    positions, start = [], content.find(search)
    while start != -1 and len(positions) < 100:
        positions.append(start)
        start = content.find(search, start + 1)
    return positions


def _line_at(content: str, position: int) -> str:
    begin = content.rfind("\n", 0, position) + 1
    end = content.find("\n", position)
    return content[begin : end if end != -1 else len(content)]


def _significant_lines(search: str) -> list[str]:
    lines = search.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _tolerant_windows(file_lines: list[str], wanted: list[str]) -> list[int]:
    if not wanted:
        return []
    stripped_wanted = [line.strip() for line in wanted]
    stripped_file = [line.strip() for line in file_lines]
    size = len(wanted)
    return [i for i in range(len(file_lines) - size + 1) if stripped_file[i : i + size] == stripped_wanted]


def _tolerant_match(content: str, search: str, replace: str) -> str | None:
    file_lines = content.splitlines(keepends=True)
    wanted = _significant_lines(search)
    windows = _tolerant_windows(file_lines, wanted)
    if len(windows) != 1:
        return None
    start, size = windows[0], len(wanted)
    matched = file_lines[start : start + size]
    newline = "\r\n" if matched[0].endswith("\r\n") else "\n"
    file_indent = _indent(matched[0])
    search_indent = _indent(wanted[0])
    new_lines = []
    for line in replace.splitlines():
        if file_indent != search_indent and line.startswith(search_indent):
            line = file_indent + line[len(search_indent) :]
        new_lines.append(line + newline)
    if new_lines and not matched[-1].endswith(("\n", "\r")):
        new_lines[-1] = new_lines[-1].rstrip("\r\n")
    return "".join(file_lines[:start] + new_lines + file_lines[start + size :])


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _nearest_lines(content: str, search: str) -> list[tuple[int, str]]:
    wanted = _significant_lines(search)
    if not wanted:
        return []
    file_lines = content.splitlines()
    probe = wanted[0].strip()
    scored = []
    for number, line in enumerate(file_lines[:20_000], start=1):
        if line.strip():
            ratio = difflib.SequenceMatcher(None, probe, line.strip(), autojunk=False).quick_ratio()
            scored.append((ratio, number, line))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [(number, line) for ratio, number, line in scored[:3] if ratio > 0.3]
