"""Small text helpers."""

from textkit.core import normalize_whitespace, title_case, word_count

__all__ = ["normalize_whitespace", "title_case", "word_count"]
