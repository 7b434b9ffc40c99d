"""Placing what the trust gate verified: fetch missing blobs by digest into the cache, extract into
staging (re-hashing every cached blob as it is read; a bad one is evicted and fetched again, once),
require ``run.sh``, write ``metadata.json`` with the evidence, swap into place (journaled)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gallery.catalog.resolve import Resolution
from gallery.errors import DigestMismatch, OperationalError, UnsafeArchiveError
from gallery.oci.models import Descriptor
from gallery.operations.downloads import LayerDownloads
from gallery.operations.gate import Verified
from gallery.operations.session import Session
from gallery.place.extract import FileRecord, TreeBuilder
from gallery.place.filestore import FileStore
from gallery.place.layer_records import RecordedLayer, RecordedLayers, RecordWriter, StoredFileMissing
from gallery.place.metadata import METADATA_FORMAT_VERSION, BackendMetadata, LayerRecord, write_metadata
from gallery.place.swap import Op
from gallery.place.writeback import BackgroundSync
from gallery.prepare.blobcache import BlobCache, HashingReader
from gallery.prepare.cache_users import register_user
from gallery.prepare.compression import compression_for_media_type, decompressing
from gallery.prepare.pin import PinnedImage
from gallery.prepare.streaming import FeedFailed, FeedRestarted, LayerFeed
from gallery.trees import remove_tree

__all__ = ["Deployer"]

MetadataFor = Callable[[tuple[FileRecord, ...]], BackendMetadata]


class Deployer:
    def __init__(self, session: Session) -> None:
        self._session = session

    def deploy(
        self, verified: Verified, resolution: Resolution, *, op: Op, keep: BackendMetadata | None = None
    ) -> int:
        """Place ``verified`` as ``resolution``'s backend; the bytes fetched. ``keep``: a repair
        from the cache, whose rebuilt files must be exactly the recorded ones (kept as they are).

        Raises:
            TypeError: ``verified`` did not come from the trust gate.
            SourceUnavailable, DigestMismatch: a blob could not be fetched, or not intact.
            UnsafeArchiveError: a layer breaks an extraction rule. OperationalError: disk.
        """
        if not isinstance(verified, Verified):  # the one door: nothing unverified is placed
            raise TypeError("deploy accepts only what the trust gate verified")
        name = resolution.entry.name

        def metadata(files: tuple[FileRecord, ...]) -> BackendMetadata:
            if keep is not None:
                rebuilt = tuple(f.to_json() for f in files if f.path != "metadata.json")
                if rebuilt != keep.files:
                    raise DigestMismatch(f"{name}: the cached layers do not rebuild the recorded files")
                return keep
            return _metadata(verified, resolution, files)

        # A repair rebuilds the recorded files, modes included: a backend installed with the
        # image's own modes (before read_only_files, or with it off) keeps them.
        image_modes = keep is not None and any(
            int(f["mode"], 8) & 0o222 for f in keep.files if f["type"] == "file"
        )
        store = self._session.file_store.for_one_tree(image_modes=image_modes)
        try:
            return self._build_and_place(verified.pinned, name, metadata, op, store)
        except BaseException:
            store.forget_added()  # a failed install leaves no trace, in the store neither
            raise

    def fetch(self, verified: Verified, backend: str) -> int:
        """Bring the image's config and layers into the cache (export), by digest."""
        pinned = verified.pinned
        return self._fetch_blobs(pinned, (pinned.manifest.config, *pinned.manifest.layers), backend)

    def _build_and_place(
        self, pinned: PinnedImage, name: str, metadata: MetadataFor, op: Op, store: FileStore
    ) -> int:
        session = self._session
        register_user(session.cache.state, session.config.backends_path)
        fetched = 0
        staging = self._new_staging(name)
        records = RecordedLayers(store)
        recorded = {d: r for d in {layer.digest for layer in pinned.manifest.layers} if (r := records.get(d))}
        try:
            # The kernel writes the tree out while it is built: the flush before the swap is short.
            with BackgroundSync(staging.parent):  # (a retry replaces staging, not its parent)
                try:
                    builder, fetched = self._stream(pinned, staging, name, store, recorded)
                except (_CachedBlobBad, _Restarted) as bad:
                    # The cache held bytes that are not the blob (or lost it to a concurrent prune),
                    # a download started over under the extractor, or a recorded layer's file left
                    # the store: fetch what is missing, and extract again from the cache, once.
                    if isinstance(bad, _CachedBlobBad):
                        session.cache.evict(bad.digest)
                    fetched += bad.fetched + self._fetch_blobs(pinned, pinned.manifest.layers, name)
                    remove_tree(staging)
                    staging = self._new_staging(name)
                    try:
                        builder = self._extract(pinned, staging, name, store, {})
                    except _CachedBlobBad as again:
                        raise DigestMismatch(
                            f"{pinned.label}: blob {again.digest} does not hash to its digest, "
                            "even fetched again"
                        ) from None
                files = builder.finish()
            run_sh = staging / "run.sh"
            if not run_sh.is_file() or run_sh.is_symlink():
                raise UnsafeArchiveError(
                    f"{pinned.label} ({pinned.manifest_digest}): the image has no run.sh file"
                )
            record = metadata(files)
            if builder.copied_links:
                record = record.model_copy(update={"copied_links": tuple(sorted(builder.copied_links))})
            write_metadata(staging, record)
            staging.chmod(0o755)  # staging is private while being built; the backend is not
        except OSError as exc:
            remove_tree(staging)
            raise OperationalError(
                f"{name}: cannot build {pinned.label} ({pinned.manifest_digest}) in {staging.parent}: "
                f"{exc.strerror or exc}" + (f" ({Path(exc.filename).name})" if exc.filename else ""),
                hint="free space or fix permissions under backends_path, then retry",
            ) from exc
        except BaseException:
            remove_tree(staging)
            raise
        # From here the swap owns staging: its undo removes it, or its journal names it for recovery.
        session.progress.phase(name, "swapping", f"{builder.files} file{'' if builder.files == 1 else 's'}")
        session.swapper.place(name, staging, op=op)
        return fetched

    def _new_staging(self, name: str) -> Path:
        state = self._session.store.state
        try:
            return state.new_staging(name)
        except OSError as exc:
            raise OperationalError(
                f"{name}: cannot create a staging directory under {state.staging}: {exc.strerror or exc}",
                hint="free space or fix permissions under backends_path (is it read-only?), then retry",
            ) from exc

    def _stream(
        self,
        pinned: PinnedImage,
        staging: Path,
        name: str,
        store: FileStore,
        recorded: dict[str, RecordedLayer],
    ) -> tuple[TreeBuilder, int]:
        """Download the missing layers into the cache while extracting them in order: a layer is
        read behind its download (staging is discarded unless its digest matches at the end).
        A layer ``recorded`` comes from the file store alone: it is not even fetched."""
        needed = [layer for layer in pinned.manifest.layers if layer.digest not in recorded]
        downloads = self._downloads(pinned, needed, name)
        if downloads is None:
            try:
                return self._extract(pinned, staging, name, store, recorded), 0
            except StoredFileMissing:  # pruned since the record was checked: the blob it is
                raise _Restarted(0) from None
        try:
            builder = self._extract(pinned, staging, name, store, recorded, feeds=downloads.feeds)
        except FeedFailed:
            downloads.wait()  # raises the download's own error (a feed fails only with it)
            raise
        except (FeedRestarted, StoredFileMissing):
            # The blob is in the cache now, or a recorded layer lost a stored file: let the other
            # downloads finish (their bytes count) and extract again from the cache.
            downloads.wait()
            raise _Restarted(downloads.fetched) from None
        except _CachedBlobBad as bad:
            downloads.wait()
            raise _CachedBlobBad(bad.digest, downloads.fetched) from None
        except BaseException:
            downloads.stop()
            raise
        downloads.wait()
        return builder, downloads.fetched

    def _downloads(
        self, pinned: PinnedImage, blobs: Sequence[Descriptor], backend: str
    ) -> LayerDownloads | None:
        """The downloads of what the cache lacks, started (``None``: nothing to fetch)."""
        cache, progress = self._session.cache, self._session.progress
        missing = [b for b in blobs if b.digest not in pinned.local_blobs and not cache.has(b.digest)]
        if not missing:
            return None
        progress.phase(backend, "downloading", f"{len(missing)} of {len(blobs)} blobs",
                       total=sum(b.size for b in missing))  # fmt: skip
        return LayerDownloads(self._session, pinned, missing, backend).start()

    def _fetch_blobs(self, pinned: PinnedImage, blobs: Sequence[Descriptor], backend: str) -> int:
        downloads = self._downloads(pinned, blobs, backend)
        if downloads is None:
            return 0
        downloads.wait()
        return downloads.fetched

    def _extract(
        self,
        pinned: PinnedImage,
        staging: Path,
        name: str,
        store: FileStore,
        recorded: dict[str, RecordedLayer],
        *,
        feeds: dict[str, LayerFeed] | None = None,
    ) -> TreeBuilder:
        """Every layer in order into ``staging``: a layer with a feed as it downloads, any other
        from the cache (or the local layout); each re-hashed as it is read."""
        cache, progress = self._session.cache, self._session.progress
        builder = TreeBuilder(staging, self._session.limits, links=self._session.swapper.fs, store=store)
        layers = pinned.manifest.layers
        for number, layer in enumerate(layers, 1):
            so_far = f", {builder.files} files" if builder.files else ""
            progress.phase(name, "extracting", f"layer {number} of {len(layers)}{so_far}")
            compression = compression_for_media_type(layer.media_type)
            if compression is None:  # pin refused other media types; never extract one blindly
                raise UnsafeArchiveError(f"{pinned.label}: layer {layer.digest} is not an image layer")
            if layer.digest in recorded:
                builder.apply_layer(recorded[layer.digest], layer=layer.digest)
                continue
            feed = (feeds or {}).get(layer.digest)
            local = pinned.local_blobs.get(layer.digest)
            if feed is None and local is None and not cache.has(layer.digest):  # pruned since
                raise _CachedBlobBad(layer.digest)
            recorder = RecordedLayers(store).writer(layer.digest)
            with _layer_reader(cache, layer.digest, local, feed) as reader, _discarding(recorder):
                try:
                    with decompressing(reader, compression) as stream:
                        try:
                            builder.apply_layer(stream, layer=layer.digest, recorder=recorder)
                        except UnsafeArchiveError:
                            raise
                        except BaseException:
                            # Leaving the block joins the decompressor's thread, which may be
                            # waiting for bytes still downloading: release it first (Ctrl-C).
                            if feed is not None:
                                feed.stop()
                            raise
                except UnsafeArchiveError:
                    reader.drain()
                    if reader.digest != layer.digest:
                        raise _CachedBlobBad(layer.digest) from None
                    raise
                reader.drain()
                if reader.digest != layer.digest or reader.count != layer.size:
                    raise _CachedBlobBad(layer.digest)
                recorder.commit()  # its digest matched
        return builder


def _metadata(verified: Verified, resolution: Resolution, files: Any) -> BackendMetadata:
    pinned, entry = verified.pinned, resolution.entry
    return BackendMetadata(
        format_version=METADATA_FORMAT_VERSION,
        name=entry.name,
        gallery_url=resolution.gallery.config.url,
        installed_at=datetime.now(UTC),
        version=entry.version,
        uri=entry.uri,
        alias=entry.alias,
        digest=pinned.resolved_digest,
        gallery=resolution.gallery.name,
        resolved_digest=pinned.resolved_digest,
        manifest_digest=pinned.manifest_digest,
        platform=pinned.platform,
        candidate=verified.candidate,
        layers=tuple(
            LayerRecord(digest=layer.digest, size=layer.size, media_type=layer.media_type)
            for layer in pinned.manifest.layers
        ),
        verification=verified.evidence,
        ad_hoc=True if resolution.ad_hoc else None,
    ).model_copy(  # our own records: validating tens of thousands of dicts would copy each
        update={"files": tuple(f.to_json() for f in files if f.path != "metadata.json")}
    )


class _CachedBlobBad(Exception):
    def __init__(self, digest: str, fetched: int = 0) -> None:
        super().__init__(digest)
        self.digest = digest
        self.fetched = fetched


class _Restarted(Exception):
    """A download started over under the extractor; ``fetched``: the bytes it cost so far."""

    def __init__(self, fetched: int) -> None:
        super().__init__(fetched)
        self.fetched = fetched


@contextlib.contextmanager
def _discarding(recorder: RecordWriter) -> Iterator[None]:
    """The record of a layer that failed goes (one that committed is already in place)."""
    try:
        yield
    finally:
        recorder.discard()


@contextlib.contextmanager
def _layer_reader(
    cache: BlobCache, digest: str, local: Path | None, feed: LayerFeed | None
) -> Iterator[HashingReader]:
    if feed is None:
        with cache.reading(digest, path=local) as reader:
            yield reader
        return
    with feed.reader() as follower:
        yield HashingReader(follower)
