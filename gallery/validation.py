"""Pydantic validation errors as one line for people: where, and what (never the input itself)."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from gallery.suggest import did_you_mean

__all__ = ["describe_problem", "describe_validation"]


def describe_validation(
    exc: ValidationError, *, limit: int | None = None, model: type[BaseModel] | None = None
) -> str:
    """Every problem (the first ``limit``), ``; ``-separated; with the ``model`` that was
    validated, an unknown key says which known key is closest."""
    return "; ".join(describe_problem(error, model) for error in exc.errors(include_input=False)[:limit])


def describe_problem(error: Any, model: type[BaseModel] | None = None) -> str:
    """``location: message`` of one pydantic error (``galleries[0].url: ...``)."""
    location = ""
    for part in error.get("loc", ()):
        if isinstance(part, int):
            location += f"[{part}]"
        else:
            location += f".{part}" if location else str(part)
    message = str(error.get("msg", "invalid"))
    if error.get("type") == "extra_forbidden":
        loc = tuple(error.get("loc", ()))
        known = _keys_at(model, loc[:-1]) if model is not None and loc else set()
        hint = did_you_mean(str(loc[-1]), known) if known else ""
        message = f"unknown key{hint} (check the spelling; unknown keys are refused)"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return f"{location}: {message}" if location else message


def _keys_at(model: type[BaseModel], path: tuple[Any, ...]) -> set[str]:
    """The field names of the model found at ``path`` (list indexes skipped), or none."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return set()
        current = _model_in(fields[part].annotation)
        if current is None:
            return set()
    return set(getattr(current, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X``, ``X | None``, ``tuple[X, ...]`` or ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None
