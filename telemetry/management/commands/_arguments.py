"""Argument types shared by the telemetry commands."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path


def iso_date(value: str) -> date:
    """A day, YYYY-MM-DD, or a number of days back from today (UTC): ``7d`` is a week ago."""
    if value.endswith("d") and value[:-1].isascii() and value[:-1].isdigit():
        return datetime.now(UTC).date() - timedelta(days=int(value[:-1]))
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD) or a number of days (7d): {value!r}") from exc


def start_of(day: date | None) -> datetime | None:
    return datetime.combine(day, time.min, tzinfo=UTC) if day else None


def model_mapping(value: str) -> dict:
    """A JSON object inline, or the path of a file holding one."""
    text = Path(value).read_text() if not value.lstrip().startswith("{") and Path(value).is_file() else value
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--models needs a JSON object or a JSON file: {exc}") from exc
    if not isinstance(mapping, dict):
        raise argparse.ArgumentTypeError("--models needs a JSON object")
    return mapping
