"""Turn the text of a plan file into plain data (dicts, lists, strings, numbers, booleans, null).

JSON and YAML are both accepted. Syntax errors carry line and column numbers. The YAML loader is
deliberately narrow: aliases are refused (a few hundred bytes of nested aliases can expand to gigabytes),
duplicate keys are refused (PyYAML would silently keep the last one), and dates stay strings.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml

from runs.plan.errors import DOCUMENT, PlanError, PlanInvalid, join_path

MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_DEPTH = 32


class _PlanLoader(yaml.SafeLoader):
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in plans", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key if isinstance(key, str) else repr(key))
        return super().construct_mapping(node, deep=deep)


# Without the timestamp resolver `2024-05-01` stays the string it looks like instead of a date object.
_PlanLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def check_size(size: int) -> None:
    if size > MAX_DOCUMENT_BYTES:
        raise PlanInvalid(
            [PlanError(DOCUMENT, f"the plan is {size:,} bytes; the limit is {MAX_DOCUMENT_BYTES:,} bytes (1 MiB)")]
        )


def looks_like_json(text: str, source_name: str) -> bool:
    if source_name.lower().endswith(".json"):
        return True
    if source_name.lower().endswith((".yaml", ".yml")):
        return False
    return text.lstrip().startswith("{")


def parse_text(text: str, *, source_name: str = "") -> Any:
    """Parse plan text; raise ``PlanInvalid`` naming the line and column of a syntax error."""
    check_size(len(text.encode("utf-8", "surrogatepass")))
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    if looks_like_json(text, source_name):
        return _parse_json(text)
    return _parse_yaml(text)


def _parse_json(text: str) -> Any:
    def refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ValueError(f"duplicate key {key!r}")
            result[key] = value
        return result

    try:
        return json.loads(text, object_pairs_hook=refuse_duplicates)
    except json.JSONDecodeError as exc:
        raise PlanInvalid(
            [PlanError(DOCUMENT, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")]
        ) from None
    except (ValueError, RecursionError) as exc:
        raise PlanInvalid([PlanError(DOCUMENT, f"invalid JSON: {exc}")]) from None


def _parse_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_PlanLoader)  # noqa: S506 - _PlanLoader is a narrowed SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        problem = exc.problem or "syntax error"
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise PlanInvalid([PlanError(DOCUMENT, f"invalid YAML{where}: {problem}")]) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise PlanInvalid([PlanError(DOCUMENT, f"invalid YAML: {exc}")]) from None


def check_plain_data(data: Any) -> None:
    """Refuse nesting deeper than any plan needs (it would exhaust the stack later) and NaN/infinity."""
    errors: list[PlanError] = []
    stack: list[tuple[Any, str, int]] = [(data, DOCUMENT, 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            errors.append(PlanError(path, "must be a finite number"))
        if not isinstance(value, dict | list):
            continue
        if depth >= MAX_DEPTH:
            errors.append(PlanError(path, f"nested more than {MAX_DEPTH} levels deep"))
            continue
        items = value.items() if isinstance(value, dict) else enumerate(value)
        stack.extend(
            (child, join_path(path, key if isinstance(key, int) else str(key)), depth + 1) for key, child in items
        )
    if errors:
        raise PlanInvalid(sorted(errors))
