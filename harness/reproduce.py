"""Whether a replay found the original run's anomaly again.

An anomaly is known by its signature: its kind (stale read, lost item, not
linearizable, wrong total...), the kind of op that showed it (``read-scan``,
``get``), and the fault window it fell in (the n-th window of the run, the
overlapping faults of one window counted once).  A replay reproduces the
original when it shows a signature the original showed; the same kind on the
same kind of op in another window is reported too, as a near miss: the bug
came back, the timing did not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from checkers import importers
from checkers.stats import merge_spans


@dataclass(frozen=True)
class Signature:
    kind: str
    f: str | None
    #: the fault window (0 the first) the anomaly's op began in; None: outside any
    window: int | None

    def __str__(self) -> str:
        where = (f"in fault window {self.window + 1}" if self.window is not None
                 else "outside the fault windows")
        return f"{self.kind} on {self.f or 'an op'} {where}"


def signatures(run: Path) -> set[Signature]:
    """The signatures of a run folder's anomalies (results.json, its history
    for each op's kind, schedule.jsonl for the windows)."""
    results = json.loads((run / "results.json").read_text())
    anomalies = results.get("anomalies") or []
    if not anomalies:
        return set()
    ops = {op.id: op.f for op in
           importers.load(str(run / "history.jsonl"), "jsonl").operations()}
    windows = fault_windows(run / "schedule.jsonl")
    return {Signature(a.get("kind", "?"), ops.get(a.get("op")),
                      _window(windows, a.get("at_s"))) for a in anomalies}


def fault_windows(schedule: Path) -> list[tuple[float, float]]:
    """The run's fault windows in seconds, overlapping fault intervals merged:
    faults started together are one window."""
    spans: list[tuple[float, float]] = []
    open_at: dict[str, float] = {}
    end = 0.0
    for line in schedule.read_text().splitlines() if schedule.exists() else []:
        event = json.loads(line)
        at, (kind, _, fault) = float(event["at_s"]), str(event["f"]).partition("-")
        end = max(end, at)
        if kind == "start" and "error" not in (event.get("value") or {}):
            open_at[fault] = at
        elif kind == "stop" and fault in open_at:
            spans.append((open_at.pop(fault), at))
    spans += [(start, end) for start in open_at.values()]
    return merge_spans(spans)


def _window(windows: list[tuple[float, float]], at: float | None) -> int | None:
    if at is None:
        return None
    return next((i for i, (start, stop) in enumerate(windows) if start <= at <= stop), None)


@dataclass(frozen=True)
class Match:
    """How a replay compares with the original."""

    reproduced: bool
    #: what it found: the reproduced signature, a near miss, or what it found instead
    text: str


def compare(original: set[Signature], replay: set[Signature]) -> Match:
    if same := sorted(original & replay, key=str):
        return Match(True, f"reproduced: {same[0]}")
    near = sorted((s for s in replay if any((s.kind, s.f) == (o.kind, o.f) for o in original)),
                  key=str)
    if near:
        return Match(False, f"the same anomaly in another window: {near[0]}")
    if replay:
        return Match(False, f"another anomaly: {sorted(replay, key=str)[0]}")
    return Match(False, "no anomaly")
