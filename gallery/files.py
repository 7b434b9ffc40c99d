"""Small durable-write helpers used by the edge modules."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write_bytes",
    "fsync_directory",
    "libc_function",
    "start_writeback",
    "sync_file_range_write",
    "sync_filesystem",
    "syncfs_once",
    "write_all",
]


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
    if not syncfs_once(path):  # a write that did not reach the disk raises: never swap it in
        os.sync()


def syncfs_once(path: Path) -> bool:
    """One ``syncfs`` of ``path``'s filesystem, without ``sync_filesystem``'s fallback to a
    whole-system ``sync``: ``False`` where there is no ``syncfs``.

    Raises:
        OSError: a write did not reach the disk (reported once: the caller must pass it on).
    """
    if _SYNCFS is None:
        return False
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        failed = _SYNCFS(fd) != 0
        code = ctypes.get_errno() if failed else 0
    finally:
        os.close(fd)
    # No syncfs (ENOSYS), a seccomp filter refusing it (EPERM), a descriptor it cannot take
    # (EBADF: an emulated filesystem, as in tests): not a write error, the caller falls back.
    if failed and code in (errno.ENOSYS, errno.EPERM, errno.EBADF):
        return False
    if failed:
        raise OSError(code, os.strerror(code), str(path))
    return True


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
    with contextlib.suppress(OSError):
        sync_file_range_write(fd)


def sync_file_range_write(fd: int) -> bool:
    """``sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE)``; ``False`` where libc has none.

    Python's ``os`` has no ``sync_file_range``, so it is called through ctypes (as ``renameat2``
    in gallery.place.fsops); until this was found, the writeback "started" here never was.

    Raises:
        OSError: the call failed (a bad descriptor, a filesystem error).
    """
    if _SYNC_FILE_RANGE is None:
        return False
    if _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return True


def libc_function(name: str, argtypes: list[Any], restype: Any = ctypes.c_int) -> Any:
    """``name`` from the libc the process already has, typed, or ``None`` where it has none
    (ctypes.util.find_library would shell out to ldconfig or gcc, and read the environment, to
    find it again). For the calls Python's ``os`` lacks: ``syncfs``, ``sync_file_range``,
    ``renameat2``."""
    try:
        function = getattr(ctypes.CDLL(None, use_errno=True), name, None)
    except OSError:  # pragma: no cover - no dynamic libc
        return None
    if function is not None:
        function.argtypes = argtypes
        function.restype = restype
    return function


_SYNCFS = libc_function("syncfs", [ctypes.c_int])
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>
# glibc has exported it since 2.6; other platforms have no such call
_SYNC_FILE_RANGE = (
    libc_function("sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint])
    if sys.platform.startswith("linux")
    else None
)
