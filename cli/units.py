"""Numbers as a person reads them (pure): sizes, durations, counted nouns."""

from __future__ import annotations

from collections.abc import Sequence

import gallery

__all__ = ["human_bytes", "human_seconds", "plural"]

human_bytes = gallery.human_bytes
human_seconds = gallery.human_seconds


def plural(count: int, noun: str) -> str:
    """``1 problem``, ``2 problems``, ``2 entries``."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun[:-1]}ies" if noun.endswith("y") else f"{count} {noun}s"


def aligned(headers: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """A table as lines of left-aligned columns two spaces apart, the last column unpadded: fast
    for a thousand rows, and one line per row whatever the terminal's width (pipes, grep)."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    last = len(headers) - 1

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c if i == last else c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()

    return [line(headers), *(line(row) for row in rows)]
