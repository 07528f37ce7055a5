"""Governed apply: put untrusted edit operations into a worktree under every rule, all or nothing.

Public API:
    governed_apply(workspace, edits, *, policy=ApplyPolicy(), dry_run=False) -> ApplyResult
        ``edits``: a ParseResult, a list of operations (edits.WriteOp/EditOp/DeleteOp/RenameOp/DiffOp) or raw
        model text (parsed with edits.parse_edits).
    ApplyPolicy(scope_paths=None, deliverables=(), protected_paths=(), allow_test_edits=False,
                max_file_bytes=2_000_000, max_total_bytes=20_000_000, max_operations=2_000)
    ApplyResult(applied, dry_run, created, modified, deleted, renamed, diff, violations, warnings, ...)
        .touched (sorted created+modified+deleted), .ok (no violations), .to_dict() (JSON-ready)
    Violation(path, rule, reason, detail)     Rule: the stable rule names
    is_test_path(path) -> bool

Rules (DESIGN.md "Governed apply"), in order:
1. every path goes through ``paths.normalize_path`` (absolute, drive letters, ``..``, NUL, ``.git`` refused);
2. confinement: no existing component below the worktree may be a symlink (``paths.check_confined``); only a
   delete may remove a symlink itself; diffs may not create or change symlinks or submodules (modes 120000,
   160000);
3. protected paths (``DEFAULT_PROTECTED`` plus the policy's): an entry ending ``/`` is a directory prefix,
   otherwise an exact file; the same for scope, where deliverables count as in scope; ``scope_paths=None``
   means the whole worktree;
4. tests (``is_test_path``): changing, deleting or renaming an existing test file needs ``allow_test_edits``;
   creating a new test file does not (adding tests never weakens existing ones);
5. content: text operations may not contain NUL bytes; new lines that look like truncation markers
   (``# ... rest of code``) are refused; ``.py`` files written must compile unless they did not before;
   ``max_file_bytes`` per file and ``max_total_bytes`` overall.
Unified diffs: their paths are checked (both the headers we parse and the list ``git apply --numstat`` reports,
so a parser disagreement cannot smuggle a path), then ``git apply --check`` and ``git apply`` run in a private
staging directory holding copies of the pre-images, never in the worktree.

All or nothing: operations are played in memory over an overlay of the tree, everything is verified, and only
then is each file written to a temporary sibling and ``os.replace``-d into place. Every write is journaled; if
anything fails midway the journal is rolled back, so the tree is byte-identical to before. Files are never
opened for writing in place, so a hard link to a file outside the worktree can never be written through.
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .edits import (
    DeleteOp,
    DiffOp,
    EditMatchError,
    EditOp,
    EditParseError,
    Operation,
    ParseResult,
    RenameOp,
    WriteOp,
    apply_search_replace,
    parse_edits,
)
from .paths import PathRefused, check_confined, normalize_path


class Rule(StrEnum):
    EMPTY_PATH = "empty_path"
    NUL_BYTE = "nul_byte"
    CONTROL_CHARACTER = "control_character"
    PATH_TOO_LONG = "path_too_long"
    DRIVE_LETTER = "drive_letter"
    ABSOLUTE_PATH = "absolute_path"
    PARENT_TRAVERSAL = "parent_traversal"
    GIT_DIRECTORY = "git_directory"
    SYMLINK = "symlink"
    PARENT_NOT_DIRECTORY = "parent_not_directory"
    IS_DIRECTORY = "is_directory"
    NOT_REGULAR_FILE = "not_regular_file"
    PROTECTED = "protected_path"
    OUT_OF_SCOPE = "out_of_scope"
    TEST_FILE = "test_file_protected"
    MISSING_FILE = "missing_file"
    ALREADY_EXISTS = "already_exists"
    BINARY_FILE = "binary_file"
    EDIT_MATCH = "edit_match"
    NUL_CONTENT = "nul_in_content"
    INVALID_TEXT = "invalid_text"
    TRUNCATION_MARKER = "truncation_marker"
    PYTHON_SYNTAX = "python_syntax"
    FILE_TOO_LARGE = "file_too_large"
    TOTAL_TOO_LARGE = "total_too_large"
    TOO_MANY_OPERATIONS = "too_many_operations"
    SPECIAL_MODE = "special_file_mode"
    DIFF_PATHS = "diff_paths_mismatch"
    DIFF_DOES_NOT_APPLY = "diff_does_not_apply"
    MALFORMED = "malformed_operation"
    WRITE_FAILED = "write_failed"
    IO_ERROR = "io_error"


DEFAULT_PROTECTED: tuple[str, ...] = (".autopack/", ".env", ".gitmodules")
MAX_READ_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ApplyPolicy:
    """``scope_paths=None``: the whole worktree is writable; ``()``: only the deliverables are."""

    scope_paths: tuple[str, ...] | None = None
    deliverables: tuple[str, ...] = ()
    protected_paths: tuple[str, ...] = ()
    allow_test_edits: bool = False
    max_file_bytes: int = 2_000_000
    max_total_bytes: int = 20_000_000
    max_operations: int = 2_000
    use_default_protected: bool = True


@dataclass(frozen=True)
class Violation:
    path: str
    rule: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "rule": str(self.rule), "reason": self.reason, "detail": self.detail}


@dataclass
class ApplyResult:
    applied: bool
    dry_run: bool
    created: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    diff: str = ""
    violations: list[Violation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    operations: int = 0
    bytes_written: int = 0
    truncated: bool = False
    dropped_text: str = ""

    @property
    def touched(self) -> list[str]:
        return sorted({*self.created, *self.modified, *self.deleted})

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "ok": self.ok,
            "dry_run": self.dry_run,
            "touched": self.touched,
            "created": self.created,
            "modified": self.modified,
            "deleted": self.deleted,
            "renamed": [list(pair) for pair in self.renamed],
            "violations": [violation.to_dict() for violation in self.violations],
            "warnings": self.warnings,
            "operations": self.operations,
            "bytes_written": self.bytes_written,
            "truncated": self.truncated,
            "dropped_text": self.dropped_text,
            "diff": self.diff,
        }


# --------------------------------------------------------------------------------------------------------------
# Path classification


_TEST_DIRS = frozenset({"tests", "test", "__tests__", "spec", "specs", "testing"})
_TEST_FILE = re.compile(r"^(test_.*\.py|.*_test\.(py|go|rb)|conftest\.py|.*\.(test|spec)\.[cm]?[jt]sx?)$")


def is_test_path(path: str) -> bool:
    parts = path.split("/")
    return any(part in _TEST_DIRS for part in parts[:-1]) or bool(_TEST_FILE.match(parts[-1]))


def _matches(path: str, entries: Sequence[str]) -> bool:
    return any(path == entry or (entry.endswith("/") and path.startswith(entry)) for entry in entries)


def _normalize_entries(entries: Sequence[str], *, skip_git: bool = False) -> tuple[str, ...]:
    result = []
    for entry in entries:
        try:
            normalized = normalize_path(entry)
        except PathRefused as refused:
            if skip_git and refused.rule == "git_directory":
                continue  # ".git/" listed as protected: it is refused outright anyway
            raise
        result.append(normalized + "/" if entry.replace("\\", "/").endswith("/") else normalized)
    return tuple(result)


_COMMENT_START = re.compile(r"^\s*(?:#|//|/\*|\*|<!--|--|;|%|\{/\*|\.\.\.|…)")
_STRONG_MARKER = re.compile(
    r"\brest\s+of\s+(?:the\s+)?(?:code|file|implementation|function|class|module|content|methods?)\b"
    r"|\b(?:code|content|implementation|methods|functions)\s+(?:omitted|elided|truncated)\b"
    r"|\b(?:existing|previous|original|unchanged)\s+(?:code|implementation|content|methods|functions|logic)"
    r"\s*(?:here|unchanged|remains|omitted|goes\s+here|stays|as\s+before|\.\.\.|…)",
    re.IGNORECASE,
)
_ELLIPSIS_MARKER = re.compile(
    r"(?:\.\.\.|…).{0,40}\b(?:rest|remaining|existing|unchanged|previous|same|omitted)\b"
    r"|\b(?:rest|remaining|existing|unchanged|previous|omitted)\b.{0,40}(?:\.\.\.|…)",
    re.IGNORECASE,
)


def truncation_marker_lines(text: str) -> set[str]:
    """Comment lines that stand for code the model left out (``# ... rest of code``, ``// existing code here``)."""
    found = set()
    for line in text.splitlines():
        if len(line) < 200 and _COMMENT_START.match(line):
            if _STRONG_MARKER.search(line) or _ELLIPSIS_MARKER.search(line):
                found.add(line.strip())
    return found


# --------------------------------------------------------------------------------------------------------------
# Overlay


@dataclass(frozen=True)
class _FileState:
    data: bytes
    mode: int  # permission bits
    link: str | None = None  # a symlink's target (only ever deleted, never written)


class _Refusal(Exception):
    def __init__(self, path: str, rule: str, reason: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.violation = Violation(path, rule, reason, detail or {})


class _Plan:
    def __init__(self, root: Path, policy: ApplyPolicy) -> None:
        self.root = root
        self.policy = policy
        self.scope = None if policy.scope_paths is None else _normalize_entries(policy.scope_paths)
        self.deliverables = _normalize_entries(policy.deliverables)
        protected = (DEFAULT_PROTECTED if policy.use_default_protected else ()) + tuple(policy.protected_paths)
        self.protected = _normalize_entries(protected, skip_git=True)
        self.before: dict[str, _FileState | None] = {}
        self.after: dict[str, _FileState | None] = {}
        self.renamed: list[tuple[str, str]] = []
        self.violations: list[Violation] = []
        self.warnings: list[str] = []

    # Reading -----------------------------------------------------------------------------------------------
    def disk(self, path: str, *, allow_symlink: bool = False) -> _FileState | None:
        if path not in self.before:
            self.before[path] = _read_disk(self.root, path, allow_symlink=allow_symlink)
        state = self.before[path]
        if state is not None and state.link is not None and not allow_symlink:
            raise _Refusal(path, Rule.SYMLINK, f"{path} is a symlink")
        return state

    def current(self, path: str, *, allow_symlink: bool = False) -> _FileState | None:
        if path in self.after:
            return self.after[path]
        return self.disk(path, allow_symlink=allow_symlink)

    # Rules -------------------------------------------------------------------------------------------------
    def checked_path(self, raw: str) -> str:
        try:
            path = normalize_path(raw)
        except PathRefused as refused:
            raise _Refusal(raw, refused.rule, refused.reason) from None
        if _matches(path, self.protected):
            raise _Refusal(path, Rule.PROTECTED, f"{path} is a protected path")
        if self.scope is not None and not _matches(path, self.scope) and not _matches(path, self.deliverables):
            raise _Refusal(path, Rule.OUT_OF_SCOPE, f"{path} is outside the phase scope")
        return path

    def check_test_change(self, path: str, existed: bool) -> None:
        if (
            existed
            and not self.policy.allow_test_edits
            and is_test_path(path)
            and not _matches(path, self.deliverables)
        ):
            raise _Refusal(path, Rule.TEST_FILE, f"{path} is an existing test file and this phase may not change tests")


def _read_disk(root: Path, path: str, *, allow_symlink: bool) -> _FileState | None:
    try:
        check_confined(root, path, allow_final_symlink=True)
    except PathRefused as refused:
        raise _Refusal(path, refused.rule, refused.reason) from None
    full = root / path
    try:
        info = os.lstat(full)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise _Refusal(path, Rule.PARENT_NOT_DIRECTORY, f"a parent of {path} is a file") from None
    if stat.S_ISLNK(info.st_mode):
        if not allow_symlink:
            raise _Refusal(path, Rule.SYMLINK, f"{path} is a symlink")
        return _FileState(b"", 0o777, link=os.readlink(full))
    if stat.S_ISDIR(info.st_mode):
        raise _Refusal(path, Rule.IS_DIRECTORY, f"{path} is a directory")
    if not stat.S_ISREG(info.st_mode):
        raise _Refusal(path, Rule.NOT_REGULAR_FILE, f"{path} is not a regular file")
    if info.st_size > MAX_READ_BYTES:  # its bytes are kept in memory for the rollback journal
        raise _Refusal(path, Rule.FILE_TOO_LARGE, f"{path} is {info.st_size} bytes: too large to change safely")
    fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        return _FileState(handle.read(), stat.S_IMODE(info.st_mode))


# --------------------------------------------------------------------------------------------------------------
# Operations over the overlay


def _encode_text(path: str, text: str) -> bytes:
    if "\x00" in text:
        raise _Refusal(path, Rule.NUL_CONTENT, f"content for {path} contains NUL bytes (binary files need a diff)")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Refusal(path, Rule.INVALID_TEXT, f"content for {path} is not valid Unicode text") from None


def _op_write(plan: _Plan, op: WriteOp) -> None:
    path = plan.checked_path(op.path)
    existing = plan.current(path)
    plan.check_test_change(path, existing is not None)
    data = _encode_text(path, op.content)
    plan.after[path] = _FileState(data, existing.mode if existing else 0o644)


def _op_edit(plan: _Plan, op: EditOp) -> None:
    path = plan.checked_path(op.path)
    existing = plan.current(path)
    if existing is None:
        raise _Refusal(path, Rule.MISSING_FILE, f"cannot edit {path}: it does not exist")
    plan.check_test_change(path, True)
    try:
        text = existing.data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Refusal(path, Rule.BINARY_FILE, f"cannot edit {path}: it is not UTF-8 text") from None
    _encode_text(path, op.replace)
    try:
        new_text, warning = apply_search_replace(text, op.search, op.replace, path=path)
    except EditMatchError as error:
        detail = {"count": error.count, "candidates": [[number, line] for number, line in error.candidates]}
        raise _Refusal(path, Rule.EDIT_MATCH, str(error), detail) from None
    if warning:
        plan.warnings.append(warning)
    plan.after[path] = _FileState(new_text.encode("utf-8"), existing.mode)


def _op_delete(plan: _Plan, op: DeleteOp) -> None:
    path = plan.checked_path(op.path)
    existing = plan.current(path, allow_symlink=True)
    if existing is None:
        raise _Refusal(path, Rule.MISSING_FILE, f"cannot delete {path}: it does not exist")
    plan.check_test_change(path, True)
    plan.after[path] = None


def _op_rename(plan: _Plan, op: RenameOp) -> None:
    source = plan.checked_path(op.path)
    target = plan.checked_path(op.to)
    existing = plan.current(source)
    if existing is None:
        raise _Refusal(source, Rule.MISSING_FILE, f"cannot rename {source}: it does not exist")
    plan.check_test_change(source, True)
    if source == target:
        return
    if plan.current(target) is not None:
        raise _Refusal(target, Rule.ALREADY_EXISTS, f"cannot rename {source} to {target}: the target exists")
    plan.after[target] = existing
    plan.after[source] = None
    plan.renamed.append((source, target))


_HANDLERS = {WriteOp: _op_write, EditOp: _op_edit, DeleteOp: _op_delete, RenameOp: _op_rename}


# --------------------------------------------------------------------------------------------------------------
# Unified diffs


_GIT_ENV_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_CONFIG_PARAMETERS")


def _git_env(staging: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _GIT_ENV_DROP}
    # No repository discovery above the staging dir, and no user or system config (apply.whitespace=fix would
    # silently change content).
    env.update(GIT_CEILING_DIRECTORIES=str(staging.parent), GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    return env


def _strip_level(text: str) -> int:
    headers = [line[4:] for line in text.splitlines() if line.startswith(("--- ", "+++ "))]
    paths = [h.split("\t", 1)[0].strip('"') for h in headers if not h.startswith("/dev/null")]
    return 1 if all(path.startswith(("a/", "b/")) for path in paths) else 0


def _is_regular_file_mode(mode: str) -> bool:
    """Git reads modes as octal numbers ("0120000" is a symlink too): only regular files (0o100xxx) pass."""
    return bool(re.fullmatch(r"[0-7]{1,7}", mode)) and int(mode, 8) & 0o170000 == 0o100000


def _apply_diff_batch(plan: _Plan, batch: list[DiffOp]) -> None:
    declared: set[str] = set()
    for op in batch:
        if not all(_is_regular_file_mode(mode) for mode in op.modes):
            raise _Refusal(op.path, Rule.SPECIAL_MODE, f"{op.path}: diffs may only touch regular files ({op.modes})")
        for raw in (op.old_path, op.new_path):
            if raw is not None:
                declared.add(plan.checked_path(raw))
    text = "".join(op.text for op in batch)
    strip = _strip_level(text)
    staging = Path(tempfile.mkdtemp(prefix="autopack-apply-"))
    try:
        reported = _git_numstat(staging, text, strip)
        for path in sorted(reported - declared):
            plan.checked_path(path)  # raises with the precise rule when it is out of bounds
            raise _Refusal(path, Rule.DIFF_PATHS, f"git apply would touch {path}, which the diff headers do not name")
        touched = declared | reported
        for path in touched:
            state = plan.current(path)
            if state is not None:
                _stage_file(staging / path, state)
        _git_apply(staging, text, strip)
        _collect_staged(plan, staging, touched)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run_git_apply(staging: Path, text: str, args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", "apply", *args],
        cwd=staging,
        input=text.encode("utf-8", "surrogateescape"),
        capture_output=True,
        env=_git_env(staging),
        check=False,
    )


def _git_numstat(staging: Path, text: str, strip: int) -> set[str]:
    completed = _run_git_apply(staging, text, ["--numstat", "-z", f"-p{strip}"])
    if completed.returncode != 0:
        reason = completed.stderr.decode("utf-8", "replace").strip()[:2000]
        raise _Refusal("", Rule.DIFF_DOES_NOT_APPLY, f"git apply cannot read the diff: {reason}")
    paths: set[str] = set()
    fields = completed.stdout.split(b"\0")
    index = 0
    while index < len(fields):
        record = fields[index]
        index += 1
        if not record:
            continue
        columns = record.split(b"\t")
        names = [columns[2]] if len(columns) > 2 and columns[2] else []
        if not names:  # a rename: "added\tdeleted\t" then old and new as separate fields
            names = fields[index : index + 2]
            index += 2
        for name in names:
            raw = name.decode("utf-8", "surrogateescape")
            try:
                paths.add(normalize_path(raw))
            except PathRefused as refused:
                raise _Refusal(raw, refused.rule, refused.reason) from None
    return paths


def _stage_file(target: Path, state: _FileState) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(state.data)
    os.chmod(target, state.mode)


def _git_apply(staging: Path, text: str, strip: int) -> None:
    for args in (["--check"], []):
        completed = _run_git_apply(staging, text, [*args, f"-p{strip}", "--whitespace=nowarn"])
        if completed.returncode != 0:
            reason = completed.stderr.decode("utf-8", "replace").strip()[:2000]
            raise _Refusal("", Rule.DIFF_DOES_NOT_APPLY, f"git apply refused the diff: {reason}")


def _collect_staged(plan: _Plan, staging: Path, touched: set[str]) -> None:
    present = set()
    for directory, dirs, files in os.walk(staging):
        # os.walk lists a symlink to a directory among dirs: count it, so the regular-file check below sees it.
        linked_dirs = [name for name in dirs if os.path.islink(os.path.join(directory, name))]
        for name in files + linked_dirs:
            present.add(Path(directory, name).relative_to(staging).as_posix())
    unexpected = present - touched
    if unexpected:
        raise _Refusal(sorted(unexpected)[0], Rule.DIFF_PATHS, "git apply produced a file the diff does not name")
    for path in touched:
        full = staging / path
        if path not in present:
            if plan.current(path) is not None:
                plan.check_test_change(path, True)
                plan.after[path] = None
            continue
        info = os.lstat(full)
        if not stat.S_ISREG(info.st_mode):
            raise _Refusal(path, Rule.SPECIAL_MODE, f"{path} is not a regular file after the diff")
        previous = plan.current(path)
        data = full.read_bytes()
        if previous is not None and (previous.data != data or previous.mode != stat.S_IMODE(info.st_mode)):
            plan.check_test_change(path, True)
        plan.after[path] = _FileState(data, stat.S_IMODE(info.st_mode))


# --------------------------------------------------------------------------------------------------------------
# Verification


@dataclass
class _Changes:
    created: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def _changes(plan: _Plan) -> _Changes:
    changes = _Changes()
    for path in sorted(plan.after):
        before, after = plan.before.get(path), plan.after[path]
        if after is None and before is not None:
            changes.deleted.append(path)
        elif after is not None and before is None:
            changes.created.append(path)
        elif after is not None and before is not None and (after.data, after.mode) != (before.data, before.mode):
            changes.modified.append(path)
    return changes


def _verify(plan: _Plan, changes: _Changes) -> None:
    total = 0
    for path in changes.created + changes.modified:
        after = plan.after[path]
        assert after is not None
        total += len(after.data)
        try:
            _verify_file(plan, path, after, plan.before.get(path))
            _verify_parents(plan, path)
        except _Refusal as refusal:
            plan.violations.append(refusal.violation)
    if total > plan.policy.max_total_bytes:
        plan.violations.append(
            Violation(
                "", Rule.TOTAL_TOO_LARGE, f"{total} bytes written, over the limit of {plan.policy.max_total_bytes}"
            )
        )


def _verify_file(plan: _Plan, path: str, after: _FileState, before: _FileState | None) -> None:
    if len(after.data) > plan.policy.max_file_bytes:
        raise _Refusal(
            path, Rule.FILE_TOO_LARGE, f"{path} would be {len(after.data)} bytes (limit {plan.policy.max_file_bytes})"
        )
    try:
        new_text = after.data.decode("utf-8")
    except UnicodeDecodeError:
        return  # binary content: only diffs can write it, and markers or syntax do not apply
    markers = truncation_marker_lines(new_text)
    if markers and before is not None:
        markers -= truncation_marker_lines(before.data.decode("utf-8", "replace"))
    if markers:
        marker = sorted(markers)[0]
        raise _Refusal(path, Rule.TRUNCATION_MARKER, f"{path} contains a truncation marker: {marker!r}")
    if path.endswith((".py", ".pyi")):
        error = _compile_error(new_text, path)
        if error and (before is None or _compile_error(before.data.decode("utf-8", "replace"), path) is None):
            raise _Refusal(path, Rule.PYTHON_SYNTAX, f"{path} does not compile: {error}")


def _compile_error(source: str, path: str) -> str | None:
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as error:
        return f"line {error.lineno}: {error.msg}"
    except (ValueError, RecursionError, MemoryError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def _verify_parents(plan: _Plan, path: str) -> None:
    parts = path.split("/")
    for index in range(1, len(parts)):
        prefix = "/".join(parts[:index])
        if prefix in plan.after:
            if plan.after[prefix] is not None:
                raise _Refusal(path, Rule.PARENT_NOT_DIRECTORY, f"{prefix} would be a file and a directory")
            continue
        try:
            info = os.lstat(plan.root / prefix)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(info.st_mode):
            raise _Refusal(path, Rule.SYMLINK, f"'{prefix}' is a symlink")
        if not stat.S_ISDIR(info.st_mode):
            raise _Refusal(path, Rule.PARENT_NOT_DIRECTORY, f"'{prefix}' is not a directory")


# --------------------------------------------------------------------------------------------------------------
# Writing, with a journal to roll back


class _Journal:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.undo: list[tuple[str, str, _FileState | None]] = []

    def rollback(self) -> None:
        for action, path, state in reversed(self.undo):
            full = self.root / path
            if action == "made_dir":
                os.rmdir(full)
            elif action == "removed_dir":
                os.mkdir(full)
            elif state is None:
                os.unlink(full)
            else:
                if os.path.lexists(full):
                    os.unlink(full)
                _restore(full, state)


def _restore(full: Path, state: _FileState) -> None:
    if state.link is not None:
        os.symlink(state.link, full)
    else:
        _write_atomically(full, state)


def _write_atomically(full: Path, state: _FileState) -> None:
    temporary = full.parent / f".autopack-{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(state.data)
        os.chmod(temporary, state.mode)
        os.replace(temporary, full)
    except BaseException:
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise


def _make_parents(root: Path, path: str, journal: _Journal) -> None:
    parts = path.split("/")[:-1]
    for index in range(1, len(parts) + 1):
        prefix = "/".join(parts[:index])
        full = root / prefix
        try:
            info = os.lstat(full)
        except FileNotFoundError:
            os.mkdir(full)
            journal.undo.append(("made_dir", prefix, None))
            continue
        if not stat.S_ISDIR(info.st_mode):  # re-checked at write time: never follow a symlink that appeared
            raise OSError(f"{prefix} is not a real directory")


def _commit(plan: _Plan, changes: _Changes) -> int:
    journal = _Journal(plan.root)
    written = 0
    try:
        for path in changes.deleted:
            os.unlink(plan.root / path)
            journal.undo.append(("file", path, plan.before[path]))
        for path in changes.created + changes.modified:
            after = plan.after[path]
            assert after is not None
            _make_parents(plan.root, path, journal)
            _write_atomically(plan.root / path, after)
            journal.undo.append(("file", path, plan.before.get(path)))
            written += len(after.data)
        _remove_empty_parents(plan.root, changes.deleted, journal)
    except BaseException:
        journal.rollback()
        raise
    return written


def _remove_empty_parents(root: Path, deleted: list[str], journal: _Journal) -> None:
    candidates = {"/".join(path.split("/")[:index]) for path in deleted for index in range(1, path.count("/") + 1)}
    for prefix in sorted(candidates, key=lambda item: -item.count("/")):
        full = root / prefix
        if full.is_dir() and not full.is_symlink() and not any(os.scandir(full)):
            os.rmdir(full)
            journal.undo.append(("removed_dir", prefix, None))


# --------------------------------------------------------------------------------------------------------------
# Diff of what changed


def _render_diff(plan: _Plan, changes: _Changes) -> str:
    chunks = []
    for path in sorted(changes.created + changes.modified + changes.deleted):
        before, after = plan.before.get(path), plan.after.get(path)
        old = before.data if before else b""
        new = after.data if after else b""
        try:
            old_lines = old.decode("utf-8").splitlines(keepends=True)
            new_lines = new.decode("utf-8").splitlines(keepends=True)
        except UnicodeDecodeError:
            chunks.append(f"Binary files a/{path} and b/{path} differ\n")
            continue
        fromfile = f"a/{path}" if before else "/dev/null"
        tofile = f"b/{path}" if after else "/dev/null"
        for line in difflib.unified_diff(old_lines, new_lines, fromfile, tofile):
            chunks.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(chunks)


# --------------------------------------------------------------------------------------------------------------
# Entry point


def governed_apply(
    workspace: Path | str,
    edits: ParseResult | Sequence[Operation] | str,
    *,
    policy: ApplyPolicy | None = None,
    dry_run: bool = False,
) -> ApplyResult:
    policy = policy or ApplyPolicy()
    root = Path(workspace).resolve()
    result = ApplyResult(applied=False, dry_run=dry_run)
    operations = _operations(edits, result)
    if operations is None:
        return result
    result.operations = len(operations)
    if not root.is_dir():
        result.violations.append(Violation(str(workspace), Rule.IO_ERROR, f"workspace {workspace} is not a directory"))
        return result
    try:
        plan = _Plan(root, policy)
    except PathRefused as refused:
        result.violations.append(Violation(refused.path, refused.rule, f"bad policy entry: {refused.reason}"))
        return result
    if len(operations) > policy.max_operations:
        result.violations.append(
            Violation("", Rule.TOO_MANY_OPERATIONS, f"{len(operations)} operations (limit {policy.max_operations})")
        )
        return result
    _play(plan, operations)
    changes = _changes(plan)
    if not plan.violations:
        _verify(plan, changes)
    _fill_result(result, plan, changes, operations)
    if result.violations or dry_run or not result.touched:
        return result
    try:
        result.bytes_written = _commit(plan, changes)
    except OSError as error:
        result.violations.append(Violation("", Rule.WRITE_FAILED, f"writing failed and was rolled back: {error}"))
        return result
    result.applied = True
    return result


def _operations(edits: ParseResult | Sequence[Operation] | str, result: ApplyResult) -> list[Operation] | None:
    if isinstance(edits, str):
        try:
            edits = parse_edits(edits)
        except EditParseError as error:
            result.violations.append(Violation("", Rule.MALFORMED, str(error)))
            return None
    if isinstance(edits, ParseResult):
        result.warnings.extend(edits.warnings)
        result.truncated = edits.truncated
        result.dropped_text = edits.dropped_text
        return list(edits.operations)
    return list(edits)


def _play(plan: _Plan, operations: list[Operation]) -> None:
    index = 0
    while index < len(operations):
        op = operations[index]
        try:
            if isinstance(op, DiffOp):
                batch = [op]
                while index + 1 < len(operations) and isinstance(operations[index + 1], DiffOp):
                    index += 1
                    batch.append(operations[index])  # type: ignore[arg-type]
                _apply_diff_batch(plan, batch)
            else:
                _HANDLERS[type(op)](plan, op)
        except _Refusal as refusal:
            plan.violations.append(refusal.violation)
        except OSError as error:  # e.g. a diff naming both "a" and "a/b": staging cannot hold both
            plan.violations.append(
                Violation(getattr(op, "path", ""), Rule.IO_ERROR, f"cannot stage the change: {error}")
            )
        index += 1


def _fill_result(result: ApplyResult, plan: _Plan, changes: _Changes, operations: list[Operation]) -> None:
    result.violations.extend(plan.violations)
    result.warnings.extend(plan.warnings)
    result.created, result.modified, result.deleted = changes.created, changes.modified, changes.deleted
    result.renamed = list(plan.renamed)
    if result.violations:
        return
    only_diffs = operations and all(isinstance(op, DiffOp) for op in operations)
    result.diff = (
        "".join(op.text for op in operations if isinstance(op, DiffOp)) if only_diffs else _render_diff(plan, changes)
    )
    if not result.touched:
        result.warnings.append("the operations change nothing")
