"""Core text helpers."""

import re

_WORD = re.compile(r"[A-Za-z0-9']+")


def normalize_whitespace(text: str) -> str:
    """Collapse runs of whitespace into single spaces and strip the ends."""
    return " ".join(text.split())


def word_count(text: str) -> int:
    """Number of words, ignoring punctuation."""
    return len(_WORD.findall(text))


def title_case(text: str) -> str:
    """Capitalise every word."""
    return text.title()
