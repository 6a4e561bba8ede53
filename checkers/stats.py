"""Operation counts, and availability inside and outside nemesis intervals.

Pure Python; reads ops (:func:`checkers.history.pair`) and the nemesis events
of a history (``History.nemesis_events()``: process ``"nemesis"``).

Nemesis intervals (:func:`nemesis_intervals`, also used by the plots):

- a fault with a duration is a ``start-X`` event and a later ``stop-X``
  event (``start-partition`` ... ``stop-partition``): one interval named
  ``X``, from the start to the stop. The ``kill``/``restart`` (or
  ``start``), ``pause``/``resume`` and ``bump-clock``/``reset-clock`` pairs
  are recognised too, named after their first event.
- a nemesis op written as an invoke and a completion counts at its
  completion (the fault is surely in effect, or surely over, by then), as in
  Jepsen; a ``fail`` completion (the fault was not applied) is dropped; an
  event with no time is ignored.
- a start whose value is a map with an ``"error"`` key (the nemesis could
  not apply it) opens no interval: it is an instant; a stop with an error
  still closes its interval.
- a ``start-X`` while an ``X`` is open closes it and opens a new one (a new
  partition replaces the old); a ``stop-X`` with nothing open is ignored; a
  start never stopped runs to ``end`` (the end of the history).
- every other nemesis event (``transfer-leader``, a lone ``kill``...) is an
  instant (:class:`Mark`).

Availability: an op belongs to the interval in which it was invoked
(``call_time`` in ``[start, end)``); availability is the fraction of ops
that completed ok.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, TypeVar

from checkers.history import NEMESIS, Event, Operation

#: a time: ns in the history, seconds in a schedule
T = TypeVar("T", int, float)

__all__ = ["merge_spans", "Interval", "Mark", "parse_nemesis", "nemesis_intervals", "history_bounds",
           "counts", "compute_stats", "Stats", "PAIRS", "fault_label", "fault_targets"]

#: Start f -> the f's that end it (besides the start-X/stop-X convention).
PAIRS: dict[str, tuple[str, ...]] = {
    "kill": ("restart", "start"),
    "pause": ("resume",),
    "bump-clock": ("reset-clock",),
}
STATUSES = ("ok", "fail", "info")


@dataclass
class Interval:
    """A fault in effect from ``start`` to ``end`` (monotonic ns)."""

    name: str
    start: int
    #: None: never stopped (runs to the end of the history)
    end: int | None
    start_f: str
    stop_f: str | None = None
    #: the start event's value (the targets)
    value: Any = None

    def end_or(self, end: int) -> int:
        return self.end if self.end is not None else max(end, self.start)

    @property
    def label(self) -> str:
        return fault_label(self.name, self.value)


def fault_label(fault: str, value: Any) -> str:
    """A fault and what it hit, e.g. ``partition-leader n3``."""
    return f"{fault} {fault_targets(value)}".rstrip()


def fault_targets(value: Any) -> str:
    """What a fault hit, briefly, from the shapes the nemesis records: the node
    cut off (``n3``) or the sides of a split (``n1 n2 | n3 n4 n5``), the node
    whose clock, disk or process it touched (``n1 n3 n4`` for several), a
    leadership move (``n1->n2``), or the delay or loss of every link."""
    if not isinstance(value, dict) or "error" in value:
        return ""
    groups = value.get("groups")
    if isinstance(groups, list) and groups:
        sides = sorted((list(map(str, g)) for g in groups), key=len)
        if len(sides) == 2 and len(sides[0]) == 1 and not set(sides[0]) & set(sides[1]):
            return sides[0][0]
        return " | ".join(" ".join(g) for g in sides)
    if isinstance(value.get("nodes"), list):
        return " ".join(map(str, value["nodes"]))
    if "node" in value:
        return str(value["node"])
    move = value.get("first")
    if isinstance(move, dict):
        return f"{move.get('from')}->{move.get('to')}"
    if "ms" in value:
        return f"{value['ms']} ms"
    if isinstance(value.get("p"), (int, float)):
        return f"{value['p']:.0%} loss"
    return ""


@dataclass
class Mark:
    """A nemesis event with no duration."""

    time: int
    f: str
    value: Any = None


def _effective(events: Iterable[Event]) -> list[Event]:
    """One event per nemesis op: its completion if any, else its invoke."""
    out: list[Event] = []
    pending: Event | None = None
    for ev in events:
        if ev.process != NEMESIS:
            continue
        if ev.type == "invoke":
            if pending is not None:
                out.append(pending)
            pending = ev
            continue
        if pending is not None and pending.f == ev.f:
            if ev.type != "fail":
                # The completion's time, the invoke's value if it has none.
                out.append(ev if ev.value is not None else
                           Event(ev.index, ev.type, ev.process, ev.f, ev.key,
                                 pending.value, ev.time, ev.node, ev.error))
            pending = None
            continue
        if pending is not None:
            out.append(pending)
            pending = None
        if ev.type != "fail":
            out.append(ev)
    if pending is not None:
        out.append(pending)
    return [e for e in out if e.time is not None]


def parse_nemesis(events: Iterable[Event], *, end: int | None = None,
                  pairs: dict[str, tuple[str, ...]] | None = None
                  ) -> tuple[list[Interval], list[Mark]]:
    """Nemesis events (others are skipped) as intervals and instants.

    Intervals are sorted by start; ``end`` closes the ones never stopped
    (left ``None`` when not given).
    """
    pairs = PAIRS if pairs is None else pairs
    stops: dict[str, str] = {}  # stop f -> start f
    for start, ends in pairs.items():
        for stop in ends:
            stops.setdefault(stop, start)
    open_: dict[str, Interval] = {}
    intervals: list[Interval] = []
    marks: list[Mark] = []
    for ev in sorted(_effective(events), key=lambda e: e.time):  # type: ignore[arg-type, return-value]
        f, t = ev.f, ev.time
        assert t is not None
        failed = isinstance(ev.value, dict) and "error" in ev.value
        if (f.startswith("start-") or f in pairs) and failed:
            marks.append(Mark(t, f, ev.value))  # it never took effect
        elif f.startswith("start-") or f in pairs:
            name = f[len("start-"):] if f.startswith("start-") else f
            prev = open_.pop(name, None)
            if prev is not None:
                prev.end, prev.stop_f = t, f
            iv = Interval(name, t, None, f, None, ev.value)
            intervals.append(iv)
            open_[name] = iv
        elif f.startswith("stop-") or f in stops:
            name = f[len("stop-"):] if f.startswith("stop-") else stops[f]
            iv = open_.pop(name, None)
            if iv is not None:
                iv.end, iv.stop_f = t, f
            elif f in stops and not f.startswith("stop-"):
                marks.append(Mark(t, f, ev.value))
        else:
            marks.append(Mark(t, f, ev.value))
    if end is not None:
        for iv in intervals:
            if iv.end is None:
                iv.end = max(end, iv.start)
    intervals.sort(key=lambda iv: iv.start)
    return intervals, marks


def nemesis_intervals(events: Iterable[Event], *, end: int | None = None) -> list[Interval]:
    """The fault intervals of a history's nemesis events (see the module doc)."""
    return parse_nemesis(events, end=end)[0]


def history_bounds(ops: Sequence[Operation], events: Iterable[Event] = ()
                   ) -> tuple[int | None, int | None]:
    """The first and last time (ns) of the ops and nemesis events given."""
    ts = [t for op in ops for t in (op.call_time, op.ret_time) if t is not None]
    ts += [e.time for e in events if e.process == NEMESIS and e.time is not None]
    return (min(ts), max(ts)) if ts else (None, None)


def counts(ops: Iterable[Operation], seconds: float | None = None) -> dict[str, Any]:
    """Ops by status, the fraction of each, and ops per second (invoked)
    when the span of time they belong to is given."""
    c = Counter(op.status for op in ops)
    n = sum(c.values())
    out: dict[str, Any] = {"count": n}
    for s in STATUSES:
        out[s] = c.get(s, 0)
    for s in STATUSES:
        out[f"{s}_fraction"] = c.get(s, 0) / n if n else None
    if seconds:
        out["ops_per_s"] = n / seconds
    return out


@dataclass
class Stats:
    duration_s: float | None
    overall: dict[str, Any]
    by_f: dict[str, dict[str, Any]]
    by_node: dict[str, dict[str, Any]]
    by_f_node: dict[str, dict[str, dict[str, Any]]]
    #: ops invoked while no fault was in effect / while at least one was
    outside: dict[str, Any]
    inside: dict[str, Any]
    outside_by_f: dict[str, dict[str, Any]]
    inside_by_f: dict[str, dict[str, Any]]
    #: one row per interval: name, start_s, end_s, value and its counts
    intervals: list[dict[str, Any]]
    #: per fault name, all its intervals together
    by_fault: dict[str, dict[str, Any]]
    marks: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"checker": "stats", "duration_s": self.duration_s, "overall": self.overall,
                "by_f": self.by_f, "by_node": self.by_node, "by_f_node": self.by_f_node,
                "availability": {"outside": self.outside, "inside": self.inside,
                                 "outside_by_f": self.outside_by_f,
                                 "inside_by_f": self.inside_by_f,
                                 "by_fault": self.by_fault, "intervals": self.intervals},
                "nemesis_marks": self.marks}

    def describe(self) -> str:
        def row(name: str, c: dict[str, Any]) -> str:
            frac = c["ok_fraction"]
            return (f"  {name:<24} {c['count']:>8} {c['ok']:>8} {c['fail']:>7} {c['info']:>7}"
                    f"  {'-' if frac is None else f'{frac:6.1%}':>7}")
        head = f"  {'':<24} {'ops':>8} {'ok':>8} {'fail':>7} {'info':>7}  {'ok %':>7}"
        dur = f" over {self.duration_s:.1f} s" if self.duration_s else ""
        lines = [f"stats: {self.overall['count']} ops{dur}", head]
        lines += [row(f, c) for f, c in sorted(self.by_f.items())]
        lines.append(row("all", self.overall))
        if len(self.by_node) > 1 or "?" not in self.by_node:
            lines.append("  by node:")
            lines += [row(n, c) for n, c in sorted(self.by_node.items())]
        if self.intervals:
            lines.append("  availability (ok fraction of the ops invoked):")
            lines.append(row("no fault", self.outside))
            lines.append(row("any fault", self.inside))
            for name, c in sorted(self.by_fault.items()):
                lines.append(row(f"{name} ({c['intervals']}x)", c))
        return "\n".join(lines)


def compute_stats(ops: Sequence[Operation], nemesis_events: Iterable[Event] = (), *,
                  t0: int | None = None, end: int | None = None) -> Stats:
    """Counts per f, per node, per f and node; availability per fault interval.

    ``t0`` and ``end`` (ns) bound the history (default: its first and last
    times); an interval never stopped runs to ``end``.
    """
    events = list(nemesis_events)
    first, last = history_bounds(ops, events)
    t0 = first if t0 is None else t0
    end = last if end is None else end
    seconds = (end - t0) / 1e9 if t0 is not None and end is not None and end > t0 else None

    by_f_ops: dict[str, list[Operation]] = {}
    by_node_ops: dict[str, list[Operation]] = {}
    by_fn_ops: dict[tuple[str, str], list[Operation]] = {}
    for op in ops:
        node = op.node or "?"
        by_f_ops.setdefault(op.f, []).append(op)
        by_node_ops.setdefault(node, []).append(op)
        by_fn_ops.setdefault((op.f, node), []).append(op)
    by_f = {f: counts(v, seconds) for f, v in by_f_ops.items()}
    by_node = {n: counts(v, seconds) for n, v in by_node_ops.items()}
    by_f_node: dict[str, dict[str, dict[str, Any]]] = {}
    for (f, n), v in by_fn_ops.items():
        by_f_node.setdefault(f, {})[n] = counts(v, seconds)

    intervals, marks = parse_nemesis(events, end=end)
    timed = sorted((op for op in ops if op.call_time is not None), key=lambda o: o.call_time)
    calls = [op.call_time for op in timed]
    rows: list[dict[str, Any]] = []
    by_fault_ops: dict[str, list[Operation]] = {}
    by_fault_n: Counter[str] = Counter()
    for iv in intervals:
        stop = iv.end_or(end if end is not None else iv.start)
        within = timed[bisect.bisect_left(calls, iv.start):bisect.bisect_left(calls, stop)]
        by_fault_ops.setdefault(iv.name, []).extend(within)
        by_fault_n[iv.name] += 1
        rows.append({"name": iv.name, "targets": fault_targets(iv.value),
                     "start_f": iv.start_f, "stop_f": iv.stop_f, "value": iv.value,
                     "closed": iv.stop_f is not None,
                     "start_s": _secs(iv.start, t0), "end_s": _secs(stop, t0),
                     **counts(within, (stop - iv.start) / 1e9)})
    by_fault = {}
    for name, v in by_fault_ops.items():
        # An op in two overlapping intervals of one fault counts once.
        by_fault[name] = {"intervals": by_fault_n[name], **counts({id(o): o for o in v}.values())}

    merged = merge_spans([(iv.start, iv.end_or(end if end is not None else iv.start))
                     for iv in intervals])
    starts = [s for s, _ in merged]
    inside_ops: list[Operation] = []
    outside_ops: list[Operation] = []
    for op in ops:
        t = op.call_time
        if t is None:
            continue
        i = bisect.bisect_right(starts, t) - 1
        (inside_ops if i >= 0 and t < merged[i][1] else outside_ops).append(op)
    inside_by_f: dict[str, list[Operation]] = {}
    outside_by_f: dict[str, list[Operation]] = {}
    for op in inside_ops:
        inside_by_f.setdefault(op.f, []).append(op)
    for op in outside_ops:
        outside_by_f.setdefault(op.f, []).append(op)
    inside_s = sum(e - s for s, e in merged) / 1e9
    outside_s = seconds - inside_s if seconds is not None else None
    return Stats(seconds, counts(ops, seconds), by_f, by_node, by_f_node,
                 counts(outside_ops, outside_s), counts(inside_ops, inside_s),
                 {f: counts(v) for f, v in outside_by_f.items()},
                 {f: counts(v) for f, v in inside_by_f.items()},
                 rows, by_fault,
                 [{"f": m.f, "at_s": _secs(m.time, t0), "value": m.value} for m in marks])


def merge_spans(spans: Iterable[tuple[T, T]]) -> list[tuple[T, T]]:
    """Overlapping or touching ``(start, end)`` spans as one, in order."""
    out: list[tuple[T, T]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _secs(t: int | None, t0: int | None) -> float | None:
    return None if t is None or t0 is None else (t - t0) / 1e9
