"""parse_edits: formats, malformation recovery, salvage, and search/replace matching."""

from __future__ import annotations

import json

import pytest

from runs.engine.edits import (
    DeleteOp,
    DiffOp,
    EditFormat,
    EditMatchError,
    EditOp,
    MalformedOperation,
    RenameOp,
    WriteOp,
    apply_search_replace,
    parse_edits,
    unquote_git_path,
)


def ndjson(*objects: dict) -> str:
    return "\n".join(json.dumps(obj) for obj in objects) + "\n"


def test_ndjson_operations_of_every_kind_are_parsed_in_order():
    text = ndjson(
        {"op": "meta", "summary": "add x", "total_operations": 4},
        {"op": "write", "path": "a.py", "content": "x = 1\n"},
        {"op": "edit", "path": "b.py", "search": "old", "replace": "new"},
        {"op": "delete", "path": "c.py"},
        {"op": "rename", "path": "d.py", "to": "e.py"},
    )

    result = parse_edits(text)

    assert result.format is EditFormat.NDJSON
    assert result.operations == [
        WriteOp("a.py", "x = 1\n"),
        EditOp("b.py", "old", "new"),
        DeleteOp("c.py"),
        RenameOp("d.py", "e.py"),
    ]
    assert result.summary == "add x" and result.declared_total == 4
    assert not result.truncated and result.dropped_text == ""


def test_code_fences_and_prose_around_the_payload_are_tolerated():
    text = (
        "Sure! Here is the change:\n```json\n" + ndjson({"op": "delete", "path": "x"}) + "```\nLet me know {if} more."
    )

    result = parse_edits(text)

    assert result.operations == [DeleteOp("x")]
    assert not result.truncated


def test_full_file_json_is_parsed_with_its_modes():
    payload = {
        "summary": "s",
        "files": [
            {"path": "new.py", "mode": "create", "new_content": "a = 1\n"},
            {"path": "old.py", "mode": "modify", "new_content": "b = 2\n"},
            {"path": "gone.py", "mode": "delete"},
        ],
    }

    result = parse_edits("```json\n" + json.dumps(payload, indent=2) + "\n```")

    assert result.format is EditFormat.FILES_JSON
    assert result.summary == "s"
    assert result.operations == [WriteOp("new.py", "a = 1\n"), WriteOp("old.py", "b = 2\n"), DeleteOp("gone.py")]


def test_truncated_full_file_json_keeps_the_complete_files():
    payload = json.dumps(
        {
            "summary": "s",
            "files": [
                {"path": "a", "mode": "create", "new_content": "1"},
                {"path": "b", "mode": "create", "new_content": "22"},
            ],
        }
    )
    cut = payload[: payload.index('"22"') + 2]

    result = parse_edits(cut)

    assert result.operations == [WriteOp("a", "1")]
    assert result.truncated
    assert result.dropped_text == cut[cut.index('{"path": "b"') :]


def test_a_files_wrapper_of_ndjson_operations_is_recovered():
    text = json.dumps({"files": [{"op": "write", "path": "a", "content": "x"}, {"op": "delete", "path": "b"}]})

    assert parse_edits(text, expected_format="ndjson").operations == [WriteOp("a", "x"), DeleteOp("b")]


def test_single_quotes_trailing_commas_and_literal_newlines_are_repaired():
    text = (
        "{'op': 'write', 'path': 'a.py', 'content': 'x = 1\\n'}\n"
        '{"op": "delete", "path": "b",}\n'
        '{"op": "write", "path": "c.txt", "content": "line one\nline two\n"}\n'
    )

    result = parse_edits(text)

    assert result.operations == [WriteOp("a.py", "x = 1\n"), DeleteOp("b"), WriteOp("c.txt", "line one\nline two\n")]
    assert any("single quotes" in warning for warning in result.warnings)
    assert any("trailing commas" in warning for warning in result.warnings)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"path": "a", "to": "b"}, RenameOp("a", "b")),
        ({"path": "a", "search": "s", "replace": "r"}, EditOp("a", "s", "r")),
        ({"path": "a", "content": "c"}, WriteOp("a", "c")),
    ],
)
def test_a_missing_op_is_inferred_from_the_fields(fields, expected):
    result = parse_edits(json.dumps(fields))

    assert result.operations == [expected]
    assert any("inferred" in warning for warning in result.warnings)


def test_a_bare_path_is_never_guessed_to_be_a_delete():
    with pytest.raises(MalformedOperation):
        parse_edits(json.dumps({"path": "important.py"}))


@pytest.mark.parametrize(
    "line",
    [
        '{"op": "write", "path": "a"}',
        '{"op": "explode", "path": "a"}',
        '{"op": "write", "content": "x"}',
        '{"op": "edit", "path": "a", "search": 3, "replace": "x"}',
        '{"op": "write", "path": "a", "content": "x" "y"}',
    ],
)
def test_a_complete_but_invalid_operation_is_a_typed_error_not_skipped(line):
    text = ndjson({"op": "delete", "path": "ok"}) + line + "\n"

    with pytest.raises(MalformedOperation) as caught:
        parse_edits(text)

    assert caught.value.index == 1


def test_output_with_no_operations_is_an_empty_result_with_a_warning():
    result = parse_edits("I could not work out what to change.")

    assert result.operations == [] and result.format is EditFormat.NONE
    assert "no edit operations found" in result.warnings


def test_known_truncation_and_a_short_meta_count_mark_the_result_truncated():
    text = ndjson({"op": "meta", "summary": "s", "total_operations": 3}, {"op": "delete", "path": "a"})

    assert parse_edits(text).truncated
    assert parse_edits(ndjson({"op": "delete", "path": "a"}), known_truncated=True).truncated


def test_a_unified_diff_is_split_into_one_operation_per_file():
    diff = (
        "Here you go:\n```diff\n"
        "diff --git a/x.txt b/x.txt\nindex 1..2 100644\n--- a/x.txt\n+++ b/x.txt\n@@ -1 +1 @@\n-a\n+b\n"
        "diff --git a/new.txt b/new.txt\nnew file mode 100644\n--- /dev/null\n+++ b/new.txt\n@@ -0,0 +1,2 @@\n+1\n+2\n"
        "diff --git a/old name.txt b/new name.txt\nsimilarity index 100%\nrename from old name.txt\nrename to new name.txt\n"
        "```\nThanks"
    )

    result = parse_edits(diff)

    assert result.format is EditFormat.UNIFIED_DIFF
    assert [(op.old_path, op.new_path) for op in result.operations] == [
        ("x.txt", "x.txt"),
        (None, "new.txt"),
        ("old name.txt", "new name.txt"),
    ]
    assert all(isinstance(op, DiffOp) for op in result.operations)
    assert not result.truncated


def test_a_diff_cut_inside_a_hunk_drops_only_that_file():
    first = "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"
    second = "--- a/y\n+++ b/y\n@@ -1,3 +1,3 @@\n a\n-b\n"

    result = parse_edits(first + second)

    assert [op.path for op in result.operations] == ["x"]
    assert result.truncated and result.dropped_text == second


def test_git_quoted_paths_are_unquoted():
    assert unquote_git_path('"t\\303\\251st \\"q\\".txt"') == 'tést "q".txt'
    assert unquote_git_path("plain.txt") == "plain.txt"


def test_search_replace_matches_exactly_once():
    assert apply_search_replace("a\nb\nc\n", "b\n", "B\n", path="f") == ("a\nB\nc\n", None)


def test_search_with_no_match_names_the_file_count_and_nearest_lines():
    content = "def alpha():\n    return 1\n\ndef beta():\n    return 2\n"

    with pytest.raises(EditMatchError) as caught:
        apply_search_replace(content, "def betta():\n    return 3\n", "x", path="pkg/mod.py")

    error = caught.value
    assert error.path == "pkg/mod.py" and error.count == 0
    assert error.candidates[0] == (4, "def beta():")
    assert "pkg/mod.py" in str(error) and "line 4" in str(error)


def test_search_with_several_matches_is_refused_with_their_lines():
    with pytest.raises(EditMatchError) as caught:
        apply_search_replace("x = 1\ny = 2\nx = 1\n", "x = 1", "x = 3", path="f.py")

    assert caught.value.count == 2
    assert [number for number, _ in caught.value.candidates] == [1, 3]


def test_a_unique_whitespace_tolerant_match_is_used_and_reported():
    content = "class A:\n    def f(self):\n        return 1   \n"

    new, warning = apply_search_replace(
        content, "def f(self):\n    return 1\n", "def f(self):\n    return 2\n", path="a.py"
    )

    assert new == "class A:\n    def f(self):\n        return 2\n"
    assert warning and "whitespace-tolerant" in warning


def test_an_ambiguous_whitespace_tolerant_match_is_refused():
    content = "if a:\n    go()\nif b:\n  go()\n"

    with pytest.raises(EditMatchError) as caught:
        apply_search_replace(content, "go( )", "stop()", path="f.py")
    assert caught.value.count == 0

    with pytest.raises(EditMatchError) as caught:
        apply_search_replace(content, "go() \n", "stop()\n", path="f.py")
    assert caught.value.count == 2


def test_braces_in_prose_with_an_apostrophe_do_not_swallow_the_operations():
    text = "I'll keep {the user's name} unchanged.\n" + ndjson({"op": "delete", "path": "a"})

    result = parse_edits(text)

    assert result.operations == [DeleteOp("a")] and not result.truncated


def test_an_operation_left_open_before_another_one_is_malformed_not_truncation():
    text = '{"op": "write", "path": "a", "content": "x"\n' + ndjson({"op": "delete", "path": "b"})

    with pytest.raises(MalformedOperation):
        parse_edits(text)


def test_a_diff_known_to_be_truncated_keeps_only_files_that_provably_ended():
    first = "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"
    second = "--- a/y\n+++ b/y\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"
    text = first + second

    for cut in range(len("--- a/x\n+++ b/x\n"), len(text) + 1):
        result = parse_edits(text[:cut], known_truncated=True)

        expected = ["x"] if cut >= len(first) + len("--- a/y\n") else []
        assert [op.path for op in result.operations] == expected, cut
        assert result.truncated, cut
        assert "".join(op.text for op in result.operations) + result.dropped_text == text[:cut], cut
    assert [op.path for op in parse_edits(text).operations] == ["x", "y"]  # not known to be truncated
    assert parse_edits(text[:-1]).operations[-1].text.endswith("+c\n")  # a stripped final newline is fine
