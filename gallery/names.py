"""Names that become directory names (backends, galleries): one safe path component (pure).

A name starts with a letter or digit, then letters, digits, ``.``, ``_`` or ``-``; at most 128
characters. That rules out ``..``, separators, NUL, hidden names (our state lives in ``.gallery/``)
and anything a shell or a filesystem could read differently.
"""

from __future__ import annotations

import re

__all__ = ["NAME_RE", "is_valid_name", "validate_name"]

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_valid_name(value: str) -> bool:
    return NAME_RE.fullmatch(value) is not None


def validate_name(value: str, *, what: str = "name") -> str:
    """Return ``value`` if it is a safe single path component.

    Raises:
        ValueError: with the reason (pydantic turns it into a validation error).
    """
    if not is_valid_name(value):
        raise ValueError(
            f"{what} {value!r} is not a safe single path component "
            "(letters, digits, '.', '_', '-'; starting with a letter or digit; at most 128)"
        )
    return value
