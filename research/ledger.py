"""Build ledger parsing and formatting. Framework-free: no Django imports.

Three styles are read, detected per file:

* ``heading`` (the fixture's): ``### <ID>[ <label>][:] <title> (<YYYY-MM-DD>)`` headings, each followed by
  bold-labelled sections (``**Status**: ...``, ``**Files Modified**:`` and a bullet list, ...).
* ``table``: an INDEX table ``| Timestamp | BUILD-ID | Phase | Summary | Files Changed |`` plus
  ``### BUILD-NNN | date | category | title`` headings with bold-labelled sections. A row without a
  heading is still an entry; a heading adds its details to the row of the same id.
* ``daylog`` (``BUILD_LOG.md``): ``## YYYY-MM-DD`` day sections; each ``### `` sub-heading in a day is an
  entry (its id is the first ``ABC-123`` token, else ``LOG-<date>-<n>``); a day without sub-headings is one.

Text is repaired with ftfy (mojibake such as ``âœ…`` becomes ``✅``) in the parsed fields only: the raw
markdown of each section is kept exactly as read, so text ftfy cannot repair is never lost. A section that
cannot be parsed is reported with its line number and the others still parse.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date

import ftfy

STATUS_WORDS: tuple[tuple[str, str], ...] = (
    ("IN_PROGRESS", "in_progress"),
    ("IN PROGRESS", "in_progress"),
    ("PRODUCTION-READY", "complete"),
    ("COMPLETE", "complete"),
    ("DONE", "complete"),
    ("BLOCKED", "blocked"),
    ("FAILED", "failed"),
    ("PROPOSED", "proposed"),
    ("PLANNED", "planned"),
)
ID_PATTERN = r"[A-Z][A-Z0-9_]*(?:-[A-Z0-9]+)+(?:\.[0-9]+)?"
HEADING_ENTRY = re.compile(rf"^###\s+(?P<id>{ID_PATTERN})(?P<rest>.*?)\s*\((?P<date>\d{{4}}-\d{{2}}-\d{{2}})\)\s*$")
TABLE_HEADING = re.compile(
    r"^###\s+(?P<id>[^|]+?)\s*\|\s*(?P<date>[^|]+?)\s*\|\s*(?P<cat>[^|]*?)\s*\|\s*(?P<title>.+)$"
)
DAY_HEADING = re.compile(r"^##\s+(?P<date>\d{4}-\d{2}-\d{2})\b(?P<rest>.*)$")
LABEL_LINE = re.compile(r"^\*\*(?P<label>[^*\n]+?)(?::\*\*|\*\*:)\s*(?P<value>.*)$")
ID_TOKEN = re.compile(rf"\b{ID_PATTERN}\b")
COMMIT_SHA = re.compile(r"(?<![0-9a-fA-F])[0-9a-f]{7,40}(?![0-9a-fA-F])")
BACKTICK_PATH = re.compile(r"`([^`\s]+)`")
LINK_PATH = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
FILE_LABELS = ("files modified", "files changed", "files created")


@dataclass
class LedgerEntry:
    build_id: str
    title: str
    date: date | None
    status: str = "unknown"
    status_text: str = ""
    category: str = ""
    commits: list[str] = field(default_factory=list)
    summary: str = ""
    changes: str = ""
    files_modified: list[str] = field(default_factory=list)
    test_results: str = ""
    impact: str = ""
    sections: dict[str, str] = field(default_factory=dict)
    raw_markdown: str = ""
    line_number: int = 0
    style: str = "heading"

    @property
    def content_hash(self) -> str:
        """Hash of the raw section: re-importing the same text is recognised as unchanged."""
        return hashlib.sha256(self.raw_markdown.strip().encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LedgerProblem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ParsedLedger:
    style: str
    entries: list[LedgerEntry]
    problems: list[LedgerProblem]


def decode_ledger(data: bytes) -> str:
    """UTF-8 (with or without BOM), else Windows-1252, else Latin-1: every byte survives as a character."""
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def repair(text: str) -> str:
    """Repair mojibake with ftfy; text it cannot repair is returned as it was (the raw copy is kept anyway)."""
    return ftfy.fix_text(text, normalization="NFC").strip()


def normalise_status(text: str) -> str:
    upper = text.upper()
    found = [(upper.find(word), status) for word, status in STATUS_WORDS if word in upper]
    return min(found)[1] if found else "unknown"


def detect_style(lines: list[str]) -> str:
    for line in lines:
        cells = [cell.strip().upper() for cell in line.strip().strip("|").split("|")]
        if "BUILD-ID" in cells and "TIMESTAMP" in cells:
            return "table"
    if any(DAY_HEADING.match(line) for line in lines):
        return "daylog"
    return "heading"


def parse_ledger(text: str) -> ParsedLedger:
    """Parse a ledger in any of the three styles; entries keep file order and repeated ids."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    style = detect_style(lines)
    parser = {"table": _parse_table, "daylog": _parse_daylog}.get(style, _parse_headings)
    entries, problems = parser(lines)
    return ParsedLedger(style=style, entries=entries, problems=problems)


# --- blocks -------------------------------------------------------------------------------------


@dataclass
class _Block:
    heading: str
    line_number: int  # 1-based line of the heading
    body: list[str]


def _heading_level(line: str) -> int:
    match = re.match(r"^(#{1,6})\s", line)
    return len(match.group(1)) if match else 0


def _blocks(lines: list[str], *, level: int, start_when=None) -> list[_Block]:
    """Split at headings of exactly ``level`` (outside code fences); a heading above that level ends a block."""
    blocks: list[_Block] = []
    current: _Block | None = None
    in_fence = False
    for number, line in enumerate(lines, start=1):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        heading = 0 if in_fence else _heading_level(line)
        if heading == level and (start_when is None or start_when(line)):
            current = _Block(line, number, [])
            blocks.append(current)
        elif heading and heading <= level:
            current = None
        elif current is not None:
            current.body.append(line)
    return blocks


def _trimmed(body: list[str]) -> list[str]:
    """The body without the blank lines and ``---`` separators that close a section."""
    body = list(body)
    while body and body[-1].strip() in ("", "---", "***"):
        body.pop()
    return body


def _raw(block: _Block) -> str:
    return "\n".join([block.heading, *_trimmed(block.body)])


def _sections(body: list[str]) -> dict[str, str]:
    """Bold-labelled sections in order; a repeated label keeps its first value under its plain name."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_fence = False
    for line in body:
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        match = None if in_fence else LABEL_LINE.match(line)
        if match:
            label = match.group("label").strip()
            key = label if label not in sections else f"{label} ({sum(k.startswith(label) for k in sections) + 1})"
            current = sections.setdefault(key, [])
            if match.group("value").strip():
                current.append(match.group("value"))
        elif current is not None:
            current.append(line)
    return {label: repair("\n".join(value)) for label, value in sections.items()}


def _section(sections: dict[str, str], *names: str) -> str:
    lowered = {label.lower(): value for label, value in sections.items()}
    for name in names:
        if name in lowered:
            return lowered[name]
    return ""


def _files(sections: dict[str, str]) -> list[str]:
    files: list[str] = []
    for label, value in sections.items():
        if not label.lower().startswith(FILE_LABELS):
            continue
        for line in value.split("\n"):
            stripped = line.strip()
            if not stripped.startswith(("-", "*")):
                continue
            link = LINK_PATH.search(stripped)
            tick = BACKTICK_PATH.search(stripped)
            path = tick.group(1) if tick else (link.group(2).split("#")[0] if link else "")
            if path and path not in files:
                files.append(path)
    return files


def _commits(sections: dict[str, str]) -> list[str]:
    commits: list[str] = []
    for label, value in sections.items():
        if label.lower().startswith("commit"):
            for sha in COMMIT_SHA.findall(value):
                if sha not in commits:
                    commits.append(sha)
    return commits


def _fill(entry: LedgerEntry, body: list[str]) -> LedgerEntry:
    sections = _sections(_trimmed(body))
    entry.sections = sections
    entry.status_text = _section(sections, "status").split("\n")[0]
    entry.status = normalise_status(entry.status_text)
    entry.category = entry.category or _section(sections, "category")
    entry.summary = _section(sections, "summary")
    entry.changes = _section(sections, "changes", "implementation details", "solution")
    entry.test_results = _section(sections, "test results", "tests", "test coverage", "validation results")
    entry.impact = _section(sections, "impact", "production impact")
    entry.files_modified = _files(sections)
    entry.commits = _commits(sections)
    return entry


def _parse_date(text: str) -> date | None:
    match = re.search(r"\d{4}-\d{2}-\d{2}", text)
    if not match:
        return None
    try:
        return date.fromisoformat(match.group(0))
    except ValueError:
        return None


# --- heading style ------------------------------------------------------------------------------


def _parse_headings(lines: list[str]) -> tuple[list[LedgerEntry], list[LedgerProblem]]:
    entries: list[LedgerEntry] = []
    problems: list[LedgerProblem] = []
    for block in _blocks(lines, level=3):
        match = HEADING_ENTRY.match(block.heading)
        parsed_date = _parse_date(match.group("date")) if match else None
        if match is None or parsed_date is None:
            problems.append(
                LedgerProblem(block.line_number, f"not a '### <ID>: <title> (<date>)' heading: {block.heading[:120]!r}")
            )
            continue
        title = repair(match.group("rest").strip().lstrip(":").strip())
        entry = LedgerEntry(
            build_id=match.group("id"),
            title=title or match.group("id"),
            date=parsed_date,
            raw_markdown=_raw(block),
            line_number=block.line_number,
            style="heading",
        )
        entries.append(_fill(entry, block.body))
    return entries, problems


# --- table style --------------------------------------------------------------------------------


def _table_rows(lines: list[str]) -> tuple[list[tuple[int, dict[str, str], str]], list[LedgerProblem]]:
    rows: list[tuple[int, dict[str, str], str]] = []
    problems: list[LedgerProblem] = []
    header: list[str] | None = None
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped.startswith("|"):
            header = None if header and stripped else header
            continue
        cells = [cell.strip() for cell in stripped.strip("|").split("|")]
        if header is None:
            if "BUILD-ID" in [cell.upper() for cell in cells]:
                header = [cell.lower() for cell in cells]
            continue
        if all(set(cell) <= set("-: ") for cell in cells):
            continue
        if len(cells) != len(header):
            problems.append(LedgerProblem(number, f"index row has {len(cells)} cells, expected {len(header)}"))
            continue
        row = dict(zip(header, cells, strict=True))
        if not re.fullmatch(ID_PATTERN, row.get("build-id", "")):
            problems.append(LedgerProblem(number, f"index row has no build id: {stripped[:120]!r}"))
            continue
        rows.append((number, row, line))
    return rows, problems


def _parse_table(lines: list[str]) -> tuple[list[LedgerEntry], list[LedgerProblem]]:
    rows, problems = _table_rows(lines)
    entries: list[LedgerEntry] = []
    by_id: dict[str, LedgerEntry] = {}
    for number, row, line in rows:
        entry = LedgerEntry(
            build_id=row["build-id"],
            title=repair(row.get("summary", "")) or row["build-id"],
            date=_parse_date(row.get("timestamp", "")),
            category=repair(row.get("phase", "")),
            summary=repair(row.get("summary", "")),
            raw_markdown=line,
            line_number=number,
            style="table",
        )
        entry.sections = {"Files Changed": repair(row.get("files changed", ""))}
        entries.append(entry)
        by_id.setdefault(entry.build_id, entry)
    for block in _blocks(lines, level=3):
        match = TABLE_HEADING.match(block.heading)
        if match is None or not re.fullmatch(ID_PATTERN, match.group("id")) or not _parse_date(match.group("date")):
            problems.append(
                LedgerProblem(
                    block.line_number,
                    f"not a '### BUILD-NNN | date | category | title' heading: {block.heading[:120]!r}",
                )
            )
            continue
        entry = by_id.get(match.group("id"))
        if entry is None:
            entry = LedgerEntry(
                build_id=match.group("id"), title="", date=None, line_number=block.line_number, style="table"
            )
            entries.append(entry)
            by_id[entry.build_id] = entry
        index_row = entry.raw_markdown if entry.raw_markdown.startswith("|") else ""
        entry.title = repair(match.group("title"))
        entry.date = _parse_date(match.group("date"))
        entry.category = repair(match.group("cat")) or entry.category
        entry.raw_markdown = "\n".join(part for part in (index_row, _raw(block)) if part)
        entry.line_number = block.line_number
        summary = entry.summary
        _fill(entry, block.body)
        entry.summary = entry.summary or summary
    return entries, problems


# --- day-section log ----------------------------------------------------------------------------


def _parse_daylog(lines: list[str]) -> tuple[list[LedgerEntry], list[LedgerProblem]]:
    entries: list[LedgerEntry] = []
    problems: list[LedgerProblem] = []
    for day in _blocks(lines, level=2):
        match = DAY_HEADING.match(day.heading)
        day_date = _parse_date(match.group("date")) if match else None
        if match is None:
            continue  # "## Notes" and the like are not days
        if day_date is None:
            problems.append(LedgerProblem(day.line_number, f"day heading has an impossible date: {day.heading!r}"))
            continue
        offset = day.line_number
        subsections = _blocks(day.body, level=3)
        if not subsections:
            block = _Block(day.heading, day.line_number, day.body)
            entries.append(
                _day_entry(block, day_date, f"LOG-{day_date.isoformat()}", repair(match.group("rest").strip(" -:")))
            )
            continue
        for position, sub in enumerate(subsections, start=1):
            sub.line_number += offset
            heading_text = sub.heading.lstrip("#").strip()
            token = ID_TOKEN.search(heading_text)
            build_id = token.group(0) if token else f"LOG-{day_date.isoformat()}-{position}"
            title = heading_text[token.end() :].strip(" :-|") if token else heading_text
            entries.append(_day_entry(sub, day_date, build_id, repair(title) or build_id))
    return entries, problems


def _day_entry(block: _Block, day_date: date, build_id: str, title: str) -> LedgerEntry:
    entry = LedgerEntry(
        build_id=build_id,
        title=title or f"Build log {day_date.isoformat()}",
        date=day_date,
        raw_markdown=_raw(block),
        line_number=block.line_number,
        style="daylog",
    )
    _fill(entry, block.body)
    if not entry.summary:
        entry.summary = repair("\n".join(line for line in block.body if line.strip() and not LABEL_LINE.match(line)))
    return entry


# --- writing ------------------------------------------------------------------------------------

LEDGER_HEADER = "# Build History\n\nChronological index of all completed builds.\n\n---\n\n## Chronological Index\n"
INDEX_HEADING = "## Chronological Index"


def format_entry(entry: LedgerEntry) -> str:
    """One entry in the fixture's style (heading, bold-labelled sections); ``parse_ledger`` reads it back."""
    day = entry.date.isoformat() if entry.date else date.today().isoformat()
    lines = [f"### {entry.build_id}: {entry.title} ({day})", ""]
    if entry.status_text:
        lines.append(f"**Status**: {entry.status_text}")
    if entry.commits:
        lines.append(f"**Commit**: {', '.join(entry.commits)}")
    if entry.category:
        lines.append(f"**Category**: {entry.category}")
    if entry.summary:
        lines += ["", f"**Summary**: {entry.summary}"]
    if entry.changes:
        lines += ["", "**Changes**:", entry.changes]
    if entry.files_modified:
        lines += ["", "**Files Modified**:", *[f"- `{path}`" for path in entry.files_modified]]
    if entry.test_results:
        lines += ["", "**Test Results**:", entry.test_results]
    if entry.impact:
        lines += ["", "**Impact**: " + entry.impact]
    return "\n".join(lines).rstrip() + "\n"


def insert_entry(ledger_text: str, entry_markdown: str) -> str:
    """Put a new entry at the top of the chronological index (newest first, as the fixture does)."""
    block = entry_markdown.rstrip() + "\n\n---\n"
    if not ledger_text.strip():
        return LEDGER_HEADER + "\n" + block
    lines = ledger_text.split("\n")
    for number, line in enumerate(lines):
        if line.strip() == INDEX_HEADING:
            before = "\n".join(lines[: number + 1])
            after = "\n".join(lines[number + 1 :]).lstrip("\n")
            return f"{before}\n\n{block}\n{after}" if after else f"{before}\n\n{block}"
    return ledger_text.rstrip("\n") + "\n\n---\n\n" + block


def render_ledger(sections: list[str]) -> str:
    """A whole ledger from raw entry sections, in the given order."""
    body = "\n\n---\n\n".join(section.rstrip() for section in sections)
    return LEDGER_HEADER + ("\n" + body + "\n\n---\n" if body else "")
