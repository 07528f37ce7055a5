"""Server-rendered SVG charts: no JavaScript, work offline, readable by screen readers through <title>/<desc>.

Each tag takes plain Python data prepared by a view and returns one ``<svg>`` (with a legend where needed).
Every value that reaches the markup goes through ``escape``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

PALETTE = ("#2456c7", "#d9480f", "#2b8a3e", "#862e9c", "#e8590c", "#0b7285", "#c2255c", "#5c940d", "#495057")
WIDTH, HEIGHT = 480, 240
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 12, 12, 36


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def nice_max(value: float) -> float:
    """A round axis maximum (1, 2, 2.5 or 5 × 10^n) at or above ``value``."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        candidate = step * 10**exponent
        if candidate >= value:
            return float(candidate)
    return float(10 ** (exponent + 1))


def short_number(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix
    if value % 1 == 0:
        return f"{int(value)}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}".rstrip("0").rstrip(".")


def _open_svg(title: str, description: str, width: int = WIDTH, height: int = HEIGHT, extra: str = "") -> list[str]:
    return [
        f'<svg class="chart{extra}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title><desc>{escape(description)}</desc>'
    ]


def _y_axis(parts: list[str], top: float, fmt: Callable[[float], str], width: int = WIDTH) -> None:
    plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    for tick in range(5):
        value = top * tick / 4
        y = HEIGHT - MARGIN_BOTTOM - plot_height * tick / 4
        parts.append(
            f'<line class="grid-line" x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        parts.append(f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(value))}</text>')
    parts.append(
        f'<line class="axis" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" y1="{MARGIN_TOP}" y2="{HEIGHT - MARGIN_BOTTOM}"/>'
    )


def _legend(names: Sequence[str]) -> str:
    items = "".join(
        f'<li><span class="swatch" style="background:{colour(index)}"></span>{escape(name)}</li>'
        for index, name in enumerate(names)
    )
    return f'<ul class="legend">{items}</ul>'


@register.simple_tag
def line_chart(
    x_labels: Sequence[str], series: dict[str, Sequence[float]], title: str, money: bool = False
) -> SafeString:
    """One line per series over shared x labels (periods); a single period is drawn as dots."""
    fmt = (lambda value: "$" + short_number(value)) if money else short_number
    top = nice_max(max((max(values, default=0) for values in series.values()), default=0))
    plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    count = max(len(x_labels), 1)

    def x_at(index: int) -> float:
        return MARGIN_LEFT + (plot_width * (index + 0.5) / count)

    def y_at(value: float) -> float:
        return HEIGHT - MARGIN_BOTTOM - plot_height * (value / top)

    parts = _open_svg(title, f"{len(series)} series over {len(x_labels)} periods")
    _y_axis(parts, top, fmt)
    label_every = max(1, math.ceil(count / 8))
    for index, label in enumerate(x_labels):
        if index % label_every == 0:
            parts.append(f'<text x="{x_at(index):.1f}" y="{HEIGHT - 14}" text-anchor="middle">{escape(label)}</text>')
    for number, (name, values) in enumerate(series.items()):
        points = " ".join(f"{x_at(i):.1f},{y_at(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline fill="none" stroke="{colour(number)}" stroke-width="2" points="{points}"/>')
        for index, value in enumerate(values):
            parts.append(
                f'<circle cx="{x_at(index):.1f}" cy="{y_at(value):.1f}" r="3" fill="{colour(number)}">'
                f"<title>{escape(name)} {escape(x_labels[index])}: {escape(fmt(value))}</title></circle>"
            )
    parts.append("</svg>")
    return mark_safe("".join(parts) + _legend(list(series)))  # noqa: S308 - every value above is escaped


@register.simple_tag
def scatter_chart(points: Sequence[dict[str, Any]], title: str) -> SafeString:
    """Predicted (x) against actual (y) tokens; the diagonal is a perfect estimate; truncated points in red."""
    top = nice_max(max((max(p["predicted"], p["actual"]) for p in points), default=0))
    size = HEIGHT
    plot = size - MARGIN_TOP - MARGIN_BOTTOM
    width = MARGIN_LEFT + plot + MARGIN_RIGHT

    def x_at(value: float) -> float:
        return MARGIN_LEFT + plot * value / top

    def y_at(value: float) -> float:
        return size - MARGIN_BOTTOM - plot * value / top

    description = f"{len(points)} Builder calls; points above the diagonal were underestimated"
    parts = _open_svg(title, description, width, extra=" square")
    _y_axis(parts, top, short_number, width)
    parts.append(
        f'<line class="axis" x1="{MARGIN_LEFT}" x2="{width - MARGIN_RIGHT}" y1="{size - MARGIN_BOTTOM}" '
        f'y2="{size - MARGIN_BOTTOM}"/>'
    )
    for tick in range(5):
        value = top * tick / 4
        parts.append(
            f'<text x="{x_at(value):.1f}" y="{size - 20}" text-anchor="middle">{escape(short_number(value))}</text>'
        )
    parts.append(f'<text x="{MARGIN_LEFT + plot / 2:.1f}" y="{size - 4}" text-anchor="middle">predicted</text>')
    middle = MARGIN_TOP + plot / 2
    parts.append(
        f'<text x="12" y="{middle:.1f}" text-anchor="middle" transform="rotate(-90 12 {middle:.1f})">actual</text>'
    )
    parts.append(
        f'<line x1="{x_at(0):.1f}" y1="{y_at(0):.1f}" x2="{x_at(top):.1f}" y2="{y_at(top):.1f}" '
        'stroke="#adb5bd" stroke-dasharray="4 4"/>'
    )
    for point in points:
        fill = "#b42318" if point.get("truncated") else "#2456c7"
        parts.append(
            f'<circle cx="{x_at(point["predicted"]):.1f}" cy="{y_at(point["actual"]):.1f}" r="3" fill="{fill}" '
            f'fill-opacity="0.6"><title>{escape(point.get("category", ""))}: predicted {point["predicted"]}, '
            f"actual {point['actual']}{' (truncated)' if point.get('truncated') else ''}</title></circle>"
        )
    parts.append("</svg>")
    legend = (
        '<ul class="legend"><li><span class="swatch" style="background:#2456c7"></span>complete output</li>'
        '<li><span class="swatch" style="background:#b42318"></span>truncated</li>'
        '<li><span class="swatch" style="background:#adb5bd"></span>perfect estimate</li></ul>'
    )
    return mark_safe("".join(parts) + legend)  # noqa: S308 - every value above is escaped


@register.simple_tag
def bar_chart(rows: Sequence[tuple[str, float | None]], title: str, unit: str = "") -> SafeString:
    """Horizontal bars, one per labelled value (``None`` is drawn as "no data")."""
    row_height, label_width = 26, 120
    height = max(row_height * len(rows) + 8, 40)
    top = nice_max(max((value or 0 for _, value in rows), default=0))
    plot = WIDTH - label_width - 60
    parts = _open_svg(title, f"{len(rows)} bars", WIDTH, height)
    for index, (label, value) in enumerate(rows):
        y = 4 + index * row_height
        parts.append(f'<text x="{label_width - 8}" y="{y + 16}" text-anchor="end">{escape(label)}</text>')
        if value is None:
            parts.append(f'<text x="{label_width}" y="{y + 16}">no data</text>')
            continue
        bar = plot * value / top
        parts.append(
            f'<rect x="{label_width}" y="{y + 3}" width="{bar:.1f}" height="{row_height - 8}" rx="3" '
            f'fill="{colour(0)}"/><text x="{label_width + bar + 6:.1f}" y="{y + 16}">'
            f"{escape(short_number(value))}{escape(unit)}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every value above is escaped
