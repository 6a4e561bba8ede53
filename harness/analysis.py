"""Check a run's history and write its report: verdict, figures, plots, timeline.

Works on a results folder alone (``history.jsonl`` and ``test.json``), so a
saved run can be re-analysed offline: ``faultline analyse DIR``.  Every time
the report shows is seconds since the test started, the origin the runner
recorded in ``test.json`` (``t0_ns``, monotonic ns), so a re-analysis shows
the same times as the run did.  The workload carries its checker
(:meth:`harness.workloads.Workload.check`), which judges reads strictly or,
with the spec's ``max_staleness_ms`` (``--max-staleness``, which ``analyse``
may set anew on a saved run), by bounded staleness.  What follows is the
same for all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from checkers import importers
from checkers.availability import availability
from checkers.history import History
from checkers.perf import latency_summary, plot_all
from checkers.report import Anomaly
from checkers.stats import Interval, compute_stats, nemesis_intervals
from checkers.timeline import RunOverview, write_html
from harness.spec import TestSpec
from harness.workloads import make_workload

#: Anomalies results.json lists at most (``anomaly_count`` has them all).
LISTED_ANOMALIES = 1000
#: Fault windows summary.txt lists at most.
LISTED_FAULTS = 8


def analyse(spec: TestSpec, directory: Path) -> tuple[str, dict[str, Any]]:
    """Run the workload's checker and the figures; returns the verdict and
    results.json's body, and writes summary.txt, the plots and timeline.html."""
    history = importers.load(str(directory / "history.jsonl"), "jsonl")
    ops = history.operations()
    nemesis_events = history.nemesis_events()
    t0 = run_origin(directory, history)
    end = max((e.time for e in history.events if e.time is not None), default=t0)
    outcome = make_workload(spec.workload, spec.workload_options).check(
        ops, t0, history.path, max_staleness_ms=spec.max_staleness_ms)
    faults = nemesis_intervals(nemesis_events, end=end)
    anomalies = outcome.anomalies
    for group in outcome.results.get("staleness", {}).get("by_read", {}).values():
        if group.get("family"):
            group["path"] = spec.read_path_of(group["family"])

    results: dict[str, Any] = {"workload": spec.workload, "ops": len(ops), "t0_ns": t0,
                               "duration_s": _at(end, t0), **outcome.results,
                               "anomaly_count": len(anomalies),
                               "anomalies": [a.to_dict(t0) for a in anomalies[:LISTED_ANOMALIES]]}
    first = next((a for a in anomalies if a.time is not None), None)
    if first is not None:
        results["first_anomaly_s"] = _at(first.time, t0)
    results["stats"] = compute_stats(ops, nemesis_events, t0=t0, end=end).to_dict()
    unavailable = availability(ops, nemesis_events, t0=t0, end=end,
                               until=None if t0 is None else t0 + int(spec.time_limit * 1e9),
                               concurrency=spec.concurrency)
    results["availability"] = unavailable.to_dict()
    results["latency"] = latency_summary(ops)
    if (lease := lease_counts(directory)) is not None:
        results["lease"] = lease
    results["plots"] = [p.name for p in plot_all(ops, nemesis_events, directory, t0=t0,
                                                 title=spec.test_name, anomalies=anomalies)]
    if t0 is not None and end is not None:
        run = RunOverview(len(ops), t0, end, faults, anomalies)
    else:
        run = None
    write_html(directory / "timeline.html", outcome.timeline, title=spec.test_name,
               describe=outcome.describe, run=run)
    lines = _run_lines(len(ops), t0, end, faults, first) + unavailable.lines() + outcome.summary
    results["summary"] = lines
    (directory / "summary.txt").write_text("\n".join(lines) + "\n")
    return outcome.verdict, results


def lease_counts(directory: Path) -> dict[str, Any] | None:
    """The nodes' lease reads from nodes.json (their status after the final
    reads): hits, misses (a ReadIndex round instead) and the hit rate, overall
    and per node (every Raft group's together); counted since each node last
    started.  None for a run saved
    without it."""
    try:
        nodes = json.loads((directory / "nodes.json").read_text())
    except (OSError, ValueError):
        return None
    def leases(st: dict[str, Any]) -> list[dict[str, Any]]:
        """Every Raft group's lease on the node (its one group's, unsharded)."""
        groups = st.get("groups") if isinstance(st.get("groups"), list) else [st]
        return [g["lease"] for g in groups if isinstance(g, dict) and isinstance(g.get("lease"), dict)]

    by_node = {nid: {k: sum(lease.get(k, 0) for lease in leases(st)) for k in ("hits", "misses")}
               for nid, st in sorted(nodes.items())
               if isinstance(st, dict) and leases(st)}
    hits = sum(n["hits"] for n in by_node.values())
    misses = sum(n["misses"] for n in by_node.values())
    return {"hits": hits, "misses": misses,
            "hit_rate": hits / (hits + misses) if hits + misses else None, "by_node": by_node}


def run_origin(directory: Path, history: History) -> int | None:
    """When the test started (monotonic ns): test.json's ``t0_ns``, or for a
    run saved before it was recorded, the history's first time."""
    try:
        t0 = json.loads((directory / "test.json").read_text()).get("t0_ns")
    except (OSError, ValueError):
        t0 = None
    if isinstance(t0, int):
        return t0
    return min((e.time for e in history.events if e.time is not None), default=None)


def _at(t: int | None, t0: int | None) -> float | None:
    return None if t is None or t0 is None else (t - t0) / 1e9


def _run_lines(n_ops: int, t0: int | None, end: int | None, faults: list[Interval],
               first: Anomaly | None) -> list[str]:
    """summary.txt's head: the run on its clock, its faults, its first anomaly
    and the fault windows it fell in."""
    length = _at(end, t0)
    lines = [f"run: {n_ops:,} ops over {length or 0:.1f} s "
             "(times are seconds since the test started)"]

    def window(iv: Interval) -> str:
        stop = _at(iv.end, t0)
        return f"{iv.label} {_at(iv.start, t0):.1f}-" + (f"{stop:.1f} s" if stop is not None
                                                        else "end")
    if faults:
        shown = ", ".join(window(iv) for iv in faults[:LISTED_FAULTS])
        more = f" and {len(faults) - LISTED_FAULTS} more" if len(faults) > LISTED_FAULTS else ""
        lines.append(f"faults: {shown}{more}")
    if first is not None and first.time is not None:
        during = [window(iv) for iv in faults
                  if iv.start <= first.time < iv.end_or(end or iv.start)]
        node = f" on {first.op.node}" if first.op.node else ""
        lines.append(f"first anomaly: {first.kind}{node} at {_at(first.time, t0):.3f} s, "
                     + (f"during {', '.join(during)}" if during else "while no fault was active"))
    return lines


def write_results(directory: Path, verdict: str, seed: int | None,
                  results: dict[str, Any]) -> None:
    (directory / "results.json").write_text(json.dumps(
        {"verdict": verdict, "seed": seed, **results}, indent=2, default=str))


def saved_spec(directory: Path) -> TestSpec:
    """The spec a results folder was run with (its test.json)."""
    data = json.loads((directory / "test.json").read_text())
    return TestSpec(**data["spec"])
