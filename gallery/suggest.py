""" "Did you mean": the closest known spelling of a mistyped name, key or command (pure)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest", "did_you_mean"]


def closest(word: str, known: Iterable[str]) -> str | None:
    """The known spelling nearest to ``word`` (difflib's ratio, at least 0.6), or ``None``."""
    found = difflib.get_close_matches(word, sorted(set(known)), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` or the empty string."""
    match = closest(word, known)
    return f" (did you mean {match!r}?)" if match is not None and match != word else ""
