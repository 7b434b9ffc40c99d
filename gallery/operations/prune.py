"""``gallery cache prune``: drop what nothing installed needs — cache blobs, partial downloads no
process is writing, unpacked bundles, and file store objects no tree uses (edge module)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gallery.config.models import Config
from gallery.operations.lockfile import read_lock
from gallery.operations.store import BackendStore, file_store_of
from gallery.place.layer_records import RecordedLayers
from gallery.prepare.blobcache import BlobCache
from gallery.prepare.cache_users import cache_users
from gallery.trees import remove_tree, scanned_tree

__all__ = ["PruneResult", "cache_of", "prune_cache", "prune_file_store", "referenced_blobs"]


@dataclass(frozen=True)
class PruneResult:
    removed: tuple[str, ...]
    bytes_freed: int
    kept: int
    partials_removed: int = 0
    bundles_removed: int = 0  # unpacked copies of bundle tars (install --from unpacks again)
    stored_files_removed: int = 0  # file store objects no installed tree uses

    def to_json(self) -> dict[str, Any]:
        return {
            "removed": list(self.removed),
            "bytes_freed": self.bytes_freed,
            "kept": self.kept,
            "partials_removed": self.partials_removed,
            "bundles_removed": self.bundles_removed,
            "stored_files_removed": self.stored_files_removed,
        }


def referenced_blobs(config: Config) -> set[str]:
    """Layer digests of installed backends and of their kept generations, in this config's
    ``backends_path`` and in every other one recorded as using the same cache."""
    directories = {config.backends_path.resolve(), *cache_users(config.cache_path)}
    referenced: set[str] = set()
    for directory in sorted(directories):
        referenced |= BackendStore(directory).referenced_blobs()
    return referenced


def cache_of(config: Config) -> BlobCache:
    return BlobCache(config.cache_path / "blobs", lock_timeout=config.timeouts.lock)


def prune_cache(config: Config, *, keep: Iterable[str] = (), lock_files: Iterable[Path] = ()) -> PruneResult:
    """Remove cached blobs nothing references, and partial downloads no process is writing.

    ``keep``: more digests to keep; ``lock_files``: keep the layers they pin (what a fleet will
    preload). Raises ConfigError for an unreadable lock file.

    A blob being fetched right now is not in ``blobs/`` yet (it is a partial under its own lock),
    so pruning never races an install's download; a blob another command is about to extract is
    re-fetched by it if pruned (it is verified by digest either way).
    """
    referenced = referenced_blobs(config) | set(keep)
    for lock_file in lock_files:
        referenced |= read_lock(lock_file).blob_digests()
    cache = cache_of(config)
    removed: list[str] = []
    freed = 0
    kept = 0
    for digest in cache.digests():
        if digest in referenced:
            kept += 1
            continue
        freed += cache.size(digest)
        cache.evict(digest)
        removed.append(digest)
    partials, partial_bytes = cache.prune_partials()
    freed += partial_bytes
    bundles = 0
    unpacked = config.cache_path / "bundles"
    if unpacked.is_dir():
        for directory in unpacked.iterdir():
            # An install --from may be reading a recent one right now; an hour old is done with.
            if time.time() - directory.lstat().st_mtime < 3600:
                continue
            with scanned_tree(directory) as scan:
                freed += sum(
                    entry.stat(follow_symlinks=False).st_size
                    for _base, entries in scan.walk()
                    for entry in entries
                    if entry.is_file(follow_symlinks=False)
                )
            remove_tree(directory)
            bundles += 1
    stored, stored_bytes = prune_file_store(config)
    return PruneResult(tuple(removed), freed + stored_bytes, kept, partials, bundles, stored)


def prune_file_store(config: Config) -> tuple[int, int]:
    """Remove the file store's objects no tree uses; the count and the bytes freed.

    An object a tree uses is one more hard link to it (kept generations and staging directories
    are trees too), so an object with one link is unused — unless trees hold reflinks or copies of
    it, which the recorded files say. No lock is needed: an install that finds an object gone
    after checking for it writes its own copy (``FileStore.place``), and a tree never depends on
    an object it does not link.
    """
    store = BackendStore(config.backends_path)
    file_store = file_store_of(config)
    referenced = store.referenced_files() if file_store.objects.is_dir() else set()
    count = freed = 0
    for item in file_store.stored():
        if item.links > 1 or (item.sha256, item.mode) in referenced:
            continue
        file_store.remove(item)
        count += 1
        freed += item.size
    file_store.remove_stale_temporaries(older_than=3600)
    # A record replays a layer from stored files; once they may be gone, it is of no use.
    RecordedLayers(file_store).remove_unreferenced(store.referenced_blobs())
    return count, freed
