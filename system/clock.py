"""The one source of time in a node process, and the harness's handle on it.

Every reading of time in a node -- the HLC's wall clock, the lease clock, the
election and heartbeat timers, any asyncio sleep -- goes through one
:class:`Clock`.  The harness reaches it through the node's admin endpoint to
inject clock faults without touching the host clock (which on a shared
machine it must never do):

* **offset / jumps** (:meth:`Clock.set_offset`, :meth:`Clock.bump`) move the
  *wall* clock only.  That is what a real NTP step (``settimeofday``,
  ``clock_settime(CLOCK_REALTIME)``, ``ntpdate``) does: it changes
  ``CLOCK_REALTIME`` and leaves ``CLOCK_MONOTONIC`` alone, which is why a
  lease measured on the monotonic clock survives a jump and one measured on
  the wall clock (the ``wall-clock-lease`` bug flag) does not.
* **rate** (:meth:`Clock.set_rate`) is oscillator drift: a slow or fast
  crystal makes *both* clocks advance at ``rate`` x real time (NTP slewing
  and frequency error act on the monotonic clock too, only
  ``CLOCK_MONOTONIC_RAW`` escapes slewing, not a bad crystal).  Timers follow
  it: :meth:`Clock.sleep` sleeps for a span of this clock's monotonic time,
  so at rate 0.5 an election timeout of 1 s takes 2 real seconds.
* strobing (jumping back and forth) is the harness's job: it calls
  :meth:`Clock.bump` repeatedly.

:meth:`Clock.monotonic_raw` is the untransformed host monotonic clock, for
the harness's own accounting and logs only; node logic must not use it.

The clock is thread-safe: the admin endpoint may run in another thread than
the Raft loop.  Real time comes from injectable sources (``real_monotonic``,
``real_wall``) so tests can drive it deterministically.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any, Callable

__all__ = ["Clock"]


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


class Clock:
    """Skewable monotonic and wall time for one node process.

    ``monotonic() = m0 + (real_monotonic() - r0) * rate``
    ``wall()      = w0 + (real_wall() - rw0) * rate + offset``

    where ``(m0, r0)`` and ``(w0, rw0)`` are re-anchored at every rate change
    so both clocks stay continuous when the rate changes.  With rate 1 and
    offset 0 (the initial state, and after :meth:`reset`) ``wall()`` is
    exactly the host's wall clock and ``monotonic()`` the host's monotonic
    clock.
    """

    def __init__(self, *, real_monotonic: Callable[[], float] = time.monotonic,
                 real_wall: Callable[[], float] = time.time) -> None:
        self._real_monotonic = real_monotonic
        self._real_wall = real_wall
        self._lock = threading.Lock()
        self._rate = 1.0
        self._offset = 0.0
        self._bumps = 0
        self._sleepers: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        r = real_monotonic()
        self._m0 = self._r0 = r
        w = real_wall()
        self._w0 = self._rw0 = w

    # ------------------------------------------------------------------ reads

    def monotonic(self) -> float:
        """Seconds of this node's monotonic clock (drifts with the rate, never
        jumps, never goes backwards)."""
        with self._lock:
            return self._m0 + (self._real_monotonic() - self._r0) * self._rate

    def monotonic_ms(self) -> int:
        return int(self.monotonic() * 1000)

    def monotonic_raw(self) -> float:
        """The host's monotonic clock, untouched: for the harness's own
        accounting only, never for node logic."""
        return self._real_monotonic()

    def wall(self) -> float:
        """Seconds since the epoch as this node believes: real wall time
        scaled by the rate, plus the offset (jumps)."""
        with self._lock:
            return self._wall_locked()

    def wall_ms(self) -> int:
        """Wall milliseconds since the epoch (floor), as the HLC uses."""
        return math.floor(self.wall() * 1000)

    def _wall_locked(self) -> float:
        return self._w0 + (self._real_wall() - self._rw0) * self._rate + self._offset

    @property
    def rate(self) -> float:
        with self._lock:
            return self._rate

    @property
    def offset(self) -> float:
        with self._lock:
            return self._offset

    # --------------------------------------------------------------- controls

    def set_offset(self, seconds: float) -> None:
        """Set the wall clock's offset from (rate-scaled) real time: a jump.

        Only the wall clock moves: an NTP step changes CLOCK_REALTIME, not
        CLOCK_MONOTONIC, so monotonic() and the timers are unaffected."""
        seconds = _finite("offset", seconds)
        with self._lock:
            self._offset = seconds
            self._bumps += 1

    def bump(self, delta_seconds: float) -> None:
        """Jump the wall clock by ``delta_seconds`` (negative: back in time).
        Wall only, like :meth:`set_offset`."""
        delta_seconds = _finite("delta", delta_seconds)
        with self._lock:
            self._offset += delta_seconds
            self._bumps += 1

    def set_rate(self, rate: float) -> None:
        """Drift: from now on both the wall and the monotonic clock advance at
        ``rate`` x real time (0.5: a slow oscillator, 2: a fast one).  Both
        stay continuous across the change."""
        rate = _finite("rate", rate)
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        with self._lock:
            self._reanchor_locked()
            self._rate = rate
            self._wake_sleepers_locked()

    def reset(self) -> None:
        """Heal: rate 1 and offset 0.  The wall clock returns to the host's
        wall time (a jump, as an NTP step would be); the monotonic clock stays
        continuous (it only stops drifting), since it must never go back."""
        with self._lock:
            self._reanchor_locked()
            self._rate = 1.0
            self._offset = 0.0
            self._w0 = self._rw0  # wall() == real wall again
            self._wake_sleepers_locked()

    def _reanchor_locked(self) -> None:
        r = self._real_monotonic()
        self._m0 = self._m0 + (r - self._r0) * self._rate
        self._r0 = r
        rw = self._real_wall()
        self._w0 = self._w0 + (rw - self._rw0) * self._rate
        self._rw0 = rw

    def state(self) -> dict[str, Any]:
        """What the admin status shows: the settings and the current readings,
        and how far this clock is from real time."""
        with self._lock:
            rm = self._real_monotonic()
            rw = self._real_wall()
            mono = self._m0 + (rm - self._r0) * self._rate
            wall = self._w0 + (rw - self._rw0) * self._rate + self._offset
            return {
                "rate": self._rate,
                "offset": self._offset,
                "jumps": self._bumps,
                "monotonic": mono,
                "monotonic_raw": rm,
                "wall": wall,
                "wall_ms": math.floor(wall * 1000),
                "real_wall": rw,
                # how far the wall clock is from the host's (offset + drift)
                "wall_skew": wall - rw,
                # how far the monotonic clock has drifted from the host's
                "monotonic_drift": mono - rm,
            }

    # ----------------------------------------------------------------- timers

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of this clock's monotonic time.

        Waits ``remaining / rate`` real seconds; a rate change (or reset)
        during the sleep wakes it early to recompute the remaining real time
        under the new rate, so it is honoured at once and no sleeper polls.
        Offsets and jumps do not affect it (they move the wall clock only).
        Cancellable like :func:`asyncio.sleep`."""
        loop = asyncio.get_running_loop()
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        deadline = self.monotonic() + seconds
        while True:
            fut = loop.create_future()
            entry = (loop, fut)
            # Register before reading the rate, so a rate change after the
            # read cannot be missed.
            with self._lock:
                self._sleepers.add(entry)
            handle = None
            try:
                remaining = deadline - self.monotonic()
                if remaining <= 0:
                    return
                handle = loop.call_later(remaining / self.rate, _wake, fut)
                await fut
            finally:
                if handle is not None:
                    handle.cancel()
                with self._lock:
                    self._sleepers.discard(entry)

    def _wake_sleepers_locked(self) -> None:
        for loop, fut in list(self._sleepers):
            try:
                loop.call_soon_threadsafe(_wake, fut)
            except RuntimeError:  # that loop is closed
                self._sleepers.discard((loop, fut))


def _wake(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)
