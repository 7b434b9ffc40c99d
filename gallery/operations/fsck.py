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

import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from gallery.config.models import Config
from gallery.digests import is_digest, sha256_file
from gallery.errors import GalleryError
from gallery.filelocks import LockBusy, backend_lock
from gallery.operations.localai_dirs import LOCALAI_IDLE_SECONDS, Leftover, is_sideloaded
from gallery.operations.lockfile import read_lock
from gallery.operations.store import BackendStore
from gallery.place.metadata import METADATA_FILE, BackendMetadata, read_metadata
from gallery.place.swap import StateDir, pending_names
from gallery.prepare.blobcache import BlobCache
from gallery.prepare.cache_users import cache_users
from gallery.results import BatchResult, InstallResult
from gallery.trees import remove_tree, scanned_tree
from gallery.units import human_bytes, human_seconds

__all__ = [
    "Finding",
    "FsckOutcome",
    "FsckReport",
    "PruneResult",
    "check_and_repair",
    "mark_repaired",
    "prune_cache",
    "referenced_blobs",
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


@dataclass(frozen=True)
class PruneResult:
    removed: tuple[str, ...]
    bytes_freed: int
    kept: int
    partials_removed: int = 0
    bundles_removed: int = 0  # unpacked copies of bundle tars (install --from unpacks again)

    def to_json(self) -> dict[str, Any]:
        return {
            "removed": list(self.removed),
            "bytes_freed": self.bytes_freed,
            "kept": self.kept,
            "partials_removed": self.partials_removed,
            "bundles_removed": self.bundles_removed,
        }


@dataclass
class _Scan:
    config: Config
    repair: bool
    findings: list[Finding] = field(default_factory=list)

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
        _check_leftovers(run, store.state)
        _check_localai_leftovers(run, store)
    blobs = _check_cache(run, _cache(config), referenced_blobs(config))
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
            problem = _compare(directory / path, record, scan.mode)
            if problem is not None:
                kind: Kind = "missing" if problem == "missing" else "modified"
                run.add(Finding(kind, name, f"{path}: {problem}", damage=True))
    for path in sorted(present - set(recorded) - {METADATA_FILE}):
        run.add(Finding("unexpected", name, f"{path}: not part of the installed image", damage=True))


def _compare(path: Path, record: dict[str, Any], mode_of: Callable[[Path], int]) -> str | None:
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
        if sha256_file(path) != record.get("sha256"):
            return "content changed (sha256 differs)"
    return None


def _check_leftovers(run: _Scan, state: StateDir) -> None:
    """Leftovers whose backend lock is free (a busy lock is a command still running, not damage)."""
    for name in pending_names(state.backends):
        try:
            with backend_lock(state.root, name, timeout=0):
                paths = [state.journal(name)] if state.journal(name).exists() else []
                paths += state.leftovers(name)
                for path in paths:
                    finding = Finding("leftover", name, f"{path} left by an interrupted command", damage=True)
                    if run.repair and path.parent != state.journals:
                        remove_tree(path)
                        finding = replace(finding, repaired=f"removed {path}")
                    run.add(finding)
        except LockBusy:
            continue
    generations = state.root / "generations"
    if generations.is_dir():
        for directory in sorted(generations.iterdir()):
            if (state.backends / directory.name).is_dir():
                continue
            detail = f"{directory}: kept versions of a backend that is not installed"
            finding = Finding("orphaned-generations", directory.name, detail, damage=True)
            if run.repair:
                remove_tree(directory)
                finding = replace(finding, repaired=f"removed {directory}")
            run.add(finding)


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


def referenced_blobs(config: Config) -> set[str]:
    """Layer digests of installed backends and of their kept generations, in this config's
    ``backends_path`` and in every other one recorded as using the same cache."""
    directories = {config.backends_path.resolve(), *cache_users(config.cache_path)}
    referenced: set[str] = set()
    for directory in sorted(directories):
        referenced |= BackendStore(directory).referenced_blobs()
    return referenced


def _cache(config: Config) -> BlobCache:
    return BlobCache(config.cache_path / "blobs", lock_timeout=config.timeouts.lock)


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


def prune_cache(config: Config, *, keep: Iterable[str] = (), lock_files: Iterable[Path] = ()) -> PruneResult:
    """Remove cached blobs nothing references, and partial downloads no process is writing.

    ``keep``: more digests to keep; ``lock_files``: keep the layers they pin (what a fleet will
    preload). Raises ConfigError for an unreadable lock file.

    A blob being fetched right now is not in ``blobs/`` yet (it is a partial under its own lock),
    so pruning never races an install's download; a blob another command is about to extract is
    re-fetched by it if pruned (it is verified by digest either way).
    """
    referenced = referenced_blobs(config) | set(keep)
    for lock_file in lock_files:
        referenced |= read_lock(lock_file).blob_digests()
    cache = _cache(config)
    removed: list[str] = []
    freed = 0
    kept = 0
    for digest in cache.digests():
        if digest in referenced:
            kept += 1
            continue
        freed += cache.size(digest)
        cache.evict(digest)
        removed.append(digest)
    partials, partial_bytes = cache.prune_partials()
    freed += partial_bytes
    bundles = 0
    unpacked = config.cache_path / "bundles"
    if unpacked.is_dir():
        for directory in unpacked.iterdir():
            # An install --from may be reading a recent one right now; an hour old is done with.
            if time.time() - directory.lstat().st_mtime < 3600:
                continue
            with scanned_tree(directory) as scan:
                freed += sum(
                    entry.stat(follow_symlinks=False).st_size
                    for _base, entries in scan.walk()
                    for entry in entries
                    if entry.is_file(follow_symlinks=False)
                )
            remove_tree(directory)
            bundles += 1
    return PruneResult(tuple(removed), freed, kept, partials, bundles)
