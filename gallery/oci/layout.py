"""OCI image layouts on disk (``ocifile://``), read with the same checks as a registry (edge module).

A layout is a directory with ``oci-layout``, ``index.json`` and ``blobs/sha256/<hex>``, or a tar
of one (``skopeo copy ... oci-archive:`` / ``gallery export``, and ``docker save`` since Docker
25), read in place: members are read through ``tarfile.extractfile`` and never extracted, and only
regular-file members count. A ``docker save`` tar of the older format (``manifest.json`` naming a
config and layer tars, no ``oci-layout``: Docker before 25, ``podman save``; what LocalAI's
``ocifile://`` means) is read too: its one image becomes an OCI manifest built from the files'
own sha256, so it installs like a layout; it carries no registry digest a signature could name. Its
``index.json`` must name exactly one image (a manifest, or an image index from which the platform
manifest is selected). Every document and blob read from it is size-capped and hashed against the
digest that named it, exactly as if it came from a registry: a layout on a USB stick is no more
trusted than a mirror.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from gallery.digests import is_digest, sha256_digest
from gallery.errors import DigestMismatch, SourceUnavailable
from gallery.files import read_at_most
from gallery.net.cancel import Cancellation
from gallery.oci.models import OCI_INDEX, OCI_MANIFEST, Descriptor, ImageIndex, ImageManifest, parse_document
from gallery.prepare.blobcache import BlobWriter
from gallery.prepare.compression import LAYER_MEDIA_TYPES, Compression, sniff_compression

__all__ = ["LayoutError", "OciLayout"]

_CHUNK = 1024 * 1024
_MAX_MEMBERS = 100_000
_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


class LayoutError(SourceUnavailable):
    """The path is not a usable OCI image layout."""


class OciLayout:
    def __init__(self, root: Path, *, max_manifest_bytes: int) -> None:
        self.root = root
        self.max_manifest_bytes = max_manifest_bytes
        self._archive: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        # A docker-save archive: the documents built for it, and where each digest's bytes are.
        self._synthetic: dict[str, bytes] = {}
        self._paths: dict[str, str] = {}

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()
            self._archive = None

    @contextmanager
    def _open(self, relative: str) -> Iterator[IO[bytes]]:
        """A file of the layout, from the directory or from inside the tar."""
        if self.root.is_dir():
            with (self.root / relative).open("rb") as local:
                yield local
            return
        if self._archive is None:
            try:
                self._archive = tarfile.open(self.root, mode="r:*")  # noqa: SIM115 - kept open, closed by close()
                for info in self._archive:
                    name = info.name.removeprefix("./")
                    if info.isreg() and len(self._members) < _MAX_MEMBERS:
                        self._members.setdefault(name, info)
            except (OSError, tarfile.TarError) as exc:
                raise LayoutError(f"{self}: not a readable OCI layout directory or tar: {exc}") from exc
        member = self._members.get(relative)
        if member is None or not member.isreg():
            raise FileNotFoundError(2, "not in the layout archive", relative)
        handle = self._archive.extractfile(member)
        if handle is None:
            raise FileNotFoundError(2, "not a regular file in the layout archive", relative)
        with handle:
            yield handle

    def __str__(self) -> str:
        return f"ocifile://{self.root}"

    def _index(self) -> ImageIndex:
        try:
            with self._open("oci-layout"):
                pass
        except OSError as exc:
            if not self.root.is_dir() and "manifest.json" in self._members:
                return self._docker_save_index()
            raise LayoutError(
                f"{self.root} is not an OCI image layout (no oci-layout file) nor a docker-save tar "
                "(no manifest.json)"
            ) from exc
        index = parse_document(self._read_capped("index.json"), where=f"{self}/index.json")
        if not isinstance(index, ImageIndex):
            raise LayoutError(f"{self}: index.json is not an image index")
        return index

    def top_descriptor(self) -> Descriptor:
        """The one image ``index.json`` names (signature referrers listed beside it do not count).

        Raises:
            LayoutError: not a layout, or it names no image or several.
        """
        images = [d for d in self._index().manifests if d.artifact_type is None]
        if len(images) != 1:
            raise LayoutError(f"{self}: index.json must name exactly one image (it names {len(images)})")
        return images[0]

    def referrer_descriptors(self) -> list[Descriptor]:
        """Manifests in index.json that carry an artifactType (signatures and other referrers)."""
        return [d for d in self._index().manifests if d.artifact_type is not None]

    def read_blob(self, descriptor: Descriptor, *, max_bytes: int) -> bytes:
        """A small blob read whole, capped and checked against its digest."""
        if descriptor.size > max_bytes:
            raise LayoutError(f"{self}: blob {descriptor.digest} is over the size limit")
        try:
            with self._open(self._blob_path(descriptor.digest)) as handle:
                data = read_at_most(handle, max_bytes)
        except OSError as exc:
            raise LayoutError(f"{self}: cannot read blob {descriptor.digest}: {exc.strerror or exc}") from exc
        actual = sha256_digest(data)
        if actual != descriptor.digest:
            raise DigestMismatch(f"{self}: blob {descriptor.digest} hashes to {actual}")
        return data

    def get_document(self, digest: str) -> ImageManifest | ImageIndex:
        return parse_document(self.get_document_bytes(digest), where=f"{self}@{digest}")

    def get_document_bytes(self, digest: str) -> bytes:
        """The exact bytes of a manifest or index, capped and checked against ``digest``."""
        data = self._synthetic.get(digest) or self._read_capped(self._blob_path(digest))
        actual = sha256_digest(data)
        if actual != digest:
            raise DigestMismatch(f"{self}: blob {digest} hashes to {actual}")
        return data

    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        *,
        on_bytes: Callable[[int], None] | None = None,
        cancel: Cancellation | None = None,
    ) -> None:
        """Copy a blob into the cache; ``writer.commit`` checks size and digest."""
        writer.restart()
        try:
            with self._open(self._blob_path(descriptor.digest)) as handle:
                while chunk := handle.read(_CHUNK):
                    if cancel is not None:
                        cancel.check()
                    writer.write(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
        except OSError as exc:
            raise LayoutError(f"{self}: cannot read blob {descriptor.digest}: {exc.strerror or exc}") from exc
        writer.commit()

    def _blob_path(self, digest: str) -> str:
        if not is_digest(digest):
            raise DigestMismatch(f"{self}: {digest!r} is not a sha256 digest")
        return self._paths.get(digest) or "blobs/sha256/" + digest.removeprefix("sha256:")

    def _docker_save_index(self) -> ImageIndex:
        """The one image of a docker-save tar as an OCI index naming a manifest built from it."""
        if not self._synthetic:
            self._build_docker_save_manifest()
        top = next(iter(self._synthetic))
        manifest = {"mediaType": OCI_MANIFEST, "digest": top, "size": len(self._synthetic[top])}
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [manifest]}
        return ImageIndex.model_validate(index)

    def _build_docker_save_manifest(self) -> None:
        try:
            images = json.loads(self._read_capped("manifest.json"))
        except ValueError as exc:
            raise LayoutError(f"{self}: manifest.json is not JSON: {exc}") from exc
        if not isinstance(images, list) or len(images) != 1 or not isinstance(images[0], dict):
            count = len(images) if isinstance(images, list) else "no list of"
            raise LayoutError(
                f"{self}: a docker-save tar must hold exactly one image (manifest.json has {count})"
            )
        image = images[0]
        config_name, layer_names = image.get("Config"), image.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layer_names, list) or not layer_names:
            raise LayoutError(f"{self}: manifest.json names no Config or no Layers")
        config_name = config_name.removeprefix("./")
        config_bytes = self._read_capped(config_name)
        config_digest = sha256_digest(config_bytes)
        self._paths[config_digest] = config_name
        layers = []
        for name in layer_names:
            if not isinstance(name, str):
                raise LayoutError(f"{self}: manifest.json names a layer that is not a path")
            name = name.removeprefix("./")
            digest, size, compression = self._hash_member(name)
            self._paths[digest] = name
            layers.append({"mediaType": LAYER_MEDIA_TYPES[compression], "digest": digest, "size": size})
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": _OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
                    "layers": layers}  # fmt: skip
        data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        self._synthetic[sha256_digest(data)] = data

    def _hash_member(self, name: str) -> tuple[str, int, Compression]:
        hasher = hashlib.sha256()
        size = 0
        try:
            with self._open(name) as handle:
                head = handle.read(_CHUNK)
                compression = sniff_compression(head)
                chunk = head
                while chunk:
                    hasher.update(chunk)
                    size += len(chunk)
                    chunk = handle.read(_CHUNK)
        except OSError as exc:
            raise LayoutError(f"{self}: cannot read layer {name}: {exc.strerror or exc}") from exc
        return f"sha256:{hasher.hexdigest()}", size, compression

    def _read_capped(self, relative: str) -> bytes:
        try:
            with self._open(relative) as handle:
                data = read_at_most(handle, self.max_manifest_bytes)
        except OSError as exc:
            raise LayoutError(f"{self}: cannot read {relative}: {exc.strerror or exc}") from exc
        if len(data) > self.max_manifest_bytes:
            raise LayoutError(f"{self}: {relative} is over limits.max_manifest_bytes")
        return data
