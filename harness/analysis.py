"""Check a run's history and write its report: verdict, figures, plots, timeline.

Works on a results folder alone (``history.jsonl`` and ``test.json``), so a
saved run can be re-analysed offline: ``faultline analyse DIR``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from checkers import importers
from checkers.check import check_histories
from checkers.history import NEMESIS
from checkers.models import get_model
from checkers.report import key_lines
from checkers.result import INVALID, UNKNOWN, VALID, CheckResult, KeyResult, Witness, combine
from checkers.timeline import write_html
from harness.spec import TestSpec


def analyse(spec: TestSpec, directory: Path) -> tuple[str, dict[str, Any]]:
    """Run every checker that applies; returns the verdict and results.json's body."""
    history = importers.load(str(directory / "history.jsonl"), "jsonl")
    ops = history.operations()
    nemesis_events = [e for e in history.events if e.process == NEMESIS]
    t0 = min((e.time for e in history.events if e.time is not None), default=None)
    results: dict[str, Any] = {"workload": spec.workload, "ops": len(ops)}
    verdicts: list[str] = []
    lines: list[str] = []

    if spec.workload == "register":
        history.model = "dynamo-item"
        [res] = check_histories([history], model="dynamo-item")
        verdicts.append(res.verdict)
        results["linearizable"] = {
            "verdict": res.verdict, "keys": len(res.keys),
            "invalid_keys": [str(k.key) for k in res.keys if k.verdict == INVALID],
            "unknown_keys": {str(k.key): k.reason for k in res.keys if k.verdict == UNKNOWN},
            "witnesses": [k.witness.explanation for k in res.keys if k.witness]}
        fails = [k.witness.failing_op.call_time for k in res.keys
                 if k.witness and k.witness.failing_op.call_time is not None]
        if fails and t0 is not None:
            results["first_anomaly_s"] = (min(fails) - t0) / 1e9
        describe = get_model("dynamo-item").describe_op
        lines += [f"linearizability: {res.verdict.upper()} over {len(res.keys)} keys",
                  *key_lines(res, describe)]
        write_html(directory / "timeline.html", [res], title=f"{spec.test_name}",
                   describe=describe)
    elif spec.workload == "set":
        from checkers.set_checker import check_set

        res = check_set(ops, t0=t0)
        verdicts.append(res.verdict)
        results["set"] = res.to_dict()
        stale_at = [r.at_s for r in res.stale_reads if r.at_s is not None]
        if stale_at:
            results["first_anomaly_s"] = min(stale_at)
        lines.append(res.describe())
        _set_timeline(directory, spec, res)
    else:
        from checkers.bank import check_bank

        from harness.workloads import make_workload

        wl = make_workload("bank", spec.workload_options)
        bank = check_bank(ops, total=wl.total, accounts=wl.names, t0=t0)
        verdicts.append(bank.verdict)
        results["bank"] = bank.to_dict()
        lines.append(bank.describe())

    from checkers.perf import latency_summary, plot_all
    from checkers.stats import compute_stats

    end = max((e.time for e in history.events if e.time is not None), default=None)
    results["stats"] = compute_stats(ops, nemesis_events, t0=t0, end=end).to_dict()
    results["latency"] = latency_summary(ops)
    results["plots"] = [p.name for p in plot_all(ops, nemesis_events, directory, t0=t0,
                                                 title=spec.test_name)]
    verdict = combine(verdicts) if verdicts else VALID
    results["summary"] = lines
    (directory / "summary.txt").write_text("\n".join(lines) + "\n")
    return verdict, results


def _set_timeline(directory: Path, spec: TestSpec, res: Any) -> None:
    """The set witness drawn like a linearizability witness: the adds it
    missed, acknowledged before the read began, and the read."""
    w = res.witness
    keys = []
    if w is not None:
        failing = w.reads[0]
        window = sorted([*w.adds, *w.reads], key=lambda op: op.call)
        keys.append(KeyResult("set", INVALID, len(window), "set", witness=Witness(
            failing_op=failing, linearized=sorted(w.adds, key=lambda op: op.ret),
            states_after=[f"has {a.input}" for a in sorted(w.adds, key=lambda op: op.ret)],
            states=[_brief(w.elements)], window=window,
            explanation=w.explanation)))
    page = CheckResult(res.verdict, "set", len(keys and keys[0].witness.window or []),
                       res.elapsed, keys, str(directory / "history.jsonl"))
    write_html(directory / "timeline.html", [page], title=spec.test_name,
               describe=_describe_set_op)


def _brief(elements: list[Any], shown: int = 8) -> str:
    more = f" and {len(elements) - shown} more" if len(elements) > shown else ""
    return ", ".join(map(str, elements[:shown])) + more


def _describe_set_op(op: Any) -> str:
    if op.f == "add":
        return f"add {op.input}"
    got = op.output if isinstance(op.output, list) else []
    return f"{op.f} -> {len(got)} elements" if op.status == "ok" else f"{op.f} ({op.status})"


def write_results(directory: Path, verdict: str, seed: int | None,
                  results: dict[str, Any]) -> None:
    (directory / "results.json").write_text(json.dumps(
        {"verdict": verdict, "seed": seed, **results}, indent=2, default=str))


def saved_spec(directory: Path) -> TestSpec:
    """The spec a results folder was run with (its test.json)."""
    data = json.loads((directory / "test.json").read_text())
    return TestSpec(**data["spec"])
