"""Cursor pagination over a unique, indexed column, so pages stay stable while rows are added."""

from __future__ import annotations

from rest_framework import pagination
from rest_framework.exceptions import NotFound, ValidationError


class CursorPagination(pagination.CursorPagination):
    """DRF's cursor pagination, except that a malformed cursor is a client error (400), not a 404."""

    def decode_cursor(self, request):  # noqa: ANN001, ANN201 - DRF's signature
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError({self.cursor_query_param: ["Invalid cursor."]}) from None


class IdCursorPagination(CursorPagination):
    """Newest first by primary key; ``page_size`` may be lowered or raised up to 200 by the client."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class OldestFirstCursorPagination(IdCursorPagination):
    ordering = "id"
