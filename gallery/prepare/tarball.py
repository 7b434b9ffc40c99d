"""Tarball backends (``http(s)://`` and ``file://``), fetched into the blob cache by sha256 (edge module).

A ``file://`` path (or an absolute path) naming a directory is packed into a tar stream on the
way (``gallery.prepare.directory``), so it takes the same road.

The expected sha256 comes from the entry's ``sha256`` or the URI's ``#sha256=`` fragment. The bytes
are hashed while they are written; a mismatch is an integrity failure and nothing is cached. A
tarball then installs exactly like a one-layer image whose digest is its sha256 (compression is
recognised from its first bytes), so the same extraction rules apply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from gallery.catalog.sources import TarballSource
from gallery.errors import DigestMismatch, SourceUnavailable
from gallery.net.cancel import Cancellation
from gallery.net.client import capped_chunks, stream_get
from gallery.net.retry import TRANSIENT_STATUS, RetryPolicy, TransientStatus, retry_after
from gallery.oci.models import EMPTY_CONFIG, Descriptor, ImageManifest
from gallery.prepare.blobcache import BlobCache, BlobWriter
from gallery.prepare.compression import LAYER_MEDIA_TYPES, sniff_compression
from gallery.prepare.directory import pack_directory
from gallery.prepare.pin import PinnedImage

__all__ = ["TarballTooLarge", "TarballUnavailable", "pin_tarball", "read_signature", "stream_url"]

_CHUNK = 1024 * 1024


class TarballUnavailable(SourceUnavailable):
    pass


# As for indexes: entries have mirrors, so a few quick retries before moving on to the next one.
DEFAULT_RETRY = RetryPolicy(attempts=3, initial_wait=0.25)


class TarballTooLarge(TarballUnavailable):
    """More bytes than the cap allows: not worth keeping for a resume."""


@dataclass(frozen=True, slots=True)
class _TarballBlobs:
    source: TarballSource
    client: httpx.Client
    max_bytes: int

    def fetch_blob(
        self,
        descriptor: Descriptor,
        writer: BlobWriter,
        *,
        on_bytes: Callable[[int], None] | None = None,
        cancel: Cancellation | None = None,
    ) -> None:
        writer.restart()
        _stream_into(self.source, writer, self.client, self.max_bytes, on_bytes, cancel)
        writer.commit()


def pin_tarball(
    source: TarballSource,
    *,
    expected_sha256: str | None,
    cache: BlobCache,
    client: httpx.Client,
    max_bytes: int,
    platform: str,
    on_bytes: Callable[[int], None] | None = None,
) -> PinnedImage:
    """Fetch (or find in the cache) the tarball and describe it as a one-layer image.

    With ``expected_sha256`` the bytes are checked and committed to the blob cache; without, they
    are only downloaded to a scratch file outside ``blobs/`` (``PinnedImage.local_blobs``; the
    caller deletes it), since nothing unverified is ever cached.

    Raises:
        TarballUnavailable: it cannot be fetched.
        DigestMismatch: its sha256 is not the expected one (nothing is cached).
    """
    expected = f"sha256:{expected_sha256}" if expected_sha256 else None
    local: dict[str, Path] = {}
    fetched = [0]

    def counted(amount: int) -> None:
        fetched[0] += amount
        if on_bytes is not None:
            on_bytes(amount)

    if expected is None:  # a scratch file of its own: no other process writes it
        digest, path = _download(source, cache.scratch(), client, max_bytes, counted, expected_sha256)
        local[digest] = path
    else:
        # The blob's lock, as for registry blobs: two processes installing the same tarball
        # download it once and never write into the same partial file.
        with cache.locked(expected):
            if cache.has(expected):
                digest, path = expected, cache.path(expected)
            else:
                digest, path = _download(
                    source, cache.writer(expected, None), client, max_bytes, counted, expected_sha256
                )
    with path.open("rb") as handle:
        compression = sniff_compression(handle.read(4))
    layer = Descriptor.model_validate(
        {"mediaType": LAYER_MEDIA_TYPES[compression], "digest": digest, "size": path.stat().st_size}
    )
    manifest = ImageManifest.model_validate({"schemaVersion": 2, "config": EMPTY_CONFIG, "layers": [layer]})
    return PinnedImage(
        str(source),
        digest,
        digest,
        manifest,
        platform,
        _TarballBlobs(source, client, max_bytes),
        local_blobs=local,
        fetched_bytes=fetched[0],
    )


def _download(
    source: TarballSource,
    writer: BlobWriter,
    client: httpx.Client,
    max_bytes: int,
    on_bytes: Callable[[int], None] | None,
    expected_sha256: str | None,
) -> tuple[str, Path]:
    """The whole tarball into ``writer`` (committed to the cache when its sha256 is expected,
    sealed as a scratch file when not). A tarball is fetched without ``Range``, so a partial left
    by an earlier attempt (perhaps from another mirror) is dropped, never appended to."""
    writer.restart()
    try:
        _stream_into(source, writer, client, max_bytes, on_bytes)
        if expected_sha256 is not None:
            path, digest = writer.commit(), f"sha256:{expected_sha256}"
        else:
            path, digest = writer.seal()
    except DigestMismatch as exc:
        raise DigestMismatch(
            f"tarball {source.url}: its sha256 is not the expected {expected_sha256}; nothing was installed"
        ) from exc
    except BaseException:
        writer.discard()  # never resumed (see above), so never kept
        raise
    finally:
        writer.close()
    return digest, path


def _stream_into(
    source: TarballSource,
    writer: BlobWriter,
    client: httpx.Client,
    max_bytes: int,
    on_bytes: Callable[[int], None] | None,
    cancel: Cancellation | None = None,
) -> None:
    def take(chunk: bytes) -> None:
        if cancel is not None:
            cancel.check()  # between chunks: a tarball server's stalled read ends at timeouts.read
        writer.write(chunk)
        if on_bytes is not None:
            on_bytes(len(chunk))

    stream_url(
        source.url,
        client=client,
        max_bytes=max_bytes,
        sink=take,
        what="tarball",
        limit="limits.max_extract_bytes",
        restart=writer.restart,
    )


def read_signature(url: str, *, client: httpx.Client, max_bytes: int) -> bytes:
    """A tarball's signature bundle (the entry's ``signature``), read with a size cap.

    Raises:
        TarballUnavailable: it cannot be read or is larger than ``max_bytes``.
    """
    chunks: list[bytes] = []
    stream_url(
        url,
        client=client,
        max_bytes=max_bytes,
        sink=chunks.append,
        what="signature",
        limit="limits.max_bundle_bytes",
        restart=chunks.clear,
    )
    return b"".join(chunks)


def stream_url(
    url: str,
    *,
    client: httpx.Client,
    max_bytes: int,
    sink: Callable[[bytes], None],
    what: str,
    limit: str,
    restart: Callable[[], None] = lambda: None,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> None:
    """Stream a ``file://`` or ``http(s)://`` URL into ``sink``, refusing more than ``max_bytes``.
    Transient failures (connection, timeout, 429, 5xx) are retried from the start: ``restart``
    is called before each attempt, so the sink drops what an earlier one gave it."""
    received = 0

    def too_large() -> TarballTooLarge:
        return TarballTooLarge(f"{what} {url} is larger than {limit} ({max_bytes})")

    def take(chunk: bytes) -> None:  # a file:// source is counted here, an HTTP body by capped_chunks
        nonlocal received
        received += len(chunk)
        if received > max_bytes:
            raise too_large()
        sink(chunk)

    parts = urlsplit(url)
    try:
        if parts.scheme.lower() == "file":
            local = Path(unquote(parts.path))
            if local.is_dir() and not local.is_symlink():
                restart()
                pack_directory(local, take)
                return
            with local.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    take(chunk)
            return
        for attempt in retry.retrying():
            with attempt:
                restart()
                received = 0
                # These URLs carry no credentials, so following redirects (CDNs) leaks nothing.
                with stream_get(client, url) as response:
                    if response.status_code in TRANSIENT_STATUS:
                        raise TransientStatus(
                            response.status_code, retry_after(response.headers.get("Retry-After"))
                        )
                    if response.status_code != 200:
                        raise TarballUnavailable(f"{what} {url}: HTTP {response.status_code}")
                    for chunk in capped_chunks(response, max_bytes, too_large):
                        take(chunk)
    except TransientStatus as exc:
        raise TarballUnavailable(f"{what} {url}: {exc} (after {retry.attempts} attempts)") from exc
    except OSError as exc:
        raise TarballUnavailable(f"{what} {url}: {exc.strerror or exc}") from exc
    except httpx.HTTPError as exc:
        raise TarballUnavailable(f"{what} {url}: {type(exc).__name__}: {exc}") from exc
