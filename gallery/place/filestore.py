"""The content-addressed file store: identical installed files stored once (edge module).

Under ``backends_path/.gallery/store/`` (the backends' filesystem, so links work):
``objects/<hh>/<sha256>-<mode>`` — one read-only regular file per content and mode, the very inode
that installed trees hard-link to (or the source their reflinks were cloned from). The name is the
content's sha256, computed by the extractor as it wrote the file: nothing unhashed is ever stored.

Why hard links are safe to count on: a tree that uses an object is one more link to its inode, so
an object whose link count is 1 is used by no tree — kept generations and staging directories
included — and ``prune`` may remove it; a tree being built that loses the race gets
``FileNotFoundError`` from ``place`` and writes its own copy instead. A reflinked or copied file
shares no inode with the object, so removing an object never breaks a tree.

Only files without a write bit are shared (``shares``): a backend that wrote into a shared file in
place would change it in every tree. With ``read_only_files`` the extractor installs files
without write bits; otherwise writable files are copies of their own.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["FileStore", "LinkMethod", "StoreObject"]

LinkMethod = Literal["auto", "hardlink", "reflink", "off"]

_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_WRITE_BITS = 0o222
# What a filesystem answers when it cannot do the link asked for (not: the object is gone).
_UNSUPPORTED = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EINVAL, errno.ENOTTY}
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class StoreObject:
    path: Path
    sha256: str
    mode: int
    size: int
    links: int  # hard links, the store's own included


class FileStore:
    def __init__(self, root: Path, *, link: LinkMethod = "auto", read_only_files: bool = True) -> None:
        self.root = root
        self.objects = root / "objects"
        self._tmp = root / "tmp"
        self._read_only = read_only_files
        self._method: LinkMethod = link
        # why the filesystem refused a hard link: from then on this instance clones or copies
        # (doctor probes for itself: disk_usage.hard_links_refused)
        self.refused: str | None = None
        self._shards: set[str] = set()  # shard directories known to exist
        # the object names of each shard consulted, listed once (see ``has``), plus those added
        self._listed: dict[str, set[str]] = {}
        self._objects = str(self.objects)  # str: the per-file paths skip pathlib
        # objects created through this instance, as (sha256, mode): a Path each would be
        # 15 MB on a 41,000-file backend
        self.added: list[tuple[str, int]] = []
        self.added_records: list[Path] = []  # layer records (gallery.place.layer_records)
        self._made: list[Path] = []  # directories created through it

    def for_one_tree(self, *, image_modes: bool = False) -> FileStore:
        """This store, for building one tree: it remembers the objects it adds, so that a build
        that fails takes them back (``forget_added``). ``image_modes``: files keep the image's
        modes (writable ones are then copies)."""
        return FileStore(self.root, link=self._method, read_only_files=self._read_only and not image_modes)

    def forget_added(self) -> None:
        """Remove the objects this store added that no tree links (the build failed: it leaves
        no trace), and the directories that made empty."""
        for record in self.added_records:
            record.unlink(missing_ok=True)
        for sha256, mode in self.added:
            path = self.path_of(sha256, mode)
            with contextlib.suppress(OSError):
                if os.lstat(path).st_nlink == 1:
                    path.unlink()
        for directory in reversed(self._made):
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if empty: another install's objects stay
        self.added.clear()
        self.added_records.clear()
        self._made.clear()
        self._shards.clear()

    @property
    def enabled(self) -> bool:
        return self._method != "off"

    def installed_mode(self, mode: int) -> int:
        """The mode a regular file of the image is installed with."""
        mode &= 0o777
        return mode & ~_WRITE_BITS if self._read_only else mode

    def shares(self, mode: int) -> bool:
        """Whether a file installed with ``mode`` goes through the store."""
        return self.enabled and not mode & _WRITE_BITS

    def path_of(self, sha256: str, mode: int) -> Path:
        return Path(self._object(sha256, mode))

    def _object(self, sha256: str, mode: int) -> str:
        return f"{self._objects}/{sha256[:2]}/{_name(sha256, mode)}"

    def has(self, sha256: str, mode: int, size: int) -> bool:
        """Whether the store holds this content, mode and size now.

        Each shard is listed the first time it is asked about: one directory read instead of an
        ``lstat`` per file, most of which would fail on a cold install (an lstat per file was 2 s
        of a 41,000-file extraction, its thread contending with the writer's). A name the listing
        has is confirmed with ``lstat`` (still there, its size); an object another process added
        since is missed, and the file it would have saved is written, then shared by ``adopt``."""
        shard = sha256[:2]
        names = self._listed.get(shard)
        if names is None:
            try:
                names = set(os.listdir(f"{self._objects}/{shard}"))  # noqa: PTH208 (names, not Paths)
            except OSError:
                names = set()
            self._listed[shard] = names
        if _name(sha256, mode) not in names:
            return False
        try:
            info = os.lstat(self._object(sha256, mode))
        except OSError:
            return False
        return stat.S_ISREG(info.st_mode) and info.st_size == size

    # -- placing (the extractor's writer thread) ------------------------------------------------

    def place(self, sha256: str, mode: int, dest: Path) -> None:
        """Make ``dest`` (which must not exist) the stored file's content.

        Raises:
            FileNotFoundError: the object is not there (pruned since ``has``): write it instead.
            OSError: the filesystem refused every way (the caller writes the file itself).
        """
        source = self._object(sha256, mode)
        if self._method in ("auto", "hardlink") and self.refused is None:
            try:
                os.link(source, dest, follow_symlinks=False)
                return
            except OSError as exc:
                if exc.errno == errno.ENOENT or exc.errno not in (*_UNSUPPORTED, errno.EMLINK):
                    raise
                if exc.errno != errno.EMLINK:  # one inode full of links is not the filesystem
                    self.refused = f"hard links refused ({os.strerror(exc.errno)})"
                if self._method == "hardlink" and exc.errno != errno.EMLINK:
                    raise
        self._clone(source, dest, mode)

    def adopt(self, path: Path, sha256: str, mode: int) -> None:
        """Add the finished file at ``path`` (closed, mode set) to the store; if the store has
        it already, ``path`` becomes a link to that copy (the space it took is given back)."""
        target = self._object(sha256, mode)
        shard = sha256[:2]
        if shard not in self._shards:  # 256 of them: made once, not checked per file
            self.make_dirs(self.root, self.objects, self.objects / shard)
            self._shards.add(shard)
        if self._method in ("auto", "hardlink") and self.refused is None:
            try:
                try:
                    os.link(path, target, follow_symlinks=False)
                except FileNotFoundError:  # a failed build next door removed the empty shard
                    self.make_dirs(self.root, self.objects, self.objects / shard)
                    os.link(path, target, follow_symlinks=False)
                self._added(sha256, mode)
                return
            except FileExistsError:  # stored since this build listed its shard
                self._seen(sha256, mode)
                self._replace_with(target, path, sha256, mode)
                return
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                self.refused = f"hard links refused ({os.strerror(exc.errno or 0)})"
        if Path(target).exists():
            self._replace_with(target, path, sha256, mode)
            return
        with self._temporary() as tmp:
            self._clone(path, tmp, mode)
            with contextlib.suppress(FileExistsError):  # another install stored it meanwhile
                os.link(tmp, target, follow_symlinks=False)
                self._added(sha256, mode)

    def _added(self, sha256: str, mode: int) -> None:
        self.added.append((sha256, mode))
        self._seen(sha256, mode)

    def _seen(self, sha256: str, mode: int) -> None:
        names = self._listed.get(sha256[:2])
        if names is not None:  # a later file with the same content is linked, not written
            names.add(_name(sha256, mode))

    def make_dirs(self, *directories: Path) -> None:
        """Create the store's ``directories`` (in order) that are missing, remembering which:
        a failed build removes them again if they are empty."""
        for directory in directories:
            try:
                directory.mkdir()
            except FileExistsError:
                continue
            self._made.append(directory)

    def _replace_with(self, target: str, path: Path, sha256: str, mode: int) -> None:
        if Path(target).stat().st_size != path.stat().st_size:  # pragma: no cover - a damaged store
            return  # keep our own copy; fsck reports the object
        spare = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        try:
            self.place(sha256, mode, spare)
        except OSError:
            return  # our own copy stays: correct, only not shared
        spare.replace(path)

    def _clone(self, source: str | Path, dest: Path, mode: int) -> None:
        """``dest`` as a reflink of ``source`` where the filesystem can, else as a copy."""
        with Path(source).open("rb") as src:
            fd = os.open(dest, _CREATE, 0o600)
            try:
                try:
                    fcntl.ioctl(fd, _FICLONE, src.fileno())
                except OSError as exc:
                    if exc.errno not in _UNSUPPORTED:
                        raise
                    _copy(src.fileno(), fd)
                os.fchmod(fd, mode)
            except BaseException:
                os.close(fd)
                with contextlib.suppress(OSError):
                    dest.unlink()
                raise
            os.close(fd)

    @contextlib.contextmanager
    def _temporary(self) -> Iterator[Path]:
        self._tmp.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp / secrets.token_hex(8)
        try:
            yield tmp
        finally:
            tmp.unlink(missing_ok=True)

    # -- maintenance (fsck, prune, accounting) --------------------------------------------------

    def stored(self) -> Iterator[StoreObject]:
        """Every object (not following anything: the store holds regular files only)."""
        if not self.objects.is_dir():
            return
        for shard in sorted(self.objects.iterdir()):
            if shard.is_symlink() or not shard.is_dir():
                continue
            for path in sorted(shard.iterdir()):
                name, _, mode = path.name.rpartition("-")
                info = os.lstat(path)
                if not stat.S_ISREG(info.st_mode) or len(name) != 64 or not mode.isdigit():
                    continue
                yield StoreObject(path, name, int(mode, 8), info.st_size, info.st_nlink)

    def remove_stale_temporaries(self, *, older_than: float) -> None:
        """Temporary files a killed command left (a live one is done with its own in seconds)."""
        if not self._tmp.is_dir():
            return
        now = time.time()
        for path in self._tmp.iterdir():
            with contextlib.suppress(OSError):
                if now - path.lstat().st_mtime > older_than:
                    path.unlink()

    def remove(self, item: StoreObject) -> None:
        item.path.unlink(missing_ok=True)


def _name(sha256: str, mode: int) -> str:
    """An object's file name: its content and the mode it is installed with."""
    return f"{sha256}-{mode:04o}"


def _copy(source: int, dest: int) -> None:
    offset = 0
    while True:
        try:
            copied = os.copy_file_range(source, dest, 1 << 30, offset, offset)
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED and exc.errno != errno.ENOSYS:
                raise
            break
        if not copied:
            return
        offset += copied
    os.lseek(source, offset, os.SEEK_SET)
    os.lseek(dest, offset, os.SEEK_SET)
    while chunk := os.read(source, 1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dest, view) :]
