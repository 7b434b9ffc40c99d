"""Bounded YAML loading for hostile input (gallery indexes, config files).

PyYAML's safe loader refuses arbitrary tags but not resource attacks: a "billion laughs" document
builds a tiny object graph whose expansion is enormous, and anything that walks it afterwards
(validation, JSON output) never finishes. So before constructing anything we stream the parser's
events once (flat, no recursion) and compute the *expanded* node count and the nesting depth,
counting every alias as the full size of the node it points to. A document over the limits is
refused after reading only as many events as it takes to exceed them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

__all__ = ["YamlLimits", "YamlRefused", "load_bounded_yaml"]

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # C speed when built


@dataclass(frozen=True, slots=True)
class YamlLimits:
    max_bytes: int = 16 * 1024 * 1024
    max_nodes: int = 2_000_000
    max_depth: int = 64


class YamlRefused(ValueError):
    """The document is not acceptable YAML; the message says why (with a line number if known)."""


def load_bounded_yaml(data: bytes, limits: YamlLimits) -> Any:
    """Parse one YAML document within ``limits``; an empty document is ``None``.

    Raises:
        YamlRefused: too large, too deep, too much alias expansion, several documents, a
            non-standard tag, or a syntax error.
    """
    if len(data) > limits.max_bytes:
        raise YamlRefused(f"document is {len(data)} bytes, over the limit of {limits.max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YamlRefused(f"document is not UTF-8 (byte {exc.start})") from exc
    _check_expansion(text, limits)
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise YamlRefused(_describe(exc)) from exc
    finally:
        loader.dispose()


def _check_expansion(text: str, limits: YamlLimits) -> None:
    anchors: dict[str, int] = {}
    # Each open collection: [anchor, expanded size so far].
    stack: list[list[Any]] = []
    total = 0
    documents = 0

    def add(size: int, anchor: str | None) -> None:
        nonlocal total
        if anchor is not None:
            anchors[anchor] = size
        if stack:
            stack[-1][1] += size
        else:
            total += size
        if total + sum(frame[1] for frame in stack) > limits.max_nodes:
            raise YamlRefused(f"document expands to more than {limits.max_nodes} nodes (alias bomb?)")

    loader = _Loader(text)
    try:
        while True:
            event = loader.get_event()  # type: ignore[no-untyped-call]
            if event is None:
                break
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise YamlRefused("several YAML documents in one file; expected one")
            elif isinstance(event, yaml.ScalarEvent):
                add(1, event.anchor)
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor not in anchors:
                    raise YamlRefused(f"alias *{event.anchor} refers to an unknown anchor")
                add(anchors[event.anchor], None)
            elif isinstance(event, yaml.CollectionStartEvent):
                if len(stack) >= limits.max_depth:
                    raise YamlRefused(f"nesting deeper than {limits.max_depth} levels")
                stack.append([event.anchor, 1])
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, size = stack.pop()
                add(size, anchor)
    except yaml.YAMLError as exc:
        raise YamlRefused(_describe(exc)) from exc
    finally:
        loader.dispose()


def _describe(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is not None:
        return f"YAML error at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return f"YAML error: {problem}"
