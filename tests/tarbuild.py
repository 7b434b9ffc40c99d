"""Building tar layers member by member, including the hostile ones no normal tool would write."""

from __future__ import annotations

import gzip
import io
import tarfile
from dataclasses import dataclass, field

import zstandard


@dataclass
class Member:
    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    mode: int = 0o644
    linkname: str = ""
    size: int | None = None  # declared size, when it should differ from len(data)
    extra: dict[str, str] = field(default_factory=dict)


def file(name: str, data: bytes = b"x", mode: int = 0o644) -> Member:
    return Member(name, data, mode=mode)


def directory(name: str, mode: int = 0o755) -> Member:
    return Member(name, type=tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str) -> Member:
    return Member(name, type=tarfile.SYMTYPE, linkname=target, mode=0o777)


def hardlink(name: str, target: str) -> Member:
    return Member(name, type=tarfile.LNKTYPE, linkname=target)


def tar_bytes(members: list[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = member.type
            info.mode = member.mode
            info.linkname = member.linkname
            info.mtime = 1_700_000_000
            info.pax_headers = member.extra
            if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                info.size = len(member.data)
                archive.addfile(info, io.BytesIO(member.data))
            else:
                archive.addfile(info)
    data = buffer.getvalue()
    return data


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def raw_header(name: str, size: int, type_: bytes = tarfile.REGTYPE) -> bytes:
    """A single header block declaring ``size`` bytes that never follow (bombs, truncation)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = type_
    return info.tobuf(format=tarfile.GNU_FORMAT)
