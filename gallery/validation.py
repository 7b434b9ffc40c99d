"""Pydantic validation errors as one line for people: where, and what (never the input itself)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

__all__ = ["describe_problem", "describe_validation"]


def describe_validation(exc: ValidationError, *, limit: int | None = None) -> str:
    """Every problem (the first ``limit``), ``; ``-separated."""
    return "; ".join(describe_problem(error) for error in exc.errors(include_input=False)[:limit])


def describe_problem(error: Any) -> str:
    """``location: message`` of one pydantic error (``galleries[0].url: ...``)."""
    location = ""
    for part in error.get("loc", ()):
        if isinstance(part, int):
            location += f"[{part}]"
        else:
            location += f".{part}" if location else str(part)
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "extra_forbidden":
        message = "unknown key (check the spelling; unknown keys are refused)"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return f"{location}: {message}" if location else message
