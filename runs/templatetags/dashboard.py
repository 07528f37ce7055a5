"""Presentation helpers for the dashboard templates: numbers, durations, badges, diffs, attempt reports."""

from __future__ import annotations

import json
import zlib
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer

register = template.Library()

BLOB_DISPLAY_LIMIT = 200_000
DIFF_DISPLAY_LIMIT = 300_000


@register.filter
def tokens(value: Any) -> str:
    """1234 -> 1.2k, 5000000 -> 5M: token counts read at a glance."""
    if value in (None, ""):
        return "—"
    number = float(value)
    for size, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if abs(number) >= size:
            text = f"{number / size:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return f"{int(number)}"


@register.filter
def usd(value: Any) -> str:
    if value in (None, ""):
        return "—"
    amount = Decimal(str(value))
    return f"${amount:,.2f}" if amount >= 1 or amount == 0 else f"${amount:,.4f}"


@register.filter
def as_percent(rate: Any) -> str:
    """0.0425 -> "4.3 %"."""
    if rate in (None, ""):
        return "—"
    return f"{100 * float(rate):.1f} %"


@register.filter
def percent_of(used: Any, cap: Any) -> float:
    try:
        return min(100.0, round(100.0 * float(used) / float(cap), 1)) if float(cap) else 0.0
    except (TypeError, ValueError):
        return 0.0


def _format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


@register.simple_tag
def duration(started: datetime | None, finished: datetime | None = None) -> str:
    """Elapsed time from ``started`` to ``finished`` (or to now while still going)."""
    if started is None:
        return "—"
    return _format_duration(((finished or timezone.now()) - started).total_seconds())


@register.filter
def milliseconds(value: Any) -> str:
    if value in (None, ""):
        return "—"
    return _format_duration(timedelta(milliseconds=int(value)).total_seconds()) if int(value) >= 1000 else f"{value} ms"


@register.simple_tag
def badge(state: str, label: str = "") -> str:
    """A coloured state pill; a plain tag, not an inclusion template, because list pages render hundreds."""
    state = str(state or "none")
    return format_html('<span class="badge badge-{}">{}</span>', state, label or state.replace("_", " "))


@register.filter
def highlight_diff(diff: str) -> SafeString:
    """A unified diff as syntax-highlighted HTML (Pygments' classes; colours in static/dashboard/pygments.css)."""
    if not diff:
        return mark_safe("")
    clipped = diff[:DIFF_DISPLAY_LIMIT]
    html = highlight(clipped, DiffLexer(), HtmlFormatter(cssclass="highlight", wrapcode=True))
    if len(diff) > DIFF_DISPLAY_LIMIT:
        html += format_html('<p class="muted">Diff cut at {} characters.</p>', DIFF_DISPLAY_LIMIT)
    return mark_safe(html)  # noqa: S308 - Pygments escapes the diff text itself


@register.filter
def blob_text(blob: Any) -> str:
    """An AttemptEvent blob (zlib-compressed UTF-8 text) as text; tolerant of plain or damaged bytes."""
    if not blob:
        return ""
    raw = bytes(blob)
    try:
        raw = zlib.decompress(raw)
    except zlib.error:
        pass
    text = raw.decode("utf-8", errors="replace")
    if len(text) > BLOB_DISPLAY_LIMIT:
        return text[:BLOB_DISPLAY_LIMIT] + f"\n… cut at {BLOB_DISPLAY_LIMIT} characters"
    return text


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@register.filter
def is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


@register.filter
def lookup(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None


@register.simple_tag
def query_with(query_string: str, **changes: Any) -> str:
    """The current query string with some parameters replaced (for pagination links that keep filters)."""
    from django.http import QueryDict

    query = QueryDict(query_string, mutable=True)
    for key, value in changes.items():
        query[key] = value
    return query.urlencode()
