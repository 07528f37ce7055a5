"""Helpers shared by the engine tests: exact snapshots of directory trees."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def snapshot(root: Path, *, skip_git: bool = True) -> dict[str, tuple]:
    """Every entry under ``root`` (dirs, files with bytes and mode, symlinks with target), without following links."""
    entries: dict[str, tuple] = {}
    for directory, dirs, files in os.walk(root, followlinks=False):
        if skip_git and ".git" in dirs and Path(directory) == root:
            dirs.remove(".git")
        for name in dirs + files:
            full = Path(directory, name)
            relative = full.relative_to(root).as_posix()
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                entries[relative] = ("link", os.readlink(full))
            elif stat.S_ISDIR(info.st_mode):
                entries[relative] = ("dir", stat.S_IMODE(info.st_mode))
            elif stat.S_ISREG(info.st_mode):
                entries[relative] = ("file", full.read_bytes(), stat.S_IMODE(info.st_mode))
            else:  # a FIFO or socket: never open it (reading a FIFO blocks)
                entries[relative] = ("special", stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode))
    return entries


def tree_hash(root: Path) -> str:
    digest = hashlib.sha256()
    for path, entry in sorted(snapshot(root, skip_git=False).items()):
        digest.update(repr((path, entry)).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


@contextmanager
def scratch_dir(prefix: str = "autopack-test-") -> Iterator[Path]:
    """A temporary directory on tmpfs when there is one: thousands of tiny trees are ~20x cheaper there."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
