"""What LocalAI leaves in ``backends_path`` besides backends, and which gallery installed what.

LocalAI (core/gallery/backends.go, upgrade.go) stages an install in ``<name>.install-tmp``
(keeping the old tree as ``<name>.install-backup`` during the swap) and an upgrade in
``<name>.upgrade-tmp`` (the old tree as ``<name>.backup``); it removes them when it finishes, so
one that stays is the trace of an interrupted LocalAI. A directory with ``run.sh`` and no
``metadata.json`` is a sideloaded backend: LocalAI loads it. LocalAI's metadata records the
gallery by URL only; ``gallery.verify.recheck.recorded_gallery`` maps it back to a configured one.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gallery.names import is_valid_name

__all__ = [
    "LEFTOVER_SUFFIXES",
    "LOCALAI_IDLE_SECONDS",
    "Leftover",
    "is_sideloaded",
    "leftover_of",
    "system_backends",
]

LEFTOVER_SUFFIXES = (".install-tmp", ".install-backup", ".upgrade-tmp", ".backup")
# A leftover younger than this may belong to a LocalAI that is still working (it holds no lock we
# could see): fsck --repair leaves it alone (docs/localai.md).
LOCALAI_IDLE_SECONDS = 3600.0
_MAX_ENTRIES_CHECKED = 10_000


@dataclass(frozen=True, slots=True)
class Leftover:
    path: Path
    backend: str
    kind: Literal["staging", "backup"]

    def idle_for(self) -> float:
        """Seconds since the leftover or one of its top-level entries last changed (one level only:
        nothing walks the tree; LocalAI writes at the top while it extracts)."""
        newest = _mtime(self.path)
        try:
            with os.scandir(self.path) as entries:
                for number, entry in enumerate(entries):
                    if number >= _MAX_ENTRIES_CHECKED:
                        break
                    newest = max(newest, _lstat_mtime(entry))
        except OSError:
            pass
        return time.time() - newest


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


def _lstat_mtime(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def leftover_of(path: Path) -> Leftover | None:
    """``path`` as a LocalAI leftover, or ``None``."""
    for suffix in LEFTOVER_SUFFIXES:
        backend = path.name.removesuffix(suffix)
        if backend != path.name and is_valid_name(backend):
            kind: Literal["staging", "backup"] = "staging" if suffix.endswith("-tmp") else "backup"
            return Leftover(path, backend, kind)
    return None


def is_sideloaded(path: Path) -> bool:
    """A backend someone put there by hand: a directory with ``run.sh`` and no ``metadata.json``."""
    try:
        return (
            path.is_dir()
            and not path.is_symlink()
            and (path / "run.sh").is_file()
            and not (path / "metadata.json").exists()
        )
    except OSError:
        return False


def system_backends(root: Path | None) -> list[str]:
    """The backends of LocalAI's read-only ``system_backends_path`` (a directory with ``run.sh``,
    as LocalAI's ListSystemBackends counts them). Never written."""
    if root is None or not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if is_valid_name(child.name) and child.is_dir() and (child / "run.sh").is_file():
            found.append(child.name)
    return found
