"""Layer and tarball compression: recognising it and undoing it as a stream (pure wrappers)."""

from __future__ import annotations

import gzip
from typing import IO, Literal, Protocol, cast

import zstandard

__all__ = ["Compression", "compression_for_media_type", "decompressing", "sniff_compression"]

Compression = Literal["gzip", "zstd", "none"]


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


_MEDIA_TYPES: dict[str, Compression] = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "zstd",
}


def compression_for_media_type(media_type: str) -> Compression | None:
    """The compression of a layer media type, or ``None`` if it is not a layer we can unpack."""
    return _MEDIA_TYPES.get(media_type)


def sniff_compression(head: bytes) -> Compression:
    """Compression from the first bytes of a tarball (for sources without a media type)."""
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    return "none"


def decompressing(raw: Readable, compression: Compression) -> IO[bytes]:
    """A readable stream of the decompressed bytes of ``raw`` (which is read as needed)."""
    if compression == "gzip":
        return cast(IO[bytes], gzip.GzipFile(fileobj=cast(IO[bytes], raw), mode="rb"))
    if compression == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], raw), read_across_frames=True, closefd=False
        )
        return cast(IO[bytes], reader)
    return cast(IO[bytes], raw)
