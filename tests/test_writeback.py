"""Flushing files while extracting: every handed-over file is flushed and closed, a flush error
reaches the extraction before any swap, and a writeback that falls behind never holds files open."""

from __future__ import annotations

import ctypes
import errno
import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import gallery.files as files
import gallery.operations.deploy as deploy
from gallery.catalog.capability import HostFacts
from gallery.config.models import load_config
from gallery.operations.installer import Installer
from gallery.place.filewriter import FileWriter
from gallery.place.writeback import BackgroundSync, Writeback
from gallery.verify.signatures import SigstoreVerifier

from .test_crash import Project


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


# -- BackgroundSync: syncfs every few seconds while the layers are extracted ---------------------


def test_background_sync_runs_until_stopped_and_not_after(tmp_path: Path) -> None:
    calls: list[Path] = []
    ran = threading.Event()

    def sync(root: Path) -> bool:
        calls.append(root)
        if len(calls) >= 3:
            ran.set()
        return True

    with BackgroundSync(tmp_path, interval=0.01, sync=sync) as background:
        assert ran.wait(10)
    stopped_at = len(calls)
    background._thread.join(5)
    assert not background._thread.is_alive()
    assert stopped_at <= len(calls) <= stopped_at + 1  # at most the one in progress
    assert set(calls) == {tmp_path} and background.runs == len(calls)


def test_background_sync_calls_the_real_syncfs(tmp_path: Path) -> None:
    (tmp_path / "dirty").write_bytes(b"d" * 1_000_000)
    with BackgroundSync(tmp_path, interval=0.01) as background:
        for _ in range(500):
            if background.runs:
                break
            time.sleep(0.01)
    assert background.runs >= 1  # syncfs_once returned success: the data was written out


def _failing(root: Path) -> bool:
    raise OSError(errno.EIO, "Input/output error", str(root))


def test_a_write_error_met_in_the_background_is_raised_when_the_extraction_ends(tmp_path: Path) -> None:
    # The kernel reports a writeback error to one syncfs only: the final flush would not see it.
    with pytest.raises(OSError) as raised, BackgroundSync(tmp_path, interval=0.001, sync=_failing) as bg:
        bg._thread.join(5)
    assert raised.value.errno == errno.EIO


def test_after_a_failed_extraction_the_background_error_is_not_raised_nor_waited_for(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(root: Path) -> bool:
        started.set()
        release.wait(10)
        raise OSError(errno.EIO, "Input/output error", str(root))

    with pytest.raises(KeyError), BackgroundSync(tmp_path, interval=0.001, sync=slow) as background:
        assert started.wait(5)
        raise KeyError("the extraction failed")
    assert background._thread.is_alive()  # not waited for: the install reports its own failure
    release.set()


def test_syncfs_errors_are_raised_and_only_a_missing_syncfs_falls_back(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:  # fmt: skip
    def refusing(code: int) -> Any:
        def syncfs(fd: int) -> int:
            ctypes.set_errno(code)
            return -1

        return syncfs

    synced: list[bool] = []
    monkeypatch.setattr(os, "sync", lambda: synced.append(True))
    monkeypatch.setattr(files, "_SYNCFS", refusing(errno.EIO))
    with pytest.raises(OSError) as raised:
        files.sync_filesystem(tmp_path)
    assert raised.value.errno == errno.EIO and synced == []
    monkeypatch.setattr(files, "_SYNCFS", refusing(errno.ENOSYS))
    files.sync_filesystem(tmp_path)
    assert synced == [True]


def test_an_install_syncs_in_the_background_and_stops_before_the_swap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []

    class Recorded(BackgroundSync):
        def __init__(self, root: Path) -> None:
            super().__init__(root, interval=0.001)
            order.append("started")

        def stop(self) -> None:
            order.append("stopped")
            super().stop()

    monkeypatch.setattr(deploy, "BackgroundSync", Recorded)
    project = Project(tmp_path)
    project.offer("v1")
    with httpx.Client(trust_env=False) as client:
        installer = Installer(load_config(project.config), client=client, verifier=SigstoreVerifier(),
                              detector=lambda: HostFacts("linux", "amd64"), step=order.append)  # fmt: skip
        assert installer.install(["b"]).exit_code == 0
    assert order[:3] == ["started", "stopped", "synced"], order
