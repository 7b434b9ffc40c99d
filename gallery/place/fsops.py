"""The filesystem operations of the swap sequence, behind one small object (edge module).

Everything that places, exchanges or retires a backend directory goes through :class:`FsOps`, so
tests can inject ENOSPC/EIO at any write, fsync or rename and record the order of operations.
(The exchange calls ``renameat2`` through ctypes, which pyfakefs cannot see; a test that runs on
pyfakefs passes an ``FsOps(exchange_supported=False)``, which uses two renames instead.)
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path

from gallery.files import atomic_write_bytes, fsync_directory, libc_function, sync_filesystem
from gallery.place.linkfallback import LinkMaker
from gallery.trees import remove_tree, scanned_tree

__all__ = ["FsOps"]

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


# glibc >= 2.28 exports renameat2
_RENAMEAT2 = libc_function(
    "renameat2", [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
)


class FsOps(LinkMaker):
    """The real filesystem. Subclass (in tests) to inject faults or record the order of calls;
    it also makes the links of extraction (``LinkMaker``)."""

    def __init__(self, *, exchange_supported: bool = True) -> None:
        self._exchange = exchange_supported and _RENAMEAT2 is not None

    def exchange(self, a: Path, b: Path) -> bool:
        """Atomically swap two directories; ``False`` when the OS or filesystem cannot (the
        caller then uses two renames).

        Raises:
            OSError: any other failure (nothing was exchanged).
        """
        if not self._exchange or _RENAMEAT2 is None:
            return False
        result = _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
        if result == 0:
            return True
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
            self._exchange = False  # this filesystem cannot: do not ask again
            return False
        raise OSError(code, os.strerror(code), str(a), None, str(b))

    def rename(self, src: Path, dst: Path) -> None:
        """``rename(2)``; ``dst`` must not exist as a non-empty directory."""
        src.rename(dst)

    def sync_files(self, tree: Path) -> None:
        """Make every file written under ``tree`` durable (one ``syncfs`` for the whole filesystem:
        far cheaper than an fsync per file, and it covers their directories' entries too)."""
        sync_filesystem(tree)

    def sync_dirs(self, tree: Path) -> None:
        """fsync every directory of ``tree``, deepest first (belt and braces after ``sync_files``:
        directories are few, and this still holds where ``syncfs`` fell back to ``sync``)."""
        with scanned_tree(tree) as scan:
            directories = [directory for directory, _entries in scan.walk()]
            for directory in reversed(directories):
                self.fsync_dir(directory)

    def fsync_dir(self, path: Path) -> None:
        fsync_directory(path)

    def write_file(self, path: Path, data: bytes) -> None:
        """Atomically replace ``path`` (temp file, fsync, rename, fsync of the directory)."""
        atomic_write_bytes(path, data)

    def unlink(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def remove_tree(self, path: Path) -> None:
        remove_tree(path)

    def mkdir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
