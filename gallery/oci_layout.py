"""OCI image layouts on disk (``ocifile://``), read with the same checks as a registry (edge module).

A layout is a directory with ``oci-layout``, ``index.json`` and ``blobs/sha256/<hex>``. Its
``index.json`` must name exactly one image (a manifest, or an image index from which the platform
manifest is selected). Every document and blob read from it is size-capped and hashed against the
digest that named it, exactly as if it came from a registry: a layout on a USB stick is no more
trusted than a mirror.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from .blobcache import BlobWriter
from .digests import is_digest
from .errors import DigestMismatch, SourceUnavailable
from .oci_models import Descriptor, ImageIndex, ImageManifest, parse_document

__all__ = ["LayoutError", "OciLayout"]

_CHUNK = 1024 * 1024


class LayoutError(SourceUnavailable):
    """The path is not a usable OCI image layout."""


class OciLayout:
    def __init__(self, root: Path, *, max_manifest_bytes: int) -> None:
        self.root = root
        self.max_manifest_bytes = max_manifest_bytes

    def __str__(self) -> str:
        return f"ocifile://{self.root}"

    def top_descriptor(self) -> Descriptor:
        """The one image ``index.json`` names.

        Raises:
            LayoutError: not a layout, or it names no image or several.
        """
        if not (self.root / "oci-layout").is_file():
            raise LayoutError(f"{self.root} is not an OCI image layout (no oci-layout file)")
        index = parse_document(self._read_capped(self.root / "index.json"), where=f"{self}/index.json")
        if not isinstance(index, ImageIndex) or len(index.manifests) != 1:
            count = len(index.manifests) if isinstance(index, ImageIndex) else 0
            raise LayoutError(f"{self}: index.json must name exactly one image (it names {count})")
        return index.manifests[0]

    def get_document(self, digest: str) -> ImageManifest | ImageIndex:
        data = self._read_capped(self._blob_path(digest))
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise DigestMismatch(f"{self}: blob {digest} hashes to {actual}")
        return parse_document(data, where=f"{self}@{digest}")

    def fetch_blob(
        self, descriptor: Descriptor, writer: BlobWriter, *, on_bytes: Callable[[int], None] | None = None
    ) -> None:
        """Copy a blob into the cache; ``writer.commit`` checks size and digest."""
        writer.restart()
        try:
            with self._blob_path(descriptor.digest).open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    writer.write(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
        except OSError as exc:
            raise LayoutError(f"{self}: cannot read blob {descriptor.digest}: {exc.strerror or exc}") from exc
        writer.commit()

    def _blob_path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise DigestMismatch(f"{self}: {digest!r} is not a sha256 digest")
        return self.root / "blobs" / "sha256" / digest.removeprefix("sha256:")

    def _read_capped(self, path: Path) -> bytes:
        try:
            with path.open("rb") as handle:
                data = handle.read(self.max_manifest_bytes + 1)
        except OSError as exc:
            raise LayoutError(f"{self}: cannot read {path.name}: {exc.strerror or exc}") from exc
        if len(data) > self.max_manifest_bytes:
            raise LayoutError(f"{self}: {path.name} is over limits.max_manifest_bytes")
        return data
