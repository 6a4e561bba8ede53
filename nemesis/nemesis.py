"""The nemesis: seeded schedules of faults applied while clients run.

Each ``--nemesis`` entry is ``NAME[:WINDOW[/QUIET]]`` (seconds; see
:func:`parse_fault`), a fault and, if it needs one, its own timing: a
partitioned leader must outlive its election timeout, churn wants many short
windows.  An entry without a timing takes the test's (``--nemesis-interval``,
``--nemesis-quiet``).  Faults with the same timing form a group
(:func:`fault_groups`), and each group is a :class:`Nemesis` on its own
thread, alternating a quiet window (``quiet`` s) and a fault window
(``interval`` s).  In a fault window every fault of the group starts, in the
order given (so ``partition-leader,clock-bump`` first cuts the leader off,
then sets that same leader's clock back), faults that act while active
(strobe, churn) act, and at the window's end they stop together in reverse
order.  :class:`FaultSchedule` runs the groups side by side; they share one
lock, so no two faults touch the backend at once.  Each group draws from its
own ``random.Random``, seeded from the run's seed and the group's index
(:func:`group_rng`), so a seed gives the same choices per group however the
groups' windows interleave; every start and stop is reported (``record``)
for the history and ``schedule.jsonl``, and :func:`describe` words what a
fault did for the person watching the run.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from checkers.stats import fault_targets
from nemesis.faults import FAULTS, Active, Backend

log = logging.getLogger("nemesis")

Record = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class FaultEntry:
    """One ``--nemesis`` entry: a fault, and its own timing where it gives one
    (``None``: the test's ``--nemesis-interval`` / ``--nemesis-quiet``)."""

    name: str
    window: float | None = None
    quiet: float | None = None


def parse_fault(entry: str) -> FaultEntry:
    """``NAME[:WINDOW[/QUIET]]`` as typed, its numbers checked (the name is
    left to the caller, which knows how to word a choice); a ValueError names
    the entry and the part that is wrong."""
    name, colon, timing = entry.partition(":")
    window, slash, quiet = timing.partition("/")
    return FaultEntry(name, _seconds(entry, "window", window) if colon else None,
                      _seconds(entry, "quiet", quiet) if slash else None)


def _seconds(entry: str, part: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan  # worded below like any other bad number
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{entry}: {part} must be a number of seconds > 0")
    return value


@dataclass(frozen=True)
class FaultGroup:
    """Faults that share a timing: in every fault window they start together,
    in listed order, and stop together, in reverse."""

    window: float
    quiet: float
    faults: tuple[str, ...]

    def __str__(self) -> str:
        return f"{', '.join(self.faults)}: {self.window:g}-s windows, {self.quiet:g} s apart"


def fault_groups(entries: Sequence[str], window: float, quiet: float) -> list[FaultGroup]:
    """The entries grouped by timing, groups in order of their first entry;
    ``window`` and ``quiet`` are the timing of entries that give none."""
    by_timing: dict[tuple[float, float], list[str]] = {}
    for e in map(parse_fault, entries):
        timing = (window if e.window is None else e.window, quiet if e.quiet is None else e.quiet)
        by_timing.setdefault(timing, []).append(e.name)
    return [FaultGroup(w, q, tuple(names)) for (w, q), names in by_timing.items()]


def group_rng(seed: int, index: int) -> random.Random:
    """Group ``index``'s fault choices.  Group 0 draws from the seed itself, as
    the single schedule of runs saved before per-fault timings did, so their
    seeds replay the same choices; the others from a string seed, which hashes
    the same in every run."""
    return random.Random(seed) if index == 0 else random.Random(f"nemesis:{seed}:{index}")


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
    group = f"group {targets['raft_group']}, " if "raft_group" in targets else ""
    if targets["leader"] is None:
        return f"{what} ({group}no leader: picked at random)"
    return f"{what} (leader of {group}term {targets['term']})"


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
    if "raft_cut_groups" in targets:
        return (f"cut {who} off from group {targets['raft_group']}'s other replicas")
    if "to" in targets:
        return f"move group {targets['raft_group']}'s leadership from {who} to {targets['to']}"
    if "first" in targets:
        move = targets["first"]
        return "move leadership every second, first " + (
            f"from {move['from']} (leader of term {move['term']}) to {move['to']}" if move
            else "nowhere (no leader)")
    if "cuts" in targets:
        cuts = targets["cuts"]
        if all(dst == who for _, dst in cuts):
            return f"nothing reaches {who} from {' '.join(sorted(src for src, _ in cuts))}"
        return f"nothing {who} sends reaches {' '.join(sorted(dst for _, dst in cuts))}"
    if "fsync_delay_ms" in targets:
        return f"fsyncs +{targets['fsync_delay_ms']:g} ms on {who}"
    if "apply_delay_ms" in targets:
        return (f"{who} apply each entry +{targets['apply_delay_ms']:g} ms slower, "
                f"all but {targets['spared']}")
    if "fsync_stall" in targets:
        return f"{who}'s fsyncs stall"
    if fault == "power-loss":
        return f"power loss on {who}: unsynced writes lost"
    if fault.startswith(("kill", "pause")):
        return f"{fault.partition('-')[0]} {who}"
    if "ms" in targets:
        return f"delay every link by {who}"
    if "p" in targets:
        return f"{who} on every link"
    return who


class Nemesis:
    """One timing group's schedule, on its own thread.  ``lock`` is shared
    with the other groups' (see :class:`FaultSchedule`)."""

    def __init__(self, backend: Backend, faults: list[str], interval: float,
                 rng: random.Random, record: Record, quiet: float | None = None,
                 lock: threading.Lock | None = None) -> None:
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown fault {unknown[0]!r}; choose from {', '.join(FAULTS)}")
        self.backend, self.faults, self.interval = backend, faults, interval
        self.quiet = interval if quiet is None else quiet
        self.rng, self.record = rng, record
        self.active: list[Active] = []
        self._lock = threading.Lock() if lock is None else lock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def start(self, until_ns: int | None = None) -> None:
        """Start the schedule; no fault window opens at or after ``until_ns``
        (monotonic ns: the clients' deadline, past which a fault tests nothing)."""
        if self.faults:
            self._thread = threading.Thread(target=self._run, args=(until_ns,),
                                            name=f"nemesis {','.join(self.faults)}", daemon=True)
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

    def halt(self) -> None:
        """Open no more fault windows (what is active stays until :meth:`stop`)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop scheduling and undo every active fault (the heal phase)."""
        self.halt()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            self._stop_all()


class FaultSchedule:
    """Every timing group of a test's ``--nemesis`` entries, each a
    :class:`Nemesis` on its own thread with its own rng (:func:`group_rng`),
    all behind one lock: the backend is driven by one fault at a time, and a
    group's start, act and stop are not interleaved with another's."""

    def __init__(self, backend: Backend, entries: Sequence[str], seed: int, record: Record,
                 *, window: float, quiet: float) -> None:
        lock = threading.Lock()
        self.groups = fault_groups(entries, window, quiet)
        self._nemeses = [Nemesis(backend, list(g.faults), g.window, group_rng(seed, i), record,
                                 quiet=g.quiet, lock=lock)
                         for i, g in enumerate(self.groups)]

    def start(self, until_ns: int | None = None) -> None:
        """Start every group; none opens a fault window at or after ``until_ns``."""
        for n in self._nemeses:
            n.start(until_ns)

    def stop(self) -> None:
        """Halt every group first, so that none opens a window while another
        heals, then undo every active fault, the last group's first."""
        for n in self._nemeses:
            n.halt()
        for n in reversed(self._nemeses):
            n.stop()
