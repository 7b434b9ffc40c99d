"""How tar headers are read: Python's ``tarfile``, corrected where it disagrees with GNU tar, Go's
archive/tar and libarchive (each difference found by running their test archives, see
tests/test_tar_corpus.py).

- Repeated GNU long-name (``L``) or long-link (``K``) headers before one member: the last one
  wins, as in every other reader (``tarfile`` takes the first, so a crafted layer would install
  under another path than any other tool shows).
- Repeated pax extended headers before one member: refused (readers disagree on merging them).
- A pax header whose records do not exactly tile it (bad length, no ``=``, no newline) is
  refused; ``tarfile`` stops parsing at the first bad record and keeps the rest as data.
- Old GNU headers (magic ``ustar  \\0``) have no name prefix field (those bytes are times);
  ``tarfile`` reads them as a prefix anyway.
- A broken header after the first member is an error, not the end of the archive (``tarfile``
  silently stops there; GNU tar fails).
- Extended headers over 1 MiB are refused before ``tarfile`` buffers them, and anything else
  ``tarfile`` raises while parsing (ValueError on a bad sparse map) becomes a header error.
"""

from __future__ import annotations

import re
import tarfile
from typing import IO, Any

__all__ = ["HeaderRefused", "SafeTarInfo", "header_type_name"]

MAX_EXTENDED_HEADER = 1024 * 1024
_LONG_HEADERS = {tarfile.GNUTYPE_LONGNAME: "name", tarfile.GNUTYPE_LONGLINK: "linkname"}
_PAX_HEADERS = (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE)
_EXTENDED = (*_LONG_HEADERS, *_PAX_HEADERS, tarfile.XGLTYPE)
_PAX_RECORD = re.compile(rb"([1-9][0-9]*) ")
# Private in typeshed, public in tarfile: the errors a broken header raises.
_INVALID_HEADER: type[Exception] = getattr(tarfile, "InvalidHeaderError")  # noqa: B009
_TRUNCATED_HEADER: type[Exception] = getattr(tarfile, "TruncatedHeaderError")  # noqa: B009
_TYPE_NAMES = {
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "FIFO",
    b"D": "GNU dumpdir (incremental backup) header",
    b"A": "Solaris ACL header",
    b"V": "GNU volume label",
    b"M": "GNU multi-volume continuation",
    b"N": "GNU old long-name header",
    b"I": "star inode-only header",
}


class HeaderRefused(tarfile.HeaderError):
    """A header we will not read (tarfile wraps it when it is nested; the message survives)."""


def header_type_name(kind: bytes) -> str:
    """What a header type is, for refusals: ``'D'`` is a GNU dumpdir, not a "special file"."""
    return _TYPE_NAMES.get(kind, f"header type {kind.decode('latin-1')!r}")


class SafeTarInfo(tarfile.TarInfo):
    """``tarinfo=`` class for ``tarfile.open``: the corrections listed in the module docstring."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Any:
        obj = super().frombuf(buf, encoding, errors)
        if buf[257:265] == tarfile.GNU_MAGIC and buf[345] != 0 and obj.type not in tarfile.GNU_TYPES:
            name = tarfile.nts(bytes(buf[0:100]), encoding, errors)  # type: ignore[attr-defined]
            obj.name = name.rstrip("/") if obj.isdir() else name
        return obj

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> Any:
        try:
            return super().fromtarfile(tarfile_)
        except (_INVALID_HEADER, _TRUNCATED_HEADER) as exc:
            # At offset 0 tarfile reports these itself; later it would silently end the archive.
            if tarfile_.offset == 0:
                raise
            raise HeaderRefused(f"{exc} at offset {tarfile_.offset}") from None

    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        if self.type in _EXTENDED and self.size > MAX_EXTENDED_HEADER:
            raise HeaderRefused(f"extended header of {self.size} bytes (limit {MAX_EXTENDED_HEADER})")
        try:
            member = super()._proc_member(tarfile_)  # type: ignore[misc]
        except (ValueError, OverflowError, IndexError, KeyError) as exc:
            raise HeaderRefused(f"malformed header ({type(exc).__name__})") from None
        if self.type in _LONG_HEADERS:
            _last_long_header_wins(member, self.type)
        elif self.type in _PAX_HEADERS:
            if getattr(member, "_gallery_pax", False):
                raise HeaderRefused("repeated pax extended headers before one member")
            member._gallery_pax = True
        return member

    def _proc_pax(self, tarfile_: tarfile.TarFile) -> Any:
        source: Any = tarfile_.fileobj
        raw = source.read(self._block(self.size))  # type: ignore[attr-defined]
        _check_pax_records(raw[: self.size])
        tarfile_.fileobj = _Replay(raw, source)
        try:
            return super()._proc_pax(tarfile_)  # type: ignore[misc]
        finally:
            tarfile_.fileobj = source


def _last_long_header_wins(member: Any, kind: bytes) -> None:
    """tarfile applies nested L/K headers innermost (= latest) first, then lets each earlier one
    overwrite it; restore the latest, which every other reader keeps."""
    field = _LONG_HEADERS[kind]
    seen: dict[bytes, str] = member.__dict__.setdefault("_gallery_long", {})
    if kind in seen:
        setattr(member, field, seen[kind])
    else:
        seen[kind] = getattr(member, field)


def _check_pax_records(data: bytes) -> None:
    """Every record ``<length> <keyword>=<value>\\n``, its length exact, and nothing else."""
    position = 0
    while position < len(data):
        match = _PAX_RECORD.match(data, position)
        if match is None:
            raise HeaderRefused(f"malformed pax record at byte {position} (no length)")
        end = position + int(match.group(1))
        record = data[match.end() : end]
        if end > len(data) or not record.endswith(b"\n"):
            raise HeaderRefused(f"malformed pax record at byte {position} (length or newline)")
        keyword, equals, _value = record.partition(b"=")
        if not equals or not keyword or b"\x00" in keyword:
            raise HeaderRefused(f"malformed pax record at byte {position} (no keyword=value)")
        position = end


class _Replay:
    """The bytes ``_proc_pax`` already read for checking, then the stream itself."""

    def __init__(self, first: bytes, rest: IO[bytes]) -> None:
        self._first: bytes | None = first
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._first is not None:
            # tarfile asks for exactly what was read ahead; a short read-ahead (a truncated
            # stream) is handed over as it is, and tarfile reports the truncation itself.
            first, self._first = self._first, None
            if 0 <= size < len(first):
                raise HeaderRefused("pax header read out of order")
            return first
        return self._rest.read(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rest, name)
