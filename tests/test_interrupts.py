"""A Ctrl-C is never lost: one that Python discards where it is first raised (a finalizer run
by the collector) still stops the command at its next check, before anything is placed."""

from __future__ import annotations

import io
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from gallery.catalog.capability import HostFacts
from gallery.config.models import load_config
from gallery.operations.installer import Installer
from gallery.place.extract import ExtractLimits, TreeBuilder
from gallery.place.interrupts import (
    interrupt_handled,
    interrupts_deferred,
    interrupts_latched,
    raise_if_interrupted,
)
from gallery.verify.signatures import SigstoreVerifier

from .tarbuild import file, tar_bytes
from .test_crash import Project, before_and_after, versions  # noqa: F401

LIMITS = ExtractLimits(max_bytes=10 * 1024 * 1024, max_files=1000, max_path_length=4096)


@pytest.fixture
def discarded(monkeypatch: pytest.MonkeyPatch) -> list[type[BaseException]]:
    """What Python reported as 'Exception ignored' (instead of raising it) during the test."""
    seen: list[type[BaseException]] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_type))
    return seen


def lose_a_ctrl_c() -> None:
    """Deliver SIGINT inside a generator's ``finally`` run by its finalizer: the handler's
    KeyboardInterrupt is reported as unraisable and discarded, as the collector would do."""

    def dropped() -> Any:
        try:
            yield
        finally:
            signal.raise_signal(signal.SIGINT)

    generator = dropped()
    next(generator)
    del generator


def test_python_discards_a_ctrl_c_raised_in_a_finalizer(discarded: list[type[BaseException]]) -> None:
    # The hazard itself, without the latch: nothing is raised, the interrupt is gone.
    lose_a_ctrl_c()
    assert discarded == [KeyboardInterrupt]
    raise_if_interrupted()  # no latch: nothing was remembered


def test_a_latched_ctrl_c_lost_in_a_finalizer_is_raised_at_the_next_check(
    discarded: list[type[BaseException]],
) -> None:
    with interrupts_latched():
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        lose_a_ctrl_c()
        assert discarded == [KeyboardInterrupt]
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
        with pytest.raises(KeyboardInterrupt):  # still pending: nobody handled it yet
            raise_if_interrupted()
        interrupt_handled()
        raise_if_interrupted()
        lose_a_ctrl_c()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    raise_if_interrupted()  # leaving the command forgets it


def test_a_pending_ctrl_c_keeps_a_swap_from_starting(discarded: list[type[BaseException]]) -> None:
    ran: list[str] = []
    with interrupts_latched():
        lose_a_ctrl_c()
        with pytest.raises(KeyboardInterrupt), interrupts_deferred():
            ran.append("swap")
        interrupt_handled()
        with interrupts_deferred():
            ran.append("the next swap")
    assert ran == ["the next swap"]


def test_a_ctrl_c_held_by_a_swap_is_raised_after_it_and_stays_pending(
    discarded: list[type[BaseException]],
) -> None:
    ran: list[str] = []
    with interrupts_latched():
        with pytest.raises(KeyboardInterrupt), interrupts_deferred():
            signal.raise_signal(signal.SIGINT)
            ran.append("the whole swap")
        assert ran == ["the whole swap"]
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
        interrupt_handled()
    assert discarded == []


class _LosesACtrlC(io.RawIOBase):
    """A layer stream whose reading, past ``at`` bytes, loses a Ctrl-C once."""

    def __init__(self, data: bytes, at: int) -> None:
        self._data, self._at, self._position, self._lost = data, at, 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._position >= self._at and not self._lost:
            self._lost = True
            lose_a_ctrl_c()
        size = min(len(buffer), len(self._data) - self._position, 512)
        buffer[:size] = self._data[self._position : self._position + size]
        self._position += size
        return size


def test_extraction_stops_at_the_next_member_after_a_lost_ctrl_c(
    tmp_path: Path, discarded: list[type[BaseException]]
) -> None:
    members = [file(f"f{i:03}.txt", b"x" * 100) for i in range(200)]
    layer = tar_bytes(members)
    builder = TreeBuilder(tmp_path, LIMITS)
    stream = _LosesACtrlC(layer, at=20 * 1024)
    with interrupts_latched(), pytest.raises(KeyboardInterrupt):
        builder.apply_layer(io.BufferedReader(stream), layer="l")
    assert discarded == [KeyboardInterrupt]
    # stopped about where the Ctrl-C came (tarfile reads ahead a little), far from the end
    assert stream._position < 50 * 1024 < len(layer), stream._position


def test_a_big_file_stops_at_its_next_chunk_after_a_lost_ctrl_c(
    tmp_path: Path, discarded: list[type[BaseException]]
) -> None:
    layer = tar_bytes([file("big.bin", b"y" * (6 * 1024 * 1024)), file("after.txt", b"z")])
    builder = TreeBuilder(tmp_path, LIMITS)
    stream = _LosesACtrlC(layer, at=100 * 1024)
    with interrupts_latched(), pytest.raises(KeyboardInterrupt):
        builder.apply_layer(io.BufferedReader(stream), layer="l")
    assert discarded == [KeyboardInterrupt]
    assert stream._position < 3 * 1024 * 1024  # not read to the end of the big file


def test_a_lost_ctrl_c_before_the_swap_leaves_the_install_undone(
    tmp_path: Path,
    versions: dict[str, Any],  # noqa: F811
    discarded: list[type[BaseException]],
) -> None:
    project = Project(tmp_path)
    project.offer("v1")
    before, _ = before_and_after("install", versions)

    def step(reached: str) -> None:
        if reached == "synced":  # staging is complete and flushed: the swap comes next
            lose_a_ctrl_c()

    with httpx.Client(trust_env=False) as client, interrupts_latched():
        installer = Installer(load_config(project.config), client=client, verifier=SigstoreVerifier(),
                              detector=lambda: HostFacts("linux", "amd64"), step=step)  # fmt: skip
        batch = installer.install(["b"])
        raise_if_interrupted()  # the batch handled it
    assert discarded == [KeyboardInterrupt]
    assert batch.results[0].status == "interrupted" and batch.exit_code == 130
    assert "nothing was changed; b is not installed" in str(batch.results[0].error)
    assert project.live() == before
    project.assert_settled()
