"""The bank workload: transfers between accounts must conserve the total.

What the workload writes::

    f "transfer"   invoke value: {"from": ACCT, "to": ACCT, "amount": N}
                   (N > 0; one TransactWriteItems that debits ``from`` on the
                   condition balance >= N and credits ``to``)
                   ok value: the same, or null
                   ok   = applied
                   fail = TransactionCanceled (insufficient funds, or any
                          cancellation that proves nothing was written)
                   info = unknown (timeout, connection reset, 5xx)
    f "read-txn"   TransactGetItems of every account;
    f "read-scan"  Scan of the accounts table.
                   invoke value: null
                   ok value: {ACCT: BALANCE, ...} for every account, a JSON
                   object (so ACCT is a string in the file: account 3 is "3";
                   the checker compares account ids by ``str``), BALANCE an
                   integer; an account the read did not return is absent (or
                   null)

``final-read-txn`` / ``final-read-scan`` (reads after the heal phase) are
checked the same way; a plain ``read`` (Jepsen's bank) counts as a txn read.

Every ok read is checked:

- **missing** / **unexpected**: it returns every account of ``accounts``
  and no other (when ``accounts`` is not given: every account that any read
  or transfer mentions);
- **negative**: no balance below zero (transfers are conditional);
- **malformed**: balances are integers;
- **wrong total**: the balances of a complete read sum to ``total``. A txn
  read is one snapshot, so a wrong total is invalid. A Scan is not a
  snapshot in DynamoDB, but this store scans at one timestamp: with
  ``scan_snapshot=True`` (the default) a wrong Scan total is invalid too,
  with ``False`` it is only counted (``scan`` figures).

``total`` defaults to the sum of the first complete read (txn reads first).
Each wrong total is reported with its deviation (sum - total) and the
transfers in flight during the read whose amount equals it (the usual
culprit: a read that saw the debit of a transfer but not its credit).
Whether each observed balance could be reached by some subset of the
transfers is not checked.

Verdict: invalid if any read has a problem that counts (above); unknown if
there is no ok read or no total; otherwise valid.
"""

from __future__ import annotations

import bisect
import time as _time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from checkers.history import NEVER, Operation
from checkers.report import Anomaly, in_time_order
from checkers.result import INVALID, UNKNOWN, VALID, CheckResult, KeyResult, Witness

__all__ = ["check_bank", "BankResult", "BadRead", "TRANSFER", "read_kind", "describe_op"]

TRANSFER = "transfer"
_KINDS = {"read-txn": "txn", "final-read-txn": "txn", "read": "txn",
          "read-scan": "scan", "final-read-scan": "scan"}
#: Bad reads whose in-flight transfers are looked up (the rest are counted).
EXPLAINED = 1000
#: Bad reads the timeline page draws at most (every one is still listed).
PAGE_WITNESSES = 12
#: A bad read's first problem, as an anomaly's kind.
_KIND = {"wrong-total": "wrong total", "negative": "negative balance",
         "missing": "incomplete read", "unexpected": "incomplete read",
         "malformed": "malformed read"}


def read_kind(f: str) -> str | None:
    """"txn" or "scan" for a bank read's f, None for any other op."""
    return _KINDS.get(f)


def _secs(t: int | None, t0: int | None) -> float | None:
    return None if t is None or t0 is None else (t - t0) / 1e9


def _transfer(op: Operation) -> dict[str, Any] | None:
    v = op.input if isinstance(op.input, dict) else op.output
    return v if isinstance(v, dict) else None


def _transfer_text(op: Operation) -> str:
    v = _transfer(op) or {}
    return (f"transfer {v.get('from')}->{v.get('to')} of {v.get('amount')} "
            f"by process {op.process} ({op.status})")


@dataclass
class BadRead:
    """An ok read that breaks at least one rule."""

    op: Operation
    kind: str  # "txn" | "scan"
    at_s: float | None
    #: "wrong-total", "negative", "missing", "unexpected", "malformed"
    problems: list[str]
    #: the sum of the integer balances it returned
    sum: int | None = None
    #: sum - total, for a complete read whose total is wrong
    deviation: int | None = None
    negative: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    malformed: str | None = None
    #: transfers (ok or info) overlapping the read whose amount is |deviation|
    in_flight: list[Operation] = field(default_factory=list)
    #: False for a wrong Scan total when scans need not be snapshots
    counts: bool = True

    def line(self, total: int | None) -> str:
        op = self.op
        head = (f"{op.f} by process {op.process}" + (f" on {op.node}" if op.node else "")
                + (f" at {self.at_s:.3f} s" if self.at_s is not None else f" (event {op.call})"))
        parts = []
        if "wrong-total" in self.problems:
            parts.append(f"total {self.sum}, expected {total} ({self.deviation:+d})"
                         + ("" if self.counts else ", allowed: scans need not be snapshots"))
        if self.negative:
            parts.append(", ".join(f"account {a} has balance {b}"
                                   for a, b in self.negative.items()))
        if self.missing:
            parts.append(f"missing accounts {', '.join(self.missing)}")
        if self.unexpected:
            parts.append(f"unknown accounts {', '.join(self.unexpected)}")
        if self.malformed:
            parts.append(self.malformed)
        text = f"{head}: {'; '.join(parts)}"
        if self.in_flight:
            shown = self.in_flight[:3]
            text += ("; in flight: " + ", ".join(_transfer_text(t) for t in shown)
                     + (f" and {len(self.in_flight) - 3} more" if len(self.in_flight) > 3 else ""))
        return text

    def to_dict(self) -> dict[str, Any]:
        op = self.op
        return {"id": op.id, "f": op.f, "kind": self.kind, "process": op.process,
                "node": op.node, "call": op.call,
                "ret": None if op.ret == NEVER else int(op.ret), "at_s": self.at_s,
                "problems": self.problems, "counts": self.counts, "sum": self.sum,
                "deviation": self.deviation, "negative": self.negative,
                "missing": self.missing, "unexpected": self.unexpected,
                "malformed": self.malformed,
                "in_flight": [{"id": t.id, "process": t.process, "status": t.status,
                               "value": _transfer(t)} for t in self.in_flight]}


@dataclass
class BankResult:
    verdict: str
    reason: str | None
    elapsed: float
    total: int | None
    #: "given" | "first-read" | "none"
    total_source: str
    accounts: list[str]
    scan_snapshot: bool
    #: transfers by status {"ok": n, "fail": n, "info": n}
    transfers: dict[str, int]
    #: per kind ("txn", "scan"): ok reads, bad reads, and reads per problem
    by_kind: dict[str, dict[str, Any]]
    #: per node: ok reads and bad reads (that count)
    by_node: dict[str, dict[str, int]]
    bad_reads: list[BadRead]
    witness: BadRead | None = None

    @property
    def txn_violations(self) -> list[BadRead]:
        return [b for b in self.bad_reads if b.kind == "txn" and b.counts]

    @property
    def scan_violations(self) -> list[BadRead]:
        """Scan reads that break a rule that counts (see ``scan_snapshot``)."""
        return [b for b in self.bad_reads if b.kind == "scan" and b.counts]

    @property
    def nonsnapshot_scans(self) -> list[BadRead]:
        """Scan reads whose only fault is a wrong total, when that is allowed."""
        return [b for b in self.bad_reads if not b.counts]

    def figures(self) -> dict[str, Any]:
        return {"total": self.total, "total_source": self.total_source,
                "accounts": len(self.accounts), "transfers": dict(self.transfers),
                "ok_reads": sum(k["reads"] for k in self.by_kind.values()),
                "txn_violations": len(self.txn_violations),
                "scan_violations": len(self.scan_violations),
                "nonsnapshot_scans": len(self.nonsnapshot_scans),
                "negative_reads": sum(1 for b in self.bad_reads if b.negative),
                "incomplete_reads": sum(1 for b in self.bad_reads
                                        if b.missing or b.unexpected or b.malformed)}

    def to_dict(self, limit: int = 1000) -> dict[str, Any]:
        return {"checker": "bank", "verdict": self.verdict, "reason": self.reason,
                "elapsed": self.elapsed, "scan_snapshot": self.scan_snapshot,
                **self.figures(), "by_kind": self.by_kind, "by_node": self.by_node,
                "details": {
                    "txn_violations": [b.to_dict() for b in self.txn_violations[:limit]],
                    "scan_violations": [b.to_dict() for b in self.scan_violations[:limit]],
                    "nonsnapshot_scans": [b.to_dict() for b in self.nonsnapshot_scans[:limit]]},
                "witness": self.witness.to_dict() if self.witness else None}

    def anomalies(self) -> list[Anomaly]:
        """Every bad read that counts, at its read, in time order."""
        out = [Anomaly(_KIND[b.problems[0]], b.op, b.line(self.total))
               for b in self.bad_reads if b.counts]
        return in_time_order(out)

    def page(self, ops: int, path: str | None = None,
             limit: int = PAGE_WITNESSES) -> CheckResult:
        """The timeline page's view: the whole history's op count and, for
        each of the first ``limit`` bad reads (the witness first), the read
        and the transfers in flight while it ran."""
        counted = [b for b in self.bad_reads if b.counts]
        if self.witness is not None:
            counted = [self.witness] + [b for b in counted if b is not self.witness]
        keys = []
        for b in counted[:limit]:
            when = f" at {b.at_s:.3f} s" if b.at_s is not None else ""
            where = f" on {b.op.node}" if b.op.node else ""
            window = sorted([*b.in_flight, b.op], key=lambda op: op.call)
            saw = f"sum {b.sum}" if b.sum is not None else "no sum"
            keys.append(KeyResult(f"{b.op.f}{when}{where}", INVALID, len(window), "bank",
                                  witness=Witness(b.op, [], [], [saw], window,
                                                  b.line(self.total))))
        return CheckResult(self.verdict, "bank", ops, self.elapsed, keys, path,
                           self.reason)

    def describe(self, shown: int = 10) -> str:
        f = self.figures()
        t = self.transfers
        lines = [f"bank: {self.verdict.upper()}" + (f" ({self.reason})" if self.reason else ""),
                 f"  total {self.total} ({self.total_source}), {len(self.accounts)} accounts; "
                 f"transfers: {sum(t.values())} ({t.get('ok', 0)} ok, {t.get('fail', 0)} fail, "
                 f"{t.get('info', 0)} info); ok reads: "
                 + ", ".join(f"{v['reads']} {k}" for k, v in sorted(self.by_kind.items()))]
        for kind in ("txn", "scan"):
            v = self.by_kind.get(kind)
            if not v:
                continue
            lines.append(f"  {kind} reads: {v['bad']} bad of {v['reads']} (wrong total "
                         f"{v['wrong-total']}, negative {v['negative']}, incomplete "
                         f"{v['incomplete']}); max |deviation| {v['max_abs_deviation']}")
        if f["nonsnapshot_scans"]:
            lines.append(f"  {f['nonsnapshot_scans']} scans with a wrong total, allowed "
                         "(scan_snapshot=False)")
        nodes = ", ".join(f"{n} {v['bad']} of {v['reads']}"
                          for n, v in sorted(self.by_node.items()) if v["bad"])
        if nodes:
            lines.append(f"  bad reads by node: {nodes}")
        counted = [b for b in self.bad_reads if b.counts]
        for b in counted[:shown]:
            lines.append("  " + b.line(self.total))
        if len(counted) > shown:
            lines.append(f"  ... and {len(counted) - shown} more bad reads")
        return "\n".join(lines)


def check_bank(ops: Sequence[Operation], *, total: int | None = None,
               accounts: Sequence[Any] | None = None, scan_snapshot: bool = True,
               t0: int | None = None) -> BankResult:
    """Check the transfers and reads of a bank workload (module docstring).

    ``total``: the constant sum (default: the first complete read's sum);
    ``accounts``: every account id (default: all ids the history mentions);
    ``scan_snapshot``: whether a Scan must see one snapshot; ``t0``: time
    origin (ns) of the seconds printed (default: the first op's invocation).
    Ops that are neither transfers nor bank reads are ignored.
    """
    started = _time.perf_counter()
    if t0 is None:
        times = [op.call_time for op in ops if op.call_time is not None]
        t0 = min(times) if times else None
    transfers = [op for op in ops if op.f == TRANSFER]
    reads = [op for op in ops if op.status == "ok" and read_kind(op.f)]
    reads.sort(key=lambda r: r.ret)

    if accounts is not None:
        names = [str(a) for a in accounts]
    else:
        seen: dict[str, None] = {}
        for r in reads:
            if isinstance(r.output, dict):
                seen.update((str(a), None) for a in r.output)
        for op in transfers:
            v = _transfer(op) or {}
            for end in ("from", "to"):
                if v.get(end) is not None:
                    seen[str(v[end])] = None
        names = sorted(seen, key=lambda a: (len(a), a))  # "2" before "10"
    wanted = set(names)

    # Each read's own faults, and its sum.
    checked: list[tuple[Operation, BadRead | None, int | None]] = []
    for r in reads:
        kind = read_kind(r.f) or "txn"
        bad = BadRead(r, kind, _secs(r.call_time, t0), [])
        v = r.output
        if not isinstance(v, dict):
            bad.malformed = f"value is not a map of balances: {v!r}"[:200]
            bad.problems.append("malformed")
            checked.append((r, bad, None))
            continue
        got = {str(a): b for a, b in v.items() if b is not None}
        bad.missing = [a for a in names if a not in got]
        bad.unexpected = sorted((a for a in got if a not in wanted), key=lambda a: (len(a), a))
        nonint = {a: b for a, b in got.items() if type(b) is not int}
        if nonint:
            bad.malformed = "non-integer balances: " + ", ".join(
                f"{a}={b!r}" for a, b in list(nonint.items())[:5])
        bad.sum = sum(b for b in got.values() if type(b) is int)
        bad.negative = {a: b for a, b in got.items() if type(b) is int and b < 0}
        for name, cond in (("missing", bad.missing), ("unexpected", bad.unexpected),
                           ("malformed", bad.malformed), ("negative", bad.negative)):
            if cond:
                bad.problems.append(name)
        complete = not (bad.missing or bad.unexpected or bad.malformed)
        checked.append((r, bad, bad.sum if complete else None))

    source = "given"
    if total is None:
        source = "none"
        for want in ("txn", "scan"):
            first = next((s for r, b, s in checked if s is not None
                          and read_kind(r.f) == want), None)
            if first is not None:
                total, source = first, "first-read"
                break

    spans = _Spans(transfers)
    bad_reads: list[BadRead] = []
    by_kind: dict[str, dict[str, Any]] = {}
    by_node: dict[str, dict[str, int]] = {}
    for r, bad, s in checked:
        assert bad is not None
        if s is not None and total is not None and s != total:
            bad.deviation = s - total
            bad.problems.insert(0, "wrong-total")
        if bad.kind == "scan" and not scan_snapshot and bad.problems == ["wrong-total"]:
            bad.counts = False
        k = by_kind.setdefault(bad.kind, {"reads": 0, "bad": 0, "wrong-total": 0, "negative": 0,
                                          "incomplete": 0, "max_abs_deviation": 0})
        n = by_node.setdefault(r.node or "?", {"reads": 0, "bad": 0})
        k["reads"] += 1
        n["reads"] += 1
        if not bad.problems:
            continue
        bad_reads.append(bad)
        if bad.deviation is not None and len(bad_reads) <= EXPLAINED:
            bad.in_flight = spans.overlapping(r, abs(bad.deviation))
        if bad.counts:
            k["bad"] += 1
            n["bad"] += 1
        k["wrong-total"] += "wrong-total" in bad.problems
        k["negative"] += bool(bad.negative)
        k["incomplete"] += bool(bad.missing or bad.unexpected or bad.malformed)
        if bad.deviation is not None:
            k["max_abs_deviation"] = max(k["max_abs_deviation"], abs(bad.deviation))

    counted = [b for b in bad_reads if b.counts]
    if counted:
        verdict, reason = INVALID, None
    elif not reads:
        verdict, reason = UNKNOWN, "no ok read"
    elif total is None:
        verdict, reason = UNKNOWN, "no total given and no complete read to take it from"
    else:
        verdict, reason = VALID, None
    witness = next((b for b in counted if b.kind == "txn"), counted[0] if counted else None)
    return BankResult(verdict, reason, _time.perf_counter() - started, total, source, names,
                      scan_snapshot, dict(Counter(op.status for op in transfers)),
                      by_kind, by_node, bad_reads, witness)


class _Spans:
    """Transfers that may have been applied while a read ran."""

    def __init__(self, transfers: Sequence[Operation]) -> None:
        live = [t for t in transfers if t.status in ("ok", "info")]
        self.done = sorted((t for t in live if t.ret != NEVER), key=lambda t: t.call)
        self.calls = [t.call for t in self.done]
        self.longest = max((t.ret - t.call for t in self.done), default=0)
        self.open = sorted((t for t in live if t.ret == NEVER), key=lambda t: t.call)

    def overlapping(self, r: Operation, amount: int) -> list[Operation]:
        lo = bisect.bisect_left(self.calls, r.call - self.longest)
        hi = bisect.bisect_left(self.calls, r.ret)
        out = [t for t in self.done[lo:hi] if t.ret > r.call and _amount(t) == amount]
        out += [t for t in self.open if t.call < r.ret and _amount(t) == amount]
        out.sort(key=lambda t: t.call)
        return out


def describe_op(op: Operation) -> str:
    """A bank op as the timeline labels it."""
    if op.f == TRANSFER:
        v = _transfer(op) or {}
        return f"transfer {v.get('from')}->{v.get('to')} {v.get('amount')}"
    if op.status != "ok" or not isinstance(op.output, dict):
        return f"{op.f} ({op.status})"
    total = sum(b for b in op.output.values() if type(b) is int)
    return f"{op.f} -> total {total}"


def _amount(op: Operation) -> Any:
    return (_transfer(op) or {}).get("amount")
