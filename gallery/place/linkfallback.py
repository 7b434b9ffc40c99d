"""``link_fallback: copy``: links written as copies where the filesystem refuses them (CIFS/SMB,
FAT: LocalAI issues #10890, #10477), and the one object that makes links in staging.

A refused hard link is copied at once (its target, a regular file of the backend, is already
there). A refused symlink is held by an empty placeholder and copied once every layer is applied,
since a link may come before its target; its target is followed inside the backend through
other refused symlinks and must end at a regular file of the backend: a link that leaves the
backend, names a directory or names nothing is refused. Copies are opened ``O_NOFOLLOW`` at both
ends and keep the recorded mode.
"""

from __future__ import annotations

import errno
import os
import posixpath
from collections.abc import MutableMapping
from pathlib import Path

from gallery.errors import OperationalError, UnsafeArchiveError
from gallery.files import write_all
from gallery.place.records import FileRecord

__all__ = ["LinkFallback", "LinkMaker"]

_UNSUPPORTED = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK})
_CHUNK = 1024 * 1024
_MAX_HOPS = 40
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class LinkMaker:
    """How links are made in staging (``FsOps`` is one); tests subclass it to play a filesystem
    without links."""

    def symlink(self, target: str, path: Path) -> None:
        path.symlink_to(target)

    def hardlink(self, source: Path, path: Path) -> None:
        os.link(source, path, follow_symlinks=False)


class LinkFallback:
    def __init__(self, root: Path, *, enabled: bool) -> None:
        self._root = root
        self._enabled = enabled
        self._deferred: dict[str, str] = {}  # symlink path -> target, held by a placeholder
        self.copied: list[str] = []

    def refused(self, exc: OSError, where: str, what: str) -> None:
        """Go on (with a copy) when the filesystem refuses links and the fallback is on.

        Raises:
            OSError: any other failure. OperationalError: refused, and the fallback is off.
        """
        if exc.errno not in _UNSUPPORTED:
            raise exc
        if not self._enabled:
            raise OperationalError(
                f"{where}: the filesystem of {self._root.parent} refuses {what} ({exc.strerror or exc})",
                hint="set 'link_fallback: copy' in the config to write such links as copies",
            ) from exc

    def defer(self, rel: str, target: str) -> None:
        os.close(os.open(self._root / rel, _CREATE, 0o600))
        self._deferred[rel] = target

    def forget(self, rel: str) -> None:
        """``rel`` was removed or replaced by a later member."""
        self._deferred.pop(rel, None)

    def copy(self, source_rel: str, rel: str, record: FileRecord) -> FileRecord:
        """A copy of the backend's regular file ``source_rel`` at ``rel`` (never through a link)."""
        source = os.open(self._root / source_rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fd = os.open(self._root / rel, _CREATE, 0o600)
            try:
                while chunk := os.read(source, _CHUNK):
                    write_all(fd, chunk)
                os.fchmod(fd, record.mode)
            finally:
                os.close(fd)
        finally:
            os.close(source)
        self.copied.append(rel)
        return FileRecord(rel, "file", record.mode, record.size, record.sha256)

    def copy_deferred(self, records: MutableMapping[str, FileRecord]) -> None:
        """Replace each deferred symlink's placeholder with a copy of what it names.

        Raises:
            UnsafeArchiveError: a target that leaves the backend or is not one of its regular files.
        """
        for rel in sorted(self._deferred):
            source = self._resolve(rel)
            record = records.get(source)
            path = self._root / source
            if record is None or record.type not in ("file", "hardlink") or not _regular(path):
                raise UnsafeArchiveError(f"{rel}: symlink to {self._deferred[rel]!r} cannot be copied: "
                                         "its target is not a regular file of the backend")  # fmt: skip
            (self._root / rel).unlink()
            records[rel] = self.copy(source, rel, record)
        self._deferred.clear()

    def _resolve(self, rel: str) -> str:
        current, target = rel, self._deferred[rel]
        for _ in range(_MAX_HOPS):
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(current), target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                break
            if resolved not in self._deferred:
                return resolved
            current, target = resolved, self._deferred[resolved]
        why = "it leaves the backend (link_fallback copies only links to files inside it)"
        raise UnsafeArchiveError(f"{rel}: symlink to {self._deferred[rel]!r} cannot be copied: {why}")


def _regular(path: Path) -> bool:
    try:
        return path.is_file() and not path.is_symlink()
    except OSError:
        return False
