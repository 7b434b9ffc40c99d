"""OCI / Docker v2 manifest and index documents (pure models, parsed from verified bytes only)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gallery.digests import Digest
from gallery.errors import IntegrityError
from gallery.validation import describe_validation

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "BUNDLE_MEDIA_TYPES",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "EMPTY_CONFIG",
    "INDEX_MEDIA_TYPES",
    "MANIFEST_ACCEPT",
    "MANIFEST_MEDIA_TYPES",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Descriptor",
    "ImageIndex",
    "ImageManifest",
    "InvalidManifest",
    "Platform",
    "parse_document",
]

# The OCI empty descriptor: the config of images we describe ourselves (tarballs, cache rebuilds).
EMPTY_CONFIG = {
    "mediaType": "application/vnd.oci.empty.v1+json",  # OCI_EMPTY
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
}

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"  # a Sigstore bundle, as a referrer
BUNDLE_MEDIA_TYPES = frozenset({BUNDLE_MEDIA_TYPE, "application/vnd.dev.sigstore.bundle+json;version=0.3"})
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_MEDIA_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))


class InvalidManifest(IntegrityError):
    """A manifest or index that does not parse as one; its digest matched, so the source is bad."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class Platform(_Model):
    os: str
    architecture: str
    variant: str | None = None

    def key(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


class Descriptor(_Model):
    media_type: str = Field(alias="mediaType")
    digest: Digest
    size: int = Field(ge=0)
    platform: Platform | None = None
    artifact_type: str | None = Field(default=None, alias="artifactType")
    annotations: dict[str, str] = {}


class ImageManifest(_Model):
    schema_version: int = Field(alias="schemaVersion")
    media_type: str | None = Field(default=None, alias="mediaType")
    artifact_type: str | None = Field(default=None, alias="artifactType")
    config: Descriptor
    layers: tuple[Descriptor, ...]
    subject: Descriptor | None = None
    annotations: dict[str, str] = {}


class ImageIndex(_Model):
    schema_version: int = Field(alias="schemaVersion")
    media_type: str | None = Field(default=None, alias="mediaType")
    manifests: tuple[Descriptor, ...]

    def select(self, platform: str) -> Descriptor | None:
        """The manifest for ``os/arch[/variant]``; without a variant, the first of that os/arch."""
        wanted = platform.split("/")
        for descriptor in self.manifests:
            if descriptor.platform is None or descriptor.media_type not in MANIFEST_MEDIA_TYPES:
                continue
            have = descriptor.platform.key().split("/")
            if have[:2] == wanted[:2] and (len(wanted) < 3 or have[2:] == wanted[2:]):
                return descriptor
        return None


def parse_document(data: bytes, *, where: str) -> ImageManifest | ImageIndex:
    """Parse a manifest or an index by its content (the header's media type is only a hint).

    Raises:
        InvalidManifest: not JSON, schema 1, or missing required fields.
    """
    try:
        raw: Any = json.loads(data)
    except ValueError as exc:
        raise InvalidManifest(f"{where}: manifest is not JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("schemaVersion") != 2:
        raise InvalidManifest(
            f"{where}: not a schema 2 OCI/Docker manifest (schema 1 images are not supported)"
        )
    media_type = raw.get("mediaType")
    try:
        if "manifests" in raw or media_type in INDEX_MEDIA_TYPES:
            return ImageIndex.model_validate(raw)
        return ImageManifest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidManifest(f"{where}: invalid manifest: {describe_validation(exc, limit=1)}") from exc
