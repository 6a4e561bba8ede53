"""The node's Clock (offset, rate, jumps, timers) and the hybrid logical clock."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

from system import hlc
from system.clock import Clock
from system.hlc import HLC, format, logical, pack, physical


class FakeTime:
    """A real-time source the test moves by hand."""

    def __init__(self, mono: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self.mono = mono
        self.wall = wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds

    def clock(self) -> Clock:
        return Clock(real_monotonic=lambda: self.mono, real_wall=lambda: self.wall)


# ------------------------------------------------------------------ Clock


def test_untouched_clock_is_real_time():
    t = FakeTime()
    c = t.clock()
    assert c.monotonic() == t.mono and c.wall() == t.wall
    t.advance(2.5)
    assert c.monotonic() == t.mono and c.wall() == t.wall
    assert c.wall_ms() == math.floor(t.wall * 1000)
    assert c.monotonic_raw() == t.mono


def test_real_clock_defaults_follow_the_host():
    c = Clock()
    assert abs(c.wall() - time.time()) < 0.5
    assert abs(c.monotonic() - time.monotonic()) < 0.5


def test_bump_moves_wall_only():
    t = FakeTime()
    c = t.clock()
    m0, w0 = c.monotonic(), c.wall()
    c.bump(5)
    assert c.wall() == pytest.approx(w0 + 5)
    assert c.monotonic() == m0          # an NTP step leaves CLOCK_MONOTONIC alone
    c.bump(-8)
    assert c.wall() == pytest.approx(w0 - 3)
    assert c.offset == pytest.approx(-3)
    t.advance(1)
    assert c.wall() == pytest.approx(w0 - 2)
    assert c.monotonic() == pytest.approx(m0 + 1)


def test_set_offset_replaces_the_offset():
    t = FakeTime()
    c = t.clock()
    c.bump(100)
    c.set_offset(-10)
    assert c.wall() == pytest.approx(t.wall - 10)
    assert c.monotonic() == t.mono


def test_rate_scales_both_clocks_and_is_continuous():
    t = FakeTime()
    c = t.clock()
    t.advance(10)
    m1, w1 = c.monotonic(), c.wall()
    c.set_rate(0.5)
    assert c.monotonic() == pytest.approx(m1) and c.wall() == pytest.approx(w1)
    t.advance(10)
    assert c.monotonic() == pytest.approx(m1 + 5)
    assert c.wall() == pytest.approx(w1 + 5)
    m2, w2 = c.monotonic(), c.wall()
    c.set_rate(2)
    assert c.monotonic() == pytest.approx(m2) and c.wall() == pytest.approx(w2)
    t.advance(3)
    assert c.monotonic() == pytest.approx(m2 + 6)
    assert c.wall() == pytest.approx(w2 + 6)
    assert c.rate == 2


def test_rate_and_offset_combine():
    t = FakeTime()
    c = t.clock()
    c.set_rate(1.5)
    c.bump(-60)
    w = c.wall()
    t.advance(4)
    assert c.wall() == pytest.approx(w + 6)
    c.bump(1)
    assert c.wall() == pytest.approx(w + 7)


def test_reset_restores_real_wall_and_keeps_monotonic_continuous():
    t = FakeTime()
    c = t.clock()
    c.set_rate(3)
    c.bump(42)
    t.advance(10)
    m = c.monotonic()
    assert m == pytest.approx(t.mono + 20)
    c.reset()
    assert c.wall() == t.wall             # the wall clock is the host's again
    assert c.monotonic() == pytest.approx(m)  # never goes back
    t.advance(1)
    assert c.monotonic() == pytest.approx(m + 1)  # and no longer drifts
    assert c.rate == 1 and c.offset == 0


def test_state_reports_settings_and_skew():
    t = FakeTime()
    c = t.clock()
    c.bump(2)
    c.set_rate(0.5)
    t.advance(10)
    st = c.state()
    assert st["rate"] == 0.5 and st["offset"] == 2 and st["jumps"] == 1
    assert st["wall"] == pytest.approx(t.wall - 5 + 2)
    assert st["wall_skew"] == pytest.approx(-3)
    assert st["monotonic_drift"] == pytest.approx(-5)
    assert st["monotonic_raw"] == t.mono
    assert st["wall_ms"] == math.floor(st["wall"] * 1000)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_bad_rates_are_refused(bad):
    c = FakeTime().clock()
    with pytest.raises(ValueError):
        c.set_rate(bad)
    with pytest.raises(ValueError):
        c.bump(float("nan"))
    assert c.rate == 1


def test_monotonic_never_goes_back_under_concurrent_rate_changes():
    c = Clock()
    stop = threading.Event()
    errors = []

    def reader():
        last = c.monotonic()
        while not stop.is_set():
            now = c.monotonic()
            if now < last:
                errors.append((last, now))
            last = now

    def writer():
        i = 0
        while not stop.is_set():
            c.set_rate((0.25, 4.0, 1.0)[i % 3])
            c.bump(0.001)
            i += 1

    threads = [threading.Thread(target=reader) for _ in range(2)] + [threading.Thread(target=writer)]
    for th in threads:
        th.start()
    time.sleep(0.2)
    stop.set()
    for th in threads:
        th.join()
    assert not errors


# --------------------------------------------------------------- Clock.sleep


def _elapsed(coro_factory) -> float:
    async def main():
        t0 = time.monotonic()
        await coro_factory()
        return time.monotonic() - t0
    return asyncio.run(main())


def test_sleep_follows_the_rate():
    # upper bounds are loose (a loaded CI machine), yet far below what
    # ignoring the rate would take
    fast = Clock()
    fast.set_rate(10)
    assert 0.045 <= _elapsed(lambda: fast.sleep(0.5)) < 0.3
    slow = Clock()
    slow.set_rate(0.5)
    assert 0.095 <= _elapsed(lambda: slow.sleep(0.05)) < 0.25


def test_sleep_measures_monotonic_time_of_this_clock():
    c = Clock()
    c.set_rate(0.5)

    async def main():
        m0 = c.monotonic()
        await c.sleep(0.03)
        return c.monotonic() - m0
    assert asyncio.run(main()) >= 0.03


def test_sleep_ignores_wall_jumps():
    c = Clock()

    async def main():
        task = asyncio.ensure_future(c.sleep(0.08))
        await asyncio.sleep(0.01)
        c.bump(3600)
        c.bump(-7200)
        t0 = time.monotonic()
        await task
        return time.monotonic() - t0
    assert 0.05 <= asyncio.run(main()) < 1.0


def test_rate_change_mid_sleep_is_honoured_at_once():
    c = Clock()
    c.set_rate(0.1)  # sleep(0.1) would take 1 s of real time

    async def main():
        t0 = time.monotonic()
        task = asyncio.ensure_future(c.sleep(0.1))
        await asyncio.sleep(0.02)   # 0.002 s of clock time pass
        c.set_rate(1.0)             # the rest (0.098) at real speed
        await task
        return time.monotonic() - t0
    took = asyncio.run(main())
    assert 0.1 <= took < 0.6


def test_rate_change_from_another_thread_wakes_the_sleeper():
    c = Clock()
    c.set_rate(0.05)

    async def main():
        t0 = time.monotonic()
        threading.Timer(0.02, c.set_rate, args=(2.0,)).start()
        await c.sleep(0.1)
        return time.monotonic() - t0
    assert asyncio.run(main()) < 1.0  # 2 s at the old rate


def test_cancelled_sleep_leaves_no_waiter():
    c = Clock()

    async def main():
        task = asyncio.ensure_future(c.sleep(10))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    asyncio.run(main())
    assert not c._sleepers
    c.set_rate(2)  # waking nobody is fine


def test_zero_sleep_yields():
    assert _elapsed(lambda: Clock().sleep(0)) < 0.05


# ----------------------------------------------------------------------- HLC


def test_packing():
    ts = pack(1_700_000_000_123, 7)
    assert ts == (1_700_000_000_123 << 16) | 7
    assert physical(ts) == 1_700_000_000_123 and logical(ts) == 7
    assert pack(1, 0) > pack(0, 0xFFFF)  # physical dominates
    assert pack(5, 1) > pack(5, 0)
    assert pack((1 << 48) - 1, 0xFFFF) == hlc.MAX_TS
    with pytest.raises(ValueError):
        pack(1 << 48, 0)
    with pytest.raises(ValueError):
        pack(0, 1 << 16)


def test_format():
    assert format(pack(0, 0)) == "0"
    assert format(pack(1_700_000_000_123, 5)) == "2023-11-14T22:13:20.123Z+5"


def test_now_is_strictly_monotone_and_tracks_the_wall():
    wall = [1000]
    h = HLC(wall_ms=lambda: wall[0])
    a, b = h.now(), h.now()
    assert a == pack(1000, 0) and b == pack(1000, 1)
    wall[0] = 1005
    c = h.now()
    assert c == pack(1005, 0)  # logical resets when the wall moves on
    assert a < b < c


def test_now_stays_monotone_when_the_clock_is_set_back():
    wall = [50_000]
    h = HLC(wall_ms=lambda: wall[0])
    before = [h.now() for _ in range(3)]
    wall[0] = 10_000  # set back 40 s
    after = [h.now() for _ in range(3)]
    seq = before + after
    assert all(x < y for x, y in zip(seq, seq[1:]))
    assert physical(after[-1]) == 50_000  # keeps counting on the old physical part
    wall[0] = 60_000
    assert h.now() == pack(60_000, 0)


def test_observe_makes_later_timestamps_greater():
    wall = [1000]
    h = HLC(wall_ms=lambda: wall[0])
    remote = pack(9000, 3)
    h.observe(remote)
    assert h.last == remote
    nxt = h.now()
    assert nxt > remote and nxt == pack(9000, 4)
    h.observe(pack(10, 0))  # an older one changes nothing
    assert h.now() == pack(9000, 5)
    with pytest.raises(ValueError):
        h.observe(-1)


def test_logical_overflow_carries_into_physical():
    h = HLC(wall_ms=lambda: 1000, last=pack(1000, 0xFFFF))
    ts = h.now()
    assert ts == pack(1001, 0)
    assert physical(ts) == 1001 and logical(ts) == 0


def test_peek_does_not_issue():
    h = HLC(wall_ms=lambda: 7)
    p = h.peek()
    assert h.now() == p
    assert h.peek() == p + 1


def test_hlc_reads_the_node_clock_and_survives_a_jump_back():
    t = FakeTime()
    c = t.clock()
    h = HLC(c)
    a = h.now()
    assert physical(a) == c.wall_ms()
    c.bump(-30)  # the harness sets the node's clock back 30 s
    b = h.now()
    assert b > a and physical(b) == physical(a)
    c.bump(+60)
    d = h.now()
    assert physical(d) == c.wall_ms() and physical(d) >= physical(a) + 29_000


def test_hlc_unique_across_threads():
    h = HLC(Clock())
    out: list[list[int]] = [[] for _ in range(4)]

    def run(i):
        for _ in range(5000):
            out[i].append(h.now())

    ths = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    allts = [x for o in out for x in o]
    assert len(set(allts)) == len(allts)
    for o in out:
        assert o == sorted(o) and len(set(o)) == len(o)
