"""Ctrl-C never stops a swap halfway (edge module: signal handlers).

A journaled swap is recoverable after a crash, but an operator pressing Ctrl-C expects the command
to stop in a clean state, not to leave work for the next one: a SIGINT that arrives while a swap
runs is held until the swap has completed (or been undone), then raised. The swap's own steps are
renames and fsyncs of a few directories: milliseconds.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["interrupts_deferred"]


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """SIGINT during the body raises ``KeyboardInterrupt`` once the body has ended. Only in the
    main thread and when Python's own SIGINT handler is installed (an embedding program's handler
    is left alone); elsewhere the body runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
