"""Server-side prepared statements through Django's connection, for the hottest raw SQL statements.

A statement is PREPAREd once per database connection and EXECUTEd after that, so PostgreSQL plans it once
instead of on every call (planning was about half of PostgreSQL's CPU per claim+finish cycle). It is
SQL-level PREPARE/EXECUTE through Django's cursor, so Django's error mapping, execute wrappers and query
logging still apply. Parameters in positions PostgreSQL cannot type from context (an INSERT ... SELECT
list) need casts. On other databases, and where preparing is off, the statement simply runs.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import ProgrammingError, connection

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")
# SQL -> (statement name, text, parameter names in $n order), for this process; and per connection the names
# it has prepared, or None once one was found missing (then re-read from the server before the next use).
_statements: dict[str, tuple[str, str, list[str]]] = {}
_prepared: weakref.WeakKeyDictionary[Any, set[str] | None] = weakref.WeakKeyDictionary()
MAX_PREPARED_PER_CONNECTION = 64
_NO_SUCH_STATEMENT = "26000"  # invalid_sql_statement_name


def execute_prepared(cursor: Any, sql: str, params: Sequence[Any] | dict[str, Any]) -> None:
    """``cursor.execute(sql, params)`` from a statement prepared once per connection.

    ``sql`` uses ``%s`` placeholders with a sequence, or ``%(name)s`` ones with a dict.
    """
    prepared = _prepared_names(cursor)
    statement = _statement(sql) if prepared is not None else None
    if statement is None or (statement[0] not in prepared and len(prepared) >= MAX_PREPARED_PER_CONNECTION):
        cursor.execute(sql, params)  # preparing is off here, or this is one odd variant too many
        return
    name, text, order = statement
    if name not in prepared:
        cursor.execute(f"PREPARE {name} AS {text}")
        prepared.add(name)
    values = [params[key] for key in order] if isinstance(params, dict) else list(params)
    try:
        if values:
            cursor.execute(f"EXECUTE {name}({', '.join(['%s'] * len(values))})", values)
        else:
            cursor.execute(f"EXECUTE {name}")
    except ProgrammingError as error:
        if prepared_statement_lost(error):
            _prepared[connection.connection] = None  # deallocated behind our back: re-read before next use
        raise


def _statement(sql: str) -> tuple[str, str, list[str]] | None:
    """(name, text with $n placeholders, parameter names in $n order) of ``sql``, cached for the process."""
    if sql not in _statements and len(_statements) < MAX_PREPARED_PER_CONNECTION:
        text, order = numbered_placeholders(sql)
        _statements[sql] = (f"autopack_{hashlib.sha1(sql.encode()).hexdigest()[:24]}", text, order)
    return _statements.get(sql)


def prepared_statement_lost(error: ProgrammingError) -> bool:
    return getattr(error.__cause__, "sqlstate", None) == _NO_SUCH_STATEMENT


def numbered_placeholders(sql: str) -> tuple[str, list[str]]:
    """``sql`` with ``$1, $2 ...`` for its placeholders, and the parameter names in that order (named style)."""
    order: list[str] = []
    positional = iter(range(1, sql.count("%s") + 1))

    def number(match: re.Match[str]) -> str:
        if match[0] == "%%":
            return "%"
        if match[1] is None:
            return f"${next(positional)}"
        if match[1] not in order:
            order.append(match[1])
        return f"${order.index(match[1]) + 1}"

    return _PLACEHOLDER.sub(number, sql), order


def _prepared_names(cursor: Any) -> set[str] | None:
    """The statements prepared on this connection, or None where preparing is off.

    Off behind a pooler in transaction mode (Django's ``DISABLE_SERVER_SIDE_CURSORS``: a session's statements
    may run on another server connection), with server-side binding (EXECUTE cannot take bound parameters;
    psycopg prepares by itself there if ``prepare_threshold`` is set) and when psycopg prepares statements
    itself (its cache flushes with DEALLOCATE ALL on rollback).
    """
    settings_dict = connection.settings_dict
    if (
        connection.vendor != "postgresql"
        or settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
        or settings_dict.get("OPTIONS", {}).get("server_side_binding")
    ):
        return None
    raw = connection.connection
    if getattr(raw, "prepare_threshold", None) is not None:
        return None
    if raw not in _prepared:
        _prepared[raw] = set()  # a new connection has nothing prepared
    names = _prepared[raw]
    if names is None:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        names = _prepared[raw] = {row[0] for row in cursor.fetchall()}
    return names


def fetchone_prepared(sql: str, params: Sequence[Any] | dict[str, Any]) -> tuple[Any, ...] | None:
    """The first row of ``sql`` run as a prepared statement; prepared again once if it was deallocated."""
    for attempt in range(2):
        try:
            with connection.cursor() as cursor:
                execute_prepared(cursor, sql, params)
                return cursor.fetchone()
        except ProgrammingError as error:
            if attempt or not prepared_statement_lost(error):
                raise
    return None  # not reached


@dataclass(frozen=True)
class RowReader:
    """Model instances from raw rows, converted like the ORM does (e.g. JSON text to Python)."""

    model: Any
    fields: tuple[Any, ...]

    @classmethod
    def of(cls, model: Any, names: Sequence[str] | None = None) -> RowReader:
        """All of ``model``'s concrete fields, or those named (the others are deferred on the instances)."""
        fields = [f for f in model._meta.concrete_fields if names is None or f.name in names]
        return cls(model, tuple(fields))

    def columns(self, alias: str) -> str:
        return ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}" for f in self.fields)

    def read(self, values: Sequence[Any]) -> Any:
        converted = []
        for field, value in zip(self.fields, values, strict=True):
            for converter in field.get_db_converters(connection):
                value = converter(value, field, connection)
            converted.append(value)
        return self.model.from_db(connection.alias, [f.attname for f in self.fields], converted)
