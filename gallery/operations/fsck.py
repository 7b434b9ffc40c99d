"""``gallery fsck`` and ``gallery cache prune``: what is on disk against what was recorded (edge module).

Checks, each a :class:`Finding`:

- every installed backend against the ``files`` of its metadata.json (missing, modified — type,
  mode, size, sha256 or link target — and unexpected files);
- directories under ``backends_path`` without metadata, damaged metadata, metadata naming another
  backend, meta-backends whose concrete backend is gone;
- leftovers of interrupted commands (journal, staging, trash) whose lock is free, kept generations
  of backends that are no longer installed;
- LocalAI's own leftovers (``<name>.upgrade-tmp``, ``.install-tmp``, ``.backup``,
  ``.install-backup``): reported, and with ``--repair`` removed — or a backup put back when its
  backend is gone — once LocalAI has not touched them for an hour (``LOCALAI_IDLE_SECONDS``);
  sideloaded backends (``run.sh``, no metadata.json), which LocalAI loads: reported, not damage;
- cache blobs whose content no longer hashes to their name; blobs nothing references (installed
  backends and kept generations), which ``cache prune`` removes.

Damage (``damage=True``) makes ``fsck`` exit 3; what ``--repair`` fixed is marked ``repaired``.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from gallery.config.models import Config
from gallery.digests import is_digest, sha256_file
from gallery.errors import GalleryError
from gallery.filelocks import LockBusy, backend_lock
from gallery.operations.localai_dirs import LOCALAI_IDLE_SECONDS, Leftover, is_sideloaded
from gallery.operations.prune import cache_of, referenced_blobs
from gallery.operations.store import BackendStore, file_store_of
from gallery.place.filestore import FileStore
from gallery.place.metadata import METADATA_FILE, BackendMetadata, read_metadata
from gallery.place.swap import StateDir, pending_names
from gallery.prepare.blobcache import BlobCache
from gallery.results import BatchResult, InstallResult
from gallery.trees import remove_tree, scanned_tree
from gallery.units import human_bytes, human_seconds

__all__ = [
    "Finding",
    "FsckOutcome",
    "FsckReport",
    "check_and_repair",
    "mark_repaired",
    "scan",
]

Kind = Literal[
    "missing",
    "modified",
    "unexpected",
    "unchecked",
    "no-metadata",
    "bad-metadata",
    "dangling-meta-backend",
    "leftover",
    "localai-leftover",
    "sideloaded",
    "orphaned-generations",
    "bad-blob",
    "unreferenced-blob",
    "partial-download",
    "bad-stored-file",
    "damaged-generation",
]
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Finding:
    kind: Kind
    subject: str  # a backend name, a path under backends_path, or a blob digest
    detail: str
    damage: bool
    repaired: str | None = None  # what --repair did about it

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail, "damage": self.damage,
                "repaired": self.repaired}  # fmt: skip


@dataclass(frozen=True)
class FsckReport:
    findings: tuple[Finding, ...]
    backends_checked: int
    blobs_checked: int

    @property
    def exit_code(self) -> int:
        return 3 if any(f.damage and f.repaired is None for f in self.findings) else 0

    def damaged_backends(self) -> list[str]:
        kinds = ("missing", "modified", "unexpected")
        return sorted({f.subject for f in self.findings if f.kind in kinds and f.repaired is None})

    def to_json(self) -> dict[str, Any]:
        return {
            "findings": [f.to_json() for f in self.findings],
            "backends_checked": self.backends_checked,
            "blobs_checked": self.blobs_checked,
            "exit_code": self.exit_code,
        }


@dataclass
class _Scan:
    config: Config
    repair: bool
    findings: list[Finding] = field(default_factory=list)
    # sha256 by inode: a file the store shares is hashed once, however many trees link it
    hashes: dict[tuple[int, int, int, int], str] = field(default_factory=dict)

    def sha256(self, path: Path, info: os.stat_result) -> str:
        key = (info.st_dev, info.st_ino, info.st_size, info.st_ctime_ns)
        if key not in self.hashes:
            self.hashes[key] = sha256_file(path)
        return self.hashes[key]

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)


def scan(config: Config, *, repair: bool = False) -> FsckReport:
    """Check everything; with ``repair``, remove orphans, evict bad blobs and dangling meta-backend
    directories (backends with damaged files are re-fetched by the caller: see Installer.repair)."""
    store = BackendStore(config.backends_path)
    run = _Scan(config, repair)
    checked = 0
    installed: list[BackendMetadata] = []
    if config.backends_path.is_dir():
        # First: a bad stored file is bad in every tree that links it, and --repair must take it
        # out of the store before those trees are rebuilt (from the store, otherwise).
        bad = _check_file_store(run, file_store_of(config))
        for child in store.directories():
            if is_sideloaded(child):
                detail = (
                    f"run.sh, no metadata.json: LocalAI loads it unverified ('gallery adopt {child.name}')"
                )
                run.add(Finding("sideloaded", child.name, detail, damage=False))
                continue
            metadata = _backend_metadata(run, child)
            if metadata is None:
                continue
            installed.append(metadata)
            checked += 1
            if metadata.meta_backend_for is not None:
                _check_meta(run, child, metadata)
            else:
                _check_files(run, child, metadata)
        _check_generations(run, store, installed, bad)
        _check_leftovers(run, store.state)
        _check_localai_leftovers(run, store)
    blobs = _check_cache(run, cache_of(config), referenced_blobs(config))
    return FsckReport(tuple(run.findings), checked, blobs)


@dataclass(frozen=True)
class FsckOutcome:
    report: FsckReport
    repaired: BatchResult | None  # the backends rebuilt by --repair

    @property
    def exit_code(self) -> int:
        return max(self.report.exit_code, self.repaired.exit_code if self.repaired else 0)


def check_and_repair(config: Config, repair: Callable[[Sequence[str]], BatchResult] | None) -> FsckOutcome:
    """``scan``; with ``repair`` (the installer's), fix what can be fixed in place and rebuild the
    backends whose files are damaged from their recorded digest."""
    report = scan(config, repair=repair is not None)
    damaged = report.damaged_backends()
    if repair is None or not damaged:
        return FsckOutcome(report, None)
    repaired = repair(damaged)
    return FsckOutcome(mark_repaired(report, repaired), repaired)


def mark_repaired(report: FsckReport, batch: BatchResult) -> FsckReport:
    """Mark the file findings of backends that ``Installer.repair`` rebuilt."""
    rebuilt = {r.name: _how_rebuilt(r) for r in batch.results if r.error is None and r.name}
    findings = tuple(
        replace(f, repaired=rebuilt[f.subject])
        if f.kind in ("missing", "modified", "unexpected") and f.subject in rebuilt
        else f
        for f in report.findings
    )
    return replace(report, findings=findings)


def _how_rebuilt(result: InstallResult) -> str:
    if result.bytes_fetched:
        return f"re-fetched {result.digest} ({human_bytes(result.bytes_fetched)}) and swapped it in"
    return f"rebuilt {result.digest} from the cached layers and swapped it in"


def _backend_metadata(run: _Scan, child: Path) -> BackendMetadata | None:
    name = child.name
    if child.is_symlink() or not child.is_dir():
        run.add(Finding("no-metadata", name, "not a backend directory (a file or a symlink)", damage=True))
        return None
    try:
        metadata = read_metadata(child)
    except GalleryError as exc:
        run.add(Finding("bad-metadata", name, exc.message, damage=True))
        return None
    if metadata is None:
        run.add(Finding("no-metadata", name, f"{child} has no metadata.json; reinstall it or move it away",
                        damage=True))  # fmt: skip
        return None
    if metadata.name != name:
        run.add(Finding("bad-metadata", name, f"metadata.json names {metadata.name!r}", damage=True))
        return None
    return metadata


def _check_meta(run: _Scan, directory: Path, metadata: BackendMetadata) -> None:
    concrete = run.config.backends_path / (metadata.meta_backend_for or "")
    if (concrete / METADATA_FILE).is_file():
        return
    detail = f"meta-backend for {metadata.meta_backend_for}, which is not installed"
    finding = Finding("dangling-meta-backend", metadata.name, detail, damage=True)
    if run.repair:
        remove_tree(directory)
        finding = replace(
            finding, repaired=f"removed {directory} (install {metadata.name} again to restore it)"
        )
    run.add(finding)


def _check_files(run: _Scan, directory: Path, metadata: BackendMetadata) -> None:
    name = metadata.name
    if not metadata.files:
        run.add(Finding("unchecked", name, "no file list recorded (installed by LocalAI); cannot check",
                        damage=False))  # fmt: skip
        return
    recorded = {str(f["path"]): f for f in metadata.files}
    # One scan, modes lent back afterwards: an image may hold directories its owner cannot read
    # (mode 0000), and fsck runs as that owner.
    with scanned_tree(directory) as scan:
        present = {str(Path(entry.path).relative_to(directory)) for _base, entries in scan.walk()
                   for entry in entries}  # fmt: skip
        for path, record in recorded.items():
            problem = _compare(directory / path, record, scan.mode, run.sha256)
            if problem is not None:
                kind: Kind = "missing" if problem == "missing" else "modified"
                run.add(Finding(kind, name, f"{path}: {problem}", damage=True))
    for path in sorted(present - set(recorded) - {METADATA_FILE}):
        run.add(Finding("unexpected", name, f"{path}: not part of the installed image", damage=True))


def _compare(
    path: Path,
    record: dict[str, Any],
    mode_of: Callable[[Path], int],
    sha256_of: Callable[[Path, os.stat_result], str],
) -> str | None:
    """What differs between ``path`` and its record, or ``None``."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return "missing"
    kind = record.get("type")
    expected = {"file": stat.S_ISREG, "hardlink": stat.S_ISREG, "dir": stat.S_ISDIR, "symlink": stat.S_ISLNK}
    check = expected.get(str(kind))
    if check is None or not check(info.st_mode):
        return f"is no longer a {kind}"
    if kind == "symlink":
        return None if str(path.readlink()) == record.get("target") else "link target changed"
    mode = record.get("mode")
    if isinstance(mode, str) and mode_of(path) != int(mode, 8):
        return f"mode {mode_of(path):04o}, recorded {mode}"
    if kind in ("file", "hardlink"):
        if info.st_size != record.get("size"):
            return f"size {info.st_size}, recorded {record.get('size')}"
        if sha256_of(path, info) != record.get("sha256"):
            return "content changed (sha256 differs)"
    return None


def _check_file_store(run: _Scan, file_store: FileStore) -> set[tuple[int, int]]:
    """Stored files whose mode or content is no longer what their name says; the inodes."""
    bad: set[tuple[int, int]] = set()
    for item in file_store.stored():
        info = item.path.lstat()
        problem = None
        if stat.S_IMODE(info.st_mode) != item.mode:
            problem = f"mode {stat.S_IMODE(info.st_mode):04o}, stored as {item.mode:04o}"
        elif run.sha256(item.path, info) != item.sha256:
            problem = "content changed (sha256 differs)"
        if problem is None:
            continue
        bad.add((info.st_dev, info.st_ino))
        users = f"{item.links - 1} installed file{'' if item.links == 2 else 's'} share it"
        finding = Finding("bad-stored-file", item.path.name, f"{item.path}: {problem}; {users}", damage=True)
        if run.repair:
            file_store.remove(item)
            finding = replace(finding, repaired="removed from the store; the backends sharing it are rebuilt")
        run.add(finding)
    return bad


def _check_generations(
    run: _Scan, store: BackendStore, installed: list[BackendMetadata], bad: set[tuple[int, int]]
) -> None:
    """Kept generations that link a bad stored file: a rollback would bring the damage back."""
    if not bad:
        return
    for metadata in installed:
        for generation in store.state.kept(metadata.name):
            kept = read_metadata(generation)
            damaged = [
                str(f["path"])
                for f in (kept.files if kept is not None else ())
                if f.get("type") == "file" and _inode(generation / str(f["path"])) in bad
            ]
            if not damaged:
                continue
            detail = f"{generation}: {damaged[0]} is a damaged stored file (rollback would restore it)"
            finding = Finding("damaged-generation", metadata.name, detail, damage=True)
            _add_removing(run, finding, generation, f"removed {generation} (no rollback to it)")


def _add_removing(run: _Scan, finding: Finding, path: Path, repaired: str | None = None) -> None:
    """Add ``finding``; with --repair, remove ``path`` first and say so."""
    if run.repair:
        remove_tree(path)
        finding = replace(finding, repaired=repaired or f"removed {path}")
    run.add(finding)


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


def _check_leftovers(run: _Scan, state: StateDir) -> None:
    """Leftovers whose backend lock is free (a busy lock is a command still running, not damage)."""
    for name in pending_names(state.backends):
        try:
            with backend_lock(state.root, name, timeout=0):
                paths = [state.journal(name)] if state.journal(name).exists() else []
                paths += state.leftovers(name)
                for path in paths:
                    finding = Finding("leftover", name, f"{path} left by an interrupted command", damage=True)
                    if path.parent == state.journals:
                        run.add(finding)  # recovery's to settle, not ours to delete
                    else:
                        _add_removing(run, finding, path)
        except LockBusy:
            continue
    generations = state.root / "generations"
    if generations.is_dir():
        for directory in sorted(generations.iterdir()):
            if (state.backends / directory.name).is_dir():
                continue
            detail = f"{directory}: kept versions of a backend that is not installed"
            finding = Finding("orphaned-generations", directory.name, detail, damage=True)
            _add_removing(run, finding, directory)


def _check_localai_leftovers(run: _Scan, store: BackendStore) -> None:
    """LocalAI's staging and backup directories. A backup whose backend is missing is LocalAI's
    interrupted swap (the backup is the only copy): damage, repaired by putting it back."""
    for leftover in store.leftovers():
        backend = store.root / leftover.backend
        restore = leftover.kind == "backup" and not backend.exists() and (leftover.path / "run.sh").is_file()
        what = "LocalAI's interrupted upgrade/install" if leftover.kind == "staging" else "LocalAI's backup"
        detail = f"{leftover.path}: {what} of {leftover.backend}"
        if restore:
            detail += f", and {leftover.backend} itself is missing"
        finding = Finding("localai-leftover", leftover.path.name, detail, damage=restore)
        if run.repair:
            finding = _repair_localai_leftover(finding, leftover, store, restore)
        run.add(finding)


def _repair_localai_leftover(
    finding: Finding, leftover: Leftover, store: BackendStore, restore: bool
) -> Finding:
    idle = leftover.idle_for()
    if idle < LOCALAI_IDLE_SECONDS:
        return replace(finding, detail=f"{finding.detail} (changed {idle:.0f} s ago: LocalAI may still be "
                       "working on it; --repair leaves it for an hour)")  # fmt: skip
    try:
        with backend_lock(store.state.root, leftover.backend, timeout=0):
            if restore:
                leftover.path.rename(store.root / leftover.backend)
                return replace(finding, repaired=f"put {leftover.path.name} back as {leftover.backend}")
            remove_tree(leftover.path)
            return replace(finding, repaired=f"removed {leftover.path}")
    except LockBusy:
        return finding
    except OSError as exc:
        return replace(finding, detail=f"{finding.detail} (could not repair: {exc.strerror or exc})")


def _check_cache(run: _Scan, cache: BlobCache, referenced: set[str]) -> int:
    digests = cache.digests()
    for digest in digests:
        if not cache.intact(digest):
            finding = Finding("bad-blob", digest, "cached content does not hash to its name", damage=True)
            if run.repair:
                cache.evict(digest)
                finding = replace(finding, repaired="evicted (fetched again when needed)")
            run.add(finding)
        elif digest not in referenced:
            size = human_bytes(cache.size(digest))
            run.add(Finding("unreferenced-blob", digest, f"{size}; 'gallery cache prune' removes it",
                            damage=False))  # fmt: skip
    _note_partials(run, cache)
    return len(digests)


def _note_partials(run: _Scan, cache: BlobCache) -> None:
    """Downloads a stopped command left (Ctrl-C, a dropped link, a kill): kept on purpose, resumed
    by the next fetch of that blob; never damage."""
    partial = cache.state / "partial"
    if not partial.is_dir():
        return
    now = time.time()
    for path in sorted(partial.iterdir()):
        try:
            info = path.lstat()
        except OSError:
            continue  # finished or removed meanwhile
        age = human_seconds(now - info.st_mtime)
        what = f"sha256:{path.name}" if is_digest(f"sha256:{path.name}") else path.name
        run.add(Finding("partial-download", what, f"{human_bytes(info.st_size)} downloaded, last written "
                        f"{age} ago; the next install needing it resumes it, 'gallery cache prune' "
                        "removes abandoned ones", damage=False))  # fmt: skip
