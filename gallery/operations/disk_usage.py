"""What the installed backends take on disk, and how much the file store saves (edge module:
reads metadata and ``lstat``s the recorded files, never their content)."""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gallery.config.models import Config
from gallery.operations.store import BackendStore, file_store_of
from gallery.place.metadata import read_metadata

__all__ = ["BackendUsage", "DiskUsage", "disk_usage", "hard_links_refused"]


@dataclass(frozen=True, slots=True)
class BackendUsage:
    bytes: int  # its files, a hard link inside the tree counted once
    shared: int  # of those, the bytes of files other trees (kept generations included) link too


@dataclass(frozen=True, slots=True)
class DiskUsage:
    backends: dict[str, BackendUsage]
    on_disk: int  # live trees, kept generations and the store, every file once
    with_copies: int  # what the same trees would take with a copy each
    unused_stored: int  # stored files no tree links (`cache prune` removes them)

    def to_json(self) -> dict[str, Any]:
        return {
            "on_disk_bytes": self.on_disk,
            "without_sharing_bytes": self.with_copies,
            "unused_stored_bytes": self.unused_stored,
        }


def disk_usage(config: Config) -> DiskUsage:
    store = BackendStore(config.backends_path)
    inodes: dict[tuple[int, int], tuple[int, set[str]]] = {}  # inode -> size, trees linking it
    trees: dict[str, set[tuple[int, int]]] = {}
    for metadata in store.installed():
        if metadata.meta_backend_for is not None:
            continue
        roots = [config.backends_path / metadata.name, *store.state.kept(metadata.name)]
        for number, root in enumerate(roots):
            tree = metadata.name if number == 0 else f"{metadata.name}@{root.name}"
            recorded = metadata if number == 0 else read_metadata(root)
            trees[tree] = set()
            for record in recorded.files if recorded is not None else ():
                if record.get("type") not in ("file", "hardlink"):
                    continue
                with contextlib.suppress(OSError):
                    info = os.lstat(root / str(record["path"]))
                    key = (info.st_dev, info.st_ino)
                    inodes.setdefault(key, (info.st_size, set()))[1].add(tree)
                    trees[tree].add(key)
    backends = {
        name: BackendUsage(
            sum(inodes[key][0] for key in keys),
            sum(inodes[key][0] for key in keys if len(inodes[key][1]) > 1),
        )
        for name, keys in trees.items()
        if "@" not in name
    }
    unused = sum(item.size for item in file_store_of(config).stored() if item.links == 1)
    return DiskUsage(
        backends,
        on_disk=sum(size for size, _ in inodes.values()) + unused,
        with_copies=sum(size * len(users) for size, users in inodes.values()),
        unused_stored=unused,
    )


def hard_links_refused(backends: Path) -> str | None:
    """Why the filesystem of ``backends`` refuses hard links (the store then clones or copies
    files), or ``None``; tried with a scratch file in our state directory."""
    state = BackendStore(backends).state.root
    if not state.is_dir():
        return None
    probe = state / f".link-probe-{secrets.token_hex(4)}"
    try:
        probe.touch()
    except OSError:
        return None  # not writable: the directory check says so
    try:
        os.link(probe, probe.with_suffix(".2"))
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        for path in (probe, probe.with_suffix(".2")):
            path.unlink(missing_ok=True)
    return None
