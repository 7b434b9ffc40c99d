"""Content-addressed blob cache: ``cache_path/blobs/sha256/<hex>``, verified blobs only (edge module).

A blob is streamed into ``cache_path/partial/<hex>`` while being hashed (bookkeeping lives beside
``blobs/``, never in it, so a failed fetch leaves ``blobs/`` exactly as it was); only when its size and digest
match is it fsync'd and renamed into ``blobs/sha256/<hex>``. A partial file survives a dropped
connection so the next attempt can resume with ``Range`` (its bytes are re-hashed first, so a
resumed blob is checked as a whole). Failures are never cached: a blob that does not match is
deleted. Reading a cached blob re-hashes it as it goes (``HashingReader``); a bad one is evicted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from gallery.digests import is_digest
from gallery.errors import DigestMismatch
from gallery.filelocks import LockBusy, held
from gallery.files import fsync_directory
from gallery.prepare.streaming import LayerFeed

__all__ = ["BlobCache", "BlobWriter", "HashingReader"]

_CHUNK = 1024 * 1024


def _hex(digest: str) -> str:
    if not is_digest(digest):
        raise DigestMismatch(f"{digest!r} is not a sha256 digest; refusing to use it as a cache path")
    return digest.removeprefix("sha256:")


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class HashingReader:
    """A read-only stream that hashes and counts everything read through it."""

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._hash.update(data)
        self.count += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        """Read to the end (tar streams may stop before trailing padding)."""
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class BlobWriter:
    """Receives a blob's bytes (possibly resuming a partial file); ``commit`` checks and publishes."""

    def __init__(self, cache: BlobCache, digest: str | None, size: int | None) -> None:
        """``digest``/``size`` ``None``: not known in advance (a tarball without sha256); such a
        download is ``seal``ed outside ``blobs/``, never committed into it."""
        self._cache = cache
        self.digest = digest
        self.size = size
        self._partial = (
            cache.partial_path(digest) if digest else cache.state / "partial" / f"anon-{secrets.token_hex(8)}"
        )
        self._hash = hashlib.sha256()
        self.offset = 0
        self._feed: LayerFeed | None = None
        fd = os.open(self._partial, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        self._file = os.fdopen(fd, "r+b")
        # Resume: re-hash what an earlier attempt wrote; a partial longer than the blob is garbage.
        while chunk := self._file.read(_CHUNK):
            self._hash.update(chunk)
            self.offset += len(chunk)
        if digest is None or (size is not None and self.offset > size):
            self.restart()
        elif self.offset == size and not self.complete:
            self.restart()  # every byte there, and not the blob: garbage

    @property
    def path(self) -> Path:
        """The partial file being written."""
        return self._partial

    def watch(self, feed: LayerFeed) -> None:
        """Let ``feed`` follow the bytes as they are written (each write is flushed to the file)."""
        self._file.flush()
        self._feed = feed
        feed.opened(self._partial, self.offset)

    @property
    def complete(self) -> bool:
        """Every byte of the blob is there and hashes to its digest: a resumed partial (a process
        killed between its last byte and the commit) that only needs committing. Asking a
        registry for ``Range: bytes=SIZE-`` instead gets a 416 whose body distribution 2.8 sends
        under the blob's Content-Length, which reads as a truncated response."""
        return (
            self.digest is not None
            and self.offset == self.size
            and "sha256:" + self._hash.hexdigest() == self.digest
        )

    def restart(self) -> None:
        """Drop what was written (the server ignored Range, or the partial is bad)."""
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.sha256()
        self.offset = 0
        if self._feed is not None:
            self._feed.restarted()

    def write(self, chunk: bytes) -> None:
        if self.size is not None and self.offset + len(chunk) > self.size:
            raise DigestMismatch(
                f"blob {self.digest}: more than the {self.size} bytes its descriptor declares; discarded"
            )
        self._file.write(chunk)
        self._hash.update(chunk)
        self.offset += len(chunk)
        if self._feed is not None:
            self._file.flush()
            self._feed.wrote(self.offset)

    def commit(self) -> Path:
        """Check size and digest, fsync, rename into place.

        Raises:
            DigestMismatch: the bytes are not the blob that was asked for (the partial is deleted).
        """
        if self.digest is None:  # only bytes checked against a digest known in advance are cached
            raise DigestMismatch("a blob of no expected digest cannot be committed to the cache")
        self._check()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._cache.path(self.digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._partial.replace(final)
        fsync_directory(final.parent)
        return final

    def seal(self) -> tuple[Path, str]:
        """Finish a scratch download (no expected digest): it stays outside ``blobs/``; its path
        and the digest of what was received. The caller deletes it after use."""
        actual = self._check()
        self._file.flush()
        self._file.close()
        return self._partial, actual

    def _check(self) -> str:
        actual = "sha256:" + self._hash.hexdigest()
        # The digest decides (a size is only ever given with its digest, and write() already
        # refuses bytes beyond it): a short or a different blob hashes to something else.
        if self.digest is not None and actual != self.digest:
            self.discard()
            raise DigestMismatch(
                f"blob {self.digest}: received {self.offset} bytes hashing to {actual}, "
                f"expected {self.size} bytes; nothing was cached"
            )
        self.digest = actual
        return actual

    def close(self) -> None:
        """Keep the partial file for a later resume."""
        if not self._file.closed:
            self._file.close()

    def discard(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self._partial.unlink()


class BlobCache:
    def __init__(self, root: Path, *, lock_timeout: float = 600.0) -> None:
        """``root`` is ``cache_path/blobs``; partial downloads and locks go to its parent.
        ``lock_timeout``: how long to wait for another process fetching the same blob."""
        self.root = root
        self.state = root.parent
        self._lock_timeout = lock_timeout

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / _hex(digest)

    def partial_path(self, digest: str) -> Path:
        return self.state / "partial" / _hex(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def writer(self, digest: str | None, size: int | None) -> BlobWriter:
        (self.state / "partial").mkdir(parents=True, exist_ok=True)
        return BlobWriter(self, digest, size)

    def scratch(self) -> BlobWriter:
        """A download of no expected digest (an unverified tarball): ``seal`` leaves it outside
        ``blobs/``, which holds only bytes checked against a digest known in advance."""
        return self.writer(None, None)

    @contextlib.contextmanager
    def locked(self, digest: str, *, timeout: float | None = None) -> Iterator[None]:
        """Hold the blob's lock while fetching it (or, ``timeout`` 0, removing its partial):
        processes sharing the cache download it once and never write into the same partial file.

        Raises: LockBusy."""
        wait = self._lock_timeout if timeout is None else timeout
        with held(
            self.state / "locks" / f"{_hex(digest)}.lock", wait, f"another process is fetching blob {digest}"
        ):
            yield

    def digests(self) -> list[str]:
        """Every cached blob's digest (by its file name), sorted."""
        root = self.root / "sha256"
        names = sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []
        return [f"sha256:{name}" for name in names if is_digest(f"sha256:{name}")]

    def intact(self, digest: str) -> bool:
        """The cached file is a regular file whose content hashes to ``digest``."""
        path = self.path(digest)
        if not path.is_file() or path.is_symlink():
            return False
        with self.reading(digest) as reader:
            reader.drain()
        return reader.digest == digest

    def size(self, digest: str) -> int:
        return self.path(digest).lstat().st_size

    def prune_partials(self, *, scratch_age: float = 86400.0) -> tuple[int, int]:
        """Remove partial downloads no process is writing (a blob's partial under its free lock; a
        scratch download once ``scratch_age`` seconds old); returns (count, bytes)."""
        directory = self.state / "partial"
        removed = freed = 0
        for partial in sorted(directory.iterdir()) if directory.is_dir() else []:
            try:
                if partial.name.startswith("anon-"):  # written without a lock: leave recent ones
                    if time.time() - partial.lstat().st_mtime < scratch_age:
                        continue
                    size = partial.lstat().st_size
                    partial.unlink()
                elif is_digest(f"sha256:{partial.name}"):
                    with self.locked(f"sha256:{partial.name}", timeout=0):
                        size = partial.lstat().st_size
                        partial.unlink()
                else:
                    continue
            except (LockBusy, OSError):
                continue
            removed, freed = removed + 1, freed + size
        return removed, freed

    @contextlib.contextmanager
    def reading(self, digest: str, *, path: Path | None = None) -> Iterator[HashingReader]:
        """Open a cached blob (or the scratch file ``path`` holding it); the caller checks
        ``reader.digest`` after draining it."""
        with (path or self.path(digest)).open("rb") as handle:
            yield HashingReader(handle)

    def evict(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()
