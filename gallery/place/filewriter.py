"""The file writes of an extraction, done on a thread of their own (edge module).

Reading a tar stream (headers, data, hashes) is Python work on the main thread; creating the
files (open, write, fchmod, utime, close) is system calls, which on a real disk are
most of an extraction's time and release the GIL. ``FileWriter`` runs the second behind the
first, in the order given, so the two overlap: GNU tar gets the same overlap from running gzip
in a process of its own.

The extractor decides everything; this thread only carries out what it was handed: files are
still created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` at paths the extractor has checked, and anything
that must look at the disk (a removal, a whiteout, a hardlink's target) first waits for the
writes before it (``settle``). A failed system call stops the thread: the error is raised to the
extractor at its next call.

File data travels in a fixed pool of chunks (8 × 1 MiB) read into with ``readinto`` and reused:
memory stays bounded, and no buffer is allocated on one thread and freed on the other — with
fresh ``bytes`` per read, glibc's heap fragmented to twice the old peak RSS (100 MB against 44 on
the 41k-file image).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

from gallery.files import write_all
from gallery.place.filestore import FileStore
from gallery.place.interrupts import raise_if_interrupted
from gallery.place.layer_records import StoredFileMissing
from gallery.place.writeback import Writeback, WritebackMode

__all__ = ["FileWriter", "PendingFile"]

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK_SIZE = 1024 * 1024
_CHUNKS = 8
_BATCH_OPS = 256
# Flush each file while the extraction goes on (gallery.place.writeback)? Off: either way it made
# a 41,000-file install slower on this project's test VM than the flush before the swap it
# shortens (bench/writeback_ab.py; docs/performance.md, "Flushing while extracting").
WRITEBACK: WritebackMode = "off"


class PendingFile:
    """A regular file handed to the writer: created, filled, then given its mode and time."""

    __slots__ = ("fd", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None


# kind, file, data, mode, mtime in ns, sha256 (to give the file to the store)
_Op = tuple[str, PendingFile, memoryview | None, int, int, str | None]
_Batch = tuple[list[_Op], bytearray | None]  # its operations and the chunk their data is in


class FileWriter:
    def __init__(
        self, *, store: FileStore | None = None, chunk_size: int = _CHUNK_SIZE, chunks: int = _CHUNKS
    ) -> None:
        self._store = store
        self._chunk_size = chunk_size
        self._chunks_left = chunks  # not yet allocated
        self._max_batches = chunks
        self._changed = threading.Condition()
        self._queue: deque[_Batch] = deque()
        self._free: list[bytearray] = []  # chunks the writer is done with
        self._ops: list[_Op] = []  # the extractor's batch, handed over whole (one wake-up each)
        self._chunk: bytearray | None = None  # the extractor's: data is read into it at _used
        self._used = 0
        self._busy = False
        self._stopping = False
        self._error: OSError | None = None
        self._open: set[PendingFile] = set()  # touched by the writer thread only
        self._writeback = Writeback(WRITEBACK) if WRITEBACK != "off" else None
        self._thread = threading.Thread(target=self._run, name="extract-writer", daemon=True)
        self._thread.start()

    # -- the extractor's side ------------------------------------------------------------------

    def write_file(
        self, path: Path, source: io.BufferedIOBase, size: int, mode: int, mtime_ns: int
    ) -> tuple[int, str]:
        """Read up to ``size`` bytes of ``source`` into a new file at ``path`` (which the
        extractor checked), hashing them on the way; the count read (less than ``size`` if
        ``source`` ended first: the caller refuses the member) and the sha256.

        A file the store shares (its mode has no write bit) is linked from the store when the
        store has its content: one that fits a chunk is read whole first, so that it is never
        written; a bigger one is written, then given back to the store's copy."""
        digest = hashlib.sha256()
        pending = PendingFile(path)
        store = self._store if self._store is not None and self._store.shares(mode) else None
        if store is not None and size <= self._chunk_size:
            data = self._read_whole(source, size, digest)
            sha256 = digest.hexdigest()
            if len(data) == size:
                kind = "place" if store.has(sha256, mode, size) else "whole"
                self._submit((kind, pending, data, mode, mtime_ns, sha256))
            return len(data), sha256
        self._submit(("create", pending, None, 0, 0, None))
        copied = 0
        while copied < size:
            raise_if_interrupted()  # a big file spans many reads of a slow download
            space = self._space(size - copied)
            got = source.readinto(space) or 0
            if not got:
                break
            data = space[:got]
            digest.update(data)
            self._used += got
            copied += got
            self._submit(("write", pending, data, 0, 0, None))
        sha256 = digest.hexdigest()
        self._submit(("finish", pending, None, mode, mtime_ns, sha256 if store is not None else None))
        return copied, sha256

    def place_stored(self, path: Path, sha256: str, mode: int) -> None:
        """Link the store's copy of a file to ``path`` (a recorded layer replayed): if it has
        gone since the record was checked, the extractor gets ``StoredFileMissing``."""
        self._submit(("stored", PendingFile(path), None, mode, 0, sha256))

    def _read_whole(self, source: io.BufferedIOBase, size: int, digest: Any) -> memoryview:
        """Up to ``size`` bytes of ``source`` in one stretch of a chunk (what it had, if less)."""
        if self._chunk is not None and len(self._chunk) - self._used < size:
            self._hand_over()
        space = self._space(size)
        filled = 0
        while filled < size:
            got = source.readinto(space[filled:]) or 0
            if not got:
                break
            filled += got
        data = space[:filled]
        digest.update(data)
        self._used += filled
        return data

    def settle(self) -> None:
        """Wait until everything handed over is on disk (or raise what failed)."""
        self._hand_over()
        with self._changed:
            while (self._queue or self._busy) and self._error is None:
                self._changed.wait()
            self._raise_error()

    def close(self) -> None:
        """``settle``, then end the thread."""
        try:
            self.settle()
            if self._writeback is not None:
                self._writeback.close()
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop what is still queued, end the thread once the call in progress returns, and close
        any file it left open (the extraction failed: staging is about to be discarded)."""
        self._ops.clear()
        with self._changed:
            self._queue.clear()
            self._stopping = True
            self._changed.notify_all()
        self._thread.join()
        if self._writeback is not None:
            self._writeback.abort()

    def _space(self, wanted: int) -> memoryview:
        """Room for at most ``wanted`` bytes in the current chunk (a fresh one if it is full)."""
        if self._chunk is not None and self._used == len(self._chunk):
            self._hand_over()
        if self._chunk is None:
            self._chunk, self._used = self._take_chunk(), 0
        end = min(len(self._chunk), self._used + wanted)
        return memoryview(self._chunk)[self._used : end]

    def _take_chunk(self) -> bytearray:
        with self._changed:
            if not self._free and self._chunks_left:
                self._chunks_left -= 1
                return bytearray(self._chunk_size)
            while not self._free and self._error is None:
                self._changed.wait()
            self._raise_error()
            return self._free.pop()

    def _submit(self, op: _Op) -> None:
        self._raise_error()  # read without the lock: set once, never cleared
        self._ops.append(op)
        if len(self._ops) >= _BATCH_OPS:
            self._hand_over()

    def _hand_over(self) -> None:
        if not self._ops and self._chunk is None:
            return
        batch: _Batch = (self._ops, self._chunk)
        self._ops, self._chunk = [], None
        with self._changed:
            while len(self._queue) >= self._max_batches and self._error is None:
                self._changed.wait()
            self._raise_error()
            self._queue.append(batch)
            self._changed.notify_all()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._changed:
                    while not self._queue and not self._stopping:
                        self._changed.wait()
                    if self._stopping:
                        return
                    ops, chunk = self._queue.popleft()
                    self._busy = True
                try:
                    for op in ops:
                        self._apply(op)
                except OSError as exc:
                    with self._changed:
                        self._error = exc
                        self._stopping = True
                finally:
                    ops.clear()  # the views into the chunk go before the chunk is reused
                    with self._changed:
                        self._busy = False
                        if chunk is not None:
                            self._free.append(chunk)
                        self._changed.notify_all()
        finally:
            for pending in self._open:
                if pending.fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(pending.fd)
            self._open.clear()

    def _apply(self, op: _Op) -> None:
        kind, pending, data, mode, mtime_ns, sha256 = op
        if kind == "stored":
            try:
                if self._store is None or sha256 is None:  # pragma: no cover - only made with both
                    raise FileNotFoundError(pending.path)
                self._store.place(sha256, mode, pending.path)
            except OSError as exc:
                raise StoredFileMissing(f"{sha256} is no longer stored: {exc}") from exc
            return
        if kind == "place":
            store = self._store
            try:
                if store is None or sha256 is None:  # pragma: no cover - only made with both
                    raise FileNotFoundError(pending.path)
                store.place(sha256, mode, pending.path)
                return
            except OSError:
                kind = "whole"  # pruned meanwhile, or refused: a copy of its own, as if new
        if kind == "whole":
            self._apply(("create", pending, None, 0, 0, None))
            self._apply(("write", pending, data, 0, 0, None))
            self._apply(("finish", pending, None, mode, mtime_ns, sha256))
            return
        if kind == "create":
            pending.fd = os.open(pending.path, _CREATE, 0o600)
            self._open.add(pending)
            return
        fd = pending.fd
        if fd is None:  # pragma: no cover - create always comes first
            raise OSError(f"{pending.path} was not created")
        if kind == "write":
            write_all(fd, data if data is not None else b"")
            return
        os.fchmod(fd, mode)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
        self._open.discard(pending)
        pending.fd = None
        if self._writeback is not None:
            self._writeback.hand_over(fd)
        else:
            os.close(fd)
        if sha256 is not None and self._store is not None:
            with contextlib.suppress(OSError):  # the file is correct as it is, only not shared
                self._store.adopt(pending.path, sha256, mode)
