"""How stale each read was, not only whether a read was: a measure beside
the verdicts, and the bounded-staleness transformation.

**Staleness of a read.**  How long before the read began its returned state
had already been superseded by a write that was acknowledged: the read's
invocation time minus the acknowledgement time of the *earliest* write that
certainly superseded what the read returned and was acknowledged before the
read began (in the history's real-time order, the event positions).  A read
with no such write is not stale.  Only ``ok`` reads are measured; a read
whose times are unknown is stale with an unknown staleness.

- *Set* (:mod:`checkers.set_checker` finds these): a read that misses an
  element whose add was acknowledged before it began; the earliest such
  acknowledgement among the missed elements supersedes it.
- *Register with unique values* (:func:`register_staleness`): a read
  returning ``v``, written by ``w_v`` (the initial ``None`` by a virtual
  writer at -infinity), was certainly superseded by a successful cas from
  ``v`` (it observed ``v`` and replaced it) and by any write or cas that
  took effect and was invoked after ``v`` certainly existed: after ``w_v``
  returned, or after an op that observed ``v`` (a read of it, a cas from
  it) returned, whichever came first (so an indeterminate ``w_v`` is
  placed by its readers).  Such a write comes after ``w_v`` in every
  linearization, and ``v`` is never written again.  A write concurrent
  with all of those proves nothing: it may come first.  Only
  acknowledged (``ok``) writes have an acknowledgement time, so only they
  count.  A read of a value with no single writer (written twice, never
  written, or ``None`` after a delete) is not measured: the linearizability
  check says what is wrong with it.  One sort per key: O(n log n).

**Bounded staleness.**  Given ``max_staleness_ms`` = Δ, a stale read whose
staleness is at most Δ is within the bound.  For a register that is
Δ-atomicity (Golab, Li, Shah, "Analyzing consistency properties for fun and
profit", PODC 2011): the history is Δ-atomic iff it is linearizable after
every read's invocation is moved Δ earlier (:func:`shift_reads`, applied
before the linearizability check, so both the unique-register path and the
WGL search see it).  A read stale by at most Δ then no longer follows the
write that superseded its value, so the two notions agree.

**Figures.**  :class:`StalenessReport`: how many ok reads were stale and
the nearest-rank p50, p90, p99 and max of their staleness (ms: each is a
staleness some read really had), overall, per node (the op's ``node``, the
endpoint that served it) and per read kind (the op's ``f``, with the read
family the workload maps it to, e.g. ``get`` -> ``get_item``).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass, field, replace
from itertools import accumulate
from typing import Any, Callable, Iterable, Mapping, Sequence

from checkers.history import NEVER, Operation, freeze

__all__ = ["Superseded", "Distribution", "StalenessReport", "register_staleness",
           "shift_reads", "within", "verdict_text", "fmt_ms", "elapsed_ms"]

#: The stalest reads results.json lists.
WORST_LISTED = 10


@dataclass(frozen=True, slots=True)
class Superseded:
    """A stale read: ``by`` (acknowledged before ``read`` began) had certainly
    superseded what ``read`` returned, ``ms`` before the read began."""

    read: Operation
    by: Operation
    ms: float | None


def within(ms: float | None, bound: float | None) -> bool:
    """Whether a staleness is allowed by a bound (an unknown one never is)."""
    return bound is not None and ms is not None and ms <= bound


def fmt_ms(ms: float) -> str:
    """Milliseconds as a person reads them, to 0.1 ms: ``1,840``, ``59.9``."""
    return f"{ms:,.1f}".rstrip("0").rstrip(".")


def verdict_text(verdict: str, bound: float | None) -> str:
    """``VALID``, or ``VALID within max staleness 2,000 ms`` under a bound."""
    return verdict.upper() + ("" if bound is None else
                              f" within max staleness {fmt_ms(bound)} ms")


def elapsed_ms(later: int | None, earlier: int | None) -> float | None:
    """Milliseconds from ``earlier`` to ``later`` (ns), None if either is unknown."""
    return None if later is None or earlier is None else (later - earlier) / 1e6


# ------------------------------------------------------------------ register

def register_staleness(ops: Sequence[Operation], model: Any) -> list[Superseded]:
    """Every stale ok read of a unique-value register history (module doc),
    in the order of the keys and, per key, of the reads."""
    out: list[Superseded] = []
    for part in model.partition(list(ops)).values():
        out += _key_staleness(part, model)
    return out


def _key_staleness(ops: list[Operation], model: Any) -> list[Superseded]:
    nil_any = getattr(model, "nil_read", "unwritten") == "any"
    writers: dict[Any, list[Operation]] = {}    # value -> ops that may have put it
    cas_from: dict[Any, Operation] = {}         # value -> earliest acked cas from it
    acked: list[Operation] = []                 # ok writes, cas and deletes
    reads: list[tuple[Operation, Any]] = []
    first_read: dict[Any, float] = {}           # value -> earliest return of a read of it
    for op in ops:
        r = model.as_register(op)
        if r is not None and r.kind == "read":
            if op.status == "ok" and not (r.expect is None and nil_any):
                v = freeze(r.expect)
                reads.append((op, v))
                first_read[v] = min(op.ret, first_read.get(v, math.inf))
            continue
        if op.status == "fail":
            continue
        writers.setdefault(None if r is None else freeze(r.value), []).append(op)  # None: delete
        if op.status != "ok":
            continue
        acked.append(op)
        if r is not None and r.kind == "cas":
            src = freeze(r.expect)
            if src not in cas_from or op.ret < cas_from[src].ret:
                cas_from[src] = op
    acked.sort(key=_call)
    calls = [op.call for op in acked]
    # first_ack[i]: the earliest acknowledged among acked[i:] (called from i on).
    first_ack: list[Operation | None] = [None] * (len(acked) + 1)
    for i in range(len(acked) - 1, -1, -1):
        nxt = first_ack[i + 1]
        first_ack[i] = acked[i] if nxt is None or acked[i].ret < nxt.ret else nxt
    out: list[Superseded] = []
    for read, v in reads:
        ws = writers.get(v, [])
        if len(ws) + (v is None) != 1:
            continue
        consumed = cas_from.get(v)
        existed = -math.inf if v is None else min(
            ws[0].ret, first_read[v], math.inf if consumed is None else consumed.ret)
        found = [op for op in (first_ack[bisect_right(calls, existed)], consumed)
                 if op is not None and op.ret < read.call]
        if found:
            by = min(found, key=_ret)
            out.append(Superseded(read, by, elapsed_ms(read.call_time, by.ret_time)))
    return out


def _call(op: Operation) -> int:
    return op.call


def _ret(op: Operation) -> float:
    return op.ret


# ------------------------------------------------------------ the Δ shift

def shift_reads(ops: Sequence[Operation], delta_ms: float,
                is_read: Callable[[Operation], bool]) -> list[Operation]:
    """Copies of ``ops`` as if every read had been invoked ``delta_ms``
    earlier: each read's invocation moves before every event of time at
    least its own less Δ (so a write acknowledged exactly Δ before no longer
    precedes it), positions are renumbered, and its ``call_time`` is moved
    too, so that a witness shows the history as it was checked.  Ops keep
    their ``id``; a read without a time stays where it is."""
    delta = round(delta_ms * 1e6)
    time_at = {op.call: op.call_time for op in ops}
    time_at.update((int(op.ret), op.ret_time) for op in ops if op.ret != NEVER)
    positions = sorted(time_at)
    latest = list(accumulate((-math.inf if time_at[p] is None else time_at[p]
                              for p in positions), max))
    moving: dict[int, list[Operation]] = {}     # position -> reads invoked just before it
    for op in ops:
        if is_read(op) and op.call_time is not None:
            q = positions[bisect_left(latest, op.call_time - delta)]
            if q < op.call:
                moving.setdefault(q, []).append(op)
    rank: dict[int, int] = {}                   # old position -> new, for events in place
    call_rank: dict[int, int] = {}              # old call -> new, for the reads moved
    for p in positions:
        for op in sorted(moving.get(p, ()), key=_call):
            call_rank[op.call] = len(rank) + len(call_rank)
        if p not in call_rank:                  # (a read is moved before its own call)
            rank[p] = len(rank) + len(call_rank)

    def renumbered(op: Operation) -> Operation:
        ret = NEVER if op.ret == NEVER else rank[int(op.ret)]
        if op.call in call_rank and op.call_time is not None:
            return replace(op, call=call_rank[op.call], ret=ret, call_time=op.call_time - delta)
        return replace(op, call=rank[op.call], ret=ret)
    return [renumbered(op) for op in ops]


# ------------------------------------------------------------------ figures

@dataclass(frozen=True)
class Distribution:
    """How many of ``reads`` ok reads were stale, and how stale (ms,
    nearest-rank percentiles of those whose staleness is known)."""

    reads: int
    stale: int
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, reads: int, stale: Sequence[float | None]) -> Distribution:
        ms = sorted(m for m in stale if m is not None)
        if not ms:
            return cls(reads, len(stale))

        def rank(percent: int) -> float:  # in integers: 0.9 * 70 is 63.00000000000001
            return ms[max(0, -(-percent * len(ms) // 100) - 1)]
        return cls(reads, len(stale), rank(50), rank(90), rank(99), ms[-1])

    def to_dict(self) -> dict[str, Any]:
        return {"reads": self.reads, "stale": self.stale, "p50_ms": self.p50,
                "p90_ms": self.p90, "p99_ms": self.p99, "max_ms": self.max}

    def brief(self) -> str:
        """``3 of 400 (max 1,840 ms)``."""
        worst = f" (max {fmt_ms(self.max)} ms)" if self.max is not None else ""
        return f"{self.stale:,} of {self.reads:,}{worst}"


@dataclass
class StalenessReport:
    """A run's stale reads: the distribution overall, per node and per read
    kind, the stalest reads, and what the bound (if any) allowed."""

    max_staleness_ms: float | None
    overall: Distribution
    by_node: dict[str, Distribution]
    by_read: dict[str, Distribution]
    #: read kind (f) -> the read family it uses (``get_item``, ``query``, ...)
    families: dict[str, str]
    #: the stalest reads, stalest first
    worst: list[Superseded]
    #: stale reads the bound does not allow (all of them without a bound)
    beyond_bound: int
    t0: int | None = field(default=None, repr=False)

    @classmethod
    def of(cls, stale: Iterable[Superseded], reads: Iterable[Operation], *,
           max_staleness_ms: float | None = None, families: Mapping[str, str] | None = None,
           t0: int | None = None) -> StalenessReport:
        """The report of ``stale`` among the ok ``reads`` measured."""
        stale, reads = list(stale), list(reads)
        by_read = _grouped(reads, stale, _kind)
        worst = sorted(stale, key=lambda s: (s.ms is None, -(s.ms or 0.0), s.read.call))
        return cls(max_staleness_ms, Distribution.of(len(reads), [s.ms for s in stale]),
                   _grouped(reads, stale, _node), by_read,
                   {f: fam for f, fam in (families or {}).items() if f in by_read},
                   worst[:WORST_LISTED],
                   sum(1 for s in stale if not within(s.ms, max_staleness_ms)), t0)

    def to_dict(self) -> dict[str, Any]:
        """results.json's ``staleness``."""
        return {"max_staleness_ms": self.max_staleness_ms, "beyond_bound": self.beyond_bound,
                **self.overall.to_dict(),
                "by_node": {k: d.to_dict() for k, d in self.by_node.items()},
                "by_read": {k: {"family": self.families.get(k), **d.to_dict()}
                            for k, d in self.by_read.items()},
                "worst": [self._read(s) for s in self.worst]}

    def _read(self, s: Superseded) -> dict[str, Any]:
        at = elapsed_ms(s.read.call_time, self.t0)
        return {"op": s.read.id, "f": s.read.f, "process": s.read.process,
                "node": s.read.node, "at_s": None if at is None else at / 1e3,
                "stale_ms": s.ms, "superseded_by": s.by.id}

    def lines(self) -> list[str]:
        """Two lines for a summary (one when nothing was stale), indented."""
        o = self.overall
        head = f"  stale reads: {o.stale:,} of {o.reads:,} ok reads"
        if o.max is not None:
            top = self.worst[0].read
            where = ", ".join(x for x in (top.node, top.f) if x)
            head += (f", max {fmt_ms(o.max)} ms ({where}), p50 {fmt_ms(o.p50 or 0)} ms, "
                     f"p90 {fmt_ms(o.p90 or 0)} ms, p99 {fmt_ms(o.p99 or 0)} ms")
        if o.stale and self.max_staleness_ms is not None:
            which = f"{self.beyond_bound:,} beyond" if self.beyond_bound else "all within"
            head += f"; {which} the max staleness of {fmt_ms(self.max_staleness_ms)} ms"
        if not o.stale:
            return [head]
        nodes = ", ".join(f"{k} {d.brief()}" for k, d in self.by_node.items() if d.stale)
        kinds = ", ".join(f"{k}{f' ({self.families[k]})' if k in self.families else ''} "
                          f"{d.brief()}" for k, d in self.by_read.items())
        return [head, f"  stale by node: {nodes}; by read: {kinds}"]


def _grouped(reads: list[Operation], stale: list[Superseded],
             key: Callable[[Operation], str]) -> dict[str, Distribution]:
    """The distribution of each group of reads (by ``key``), by name."""
    count = Counter(key(op) for op in reads)
    ms: dict[str, list[float | None]] = {}
    for s in stale:
        ms.setdefault(key(s.read), []).append(s.ms)
    return {k: Distribution.of(n, ms.get(k, [])) for k, n in sorted(count.items())}


def _node(op: Operation) -> str:
    return op.node or "?"


def _kind(op: Operation) -> str:
    return op.f
