"""Small durable-write helpers used by the edge modules."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write_bytes", "fsync_directory", "start_writeback", "sync_filesystem", "write_all"]


def fsync_directory(path: Path) -> None:
    """Make a rename or create inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a part.

    The temporary file lives next to the target (same filesystem, so the rename is atomic) and is
    removed if anything fails.

    Raises:
        OSError: the directory cannot be created or written.
    """
    atomic_write_chunks(path, (data,), mode=mode)


def atomic_write_chunks(path: Path, chunks: Iterable[bytes], *, mode: int = 0o644) -> None:
    """``atomic_write_bytes`` for content produced piece by piece (never held whole in memory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_directory(path.parent)


def sync_filesystem(path: Path) -> None:
    """Flush everything written on ``path``'s filesystem (``syncfs``; ``sync`` where unavailable).

    One call after staging a whole backend is far cheaper than an fsync per file, and makes the
    following rename durable only after the data it points to.
    """
    import ctypes

    # The running process already has libc loaded; ctypes.util.find_library would shell out to
    # ldconfig or gcc (and read the environment) to find it again.
    syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def read_at_most(handle: IO[bytes], limit: int) -> bytes:
    """Up to ``limit + 1`` bytes (so the caller can tell "over the cap"), in 1 MiB reads.

    ``handle.read(limit + 1)`` would allocate the whole cap up front: 256 MB for a metadata.json
    of a few kilobytes.
    """
    chunks: list[bytes] = []
    received = 0
    while received <= limit:
        chunk = handle.read(min(1 << 20, limit + 1 - received))
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """All of ``data`` to ``fd`` (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages now, without waiting for them
    (Linux's ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, what dpkg does while unpacking): the
    flush before a swap then finds little left to write. Not a durability point — the flush is;
    an error here is reported by that flush. Elsewhere, nothing happens."""
    writeback = getattr(os, "sync_file_range", None)
    flag = getattr(os, "SYNC_FILE_RANGE_WRITE", None)
    if writeback is None or flag is None:
        return
    with contextlib.suppress(OSError):
        writeback(fd, 0, 0, flag)
