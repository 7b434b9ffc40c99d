"""An image's missing blobs, downloaded in parallel into the cache by digest, each followed by a
``LayerFeed`` so that the extractor can read a layer while it arrives.

Layers download in parallel, but a later layer gives way to an earlier one the extractor is
keeping up with, where that makes the earlier one faster (``giving_way``): on a slow link layers
then arrive nearly one after the other, each extracted as it arrives, and the last byte leaves
only the last layer's tail to extract. When the extractor falls behind, the later layers use the
spare link: the link never waits for the disk.

One blob's failure stops the others at their next chunk, and so does Ctrl-C or a failure of the
extractor (``stop``); partial files stay for resume. Each blob is fetched under its cache lock: a
process (or backend) that fetched it meanwhile leaves it in the cache, and the feed then points
at the cached file.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed

from gallery.errors import OperationalError
from gallery.net.cancel import Cancellation
from gallery.oci.models import Descriptor
from gallery.operations.giving_way import GivingWay
from gallery.operations.session import Session
from gallery.prepare.pin import PinnedImage
from gallery.prepare.streaming import LayerFeed

__all__ = ["LayerDownloads"]


class _Stopped(Exception):
    """A download abandoned because the install stopped (another layer failed, Ctrl-C)."""


class LayerDownloads:
    """Started by ``start``; ``wait`` joins them and raises the first real failure."""

    def __init__(
        self, session: Session, pinned: PinnedImage, missing: Sequence[Descriptor], backend: str
    ) -> None:
        self._session = session
        self._pinned = pinned
        self._missing = list(missing)
        self._backend = backend
        self.feeds = {blob.digest: LayerFeed() for blob in self._missing}
        self._cancel = Cancellation()  # stops every download, even one blocked on a silent link
        self._giving_way = GivingWay()
        self._counted: list[int] = []
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future[None]] = []

    @property
    def fetched(self) -> int:
        return sum(self._counted)

    def start(self) -> LayerDownloads:
        workers = max(1, min(self._session.config.max_parallel_layers, len(self._missing)))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="layer")
        self._futures = [self._pool.submit(self._fetch, blob) for blob in self._missing]
        return self

    def stop(self) -> None:
        """Stop every download at its next chunk and wait for the threads (never for the bytes)."""
        self._abort()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _abort(self) -> None:
        self._cancel.cancel()
        for future in self._futures:
            future.cancel()
        for feed in self.feeds.values():
            feed.stop()

    def wait(self) -> None:
        """Every download done; the first failure raised (a cache disk error as an
        ``OperationalError``: no other candidate can help with it)."""
        failure: BaseException | None = None
        try:
            for future in as_completed(self._futures):
                if future.cancelled():
                    continue
                error = future.exception()
                if error is not None and not isinstance(error, _Stopped) and failure is None:
                    failure = error
                    self.stop()  # the candidate has failed: no point downloading the rest
        except BaseException:
            self.stop()  # Ctrl-C reaches this thread only
            raise
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if failure is not None:
            raise self.explained(failure)

    def explained(self, failure: BaseException) -> BaseException:
        if isinstance(failure, OSError):
            pinned, cache = self._pinned, self._session.cache
            error = OperationalError(
                f"{pinned.label} ({pinned.manifest_digest}): cannot write to the blob cache "
                f"{cache.state}: {failure.strerror or failure}",
                hint="free space under cache_path (gallery cache prune), then retry",
            )
            error.__cause__ = failure
            return error
        return failure

    def _fetch(self, blob: Descriptor) -> None:
        cache, progress, backend = self._session.cache, self._session.progress, self._backend
        feed = self.feeds[blob.digest]
        try:
            if self._cancel.cancelled:
                raise _Stopped(blob.digest)

            earlier = [self.feeds[b.digest] for b in self._missing[: self._missing.index(blob)]]

            def on_bytes(amount: int) -> None:
                if self._cancel.cancelled:
                    raise _Stopped(blob.digest)
                self._counted.append(amount)
                progress.layer_advanced(backend, blob.digest, amount)
                if earlier:  # a cancelled pause returns at once; the next chunk stops
                    self._giving_way.pause(earlier, lambda: self._cancel.cancelled)

            with cache.locked(blob.digest):
                progress.layer_started(backend, blob.digest, blob.size)
                if cache.has(blob.digest):  # another process (or backend) fetched it meanwhile
                    progress.layer_advanced(backend, blob.digest, blob.size)
                    progress.layer_finished(backend, blob.digest)
                    feed.opened(cache.path(blob.digest), blob.size)
                    feed.finished(cache.path(blob.digest))
                    return
                writer = cache.writer(blob.digest, blob.size)
                try:
                    writer.watch(feed)
                    self._pinned.blobs.fetch_blob(blob, writer, on_bytes=on_bytes, cancel=self._cancel)
                finally:
                    writer.close()
                    progress.layer_finished(backend, blob.digest)
                feed.finished(cache.path(blob.digest))
        except BaseException as exc:
            if self._cancel.cancelled:  # whatever the cut connection raised: this one was stopped
                exc = exc if isinstance(exc, _Stopped) else _Stopped(blob.digest)
            feed.failed(self.explained(exc) if not isinstance(exc, _Stopped) else exc)
            if not isinstance(exc, _Stopped):
                self._abort()  # the others stop at their next chunk, the extractor at its next read
            raise exc  # not a bare raise: what a cut connection raised is reported as the stop it is
