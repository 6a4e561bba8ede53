"""Hybrid logical clock, as in elastickv: 48-bit wall milliseconds and a 16-bit
logical counter packed into one 64-bit integer.

    ts = (physical_ms << 16) | logical

Packed timestamps compare as integers in (physical, logical) order, so MVCC
code stores and compares plain ints.  :meth:`HLC.now` is strictly monotone
per clock even when the wall clock is set back (it keeps counting from the
last timestamp: ``max(last + 1, wall_ms << 16)``), and a logical counter that
overflows 16 bits simply carries into the physical part -- the timestamp then
runs a millisecond ahead of the wall clock, which is harmless and what the
packed-int arithmetic gives for free.  :meth:`HLC.observe` folds in a
timestamp seen elsewhere (a remote node's, a committed entry's), so that every
later ``now()`` is greater than it.

The wall time is read from a :class:`system.clock.Clock`, so a clock fault
injected by the harness moves the HLC as it would on a real host.
"""

from __future__ import annotations

import datetime as _dt
import threading
from typing import Callable

from .clock import Clock

__all__ = ["HLC", "LOGICAL_BITS", "MAX_TS", "pack", "physical", "logical", "format"]

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
PHYSICAL_BITS = 48
PHYSICAL_MASK = (1 << PHYSICAL_BITS) - 1
MAX_TS = (1 << 64) - 1


def pack(physical_ms: int, logical_count: int = 0) -> int:
    """The timestamp of (wall milliseconds, logical counter)."""
    if not 0 <= physical_ms <= PHYSICAL_MASK:
        raise ValueError(f"physical part {physical_ms} outside 48 bits")
    if not 0 <= logical_count <= LOGICAL_MASK:
        raise ValueError(f"logical part {logical_count} outside 16 bits")
    return (physical_ms << LOGICAL_BITS) | logical_count


def physical(ts: int) -> int:
    """Wall milliseconds since the epoch of a timestamp."""
    return ts >> LOGICAL_BITS


def logical(ts: int) -> int:
    """The logical counter of a timestamp."""
    return ts & LOGICAL_MASK


def format(ts: int) -> str:  # noqa: A001 - the name the API asks for
    """A readable form: ``2026-08-01T12:00:00.123Z+5`` (UTC wall time to the
    millisecond, then the logical counter), or ``0`` for the zero timestamp."""
    if ts == 0:
        return "0"
    ms = physical(ts)
    try:
        when = _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)
        text = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    except (OverflowError, OSError, ValueError):
        text = f"{ms}ms"
    return f"{text}+{logical(ts)}"


class HLC:
    """A hybrid logical clock reading its wall time from a :class:`Clock`.

    Thread-safe.  ``wall_ms`` may replace the clock's reading (tests)."""

    def __init__(self, clock: Clock | None = None, *,
                 wall_ms: Callable[[], int] | None = None, last: int = 0) -> None:
        if wall_ms is None:
            wall_ms = (clock or Clock()).wall_ms
        self._wall_ms = wall_ms
        self._lock = threading.Lock()
        self._last = int(last)

    @property
    def last(self) -> int:
        """The greatest timestamp issued or observed so far."""
        with self._lock:
            return self._last

    def now(self) -> int:
        """A new timestamp, greater than every one issued or observed before:
        ``max(last + 1, wall_ms << 16)``."""
        wall = self._wall_ms()
        candidate = min(max(0, wall), PHYSICAL_MASK) << LOGICAL_BITS
        with self._lock:
            ts = self._last + 1
            if candidate > ts:
                ts = candidate
            if ts > MAX_TS:
                raise OverflowError("HLC exhausted 64 bits")
            self._last = ts
            return ts

    def observe(self, ts: int) -> None:
        """Fold in a timestamp seen elsewhere: every later :meth:`now` is
        greater than ``ts``."""
        if ts < 0 or ts > MAX_TS:
            raise ValueError(f"timestamp {ts} outside 64 bits")
        with self._lock:
            if ts > self._last:
                self._last = ts

    def peek(self) -> int:
        """What :meth:`now` would return, without issuing it."""
        wall = self._wall_ms()
        candidate = min(max(0, wall), PHYSICAL_MASK) << LOGICAL_BITS
        with self._lock:
            return max(self._last + 1, candidate)

    def state(self) -> dict[str, object]:
        last = self.last
        return {"last": last, "last_physical_ms": physical(last),
                "last_logical": logical(last), "last_text": format(last)}
