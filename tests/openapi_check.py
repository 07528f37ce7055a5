"""Check real API responses against the generated OpenAPI schema, strictly.

Strict means: every object the schema describes with properties refuses properties it does not list, and
``nullable`` is honoured. A response carrying a field the schema forgot, or a type the schema does not
say, fails the test that calls ``assert_matches_schema``.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import jsonschema


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The whole API's OpenAPI document, generated once per test process (treat it as read-only)."""
    from drf_spectacular.generators import SchemaGenerator

    return SchemaGenerator().get_schema(request=None, public=True)


def _strict(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: nullable as a null alternative, closed objects."""
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _strict(value) for key, value in node.items()}
    if "$ref" in node:
        node["$ref"] = node["$ref"].replace("#/components/schemas/", "#/definitions/")
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
        node["additionalProperties"] = False
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


def response_schema(path: str, method: str = "get", status: int = 200) -> dict[str, Any]:
    """The JSON Schema of ``method path``'s ``status`` response body (path as in the schema: ``/api/x/{id}/``)."""
    openapi = openapi_document()
    body = openapi["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    return {
        **_strict(copy.deepcopy(body)),
        "definitions": {name: _strict(schema) for name, schema in openapi["components"]["schemas"].items()},
    }


def assert_matches_schema(data: Any, path: str, method: str = "get", status: int = 200) -> None:
    jsonschema.Draft7Validator(response_schema(path, method, status)).validate(data)
