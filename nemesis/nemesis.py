"""The nemesis: a seeded schedule of faults applied while clients run.

The nemesis alternates a quiet window (``quiet`` seconds, by default
``interval``) and a fault window (``interval`` seconds).  In a fault window
every fault named in the test starts, in the order given (so
``partition-leader,clock-bump`` first cuts the leader off, then sets that
same leader's clock back), faults that act while active (strobe, churn) act,
and at the window's end they stop together in reverse order.  The choices
come from one seeded ``random.Random``, so a seed gives the same fault
schedule; every start and stop is reported (``record``) for the history and
``schedule.jsonl``, and :func:`describe` words what a fault did for the
person watching the run.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any, Callable

from checkers.stats import fault_targets
from nemesis.faults import FAULTS, Active, Backend

log = logging.getLogger("nemesis")

Record = Callable[[str, dict[str, Any]], None]


def describe(fault: str, targets: dict[str, Any]) -> str:
    """What a fault did to which nodes, as the run prints it when the fault
    starts or stops: ``isolate n3 (leader of term 7)``, ``n3's clock -7.2 s``.
    A fault aimed at the leader says which term it led, or that none led and
    the node was picked at random: the person watching can then tell a fault
    that hit the leader from one that hit a bystander."""
    if "error" in targets:
        return f"failed: {targets['error']}"
    what = _what(fault, targets)
    if "leader" not in targets:
        return what
    if targets["leader"] is None:
        return f"{what} (no leader: picked at random)"
    return f"{what} (leader of term {targets['term']})"


def _what(fault: str, targets: dict[str, Any]) -> str:
    who = fault_targets(targets)
    if "groups" in targets:
        return f"split {who}" if "|" in who else f"isolate {who}"
    if "bump_s" in targets:
        return f"{who}'s clock {targets['bump_s']:+g} s"
    if "delta_s" in targets:
        return f"{who}'s clock jumps by {targets['delta_s']:g} s every 100 ms"
    if "rate" in targets:
        return f"{who}'s clock at {targets['rate']:g}x speed"
    if "first" in targets:
        move = targets["first"]
        return "move leadership every second, first " + (
            f"from {move['from']} (leader of term {move['term']}) to {move['to']}" if move
            else "nowhere (no leader)")
    if fault.startswith(("kill", "pause")):
        return f"{fault.partition('-')[0]} {who}"
    if "ms" in targets:
        return f"delay every link by {who}"
    if "p" in targets:
        return f"{who} on every link"
    return who


class Nemesis:
    def __init__(self, backend: Backend, faults: list[str], interval: float,
                 rng: random.Random, record: Record, quiet: float | None = None) -> None:
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault {unknown[0]!r}; choose from {', '.join(FAULTS)}")
        self.backend, self.faults, self.interval = backend, faults, interval
        self.quiet = interval if quiet is None else quiet
        self.rng, self.record = rng, record
        self.active: list[Active] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def start(self, until_ns: int | None = None) -> None:
        """Start the schedule; no fault window opens at or after ``until_ns``
        (monotonic ns: the clients' deadline, past which a fault tests nothing)."""
        if self.faults:
            self._thread = threading.Thread(target=self._run, args=(until_ns,), name="nemesis",
                                            daemon=True)
            self._thread.start()

    def _run(self, until_ns: int | None) -> None:
        while not self._stop.wait(self.quiet):
            if until_ns is not None and time.monotonic_ns() >= until_ns:
                return
            with self._lock:
                for name in self.faults:
                    self._start(name)
            deadline = time.monotonic() + self.interval
            self._tick_until(deadline)
            if self._stop.wait(max(0.0, deadline - time.monotonic())):
                return  # stop() undoes what is active
            with self._lock:
                self._stop_all()

    def _start(self, name: str) -> None:
        try:
            act = FAULTS[name](self.backend, self.rng)
        except Exception as e:  # noqa: BLE001 - a fault that fails is recorded, not fatal
            self.errors.append(f"start {name}: {e}")
            log.warning("could not start %s: %s", name, e)
            self.record(f"start-{name}", {"error": str(e)})
            return
        self.active.append(act)
        self.record(f"start-{name}", act.targets)

    def _tick_until(self, deadline: float) -> None:
        """Drive the faults that act while active (strobe, churn) until ``deadline``."""
        ticking = [a for a in self.active if a.tick is not None]
        if not ticking:
            return
        period = min(a.period for a in ticking)
        while not self._stop.is_set() and time.monotonic() < deadline - period:
            if self._stop.wait(period):
                return
            with self._lock:
                for a in ticking:
                    if a in self.active:
                        try:
                            out = a.tick()  # type: ignore[misc]
                        except Exception as e:  # noqa: BLE001
                            out = {"error": str(e)}
                        if out:
                            a.extra.setdefault("ticks", []).append(out)

    def _stop_all(self) -> None:
        while self.active:
            act = self.active.pop()
            try:
                act.undo()
                self.record(f"stop-{act.fault}", {**act.targets, **act.extra})
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"stop {act.fault}: {e}")
                log.warning("could not stop %s: %s", act.fault, e)
                self.record(f"stop-{act.fault}", {"error": str(e)})

    def stop(self) -> None:
        """Stop scheduling and undo every active fault (the heal phase)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            self._stop_all()
