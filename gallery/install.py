"""Installing and uninstalling backends: the pipeline from a name to a placed, recorded backend.

    resolve -> strict-mode check (nothing written yet) -> for each candidate and registry endpoint:
      pin to a digest -> verify that digest -> [same digest installed? done] -> fetch layers by
      digest into the blob cache -> extract into staging under backends/.gallery/ (re-hashing every
      cached blob as it is read) -> run.sh present -> metadata.json -> sync -> rename into place

Failure rules (the contract): a candidate that is unreachable or lacks the reference moves on to
the next endpoint/candidate. With a signature policy every candidate is verified on its own, so an
integrity failure also moves on. Without a policy an integrity failure ends the install: we never
fall back to a weaker candidate. Every failure leaves ``backends/`` as it was.

Replacing a different installed version is ``upgrade``'s job (atomic swap with rollback), so
``install`` refuses it and says so.
"""

from __future__ import annotations

import secrets
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
from .candidates import Candidate, build_candidates, registry_endpoints
from .capability import CapabilityDetector
from .catalog import Catalog, load_catalog
from .compression import compression_for_media_type, decompressing
from .config import Config
from .errors import (
    BackendNotFound,
    GalleryError,
    InstallFailed,
    IntegrityError,
    OperationalError,
    SourceUnavailable,
    StrictModeRefusal,
    UnsafeArchiveError,
)
from .extract import ExtractLimits, TreeBuilder
from .fsutil import fsync_directory, remove_tree, sync_filesystem
from .metadata import METADATA_FORMAT_VERSION, BackendMetadata, LayerRecord, read_metadata, write_metadata
from .names import is_valid_name
from .oci_layout import LayoutError, OciLayout
from .pin import PinnedImage, pin_image, pin_layout
from .registry import RegistryClient
from .resolve import CapabilitySelector, Resolution, resolve_backend
from .signature_sources import FirstReachable, RegistrySignatures
from .signatures import signed_sha256
from .sources import OciLayoutSource, OciSource, TarballSource, parse_index_location
from .tarball import pin_tarball, read_signature
from .trust import plan_for_entry
from .verification import Evidence, SignatureSource, Verifier

__all__ = ["BatchResult", "InstallResult", "Installer", "NoProgress", "ProgressReporter"]

STATE_DIR = ".gallery"


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


Status = Literal["installed", "unchanged", "uninstalled", "verified", "failed"]


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
class BatchResult:
    results: tuple[InstallResult, ...]

    @property
    def exit_code(self) -> int:
        codes = [r.exit_code for r in self.results]
        return 3 if 3 in codes else max(codes, default=0)

    def to_json(self) -> dict[str, Any]:
        return {"results": [r.to_json() for r in self.results], "exit_code": self.exit_code}


@dataclass
class _Attempts:
    """What each candidate did, for the final error."""

    lines: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)
    integrity: bool = False

    def add(self, label: str, digest: str | None, error: GalleryError) -> None:
        self.lines.append(f"{label}" + (f" ({digest})" if digest else "") + f": {error.message}")
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


class _Done(Exception):
    def __init__(self, result: InstallResult) -> None:
        self.result = result


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
    ) -> None:
        self.config = config
        self._client = client
        self._verifier = verifier
        self._selector = CapabilitySelector(config.capability, detector)
        self._progress = progress or NoProgress()
        self._registry = registry or RegistryClient.from_config(config, client)
        self._catalog = catalog
        self._cache = BlobCache(config.cache_path / "blobs")
        self._limits = ExtractLimits(
            max_bytes=config.limits.max_extract_bytes,
            max_files=config.limits.max_files,
            max_path_length=config.limits.max_path_length,
            refuse_escaping_symlinks=config.refuse_escaping_symlinks,
        )

    # -- public -----------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = load_catalog(self.config, client=self._client)
        return self._catalog

    def install(self, names: Sequence[str], *, fail_fast: bool = False) -> BatchResult:
        """Install each name; go on past failures unless ``fail_fast``."""
        return self._batch(names, self.install_one, fail_fast=fail_fast)

    def install_one(self, requested: str) -> InstallResult:
        started = time.monotonic()
        try:
            result = self._install(requested)
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

    # -- install ----------------------------------------------------------------------------

    def _install(self, requested: str) -> InstallResult:
        resolution = resolve_backend(self.catalog, requested, capabilities=self._selector)
        entry, state = resolution.entry, resolution.gallery
        plan = plan_for_entry(entry, state.config, require_integrity=self.config.require_integrity)
        if plan.refusal is not None:
            raise StrictModeRefusal(f"{entry.name}: {plan.refusal}")
        warnings = (plan.warning,) if plan.warning else ()
        target = self.config.backends_path / entry.name
        installed = read_metadata(target) if target.is_dir() else None
        if target.exists() and installed is None:
            raise OperationalError(
                f"{target} exists but has no metadata.json; it was not installed by a gallery",
                hint="move it away, then install again",
            )

        attempts = _Attempts()
        for candidate in build_candidates(entry, lookup=state.entry):
            try:
                self._try_candidate(candidate, _Job(resolution, installed, attempts, warnings))
            except _Done as done:
                self._link_meta(resolution)
                return done.result
        raise InstallFailed(
            f"{entry.name}: no candidate could be installed: " + "; ".join(attempts.lines),
            hint=attempts.hint(),
            integrity=attempts.integrity,
        )

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
            reference = source.reference
            for host in registry_endpoints(reference, self.config.registry_mirrors):
                endpoint = self._registry.endpoint(host)
                label = str(candidate) if host == reference.registry else f"{candidate} via mirror {host}"
                self._attempt(
                    label,
                    partial(pin_image, self._registry, endpoint, reference, platform=platform, limits=limits),
                    candidate, job,
                )  # fmt: skip
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
                raise InstallFailed(f"{entry.name}: {candidate}: {exc.message}", integrity=True) from exc
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
        resolution, installed, attempts, warnings = job.resolution, job.installed, job.attempts, job.warnings
        entry, state = resolution.entry, resolution.gallery
        policy = state.config.verification
        digest: str | None = None
        try:
            pinned = pin()
            digest = pinned.resolved_digest
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
            if installed is not None:
                self._already_installed(entry.name, installed, pinned, str(candidate), warnings)
            fetched = self._deploy(pinned, resolution, evidence, str(candidate))
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
                ) from exc
            return
        signer = f"{evidence.identity} (issuer {evidence.issuer})" if evidence.verified else None
        raise _Done(
            InstallResult(entry.name, "installed", entry.name, digest, str(candidate), evidence.verified,
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

    @staticmethod
    def _already_installed(
        name: str, installed: BackendMetadata, pinned: PinnedImage, candidate: str, warnings: tuple[str, ...]
    ) -> None:
        """Same digest: nothing to do. Another digest: that is an upgrade, not an install."""
        digest = pinned.resolved_digest
        if installed.manifest_digest == pinned.manifest_digest or installed.digest == digest:
            verified = installed.verification is not None and installed.verification.verified
            raise _Done(
                InstallResult(name, "unchanged", name, digest, candidate, verified, warnings=warnings)
            )
        raise OperationalError(
            f"{name} is already installed at {installed.digest}; the gallery now offers {digest}",
            hint=f"use 'gallery upgrade {name}'",
        )

    def _deploy(self, pinned: PinnedImage, resolution: Resolution, evidence: Evidence, candidate: str) -> int:
        entry = resolution.entry
        fetched = self._fetch_layers(pinned, entry.name)
        staging = self._new_staging(entry.name)
        try:
            try:
                builder = self._extract(pinned, staging)
            except _CachedBlobBad as bad:
                # The cache held bytes that are not the blob: evict, fetch again, start over once.
                self._cache.evict(bad.digest)
                fetched += self._fetch_layers(pinned, entry.name)
                remove_tree(staging)
                staging = self._new_staging(entry.name)
                builder = self._extract(pinned, staging)
            files = builder.finish()
            run_sh = staging / "run.sh"
            if not run_sh.is_file() or run_sh.is_symlink():
                raise UnsafeArchiveError(
                    f"{pinned.label} ({pinned.manifest_digest}): the image has no run.sh file"
                )
            metadata = self._metadata(pinned, resolution, evidence, candidate, files)
            write_metadata(staging, metadata)
            staging.chmod(0o755)  # staging is private while being built; the backend is not
            sync_filesystem(staging)
            target = self.config.backends_path / entry.name
            staging.rename(target)  # the target does not exist: checked before fetching
            fsync_directory(self.config.backends_path)
        except BaseException:
            remove_tree(staging)
            raise
        return fetched

    def _fetch_layers(self, pinned: PinnedImage, backend: str) -> int:
        missing = [layer for layer in pinned.manifest.layers if not self._cache.has(layer.digest)]
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
                future.result()
        return sum(counted)

    def _extract(self, pinned: PinnedImage, staging: Path) -> TreeBuilder:
        builder = TreeBuilder(staging, self._limits)
        for layer in pinned.manifest.layers:
            compression = compression_for_media_type(layer.media_type)
            assert compression is not None  # pin_image refused other media types
            with self._cache.reading(layer.digest) as reader:
                try:
                    builder.apply_layer(decompressing(reader, compression), layer=layer.digest)
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
            files=tuple(f.to_json() for f in files if f.path != "metadata.json"),
            verification=evidence.model_copy(update={"digest": pinned.resolved_digest}),
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

    def _new_staging(self, name: str) -> Path:
        parent = self.config.backends_path / STATE_DIR / "staging"
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / f"{name}.{secrets.token_hex(6)}"
        path.mkdir(mode=0o700)
        return path

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
            self._remove_backend(victim)
        return also

    def _remove_backend(self, name: str) -> None:
        target = self.config.backends_path / name
        trash = self.config.backends_path / STATE_DIR / "trash"
        trash.mkdir(parents=True, exist_ok=True)
        moved = trash / f"{name}.{secrets.token_hex(6)}"
        target.rename(moved)  # atomic: the backend is present or gone, never half-deleted
        fsync_directory(self.config.backends_path)
        remove_tree(moved)

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


class _CachedBlobBad(Exception):
    def __init__(self, digest: str) -> None:
        super().__init__(digest)
        self.digest = digest


def _with_time(result: InstallResult, seconds: float) -> InstallResult:
    return replace(result, seconds=seconds)
