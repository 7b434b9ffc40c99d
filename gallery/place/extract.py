"""Safe extraction of tar layers into a staging directory (edge module).

Layers are applied in order to one private staging directory. Nothing is ever written or deleted
outside it:

- member paths are normalised; absolute paths, ``..`` components and NUL bytes fail the layer;
- every parent directory is checked: one this extraction created is known from its own records
  (staging is private to the process, every entry is recorded when made and forgotten when
  removed), any other is walked with ``lstat``; a symlink anywhere in the parent chain fails the
  layer (no write, hardlink or whiteout *through* a symlink), and nothing is ever followed;
- files are created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` after removing whatever was at the path
  (by ``FileWriter``, on a thread of its own, in order: anything that looks at the disk first
  waits for the writes queued before it);
- hardlinks may only point at regular files already extracted inside the tree;
- device nodes and FIFOs fail the layer; setuid, setgid and sticky bits are stripped;
- limits on total bytes, file count and path length stop a decompression bomb early; headers
  are read as GNU tar reads them (``tarheaders``: repeated long names, malformed pax records,
  oversized extended headers).

Symlinks themselves are data: real backends carry absolute and outward links (a venv's
``bin/python -> /usr/bin/python3``), so they are created as they are and never followed. With
``refuse_escaping_symlinks`` they are refused instead.

OCI whiteouts are applied explicitly: ``.wh.<name>`` deletes ``<name>`` from lower layers and
``.wh..wh..opq`` empties its directory of everything lower layers put there. Python's ``tarfile``
extraction filters are not used (3.11.7 has known bypasses): these checks are the defence.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
import os
import posixpath
import stat
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from gallery.errors import OperationalError, UnsafeArchiveError
from gallery.place.filestore import FileStore
from gallery.place.filewriter import FileWriter
from gallery.place.interrupts import raise_if_interrupted
from gallery.place.layer_records import RecordedLayer, RecordWriter, StoredData, StoredFileMissing, entry_of
from gallery.place.linkfallback import LinkFallback, LinkMaker
from gallery.place.records import FileRecord
from gallery.place.tarheaders import SafeTarInfo, header_type_name
from gallery.prepare.compression import DECOMPRESSION_ERRORS
from gallery.trees import remove_tree

__all__ = ["ExtractLimits", "FileRecord", "LinkMaker", "TreeBuilder"]  # FileRecord, LinkMaker: re-exported

_MAX_COMPONENT = 255
# Seconds a 64-bit time_t holds with room to spare; a pax mtime may say inf, nan or 1e300.
_MAX_TIME = 2**62
_MIN_TIME = -(2**62)
_OPAQUE = ".wh..wh..opq"
_AS_IS = FileStore(Path("/nonexistent"), link="off", read_only_files=False)  # no store
_WHITEOUT_PREFIX = ".wh."
# What a corrupt or truncated layer raises while it is read: an integrity refusal, not a disk error.
_NOT_A_TAR_STREAM: tuple[type[Exception], ...] = (
    tarfile.TarError,
    EOFError,
    ValueError,  # tarfile parsing a crafted field (a sparse map, a size) past our header checks
    zlib.error,
    gzip.BadGzipFile,
    *DECOMPRESSION_ERRORS,
)


@dataclass(frozen=True, slots=True)
class ExtractLimits:
    max_bytes: int
    max_files: int
    max_path_length: int
    refuse_escaping_symlinks: bool = False
    max_depth: int = 256
    # "copy": where the filesystem refuses symlinks or hard links (CIFS/SMB, FAT), a link to a
    # regular file of the backend is written as a copy of it (recorded in metadata).
    link_fallback: Literal["none", "copy"] = "none"


class TreeBuilder:
    """Applies tar layers, in order, to one staging directory that only this object writes to."""

    def __init__(
        self, root: Path, limits: ExtractLimits, *, links: LinkMaker | None = None, store: FileStore = _AS_IS
    ) -> None:
        if not stat.S_ISDIR(os.lstat(root).st_mode):
            raise ValueError(f"staging root {root} is not a directory")
        self.root, self.limits = root, limits
        self._links = links or LinkMaker()
        self._fallback = LinkFallback(root, enabled=limits.link_fallback == "copy")
        self.files = 0
        self.bytes = 0
        self._records: dict[str, FileRecord] = {}
        self._dir_times: dict[str, tuple[int, int]] = {}
        self._writer: FileWriter | None = None  # while a layer is applied
        self._sha256: str | None = None  # of the member just written
        self._store = store

    @property
    def copied_links(self) -> list[str]:
        """Links the filesystem refused, written as copies (``link_fallback: copy``)."""
        return self._fallback.copied

    # -- public -----------------------------------------------------------------------------

    def apply_layer(
        self, stream: IO[bytes] | RecordedLayer, *, layer: str, recorder: RecordWriter | None = None
    ) -> None:
        """Extract one uncompressed tar stream (or a recorded layer, from the store) on top of
        what earlier layers produced, telling ``recorder`` each member.

        Raises:
            UnsafeArchiveError: a member breaks a rule, a limit is exceeded, or the stream is not a
                valid tar archive; the message names the layer and the member.
        """
        this_layer: set[str] = set()
        last = None
        self._writer = FileWriter(store=self._store if self._store.enabled else None)
        try:
            with _opened(stream) as archive:
                for member in archive:
                    raise_if_interrupted()
                    self._sha256 = None
                    self._apply_member(archive, member, layer, this_layer)
                    if recorder is not None:
                        recorder.append(entry_of(member, self._sha256))
                    last = member.name
                    # tarfile keeps every TarInfo it has read (for random access we never use):
                    # 40 MB on a 41,000-file layer. Our own records are what we keep.
                    archive.members.clear()
            self._writer.close()
        except (UnsafeArchiveError, StoredFileMissing):
            raise
        except _NOT_A_TAR_STREAM as exc:
            where = f"the header after member {last!r}" if last is not None else "the first header"
            raise UnsafeArchiveError(f"layer {layer}: not a valid tar stream: {where}: {exc}") from exc
        except OSError as exc:
            raise OperationalError(
                f"layer {layer}: cannot write into {self.root}: {exc.strerror or exc}",
                hint="check free space and permissions of backends_path",
            ) from exc
        finally:
            self._writer.abort()  # no write runs on once the caller has staging back
            self._writer = None

    def finish(self) -> tuple[FileRecord, ...]:
        """Write refused symlinks as copies (``link_fallback``), apply directory modes and times
        (deepest first) and return the records, sorted.

        Raises:
            UnsafeArchiveError: a refused symlink whose target is not a regular file of the backend.
        """
        self._fallback.copy_deferred(self._records)
        for rel in sorted(self._dir_times, key=lambda p: p.count("/"), reverse=True):
            record = self._records.get(rel)
            path = self.root / rel
            if record is None or not stat.S_ISDIR(os.lstat(path).st_mode):
                continue
            os.utime(path, ns=self._dir_times[rel], follow_symlinks=False)
            # fchmod on an O_NOFOLLOW descriptor: never through a symlink, and portable (Linux
            # has no lchmod, so chmod(follow_symlinks=False) is not available everywhere).
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                os.fchmod(fd, record.mode)
            finally:
                os.close(fd)
        return tuple(self._records[key] for key in sorted(self._records))

    # -- members ----------------------------------------------------------------------------

    def _apply_member(self, archive: Any, member: tarfile.TarInfo, layer: str, this_layer: set[str]) -> None:
        rel = _normalise(member.name, layer, self.limits)
        self.files += 1
        if self.files > self.limits.max_files:
            raise _refuse(layer, member.name, f"more than limits.max_files ({self.limits.max_files}) entries")
        if rel == "":
            if member.isdir():
                return
            raise _refuse(layer, member.name, "the archive root must be a directory")
        parent, name = posixpath.split(rel)
        if name.startswith(_WHITEOUT_PREFIX):
            self._whiteout(parent, name, layer, member.name, this_layer)
            return
        self._ensure_parents(parent, layer, member.name, this_layer)
        this_layer.add(rel)
        if member.isdir():
            self._make_dir(rel, member, layer)
        elif member.issparse():
            # tarfile would expand the map into a dense file; no image builder writes sparse
            # members, so one here is refused rather than given a code path of its own.
            raise _refuse(layer, member.name, "sparse files are not supported")
        elif member.isreg():
            self._write_file(archive, member, rel, layer)
        elif member.issym():
            self._make_symlink(member, rel, layer)
        elif member.islnk():
            self._make_hardlink(member, rel, layer)
        else:
            raise _refuse(layer, member.name, f"{header_type_name(member.type)} is not allowed")

    def _make_dir(self, rel: str, member: tarfile.TarInfo, layer: str) -> None:
        path = self.root / rel
        existing = self._on_disk(rel)
        if existing is not None and not stat.S_ISDIR(existing.st_mode):
            self._remove(rel)
            existing = None
        if existing is None:
            os.mkdir(path, 0o700)
        self._records[rel] = FileRecord(rel, "dir", _safe_mode(member.mode))
        ns = _mtime_ns(member, layer)
        self._dir_times[rel] = (ns, ns)

    def _write_file(self, archive: Any, member: tarfile.TarInfo, rel: str, layer: str) -> None:
        if self.bytes + member.size > self.limits.max_bytes:
            raise _refuse(
                layer,
                member.name,
                f"extracted size would exceed limits.max_extract_bytes ({self.limits.max_bytes})",
            )
        self._clear(rel)
        source, writer = archive.extractfile(member), self._writer
        mode = self._store.installed_mode(member.mode)
        if writer is None:  # pragma: no cover - members are applied inside apply_layer only
            raise RuntimeError("no layer is being applied")
        if isinstance(source, StoredData):  # a recorded layer: the store has the data
            writer.place_stored(self.root / rel, source.sha256, mode)
            written, sha256 = member.size, source.sha256
        elif isinstance(source, io.BufferedIOBase):  # tarfile's reader
            written, sha256 = writer.write_file(
                self.root / rel, source, member.size, mode, _mtime_ns(member, layer)
            )
        else:
            raise _refuse(layer, member.name, "file data is missing")
        if written != member.size:
            raise _refuse(layer, member.name, f"truncated: {written} of {member.size} bytes")
        self.bytes += written
        self._sha256 = sha256
        self._records[rel] = FileRecord(rel, "file", mode, written, sha256)

    def _make_symlink(self, member: tarfile.TarInfo, rel: str, layer: str) -> None:
        target = member.linkname
        if not target or "\x00" in target or not _is_utf8(target):
            raise _refuse(layer, member.name, "symlink target is empty, has a NUL byte or is not UTF-8")
        if len(target) > self.limits.max_path_length:
            raise _refuse(layer, member.name, f"symlink target longer than {self.limits.max_path_length}")
        if self.limits.refuse_escaping_symlinks:
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
            if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
                raise _refuse(
                    layer, member.name, f"symlink to {target!r} leaves the backend (refuse_escaping_symlinks)"
                )
        self._clear(rel)
        try:
            self._links.symlink(target, self.root / rel)
        except OSError as exc:
            self._fallback.refused(exc, f"layer {layer}: {member.name}", "symlinks")
            self._fallback.defer(rel, target)
        self._records[rel] = FileRecord(rel, "symlink", 0o777, target=target)

    def _make_hardlink(self, member: tarfile.TarInfo, rel: str, layer: str) -> None:
        self._settle()  # its target is checked (and maybe copied) on disk
        target_rel = _normalise(member.linkname, layer, self.limits)
        record = self._records.get(target_rel)
        if (
            target_rel == rel
            or record is None
            or record.type not in ("file", "hardlink")
            or not self._real_parents(posixpath.dirname(target_rel))
            or not _is_regular(self.root / target_rel)
        ):
            raise _refuse(
                layer,
                member.name,
                f"hardlink to {member.linkname!r}, which is not a regular file in this backend",
            )
        self._clear(rel)
        try:
            self._links.hardlink(self.root / target_rel, self.root / rel)
        except OSError as exc:
            self._fallback.refused(exc, f"layer {layer}: {member.name}", "hard links")
            self._records[rel] = self._fallback.copy(target_rel, rel, record)
            return
        self._records[rel] = FileRecord(
            rel, "hardlink", record.mode, record.size, record.sha256, target=target_rel
        )

    def _whiteout(self, parent: str, name: str, layer: str, member_name: str, this_layer: set[str]) -> None:
        self._settle()  # it looks at (and deletes from) the disk
        if parent and not self._real_parents(parent, layer=layer, member=member_name):
            return  # the directory does not exist: nothing to hide
        if name == _OPAQUE:
            directory = self.root / parent if parent else self.root
            if _lstat(directory) is None:
                return
            for child in os.listdir(directory):
                child_rel = posixpath.join(parent, child) if parent else child
                if child_rel not in this_layer:
                    self._remove(child_rel)
            return
        victim = name[len(_WHITEOUT_PREFIX) :]
        if victim in ("", ".", "..") or victim.startswith(_WHITEOUT_PREFIX):
            raise _refuse(layer, member_name, "malformed whiteout")
        victim_rel = posixpath.join(parent, victim) if parent else victim
        if _lstat(self.root / victim_rel) is not None:
            self._remove(victim_rel)

    # -- paths ------------------------------------------------------------------------------

    def _ensure_parents(self, parent: str, layer: str, member: str, this_layer: set[str]) -> None:
        """Create missing parents as real directories; refuse any parent that is not one.

        A parent recorded as a directory is one: staging is private to this process, every entry
        in it is recorded when created and forgotten when removed, so the record is the disk
        (it saves an lstat per path component per member, most of an extraction's syscalls)."""
        current = ""
        for part in parent.split("/") if parent else ():
            current = posixpath.join(current, part) if current else part
            this_layer.add(current)
            known = self._records.get(current)
            if known is not None and known.type == "dir":
                continue
            info = self._on_disk(current)
            if info is None:
                os.mkdir(self.root / current, 0o700)
                self._records.setdefault(current, FileRecord(current, "dir", 0o755))
                self._dir_times.setdefault(current, (0, 0))
            elif stat.S_ISLNK(info.st_mode):
                raise _refuse(layer, member, f"would write through the symlink {current!r}")
            elif not stat.S_ISDIR(info.st_mode):
                raise _refuse(layer, member, f"parent {current!r} is not a directory")

    def _real_parents(self, parent: str, *, layer: str | None = None, member: str | None = None) -> bool:
        """Whether every component of ``parent`` exists as a real directory (never following links).

        With ``layer`` given, a symlink in the chain is refused instead of answered ``False``.
        """
        current = self.root
        for part in parent.split("/") if parent else ():
            current = current / part
            info = _lstat(current)
            if info is None:
                return False
            if stat.S_ISLNK(info.st_mode) and layer is not None:
                raise _refuse(layer, member or parent, f"whiteout through the symlink {part!r}")
            if not stat.S_ISDIR(info.st_mode):
                return False
        return True

    def _clear(self, rel: str) -> None:
        """Remove whatever is at ``rel``; nothing unrecorded is there (see ``_ensure_parents``),
        and the ``O_EXCL`` create that follows would refuse it anyway."""
        if rel in self._records and self._on_disk(rel) is not None:
            self._remove(rel)
        self._fallback.forget(rel)

    def _on_disk(self, rel: str) -> os.stat_result | None:
        """What is at ``rel``, never followed; a recorded path once its queued writes are done."""
        if rel in self._records:
            self._settle()
        return _lstat(self.root / rel)

    def _settle(self) -> None:
        if self._writer is not None:
            self._writer.settle()

    def _remove(self, rel: str) -> None:
        """Delete ``rel`` (a directory recursively) without following any link, and forget it."""
        self._settle()
        path = self.root / rel
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode):
            remove_tree(path)  # iterative, never follows a link inside
        else:
            os.unlink(path)
        prefix = rel + "/"
        for key in [k for k in self._records if k == rel or k.startswith(prefix)]:
            del self._records[key]
            self._dir_times.pop(key, None)
            self._fallback.forget(key)


def _mtime_ns(member: tarfile.TarInfo, layer: str) -> int:
    """The member's time in nanoseconds; a pax ``mtime`` of inf, nan or 1e300 is refused."""
    mtime = member.mtime
    if not (isinstance(mtime, int | float) and math.isfinite(mtime) and _MIN_TIME <= mtime <= _MAX_TIME):
        raise _refuse(layer, member.name, f"modification time {mtime!r} is out of range")
    return int(mtime) * 10**9


def _opened(stream: IO[bytes] | RecordedLayer) -> contextlib.AbstractContextManager[Any]:
    if isinstance(stream, RecordedLayer):
        return contextlib.nullcontext(stream)
    return tarfile.open(fileobj=stream, mode="r|", tarinfo=SafeTarInfo)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _is_regular(path: Path) -> bool:
    info = _lstat(path)
    return info is not None and stat.S_ISREG(info.st_mode)


def _safe_mode(mode: int) -> int:
    return mode & 0o777


def _normalise(name: str, layer: str, limits: ExtractLimits) -> str:
    if "\x00" in name:
        raise _refuse(layer, name, "NUL byte in path")
    if not _is_utf8(name):  # tarfile keeps undecodable bytes as surrogates (found by fuzzing)
        raise _refuse(layer, name, "path is not valid UTF-8")
    if name.startswith("/"):
        raise _refuse(layer, name, "absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _refuse(layer, name, "'..' in path")
    rel = "/".join(parts)
    if len(rel) > limits.max_path_length:
        raise _refuse(
            layer, name[:200], f"path longer than limits.max_path_length ({limits.max_path_length})"
        )
    if len(parts) > limits.max_depth:
        raise _refuse(
            layer,
            name[:200],
            f"nested deeper than limits.max_depth ({limits.max_depth}) directories",
        )
    if any(len(p.encode()) > _MAX_COMPONENT for p in parts):
        raise _refuse(layer, name[:200], f"a path component longer than {_MAX_COMPONENT} bytes")
    return rel


def _refuse(layer: str, member: str, reason: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"layer {layer}: member {member!r}: {reason}")
