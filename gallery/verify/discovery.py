"""Where signature bundles of a digest are found: a registry repository or an OCI layout (edge module).

In a repository, cosign's referrer manifests (``artifactType`` = the Sigstore bundle type, one
layer holding the bundle, ``subject`` = the signed digest) are listed through the OCI 1.1
referrers API or the ``sha256-<hex>`` tag-schema fallback. Every referrer manifest is fetched by
digest and hashed, its ``subject`` must be the digest in question, and the bundle blob is read
with a size cap and hashed against its descriptor. At most ``limits.max_referrers`` are examined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gallery.errors import IntegrityError, SourceUnavailable
from gallery.oci.layout import OciLayout
from gallery.oci.models import BUNDLE_MEDIA_TYPES, Descriptor, ImageManifest
from gallery.oci.references import OciReference
from gallery.oci.registry import Endpoint, RegistryClient
from gallery.verify.evidence import SignatureSource

__all__ = ["FirstReachable", "LayoutSignatures", "RegistrySignatures"]


def _bundle_layer(manifest: ImageManifest, digest: str) -> Descriptor | None:
    if manifest.subject is None or manifest.subject.digest != digest:
        return None
    layers = [layer for layer in manifest.layers if layer.media_type in BUNDLE_MEDIA_TYPES]
    return layers[0] if len(layers) == 1 else None


@dataclass(frozen=True)
class RegistrySignatures:
    client: RegistryClient
    endpoint: Endpoint
    reference: OciReference
    max_referrers: int
    max_bundle_bytes: int

    def describe(self) -> str:
        return f"{self.endpoint}/{self.endpoint.repository(self.reference)}"

    def bundles(self, digest: str) -> list[bytes]:
        found = []
        for descriptor in self.client.referrers(
            self.endpoint, self.reference, digest, limit=self.max_referrers
        ):
            if descriptor.artifact_type not in BUNDLE_MEDIA_TYPES:
                continue
            try:
                manifest = self.client.get_manifest(self.endpoint, self.reference, descriptor.digest)
                layer = _bundle_layer(manifest, digest) if isinstance(manifest, ImageManifest) else None
                if layer is None or layer.size > self.max_bundle_bytes:
                    continue
                found.append(
                    self.client.read_blob(
                        self.endpoint, self.reference, layer, max_bytes=self.max_bundle_bytes
                    )
                )
            except (IntegrityError, SourceUnavailable):
                continue  # one bad referrer must not hide the others
        return found

    def has_legacy_signature(self, digest: str) -> bool:
        try:
            return self.client.has_tag(self.endpoint, self.reference, digest.replace(":", "-") + ".sig")
        except SourceUnavailable:
            return False


@dataclass(frozen=True)
class LayoutSignatures:
    """Referrer manifests carried inside an OCI layout (listed in its index.json)."""

    layout: OciLayout
    max_referrers: int
    max_bundle_bytes: int

    def describe(self) -> str:
        return str(self.layout)

    def bundles(self, digest: str) -> list[bytes]:
        found = []
        for descriptor in self.layout.referrer_descriptors()[: self.max_referrers]:
            try:
                manifest = self.layout.get_document(descriptor.digest)
                layer = _bundle_layer(manifest, digest) if isinstance(manifest, ImageManifest) else None
                if layer is None or layer.size > self.max_bundle_bytes:
                    continue
                found.append(self.layout.read_blob(layer, max_bytes=self.max_bundle_bytes))
            except (IntegrityError, SourceUnavailable):
                continue
        return found

    def has_legacy_signature(self, digest: str) -> bool:
        return False


@dataclass(frozen=True)
class FirstReachable:
    """The first of several equivalent sources that answers (a registry and its mirrors)."""

    sources: Sequence[SignatureSource]

    def describe(self) -> str:
        return self.sources[0].describe()

    def bundles(self, digest: str) -> list[bytes]:
        error: SourceUnavailable | None = None
        for source in self.sources:
            try:
                return source.bundles(digest)
            except SourceUnavailable as exc:
                error = exc
        raise error or SourceUnavailable("no signature source was given")

    def has_legacy_signature(self, digest: str) -> bool:
        return any(source.has_legacy_signature(digest) for source in self.sources)
