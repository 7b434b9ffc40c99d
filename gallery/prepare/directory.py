"""A local directory ``uri`` (LocalAI's "copy it over"), packed as a tar stream so that it reaches
``backends_path`` through exactly the extractor's rules (edge module).

Only a local index may name one (as for any ``file://`` source). The walk is iterative and never
follows a symlink (``os.scandir`` entries are ``lstat``-ed, files are opened ``O_NOFOLLOW``, so a
file swapped for a link meanwhile is refused, not followed); symlinks are packed as symlinks
(data, which the extractor then judges), hard-linked files as separate copies, and anything else
(devices, FIFOs, sockets) is refused. What it may cost is bounded by the caller's byte cap (every
entry is at least a 512-byte header). A directory has no digest anyone signed: it installs like a
tarball without ``sha256`` (strict mode and a policy refuse it).
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, cast

from gallery.errors import SourceUnavailable

__all__ = ["DirectoryRefused", "pack_directory"]

_CHUNK = 1024 * 1024


class DirectoryRefused(SourceUnavailable):
    """The directory holds something a backend cannot carry, or changed while it was read."""


class _Sink:
    def __init__(self, take: Callable[[bytes], None]) -> None:
        self._take = take

    def write(self, data: bytes) -> int:
        self._take(bytes(data))
        return len(data)


def pack_directory(root: Path, take: Callable[[bytes], None]) -> None:
    """Write ``root``'s tree as an uncompressed tar stream into ``take``, sorted, owners 0.

    Raises:
        DirectoryRefused: a device, FIFO or socket, or an entry that changed type while read.
        OSError: unreadable.
    """
    sink = cast(IO[bytes], _Sink(take))
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        pending = [""]
        while pending:
            relative = pending.pop()
            with os.scandir(root / relative if relative else root) as listing:
                entries = sorted(listing, key=lambda e: e.name, reverse=True)
            for entry in entries:
                name = f"{relative}/{entry.name}" if relative else entry.name
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    archive.addfile(_header(name, info, tarfile.DIRTYPE))
                    pending.append(name)
                elif stat.S_ISLNK(info.st_mode):
                    header = _header(name, info, tarfile.SYMTYPE)
                    header.linkname = str(Path(entry.path).readlink())
                    archive.addfile(header)
                elif stat.S_ISREG(info.st_mode):
                    _add_file(archive, Path(entry.path), name, info)
                else:
                    raise DirectoryRefused(f"{root}: {name} is not a file, directory or symlink")


def _header(name: str, info: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    header = tarfile.TarInfo(name)
    header.type = kind
    header.mode = stat.S_IMODE(info.st_mode)
    header.mtime = int(info.st_mtime)
    header.uid = header.gid = 0
    return header


def _add_file(archive: tarfile.TarFile, path: Path, name: str, info: os.stat_result) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise DirectoryRefused(f"{path}: cannot be read as a file ({exc.strerror or exc})") from exc
    with os.fdopen(descriptor, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise DirectoryRefused(f"{path} changed while it was read")
        header = _header(name, opened, tarfile.REGTYPE)
        header.size = opened.st_size
        archive.addfile(header, handle)
