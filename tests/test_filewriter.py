"""The extraction's background file writer: in order, bounded, and a failure reaches the caller."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import sys
from pathlib import Path

import pytest

from gallery.files import start_writeback, sync_file_range_write
from gallery.place.filewriter import FileWriter


class _Broken(Exception):
    pass


class _BreaksAfter(io.RawIOBase):
    """A source that gives ``count`` bytes, then fails (a layer cut off mid-file)."""

    def __init__(self, count: int) -> None:
        self._left = count

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._left:
            raise _Broken
        count = min(len(buffer), self._left)
        buffer[:count] = b"x" * count
        self._left -= count
        return count


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_files_are_written_in_order_with_their_mode_and_time(tmp_path: Path) -> None:
    # Tiny chunks, two of them: files span chunks, and the caller waits for the thread to give
    # chunks back before it can read on.
    writer = FileWriter(chunk_size=64, chunks=2)
    contents = {number: f"{number};".encode() * (number % 40) for number in range(300)}
    for number, data in contents.items():
        source = io.BytesIO(data + b"beyond")
        count, sha256 = writer.write_file(tmp_path / f"f{number}", source, len(data), 0o640, 10**9 * number)
        assert (count, sha256) == (len(data), hashlib.sha256(data).hexdigest())
    writer.close()
    for number, data in contents.items():
        path = tmp_path / f"f{number}"
        assert path.read_bytes() == data
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_mtime_ns == 10**9 * number


def test_a_source_that_ends_early_is_counted_short(tmp_path: Path) -> None:
    writer = FileWriter(chunk_size=16)
    assert writer.write_file(tmp_path / "short", io.BytesIO(b"x" * 40), 100, 0o644, 0)[0] == 40
    writer.close()


def test_a_failed_create_is_raised_at_the_next_call_and_nothing_after_it_is_written(tmp_path: Path) -> None:
    (tmp_path / "taken").write_bytes(b"already here")
    writer = FileWriter()
    writer.write_file(tmp_path / "taken", io.BytesIO(b"new"), 3, 0o644, 0)  # O_EXCL: refused
    with pytest.raises(FileExistsError):
        writer.settle()
    with pytest.raises(FileExistsError):
        writer.write_file(tmp_path / "later", io.BytesIO(b"new"), 3, 0o644, 0)
    writer.abort()
    assert not (tmp_path / "later").exists()
    assert (tmp_path / "taken").read_bytes() == b"already here"


def test_never_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (tmp_path / "link").symlink_to(outside)
    writer = FileWriter()
    writer.write_file(tmp_path / "link", io.BytesIO(b"new"), 3, 0o644, 0)
    with pytest.raises(FileExistsError):
        writer.close()
    assert not outside.exists()


def test_abort_drops_the_queue_and_closes_what_was_open(tmp_path: Path) -> None:
    before = _open_fds()
    writer = FileWriter(chunk_size=16)
    with pytest.raises(_Broken):
        writer.write_file(tmp_path / "half", _BreaksAfter(40), 1000, 0o644, 0)
    writer.settle()  # created and written, never finished
    assert len(_open_fds() - before) >= 1
    writer.abort()
    assert _open_fds() - before == set(), "the half-written file's descriptor was left open"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_starting_writeback_reaches_the_kernel(tmp_path: Path) -> None:
    # Python's os has no sync_file_range: for a while start_writeback looked it up there, found
    # nothing and silently did nothing. A closed descriptor's EBADF shows the call is made.
    fd = os.open(tmp_path / "data", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * (1 << 20))
        assert sync_file_range_write(fd) is True
    finally:
        os.close(fd)
    with pytest.raises(OSError) as raised:
        sync_file_range_write(fd)
    assert raised.value.errno == errno.EBADF
    start_writeback(fd)  # not a durability point: its errors are the flush's to report


def test_with_writeback_on_every_file_has_its_writeback_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    monkeypatch.setattr("gallery.place.filewriter.WRITEBACK", "start")
    monkeypatch.setattr(
        "gallery.place.writeback.start_writeback",
        lambda fd: started.append(os.readlink(f"/proc/self/fd/{fd}")),
    )
    writer = FileWriter(chunk_size=64, chunks=2)
    for number in range(50):
        writer.write_file(tmp_path / f"f{number}", io.BytesIO(b"y" * number), number, 0o644, 0)
    writer.close()
    assert started == [str(tmp_path / f"f{number}") for number in range(50)]
