"""glibc's heap, tuned for what an install does (the process is the command's; the library
never touches the allocator of a process that embeds it)."""

from __future__ import annotations

import contextlib
import sys

__all__ = ["keep_big_buffers_off_the_heap"]

_M_MMAP_THRESHOLD = -3  # malloc.h
_THRESHOLD = 128 * 1024  # glibc's own starting value


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
