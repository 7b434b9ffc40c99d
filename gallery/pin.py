"""Pin an OCI candidate to a digest, once; everything afterwards uses that digest.

A reference that carries ``@sha256:`` is pinned as it is (no tag lookup, even with a tag). A tag
is resolved once; the manifest (or index) is then fetched *by digest* and its bytes hashed. For an
index, the platform manifest is selected and fetched by its own digest, hashed too. A tag moved by
someone else after this point changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .compression import compression_for_media_type
from .errors import IntegrityError
from .oci_models import ImageIndex, ImageManifest
from .references import OciReference
from .registry import Endpoint, ManifestNotFound, RegistryClient

__all__ = ["PinnedImage", "UnsupportedImage", "pin_image"]


class UnsupportedImage(IntegrityError):
    """The pinned manifest is not an image we can install (no platform match, unknown layer type)."""


@dataclass(frozen=True, slots=True)
class PinnedImage:
    reference: OciReference  # the candidate as written, for display
    endpoint: Endpoint
    resolved_digest: str  # what the reference pinned to: an index or a manifest (signed, compared on upgrade)
    manifest_digest: str  # the platform manifest that is installed
    manifest: ImageManifest
    platform: str

    @property
    def pinned_reference(self) -> OciReference:
        return self.reference.pinned(self.resolved_digest)


def pin_image(
    client: RegistryClient, endpoint: Endpoint, reference: OciReference, *, platform: str
) -> PinnedImage:
    """Resolve ``reference`` on ``endpoint`` to a digest and fetch its manifest by digest.

    Raises:
        ManifestNotFound, RegistryError: the endpoint does not have it or cannot be reached.
        DigestMismatch, InvalidManifest, UnsupportedImage: the content cannot be trusted or used.
    """
    resolved = reference.digest or client.resolve_tag(endpoint, reference)
    document = client.get_manifest(endpoint, reference, resolved)
    manifest_digest = resolved
    if isinstance(document, ImageIndex):
        descriptor = document.select(platform)
        if descriptor is None:
            offered = ", ".join(d.platform.key() for d in document.manifests if d.platform) or "none"
            raise ManifestNotFound(
                f"{endpoint}/{reference.repository}@{resolved}: no {platform} image (has {offered})"
            )
        manifest_digest = descriptor.digest
        document = client.get_manifest(endpoint, reference, manifest_digest)
        if not isinstance(document, ImageManifest):
            raise UnsupportedImage(
                f"{reference}@{manifest_digest}: an index inside an index is not supported"
            )
    for layer in document.layers:
        if compression_for_media_type(layer.media_type) is None:
            raise UnsupportedImage(
                f"{reference}@{manifest_digest}: layer {layer.digest} has media type {layer.media_type!r}, "
                "which is not an image layer"
            )
    return PinnedImage(reference, endpoint, resolved, manifest_digest, document, platform)
