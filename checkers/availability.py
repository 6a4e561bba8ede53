"""How long reads and writes went unanswered in each fault window.

Safety checkers say whether a design ever served a stale read; this says
what it paid for that.  A lease that is never stale but leaves reads
unanswered for two election timeouts after a leader crash is a trade-off a
figure must show, and the ok fractions of :mod:`checkers.stats` cannot show
it: they count ops, not time.

Per fault window (:func:`checkers.stats.nemesis_intervals`: from its start
to its end, the heal) and per family (:func:`kind`: reads, writes):

- *clients*: those that issued an op of the family anywhere in the run.  A
  client is a process modulo ``concurrency`` (Jepsen's thread): a process
  that ends an op ``info`` is retired and its slot goes on as a new process
  (:mod:`harness.clients`), so counting processes would count clients that
  can never answer again.  Without ``concurrency`` each process is a client.
- *answered*: completed ``ok``, or ``fail`` with the store's word that a
  condition was false (:func:`checkers.history.condition_failed`): the store
  evaluated it, so it was available.  Other fails and ``info`` are not.
- the family is available again at T, the earliest time by which more than
  half of its clients have each had an op of the family *invoked at or after
  the window's start* answered (by its ``ret_time``).  An op invoked before
  the start does not count: it may have been served before the fault.
  ``unavailable_s`` = T - start.  It is not zero without a fault: a majority
  must each get one op through (an op's latency, or under a rate limit the
  gap between a client's ops), as a quiet run shows.
- T after the window's end: ``recovered_after_heal_s`` = T - end (None when
  T is within the window).  No T before the clients stopped (``until``, the
  run's time limit: the final reads after it are not the workload's):
  ``recovered`` is false, the window was cut short, and ``unavailable_s``
  runs to when the clients stopped: a lower bound.
- a window in which no op of the family was invoked is not measured
  (``unavailable_s`` None): nobody asked.
- each window is measured on its own: overlapping windows of different
  faults each get their rows, so one outage may show in both.

Aggregates, per family and per fault name: the max and the median
``unavailable_s`` over the measured windows, and how many were cut short.
Times are seconds since the run's origin ``t0`` (monotonic ns).
"""

from __future__ import annotations

import bisect
import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Literal, Sequence

from checkers.history import Event, Operation, condition_failed
from checkers.stats import history_bounds, nemesis_intervals

__all__ = ["READS", "kind", "WindowAvailability", "Availability", "availability"]

Family = Literal["read", "write"]
FAMILIES: tuple[Family, ...] = ("read", "write")

#: Op names that only read: the register's ``get``, the set's ``read-query``
#: and ``read-scan``, the bank's ``read-txn`` and ``read-scan``, Jepsen's
#: ``read``.  Every other op (put, update, add, transfer, write, cas...) may
#: change the state, so it is a write, final reads being reads like any other.
READS = frozenset({"get", "read", "read-query", "read-scan", "read-txn"})


def kind(f: str) -> Family:
    """An op's family: ``read`` if its name is in :data:`READS`, else ``write``."""
    return "read" if f in READS else "write"


@dataclass(frozen=True)
class WindowAvailability:
    """One family in one fault window (see the module doc)."""

    fault: str
    label: str
    family: Family
    start_s: float
    end_s: float
    #: the family's clients in the run, and its ops invoked in the window
    clients: int
    ops: int
    #: None: not measured (no op of the family invoked in the window)
    unavailable_s: float | None
    #: a majority answered before the clients stopped (None: not measured);
    #: False: cut short, ``unavailable_s`` is a lower bound
    recovered: bool | None
    #: how long after the window's end it did (None: within it, or never)
    recovered_after_heal_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Availability:
    """The rows of every fault window and family, and their aggregates."""

    fault_windows: int
    rows: list[WindowAvailability]

    def by_family(self) -> dict[str, dict[str, Any]]:
        return {fam: _aggregate([r for r in self.rows if r.family == fam]) for fam in FAMILIES}

    def by_fault(self) -> dict[str, dict[str, dict[str, Any]]]:
        names = dict.fromkeys(r.fault for r in self.rows)
        return {name: {fam: _aggregate([r for r in self.rows
                                        if r.fault == name and r.family == fam])
                       for fam in FAMILIES} for name in names}

    def to_dict(self) -> dict[str, Any]:
        return {"fault_windows": self.fault_windows,
                "windows": [r.to_dict() for r in self.rows],
                "by_family": self.by_family(), "by_fault": self.by_fault()}

    def lines(self) -> list[str]:
        """summary.txt's line (none without a measured window): each family's
        worst window and its median one."""
        parts = []
        for fam, agg in self.by_family().items():
            if agg["windows"]:
                never = (f", {agg['not_recovered']} cut short by the end of the run"
                         if agg["not_recovered"] else "")
                parts.append(f"{fam}s max {agg['max_s']:.1f} s "
                             f"(median {agg['median_s']:.1f} s{never})")
        if not parts:
            return []
        plural = "" if self.fault_windows == 1 else "s"
        return [f"unavailable: {', '.join(parts)} over {self.fault_windows} "
                f"fault window{plural}"]


def _aggregate(rows: list[WindowAvailability]) -> dict[str, Any]:
    seconds = [r.unavailable_s for r in rows if r.unavailable_s is not None]
    return {"windows": len(seconds), "max_s": max(seconds, default=None),
            "median_s": statistics.median(seconds) if seconds else None,
            "not_recovered": sum(r.recovered is False for r in rows)}


class _Answers:
    """One client's answered ops of one family: the earliest answer to an op
    invoked at or after a given time, by bisection on a suffix minimum."""

    def __init__(self, spans: list[tuple[int, int]]) -> None:
        spans.sort()
        self.calls = [c for c, _ in spans]
        self.first_ret = [r for _, r in spans]
        for i in range(len(spans) - 2, -1, -1):
            self.first_ret[i] = min(self.first_ret[i], self.first_ret[i + 1])

    def first_after(self, t: int) -> float:
        i = bisect.bisect_left(self.calls, t)
        return self.first_ret[i] if i < len(self.calls) else math.inf


def availability(ops: Sequence[Operation], nemesis_events: Iterable[Event], *,
                 t0: int | None = None, end: int | None = None,
                 until: int | None = None, concurrency: int | None = None) -> Availability:
    """Each family's unavailability in each fault window (see the module doc).

    ``t0`` and ``end`` (ns) bound the history (default: its first and last
    times); a window never stopped runs to ``end``.  ``until``: when the
    clients stopped (a run's time limit; default ``end``): ops invoked later
    (the final reads) are not the workload's, and a window not recovered by
    then is cut short.  ``concurrency``: the run's client slots, which
    processes map onto (None: a client a process).
    """
    events = list(nemesis_events)
    first, last = history_bounds(ops, events)
    t0 = first if t0 is None else t0
    end = last if end is None else end
    until = end if until is None else until
    windows = nemesis_intervals(events, end=end)
    if not windows or t0 is None or end is None:
        return Availability(len(windows), [])

    def client(process: int | str) -> int | str:
        return process % concurrency if concurrency and isinstance(process, int) else process

    clients: dict[Family, set[int | str]] = {fam: set() for fam in FAMILIES}
    calls: dict[Family, list[int]] = {fam: [] for fam in FAMILIES}
    spans: dict[tuple[Family, int | str], list[tuple[int, int]]] = {}
    for op in ops:
        if op.call_time is not None and until is not None and op.call_time > until:
            continue
        fam, who = kind(op.f), client(op.process)
        clients[fam].add(who)
        if op.call_time is None:
            continue
        calls[fam].append(op.call_time)
        if op.ret_time is not None and (op.status == "ok" or (
                op.status == "fail" and condition_failed(op.error))):
            spans.setdefault((fam, who), []).append((op.call_time, op.ret_time))
    for times in calls.values():
        times.sort()
    answers = {key: _Answers(s) for key, s in spans.items()}
    never = _Answers([])

    def secs(t: float) -> float:
        return (t - t0) / 1e9

    rows = []
    for iv in windows:
        stop = iv.end_or(end)
        for fam in FAMILIES:
            n = (bisect.bisect_left(calls[fam], stop)
                 - bisect.bisect_left(calls[fam], iv.start))
            unavailable: float | None = None
            recovered: bool | None = None
            after: float | None = None
            if n:
                firsts = sorted(answers.get((fam, c), never).first_after(iv.start)
                                for c in clients[fam])
                t = firsts[len(firsts) // 2]  # the earliest a majority has answered by
                recovered = t != math.inf
                unavailable = ((t if recovered else until) - iv.start) / 1e9
                after = (t - stop) / 1e9 if recovered and t > stop else None
            rows.append(WindowAvailability(iv.name, iv.label, fam, secs(iv.start), secs(stop),
                                           len(clients[fam]), n, unavailable, recovered, after))
    return Availability(len(windows), rows)
