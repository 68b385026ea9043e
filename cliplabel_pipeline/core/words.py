"""Counts in words, so every face says "1 item" and "2 items" alike."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` in the form ``n`` takes: ``counted(1, "item")`` is "1 item", ``counted(0, "item")``
    "0 items"; ``plural`` where adding "s" is wrong (``counted(2, "label of record", "labels of record")``)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
