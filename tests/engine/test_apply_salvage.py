"""Salvage: NDJSON output cut at every byte offset applies exactly the complete operations before the cut."""

from __future__ import annotations

import json
from pathlib import Path

from runs.engine.apply import governed_apply
from runs.engine.edits import parse_edits
from tests.engine.helpers import scratch_dir, snapshot

START = {"base.py": "VALUE = 1\n", "old.txt": "old\n", "move_me.txt": "moving\n"}
OPERATIONS = [
    {"op": "write", "path": "pkg/a.py", "content": 'A = "{braces} and \\"quotes\\""\n'},
    {"op": "edit", "path": "base.py", "search": "VALUE = 1", "replace": "VALUE = 2"},
    {"op": "write", "path": "notes/ünï.md", "content": "Grüße\nзначение } {\n"},
    {"op": "delete", "path": "old.txt"},
    {"op": "rename", "path": "move_me.txt", "to": "moved/here.txt"},
    {"op": "write", "path": "pkg/b.py", "content": "def f():\n    return {'k': [1, 2]}\n"},
]


def model_tree(operations: list[dict]) -> dict[str, bytes]:
    """What the tree must hold after ``operations``: an independent, tiny model of the four op kinds."""
    files = {name: content.encode() for name, content in START.items()}
    for op in operations:
        if op["op"] == "write":
            files[op["path"]] = op["content"].encode()
        elif op["op"] == "edit":
            files[op["path"]] = files[op["path"]].decode().replace(op["search"], op["replace"], 1).encode()
        elif op["op"] == "delete":
            del files[op["path"]]
        elif op["op"] == "rename":
            files[op["to"]] = files.pop(op["path"])
    return files


def files_of(root: Path) -> dict[str, bytes]:
    return {path: entry[1] for path, entry in snapshot(root).items() if entry[0] == "file"}


def make_tree(root: Path) -> Path:
    root.mkdir()
    for name, content in START.items():
        (root / name).write_text(content)
    return root


def test_every_cut_applies_exactly_the_complete_operations():
    with scratch_dir() as scratch:
        check_every_cut(scratch)


def check_every_cut(tmp_path: Path) -> None:
    meta = {"op": "meta", "summary": "six operations", "total_operations": len(OPERATIONS)}
    lines = [json.dumps(obj, ensure_ascii=False) for obj in [meta, *OPERATIONS]]
    document = ("\n".join(lines) + "\n").encode("utf-8")
    # Byte offset just past each operation's closing brace, and where each operation starts.
    ends, starts, offset = [], [], 0
    for line in lines:
        encoded = line.encode("utf-8")
        starts.append(offset)
        ends.append(offset + len(encoded))
        offset += len(encoded) + 1
    op_ends = ends[1:]

    checked = 0
    for cut in range(len(document) + 1):
        text = document[:cut].decode("utf-8", errors="ignore")
        complete = sum(1 for end in op_ends if end <= cut)
        parsed = parse_edits(text)
        root = make_tree(tmp_path / f"cut{cut}")

        result = governed_apply(root, parsed)

        assert result.ok, (cut, result.violations)
        assert len(parsed.operations) == complete, cut
        assert files_of(root) == model_tree(OPERATIONS[:complete]), cut
        assert parsed.truncated is (complete < len(OPERATIONS) and text != ""), cut
        open_line = next((i for i, end in enumerate(ends) if end > cut), None)
        if open_line is not None and cut > starts[open_line]:
            dropped_start = len(document[: starts[open_line]].decode("utf-8"))
            assert parsed.dropped_text == text[dropped_start:], cut
        else:
            assert parsed.dropped_text.strip() == "", cut
        checked += 1
    assert checked == len(document) + 1


def test_a_cut_inside_the_meta_line_applies_nothing(tmp_path):
    text = '{"op":"meta","summary":"x","total_oper'
    root = make_tree(tmp_path / "tree")
    before = snapshot(root)

    parsed = parse_edits(text)
    result = governed_apply(root, parsed)

    assert parsed.operations == [] and parsed.truncated and parsed.dropped_text == text
    assert not result.applied and snapshot(root) == before
