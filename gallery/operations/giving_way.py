"""Whether a later layer's download pauses for an earlier one (pure logic, clock injected).

One connection fills most links: while the extractor keeps up with an earlier layer (it reads the
bytes as they arrive), a later layer sharing the link only slows the earlier one down, and the
install's last byte then leaves a whole later layer to extract. So later layers give way — but
only where that helps: behind a per-connection limit, or on a long fat link where one TCP window
cannot fill the pipe, pausing a connection frees nothing for the others. The first time a later
layer would give way, it keeps going for ``BASELINE`` seconds (the earlier layers' rate with
every connection busy), then pauses: for ``SETTLE`` seconds the paused connection's socket buffer
still fills (megabytes, on a fast link), then for ``PROBE`` seconds the earlier layers' rate
alone is measured; later layers give way for the rest of the install only if the earlier layers
got at least ``GAIN`` times faster.
A paused download reads a chunk at least every ``LONGEST_PAUSE`` seconds, so that no server drops
it as idle.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

__all__ = ["GivingWay"]

BASELINE = 1.0
SETTLE = 1.0
PROBE = 2.0
GAIN = 1.3
LONGEST_PAUSE = 5.0
STEP = 0.02
# The extractor "keeps up" while it is this close behind a download. Small-file stretches put it
# a few megabytes behind for a moment; at 4 MiB the later layer then took half the link each time
# and starved the extractor later (12.5 MB/s, many-files: 35-36 s); at 64 MiB, 33.0 s.
SLACK = 64 * 1024 * 1024


class Feed(Protocol):
    def keeping_up(self, slack: int) -> bool: ...

    @property
    def arrived(self) -> int: ...


_State = Literal["untried", "baseline", "settling", "probing", "helps", "useless"]


class GivingWay:
    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self.state: _State = "untried"
        self._since = 0.0
        self._bytes = 0
        self._baseline_rate = 0.0

    def pause(self, earlier: Sequence[Feed], stopped: Callable[[], bool]) -> None:
        """Called by a later layer's download between chunks: return when it may read on."""
        deadline = self._clock() + LONGEST_PAUSE
        while not stopped() and self._clock() < deadline and self._should_wait(earlier):
            self._sleep(STEP)

    def _should_wait(self, earlier: Sequence[Feed]) -> bool:
        keeping_up = any(feed.keeping_up(SLACK) for feed in earlier)
        with self._lock:
            now, arrived = self._clock(), sum(feed.arrived for feed in earlier)
            if not keeping_up:
                if self.state in ("baseline", "settling", "probing"):
                    self.state = "untried"  # the measurement no longer means anything
                return False
            if self.state == "untried":
                self.state, self._since, self._bytes = "baseline", now, arrived
                return False
            if self.state == "baseline":
                if now - self._since < BASELINE:
                    return False
                self._baseline_rate = (arrived - self._bytes) / (now - self._since)
                self.state, self._since = "settling", now
                return True
            if self.state == "settling":
                if now - self._since >= SETTLE:
                    self.state, self._since, self._bytes = "probing", now, arrived
                return True
            if self.state == "probing":
                if now - self._since < PROBE:
                    return True
                alone = (arrived - self._bytes) / (now - self._since)
                self.state = "helps" if alone >= GAIN * self._baseline_rate else "useless"
            return self.state == "helps"
