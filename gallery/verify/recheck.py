"""``gallery verify``: re-check installed backends against the *current* policy, offline.

The bundle that verified a backend at install time is stored in its metadata.json, so this needs
no network: it is verified again against today's policy and trusted root (for example after
``not_before`` was moved forward to revoke a compromised signing window). A backend fails when its
gallery now has a policy it does not satisfy, or when it was installed unverified although the
gallery has a policy; in strict mode an unverified backend of a gallery without a policy fails too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from gallery.catalog.sources import SourceParseError, parse_index_location
from gallery.config.models import Config, GalleryConfig
from gallery.errors import BackendNotFound, GalleryError, IntegrityError, SignatureError
from gallery.place.metadata import BackendMetadata
from gallery.results import BatchResult, InstallResult
from gallery.verify.evidence import Evidence, RecordedSignature, Verifier

__all__ = ["recheck_metadata", "recorded_gallery", "verify_installed"]


def verify_installed(
    config: Config, installed: Sequence[BackendMetadata], names: Sequence[str], *, verifier: Verifier
) -> BatchResult:
    """Re-verify ``names`` (all installed backends when empty); one result per backend."""
    by_name = {m.name: m for m in installed if m.meta_backend_for is None}
    results = []
    for name in names or sorted(by_name):
        metadata = by_name.get(name)
        if metadata is None:
            error: GalleryError = BackendNotFound(f"no installed backend named {name!r}")
            results.append(InstallResult(name, "failed", error=error))
            continue
        try:
            evidence = recheck_metadata(config, metadata, verifier)
        except GalleryError as exc:
            results.append(InstallResult(name, "failed", name=name, digest=metadata.digest, error=exc))
            continue
        signer = f"{evidence.identity} (issuer {evidence.issuer})" if evidence.verified else None
        warnings = () if evidence.verified else (evidence.reason or "not verified",)
        results.append(
            InstallResult(name, "verified" if evidence.verified else "unverified", name, metadata.digest,
                          metadata.candidate, evidence.verified, warnings=warnings, signer=signer)
        )  # fmt: skip
    return BatchResult(tuple(results))


def recorded_gallery(metadata: BackendMetadata, config: Config) -> GalleryConfig | None:
    """The configured gallery that installed a backend: ours record its name; LocalAI records the
    gallery's URL only (``gallery_url``), matched against each gallery's ``url``."""
    if metadata.gallery:
        return config.gallery(metadata.gallery)
    url = _location(metadata.gallery_url or "")
    return next((g for g in config.galleries if url and _location(g.url) == url), None)


def _location(url: str) -> str:
    """A gallery URL as fetched (``github:`` shorthand expanded), for comparing two spellings."""
    try:
        return parse_index_location(url, base_dir=Path("/")).target.rstrip("/") if url else ""
    except SourceParseError:
        return url.rstrip("/")


def recheck_metadata(config: Config, metadata: BackendMetadata, verifier: Verifier) -> Evidence:
    """The recorded evidence, verified again against the current policy and root (offline: the
    bundle recorded in metadata.json is the only signature source).

    Raises:
        IntegrityError, SignatureError: the backend no longer satisfies its gallery's policy.
    """
    gallery = recorded_gallery(metadata, config)
    policy = gallery.verification if gallery is not None else None
    recorded = metadata.verification
    if gallery is None or policy is None:
        if config.require_integrity:
            raise IntegrityError(
                f"{metadata.name}: its gallery ({_gallery_name(metadata, gallery)}) has no verification "
                "policy (strict mode)"
            )
        return Evidence.unverified(f"gallery {_gallery_name(metadata, gallery)!r} has no verification policy")
    if recorded is None or not recorded.verified or recorded.bundle is None or not metadata.digest:
        if metadata.written_by_localai:
            raise SignatureError(
                f"{metadata.name} ({metadata.digest}) was installed by LocalAI, which records no "
                f"evidence, and gallery {gallery.name!r} requires a verified signature",
                hint=f"gallery adopt {metadata.name} (verifies the build and records the evidence)",
            )
        raise SignatureError(
            f"{metadata.name} ({metadata.digest}) was installed without a verified signature, "
            f"and gallery {gallery.name!r} now requires one",
            hint=f"reinstall it: gallery uninstall {metadata.name} && gallery install {metadata.name}",
        )
    bundle = json.dumps(recorded.bundle).encode()
    trusted_root = gallery.trusted_root or config.trusted_root
    try:
        if "messageSignature" in recorded.bundle:
            sha256_hex = metadata.digest.removeprefix("sha256:")
            return verifier.verify_blob(sha256_hex=sha256_hex, bundle=bundle, policy=policy,
                                        trusted_root=trusted_root, gallery=gallery.name)  # fmt: skip
        source = RecordedSignature(bundle, where=f"{metadata.name}'s metadata")
        return verifier.verify_image(digest=metadata.digest, sources=[source], policy=policy,
                                     trusted_root=trusted_root, gallery=gallery.name)  # fmt: skip
    except SignatureError as exc:
        raise SignatureError(
            f"{metadata.name} ({metadata.digest}) no longer satisfies gallery {gallery.name!r}: "
            f"{exc.message}",
            hint="reinstall a version signed within the policy, or review the policy change",
        ) from exc


def _gallery_name(metadata: BackendMetadata, gallery: GalleryConfig | None) -> str:
    if gallery is not None:
        return gallery.name
    return metadata.gallery or (
        f"unknown, installed from {metadata.gallery_url}" if metadata.gallery_url else "unknown"
    )
