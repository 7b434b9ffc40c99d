"""The blob cache's writer on its own: a resume never trusts a partial longer than the blob, and
a commit is durable in the right order (file fsync, rename, directory fsync)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from gallery.errors import DigestMismatch
from gallery.prepare import blobcache
from gallery.prepare.blobcache import BlobCache

DATA = b"the blob's bytes" * 100
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def cache(tmp_path: Path) -> BlobCache:
    return BlobCache(tmp_path / "cache" / "blobs")


def test_a_partial_is_resumed_where_it_stopped(tmp_path: Path) -> None:
    blobs = cache(tmp_path)
    first = blobs.writer(DIGEST, len(DATA))
    first.write(DATA[:100])
    first.close()
    resumed = blobs.writer(DIGEST, len(DATA))
    assert resumed.offset == 100
    resumed.write(DATA[100:])
    assert resumed.commit() == blobs.path(DIGEST) and blobs.path(DIGEST).read_bytes() == DATA


def test_a_partial_longer_than_the_blob_is_dropped_not_resumed(tmp_path: Path) -> None:
    blobs = cache(tmp_path)
    (tmp_path / "cache" / "partial").mkdir(parents=True)
    blobs.partial_path(DIGEST).write_bytes(DATA + b"junk a dropped mirror appended")
    writer = blobs.writer(DIGEST, len(DATA))
    assert writer.offset == 0, "a partial longer than the blob is garbage"
    writer.write(DATA)
    assert writer.commit().read_bytes() == DATA


def test_bytes_beyond_the_declared_size_are_refused(tmp_path: Path) -> None:
    writer = cache(tmp_path).writer(DIGEST, len(DATA))
    writer.write(DATA)
    with pytest.raises(DigestMismatch, match="more than"):
        writer.write(b"x")


def test_a_commit_syncs_the_file_then_renames_then_syncs_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = blobcache.os.fsync, Path.replace

    def fsync(fd: int) -> None:
        events.append("fsync file")
        real_fsync(fd)

    def replace(self: Path, target: Path) -> Path:
        events.append("rename")
        return real_replace(self, target)

    monkeypatch.setattr(blobcache.os, "fsync", fsync)
    monkeypatch.setattr(Path, "replace", replace)
    monkeypatch.setattr(blobcache, "fsync_directory", lambda path: events.append(f"fsync dir {path.name}"))
    writer = cache(tmp_path).writer(DIGEST, len(DATA))
    writer.write(DATA)
    writer.commit()
    assert events == ["fsync file", "rename", "fsync dir sha256"]


def test_a_download_of_no_expected_digest_is_never_committed(tmp_path: Path) -> None:
    """The one rule of the cache: only bytes checked against a digest known in advance go into
    blobs/. A scratch download (an unverified tarball) can be sealed, never committed."""
    blobs = cache(tmp_path)
    writer = blobs.scratch()
    writer.write(DATA)
    with pytest.raises(DigestMismatch, match="no expected digest"):
        writer.commit()
    assert not blobs.has(DIGEST)
    assert not (tmp_path / "cache" / "blobs").exists() or not any((tmp_path / "cache" / "blobs").rglob("*"))


def test_a_complete_partial_is_committed_without_asking_the_registry(tmp_path: Path, registry: Any) -> None:
    """A process killed between a blob's last byte and its commit leaves a complete partial.
    Resuming it must not ask for ``Range: bytes=SIZE-``: distribution 2.8 answers 416 with a body
    shorter than the Content-Length it sends, which reads as a truncated download on every retry
    (the flaky killed-worker test of December). A complete partial that is the wrong blob is
    dropped and fetched whole."""
    import httpx

    from gallery.oci.models import Descriptor
    from gallery.oci.references import parse_reference
    from gallery.oci.registry import RegistryClient, RetryPolicy

    from .registry_server import LAYER_GZIP

    layer = DATA + b"pushed"
    _, _ = registry.push_image("cache/complete", "v1", [(layer, LAYER_GZIP)])
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    descriptor = Descriptor.model_validate({"mediaType": LAYER_GZIP, "digest": digest, "size": len(layer)})
    ref = parse_reference(f"{registry.host}/cache/complete:v1")
    seen: list[str | None] = []

    def record(request: httpx.Request) -> None:
        seen.append(request.headers.get("Range"))

    client = RegistryClient(httpx.Client(trust_env=False, event_hooks={"request": [record]}),
                            insecure_registries=frozenset({registry.host}), retry=RetryPolicy(attempts=1, initial_wait=0))  # fmt: skip
    blobs = cache(tmp_path)
    for partial, requests in ((layer, []), (b"x" * len(layer), [None])):
        blobs.partial_path(digest).parent.mkdir(parents=True, exist_ok=True)
        blobs.partial_path(digest).write_bytes(partial)
        seen.clear()
        client.fetch_blob(client.endpoint(registry.host), ref, descriptor, blobs.writer(digest, len(layer)))
        assert blobs.path(digest).read_bytes() == layer and seen == requests
        blobs.evict(digest)
