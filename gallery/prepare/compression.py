"""Layer and tarball compression: recognising it and undoing it as a stream (pure wrappers).

gzip is undone by ISA-L (python-isal) in a thread of its own: about twice as fast as zlib, and it
overlaps with the extraction that reads from it (measured in docs/performance.md). Its read-ahead
is bounded (two 1 MiB blocks and an 8 MiB input buffer); the thread is stopped when the stream is
closed, which ``decompressing`` always does, so nothing reads the source after the caller is done.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Literal, Protocol, cast

import zstandard
from isal import igzip_threaded, isal_zlib

__all__ = [
    "DECOMPRESSION_ERRORS",
    "LAYER_MEDIA_TYPES",
    "Compression",
    "compression_for_media_type",
    "decompressing",
    "sniff_compression",
]

# What a corrupt stream raises while it is read, besides EOFError and gzip.BadGzipFile (OSError).
# (isal's stubs type its ``error`` as an instance; at run time it is the exception class.)
DECOMPRESSION_ERRORS: tuple[type[Exception], ...] = (
    cast(type[Exception], isal_zlib.error),
    zstandard.ZstdError,
)

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


# The OCI layer media type for each compression, for layers described here (tarballs, docker-save).
LAYER_MEDIA_TYPES: dict[Compression, str] = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
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


@contextmanager
def decompressing(raw: Readable, compression: Compression) -> Iterator[IO[bytes]]:
    """A readable stream of the decompressed bytes of ``raw`` (read as needed), closed on exit;
    ``raw`` itself stays open."""
    if compression == "gzip":
        stream = cast(IO[bytes], igzip_threaded.open(cast(IO[bytes], raw), "rb", threads=1))  # type: ignore[no-untyped-call]
    elif compression == "zstd":
        stream = cast(
            IO[bytes],
            zstandard.ZstdDecompressor().stream_reader(
                cast(IO[bytes], raw), read_across_frames=True, closefd=False
            ),
        )
    else:
        yield cast(IO[bytes], raw)
        return
    try:
        yield stream
    finally:
        stream.close()
