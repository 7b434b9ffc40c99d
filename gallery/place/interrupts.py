"""Ctrl-C stops a command at once, is never lost, and never stops a swap halfway (edge module:
signal handlers).

A journaled swap is recoverable after a crash, but an operator pressing Ctrl-C expects the command
to stop in a clean state, not to leave work for the next one: a SIGINT that arrives while a swap
runs is held until the swap has completed (or been undone), then raised. The swap's own steps are
renames and fsyncs of a few directories: milliseconds.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be, and some of those
places discard it: a finalizer run by the collector (``__del__``, a generator closed because it
was dropped, a weakref callback) reports it as "Exception ignored" and carries on — an install
would then complete after its Ctrl-C. While ``interrupts_latched`` is in force (the CLI wraps
each command in it) a SIGINT is also remembered until it is handled (``interrupt_handled``), and
``raise_if_interrupted`` — at each tar member, each chunk of file data and before any swap —
raises it again if it was lost.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["interrupt_handled", "interrupts_deferred", "interrupts_latched", "raise_if_interrupted"]

_pending = threading.Event()  # a SIGINT arrived that no caller has handled yet


def _latch(signum: int, frame: FrameType | None) -> None:
    _pending.set()
    raise KeyboardInterrupt


def _ours(handler: object) -> bool:
    """Python's own SIGINT handler or the latch: an embedding program's handler is left alone."""
    return handler is signal.default_int_handler or handler is _latch


@contextlib.contextmanager
def interrupts_latched() -> Iterator[None]:
    """For the body, a SIGINT raises ``KeyboardInterrupt`` as usual and stays pending until
    ``interrupt_handled``. Only in the main thread and where Python's own handler is installed."""
    in_main = threading.current_thread() is threading.main_thread()
    if not in_main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield  # another thread, an embedding program's handler, or latched already
        return
    previous = signal.signal(signal.SIGINT, _latch)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _pending.clear()


def raise_if_interrupted() -> None:
    """Raise the ``KeyboardInterrupt`` of a Ctrl-C not handled yet: one that Python discarded
    where it was first raised. Call it only on the way forward, never while cleaning up."""
    if _pending.is_set():
        raise KeyboardInterrupt


def interrupt_handled() -> None:
    """The caller has caught the ``KeyboardInterrupt`` and acted on it. Only the main thread
    handles it (a worker stopped by ``raise_if_interrupted`` leaves it to the main thread)."""
    if threading.current_thread() is threading.main_thread():
        _pending.clear()


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """SIGINT during the body raises ``KeyboardInterrupt`` once the body has ended; a pending
    one is raised before the body begins. Only in the main thread and when Python's own handler
    (or the latch) is installed; elsewhere the body runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not _ours(previous):
        yield
        return
    raise_if_interrupted()
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        if previous is _latch:
            _pending.set()
        raise KeyboardInterrupt
