"""Installing, upgrading, rolling back and uninstalling backends: from a name to a placed, recorded
backend.

    resolve -> strict-mode check (nothing written yet) -> backend lock (recover an interrupted
    operation first) -> for each candidate and registry endpoint: pin to a digest [same digest
    installed? done: one manifest HEAD] -> verify that digest -> fetch missing layers by digest into
    the blob cache -> extract into staging under backends/.gallery/ (re-hashing every cached blob
    as it is read) -> run.sh present -> metadata.json -> journaled swap into place (swap.py)

Failure rules (the contract): a candidate that is unreachable or lacks the reference moves on to
the next endpoint/candidate. With a signature policy every candidate is verified on its own, so an
integrity failure also moves on. Without a policy an integrity failure ends the install: we never
fall back to a weaker candidate. Every failure leaves ``backends/`` as it was.

Replacing a different installed version is ``upgrade``'s job (it keeps the old version as a
generation for ``rollback``), so ``install`` refuses it and says so. Upgrade runs the very same
candidate loop, verification included: the only differences are that the backend must already be
installed and that a new digest replaces it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx

from .blobcache import BlobCache
from .bundle import ExportItem, bundle_entries, open_bundle
from .candidates import Candidate, build_candidates, registry_endpoints
from .capability import CapabilityDetector, choose_capability
from .catalog import Catalog, GalleryState, load_catalog
from .compression import compression_for_media_type, decompressing
from .config import Config
from .errors import (
    BackendNotFound,
    ConfigError,
    DigestMismatch,
    DowngradeRefused,
    GalleryError,
    InstallFailed,
    IntegrityError,
    OperationalError,
    SourceUnavailable,
    StrictModeRefusal,
    UnsafeArchiveError,
    UsageError,
)
from .extract import ExtractLimits, FileRecord, TreeBuilder
from .fsops import FsOps
from .fsutil import fsync_directory, remove_tree
from .index import IndexEntry
from .lockfile import LockEntry
from .locks import backend_lock
from .metadata import METADATA_FORMAT_VERSION, BackendMetadata, LayerRecord, read_metadata, write_metadata
from .names import is_valid_name
from .oci_layout import LayoutError, OciLayout
from .oci_models import EMPTY_CONFIG, Descriptor, ImageManifest
from .pin import PinnedImage, pin_image, pin_layout
from .registry import Endpoint, RegistryClient
from .resolve import CapabilitySelector, Resolution, resolve_backend
from .signature_sources import FirstReachable, RegistrySignatures
from .signatures import TrustRoots, signed_sha256
from .sources import OciLayoutSource, OciSource, TarballSource, parse_backend_uri, parse_index_location
from .swap import Op, RecoveryReport, StateDir, Step, Swapper, recover_pending
from .tarball import pin_tarball, read_signature
from .trust import plan_for_entry
from .verification import Evidence, SignatureSource, Verifier

__all__ = ["BatchResult", "InstallResult", "Installer", "NoProgress", "ProgressReporter"]


class ProgressReporter(Protocol):
    def layer_started(self, backend: str, digest: str, total: int) -> None: ...
    def layer_advanced(self, digest: str, amount: int) -> None: ...
    def layer_finished(self, digest: str) -> None: ...


class NoProgress:
    def layer_started(self, backend: str, digest: str, total: int) -> None:
        pass

    def layer_advanced(self, digest: str, amount: int) -> None:
        pass

    def layer_finished(self, digest: str) -> None:
        pass


Status = Literal[
    "locked",
    "exported",
    "installed",
    "upgraded",
    "would-upgrade",
    "rolled-back",
    "repaired",
    "unchanged",
    "uninstalled",
    "verified",
    "failed",
]
# install: absent -> placed; upgrade: installed -> replaced; preload: either (a worker converging);
# dry-run and lock: pin and verify, write nothing; repair: the recorded digest placed again.
Mode = Literal["install", "upgrade", "preload", "dry-run", "lock", "repair"]
_PAST = {"install": "installed", "preload": "installed", "lock": "locked", "repair": "repaired"}


@dataclass(frozen=True)
class InstallResult:
    requested: str
    status: Status
    name: str | None = None
    digest: str | None = None
    candidate: str | None = None
    verified: bool = False
    bytes_fetched: int = 0
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()
    error: GalleryError | None = None
    also_removed: tuple[str, ...] = ()  # uninstall: backends that went with this one
    signer: str | None = None  # "identity (issuer)" when a signature was verified

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.code()

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "name": self.name,
            "status": self.status,
            "digest": self.digest,
            "candidate": self.candidate,
            "verified": self.verified,
            "bytes_fetched": self.bytes_fetched,
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
            "also_removed": list(self.also_removed),
            "signer": self.signer,
            "error": None if self.error is None else {"message": self.error.message, "hint": self.error.hint},
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True)
class UpdateCheck:
    """Whether the gallery offers a build other than the installed one, and its signature."""

    available: bool | None  # None: could not tell (see reason)
    digest: str | None = None
    verified: bool = False
    signer: str | None = None
    reason: str | None = None

    @classmethod
    def from_result(cls, result: InstallResult) -> UpdateCheck:
        if result.error is not None:
            refused = isinstance(result.error, InstallFailed) and any(
                isinstance(cause, DowngradeRefused) for cause in result.error.causes
            )
            return cls(False if refused else None, reason=result.error.message)
        if result.status == "unchanged":
            return cls(False, result.digest)
        return cls(True, result.digest, result.verified, result.signer)

    def to_json(self) -> dict[str, Any]:
        return {"available": self.available, "digest": self.digest, "verified": self.verified,
                "signer": self.signer, "reason": self.reason}  # fmt: skip


@dataclass(frozen=True)
class BatchResult:
    results: tuple[InstallResult, ...]

    @property
    def exit_code(self) -> int:
        codes = [r.exit_code for r in self.results]
        return 3 if 3 in codes else max(codes, default=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "results": [r.to_json() for r in self.results],
            "bytes_fetched": sum(r.bytes_fetched for r in self.results),
            "failed": sum(1 for r in self.results if r.error is not None),
            "exit_code": self.exit_code,
        }


@dataclass
class _Attempts:
    """What each candidate did, for the final error."""

    lines: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    errors: list[GalleryError] = field(default_factory=list)
    integrity: bool = False

    def add(self, label: str, digest: str | None, error: GalleryError) -> None:
        self.lines.append(f"{label}" + (f" ({digest})" if digest else "") + f": {error.message}")
        self.errors.append(error)
        if error.hint and error.hint not in self.hints:
            self.hints.append(error.hint)

    def hint(self) -> str:
        """The failures' own next steps when they agree, else where to look."""
        return (
            self.hints[0]
            if len(self.hints) == 1
            else "see each candidate's reason; 'gallery show NAME' lists them"
        )


@dataclass(frozen=True)
class _Job:
    """What every candidate of one install shares."""

    resolution: Resolution
    installed: BackendMetadata | None
    attempts: _Attempts
    warnings: tuple[str, ...]
    mode: Mode = "install"
    locked: LockEntry | None = None  # preload --lock: what the pinned image must match
    allow_downgrade: bool = False

    def refuse_downgrade(self, evidence: Evidence, label: str) -> None:
        """An upgrade never moves to a build signed before the installed one (a validly signed old
        build with a known hole is the attack), unless the operator asked for it. A lock file
        pins digests on purpose and repair restores the recorded one: neither is checked."""
        if (
            self.allow_downgrade
            or self.locked is not None
            or self.mode not in ("upgrade", "dry-run", "preload")
        ):
            return
        installed = self.installed.verification if self.installed is not None else None
        if installed is None or installed.integrated_time is None or evidence.integrated_time is None:
            return
        if evidence.integrated_time < installed.integrated_time:
            raise DowngradeRefused(
                f"{label} ({evidence.digest}) was signed at {evidence.integrated_time.isoformat()}, "
                f"before the installed build ({installed.digest}, "
                f"signed at {installed.integrated_time.isoformat()})",
                hint="if going back is intended, use 'gallery rollback NAME' or 'gallery upgrade "
                "--allow-downgrade NAME'",
            )

    @property
    def wanted(self) -> str | None:
        """Repair re-fetches exactly the recorded digest, preload --lock the locked one; other
        modes take what the gallery offers."""
        if self.locked is not None:
            return self.locked.resolved_digest
        if self.mode != "repair" or self.installed is None:
            return None
        return self.installed.resolved_digest or self.installed.digest

    def unchanged_if(self, digest: str, candidate: str) -> None:
        """Raise ``_Done`` when ``digest`` is what is installed: nothing to fetch or verify.

        Except on upgrade of a backend installed unverified whose gallery now has a policy: the
        same digest is then verified and placed again, so its metadata records the signature."""
        installed = self.installed
        if (
            self.mode == "repair"
            or installed is None
            or digest not in (installed.resolved_digest, installed.digest)
        ):
            return
        verified = installed.verification is not None and installed.verification.verified
        if (
            self.mode in ("upgrade", "preload", "dry-run")
            and not verified
            and self.resolution.gallery.config.verification
        ):
            return
        name = self.resolution.entry.name
        raise _Done(
            InstallResult(name, "unchanged", name, digest, candidate, verified, warnings=self.warnings)
        )


class _Done(Exception):
    def __init__(
        self, result: InstallResult, pinned: PinnedImage | None = None, evidence: Evidence | None = None
    ) -> None:
        self.result = result
        self.pinned = pinned  # lock mode: what was pinned and verified
        self.evidence = evidence


class Installer:
    """Owns one run's catalog, registry client, blob cache and verifier."""

    def __init__(
        self,
        config: Config,
        *,
        client: httpx.Client,
        verifier: Verifier,
        detector: CapabilityDetector,
        progress: ProgressReporter | None = None,
        registry: RegistryClient | None = None,
        catalog: Catalog | None = None,
        fs: FsOps | None = None,
        step: Step | None = None,
    ) -> None:
        """``fs`` and ``step`` are test seams: the filesystem operations of the swap (fault
        injection, order of operations) and a hook called at every step of it (crash tests)."""
        self.config = config
        self._client = client
        self._verifier = verifier
        self._selector = CapabilitySelector(config.capability, detector)
        self._progress = progress or NoProgress()
        self._registry = registry or RegistryClient.from_config(config, client)
        self._catalog = catalog
        self._cache = BlobCache(config.cache_path / "blobs")
        self._state = StateDir(config.backends_path)
        self._roots = TrustRoots()
        self._swapper = Swapper(
            config.backends_path, keep_generations=config.keep_generations, fs=fs, step=step
        )
        self._limits = ExtractLimits(
            max_bytes=config.limits.max_extract_bytes,
            max_files=config.limits.max_files,
            max_path_length=config.limits.max_path_length,
            refuse_escaping_symlinks=config.refuse_escaping_symlinks,
        )

    # -- public -----------------------------------------------------------------------------

    @property
    def cache(self) -> BlobCache:
        return self._cache

    @property
    def verifier(self) -> Verifier:
        return self._verifier

    @property
    def registry(self) -> RegistryClient:
        return self._registry

    @property
    def capability_preferences(self) -> tuple[str, ...]:
        """Capability keys for meta-backends, best first (configured, or detected once)."""
        return self._selector.preferences

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_catalog(self.config, client=self._client, verifier=self._verifier)
        return self._catalog

    def install(self, names: Sequence[str], *, fail_fast: bool = False) -> BatchResult:
        """Install each name; go on past failures unless ``fail_fast``."""
        return self._batch(names, self.install_one, fail_fast=fail_fast)

    def install_one(self, requested: str) -> InstallResult:
        return self._timed(requested, lambda: self._install(requested, "install"))

    def upgrade(
        self,
        names: Sequence[str],
        *,
        all_installed: bool = False,
        dry_run: bool = False,
        fail_fast: bool = False,
        allow_downgrade: bool = False,
    ) -> BatchResult:
        """Upgrade each installed backend (``all_installed``: every one; meta-backends through
        their concrete backend) to what its gallery offers now; ``dry_run`` pins and verifies only.
        A build signed before the installed one is refused unless ``allow_downgrade``."""
        if all_installed:
            names = [m.name for m in self.installed() if m.meta_backend_for is None]
        upgrade_one = partial(self.upgrade_one, dry_run=dry_run, allow_downgrade=allow_downgrade)
        return self._batch(names, upgrade_one, fail_fast=fail_fast)

    def upgrade_one(
        self, name: str, *, dry_run: bool = False, allow_downgrade: bool = False
    ) -> InstallResult:
        return self._timed(
            name, lambda: self._upgrade(name, dry_run=dry_run, allow_downgrade=allow_downgrade)
        )

    def lock_one(self, requested: str) -> LockEntry:
        """Resolve, pin and verify ``requested`` (for this installer's platform and capability) and
        describe it as a lock entry; writes nothing.

        Raises:
            GalleryError: as install would fail.
        """
        resolution = resolve_backend(self.catalog, requested, capabilities=self._selector)
        done = self._install_resolved(resolution, "lock")
        pinned, evidence = done.pinned, done.evidence
        assert pinned is not None and evidence is not None
        entry = resolution.entry
        tarball = isinstance(parse_backend_uri(pinned.label), TarballSource)
        meta = resolution.meta if resolution.meta is not None and resolution.meta.name != entry.name else None
        return LockEntry(
            name=entry.name,
            gallery=resolution.gallery.name,
            platform=pinned.platform,
            meta=meta.name if meta else None,
            capability=resolution.capability.key if meta and resolution.capability else None,
            candidate=pinned.label,
            mirrors=tuple(str(c) for c in build_candidates(entry, lookup=resolution.gallery.entry)
                          if str(c) != done.result.candidate and not isinstance(c.source, OciLayoutSource)),
            resolved_digest=pinned.resolved_digest,
            manifest_digest=pinned.manifest_digest,
            layers=tuple(LayerRecord(digest=layer.digest, size=layer.size, media_type=layer.media_type)
                         for layer in pinned.manifest.layers),
            # Only a sha256 the index gave: one computed from a download at lock time proves nothing.
            sha256=entry.expected_sha256 if tarball else None,
            signature=entry.signature if tarball else None,
            verification=evidence.model_copy(update={"digest": pinned.resolved_digest}),
        )  # fmt: skip

    def export_item(self, requested: str) -> ExportItem:
        """Pin and verify ``requested`` as install would and bring its config and layers into the
        cache, for ``write_bundle``; installs nothing.

        Raises:
            GalleryError: as install would fail; UsageError for a tarball entry.
        """
        resolution = resolve_backend(self.catalog, requested, capabilities=self._selector)
        done = self._install_resolved(resolution, "lock")
        pinned, evidence = done.pinned, done.evidence
        assert pinned is not None and evidence is not None
        if not pinned.documents:
            raise UsageError(
                f"{resolution.entry.name}: only OCI images can be exported; copy a tarball entry's file "
                "and keep its sha256",
            )
        self._fetch_blobs(pinned, (pinned.manifest.config, *pinned.manifest.layers), resolution.entry.name)
        return ExportItem(resolution, pinned, evidence)

    def install_from(self, bundle: Path, names: Sequence[str], *, fail_fast: bool = False) -> BatchResult:
        """Install from an exported bundle, offline, under this machine's policies (each entry
        names its gallery; the config must have it)."""
        limits = self._limits
        root = open_bundle(bundle, work=self.config.cache_path / "bundles", limits=limits)
        entries = bundle_entries(root, max_bytes=self.config.limits.max_index_bytes)

        def one(requested: str) -> InstallResult:
            def action() -> InstallResult:
                return self._install_resolved(self._from_bundle(entries, requested), "install").result

            return self._timed(requested, action)

        return self._batch(names, one, fail_fast=fail_fast)

    def _from_bundle(self, entries: Sequence[IndexEntry], requested: str) -> Resolution:
        by_name = {e.name: e for e in entries}
        entry = by_name.get(requested) or next((e for e in entries if e.alias == requested), None)
        if entry is None:
            raise BackendNotFound(f"the bundle has no backend {requested!r}", hint="see its index.yaml")
        meta, choice = None, None
        if entry.source is None:
            preferences = self._selector.preferences
            choice = choose_capability(entry.capabilities, preferences, source=self._selector.source)
            concrete = by_name.get(choice.target) if choice else None
            if choice is None or concrete is None:
                raise BackendNotFound(
                    f"the bundle has {entry.name} only for capabilities "
                    f"{', '.join(sorted(entry.capabilities))}, none of this machine's "
                    f"({', '.join(preferences)})"
                )
            meta, entry = entry, concrete
        gallery_name = (entry.model_extra or {}).get("gallery")
        gallery = self.config.gallery(gallery_name) if isinstance(gallery_name, str) else None
        if gallery is None:
            raise ConfigError(
                f"bundle entry {entry.name} comes from gallery {gallery_name!r}, which the config lacks",
                hint="add that gallery (its verification policy applies to the bundle) to the config",
            )
        return Resolution(requested, GalleryState(gallery, None, None), entry, meta, choice, False, ())

    def preload_one(self, requested: str) -> InstallResult:
        """Install or upgrade ``requested`` to what its gallery offers now (a worker converging)."""
        return self._timed(requested, lambda: self._install(requested, "preload"))

    def preload_locked(self, locked: LockEntry) -> InstallResult:
        """Install exactly the locked digest, verified again under the current policy of its
        gallery; already installed: one local check, no network."""

        def action() -> InstallResult:
            gallery = self.config.gallery(locked.gallery)
            if gallery is None:
                raise ConfigError(
                    f"the lock file names gallery {locked.gallery!r}, which the config does not have"
                )
            entry = IndexEntry(name=locked.name, uri=_pinned_uri(locked.candidate, locked.resolved_digest),
                               mirrors=tuple(_pinned_uri(m, locked.resolved_digest) for m in locked.mirrors),
                               sha256=locked.sha256, signature=locked.signature)  # fmt: skip
            meta = (
                IndexEntry(name=locked.meta, capabilities={locked.capability or "default": locked.name})
                if locked.meta
                else None
            )
            resolution = Resolution(
                locked.name, GalleryState(gallery, None, None), entry, meta, None, False, ()
            )
            return self._install_resolved(resolution, "preload", locked).result

        return self._timed(locked.name, action)

    def repair(self, names: Sequence[str]) -> BatchResult:
        """Rebuild damaged backends from their *recorded* digest (fetched and verified under the
        current policy, as an install would); the damaged tree goes to the trash, not to a generation."""
        return self._batch(names, self.repair_one, fail_fast=False)

    def repair_one(self, name: str) -> InstallResult:
        def action() -> InstallResult:
            installed = read_metadata(self.config.backends_path / name) if is_valid_name(name) else None
            if installed is None:
                raise BackendNotFound(f"{name} is not installed")
            if not (installed.resolved_digest or installed.digest):
                raise OperationalError(
                    f"{name}: no digest recorded, so there is nothing to re-fetch",
                    hint=f"reinstall it: gallery uninstall {name} && gallery install {name}",
                )
            if installed.layers and all(self._cache.has(layer.digest) for layer in installed.layers):
                return self._rebuild_from_cache(installed)
            gallery = installed.gallery
            return self._install(
                f"{gallery}@{name}" if gallery and self.config.gallery(gallery) else name, "repair"
            )

        return self._timed(name, action)

    def _rebuild_from_cache(self, installed: BackendMetadata) -> InstallResult:
        """Rebuild from the recorded, cached (digest-checked) layers, offline. The recorded
        signature is checked against today's policy first, as 'gallery verify' does; the rebuilt
        file list must equal the recorded one."""
        from .recheck import recheck_metadata  # recheck builds on this module's results

        name = installed.name
        evidence = recheck_metadata(self.config, installed, self._roots)
        layers = [{"mediaType": r.media_type, "digest": r.digest, "size": r.size} for r in installed.layers]
        manifest = ImageManifest.model_validate(
            {"schemaVersion": 2, "config": EMPTY_CONFIG, "layers": layers}
        )
        digest = installed.resolved_digest or installed.digest or ""
        pinned = PinnedImage(f"{name} (blob cache)", digest, installed.manifest_digest or digest, manifest,
                             installed.platform or self.config.platform, _NoBlobs())  # fmt: skip

        def metadata(files: tuple[FileRecord, ...]) -> BackendMetadata:
            rebuilt = tuple(f.to_json() for f in files if f.path != "metadata.json")
            if rebuilt != installed.files:
                raise DigestMismatch(f"{name}: the cached layers do not rebuild the recorded files")
            return installed

        with backend_lock(self._state.root, name, timeout=self.config.timeouts.lock):
            self._swapper.recover(name)
            self._build_and_place(pinned, name, metadata, "repair")
        return InstallResult(name, "repaired", name, digest, installed.candidate, evidence.verified)

    def rollback(self, name: str) -> InstallResult:
        """Put back the newest kept generation of ``name`` (the current version is discarded)."""
        return self._timed(name, lambda: self._rollback(name))

    def recover(self) -> RecoveryReport:
        """Finish or undo operations interrupted by a crash (backends whose lock is free)."""
        return recover_pending(
            self.config.backends_path, keep_generations=self.config.keep_generations, fs=self._swapper.fs
        )

    def _timed(self, requested: str, action: Callable[[], InstallResult]) -> InstallResult:
        started = time.monotonic()
        try:
            result = action()
        except GalleryError as exc:
            return InstallResult(requested, "failed", error=exc, seconds=time.monotonic() - started)
        return _with_time(result, time.monotonic() - started)

    def uninstall(self, names: Sequence[str], *, fail_fast: bool = False) -> BatchResult:
        return self._batch(names, self.uninstall_one, fail_fast=fail_fast)

    def uninstall_one(self, name: str) -> InstallResult:
        try:
            removed = self._uninstall(name)
        except GalleryError as exc:
            return InstallResult(name, "failed", error=exc)
        return InstallResult(
            name, "uninstalled", name=name, warnings=tuple(f"also removed {n}" for n in removed)
        )

    def installed(self) -> list[BackendMetadata]:
        """Every backend under ``backends_path`` with readable metadata (LocalAI's included)."""
        root = self.config.backends_path
        if not root.is_dir():
            return []
        found = []
        for child in sorted(root.iterdir()):
            if child.name.startswith(".") or not child.is_dir() or child.is_symlink():
                continue
            metadata = read_metadata(child)
            if metadata is not None:
                found.append(metadata)
        return found

    def check_updates(self, backends: Sequence[BackendMetadata]) -> dict[str, UpdateCheck]:
        """For each installed backend (not meta-backends, not LocalAI's own): is a newer signed
        build on offer? Pins and verifies like ``upgrade --dry-run``; fetches and changes nothing."""
        checks: dict[str, UpdateCheck] = {}
        for backend in backends:
            if backend.meta_backend_for is not None or backend.written_by_localai:
                continue
            result = self.upgrade_one(backend.name, dry_run=True)
            checks[backend.name] = UpdateCheck.from_result(result)
        return checks

    # -- install / upgrade ------------------------------------------------------------------

    def _install(self, requested: str, mode: Mode, *, allow_downgrade: bool = False) -> InstallResult:
        resolution = resolve_backend(self.catalog, requested, capabilities=self._selector)
        return self._install_resolved(resolution, mode, allow_downgrade=allow_downgrade).result

    def _install_resolved(
        self,
        resolution: Resolution,
        mode: Mode,
        locked: LockEntry | None = None,
        *,
        allow_downgrade: bool = False,
    ) -> _Done:
        entry, state = resolution.entry, resolution.gallery
        plan = plan_for_entry(entry, state.config, require_integrity=self.config.require_integrity)
        if plan.refusal is not None:  # before the lock file: strict mode writes nothing
            raise StrictModeRefusal(f"{entry.name}: {plan.refusal}")
        if (
            locked is not None
            and self.config.require_integrity
            and not locked.verification.verified
            and not locked.sha256
        ):
            raise StrictModeRefusal(
                f"{entry.name}: the lock entry ({locked.resolved_digest}) was not verified when locked",
                hint="lock it again from a gallery with a verification policy",
            )
        warnings = (plan.warning,) if plan.warning else ()
        if mode in ("dry-run", "lock"):
            return self._run_candidates(resolution, mode, warnings, locked, allow_downgrade=allow_downgrade)
        with backend_lock(self._state.root, entry.name, timeout=self.config.timeouts.lock):
            self._swapper.recover(entry.name)
            done = self._run_candidates(resolution, mode, warnings, locked, allow_downgrade=allow_downgrade)
        self._link_meta(resolution)
        return done

    def _run_candidates(
        self,
        resolution: Resolution,
        mode: Mode,
        warnings: tuple[str, ...],
        locked: LockEntry | None = None,
        *,
        allow_downgrade: bool = False,
    ) -> _Done:
        entry, state = resolution.entry, resolution.gallery
        target = self.config.backends_path / entry.name
        installed = read_metadata(target) if target.is_dir() and not target.is_symlink() else None
        if target.exists() and installed is None:
            raise OperationalError(
                f"{target} exists but has no metadata.json; it was not installed by a gallery",
                hint="move it away, then install again",
            )
        if installed is None and mode in ("upgrade", "dry-run", "repair"):  # these replace something
            raise BackendNotFound(
                f"{entry.name} is not installed", hint=f"use 'gallery install {entry.name}'"
            )
        attempts = _Attempts()
        for candidate in build_candidates(entry, lookup=state.entry):
            try:
                job = _Job(resolution, installed, attempts, warnings, mode, locked, allow_downgrade)
                self._try_candidate(candidate, job)
            except _Done as done:
                return done
        raise InstallFailed(
            f"{entry.name}: no candidate could be {_PAST.get(mode, 'upgraded')}: "
            + "; ".join(attempts.lines),
            hint=attempts.hint(),
            integrity=attempts.integrity,
            causes=tuple(attempts.errors),
        )  # fmt: skip

    def _upgrade(self, name: str, *, dry_run: bool, allow_downgrade: bool = False) -> InstallResult:
        if not is_valid_name(name):
            raise BackendNotFound(f"{name!r} is not a backend name")
        installed = read_metadata(self.config.backends_path / name)
        if installed is None:
            raise BackendNotFound(f"{name} is not installed", hint=f"use 'gallery install {name}'")
        if installed.meta_backend_for is not None:  # a meta-backend upgrades its concrete backend
            name = installed.meta_backend_for
            installed = read_metadata(self.config.backends_path / name)
            if installed is None:
                raise BackendNotFound(f"{name} is not installed", hint=f"use 'gallery install {name}'")
        gallery = installed.gallery
        requested = f"{gallery}@{name}" if gallery and self.config.gallery(gallery) else name
        return self._install(requested, "dry-run" if dry_run else "upgrade", allow_downgrade=allow_downgrade)

    def _rollback(self, name: str) -> InstallResult:
        if not is_valid_name(name):
            raise BackendNotFound(f"{name!r} is not a backend name")
        current = read_metadata(self.config.backends_path / name)
        if current is not None and current.meta_backend_for is not None:  # roll back its concrete backend
            name = current.meta_backend_for
        with backend_lock(self._state.root, name, timeout=self.config.timeouts.lock):
            self._swapper.recover(name)
            self._swapper.rollback(name)
            restored = read_metadata(self.config.backends_path / name)
        assert restored is not None  # the swap checked it
        verified = restored.verification is not None and restored.verification.verified
        return InstallResult(name, "rolled-back", name, restored.digest, restored.candidate, verified)

    def _try_candidate(
        self,
        candidate: Candidate,
        job: _Job,
    ) -> None:
        """Try one candidate (each of its registry endpoints for OCI); raise ``_Done`` on success."""
        resolution = job.resolution
        source = candidate.source
        platform = self.config.platform
        limits = self.config.limits
        if isinstance(source, OciSource):
            reference = source.reference if job.wanted is None else source.reference.pinned(job.wanted)
            for host in registry_endpoints(reference, self.config.registry_mirrors):
                endpoint = self._registry.endpoint(host)
                label = str(candidate) if host == reference.registry else f"{candidate} via mirror {host}"

                def pin(endpoint: Endpoint = endpoint) -> PinnedImage:
                    # One HEAD decides a no-op upgrade: nothing else is fetched or verified.
                    resolved = reference.digest or self._registry.resolve_tag(endpoint, reference)
                    job.unchanged_if(resolved, str(candidate))
                    return pin_image(self._registry, endpoint, reference, platform=platform, limits=limits,
                                     resolved=resolved)  # fmt: skip

                self._attempt(label, pin, candidate, job)
        elif isinstance(source, OciLayoutSource):
            opened: list[OciLayout] = []

            def pin_from_layout() -> PinnedImage:
                opened.append(self._layout(source, resolution))
                return pin_layout(opened[-1], platform=platform, limits=limits)

            try:
                self._attempt(str(candidate), pin_from_layout, candidate, job)
            finally:
                for layout in opened:
                    layout.close()
        else:
            self._try_tarball(source, candidate, job)

    def _try_tarball(
        self,
        source: TarballSource,
        candidate: Candidate,
        job: _Job,
    ) -> None:
        """Pin, verify, fetch holds for tarballs too: a signed tarball's signature is checked against
        the expected sha256 (the entry's, else the one the bundle signs) before any byte is fetched."""
        resolution, attempts = job.resolution, job.attempts
        entry, state = resolution.entry, resolution.gallery
        policy = state.config.verification
        expected = source.sha256 or entry.sha256
        if job.wanted is not None:
            expected = job.wanted.removeprefix("sha256:")
        if expected:
            job.unchanged_if(f"sha256:{expected}", str(candidate))
        evidence: Evidence | None = None
        if policy is not None and entry.signature is not None:
            try:
                bundle = read_signature(
                    entry.signature, client=self._client, max_bytes=self.config.limits.max_bundle_bytes
                )
                expected = expected or signed_sha256(bundle)
                evidence = self._verifier.verify_blob(
                    sha256_hex=expected,
                    bundle=bundle,
                    policy=policy,
                    trusted_root=state.config.trusted_root or self.config.trusted_root,
                    gallery=state.name,
                )
            except SourceUnavailable as exc:
                attempts.add(str(candidate), None, exc)
                return
            except IntegrityError as exc:
                attempts.add(str(candidate), f"sha256:{expected}" if expected else None, exc)
                attempts.integrity = True
                raise InstallFailed(
                    f"{entry.name}: {candidate}: {exc.message}", integrity=True, causes=(exc,)
                ) from exc
        self._attempt(
            str(candidate),
            lambda: pin_tarball(
                source,
                expected_sha256=expected,
                cache=self._cache,
                client=self._client,
                max_bytes=self.config.limits.max_extract_bytes,
                platform=self.config.platform,
            ),
            candidate, job, tarball=True, verified=evidence,
        )  # fmt: skip

    def _attempt(
        self,
        label: str,
        pin: Callable[[], PinnedImage],
        candidate: Candidate,
        job: _Job,
        *,
        tarball: bool = False,
        verified: Evidence | None = None,
    ) -> None:
        """Pin, verify, deploy one source; record why it failed, or raise ``_Done``.

        ``verified``: evidence already established before pinning (signed tarballs)."""
        resolution, attempts, warnings = job.resolution, job.attempts, job.warnings
        entry, state = resolution.entry, resolution.gallery
        policy = state.config.verification
        digest: str | None = None
        try:
            pinned = pin()
            digest = pinned.resolved_digest
            job.unchanged_if(digest, str(candidate))
            if job.locked is not None:
                _check_matches_lock(pinned, job.locked)
            elif job.wanted is not None and digest != job.wanted:
                raise SourceUnavailable(f"it offers {digest}, not the recorded {job.wanted}")
            if job.installed is not None and job.mode == "install":
                raise OperationalError(
                    f"{entry.name} is already installed at {job.installed.digest}; "
                    f"the gallery now offers {digest}",
                    hint=f"use 'gallery upgrade {entry.name}'",
                )
            if verified is not None:
                evidence = verified
            elif policy is not None and not tarball:
                evidence = self._verifier.verify_image(
                    digest=digest,
                    sources=self._signature_sources(pinned, resolution),
                    policy=policy,
                    trusted_root=state.config.trusted_root or self.config.trusted_root,
                    gallery=state.name,
                )
            elif tarball and entry.expected_sha256:
                evidence = Evidence.unverified("tarball checked against the index's sha256 (no signature)")
            else:
                evidence = Evidence.unverified(f"gallery {state.name!r} has no verification policy")
            job.refuse_downgrade(evidence.model_copy(update={"digest": digest}), label)
            if job.mode in ("dry-run", "lock"):
                status: Status = "would-upgrade" if job.mode == "dry-run" else "locked"
                result = InstallResult(entry.name, status, entry.name, digest, str(candidate),
                                       evidence.verified, warnings=warnings)  # fmt: skip
                raise _Done(result, pinned, evidence)
            replaces = job.installed is not None and job.mode == "preload"
            fetched = self._deploy(
                pinned, resolution, evidence, str(candidate), "upgrade" if replaces else job.mode
            )
        except SourceUnavailable as exc:
            attempts.add(label, digest, exc)
            return
        except IntegrityError as exc:
            attempts.add(label, digest, exc)
            attempts.integrity = True
            if policy is None or tarball:
                raise InstallFailed(
                    f"{entry.name}: {label}" + (f" ({digest})" if digest else "") + f": {exc.message}; "
                    "without a signature policy an integrity failure ends the install",
                    integrity=True,
                    causes=(exc,),
                ) from exc
            return
        signer = f"{evidence.identity} (issuer {evidence.issuer})" if evidence.verified else None
        done: Status = "installed" if job.installed is None else "upgraded"
        done = "repaired" if job.mode == "repair" else done
        raise _Done(
            InstallResult(entry.name, done, entry.name, digest, str(candidate), evidence.verified,
                          bytes_fetched=fetched, warnings=warnings, signer=signer)
        )  # fmt: skip

    def _signature_sources(self, pinned: PinnedImage, resolution: Resolution) -> list[SignatureSource]:
        """The candidate's own repository first, then the primary uri's (a bundle binds to a digest,
        not to a repository: mirrors often carry no signatures). The primary is reached through
        its registry mirrors too."""
        sources: list[SignatureSource] = [pinned.signatures] if pinned.signatures is not None else []
        primary = resolution.entry.source
        if isinstance(primary, OciSource):
            reference = primary.reference
            limits = self.config.limits
            candidates = [
                RegistrySignatures(
                    self._registry,
                    self._registry.endpoint(host),
                    reference,
                    limits.max_referrers,
                    limits.max_bundle_bytes,
                )
                for host in registry_endpoints(reference, self.config.registry_mirrors)
            ]
            if not any(c.describe() == s.describe() for c in candidates for s in sources):
                sources.append(FirstReachable(candidates))
        return sources

    def _layout(self, source: OciLayoutSource, resolution: Resolution) -> OciLayout:
        """A relative ``ocifile://`` path is relative to the (local) index file that names it."""
        path = Path(source.path)
        if not path.is_absolute():
            loaded = resolution.gallery.loaded
            location = parse_index_location(loaded.source, base_dir=Path("/")) if loaded else None
            if location is None or location.kind != "file":
                raise LayoutError(f"{source}: a relative ocifile:// path needs a gallery index on local disk")
            path = Path(location.target).parent / path
        return OciLayout(path, max_manifest_bytes=self.config.limits.max_manifest_bytes)

    def _deploy(
        self, pinned: PinnedImage, resolution: Resolution, evidence: Evidence, candidate: str, mode: Mode
    ) -> int:
        def metadata(files: tuple[FileRecord, ...]) -> BackendMetadata:
            return self._metadata(pinned, resolution, evidence, candidate, files)

        op: Op = "upgrade" if mode == "upgrade" else "repair" if mode == "repair" else "install"
        return self._build_and_place(pinned, resolution.entry.name, metadata, op)

    def _build_and_place(
        self,
        pinned: PinnedImage,
        name: str,
        metadata: Callable[[tuple[FileRecord, ...]], BackendMetadata],
        op: Op,
    ) -> int:
        """Fetch what the cache lacks, extract into staging, write metadata, swap into place."""
        fetched = self._fetch_layers(pinned, name)
        try:
            staging = self._state.new_staging(name)
        except OSError as exc:
            raise OperationalError(
                f"{name}: cannot create a staging directory under {self._state.staging}: "
                f"{exc.strerror or exc}",
                hint="free space or fix permissions under backends_path (is it read-only?), then retry",
            ) from exc
        try:
            try:
                builder = self._extract(pinned, staging)
            except _CachedBlobBad as bad:
                # The cache held bytes that are not the blob (or lost it to a concurrent prune):
                # evict, fetch again, start over once.
                self._cache.evict(bad.digest)
                fetched += self._fetch_layers(pinned, name)
                remove_tree(staging)
                staging = self._state.new_staging(name)
                builder = self._extract(pinned, staging)
            files = builder.finish()
            run_sh = staging / "run.sh"
            if not run_sh.is_file() or run_sh.is_symlink():
                raise UnsafeArchiveError(
                    f"{pinned.label} ({pinned.manifest_digest}): the image has no run.sh file"
                )
            write_metadata(staging, metadata(files))
            staging.chmod(0o755)  # staging is private while being built; the backend is not
        except OSError as exc:
            remove_tree(staging)
            raise OperationalError(
                f"{name}: cannot build {pinned.label} ({pinned.manifest_digest}) in {staging.parent}: "
                f"{exc.strerror or exc}" + (f" ({Path(exc.filename).name})" if exc.filename else ""),
                hint="free space or fix permissions under backends_path, then retry",
            ) from exc
        except BaseException:
            remove_tree(staging)
            raise
        # From here the swap owns staging: its undo removes it, or its journal names it for recovery.
        self._swapper.place(name, staging, op=op)
        return fetched

    def _fetch_layers(self, pinned: PinnedImage, backend: str) -> int:
        return self._fetch_blobs(pinned, pinned.manifest.layers, backend)

    def _fetch_blobs(self, pinned: PinnedImage, blobs: Sequence[Descriptor], backend: str) -> int:
        missing = [blob for blob in blobs if not self._cache.has(blob.digest)]
        if not missing:
            return 0
        counted: list[int] = []

        def fetch(layer: Any) -> None:
            self._progress.layer_started(backend, layer.digest, layer.size)

            def on_bytes(amount: int) -> None:
                counted.append(amount)
                self._progress.layer_advanced(layer.digest, amount)

            with self._cache.locked(layer.digest):
                if self._cache.has(layer.digest):  # another process fetched it while we waited
                    self._progress.layer_finished(layer.digest)
                    return
                writer = self._cache.writer(layer.digest, layer.size)
                try:
                    pinned.blobs.fetch_blob(layer, writer, on_bytes=on_bytes)
                finally:
                    writer.close()
                    self._progress.layer_finished(layer.digest)

        workers = max(1, min(self.config.max_parallel_layers, len(missing)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="layer") as pool:
            for future in [pool.submit(fetch, layer) for layer in missing]:
                try:
                    future.result()
                except OSError as exc:  # the cache's disk, not the source: no other candidate helps
                    raise OperationalError(
                        f"{pinned.label} ({pinned.manifest_digest}): cannot write to the blob cache "
                        f"{self._cache.state}: {exc.strerror or exc}",
                        hint="free space under cache_path (gallery cache prune), then retry",
                    ) from exc
        return sum(counted)

    def _extract(self, pinned: PinnedImage, staging: Path) -> TreeBuilder:
        builder = TreeBuilder(staging, self._limits)
        for layer in pinned.manifest.layers:
            compression = compression_for_media_type(layer.media_type)
            assert compression is not None  # pin_image refused other media types
            if not self._cache.has(layer.digest):  # pruned by another process since it was fetched
                raise _CachedBlobBad(layer.digest)
            with self._cache.reading(layer.digest) as reader:
                try:
                    with decompressing(reader, compression) as stream:
                        builder.apply_layer(stream, layer=layer.digest)
                except UnsafeArchiveError:
                    reader.drain()
                    if reader.digest != layer.digest:
                        raise _CachedBlobBad(layer.digest) from None
                    raise
                reader.drain()
                if reader.digest != layer.digest or reader.count != layer.size:
                    raise _CachedBlobBad(layer.digest)
        return builder

    def _metadata(
        self, pinned: PinnedImage, resolution: Resolution, evidence: Evidence, candidate: str, files: Any
    ) -> BackendMetadata:
        entry = resolution.entry
        return BackendMetadata(
            format_version=METADATA_FORMAT_VERSION,
            name=entry.name,
            gallery_url=resolution.gallery.config.url,
            installed_at=datetime.now(UTC),
            version=entry.version,
            uri=entry.uri,
            alias=entry.alias,
            digest=pinned.resolved_digest,
            gallery=resolution.gallery.name,
            resolved_digest=pinned.resolved_digest,
            manifest_digest=pinned.manifest_digest,
            platform=pinned.platform,
            candidate=candidate,
            layers=tuple(
                LayerRecord(digest=layer.digest, size=layer.size, media_type=layer.media_type)
                for layer in pinned.manifest.layers
            ),
            verification=evidence.model_copy(update={"digest": pinned.resolved_digest}),
        ).model_copy(  # our own records: validating tens of thousands of dicts would copy each
            update={"files": tuple(f.to_json() for f in files if f.path != "metadata.json")}
        )

    def _link_meta(self, resolution: Resolution) -> None:
        """A meta-backend gets ``<meta>/metadata.json`` naming the concrete backend it installed."""
        meta = resolution.meta
        if meta is None or meta.name == resolution.entry.name:
            return
        directory = self.config.backends_path / meta.name
        existing = read_metadata(directory) if directory.is_dir() else None
        if existing is not None and existing.meta_backend_for == resolution.entry.name:
            return
        if directory.exists() and (existing is None or existing.meta_backend_for is None):
            raise OperationalError(f"{directory} exists and is not a meta-backend directory; not touching it")
        record = BackendMetadata(
            format_version=METADATA_FORMAT_VERSION,
            name=meta.name,
            gallery_url=resolution.gallery.config.url,
            gallery=resolution.gallery.name,
            installed_at=datetime.now(UTC),
            alias=meta.alias,
            meta_backend_for=resolution.entry.name,
        )
        directory.mkdir(exist_ok=True)
        write_metadata(directory, record)
        fsync_directory(self.config.backends_path)

    # -- uninstall --------------------------------------------------------------------------

    def _uninstall(self, name: str) -> list[str]:
        if not is_valid_name(name):
            raise BackendNotFound(f"{name!r} is not a backend name")
        target = self.config.backends_path / name
        metadata = read_metadata(target) if target.is_dir() and not target.is_symlink() else None
        if metadata is None:
            raise BackendNotFound(
                f"no installed backend named {name!r}", hint="see 'gallery list --installed'"
            )
        also: list[str] = []
        if metadata.meta_backend_for and (self.config.backends_path / metadata.meta_backend_for).is_dir():
            also.append(metadata.meta_backend_for)
        for other in self.installed():
            if other.meta_backend_for == name and other.name != name:
                also.append(other.name)
        for victim in (name, *also):
            with backend_lock(self._state.root, victim, timeout=self.config.timeouts.lock):
                self._swapper.recover(victim)
                self._swapper.remove(victim)  # present or gone, never half-deleted; generations go too
        return also

    # -- helpers ----------------------------------------------------------------------------

    def _batch(
        self, names: Sequence[str], action: Callable[[str], InstallResult], *, fail_fast: bool
    ) -> BatchResult:
        results: list[InstallResult] = []
        for name in names:
            result = action(name)
            results.append(result)
            if fail_fast and result.error is not None:
                break
        return BatchResult(tuple(results))


def _pinned_uri(uri: str, digest: str) -> str:
    """An OCI URI pinned to ``digest`` (no tag lookup); other URIs as they are."""
    source = parse_backend_uri(uri)
    if isinstance(source, OciSource):
        return str(source.reference.pinned(digest))
    return uri


def _check_matches_lock(pinned: PinnedImage, locked: LockEntry) -> None:
    """The pinned image is the locked one, byte for byte (digests of manifest and layers).

    Raises:
        DigestMismatch: the source now serves something else under the locked digest's name.
    """
    layers = tuple(layer.digest for layer in pinned.manifest.layers)
    expected = tuple(layer.digest for layer in locked.layers)
    if pinned.resolved_digest != locked.resolved_digest or pinned.manifest_digest != locked.manifest_digest:
        raise DigestMismatch(
            f"{pinned.label} is {pinned.resolved_digest} (manifest {pinned.manifest_digest}); the lock file "
            f"has {locked.resolved_digest} (manifest {locked.manifest_digest})",
            hint="the source no longer has the locked content; lock again after reviewing the change",
        )
    if layers != expected:
        raise DigestMismatch(f"{pinned.label}: its layers {list(layers)} are not the locked {list(expected)}")


class _NoBlobs:
    """Blob source of a rebuild from the cache: a blob that is not there cannot be fetched."""

    def fetch_blob(self, descriptor: Descriptor, writer: Any, *, on_bytes: Any = None) -> None:
        raise SourceUnavailable(f"blob {descriptor.digest} is no longer in the cache")


class _CachedBlobBad(Exception):
    def __init__(self, digest: str) -> None:
        super().__init__(digest)
        self.digest = digest


def _with_time(result: InstallResult, seconds: float) -> InstallResult:
    return replace(result, seconds=seconds)
