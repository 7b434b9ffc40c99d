"""What a layer holds, recorded the first time it is extracted, so that it can be extracted again
from the file store alone (edge module).

After a layer's blob has been extracted and its digest matched, the extractor's log of its
members — name, type, mode, time, size, link target and the sha256 of each regular file's data —
is written to ``.gallery/store/layers/<hex>.json``. A later build of a backend with that layer
(a reinstall, a rollback target rebuilt by repair, another backend sharing the layer) replays the
log through the same extractor and its rules, linking each file from the store: no blob is read,
decompressed or even fetched. Nothing here is trusted more than the store itself: a log is only
written for a layer whose digest was checked, carries a checksum of its own (a damaged one is
ignored), and a file missing from the store makes the build fall back to the blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gallery.files import read_at_most
from gallery.place.filestore import FileStore

__all__ = ["LayerLog", "RecordedLayer", "RecordedLayers", "StoredData", "StoredFileMissing"]

_FORMAT = 1
_HEX64 = re.compile("[0-9a-f]{64}")
_MAX_RECORD_BYTES = 256 * 1024 * 1024
# name, tar type, mode, mtime, size, link target, sha256 of the data (regular files)
Entry = tuple[str, str, int, int, int, str, str | None]
LayerLog = list[Entry]


class StoredFileMissing(FileNotFoundError):
    """A file a layer record names is no longer in the store (pruned): extract the blob."""


@dataclass(frozen=True, slots=True)
class StoredData:
    """A regular file's data, as the store holds it (what a record's ``extractfile`` gives)."""

    sha256: str


def entry_of(member: tarfile.TarInfo, sha256: str | None) -> Entry:
    return (member.name, member.type.decode("latin-1"), member.mode, int(member.mtime), member.size,
            member.linkname, sha256)  # fmt: skip


class RecordedLayer:
    """A recorded layer, read like a tar archive by the extractor (members in order)."""

    def __init__(self, entries: list[Entry]) -> None:
        self._entries = entries
        self.members: list[tarfile.TarInfo] = []  # what tarfile keeps; the extractor clears it
        self._current: StoredData | None = None

    def __iter__(self) -> Iterator[tarfile.TarInfo]:
        for name, kind, mode, mtime, size, linkname, sha256 in self._entries:
            member = tarfile.TarInfo(name)
            member.type, member.mode, member.mtime = kind.encode("latin-1"), mode, mtime
            member.size, member.linkname = size, linkname
            self._current = StoredData(sha256) if sha256 is not None else None
            yield member

    def extractfile(self, member: tarfile.TarInfo) -> StoredData | None:
        del member  # always the member just yielded
        return self._current

    def complete(self, store: FileStore) -> bool:
        """Whether every regular file is in the store (then no blob is needed)."""
        return all(
            store.has(sha256, store.installed_mode(mode), size)
            for _, _, mode, _, size, _, sha256 in self._entries
            if sha256 is not None
        )


class RecordedLayers:
    def __init__(self, store: FileStore) -> None:
        self._store = store
        self.root = store.root / "layers"

    def path_of(self, digest: str) -> Path:
        return self.root / f"{digest.removeprefix('sha256:')}.json"

    def get(self, digest: str) -> RecordedLayer | None:
        """The layer's record if there is one, intact, and every file it names is stored."""
        if not self._store.enabled:
            return None
        try:
            with self.path_of(digest).open("rb") as handle:
                raw = read_at_most(handle, _MAX_RECORD_BYTES)
            data = json.loads(raw)
            entries = [_entry(item) for item in data["members"]]
            if (
                data.get("format") != _FORMAT
                or data.get("layer") != digest
                or data.get("sha256") != _sum(entries)
            ):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        record = RecordedLayer(entries)
        return record if record.complete(self._store) else None

    def put(self, digest: str, log: LayerLog) -> None:
        """Record a layer whose digest was checked, if every regular file of it is shared."""
        store = self._store
        if not store.enabled or not all(
            store.shares(store.installed_mode(e[2])) for e in log if e[6] is not None
        ):
            return  # a file of its own (writable) cannot be replayed from the store
        body = {"format": _FORMAT, "layer": digest, "sha256": _sum(log), "members": log}
        with contextlib.suppress(OSError):  # a record saves time later; failing to write one is no error
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f".{secrets.token_hex(6)}.tmp"
            tmp.write_text(json.dumps(body, separators=(",", ":")))
            tmp.replace(self.path_of(digest))

    def remove_unreferenced(self, referenced: set[str]) -> int:
        if not self.root.is_dir():
            return 0
        removed = 0
        for path in self.root.iterdir():
            if path.suffix == ".json" and f"sha256:{path.stem}" not in referenced:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _entry(item: Any) -> Entry:
    name, kind, mode, mtime, size, linkname, sha256 = item
    if not (isinstance(name, str) and isinstance(kind, str) and len(kind) == 1 and isinstance(linkname, str)):
        raise ValueError("bad entry")
    if not all(isinstance(n, int) for n in (mode, mtime, size)) or not (
        sha256 is None or isinstance(sha256, str)
    ):
        raise ValueError("bad entry")
    return (name, kind, mode, mtime, size, linkname, sha256)


def _sum(entries: list[Entry]) -> str:
    return hashlib.sha256(json.dumps(entries, separators=(",", ":")).encode()).hexdigest()
