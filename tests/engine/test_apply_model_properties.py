"""Property-based correctness: valid documents do exactly what a tiny model says, and salvage is exact.

Complements the confinement properties: here every operation is legitimate, so the interesting failure is a
wrong result (an operation lost, applied twice, or applied out of order), not an escape.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from runs.engine.apply import governed_apply
from runs.engine.edits import parse_edits
from tests.engine.helpers import scratch_dir, snapshot

NAMES = ["src/a.py", "src/b.py", "docs/c.md", "d.txt", "src/deep/e.txt"]
START = {"src/a.py": "A = 1\n", "docs/c.md": "# C\nline\n"}
TEXTS = ["X = 1\n", "X = 2\n", "hello\n", "# title\n", "{}\n", 'quote = "\\""\n', "ünï = 'ç'\n"]


@st.composite
def valid_document(draw) -> list[dict]:
    """Operations that are each valid against the state the previous ones leave."""
    files = dict(START)
    operations = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["write", "edit", "delete", "rename"] if files else ["write"]))
        if kind == "write":
            path, content = draw(st.sampled_from(NAMES)), draw(st.sampled_from(TEXTS))
            if any(other.startswith(path + "/") or path.startswith(other + "/") for other in files):
                continue
            files[path] = content
            operations.append({"op": "write", "path": path, "content": content})
            continue
        path = draw(st.sampled_from(sorted(files)))
        if kind == "edit":
            first_line = files[path].splitlines(keepends=True)[0]
            if files[path].count(first_line) != 1:
                continue
            replacement = draw(st.sampled_from(TEXTS))
            files[path] = files[path].replace(first_line, replacement, 1)
            operations.append({"op": "edit", "path": path, "search": first_line, "replace": replacement})
        elif kind == "delete":
            del files[path]
            operations.append({"op": "delete", "path": path})
        else:
            target = draw(st.sampled_from(NAMES))
            if target in files or any(o.startswith(target + "/") or target.startswith(o + "/") for o in files):
                continue
            files[target] = files.pop(path)
            operations.append({"op": "rename", "path": path, "to": target})
    return operations


def model(operations: list[dict]) -> dict[str, bytes]:
    files = dict(START)
    for op in operations:
        if op["op"] == "write":
            files[op["path"]] = op["content"]
        elif op["op"] == "edit":
            files[op["path"]] = files[op["path"]].replace(op["search"], op["replace"], 1)
        elif op["op"] == "delete":
            del files[op["path"]]
        else:
            files[op["to"]] = files.pop(op["path"])
    return {path: content.encode() for path, content in files.items()}


def make_tree(root: Path) -> Path:
    for name, content in START.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    return root


def files_of(root: Path) -> dict[str, bytes]:
    return {path: entry[1] for path, entry in snapshot(root).items() if entry[0] == "file"}


@settings(max_examples=300)
@given(operations=valid_document())
def test_valid_documents_produce_exactly_the_modelled_tree(operations):
    with scratch_dir() as root:
        make_tree(root)
        document = "\n".join(json.dumps(op, ensure_ascii=False) for op in operations)

        result = governed_apply(root, document)

        assert result.ok, result.violations
        assert files_of(root) == model(operations)


@settings(max_examples=300)
@given(operations=valid_document(), data=st.data())
def test_a_document_cut_anywhere_applies_exactly_its_complete_operations(operations, data):
    lines = [json.dumps(op, ensure_ascii=False) for op in operations]
    document = "\n".join(lines)
    cut = data.draw(st.integers(0, len(document)))
    complete = sum(1 for index in range(len(lines)) if len("\n".join(lines[: index + 1])) <= cut)
    with scratch_dir() as root:
        make_tree(root)

        parsed = parse_edits(document[:cut])
        result = governed_apply(root, parsed)

        assert result.ok, result.violations
        assert len(parsed.operations) == complete
        assert files_of(root) == model(operations[:complete])
