"""Verdicts and witnesses as text a person reads in a terminal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

from checkers.history import NEVER, Operation
from checkers.result import INVALID, VALID, CheckResult, KeyResult, Witness

#: How many ops of a window or prefix to print before eliding the rest.
SHOWN = 12


@dataclass(frozen=True)
class Anomaly:
    """One thing a checker found wrong, tied to the op that shows it, so that
    the plots and the timeline can place it in time next to the faults."""

    #: what went wrong: "stale read", "lost", "not linearizable", "wrong total", ...
    kind: str
    op: Operation
    #: one line a person reads
    text: str

    @property
    def time(self) -> int | None:
        """When it showed: the op's invocation (monotonic ns)."""
        return self.op.call_time

    def to_dict(self, t0: int | None) -> dict[str, Any]:
        at = None if self.time is None or t0 is None else (self.time - t0) / 1e9
        return {"kind": self.kind, "at_s": at, "node": self.op.node, "op": self.op.id,
                "process": self.op.process, "text": self.text}


def in_time_order(anomalies: Iterable[Anomaly]) -> list[Anomaly]:
    """Anomalies by when they showed; those with no time last."""
    return sorted(anomalies, key=lambda a: (a.time is None, a.time or 0))


def summary_line(r: CheckResult, path: str) -> str:
    return f"{path}  {r.verdict.upper()}  {r.ops} ops  {r.elapsed:.3f} s  (model {r.model})"


def key_lines(r: CheckResult, describe: Callable[[Operation], str]) -> list[str]:
    """Per-key verdicts: a count of valid keys, then each other key in full."""
    lines: list[str] = []
    if len(r.keys) > 1:
        n_valid = sum(1 for k in r.keys if k.verdict == VALID)
        lines.append(f"  keys: {len(r.keys)} ({n_valid} valid, "
                     f"{len(r.keys) - n_valid} not)")
    for k in r.failures:
        lines.extend(key_detail(k, describe))
    return lines


def key_detail(k: KeyResult, describe: Callable[[Operation], str]) -> list[str]:
    head = (f"  key {k.key!r}: {k.verdict.upper()} ({k.algorithm}, {k.ops} ops, "
            f"{k.explored:,} states, {k.elapsed:.3f} s)")
    if k.verdict != INVALID or k.witness is None:
        return [head, f"    reason: {k.reason}"] if k.reason else [head]
    return [head, *("    " + line for line in witness_lines(k.witness, describe))]


def witness_lines(w: Witness, describe: Callable[[Operation], str]) -> list[str]:
    lines = [w.explanation,
             f"cannot place: {op_line(w.failing_op, describe)}",
             f"states the register could have been in: {', '.join(w.states) or 'none'}",
             f"longest linearizable prefix: {len(w.linearized)} ops"]
    shown = list(zip(w.linearized, w.states_after))[-SHOWN:]
    if len(w.linearized) > SHOWN:
        lines.append(f"  ... {len(w.linearized) - SHOWN} earlier ops")
    lines += [f"  {op_line(op, describe)}  => {state}" for op, state in shown]
    lines.append(f"failing window: {len(w.window)} ops")
    window = w.window if len(w.window) <= 2 * SHOWN else w.window[-2 * SHOWN:]
    if len(window) < len(w.window):
        lines.append(f"  ... {len(w.window) - len(window)} earlier ops")
    for op in window:
        mark = "  <-- cannot be placed" if op is w.failing_op else ""
        lines.append(f"  {op_line(op, describe)}{mark}")
    return lines


def op_line(op: Operation, describe: Callable[[Operation], str]) -> str:
    ret = "..." if op.ret == NEVER else str(int(op.ret))
    node = f" on {op.node}" if op.node else ""
    return (f"[{op.call}-{ret}] process {op.process}{node}: {describe(op)} "
            f"({op.status})")
