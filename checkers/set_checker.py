"""The set workload: lost elements and stale reads of a grow-only set.

What the workload writes (one set: every ``add`` and read op of the ops given
belongs to it; the ``key`` field is not looked at, so a workload that rotates
partition keys checks each key's ops separately)::

    f "add"         invoke value: the element, unique in the history (an int)
                    ok value:     the element again, or null
                    ok   = PutItem acknowledged
                    fail = certainly not written (a DynamoDB error that
                           proves it: ValidationException, ...)
                    info = unknown (timeout, connection reset, 5xx)
    f "read-query"  invoke value: null
    f "read-scan"   ok value: the elements the read returned, as a JSON list
                    of ints (sorted ascending by convention; order is not
                    used, a repeated element is a duplicate)
    f "final-read"  a read (Query or Scan) issued after the heal phase and
                    the quiet period, in the same shape: the ground truth.
                    Several final reads (one per node, or a Query and a Scan)
                    are fine.

Any other f starting with ``read`` or ``final-read`` is a read of that kind
too (a Jepsen ``read`` imports as is); fail and info reads are counted and
otherwise ignored.

What is checked, in the real-time order of the history (event positions:
an add *precedes* a read when its ok event comes before the read's invoke
event; times are only used to report windows in milliseconds):

- **stale read**: a read that misses an element whose add was acknowledged
  before the read was invoked. Its staleness (:mod:`checkers.staleness`) is
  how long before the read began its oldest missing element had been
  acknowledged (``read.call_time - add.ret_time``).  Elements that are
  *lost* (below) are not counted again in every later read: they are
  reported once, as lost. An add concurrent with a read (its ok after the
  read's invoke) may or may not be seen: never flagged.  Under a bound
  (``max_staleness_ms``), a stale read at most that stale is measured and
  reported but is not an anomaly.
- **lost**: an acknowledged element absent from every final read that began
  after its acknowledgement. A final read missing an element that another
  final read has is a stale read (of kind ``final-read``).
- **phantom**: an element in a read that no add ever attempted.
- **duplicate**: an element twice in one read.
- **early**: an element in a read that completed before its add was invoked.
- **failed seen**: an element whose every add failed (certainly not applied)
  appears in a read.
- **recovered** (not an error): an ``info`` add whose element some read saw.
- **never read** (not an error): an ``info`` add whose element no read saw.

Verdict: invalid if any stale read (beyond the bound, if one is given),
lost, phantom, duplicate, early or failed seen element; otherwise unknown if
there is no ok read, or no final read (lost elements could not be checked);
otherwise valid.

When no op has f ``final-read`` and none are passed, the final reads are the
ok reads invoked after every add was invoked and every acknowledged add was
acknowledged (the last reads of the history), if any.

Cost: one pass over the reads in call order, each read turned into a set
once and compared with the set of elements acknowledged before it began
(``issuperset``, in C); time is linear in the total size of the reads.
"""

from __future__ import annotations

import bisect
import time as _time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from checkers.history import NEVER, Operation, freeze
from checkers.report import Anomaly, in_time_order
from checkers.result import INVALID, UNKNOWN, VALID, CheckResult, KeyResult, Witness
from checkers.staleness import StalenessReport, Superseded, elapsed_ms, verdict_text, within

__all__ = ["check_set", "SetResult", "StaleRead", "ReadAnomaly", "SetWitness",
           "ADD", "FINAL_READ", "is_read", "is_final_read", "describe_op"]

ADD = "add"
FINAL_READ = "final-read"
#: How many elements of a list ``describe`` prints before "and N more".
SHOWN_ELEMENTS = 10
#: Witnesses the timeline page draws at most (every anomaly is still listed).
PAGE_WITNESSES = 12
#: What each kind of bad read holds, in words.
_HOLDS = {"phantom": "elements no add ever attempted",
          "duplicate": "elements more than once",
          "early": "elements whose add was invoked after the read completed",
          "failed-seen": "elements whose add certainly failed"}


def is_final_read(f: str) -> bool:
    return f.startswith(FINAL_READ)


def is_read(f: str) -> bool:
    return f.startswith("read") or f.startswith(FINAL_READ)


def _secs(t: int | None, t0: int | None) -> float | None:
    return None if t is None or t0 is None else (t - t0) / 1e9


def _sorted(xs: Iterable[Any]) -> list[Any]:
    xs = list(xs)
    try:
        return sorted(xs)
    except TypeError:
        return sorted(xs, key=repr)


def _elements(op: Operation) -> Sequence[Any] | None:
    """A read's elements (a list or tuple), or None when malformed."""
    v = op.output
    return v if isinstance(v, (list, tuple)) else None


def _as_set(xs: Sequence[Any]) -> set[Any]:
    try:
        return set(xs)
    except TypeError:  # elements that are JSON lists
        return {freeze(x) for x in xs}


def _op_brief(op: Operation, t0: int | None) -> dict[str, Any]:
    return {"id": op.id, "f": op.f, "process": op.process, "node": op.node,
            "status": op.status, "call": op.call,
            "ret": None if op.ret == NEVER else int(op.ret),
            "at_s": _secs(op.call_time, t0)}


@dataclass
class StaleRead:
    """A read that missed elements acknowledged before it began."""

    op: Operation
    #: The missing elements, sorted.
    missing: list[Any]
    #: The read's staleness: its oldest missing element's window (read began
    #: - add acknowledged), ms.
    stale_ms: float | None
    #: Window of the newest missing element, ms.
    min_stale_ms: float | None
    #: When the read began, seconds since ``t0``.
    at_s: float | None
    #: The add of the oldest missing element: what made the read stale first.
    oldest: Operation

    @property
    def superseded(self) -> Superseded:
        return Superseded(self.op, self.oldest, self.stale_ms)

    @property
    def kind(self) -> str:
        return self.op.f

    def line(self, shown: int = SHOWN_ELEMENTS) -> str:
        op = self.op
        where = f" on {op.node}" if op.node else ""
        when = f" at {self.at_s:.3f} s" if self.at_s is not None else f" (event {op.call})"
        n = len(self.missing)
        noun = "element" if n == 1 else "elements"
        window = (f" acknowledged up to {self.stale_ms:.0f} ms before it began"
                  if self.stale_ms is not None else " acknowledged before it began")
        return (f"{op.f} by process {op.process}{where}{when} missed {n} {noun}"
                f"{window}: {_list(self.missing, shown)}")

    def to_dict(self, limit: int = 1000) -> dict[str, Any]:
        return {**_op_brief(self.op, None), "at_s": self.at_s,
                "missing_count": len(self.missing), "missing": self.missing[:limit],
                "stale_ms": self.stale_ms, "min_stale_ms": self.min_stale_ms}


@dataclass
class ReadAnomaly:
    """A read holding elements it must not hold (phantom, duplicate, early,
    failed); ``elements`` maps each to how often it appears in the read."""

    op: Operation
    elements: dict[Any, int]
    at_s: float | None
    kind: str  # "phantom" | "duplicate" | "early" | "failed-seen"

    def line(self) -> str:
        op = self.op
        counts = self.elements if self.kind == "duplicate" else None
        return (f"{op.f} by process {op.process}" + (f" on {op.node}" if op.node else "")
                + (f" at {self.at_s:.3f} s" if self.at_s is not None else "")
                + f" returned {_HOLDS[self.kind]}: "
                + _list(_sorted(self.elements), SHOWN_ELEMENTS, counts=counts))

    def to_dict(self, limit: int = 1000) -> dict[str, Any]:
        items = list(self.elements.items())[:limit]
        return {**_op_brief(self.op, None), "at_s": self.at_s,
                "count": len(self.elements),
                "elements": [e for e, _ in items],
                "occurrences": [n for _, n in items]}


@dataclass
class SetWitness:
    """The clearest evidence: the worst stale read and the adds it missed, or
    the final reads and the adds they lost, or one bad read."""

    kind: str  # "stale-read" | "lost" | "phantom" | "duplicate" | "early" | "failed-seen"
    reads: list[Operation]
    adds: list[Operation]
    elements: list[Any]
    explanation: str

    def key_result(self, title: str) -> KeyResult:
        """The witness drawn like a linearizability witness on the timeline
        page: the adds it concerns, in the order they were acknowledged, and
        the read (the first final read, for lost elements)."""
        adds = sorted(self.adds, key=lambda op: op.ret)
        window = sorted([*self.adds, *self.reads], key=lambda op: op.call)
        return KeyResult(title, INVALID, len(window), self.kind, witness=Witness(
            failing_op=self.reads[0], linearized=adds,
            states_after=[f"has {a.input}" for a in adds],
            states=[_brief(self.elements)], window=window, explanation=self.explanation))

    def to_dict(self, limit: int = 100, t0: int | None = None) -> dict[str, Any]:
        return {"kind": self.kind, "explanation": self.explanation,
                "reads": [_op_brief(r, t0) for r in self.reads[:limit]],
                "adds": [{**_op_brief(a, t0), "element": a.input,
                          "ack_s": _secs(a.ret_time, t0)} for a in self.adds[:limit]],
                "adds_count": len(self.adds),
                "elements": self.elements[:limit]}


@dataclass
class SetResult:
    verdict: str
    reason: str | None
    elapsed: float
    t0: int | None
    #: add ops by status: {"ok": n, "fail": n, "info": n}
    adds: dict[str, int]
    #: reads by kind (f): {"read-query": {"ok": n, "fail": n, "info": n}, ...}
    reads: dict[str, dict[str, int]]
    final_reads: list[Operation]
    #: how the final reads were found: "given" | "final-read" | "last-reads" | "none"
    final_source: str
    stale_reads: list[StaleRead]
    #: every stale read measured: overall, per node, per read kind
    staleness: StalenessReport
    lost: list[Any]
    phantoms: list[ReadAnomaly]
    duplicates: list[ReadAnomaly]
    early: list[ReadAnomaly]
    failed_seen: list[ReadAnomaly]
    recovered: list[Any]
    never_read: list[Any]
    witness: SetWitness | None = None
    #: element -> its add op (the acknowledged one when there is one)
    add_ops: dict[Any, Operation] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------- figures

    @property
    def stale_count(self) -> int:
        return len(self.stale_reads)

    @property
    def stale_anomalies(self) -> list[StaleRead]:
        """The stale reads the bound does not allow (all without a bound)."""
        bound = self.staleness.max_staleness_ms
        return [s for s in self.stale_reads if not within(s.stale_ms, bound)]

    @property
    def stale_elements(self) -> list[Any]:
        """Distinct elements that at least one stale read missed."""
        return _sorted({e for s in self.stale_reads for e in s.missing})

    @property
    def phantom_elements(self) -> list[Any]:
        return _sorted({e for a in self.phantoms for e in a.elements})

    def figures(self) -> dict[str, Any]:
        """Counts only: what a summary table or a comparison needs."""
        ok_reads = sum(c.get("ok", 0) for c in self.reads.values())
        return {"adds": dict(self.adds), "attempted": sum(self.adds.values()),
                "ok_reads": ok_reads, "final_reads": len(self.final_reads),
                "stale_reads": self.stale_count,
                "stale_elements": len(self.stale_elements),
                "lost": len(self.lost), "phantoms": len(self.phantom_elements),
                "duplicate_reads": len(self.duplicates),
                "early": sum(len(a.elements) for a in self.early),
                "failed_seen": sum(len(a.elements) for a in self.failed_seen),
                "recovered": len(self.recovered), "never_read": len(self.never_read)}

    def to_dict(self, limit: int = 1000) -> dict[str, Any]:
        """JSON-ready: verdict, figures (counts), and under ``details`` the
        anomalies themselves (each list capped at ``limit``); the staleness
        figures are :attr:`staleness`'s own."""
        return {"checker": "set", "verdict": self.verdict, "reason": self.reason,
                "elapsed": self.elapsed, **self.figures(),
                "reads": self.reads, "final_source": self.final_source,
                "details": {
                    "stale_reads": [s.to_dict(limit) for s in self.stale_reads[:limit]],
                    "lost": self.lost[:limit],
                    "phantoms": [a.to_dict(limit) for a in self.phantoms[:limit]],
                    "duplicates": [a.to_dict(limit) for a in self.duplicates[:limit]],
                    "early": [a.to_dict(limit) for a in self.early[:limit]],
                    "failed_seen": [a.to_dict(limit) for a in self.failed_seen[:limit]],
                    "recovered": self.recovered[:limit],
                    "never_read": self.never_read[:limit]},
                "witness": self.witness.to_dict(t0=self.t0) if self.witness else None}

    # ---------------------------------------------------------------- text

    def describe(self, shown: int = 10) -> str:
        """A summary a person reads: verdict, counts, the first stale reads
        (beyond the bound, if any)."""
        f = self.figures()
        a = self.adds
        read_parts = ", ".join(f"{c.get('ok', 0)} {k}" for k, c in sorted(self.reads.items()))
        lines = [f"set: {verdict_text(self.verdict, self.staleness.max_staleness_ms)}"
                 + (f" ({self.reason})" if self.reason else ""),
                 f"  adds: {f['attempted']} ({a.get('ok', 0)} ok, {a.get('fail', 0)} fail, "
                 f"{a.get('info', 0)} info); ok reads: {f['ok_reads']}"
                 + (f" ({read_parts})" if read_parts else "")
                 + f"; final reads: {len(self.final_reads)} ({self.final_source})"]
        lines += self.staleness.lines()
        lines.append(f"  lost: {f['lost']}; phantoms: {f['phantoms']}; "
                     f"reads with duplicates: {f['duplicate_reads']}; early: {f['early']}; "
                     f"failed adds seen: {f['failed_seen']}; recovered info adds: "
                     f"{f['recovered']}; never read: {f['never_read']}")
        shown_stale = self.stale_anomalies
        for s in shown_stale[:shown]:
            lines.append("  " + s.line())
        if len(shown_stale) > shown:
            lines.append(f"  ... and {len(shown_stale) - shown} more stale reads")
        if self.lost:
            lines.append(f"  lost elements: {_list(self.lost, SHOWN_ELEMENTS)}")
        for items in (self.phantoms, self.duplicates, self.early, self.failed_seen):
            lines += ["  " + r.line() for r in items[:shown]]
        if self.witness:
            lines.append(f"  witness: {self.witness.explanation}")
        return "\n".join(lines)

    # ------------------------------------------------------ for the report

    def witnesses(self, limit: int | None = None) -> list[SetWitness]:
        """The evidence, clearest first: stale reads beyond the bound (the
        worst first), the lost elements, then each read holding elements it
        must not hold."""
        out: list[SetWitness] = []
        stale = sorted(self.stale_anomalies, key=lambda s: (
            -(s.stale_ms if s.stale_ms is not None else -1.0), -len(s.missing), s.op.call))
        for i, sr in enumerate(stale[:limit]):
            out.append(SetWitness("stale-read", [sr.op], [self.add_ops[e] for e in sr.missing],
                                  list(sr.missing),
                                  ("the worst stale read: " if i == 0 else "") + sr.line()))
        if self.lost:
            adds = sorted((self.add_ops[e] for e in self.lost), key=lambda op: op.ret)
            out.append(SetWitness("lost", list(self.final_reads), adds, list(self.lost),
                                  f"{len(self.lost)} acknowledged elements are missing from "
                                  f"every final read: {_list(self.lost, SHOWN_ELEMENTS)}"))
        for items in (self.phantoms, self.duplicates, self.early, self.failed_seen):
            for a in items:
                els = _sorted(a.elements)
                out.append(SetWitness(a.kind, [a.op],
                                      [self.add_ops[e] for e in els if e in self.add_ops],
                                      els, a.line()))
        return out[:limit]

    def anomalies(self) -> list[Anomaly]:
        """Every anomaly at the op that shows it, in time order: each stale
        read beyond the bound, each lost element (at its add) and each bad read."""
        out = [Anomaly("stale read", s.op, s.line()) for s in self.stale_anomalies]
        out += [Anomaly("lost", self.add_ops[e],
                        f"element {e}, acknowledged, is missing from every final read")
                for e in self.lost]
        for items in (self.phantoms, self.duplicates, self.early, self.failed_seen):
            out += [Anomaly(a.kind, a.op, a.line()) for a in items]
        return in_time_order(out)

    def page(self, ops: int, path: str | None = None,
             limit: int = PAGE_WITNESSES) -> CheckResult:
        """The timeline page's view: the whole history's op count and a
        witness for each of the first ``limit`` pieces of evidence."""
        keys = []
        for w in self.witnesses(limit):
            first = w.reads[0] if w.kind != "lost" else w.adds[0]
            at = _secs(first.call_time, self.t0)
            where = f" on {first.node}" if first.node else ""
            when = f" at {at:.3f} s" if at is not None else ""
            keys.append(w.key_result(f"{w.kind}{when}{where}"))
        return CheckResult(self.verdict, "set", ops, self.elapsed, keys, path,
                           self.reason)


def describe_op(op: Operation) -> str:
    """A set op as the timeline labels it."""
    if op.f == ADD:
        return f"add {op.input}"
    got = _elements(op) or []
    return f"{op.f} -> {len(got)} elements" if op.status == "ok" else f"{op.f} ({op.status})"


def _brief(elements: list[Any], shown: int = 8) -> str:
    more = f" and {len(elements) - shown} more" if len(elements) > shown else ""
    return ", ".join(map(str, elements[:shown])) + more


def _list(xs: Sequence[Any], shown: int, counts: dict[Any, int] | None = None) -> str:
    def one(x: Any) -> str:
        return f"{x} (x{counts[x]})" if counts else str(x)
    text = ", ".join(one(x) for x in xs[:shown])
    return text + (f", ... and {len(xs) - shown} more" if len(xs) > shown else "")


# ------------------------------------------------------------------ checker

def check_set(ops: Sequence[Operation], *, final_reads: Sequence[Operation] | None = None,
              t0: int | None = None, max_staleness_ms: float | None = None,
              families: Mapping[str, str] | None = None) -> SetResult:
    """Check the add and read ops of a set workload (see the module docstring).

    ``final_reads``: the reads that are the ground truth for lost elements;
    by default the ops with f ``final-read`` (or, if none, the last reads).
    ``t0``: the time origin (ns) of the seconds printed; by default the first
    op's invocation. Other ops (f neither add nor a read) are ignored.
    ``max_staleness_ms``: stale reads at most this stale are no anomaly.
    ``families``: read kind (f) -> the read family it uses, for the figures.
    """
    started = _time.perf_counter()
    if t0 is None:
        times = [op.call_time for op in ops if op.call_time is not None]
        t0 = min(times) if times else None

    adds = [op for op in ops if op.f == ADD]
    reads = [op for op in ops if is_read(op.f)]

    # Elements: first invocation, acknowledgement (earliest ok), statuses.
    add_status = Counter(op.status for op in adds)
    first_call: dict[Any, int] = {}
    acked: dict[Any, Operation] = {}
    add_ops: dict[Any, Operation] = {}
    statuses: dict[Any, set[str]] = {}
    for op in adds:
        e = op.input if op.input is not None else op.output
        if e is None:
            continue
        if isinstance(e, list):
            e = freeze(e)
        if e not in first_call or op.call < first_call[e]:
            first_call[e] = op.call
        statuses.setdefault(e, set()).add(op.status)
        if op.status == "ok":
            if e not in acked or op.ret < acked[e].ret:
                acked[e] = op
            add_ops[e] = acked[e]
        else:
            add_ops.setdefault(e, op)
    failed = {e for e, st in statuses.items() if st == {"fail"}}
    info = {e for e, st in statuses.items() if "info" in st and "ok" not in st}

    read_counts: dict[str, dict[str, int]] = {}
    for op in reads:
        c = read_counts.setdefault(op.f, {"ok": 0, "fail": 0, "info": 0})
        c[op.status] = c.get(op.status, 0) + 1
    ok_reads = [op for op in reads if op.status == "ok" and _elements(op) is not None]
    malformed = [op for op in reads if op.status == "ok" and _elements(op) is None]

    # Final reads: the ground truth.
    if final_reads is not None:
        finals, source = [r for r in final_reads if r.status == "ok"
                          and _elements(r) is not None], "given"
    else:
        finals, source = [r for r in ok_reads if is_final_read(r.f)], FINAL_READ
        if not finals and ok_reads:
            last = max([op.call for op in adds] + [op.ret for op in acked.values()],
                       default=-1)
            finals, source = [r for r in ok_reads if r.call > last], "last-reads"
    if not finals:
        source = "none"
    finals.sort(key=lambda r: r.call)
    lost = _lost(acked, finals)

    # One pass over the reads in invocation order.
    by_ack = sorted([(op.ret, e) for e, op in acked.items()], key=_first)
    by_call = sorted(first_call.items(), key=_second)
    acked_before: set[Any] = set()  # acknowledged before this read, not lost
    invoked_before: set[Any] = set()  # add invoked before this read
    interesting = failed | info
    seen_interesting: set[Any] = set()
    ia = ic = 0
    stale: list[StaleRead] = []
    phantoms: list[ReadAnomaly] = []
    dups: list[ReadAnomaly] = []
    early: list[ReadAnomaly] = []
    failed_seen: list[ReadAnomaly] = []
    ok_reads.sort(key=lambda r: r.call)
    for r in ok_reads:
        while ia < len(by_ack) and by_ack[ia][0] < r.call:
            e = by_ack[ia][1]
            if e not in lost:
                acked_before.add(e)
            ia += 1
        while ic < len(by_call) and by_call[ic][1] < r.call:
            invoked_before.add(by_call[ic][0])
            ic += 1
        xs = _elements(r)
        s = _as_set(xs)
        at = _secs(r.call_time, t0)
        if len(s) != len(xs):
            counts = Counter(freeze(x) for x in xs)
            dups.append(ReadAnomaly(r, {e: n for e, n in sorted(
                counts.items(), key=lambda kv: repr(kv[0])) if n > 1}, at, "duplicate"))
        # One pass over the read: what it holds beyond the acknowledged set.
        # (It holds all of that set iff |s| - |extra| == |acked_before|.)
        extra = s - acked_before
        is_stale = len(s) - len(extra) < len(acked_before)
        if extra and not extra <= invoked_before:
            ph: list[Any] = []
            ea: list[Any] = []
            for e in extra - invoked_before:
                c = first_call.get(e)
                if c is None:
                    ph.append(e)
                elif c > r.ret:
                    ea.append(e)
            if ph:
                phantoms.append(ReadAnomaly(r, {e: 1 for e in _sorted(ph)}, at, "phantom"))
            if ea:
                early.append(ReadAnomaly(r, {e: 1 for e in _sorted(ea)}, at, "early"))
        if interesting:
            hit = s & interesting
            if hit:
                seen_interesting |= hit
                fs = hit & failed
                if fs:
                    failed_seen.append(ReadAnomaly(r, {e: 1 for e in _sorted(fs)}, at,
                                                   "failed-seen"))
        if is_stale:
            missing = _sorted(acked_before - s)
            windows = [w for w in (elapsed_ms(r.call_time, acked[e].ret_time) for e in missing)
                       if w is not None]
            oldest = min((acked[e] for e in missing), key=_ret)
            stale.append(StaleRead(r, missing, max(windows) if windows else None,
                                   min(windows) if windows else None, at, oldest))

    recovered = _sorted(info & seen_interesting)
    never_read = _sorted(info - seen_interesting)

    staleness = StalenessReport.of((s.superseded for s in stale), ok_reads,
                                   max_staleness_ms=max_staleness_ms, families=families, t0=t0)
    invalid = bool(staleness.beyond_bound or lost or phantoms or dups or early or failed_seen)
    if invalid:
        verdict, reason = INVALID, None
    elif not ok_reads:
        verdict, reason = UNKNOWN, "the set was never read"
    elif not finals:
        verdict, reason = UNKNOWN, "no final read: lost elements not checked"
    else:
        verdict, reason = VALID, None
    if malformed and verdict != INVALID:
        verdict = UNKNOWN
        reason = (f"{len(malformed)} ok reads without a list of elements"
                  + (f"; {reason}" if reason else ""))

    res = SetResult(verdict, reason, 0.0, t0, dict(add_status), read_counts,
                    finals, source, stale, staleness, _sorted(lost),
                    phantoms, dups, early, failed_seen, recovered, never_read,
                    add_ops=add_ops)
    res.witness = next(iter(res.witnesses(1)), None)
    res.elapsed = _time.perf_counter() - started
    return res


def _first(x: tuple[Any, Any]) -> Any:
    return x[0]


def _second(x: tuple[Any, Any]) -> Any:
    return x[1]


def _ret(op: Operation) -> float:
    return op.ret


def _lost(acked: dict[Any, Operation], finals: list[Operation]) -> set[Any]:
    """Acknowledged elements absent from every final read begun after the ack."""
    if not finals:
        return set()
    calls = [r.call for r in finals]
    # Elements grouped by the first final read that began after their ack;
    # the union of that read and all later ones is built from the back.
    groups: dict[int, list[Any]] = {}
    for e, op in acked.items():
        k = bisect.bisect_right(calls, op.ret)
        if k < len(finals):
            groups.setdefault(k, []).append(e)
    lost: set[Any] = set()
    union: set[Any] = set()
    for k in range(len(finals) - 1, -1, -1):
        union |= _as_set(_elements(finals[k]) or [])
        for e in groups.get(k, ()):
            if e not in union:
                lost.add(e)
    return lost
