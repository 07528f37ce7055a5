"""Property-based confinement of governed apply (Hypothesis).

Generated hostile paths, symlinks, renames, edit documents and diffs never change anything outside the
worktree (a canary sibling directory, reached by several symlinks and a hard link, is hashed before and after)
and never leave a partial apply: either the tree is byte-identical to before, or every change in it is one
the result reports. One example costs a copy of a tiny template tree plus one apply (a few milliseconds;
diffs also spawn ``git apply``). The max_examples below add up to 2,100 per run.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import event, given, settings
from hypothesis import strategies as st

from runs.engine import apply as apply_module
from runs.engine.apply import ApplyPolicy, ApplyResult, governed_apply
from runs.engine.edits import DeleteOp, EditOp, RenameOp, WriteOp, parse_edits
from runs.engine.paths import PathRefused, normalize_path
from tests.engine.helpers import snapshot, tree_hash

# ------------------------------------------------------------------------------------------------------------
# The world: a worktree with traps, beside a canary directory


# tmpfs when there is one: creating and removing thousands of tiny trees on a journaled disk costs ~20 ms each.
_BASE = Path(tempfile.mkdtemp(prefix="autopack-prop-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
atexit.register(shutil.rmtree, _BASE, True)
_COUNTER = iter(range(10**9))


def build_world(base: Path) -> tuple[Path, Path]:
    """``base/worktree`` (with .git, symlinks out and in, a hard link to the canary) beside ``base/outside``."""
    outside, worktree = base / "outside", base / "worktree"
    os.makedirs(outside / "nested")
    (outside / "canary.txt").write_text("canary\n")
    (outside / "nested" / "deep.py").write_text("SECRET = 1\n")
    os.makedirs(worktree / "src")
    os.mkdir(worktree / "tests")
    os.makedirs(worktree / ".git" / "hooks")
    (worktree / ".git" / "config").write_text("[core]\n\tbare = false\n")
    (worktree / "src" / "app.py").write_text("def main():\n    return 1\n")
    (worktree / "src" / "data.txt").write_text("alpha\nbeta\ngamma\n")
    (worktree / "tests" / "test_app.py").write_text("def test_main():\n    assert True\n")
    os.symlink("../outside", worktree / "link_dir")
    os.symlink("../outside/canary.txt", worktree / "link_file")
    os.symlink(str(outside), worktree / "abs_link")
    os.symlink("../outside/not_there.txt", worktree / "dangling")
    os.symlink("src", worktree / "inner")
    os.link(outside / "canary.txt", worktree / "src" / "hardlink.txt")
    return worktree, outside


@contextmanager
def fresh_world() -> Iterator[tuple[Path, Path]]:
    base = _BASE / f"example-{next(_COUNTER)}"
    try:
        yield build_world(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def check_invariants(worktree: Path, outside: Path, run) -> ApplyResult:
    outside_before = tree_hash(outside)
    before = snapshot(worktree, skip_git=False)

    result = run()
    event("applied" if result.applied else f"refused: {sorted({str(v.rule) for v in result.violations})[:2]}")

    assert tree_hash(outside) == outside_before, "something outside the worktree changed"
    after = snapshot(worktree, skip_git=False)
    if not result.applied:
        assert after == before, f"partial apply: {result.violations}"
        return result
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    touched = set(result.touched)
    for path in changed:
        if path in touched:
            continue
        kind = (after.get(path) or before.get(path))[0]
        assert kind == "dir" and any(t.startswith(path + "/") for t in touched), f"unreported change: {path}"
    for path in touched:
        assert not path.startswith(".git/") and path != ".git"
        entry = after.get(path)
        assert entry is None or entry[0] == "file", f"{path} is not a regular file: {entry}"
    return result


# ------------------------------------------------------------------------------------------------------------
# Strategies

REALISTIC_PATHS = [
    "src/app.py",
    "src/app.py",
    "src/data.txt",
    "src/data.txt",
    "src/new.py",
    "src/pkg/new.py",
    "pkg/mod.py",
    "new.py",
    "tests/test_app.py",
    "tests/test_new.py",
    "src/hardlink.txt",
    "README.md",
    "link_dir/new.py",
    "link_dir/canary.txt",
    "link_file",
    "dangling",
    "abs_link/nested/deep.py",
    "inner/app.py",
    "inner/new.py",
]
BENIGN_PARTS = [
    "src",
    "tests",
    "inner",
    "link_dir",
    "link_file",
    "dangling",
    "app.py",
    "data.txt",
    "new.py",
    "hardlink.txt",
    "pkg",
]
HOSTILE_PARTS = [
    "..",
    ".",
    "",
    "...",
    ".git",
    ".GIT",
    ".git.",
    "git~1",
    ".git::$DATA",
    "link_dir",
    "link_file",
    "abs_link",
    "dangling",
    "inner",
    "src",
    "tests",
    "outside",
    "nested",
    "canary.txt",
    "hardlink.txt",
    "app.py",
    "data.txt",
    "C:",
    "c:",
    "~",
    "a\x00b",
    "new.py",
    "x",
    "..\\..",
    " ..",
    ".. ",
]
part = st.one_of(st.sampled_from(HOSTILE_PARTS), st.text(alphabet="ab./\\:~\x00 ", min_size=1, max_size=4))
separator = st.sampled_from(["/", "\\", "//", "/./"])


@st.composite
def plausible_path(draw) -> str:
    """Mostly valid paths, sometimes through one of the worktree's symlinks: so that many documents do apply."""
    if draw(st.integers(0, 3)):
        return draw(st.sampled_from(REALISTIC_PATHS))
    return "/".join(draw(st.lists(st.sampled_from(BENIGN_PARTS), min_size=1, max_size=3)))


@st.composite
def hostile_path(draw) -> str:
    if draw(st.booleans()):
        return draw(plausible_path())
    parts = draw(st.lists(part, min_size=1, max_size=4))
    sep = draw(separator)
    prefix = draw(st.sampled_from(["", "", "", "/", "\\\\", "./", "~/", "C:\\", "{outside}/"]))
    return prefix + sep.join(parts)


def resolve(path: str, outside: Path) -> str:
    return path.replace("{outside}", str(outside))


CONTENTS = [
    "x = 1\n",
    "def broken(:\n",
    "# ... rest of code\n",
    "plain text\n",
    "nul\x00byte",
    "def main():\n    return 2\n",
    "",
]
content = st.one_of(st.sampled_from(CONTENTS), st.text(max_size=20))
safe_content = st.sampled_from(["x = 1\n", "def main():\n    return 2\n", "plain text\n", "alpha\n"])
search = st.sampled_from(["return 1", "alpha\n", "canary", "SECRET", "nothing here", "", "a"])


@st.composite
def operation(draw, paths=None, contents=content):
    paths = hostile_path() if paths is None else paths
    kind = draw(st.sampled_from(["write", "write", "edit", "delete", "rename"]))
    path = draw(paths)
    if kind == "write":
        return {"op": "write", "path": path, "content": draw(contents)}
    if kind == "edit":
        return {"op": "edit", "path": path, "search": draw(search), "replace": draw(contents)}
    if kind == "delete":
        return {"op": "delete", "path": path}
    return {"op": "rename", "path": path, "to": draw(paths)}


# Half the documents use only plausible paths (and so often apply); the other half mix in hostile ones.
documents = st.one_of(
    st.lists(operation(plausible_path(), safe_content), min_size=1, max_size=2),
    st.lists(operation(), min_size=1, max_size=5),
)


def to_op(data: dict, outside: Path):
    path = resolve(data["path"], outside)
    if data["op"] == "write":
        return WriteOp(path, data["content"])
    if data["op"] == "edit":
        return EditOp(path, data["search"], data["replace"])
    if data["op"] == "delete":
        return DeleteOp(path)
    return RenameOp(path, resolve(data["to"], outside))


policies = st.sampled_from(
    [
        ApplyPolicy(),
        ApplyPolicy(),
        ApplyPolicy(allow_test_edits=True),
        ApplyPolicy(scope_paths=("src/", "inner/", "link_dir/")),
        ApplyPolicy(scope_paths=("src/app.py",), deliverables=("new.py",), protected_paths=("src/data.txt",)),
    ]
)


# ------------------------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=800)
@given(operations=documents, policy=policies, fail_at=st.none() | st.integers(1, 4))
def test_hostile_operations_never_escape_and_never_half_apply(operations, policy, fail_at):
    with fresh_world() as (worktree, outside):
        ops = [to_op(data, outside) for data in operations]
        with failing_writes(fail_at):
            check_invariants(worktree, outside, lambda: governed_apply(worktree, ops, policy=policy))


@settings(max_examples=500)
@given(
    operations=documents,
    wrapper=st.sampled_from(["ndjson", "files", "fenced"]),
    cut=st.none() | st.integers(0, 400),
)
def test_hostile_edit_documents_never_escape_and_never_half_apply(operations, wrapper, cut):
    with fresh_world() as (worktree, outside):
        for data in operations:
            data["path"] = resolve(data["path"], outside)
        if wrapper == "files":
            document = json.dumps({"summary": "s", "files": operations})
        else:
            document = "\n".join(json.dumps(data) for data in operations)
            document = f"Sure:\n```json\n{document}\n```\n" if wrapper == "fenced" else document
        document = document if cut is None else document[:cut]
        check_invariants(worktree, outside, lambda: governed_apply(worktree, document))


@st.composite
def hostile_diff(draw) -> str:
    sections = []
    for _ in range(draw(st.integers(1, 3))):
        old, new = draw(hostile_path()), draw(hostile_path())
        style = draw(st.sampled_from(["modify", "create", "rename", "symlink", "mismatch"]))
        if style == "create":
            sections.append(
                f"diff --git a/{new} b/{new}\nnew file mode 100644\n--- /dev/null\n+++ b/{new}\n@@ -0,0 +1 @@\n+pwned\n"
            )
        elif style == "rename":
            sections.append(f"diff --git a/{old} b/{new}\nsimilarity index 100%\nrename from {old}\nrename to {new}\n")
        elif style == "symlink":
            sections.append(
                f"diff --git a/{new} b/{new}\nnew file mode 120000\n--- /dev/null\n+++ b/{new}\n"
                "@@ -0,0 +1 @@\n+../outside\n\\ No newline at end of file\n"
            )
        elif style == "mismatch":
            sections.append(
                f"diff --git a/src/app.py b/src/app.py\n--- a/{old}\n+++ b/{new}\n@@ -1 +1 @@\n-def main():\n+def pwned():\n"
            )
        else:
            sections.append(f"--- a/{old}\n+++ b/{old}\n@@ -1,2 +1,2 @@\n def main():\n-    return 1\n+    return 9\n")
    return "".join(sections)


@settings(max_examples=200)
@given(diff=hostile_diff())
def test_hostile_diffs_never_escape_and_never_half_apply(diff):
    with fresh_world() as (worktree, outside):
        text = resolve(diff, outside)
        check_invariants(worktree, outside, lambda: governed_apply(worktree, parse_edits(text)))


@settings(max_examples=600)
@given(raw=st.one_of(hostile_path(), st.text(max_size=30)))
def test_normalized_paths_are_always_relative_and_free_of_escapes(raw):
    try:
        path = normalize_path(raw)
    except PathRefused:
        return
    parts = path.split("/")
    assert path and not path.startswith("/") and "\\" not in path and "\x00" not in path
    assert all(part not in ("", ".", "..") for part in parts)
    assert all(part.lower().rstrip(". ").split(":")[0] not in (".git", "git~1") for part in parts)
    root = Path("/nonexistent-root")
    assert os.path.normpath(root / path).startswith(str(root) + os.sep)


# ------------------------------------------------------------------------------------------------------------


@contextmanager
def failing_writes(fail_at: int | None) -> Iterator[None]:
    """Make the ``fail_at``-th ``os.replace`` of governed apply fail, like a full disk would."""
    if fail_at is None:
        yield
        return
    real_replace = apply_module.os.replace
    calls = {"count": 0}

    def replace(source, target):
        calls["count"] += 1
        if calls["count"] == fail_at:
            raise OSError(28, "No space left on device (injected)")
        real_replace(source, target)

    apply_module.os.replace = replace
    try:
        yield
    finally:
        apply_module.os.replace = real_replace
