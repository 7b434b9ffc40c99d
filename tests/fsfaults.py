"""Test doubles for the swap's filesystem layer: record every operation, fail a chosen one."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from gallery.place.fsops import FsOps


class RecordingFsOps(FsOps):
    """Records ``(operation, path...)``; raises ``OSError(fail_errno)`` at call number ``fail_at``."""

    def __init__(
        self,
        *,
        fail_at: int | None = None,
        fail_errno: int = errno.ENOSPC,
        exchange_supported: bool = True,
        sticky: bool = False,
    ) -> None:
        """``sticky``: every call from ``fail_at`` on fails (a disk that went bad or read-only),
        so the in-process undo fails too and only the next command's recovery can settle it."""
        super().__init__(exchange_supported=exchange_supported)
        self.calls: list[tuple[str, ...]] = []
        self.fail_at = fail_at
        self.fail_errno = fail_errno
        self.sticky = sticky

    def _call(self, op: str, *paths: Path) -> None:
        self.calls.append((op, *(str(p) for p in paths)))
        index = len(self.calls) - 1
        if self.fail_at is not None and (index == self.fail_at or (self.sticky and index > self.fail_at)):
            raise OSError(self.fail_errno, os.strerror(self.fail_errno), str(paths[0]))

    def exchange(self, a: Path, b: Path) -> bool:
        self._call("exchange", a, b)
        return super().exchange(a, b)

    def rename(self, src: Path, dst: Path) -> None:
        self._call("rename", src, dst)
        super().rename(src, dst)

    def sync_files(self, tree: Path) -> None:
        self._call("sync_files", tree)
        super().sync_files(tree)

    def fsync_dir(self, path: Path) -> None:
        self._call("fsync_dir", path)
        super().fsync_dir(path)

    def write_file(self, path: Path, data: bytes) -> None:
        self._call("write_file", path)
        super().write_file(path, data)

    def unlink(self, path: Path) -> None:
        self._call("unlink", path)
        super().unlink(path)

    def remove_tree(self, path: Path) -> None:
        self._call("remove_tree", path)
        super().remove_tree(path)

    def mkdir(self, path: Path) -> None:
        self._call("mkdir", path)
        super().mkdir(path)


def tree(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """A directory as comparable data: path -> (kind, mode, content or link target)."""
    result: dict[str, tuple[str, int, bytes]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        rel = str(path.relative_to(root))
        if stat.S_ISLNK(info.st_mode):
            result[rel] = ("link", 0, os.readlink(path).encode())
        elif stat.S_ISDIR(info.st_mode):
            result[rel] = ("dir", stat.S_IMODE(info.st_mode), b"")
        else:
            result[rel] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes())
    return result


def as_installed(found: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    """``found`` (a ``permissions_tree``) as gallery installs it by default: regular files without
    write bits (``file_store.read_only_files``), so that identical files can be shared."""
    return {
        rel: (entry[0], int(entry[1]) & ~0o222, *entry[2:]) if entry[0] == "file" else entry  # type: ignore[call-overload]
        for rel, entry in found.items()
    }


def permissions_tree(root: Path) -> dict[str, tuple[object, ...]]:
    """A tree as other tools would agree on it: type, permission bits (no setuid, setgid or
    sticky: we strip them), size and sha256 of files, symlink targets; other files by type."""
    found: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(directory) / name
            info = os.lstat(path)
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("symlink", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir", info.st_mode & 0o777)
            elif stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[rel] = ("file", info.st_mode & 0o777, info.st_size, digest)
            else:
                found[rel] = ("other", stat.S_IFMT(info.st_mode))
    return found
