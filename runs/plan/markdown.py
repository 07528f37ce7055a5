"""Turn a plan a person wrote as markdown notes into a plan document, deterministically.

Headings become tiers, list items (or, in heading-only notes, the headings themselves) become phases, file
paths mentioned become deliverables (or read-only context when the sentence says "see", "read", ...),
keywords choose category and complexity, and the project's test command becomes each phase's ci. The
result carries a confidence score in [0, 1] and one warning per guess worth checking. It never raises on
odd notes: it raises ``NotesUnusable`` only when no phase can be made at all.

Confidence: 0.6 × the mean phase score + 0.2 × structure (1 with headings, 0.7 without) + 0.2 × ci
(1 when a test command was found, 0 otherwise), minus 0.05 per item folded into another phase. A phase
scores the mean of: paths (1 when the item itself names files, 0.7 when only its sub-items do), category
(1 from keywords or files, 0.5 for the default) and complexity (1 explicit, 0.8 keywords, 0.6 counted).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from runs.plan.paths import path_problem

MAX_NAME = 200
MAX_ID = 48

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d+[.)])\s+(.*)$")
_CHECKBOX = re.compile(r"^\[[ xX]\]\s+")
_FENCE = re.compile(r"^\s*(```|~~~)")
_PHASE_HEADING = re.compile(r"^(?:phase|step|task)\b\s*[\w.]*\s*[:.)\-–—]?\s*", re.IGNORECASE)
_NUMBER_PREFIX = re.compile(r"^\d+(?:\.\d+)*[.)]?\s+")
_TIER_PREFIX = re.compile(r"^(?:tier|part|stage|milestone|sprint|week)\s*[\w.]*\s*[:.)\-–—]\s*", re.IGNORECASE)
_GOAL = re.compile(r"^\s*\**goal\**\s*:\s*\**\s*(.+)$", re.IGNORECASE)
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_TOKEN = re.compile(r"[\w./\\-]+")
_ACCEPTANCE = re.compile(r"^(?:acceptance(?: criteria)?|done when|ac|verify|success)\s*:\s*(.*)$", re.IGNORECASE)
_EXPLICIT_COMPLEXITY = re.compile(
    r"(?:\b(?:complexity|effort|size)\s*[:=]?\s*|\[)(low|medium|high|small|large|easy|hard)\b\]?", re.IGNORECASE
)

EXTENSIONS = frozenset(
    "py pyi js mjs cjs ts tsx jsx md rst txt toml yaml yml json cfg ini html htm css scss sql go rs java kt rb sh "
    "c h cpp hpp cs vue svelte xml csv lock env tf proto graphql jinja j2 conf".split()
)
_CONFIG_SUFFIXES = (".toml", ".ini", ".cfg", ".yaml", ".yml", ".env", ".conf")
BARE_FILES = frozenset({"Makefile", "Dockerfile", "Procfile", "README", "LICENSE", "Justfile", "Gemfile"})
CONTEXT_WORDS = re.compile(
    r"\b(see|read|refer|reference|context|based on|following|follow|existing|like in|as in|mirrors?)\b", re.I
)

CATEGORY_KEYWORDS: dict[str, frozenset[str]] = {
    "bugfix": frozenset("fix fixes bug bugs crash crashes regression broken".split()),
    "refactor": frozenset(
        "refactor refactoring rename restructure cleanup extract simplify reorganise reorganize".split()
    ),
    "tests": frozenset("test tests testing pytest coverage unittest".split()),
    "docs": frozenset("doc docs documentation readme document guide tutorial changelog".split()),
    "database": frozenset("migration migrations schema database sql postgres sqlite".split()),
    "config": frozenset(
        "config configuration settings ci docker deploy deployment environment makefile pipeline bump upgrade dependency dependencies".split()
    ),
    "frontend": frozenset("ui frontend css html template templates page pages react component dashboard form".split()),
    "backend": frozenset(
        "api endpoint endpoints service services server backend view views handler worker queue middleware".split()
    ),
    "research": frozenset("research investigate spike evaluate explore prototype".split()),
}
HIGH_WORDS = frozenset(
    "complex rewrite migrate concurrency concurrent distributed security authentication performance redesign "
    "architecture large".split()
)
LOW_WORDS = frozenset("typo trivial small simple minor tweak".split())
_TRAILING_WORDS = frozenset("in to at into for under with on and of from the a an".split())
COMPLEXITY_ALIASES = {"small": "low", "easy": "low", "large": "high", "hard": "high"}


class NotesUnusable(ValueError):
    """The notes yield no phase (typically: no item names a file)."""


@dataclass
class Item:
    """A list item (or a heading section) with its nested lines."""

    text: str
    children: list[str] = field(default_factory=list)


@dataclass
class Section:
    level: int
    title: str
    prose: list[str] = field(default_factory=list)
    items: list[Item] = field(default_factory=list)


@dataclass
class NotesResult:
    plan: dict[str, Any]
    confidence: float
    warnings: list[str]


# --- reading the markdown ------------------------------------------------------------------------------


def read_sections(text: str) -> list[Section]:
    """Split notes into sections by heading; section 0 (level 0) holds anything before the first heading."""
    sections = [Section(level=0, title="")]
    in_fence = False
    underline = False
    after_blank = False
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence or not line.strip() or underline:
            after_blank = after_blank or not line.strip()
            underline = False
            continue
        heading = _heading(line, lines[number + 1] if number + 1 < len(lines) else "")
        if heading:
            sections.append(Section(level=heading[0], title=_clean_inline(heading[1])))
            underline = not _HEADING.match(line)  # a setext heading: skip its ===/--- line
        else:
            _add_line(sections[-1], line, after_blank=after_blank)
        after_blank = False
    return sections


def _heading(line: str, next_line: str) -> tuple[int, str] | None:
    match = _HEADING.match(line)
    if match:
        return len(match.group(1)), match.group(2)
    if line.strip() and not _ITEM.match(line) and re.fullmatch(r"\s*(={3,}|-{3,})\s*", next_line):
        return (1 if next_line.strip().startswith("=") else 2), line.strip()
    return None


def _add_line(section: Section, line: str, *, after_blank: bool) -> None:
    item = _ITEM.match(line)
    indent = len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())
    if item and indent < 2:
        section.items.append(Item(text=_CHECKBOX.sub("", item.group(2).strip())))
    elif section.items and (item or indent >= 2 or not after_blank):
        # nested items, indented text, and unindented text right below an item (a lazy continuation)
        text = item.group(2) if item else line
        section.items[-1].children.append(_CHECKBOX.sub("", text.strip()))
    else:
        section.prose.append(line.strip())


def _clean_inline(text: str) -> str:
    return text.replace("**", "").strip()  # not "__": it is part of names like __init__.py


# --- paths, category, complexity -----------------------------------------------------------------------


def find_paths(text: str) -> list[str]:
    """File and directory paths mentioned in ``text``, in order of first mention."""
    found: list[str] = []
    for token in _TOKEN.findall(_URL.sub(" ", text.replace("`", " "))):
        path = token.replace("\\", "/").rstrip(".,;:)")
        while path.startswith("./"):
            path = path[2:]
        if _looks_like_path(path) and path_problem(path) is None and path not in found:
            found.append(path)
    return found


def _looks_like_path(token: str) -> bool:
    name = token.rstrip("/").rsplit("/", 1)[-1]
    if not name or re.fullmatch(r"[\d.]+", name):
        return False
    if name in BARE_FILES:
        return True
    has_extension = "." in name.strip(".") and name.rsplit(".", 1)[-1].lower() in EXTENSIONS
    if "/" in token.rstrip("/"):
        return has_extension or token.endswith("/")
    return has_extension or (token.endswith("/") and len(name) > 1)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def guess_category(text: str, deliverables: list[str]) -> tuple[str, bool]:
    """(category, found evidence). Ties go to the earlier category in ``CATEGORY_KEYWORDS``."""
    scores = {name: 0 for name in CATEGORY_KEYWORDS}
    for path in find_paths(text):  # "settings.py" is a file, not a hint that the phase is configuration
        text = text.replace(path, " ")
    for word in _words(text):
        for name, keywords in CATEGORY_KEYWORDS.items():
            scores[name] += word in keywords
    # Files outweigh words: a phase that writes code "with tests" is not a tests phase.
    for name, matches in (("tests", _is_test_path), ("docs", _is_doc_path)):
        if deliverables and all(matches(path) for path in deliverables):
            scores[name] += 2
        elif deliverables:
            scores[name] = 0
    if deliverables and all(_is_config_path(path) for path in deliverables):
        scores["config"] += 2
    best = max(scores.values())
    if best == 0:
        return "feature", False
    return next(name for name, score in scores.items() if score == best), True


def _is_test_path(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return path.startswith(("tests/", "test/")) or "/tests/" in path or name.startswith("test_")


def _is_config_path(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return path.startswith(".github/") or name in BARE_FILES - {"README", "LICENSE"} or name.endswith(_CONFIG_SUFFIXES)


def _is_doc_path(path: str) -> bool:
    return path.endswith((".md", ".rst")) or path.startswith("docs/")


def guess_complexity(text: str, deliverables: list[str]) -> tuple[str, float]:
    """(complexity, evidence weight): explicit marker 1.0, keywords 0.8, deliverable count 0.6."""
    explicit = _EXPLICIT_COMPLEXITY.search(text)
    if explicit:
        value = explicit.group(1).lower()
        return COMPLEXITY_ALIASES.get(value, value), 1.0
    words = set(_words(text))
    high, low = bool(words & HIGH_WORDS), bool(words & LOW_WORDS)
    if high != low:
        return ("high" if high else "low"), 0.8
    if len(deliverables) >= 5:
        return "high", 0.6
    if len(deliverables) <= 1:
        return "low", 0.6
    return "medium", 0.6


# --- building the plan ---------------------------------------------------------------------------------


@dataclass
class _Draft:
    """A phase being built, before ids are assigned."""

    tier: int
    name: str
    description: str
    deliverables: list[str]
    context: list[str]
    criteria: list[str]
    own_paths: bool


def notes_to_plan(
    text: str, *, default_name: str, test_command: str | None = None, source_name: str = "notes"
) -> NotesResult:
    sections = read_sections(text)
    name, goal, body = _title_and_goal(sections, default_name)
    warnings: list[str] = []
    tiers, units = _structure(body, name)
    drafts, folded = _drafts(units, warnings)
    if not drafts:
        raise NotesUnusable(f"{source_name}: no item names a file path, so no phase can be made")
    used_tiers = sorted({draft.tier for draft in drafts})
    for index, (title, _) in enumerate(tiers):
        if index not in used_tiers:
            warnings.append(f"section {title!r} has no item naming a file; it was left out")
    tier_ids = {tier: f"t{position + 1}" for position, tier in enumerate(used_tiers)}
    phases, scores = _phases(drafts, tier_ids, test_command)
    if test_command is None:
        warnings.append("no test command found for the project; phases have no ci (set Project.default_test_command)")
    budgets = {"max_phases": max(25, len(phases))}
    plan = {
        "version": 1,
        "name": name[:MAX_NAME],
        "goal": goal,
        "budgets": budgets,
        "tiers": [
            {"id": tier_ids[t], "name": tiers[t][0][:MAX_NAME], "description": tiers[t][1][:20_000]} for t in used_tiers
        ],
        "phases": phases,
    }
    structure = 1.0 if any(section.level for section in body) else 0.7
    confidence = 0.6 * sum(scores) / len(scores) + 0.2 * structure + 0.2 * (test_command is not None)
    confidence = max(0.0, min(1.0, round(confidence - 0.05 * folded, 2)))
    return NotesResult(plan=plan, confidence=confidence, warnings=warnings)


def _title_and_goal(sections: list[Section], default_name: str) -> tuple[str, str, list[Section]]:
    """The single level-1 heading names the run; prose before the next heading (or a "Goal:" line) is the goal."""
    preamble, rest = sections[0], sections[1:]
    name = default_name
    prose = list(preamble.prose)
    if rest and rest[0].level == 1 and sum(section.level == 1 for section in rest) == 1:
        title, rest = rest[0], rest[1:]
        name = title.title or default_name
        prose += title.prose
        preamble = Section(level=0, title="", items=preamble.items + title.items)
    goal_lines = [match.group(1).strip(" *") for line in prose if (match := _GOAL.match(line))]
    goal = " ".join(goal_lines) if goal_lines else " ".join(prose)
    body = ([preamble] if preamble.items else []) + rest
    return name, goal[:20_000], body


def _structure(body: list[Section], run_name: str) -> tuple[list[tuple[str, str]], list[tuple[int, Item]]]:
    """Tiers as (title, description), and (tier index, unit) pairs where each unit becomes a phase (or is folded)."""
    levels = sorted({section.level for section in body if section.level})
    tiers: list[tuple[str, str]] = []
    units: list[tuple[int, Item]] = []
    headings_are_phases = len(levels) == 1 and all(
        _PHASE_HEADING.match(section.title) or not section.items for section in body if section.level
    )
    for section in body:
        is_tier = section.level == 0 or (len(levels) > 1 and section.level == levels[0])
        if section.level == 0 or (not headings_are_phases and (is_tier or len(levels) == 1)):
            # Prose under a tier heading describes the tier, unless the section is a phase of its own
            # (one heading level, no items: "## Add the parser" followed by a paragraph).
            prose_is_phase = len(levels) <= 1 and not section.items
            describes = section.level and not prose_is_phase  # the preamble's prose is the run's goal
            tiers.append((_tier_title(section.title) or run_name, " ".join(section.prose) if describes else ""))
            if section.items or prose_is_phase:
                units += _section_units(section, len(tiers) - 1)
            continue
        if not tiers:
            tiers.append((run_name, ""))
        units.append((len(tiers) - 1, _section_as_item(section)))
    return tiers, units


def _tier_title(title: str) -> str:
    return _TIER_PREFIX.sub("", title).strip() or title


def _section_units(section: Section, tier: int) -> list[tuple[int, Item]]:
    if section.items:
        return [(tier, item) for item in section.items]
    if section.prose:
        return [(tier, _section_as_item(section))]
    return []


def _section_as_item(section: Section) -> Item:
    children = section.prose + [line for item in section.items for line in [item.text, *item.children]]
    return Item(text=section.title, children=children)


def _drafts(units: list[tuple[int, Item]], warnings: list[str]) -> tuple[list[_Draft], int]:
    drafts: list[_Draft] = []
    folded = 0
    for tier, item in units:
        draft = _draft(tier, item)
        if draft.deliverables:
            drafts.append(draft)
        elif drafts and drafts[-1].tier == tier:
            drafts[-1].description += f"\n- {draft.name}"
            drafts[-1].criteria += draft.criteria
            folded += 1
            warnings.append(
                f"item {draft.name!r} names no file; folded into phase {drafts[-1].name!r} "
                "(give it files to make it a phase of its own)"
            )
        else:
            warnings.append(f"item {draft.name!r} names no file and has no earlier phase to join; left out")
            folded += 1
    return drafts, folded


def _draft(tier: int, item: Item) -> _Draft:
    name_text = _PHASE_HEADING.sub("", _NUMBER_PREFIX.sub("", item.text)) or item.text
    criteria: list[str] = []
    lines: list[str] = []
    for line in item.children:
        match = _ACCEPTANCE.match(line)
        if match:
            if match.group(1).strip():
                criteria.append(match.group(1).strip())
        else:
            lines.append(line)
    deliverables, context = _paths_by_role([item.text, *lines])
    own = bool(find_paths(item.text))
    return _Draft(
        tier=tier,
        name=_phase_name(name_text),
        description="\n".join([_clean_inline(item.text), *lines]).strip(),
        deliverables=deliverables,
        context=[path for path in context if path not in deliverables],
        criteria=criteria,
        own_paths=own,
    )


def _paths_by_role(lines: Iterable[str]) -> tuple[list[str], list[str]]:
    deliverables: list[str] = []
    context: list[str] = []
    for line in lines:
        # A parenthesis is a clause of its own: "edit a.py (see b.py)" makes only b.py context.
        for sentence in re.split(r"(?<=[.;,!?])\s+|\s*[()]\s*", line):
            target = context if CONTEXT_WORDS.search(sentence) else deliverables
            target.extend(path for path in find_paths(sentence) if path not in target)
    return deliverables, context


def _phase_name(text: str) -> str:
    """The item's text up to its first path list or sentence end, without markup."""
    plain = _clean_inline(text.replace("`", ""))
    plain = re.sub(r"^\w+:\s+", "", plain)  # a one-word label ("docs: ...") is not the name
    plain = re.split(r"\s+[(\[]|:\s|[.;,]\s|\s[-–—]\s", plain, maxsplit=1)[0].strip(" .:")
    words = plain.split()
    if words and all(find_paths(word) for word in words):  # "README.md: a short section" is more than a path
        plain = re.split(r"\s+[(\[]", _clean_inline(text.replace("`", "")), maxsplit=1)[0].strip(" .")
        return (plain or "Unnamed phase")[:MAX_NAME]
    first_path = next((i for i, word in enumerate(words) if find_paths(word)), None)
    if first_path is not None and first_path >= 2:
        words = words[:first_path]
        while words and words[-1].lower() in _TRAILING_WORDS:
            words.pop()
        plain = " ".join(words)
    return (plain or "Unnamed phase")[:MAX_NAME]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _phases(
    drafts: list[_Draft], tier_ids: dict[int, str], test_command: str | None
) -> tuple[list[dict[str, Any]], list[float]]:
    phases: list[dict[str, Any]] = []
    scores: list[float] = []
    for number, draft in enumerate(drafts, start=1):
        text = f"{draft.name}\n{draft.description}"
        category, category_found = guess_category(text, draft.deliverables)
        complexity, complexity_weight = guess_complexity(text, draft.deliverables)
        scope: dict[str, Any] = {
            "paths": list(draft.deliverables),
            "read_only_context": draft.context,
            "deliverables": draft.deliverables,
            "acceptance_criteria": draft.criteria,
            "allow_test_edits": any(_is_test_path(path) for path in draft.deliverables),
            "allow_noop": False,
        }
        if test_command:
            scope["ci"] = {"command": test_command, "timeout_seconds": 600}
        phases.append(
            {
                "id": f"p{number}-{_slug(draft.name)}"[:MAX_ID].rstrip("-"),
                "tier": tier_ids[draft.tier],
                "name": draft.name,
                "description": draft.description[:20_000],
                "category": category,
                "complexity": complexity,
                "scope": scope,
            }
        )
        path_score = 1.0 if draft.own_paths else 0.7
        scores.append((path_score + (1.0 if category_found else 0.5) + complexity_weight) / 3)
    return phases, scores
