"""What ``faultline shrink`` shrinks, which checker judges it, where it goes.

A results folder (``history.jsonl`` and ``test.json``) is judged by its
workload's own checker, with the run's options, time origin and staleness
bound, as ``faultline analyse`` judges it.  A bare history file is judged
as ``faultline check`` judges it (linearizability, with the model its
format and ops imply, or the one named), unless a set or bank workload is
named (its checker, with the workload's default options).  The workloads
and the analysis are imported only when a check needs them, so shrinking a
bare register history loads neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from checkers import importers
from checkers.check import check_ops, model_for
from checkers.history import Event, History, Operation, write_jsonl
from checkers.models import Model, get_model, infer_model
from checkers.report import Anomaly, key_lines, summary_line
from checkers.shrink import Judge, Outcome, Rules, Shrunk, rules_for, sub_history

#: A checker: ops in, with the path its report names.
Check = Callable[[list[Operation], str | None], Outcome]
#: The name of the anomaly linearizability reports, as the register workload's.
NOT_LINEARIZABLE = "not linearizable"
#: The model of the harness's register workload.
RUN_MODEL = "dynamo-item"


@dataclass
class Source:
    """A history to shrink, its checker, and where its shrunk form goes."""

    path: Path
    events: list[Event]
    ops: list[Operation]
    workload: str
    check: Check
    #: the register's model (None for the set and bank)
    model: Model | None
    #: the default output: shrunk.jsonl in the run folder or beside the file
    out: Path
    #: what ``faultline check`` would judge differently: the run's own options
    caveat: str = ""

    def judge(self) -> Judge:
        return lambda ops: self.check(ops, str(self.path))

    def rules(self, ops: list[Operation], target: Anomaly) -> Rules:
        return rules_for(self.workload, ops, target, self.model)

    def check_command(self, out: Path, ops: list[Operation]) -> str:
        """How to judge the shrunk history (``ops``, written to ``out``) on its
        own: ``faultline check`` for linearizability (naming the model when
        the file alone would imply another), a shrink of it for the set and bank."""
        if self.model is None:
            return f"faultline check --workload {self.workload} {out}{self.caveat}"
        implied = infer_model({op.f for op in ops}, "jsonl")
        flag = "" if implied == self.model.name else f"--model {self.model.name} "
        return f"faultline check {flag}{out}{self.caveat}"


def open_source(path: str, workload: str | None = None, model: str | None = None) -> Source:
    """Load a results folder or a history file, with the checker that judges it
    (``model``: a history file's register model; a run's is its workload's).

    ``OSError``, ``ValueError`` (``HistoryError``: names the file and line)
    or ``KeyError`` when it cannot be read.
    """
    p = Path(path)
    if p.is_dir():
        from harness.analysis import run_origin, saved_spec
        from harness.workloads import make_workload

        spec = saved_spec(p)
        history = importers.load(str(p / "history.jsonl"), "jsonl")
        name = workload or spec.workload
        t0 = run_origin(p, history)
        runs = make_workload(name, spec.workload_options)

        def run_check(ops: list[Operation], label: str | None) -> Outcome:
            return runs.check(ops, t0, label, max_staleness_ms=spec.max_staleness_ms)
        ops = history.operations()
        reg = get_model(RUN_MODEL) if name == "register" else None
        changed = [what for what, on in (
            ("workload options", spec.workload_options and reg is None),
            ("a staleness bound", spec.max_staleness_ms is not None)) if on]
        caveat = (f"  (judged without what this run had: {' and '.join(changed)})"
                  if changed else "")
        return Source(p / "history.jsonl", history.events, ops, name, run_check, reg,
                      p / "shrunk.jsonl", caveat)
    history = importers.load(str(p))
    ops = history.operations()
    out = p.with_name("shrunk.jsonl")
    if workload in (None, "register"):
        reg = model_for(history, ops, model)
        if workload is None:
            _fits(reg, ops, p)
        return Source(p, history.events, ops, "register", linearizability(reg), reg, out)
    return Source(p, history.events, ops, workload, workload_check(workload, history), None,
                  out)


def workload_check(workload: str, history: History) -> Check:
    """A history file judged by a workload's own checker with its default
    options (a set or bank history, which linearizability cannot judge),
    times counted from the history's first."""
    from harness.workloads import make_workload

    w = make_workload(workload)
    t0 = min((e.time for e in history.events if e.time is not None), default=None)
    return lambda ops, label: w.check(ops, t0, label)


def _fits(model: Model, ops: list[Operation], path: Path) -> None:
    """A history file's ops fit the model implied, or ``ValueError`` says
    that its workload must be named."""
    try:
        for op in ops:
            model.keep(op)
    except ValueError as e:
        raise ValueError(f"{path}: {e}; a set or bank history needs --workload") from None


def linearizability(model: Model) -> Check:
    """``faultline check``'s judgement of a history, in a workload's terms:
    each invalid key's witness is an anomaly at the op it cannot place."""
    from harness.workloads import CheckOutcome

    def check(ops: list[Operation], label: str | None) -> Outcome:
        res = check_ops(ops, model.name, path=label)
        anomalies = [Anomaly(NOT_LINEARIZABLE, k.witness.failing_op, k.witness.explanation)
                     for k in res.failures if k.witness is not None]
        lines = [summary_line(res, label or "-"), *key_lines(res, model.describe_op)]
        return CheckOutcome(res.verdict, {}, lines, anomalies, [res], model.describe_op)
    return check


def write_shrunk(source: Source, shrunk: Shrunk, out: Path) -> Outcome:
    """Write the sub-history to ``out`` (JSONL) and its witness beside it
    (``.html``); the witness is the checker's judgement of the file as
    written, read back."""
    from checkers.timeline import write_html

    write_jsonl(out, sub_history(source.events, shrunk.ops))
    ops = importers.load(str(out), "jsonl").operations()
    outcome = source.check(ops, str(out))
    write_html(out.with_suffix(".html"), outcome.timeline, title=f"faultline shrink {out}",
               describe=outcome.describe)
    return outcome
