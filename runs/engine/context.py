"""The Builder's view of the repository, under a token budget, laid out for prompt caching.

Order of importance: the files in scope (they are what the Builder edits), read-only context, a compact
repository map (paths and top-level Python symbols), then retrieved memory, build-history insights and the
run's goal. Files larger than the per-file limit are cut with a visible marker; whatever is cut or left out
is counted as "context tokens avoided" for telemetry.

The stable part (read-only context, repository map, memory, insights, goal: the same on every attempt of the
phase, as long as the commit is the same) goes in the cached prefix; the volatile part (the current content
of the scope files) comes after it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runs.engine.budget import approx_tokens
from runs.engine.spec import GOAL_ANCHOR_BYTES, PhaseSpec, truncate_utf8

CUT_MARKER = "\n[... autopack: {cut} characters of {path} omitted from context ...]\n"
REPO_MAP_SHARE = 0.15  # of the context budget
_SYMBOL = re.compile(r"^(?:async\s+def|def|class)\s+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)
_BINARY_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".ico", ".pdf", ".zip", ".gz", ".whl", ".so", ".pyc", ".lock")
_symbol_cache: dict[str, str] = {}
_SYMBOL_CACHE_LIMIT = 200_000


@dataclass
class ContextFile:
    path: str
    role: str  # "scope", "read_only"
    chars: int
    sha256: str
    cut_chars: int = 0


@dataclass
class ContextBundle:
    stable: str
    volatile: str
    files: list[ContextFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    tokens: int = 0
    tokens_avoided: int = 0
    repo_map_files: int = 0

    def report(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "tokens_avoided": self.tokens_avoided,
            "files": [asdict(item) for item in self.files],
            "skipped": self.skipped[:50],
            "repo_map_files": self.repo_map_files,
            "stable_sha256": hashlib.sha256(self.stable.encode()).hexdigest()[:16],
        }


def list_files_with_blobs(root: Path) -> dict[str, str]:
    """Tracked and untracked-but-not-ignored files (one git call); tracked ones map to their blob id."""
    try:
        output = subprocess.run(
            ["git", "ls-files", "-z", "-s", "--cached", "--others", "--exclude-standard"],
            cwd=root,
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        found = {}
        for directory, names, files in os.walk(root):
            names[:] = [name for name in names if not name.startswith(".")]
            found.update({str(Path(directory, name).relative_to(root)): "" for name in files})
        return dict(sorted(found.items()))
    entries: dict[str, str] = {}
    for record in output.decode("utf-8", "replace").split("\0"):
        if not record:
            continue
        meta, tab, name = record.partition("\t")
        entries[name if tab else meta] = meta.split(" ")[1] if tab else ""
    return dict(sorted(entries.items()))


def list_files(root: Path) -> list[str]:
    return list(list_files_with_blobs(root))


def expand_scope(entries: list[str], all_files: list[str]) -> list[str]:
    """Scope entries to existing files: "dir/" is a prefix, anything else an exact path."""
    chosen: list[str] = []
    for entry in entries:
        if entry.endswith("/"):
            chosen += [name for name in all_files if name.startswith(entry)]
        elif entry in all_files:
            chosen.append(entry)
    return list(dict.fromkeys(chosen))


def repo_map(root: Path, files: dict[str, str], *, max_chars: int) -> tuple[str, int]:
    """``path: symbol, symbol`` lines. Symbols are cached per git blob id, so a new commit re-reads only the
    files it changed (the worktree is at a commit when the context is built, so the index blob is the content)."""
    lines: list[str] = []
    size = 0
    for name, blob in files.items():
        if name.endswith(_BINARY_SUFFIXES):
            continue
        line = name + _symbols_suffix(root / name, blob) if name.endswith(".py") else name
        if size + len(line) + 1 > max_chars:
            lines.append(f"[... {len(files) - len(lines)} more paths omitted ...]")
            break
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines), len(lines)


def _symbols_suffix(path: Path, blob: str) -> str:
    if blob and blob in _symbol_cache:
        return _symbol_cache[blob]
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(200_000)
    except OSError:
        return ""
    names = _SYMBOL.findall(text)
    suffix = f": {', '.join(names[:12])}" if names else ""
    if blob:
        if len(_symbol_cache) > _SYMBOL_CACHE_LIMIT:
            _symbol_cache.clear()
        _symbol_cache[blob] = suffix
    return suffix


def _read_file(root: Path, path: str, limit: int) -> tuple[str, int, str]:
    """Content (cut to ``limit`` with a marker), characters cut, and the full content's hash."""
    try:
        raw = (root / path).read_bytes()
    except OSError:
        return "", 0, ""
    digest = hashlib.sha256(raw).hexdigest()[:16]
    text = raw.decode("utf-8", errors="replace")
    if len(text) <= limit:
        return text, 0, digest
    cut = len(text) - limit
    return text[:limit] + CUT_MARKER.format(cut=cut, path=path), cut, digest


def _section(title: str, body: str) -> str:
    return f"## {title}\n{body.strip()}\n" if body.strip() else ""


def build_context(spec: PhaseSpec, root: Path) -> ContextBundle:
    budgets = spec.budgets
    token_budget = budgets.context_tokens
    blobs = list_files_with_blobs(root)
    all_files = list(blobs)
    bundle = ContextBundle(stable="", volatile="")
    scope_files = expand_scope(spec.scope_paths + [d for d in spec.deliverables if not d.endswith("/")], all_files)
    read_only = [name for name in expand_scope(spec.read_only_context, all_files) if name not in scope_files]
    used = 0
    volatile_parts: list[str] = []
    stable_parts: list[str] = []
    for role, names, parts in (("scope", scope_files, volatile_parts), ("read_only", read_only, stable_parts)):
        for name in names:
            if len(bundle.files) >= budgets.context_max_files:
                bundle.skipped.append(name)
                bundle.tokens_avoided += _file_tokens(root, name)
                continue
            text, cut, digest = _read_file(root, name, budgets.context_max_chars_per_file)
            tokens = approx_tokens(text)
            if used + tokens > token_budget * (1 - REPO_MAP_SHARE):
                bundle.skipped.append(name)
                bundle.tokens_avoided += tokens + cut // 4
                continue
            used += tokens
            bundle.tokens_avoided += cut // 4
            bundle.files.append(ContextFile(name, role, len(text), digest, cut))
            parts.append(f"### {name}\n```\n{text}\n```\n")
    map_chars = int(min(token_budget - used, token_budget * REPO_MAP_SHARE) * 4)
    map_text, bundle.repo_map_files = repo_map(root, blobs, max_chars=max(map_chars, 0))
    stable = [
        _section("Repository map (paths and top-level Python symbols)", map_text),
        _section("Read-only context (do not modify)", "".join(stable_parts)),
        _section("Relevant memory from earlier work", spec.memory),
        _section("Build-history insights", spec.insights),
        _section("Research report (from this run's research phases)", spec.research),
        _section("Run goal", truncate_utf8((spec.goal_anchor or spec.goal).strip(), GOAL_ANCHOR_BYTES)),
    ]
    bundle.stable = "\n".join(part for part in stable if part)
    bundle.volatile = _section("Files in scope (current content)", "".join(volatile_parts)) or (
        "## Files in scope\n(none of the scope files exist yet)\n"
    )
    bundle.tokens = approx_tokens(bundle.stable) + approx_tokens(bundle.volatile)
    return bundle


def _file_tokens(root: Path, name: str) -> int:
    try:
        return (root / name).stat().st_size // 4
    except OSError:
        return 0
