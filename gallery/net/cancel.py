"""Ending a transfer from another thread, even one blocked on a link that has gone silent.

A download stopped by its flag alone ends only at its next chunk, and a stalled link sends no
next chunk: the read blocks until ``timeouts.read`` (a minute by default), and Ctrl-C or a
failed sibling layer would wait that long. ``Cancellation.cancel`` shuts down the sockets of the
responses being read (the blocked read returns at once), cuts short a retry's backoff, and
refuses any further attempt.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

__all__ = ["Cancellation", "Cancelled"]


class Cancelled(Exception):
    """The transfer was cancelled by its owner (never retried, never reported as a failure of
    the source)."""


class Cancellation:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            sockets = list(self._sockets)
        for sock in sockets:
            _shut_down(sock)

    def check(self) -> None:
        """Raises ``Cancelled`` once ``cancel`` was called."""
        if self._event.is_set():
            raise Cancelled("cancelled")

    def sleep(self, seconds: float) -> None:
        """A retry's backoff, cut short by ``cancel`` (then ``Cancelled``)."""
        self._event.wait(seconds)
        self.check()

    @contextmanager
    def watching(self, response: httpx.Response) -> Iterator[None]:
        """While the body of ``response`` is read, ``cancel`` shuts its connection down. A response
        without a socket (a test transport) is only stopped between chunks."""
        sock = _socket_of(response)
        if sock is None:
            yield
            return
        with self._lock:
            if self._event.is_set():
                raise Cancelled("cancelled")
            self._sockets.add(sock)
        try:
            yield
        finally:
            with self._lock:
                self._sockets.discard(sock)


def _socket_of(response: httpx.Response) -> socket.socket | None:
    stream = response.extensions.get("network_stream")
    get_extra_info = getattr(stream, "get_extra_info", None)
    if get_extra_info is None:
        return None
    sock = get_extra_info("socket")
    return sock if isinstance(sock, socket.socket) else None


def _shut_down(sock: socket.socket) -> None:
    # The plain socket's shutdown even for TLS: ssl.SSLSocket's own drops its SSL state, which
    # the reading thread is still using.
    with contextlib.suppress(OSError):  # already closed by its reader
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
