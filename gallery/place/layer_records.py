"""What a layer holds, recorded the first time it is extracted, so that it can be extracted again
from the file store alone (edge module).

After a layer's blob has been extracted and its digest matched, the extractor's log of its
members — name, type, mode, time, size, link target and the sha256 of each regular file's data —
is written to ``.gallery/store/layers/<hex>.jsonl``. A later build of a backend with that layer
(a reinstall, a rollback target rebuilt by repair, another backend sharing the layer) replays the
log through the same extractor and its rules, linking each file from the store: no blob is read,
decompressed or even fetched. Nothing here is trusted more than the store itself: a log is only
written for a layer whose digest was checked, carries a checksum of its own (a damaged one is
ignored), and a file missing from the store makes the build fall back to the blob.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gallery.files import read_at_most
from gallery.place.filestore import FileStore

__all__ = ["RecordWriter", "RecordedLayer", "RecordedLayers", "StoredData", "StoredFileMissing"]

_FORMAT = 1
_HEX64 = re.compile("[0-9a-f]{64}")
_MAX_RECORD_BYTES = 256 * 1024 * 1024
# name, tar type, mode, mtime, size, link target, sha256 of the data (regular files)
Entry = tuple[str, str, int, int, int, str, str | None]


class StoredFileMissing(FileNotFoundError):
    """A file a layer record names is no longer in the store (pruned): extract the blob."""


@dataclass(frozen=True, slots=True)
class StoredData:
    """A regular file's data, as the store holds it (what a record's ``extractfile`` gives)."""

    sha256: str


def entry_of(member: tarfile.TarInfo, sha256: str | None) -> Entry:
    # The extractor checks the time of files and directories only; a link's may be a pax "inf"
    # or "nan" it never uses, recorded as 0.
    mtime = int(member.mtime) if math.isfinite(member.mtime) else 0
    return (
        member.name,
        member.type.decode("latin-1"),
        member.mode,
        mtime,
        member.size,
        member.linkname,
        sha256,
    )


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


class RecordWriter:
    """A layer's record, written while the layer is extracted (one JSON line per member, never
    held whole: 41,000 members would be tens of MB); ``commit`` once its digest matched."""

    def __init__(self, records: RecordedLayers, digest: str) -> None:
        self._records, self._digest = records, digest
        self._lines: list[str] = []
        self._hash = hashlib.sha256()
        self._tmp: Path | None = None
        self._usable = records.store.enabled

    def append(self, entry: Entry) -> None:
        if not self._usable:
            return
        store = self._records.store
        if entry[6] is not None and not store.shares(store.installed_mode(entry[2])):
            self._usable = False  # a file of its own (writable) cannot be replayed from the store
            return
        self._lines.append(json.dumps(entry, separators=(",", ":")) + "\n")
        if len(self._lines) >= 1024:
            self._flush()

    def commit(self) -> None:
        """Put the record in place (the layer's digest matched); a failure only costs speed later."""
        try:
            if self._usable:
                self._flush()
                trailer = {"format": _FORMAT, "layer": self._digest, "sha256": self._hash.hexdigest()}
                self._flush(json.dumps(trailer) + "\n")
                if self._tmp is not None:
                    target = self._records.path_of(self._digest)
                    if not target.exists():  # new: a build that fails after this takes it back
                        self._records.store.added_records.append(target)
                    self._tmp.replace(target)
                    self._tmp = None
        except OSError:
            pass
        finally:
            self.discard()

    def discard(self) -> None:
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None
        self._lines.clear()

    def _flush(self, trailer: str | None = None) -> None:
        if not self._usable:
            return
        text = "".join(self._lines) if trailer is None else trailer
        self._lines.clear()
        if trailer is None:
            self._hash.update(text.encode())
        try:
            if self._tmp is None:
                store = self._records.store
                store.make_dirs(store.root, self._records.root)
                self._tmp = self._records.root / f".{secrets.token_hex(6)}.tmp"
            with self._tmp.open("a", encoding="utf-8") as handle:
                handle.write(text)
        except OSError:
            self._usable = False


class RecordedLayers:
    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.root = store.root / "layers"

    def path_of(self, digest: str) -> Path:
        return self.root / f"{digest.removeprefix('sha256:')}.jsonl"

    def writer(self, digest: str) -> RecordWriter:
        return RecordWriter(self, digest)

    def get(self, digest: str) -> RecordedLayer | None:
        """The layer's record if there is one, intact, and every file it names is stored."""
        if not self.store.enabled:
            return None
        try:
            with self.path_of(digest).open("rb") as handle:
                raw = read_at_most(handle, _MAX_RECORD_BYTES)
            body, _, trailer = raw.rstrip(b"\n").rpartition(b"\n")
            summary = json.loads(trailer)
            expected = (_FORMAT, digest, hashlib.sha256(body + b"\n" if body else b"").hexdigest())
            if (summary.get("format"), summary.get("layer"), summary.get("sha256")) != expected:
                return None
            entries = [_entry(json.loads(line)) for line in body.split(b"\n")] if body else []
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        record = RecordedLayer(entries)
        return record if record.complete(self.store) else None

    def remove_unreferenced(self, referenced: set[str]) -> int:
        if not self.root.is_dir():
            return 0
        removed = 0
        for path in self.root.iterdir():
            if path.suffix == ".jsonl" and f"sha256:{path.stem}" not in referenced:
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
