"""When a later layer's download gives way to an earlier one (gallery.operations.giving_way):
on a simulated link, with a fake clock."""

from __future__ import annotations

from gallery.operations.giving_way import PROBE, SETTLE, GivingWay

CHUNK = 0.01  # seconds the later download takes to read one chunk


class Earlier:
    """The earlier layer: its bytes arrive at ``alone`` B/s while the later one is paused, at
    ``shared`` B/s while both read; ``keeps_up``: the extractor reads it as it arrives."""

    def __init__(
        self, alone: float, shared: float, *, keeps_up: bool = True, buffer_fill: float = 0.0
    ) -> None:
        self.alone, self.shared, self.keeps_up = alone, shared, keeps_up
        self.buffer_fill = buffer_fill  # seconds a paused connection still takes its share
        self.arrived = 0
        self.now = 0.0
        self.paused_for = 0.0
        self._paused_since: float | None = None

    def keeping_up(self, slack: int) -> bool:
        return self.keeps_up

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:  # the later download, paused
        if self._paused_since is None:
            self._paused_since = self.now
        filling = self.now - self._paused_since < self.buffer_fill
        self.now += seconds
        self.paused_for += seconds
        self.arrived += int((self.shared if filling else self.alone) * seconds)

    def later_reads_a_chunk(self) -> None:
        self._paused_since = None
        self.now += CHUNK
        self.arrived += int(self.shared * CHUNK)


def run(earlier: Earlier, seconds: float = 20.0) -> GivingWay:
    giving_way = GivingWay(clock=earlier.clock, sleep=earlier.sleep)
    while earlier.now < seconds:
        giving_way.pause([earlier], lambda: False)
        earlier.later_reads_a_chunk()
    return giving_way


def test_on_a_shared_link_the_later_layer_waits_for_the_earlier_one() -> None:
    earlier = Earlier(alone=12_500_000, shared=6_250_000)
    assert run(earlier).state == "helps"
    assert earlier.paused_for > 0.9 * 20  # it still reads a chunk every few seconds


def test_the_paused_connection_s_filling_buffer_is_not_taken_for_no_gain() -> None:
    # Its socket buffer takes megabytes after the pause starts: the earlier layer speeds up late.
    earlier = Earlier(alone=12_500_000, shared=6_250_000, buffer_fill=0.8)
    assert run(earlier).state == "helps"


def test_behind_a_per_connection_limit_both_keep_downloading() -> None:
    earlier = Earlier(alone=5_000_000, shared=5_000_000)  # pausing frees nothing
    assert run(earlier).state == "useless"
    assert earlier.paused_for <= SETTLE + PROBE + 0.05  # the one try


def test_a_layer_the_extractor_lags_behind_takes_no_pause() -> None:
    earlier = Earlier(alone=12_500_000, shared=6_250_000, keeps_up=False)
    assert run(earlier).state == "untried"
    assert earlier.paused_for == 0


def test_a_stopped_install_does_not_wait() -> None:
    earlier = Earlier(alone=12_500_000, shared=6_250_000)
    giving_way = GivingWay(clock=earlier.clock, sleep=earlier.sleep)
    giving_way.state = "helps"
    giving_way.pause([earlier], lambda: True)
    assert earlier.paused_for == 0
