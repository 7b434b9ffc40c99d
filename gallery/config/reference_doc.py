"""The config reference, generated from the models' field docstrings (pure).

``gallery schema config --markdown`` prints it; docs/config-reference.md is its output, and a
test fails when the two differ, so the reference cannot go stale.
"""

from __future__ import annotations

import typing
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from gallery.config.models import Config

__all__ = ["config_reference"]


def config_reference() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from the config models by `gallery schema config --markdown`; do not edit by hand",
        "(a test compares the two). Paths are relative to the config file; unknown keys are errors.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    lines += _rows(Config, prefix="")
    return "\n".join(lines) + "\n"


def _rows(model: type[BaseModel], *, prefix: str) -> list[str]:
    rows = []
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        inner = _model_of(info.annotation)
        rows.append(f"| `{key}` | {_type(info.annotation)} | {_default(info)} | {_text(info)} |")
        if inner is not None:
            nested.append((f"{key}[]." if _is_sequence(info.annotation) else f"{key}.", inner))
    for child_prefix, inner in nested:
        rows += _rows(inner, prefix=child_prefix)
    return rows


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        for inner in typing.get_args(candidate):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _is_sequence(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (tuple, list)


def _type(annotation: Any) -> str:
    names = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path",
             timedelta: "duration"}  # fmt: skip
    if annotation in names:
        return names[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (tuple, list):
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"map of {_type(args[0])} to {_type(args[1])}"
    if args and type(None) in args:
        return " or ".join(_type(a) for a in args if a is not type(None)) + " (optional)"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return str(getattr(annotation, "__name__", annotation))


def _default(info: FieldInfo) -> str:
    factory = info.default_factory
    if factory is not None:
        if isinstance(factory, type) and issubclass(factory, BaseModel):
            return "(see below)"
        if factory in (dict, list, tuple):
            return "–"
        return "this host" if getattr(factory, "__name__", "") == "host_platform" else "computed"
    if info.default is PydanticUndefined:
        return "required"
    value = info.default
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value is None or value == ():
        return "–"
    return f"`{value}`"


def _text(info: FieldInfo) -> str:
    text = " ".join((info.description or "").split())
    operators = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
    bounds = [
        f"{op} {getattr(m, attr)}"
        for m in info.metadata
        for attr, op in operators
        if getattr(m, attr, None) is not None
    ]
    return text + (f" ({', '.join(bounds)})" if bounds else "")
