"""A blob's bytes for the extractor while they are still arriving (edge module).

A layer download writes into its partial file in the cache (``BlobWriter``); with a ``LayerFeed``
watching it, the extractor reads the same file behind the writer, from another thread, as far as
it has been written, and waits for more. Nothing here trusts the bytes: the extractor hashes what it
reads and staging is discarded unless the digest matches at the end of the stream (the contract:
streaming is allowed, trusting early is not). Each byte reaches the extractor once: a resumed
download appends; a server that ignores ``Range`` makes the writer start over, which the reader
reports as ``FeedRestarted`` (the caller extracts again from the cache once the blob is there).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

__all__ = ["FeedFailed", "FeedReader", "FeedRestarted", "LayerFeed"]

_WAIT = 0.1  # seconds between checks, so that Ctrl-C reaches a waiting main thread at once


class FeedFailed(Exception):
    """The download behind the feed failed (its own error is ``cause``)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class FeedRestarted(Exception):
    """The writer dropped what it had written (the server ignored Range): bytes already read
    are no longer the blob's beginning."""


class LayerFeed:
    """What the writer has made available of one blob; the writer's side is ``opened``, ``wrote``,
    ``restarted``, ``finished`` and ``failed`` (any thread)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._path: Path | None = None
        self._available = 0
        self._restarts = 0
        self._done = False
        self._error: BaseException | None = None
        self._stopped = threading.Event()
        self._read: int | None = None  # how far the extractor has read (None: not started)

    # -- the writer's side --------------------------------------------------------------------

    def opened(self, path: Path, offset: int) -> None:
        """``path`` holds the first ``offset`` bytes already (a resumed partial, or the whole
        cached blob that another process fetched meanwhile)."""
        with self._changed:
            self._path, self._available = path, offset
            self._changed.notify_all()

    def wrote(self, offset: int) -> None:
        with self._changed:
            self._available = offset
            self._changed.notify_all()

    def restarted(self) -> None:
        with self._changed:
            self._restarts += 1
            self._available = 0
            self._read = None  # the extractor reads it again from the cache, later
            self._changed.notify_all()

    def finished(self, path: Path) -> None:
        """Every byte is there and checked; ``path``: where the blob is now (committed)."""
        with self._changed:
            self._path, self._done = path, True
            self._changed.notify_all()

    def failed(self, error: BaseException) -> None:
        with self._changed:
            self._error = error
            self._changed.notify_all()

    @property
    def arrived(self) -> int:
        """Bytes of the blob written so far."""
        return self._available

    def keeping_up(self, slack: int) -> bool:
        """Whether the extractor reads this blob while it downloads and is within ``slack``
        bytes of what has arrived: it waits for the link, not the link for it."""
        read = self._read
        return read is not None and not self._done and self._available - read <= slack

    # -- the reader's side --------------------------------------------------------------------

    def reader(self) -> FeedReader:
        return FeedReader(self)

    def stop(self) -> None:
        """The reader gives up (the install failed elsewhere): a waiting read returns at once."""
        self._stopped.set()
        self._read = None
        with self._changed:
            self._changed.notify_all()

    def _wait_committed(self, restarts: int) -> tuple[Path, int, bool]:
        """The partial was renamed away under us: wait for ``finished`` to name its new path."""
        with self._changed:
            while not self._done:
                if self._error is not None:
                    raise FeedFailed(self._error)
                if self._restarts != restarts:
                    raise FeedRestarted()
                self._changed.wait(_WAIT)
            if self._path is None:  # pragma: no cover - finished always names a path
                raise FeedFailed(RuntimeError("finished without a path"))
            return self._path, self._available, True

    def _wait(self, position: int, restarts: int) -> tuple[Path, int, bool]:
        """Block until bytes beyond ``position`` are there, or the end; the path, how many bytes
        are there, and whether that is all of them."""
        with self._changed:
            while True:
                if self._error is not None:
                    raise FeedFailed(self._error)
                if self._restarts != restarts:
                    raise FeedRestarted()
                if self._stopped.is_set():
                    raise FeedFailed(RuntimeError("stopped"))
                if self._path is not None and (self._available > position or self._done):
                    return self._path, self._available, self._done
                self._changed.wait(_WAIT)


class FeedReader:
    """A read-only stream of the feed's blob, from its first byte (``read`` blocks for more);
    the extractor reads it through a ``HashingReader``."""

    def __init__(self, feed: LayerFeed) -> None:
        self._feed = feed
        self._position = 0
        self._fd: int | None = None
        self._restarts = feed._restarts

    def read(self, size: int = -1) -> bytes:
        if self._feed._read is None:
            self._feed._read = self._position
        path, available, done = self._feed._wait(self._position, self._restarts)
        if self._position >= available and done:
            return b""
        if self._fd is None:
            # The writer renames the partial into blobs/ when it commits: a descriptor opened
            # before that keeps reading the same file; one opened after uses the new path.
            try:
                self._fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                path, available, done = self._feed._wait_committed(self._restarts)
                try:
                    self._fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                except FileNotFoundError:
                    # Committed, then removed by a concurrent `cache prune` before this first
                    # read: the caller fetches it again, as for any blob lost from the cache.
                    raise FeedRestarted() from None
        want = available - self._position if size < 0 else min(size, available - self._position)
        data = os.pread(self._fd, want, self._position)
        self._position += len(data)
        self._feed._read = self._position
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FeedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
