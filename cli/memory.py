"""The command process's memory management: the garbage collector paused while it starts,
glibc's heap tuned for what an install does (the process is the command's; the library never
touches the collector or the allocator of a process that embeds it)."""

from __future__ import annotations

import contextlib
import gc
import sys

__all__ = [
    "collect_after_start_up",
    "keep_big_buffers_off_the_heap",
    "no_collections_at_exit",
    "no_collections_while_starting",
]

_M_MMAP_THRESHOLD = -3  # malloc.h
_THRESHOLD = 128 * 1024  # glibc's own starting value


def no_collections_while_starting() -> None:
    """Start-up (imports, the config and metadata models pydantic builds) allocates some 30,000
    objects that live as long as the process: every collection meanwhile traverses them all and
    frees none (~30 ms of ``list --installed --offline``, bench/operator.py)."""
    gc.disable()


def collect_after_start_up() -> None:
    """Once the command's work begins, collect as usual, leaving what start-up made out of every
    later collection. Only where ``no_collections_while_starting`` paused the collector (in
    tests, which drive the app in pytest's process, it was never paused: nothing happens)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def no_collections_at_exit() -> None:
    """The command is done: the interpreter's final collections would traverse every object
    again only to free memory the exit returns anyway (~80 ms of a short command). Objects are
    still released by reference count (files closed, buffers flushed); only cyclic garbage is
    left to the exit."""
    gc.freeze()


def keep_big_buffers_off_the_heap() -> None:
    """Serve every allocation of 128 KiB or more by its own mmap, returned on free.

    An extraction passes megabyte buffers between threads (the decompressor's blocks are freed
    by the tar reader, on another thread). glibc raises its mmap threshold to the largest buffer
    freed, so these end up on the heap, which then fragments and never shrinks: the peak RSS of
    the 41k-file install was 147 MB, 123 MB with a fixed threshold (docs/performance.md). Where
    the C library is not glibc, nothing happens."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)
