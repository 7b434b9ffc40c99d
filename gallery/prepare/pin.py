"""Pin an OCI candidate to a digest, once; everything afterwards uses that digest.

A reference that carries ``@sha256:`` is pinned as it is (no tag lookup, even with a tag). A tag
is resolved once; the manifest (or index) is then fetched *by digest* and its bytes hashed. For an
index, the platform manifest is selected and fetched by its own digest, hashed too. A tag moved by
someone else after this point changes nothing. OCI layouts on disk are pinned the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gallery.config.models import Limits
from gallery.errors import IntegrityError
from gallery.net.cancel import Cancellation
from gallery.oci.layout import OciLayout
from gallery.oci.models import Descriptor, ImageIndex, ImageManifest, parse_document
from gallery.oci.references import OciReference
from gallery.oci.registry import Endpoint, ManifestNotFound, RegistryClient
from gallery.prepare.blobcache import BlobWriter
from gallery.prepare.compression import compression_for_media_type
from gallery.verify.discovery import LayoutSignatures, RegistrySignatures
from gallery.verify.evidence import SignatureSource

__all__ = ["BlobSource", "PinnedImage", "UnsupportedImage", "pin_image", "pin_layout"]


class UnsupportedImage(IntegrityError):
    """The pinned manifest is not an image we can install (nested index, unknown layer type)."""


class BlobSource(Protocol):
    """Where the pinned image's blobs come from; every blob is checked by the writer."""

    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        *,
        on_bytes: Callable[[int], None] | None = None,
        cancel: Cancellation | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class _RegistryBlobs:
    client: RegistryClient
    endpoint: Endpoint
    reference: OciReference

    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        *,
        on_bytes: Callable[[int], None] | None = None,
        cancel: Cancellation | None = None,
    ) -> None:
        self.client.fetch_blob(
            self.endpoint, self.reference, descriptor, writer, on_bytes=on_bytes, cancel=cancel
        )


@dataclass(frozen=True, slots=True)
class PinnedImage:
    label: str  # the candidate and where it was fetched from, for messages
    resolved_digest: str  # what the candidate pinned to: an index or a manifest (signed; compared on upgrade)
    manifest_digest: str  # the platform manifest that is installed
    manifest: ImageManifest
    platform: str
    blobs: BlobSource
    signatures: SignatureSource | None = None  # where the candidate's own signatures are looked up
    # The exact bytes of the documents pinned (resolved index or manifest, platform manifest), by
    # digest: what an export writes so that signatures still bind.
    documents: Mapping[str, bytes] = field(default_factory=dict)
    # Blobs already on local disk outside the cache, by digest: an unverified tarball's download,
    # which is never committed to the verified-only blob cache (deleted once used).
    local_blobs: Mapping[str, Path] = field(default_factory=dict)
    fetched_bytes: int = 0  # downloaded while pinning (a tarball is fetched to learn its digest)


def pin_image(
    client: RegistryClient,
    endpoint: Endpoint,
    reference: OciReference,
    *,
    platform: str,
    limits: Limits,
    resolved: str | None = None,
) -> PinnedImage:
    """Resolve ``reference`` on ``endpoint`` to a digest and fetch its manifest by digest.

    ``resolved``: the digest the caller already resolved the tag to on this endpoint (upgrade
    compares it with the installed one before fetching anything else).

    Raises:
        ManifestNotFound, RegistryError: the endpoint does not have it or cannot be reached.
        DigestMismatch, InvalidManifest, UnsupportedImage: the content cannot be trusted or used.
    """
    resolved = resolved or reference.digest or client.resolve_tag(endpoint, reference)
    where = f"{endpoint}/{endpoint.repository(reference)}"
    documents: dict[str, bytes] = {}
    manifest_digest, manifest = _platform_manifest(
        resolved,
        lambda digest: client.get_manifest_bytes(endpoint, reference, digest),
        platform=platform,
        where=where,
        documents=documents,
        max_layers=limits.max_layers,
    )
    signatures = RegistrySignatures(
        client, endpoint, reference, limits.max_referrers, limits.max_bundle_bytes
    )
    blobs = _RegistryBlobs(client, endpoint, reference)
    return PinnedImage(
        str(reference), resolved, manifest_digest, manifest, platform, blobs, signatures, documents
    )


def pin_layout(layout: OciLayout, *, platform: str, limits: Limits) -> PinnedImage:
    """Pin the one image of an OCI layout (its index.json names the digest).

    Raises:
        LayoutError, DigestMismatch, InvalidManifest, UnsupportedImage, ManifestNotFound.
    """
    resolved = layout.top_descriptor().digest
    documents: dict[str, bytes] = {}
    manifest_digest, manifest = _platform_manifest(
        resolved,
        layout.get_document_bytes,
        platform=platform,
        where=str(layout),
        documents=documents,
        max_layers=limits.max_layers,
    )
    signatures = LayoutSignatures(layout, limits.max_referrers, limits.max_bundle_bytes)
    return PinnedImage(
        str(layout), resolved, manifest_digest, manifest, platform, layout, signatures, documents
    )


def _platform_manifest(
    resolved: str,
    get_bytes: Callable[[str], bytes],
    *,
    platform: str,
    where: str,
    documents: dict[str, bytes],
    max_layers: int,
) -> tuple[str, ImageManifest]:
    def get(digest: str) -> ImageManifest | ImageIndex:
        documents[digest] = get_bytes(digest)  # already checked against the digest
        return parse_document(documents[digest], where=f"{where}@{digest}")

    document = get(resolved)
    manifest_digest = resolved
    if isinstance(document, ImageIndex):
        descriptor = document.select(platform)
        if descriptor is None:
            if any(d.platform and d.platform.key() == platform for d in document.manifests):
                raise UnsupportedImage(
                    f"{where}@{resolved}: its {platform} entry is not an image manifest "
                    "(an index inside an index is not supported)"
                )
            offered = ", ".join(d.platform.key() for d in document.manifests if d.platform) or "none"
            raise ManifestNotFound(f"{where}@{resolved}: no {platform} image (it has {offered})")
        manifest_digest = descriptor.digest
        document = get(manifest_digest)
        if not isinstance(document, ImageManifest):
            raise UnsupportedImage(f"{where}@{manifest_digest}: an index inside an index is not supported")
    if len(document.layers) > max_layers:
        raise UnsupportedImage(
            f"{where}@{manifest_digest}: {len(document.layers)} layers, over limits.max_layers ({max_layers})"
        )
    for layer in document.layers:
        if compression_for_media_type(layer.media_type) is None:
            raise UnsupportedImage(
                f"{where}@{manifest_digest}: layer {layer.digest} has media type {layer.media_type!r}, "
                "which is not an image layer"
            )
    return manifest_digest, document
