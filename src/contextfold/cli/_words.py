"""Counts in words, for every message the CLI prints: no "1 events" anywhere."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 event`, `2 events`, `1,204 model requests`: the count (grouped by thousands) and the noun agreeing with it.
    `plural` for a noun that does not take an s (`1 summary`, `2 summaries`)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
