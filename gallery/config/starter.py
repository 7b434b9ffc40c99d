"""The starter configs ``gallery init`` writes (``starters/*.yaml``, package data).

The LocalAI starter is, byte for byte, ``galleries/localai.yaml`` (a test holds them equal).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from gallery.errors import OperationalError, UsageError

__all__ = ["starter_config", "write_starter"]


def starter_config(*, localai: bool = False) -> str:
    """A commented config that loads as it is: a generic one (strict mode, one example gallery
    to rename), or LocalAI's public gallery with the signature policy LocalAI publishes."""
    name = "localai.yaml" if localai else "default.yaml"
    return (resources.files("gallery.config") / "starters" / name).read_text(encoding="utf-8")


def write_starter(path: Path, *, localai: bool = False, force: bool = False) -> Path:
    """Write ``starter_config`` to ``path`` (never over an existing file unless ``force``).

    Raises:
        UsageError: ``path`` exists and ``force`` is not given.
        OperationalError: it cannot be written.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise UsageError(
            f"{path} exists; not overwritten", hint="edit it, or pass --force to replace it"
        ) from None
    except OSError as exc:
        raise OperationalError(f"cannot write {path}: {exc.strerror or exc}",
                               hint="choose another path with --config FILE") from exc  # fmt: skip
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(starter_config(localai=localai))
    return path
