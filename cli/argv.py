"""Global options anywhere on the command line (pure): ``gallery list --config X`` and
``gallery --json list`` mean what ``gallery --config X list`` and ``gallery list --json`` mean.

Before click parses, a global option found after the command moves in front of it, unless that
command has an option of the same name (``lock --capability`` is lock's own), and ``--json``
found before the command moves after it (into the innermost subcommand: ``cache prune``).
Nothing after ``--`` moves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["with_global_options_first"]

# Global options of the main callback: the ones taking a value, and the flags.
_VALUED = ("--config", "-c", "--capability")
_FLAGS = (
    "--debug",
    "--require-integrity",
    "--no-require-integrity",
    "--quiet",
    "-q",
    "--verbose",
    "-v",
    "--no-color",
)


def with_global_options_first(group: Any, ctx: Any, args: Sequence[str]) -> list[str]:
    """``args`` (after the program name) with global options first; ``group`` is the app's click
    group (typer's own vendored click: duck-typed here)."""
    args = list(args)
    leading, position = _leading(args)
    if position is None:
        return args
    path, commands_end = _command_path(group, ctx, args, position)
    if not path:
        return args
    command = path[-1]
    own = {opt for param in command.params for opt in getattr(param, "opts", ())}
    rest = args[commands_end:]
    moved: list[str] = []
    kept: list[str] = []
    index = 0
    while index < len(rest):
        word = rest[index]
        if word == "--":
            kept += rest[index:]
            break
        name = word.split("=", 1)[0]
        if name in _VALUED and name not in own:
            if "=" in word or index + 1 >= len(rest):
                moved.append(word)
                index += 1
            else:
                moved += rest[index : index + 2]
                index += 2
            continue
        if word in _FLAGS and word not in own:
            moved.append(word)
        else:
            kept.append(word)
        index += 1
    json_first = [w for w in leading if w == "--json"] if "--json" in own else []
    leading = [w for w in leading if w not in json_first]
    return [*leading, *moved, *args[position:commands_end], *json_first, *kept]


def _leading(args: list[str]) -> tuple[list[str], int | None]:
    """The global options before the command, and where the command starts."""
    index = 0
    while index < len(args):
        word = args[index]
        if not word.startswith("-") or word == "--":
            return args[:index], index if word != "--" else None
        index += 2 if word in _VALUED else 1
    return args, None


def _command_path(group: Any, ctx: Any, args: list[str], position: int) -> tuple[list[Any], int]:
    path: list[Any] = []
    current = group
    index = position
    while hasattr(current, "get_command") and index < len(args):
        found = current.get_command(ctx, args[index])
        if found is None:
            break
        path.append(found)
        current = found
        index += 1
    return path, index
