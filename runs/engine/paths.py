"""Path rules for governed apply: turn an untrusted, model-written path into a safe relative POSIX path.

Public API:
    normalize_path(raw: str) -> str            # raises PathRefused(path, rule, reason)
    PathRefused                                 # typed error carrying the violated rule name
    is_git_component(name: str) -> bool         # ".git" in any spelling a filesystem could alias to it
    check_confined(root: Path, relative: str) -> None   # raises PathRefused if a symlink is on the way

Normalization (DESIGN.md "Governed apply"): ``\\`` becomes ``/``, ``./`` segments are stripped and ``//`` is
collapsed. Refused outright: empty paths, NUL or other control characters, absolute paths (``/x``, ``//server``),
drive letters (``C:``, ``c:/``), any ``..`` segment (even one that would stay inside: it is never needed and
it makes scope checks ambiguous), and any ``.git`` component (also ``.GIT``, ``.git.``, ``.git ``,
``git~1``, ``.g\\u200cit`` and ``.git::$DATA``, which Windows and macOS filesystems alias to ``.git``).

Confinement: no existing component of the path below the worktree root may be a symlink. This is stricter than
"the parent resolves outside the worktree": a symlink that stays inside would still let a write land on a path
other than the one that was checked against scope and protected paths.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

MAX_PATH_LENGTH = 1024
MAX_COMPONENT_LENGTH = 255
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class PathRefused(ValueError):
    """A path broke a rule. ``rule`` is a stable machine name (see ``apply.Rule``)."""

    def __init__(self, path: str, rule: str, reason: str) -> None:
        super().__init__(f"{path!r}: {reason}")
        self.path = path
        self.rule = rule
        self.reason = reason


# Code points HFS+ ignores in names (".g\u200cit" is ".git" there), as git's own verify_path does.
_IGNORABLE = re.compile("[\u200b-\u200f\u202a-\u202e\u206a-\u206f\ufeff]")
_SHORT_NAME = re.compile(r"^git~\d+$")


def is_git_component(name: str) -> bool:
    folded = _IGNORABLE.sub("", name).lower().split(":", 1)[0].rstrip(". ")
    return folded == ".git" or bool(_SHORT_NAME.match(folded))


def normalize_path(raw: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise PathRefused(str(raw), "empty_path", "the path is empty")
    if "\x00" in raw:
        raise PathRefused(raw, "nul_byte", "the path contains a NUL byte")
    if _CONTROL.search(raw):
        raise PathRefused(raw, "control_character", "the path contains a control character")
    if len(raw) > MAX_PATH_LENGTH:
        raise PathRefused(raw, "path_too_long", f"the path is longer than {MAX_PATH_LENGTH} characters")
    unified = raw.replace("\\", "/")
    if _DRIVE.match(unified):
        raise PathRefused(raw, "drive_letter", "Windows drive paths are not allowed")
    if unified.startswith("/"):
        raise PathRefused(raw, "absolute_path", "absolute paths are not allowed")
    if unified.startswith("~"):
        raise PathRefused(raw, "absolute_path", "home-relative paths are not allowed")
    parts = [part for part in unified.split("/") if part not in ("", ".")]
    if not parts:
        raise PathRefused(raw, "empty_path", "the path names no file")
    for part in parts:
        _check_component(raw, part)
    return "/".join(parts)


def _check_component(raw: str, part: str) -> None:
    if part.strip(" ") == "..":
        raise PathRefused(raw, "parent_traversal", "'..' segments are not allowed")
    if is_git_component(part):
        raise PathRefused(raw, "git_directory", "paths under .git are not allowed")
    if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_LENGTH:
        raise PathRefused(raw, "path_too_long", f"a path component is longer than {MAX_COMPONENT_LENGTH} bytes")
    if part.strip(". ") == "" and part != ".":
        # "...", ". ." and friends alias to "." or ".." on Windows.
        raise PathRefused(raw, "parent_traversal", "dot-only path components are not allowed")


def check_confined(root: Path, relative: str, *, allow_final_symlink: bool = False) -> None:
    """Refuse if any existing component of ``root/relative`` is a symlink (or not a directory where one is needed).

    ``root`` must already be resolved. Components that do not exist yet are fine: they will be created as
    real directories. ``allow_final_symlink`` lets a delete remove a symlink itself (never what it points to).
    """
    current = root
    parts = relative.split("/")
    for index, part in enumerate(parts):
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return
        except NotADirectoryError as exc:
            raise PathRefused(relative, "parent_not_directory", "a parent of the path is a file") from exc
        is_last = index == len(parts) - 1
        if stat.S_ISLNK(info.st_mode) and not (is_last and allow_final_symlink):
            raise PathRefused(relative, "symlink", f"'{'/'.join(parts[: index + 1])}' is a symlink")
        if not is_last and not stat.S_ISDIR(info.st_mode):
            raise PathRefused(relative, "parent_not_directory", f"'{'/'.join(parts[: index + 1])}' is not a directory")
