"""The file writes of an extraction, done on a thread of their own (edge module).

Reading a tar stream (headers, data, hashes) is Python work on the main thread; creating the
files (open, write, writeback, fchmod, utime, close) is system calls, which on a real disk are
most of an extraction's time and release the GIL. ``FileWriter`` runs the second behind the
first, in the order given, so the two overlap: GNU tar gets the same overlap from running gzip
in a process of its own.

The extractor decides everything; this thread only carries out what it was handed: files are
still created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` at paths the extractor has checked, and anything
that must look at the disk (a removal, a whiteout, a hardlink's target) first waits for the
writes before it (``settle``). At most ``max_pending`` bytes wait, so memory stays bounded. A
failed system call stops the thread: the error is raised to the extractor at its next call.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import deque
from pathlib import Path

from gallery.files import start_writeback, write_all

__all__ = ["FileWriter", "PendingFile"]

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_PENDING = 8 * 1024 * 1024
_BATCH_OPS = 256
_BATCH_BYTES = 2 * 1024 * 1024


class PendingFile:
    """A regular file handed to the writer: created, filled, then given its mode and time."""

    __slots__ = ("fd", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None


_Op = tuple[str, PendingFile, bytes | None, int, int]  # kind, file, data, mode, mtime in ns


class FileWriter:
    def __init__(self, *, max_pending: int = _MAX_PENDING) -> None:
        self._max_pending = max_pending
        self._changed = threading.Condition()
        self._queue: deque[list[_Op]] = deque()
        self._batch: list[_Op] = []  # the extractor's, handed over whole (one wake-up per batch)
        self._batch_bytes = 0
        self._pending = 0
        self._busy = False
        self._stopping = False
        self._error: OSError | None = None
        self._open: set[PendingFile] = set()  # touched by the writer thread only
        self._thread = threading.Thread(target=self._run, name="extract-writer", daemon=True)
        self._thread.start()

    # -- the extractor's side ------------------------------------------------------------------

    def create(self, path: Path) -> PendingFile:
        pending = PendingFile(path)
        self._submit(("create", pending, None, 0, 0))
        return pending

    def write(self, pending: PendingFile, data: bytes) -> None:
        self._submit(("write", pending, data, 0, 0))

    def finish(self, pending: PendingFile, mode: int, mtime_ns: int) -> None:
        self._submit(("finish", pending, None, mode, mtime_ns))

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
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop what is still queued, end the thread once the call in progress returns, and close
        any file it left open (the extraction failed: staging is about to be discarded)."""
        self._batch.clear()
        with self._changed:
            self._pending -= sum(len(op[2] or b"") for batch in self._queue for op in batch)
            self._queue.clear()
            self._stopping = True
            self._changed.notify_all()
        self._thread.join()

    def _submit(self, op: _Op) -> None:
        self._raise_error()  # read without the lock: set once, never cleared
        self._batch.append(op)
        self._batch_bytes += len(op[2] or b"")
        if len(self._batch) >= _BATCH_OPS or self._batch_bytes >= _BATCH_BYTES:
            self._hand_over()

    def _hand_over(self) -> None:
        if not self._batch:
            return
        batch, size = self._batch, self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        with self._changed:
            while self._pending and self._pending + size > self._max_pending and self._error is None:
                self._changed.wait()
            self._raise_error()
            self._queue.append(batch)
            self._pending += size
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
                    batch = self._queue.popleft()
                    self._busy = True
                try:
                    for op in batch:
                        self._apply(op)
                except OSError as exc:
                    with self._changed:
                        self._error = exc
                        self._stopping = True
                finally:
                    with self._changed:
                        self._busy = False
                        self._pending -= sum(len(op[2] or b"") for op in batch)
                        self._changed.notify_all()
        finally:
            for pending in self._open:
                if pending.fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(pending.fd)
            self._open.clear()

    def _apply(self, op: _Op) -> None:
        kind, pending, data, mode, mtime_ns = op
        if kind == "create":
            pending.fd = os.open(pending.path, _CREATE, 0o600)
            self._open.add(pending)
            return
        fd = pending.fd
        if fd is None:  # pragma: no cover - create always comes first
            raise OSError(f"{pending.path} was not created")
        if kind == "write":
            write_all(fd, data or b"")
            return
        start_writeback(fd)  # the flush before the swap then waits for little
        os.fchmod(fd, mode)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
        self._open.discard(pending)
        pending.fd = None
        os.close(fd)
