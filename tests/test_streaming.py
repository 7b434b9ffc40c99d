"""A blob read behind its download (gallery/prepare/streaming.py), with a real BlobWriter and a
writer thread: every byte once and in order, a start-over and a failure reported, the commit's
rename under an open reader harmless."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from pathlib import Path

import pytest

from gallery.errors import DigestMismatch
from gallery.prepare.blobcache import BlobCache
from gallery.prepare.streaming import FeedFailed, FeedRestarted, LayerFeed

DATA = random.Random(7).randbytes(300_000)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def write_slowly(cache: BlobCache, feed: LayerFeed, data: bytes, *, restart_at: int | None = None) -> None:
    writer = cache.writer(DIGEST, len(DATA))
    writer.watch(feed)
    try:
        for start in range(0, len(data), 25_000):
            if restart_at is not None and start == restart_at:
                writer.restart()
            writer.write(data[start : start + 25_000] if restart_at is None or start < restart_at else b"")
            time.sleep(0.002)
        writer.commit()
    except Exception as exc:  # what LayerDownloads does with a failed download
        feed.failed(exc)
        return
    finally:
        writer.close()
    feed.finished(cache.path(DIGEST))


def read_all(feed: LayerFeed, size: int = 10_000) -> bytes:
    chunks = []
    with feed.reader() as reader:
        while chunk := reader.read(size):
            chunks.append(chunk)
    return b"".join(chunks)


def test_the_reader_gets_every_byte_once_while_they_are_written(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "blobs")
    feed = LayerFeed()
    thread = threading.Thread(target=write_slowly, args=(cache, feed, DATA))
    thread.start()
    assert read_all(feed) == DATA
    thread.join()
    assert cache.has(DIGEST)  # committed under the reader


def test_a_resumed_partial_is_read_from_its_first_byte(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "blobs")
    first = cache.writer(DIGEST, len(DATA))
    first.write(DATA[:100_000])
    first.close()  # an earlier attempt's partial, kept for resume
    feed = LayerFeed()
    writer = cache.writer(DIGEST, len(DATA))
    writer.watch(feed)
    assert writer.offset == 100_000
    writer.write(DATA[100_000:])
    writer.commit()
    feed.finished(cache.path(DIGEST))
    assert read_all(feed) == DATA


def test_a_start_over_is_reported_not_read_as_more_bytes(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "blobs")
    feed = LayerFeed()
    thread = threading.Thread(target=write_slowly, args=(cache, feed, DATA), kwargs={"restart_at": 100_000})
    thread.start()
    with pytest.raises(FeedRestarted), feed.reader() as reader:
        while reader.read(10_000):
            pass
    thread.join()


def test_a_failed_download_fails_the_reader_with_its_error(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "blobs")
    feed = LayerFeed()
    wrong = DATA[:-1] + bytes([DATA[-1] ^ 1])  # one bit off: the commit refuses it
    thread = threading.Thread(target=write_slowly, args=(cache, feed, wrong))
    thread.start()
    with pytest.raises(FeedFailed) as failed:
        read_all(feed)
    thread.join()
    assert isinstance(failed.value.cause, DigestMismatch) and not cache.has(DIGEST)


def test_a_reader_opened_after_the_commit_reads_the_cached_file(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "blobs")
    feed = LayerFeed()
    write_slowly(cache, feed, DATA)  # done before the reader opens anything
    assert read_all(feed, size=-1) == DATA


def test_stop_ends_a_waiting_read(tmp_path: Path) -> None:
    feed = LayerFeed()
    threading.Timer(0.2, feed.stop).start()
    with pytest.raises(FeedFailed), feed.reader() as reader:
        reader.read(10)


def test_keeping_up_is_a_reader_close_behind_a_download_in_progress(tmp_path: Path) -> None:
    """What makes a later layer give way (gallery.operations.downloads): only an earlier layer
    the extractor is reading as it arrives, within the slack, and not yet complete."""
    cache = BlobCache(tmp_path / "blobs")
    feed = LayerFeed()
    writer = cache.writer(DIGEST, len(DATA))
    writer.watch(feed)
    try:
        writer.write(DATA[:100_000])
        assert not feed.keeping_up(10_000)  # nobody reads it yet: the extractor is elsewhere
        reader = feed.reader()
        assert len(reader.read(95_000)) == 95_000
        assert feed.keeping_up(10_000)
        assert not feed.keeping_up(1_000)  # 5,000 bytes behind
        writer.write(DATA[100_000:200_000])
        assert not feed.keeping_up(10_000)  # fallen behind: later layers may use the link
        reader.read(105_000)
        assert feed.keeping_up(10_000)
        writer.restart()
        assert not feed.keeping_up(10_000)  # read again later, from the cache
        writer.write(DATA)
        writer.commit()
    finally:
        writer.close()
    feed.finished(cache.path(DIGEST))
    assert not feed.keeping_up(len(DATA))  # complete: nothing left to give way to
    reader.close()
