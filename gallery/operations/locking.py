"""Lock entries and the pipeline: what ``gallery lock`` records of a verified candidate, and how
``preload --lock`` turns an entry back into a resolution whose every candidate is bound to the
locked digest."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from gallery.catalog.galleries import GalleryState
from gallery.catalog.index import IndexEntry, PinConflict
from gallery.catalog.resolve import Resolution
from gallery.catalog.sources import (
    OciLayoutSource,
    OciSource,
    TarballSource,
    parse_backend_uri,
    parse_index_location,
)
from gallery.config.models import Config
from gallery.errors import ConfigError, TrustRefusal
from gallery.operations.gate import Verified
from gallery.operations.job import Job
from gallery.operations.lockfile import LockEntry
from gallery.place.metadata import LayerRecord
from gallery.validation import describe_problem

__all__ = ["lock_entry", "locked_resolution", "locked_unverified"]


def lock_entry(job: Job, verified: Verified) -> LockEntry:
    """What a lock file records of ``verified`` (for this run's platform and capability)."""
    resolution, pinned = job.resolution, verified.pinned
    entry = resolution.entry
    tarball = isinstance(verified.plan.source, TarballSource)
    meta = resolution.meta if resolution.meta is not None and resolution.meta.name != entry.name else None
    used = pinned.label  # the bound candidate; a layout by its absolute path
    others = [
        p
        for p in job.plan.admitted
        if str(p.candidate) != verified.candidate and not isinstance(p.source, OciLayoutSource)
    ]
    return LockEntry(
        name=entry.name,
        gallery=resolution.gallery.name,
        platform=pinned.platform,
        meta=meta.name if meta else None,
        capability=resolution.capability.key if meta and resolution.capability else None,
        candidate=used,
        mirrors=tuple(str(p.candidate) for p in others),
        resolved_digest=pinned.resolved_digest,
        manifest_digest=pinned.manifest_digest,
        layers=tuple(LayerRecord(digest=layer.digest, size=layer.size, media_type=layer.media_type)
                     for layer in pinned.manifest.layers),
        # Only a sha256 the index gave: one computed from a download at lock time proves nothing.
        sha256=entry.expected_sha256 if tarball else None,
        signature=entry.signature if tarball else None,
        verification=verified.evidence,
    )  # fmt: skip


def locked_resolution(locked: LockEntry, config: Config) -> Resolution:
    """The lock entry as a resolution of its gallery (whose current policy applies).

    Raises:
        ConfigError: the config lacks the gallery, or the entry's URIs are not valid.
    """
    gallery = config.gallery(locked.gallery)
    if gallery is None:
        raise ConfigError(f"the lock file names gallery {locked.gallery!r}, which the config does not have")
    try:
        entry = IndexEntry(name=locked.name, uri=_pinned_uri(locked.candidate, locked.resolved_digest),
                           mirrors=tuple(_pinned_uri(m, locked.resolved_digest) for m in locked.mirrors),
                           sha256=locked.sha256, signature=locked.signature)  # fmt: skip
        meta = IndexEntry(name=locked.meta, capabilities={locked.capability or "default": locked.name}) \
            if locked.meta else None  # fmt: skip
    except (ValidationError, ValueError) as exc:
        errors = exc.errors(include_input=False) if isinstance(exc, ValidationError) else []
        reason = describe_problem(errors[0]) if errors else str(exc)
        # A lock entry naming different bytes in two places was tampered with, or written by a
        # version that let a mirror's fragment override the entry's sha256: either way refused.
        conflict = any(isinstance(e.get("ctx", {}).get("error"), PinConflict) for e in errors)
        error = TrustRefusal if conflict else ConfigError
        raise error(
            f"the lock entry {locked.name} ({locked.platform}) is not valid: {reason}",
            hint="write the lock file again with 'gallery lock'",
        ) from exc
    # A lock file may name local paths only where the gallery itself is read from local disk.
    local = parse_index_location(gallery.url, base_dir=Path("/")).kind == "file"
    return Resolution(locked.name, GalleryState(gallery, None, None), entry, meta, None, False, (),
                      origin="local" if local else "remote")  # fmt: skip


def locked_unverified(locked: LockEntry) -> bool:
    """Nothing was proven when it was locked (strict mode refuses such an entry)."""
    evidence = locked.verification
    return not (evidence.verified or evidence.proven or locked.sha256)


def _pinned_uri(uri: str, digest: str) -> str:
    """An OCI URI pinned to ``digest`` (no tag lookup); other URIs as they are."""
    source = parse_backend_uri(uri)
    if isinstance(source, OciSource):
        return str(source.reference.pinned(digest))
    return uri
