"""Flushing files while extracting: every handed-over file is flushed and closed, a flush error
reaches the extraction before any swap, and a writeback that falls behind never holds files open."""

from __future__ import annotations

import errno
import io
import os
import threading
from pathlib import Path

import pytest

from gallery.place.filewriter import FileWriter
from gallery.place.writeback import Writeback


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _still_open(tmp_path: Path) -> set[str]:
    """The descriptors of this process open on files under ``tmp_path``."""
    names = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
                names.add(fd)
        except OSError:
            continue  # the listing's own descriptor, closed by now
    return names


def _files(tmp_path: Path, count: int) -> list[int]:
    fds = []
    for number in range(count):
        fd = os.open(tmp_path / f"f{number}", os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"z" * number)
        fds.append(fd)
    return fds


def test_with_fdatasync_every_file_is_flushed_then_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.fdatasync
    flushed: list[str] = []
    lock = threading.Lock()

    def fdatasync(fd: int) -> None:
        real(fd)
        with lock:
            flushed.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr("gallery.place.filewriter.WRITEBACK", "fdatasync")
    before = _open_fds()
    writer = FileWriter(chunk_size=64, chunks=2)
    for number in range(40):
        writer.write_file(tmp_path / f"f{number}", io.BytesIO(b"y" * number), number, 0o644, 0)
    writer.close()
    assert sorted(flushed) == sorted(str(tmp_path / f"f{number}") for number in range(40))
    assert _open_fds() == before


def test_an_fdatasync_error_fails_the_extraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # fdatasync consumes a writeback error: the syncfs before the swap would not see it again.
    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", broken)
    monkeypatch.setattr("gallery.place.filewriter.WRITEBACK", "fdatasync")
    before = _open_fds()
    writer = FileWriter(chunk_size=64, chunks=2)
    writer.write_file(tmp_path / "f", io.BytesIO(b"data"), 4, 0o644, 0)
    with pytest.raises(OSError) as raised:
        writer.close()
    assert raised.value.errno == errno.EIO
    assert _open_fds() == before


def test_a_writeback_that_falls_behind_closes_files_at_once(tmp_path: Path) -> None:
    release = threading.Event()
    writeback = Writeback("fdatasync", threads=1, max_pending=3)
    writeback._flush = lambda fd: release.wait(10)
    for fd in _files(tmp_path, 20):
        writeback.hand_over(fd)
    # at most one in flight and three waiting: every other file was closed when handed over
    assert len(_still_open(tmp_path)) <= 4
    release.set()
    writeback.close()
    assert _still_open(tmp_path) == set()


def test_abort_closes_what_was_not_flushed(tmp_path: Path) -> None:
    release = threading.Event()
    writeback = Writeback("start", max_pending=100)
    writeback._flush = lambda fd: release.wait(10)
    for fd in _files(tmp_path, 10):
        writeback.hand_over(fd)
    release.set()
    writeback.abort()
    assert _still_open(tmp_path) == set()
