"""Shrink a failing history to a small sub-history that fails the same way.

A sub-history keeps some ops whole, each with its invoke and its
completion (an ``info`` op is kept or removed like any other), and nothing
else: no op is edited but a set read's projection (below), so every op of
the result happened as recorded.
Nemesis events are left out: no checker reads them, and the ops keep their
times, so the run's timeline shows which faults were in effect.

*The same way*: the checker (the workload's own, passed in as a judge) still
reports the anomaly kept (of the first few, the one that needs the fewest
ops: :func:`_cheapest`), and reports no anomaly the full history did not.  An anomaly is known by its kind and its
op (a stale read, a lost element, a wrong total at that read); for
linearizability, by its key, since which op a search blames depends on the
ops around it.  The bank's also by whether transfers in flight explain its
deviation, so a shrunk bad read keeps one that does.

*Honest removals*: removing ops can manufacture an anomaly of its own (a read
whose write was removed returns a value nobody wrote).  Each workload's
:class:`Rules` says which ops a kept op cannot go without, and removing an
op removes the ops that need it too:

- register, every written value distinct (the harness's, Porcupine-style
  histories of unique writes): a read of ``v`` and a cas from ``v`` need
  ``v``'s writer; a cas whose failure says the value differed from ``v``
  needs, once ``v``'s writer is kept, every write that may have come between
  them.  Then any linearization of the full key, with the removed ops left
  out, linearizes the sub-history: its anomaly is the history's own.
- register, values written more than once (Knossos's small integers): only
  ops that change nothing (reads, failed ops) can go; every write stays.
- set: an add needs the other adds of its element, and every read is
  projected onto the elements whose adds are kept (the one edit a shrink
  makes, as Elle projects a history onto keys): an element whose add was
  removed is then no phantom, and a stale read still misses what it missed
  of the kept adds.  Without it, a read late in a run keeps hundreds of
  adds for the elements it returned.
- bank: a read is judged alone (the total and accounts are the workload's).

The search, fastest first: keep the ops of the failing key (register) or all
(set, bank); start from the first witness's window with what it needs, else
that with the ops concurrent with it, else everything; then delta debugging
(:mod:`checkers.ddmin`) with the judge as the test.  Ops the target itself
needs (the stale read and its elements' adds) are kept as a block, outside
the minimisation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Hashable, Iterable, Protocol, Sequence

from checkers.ddmin import DDMin
from checkers.history import NEVER, NEMESIS, Event, Operation, freeze
from checkers.models import Model
from checkers.report import Anomaly
from checkers.result import INVALID, CheckResult, Witness
from checkers.set_checker import ADD, is_read

class ShrinkError(ValueError):
    """A history that cannot be shrunk the way the module doc promises."""


#: Anomalies weighed as the one to keep (see :func:`_cheapest`).
CANDIDATES = 20


class Outcome(Protocol):
    """What a judge returns: :class:`harness.workloads.CheckOutcome`'s shape."""

    verdict: str
    anomalies: list[Anomaly]
    timeline: list[CheckResult]
    summary: list[str]
    describe: Callable[[Operation], str]


#: A workload's checker: ops (a whole history or a sub-history) in, verdict out.
Judge = Callable[[list[Operation]], Outcome]


@dataclass
class Rules:
    """How a workload's anomalies are named and what a kept op needs.

    ``pool``: the ops a shrink chooses from (all of them, or the failing
    key's).  ``pinned``: whether an anomaly is named by its op, which must
    then stay.
    """

    pool: list[Operation]
    pinned = True

    def signature(self, a: Anomaly, outcome: Outcome) -> Hashable:
        return (a.kind, a.op.id)

    def needs(self, op: Operation, kept: set[int]) -> Iterable[int]:
        """Ids of the pool's ops that ``op`` cannot be kept without, among
        the ops ``kept`` (ids)."""
        return ()

    def fixed(self) -> set[int]:
        """Ids of the ops that are never removed."""
        return set()

    def view(self, ops: list[Operation]) -> list[Operation]:
        """The sub-history as its checker sees it: ``ops`` as they are."""
        return ops


@dataclass
class RegisterRules(Rules):
    """One key of a register; see the module doc for what an op needs."""

    model: Model
    pinned = False

    def __post_init__(self) -> None:
        m = self.model
        self._mutating = [op for op in self.pool if m.keep(op) and not m.readonly(op)]
        self._writer = _unique_writers(m, self._mutating)
        self._between: dict[int, set[int]] = {}

    def signature(self, a: Anomaly, outcome: Outcome) -> Hashable:
        return (a.kind, a.op.key)

    def fixed(self) -> set[int]:
        return set() if self._writer is not None else {op.id for op in self._mutating}

    def needs(self, op: Operation, kept: set[int]) -> Iterable[int]:
        if self._writer is None or not self.model.keep(op):
            return ()
        r = self.model.as_register(op)  # type: ignore[attr-defined]
        w = _get(self._writer, r.expect) if r.kind != "write" else None
        if w is None:
            return ()
        if op.status != "fail":
            return (w.id,)
        # a failed cas that found another value than w's: some write between
        return self._written_between(w, op) if w.id in kept else ()

    def _written_between(self, w: Operation, c: Operation) -> set[int]:
        """The writes that may take effect after ``w`` and before ``c``."""
        if c.id not in self._between:
            self._between[c.id] = {x.id for x in self._mutating
                                   if x.call < c.ret and x.ret > w.call
                                   and x.id not in (w.id, c.id)}
        return self._between[c.id]


def _get(writer: dict[Any, Operation], value: Any) -> Operation | None:
    try:
        return writer.get(value)
    except TypeError:  # an unhashable value nobody could have written
        return None


def _unique_writers(model: Model, mutating: list[Operation]) -> dict[Any, Operation] | None:
    """Each written value's only writer; None unless every op is a register
    op and every value is written once and is not nil."""
    as_register = getattr(model, "as_register", None)
    if as_register is None:
        return None
    writer: dict[Any, Operation] = {}
    try:
        for op in mutating:
            r = as_register(op)
            if r is None or r.value is None or r.value in writer:
                return None
            writer[r.value] = op
    except TypeError:  # an unhashable value
        return None
    return writer


@dataclass
class SetRules(Rules):
    """The set: an add needs its element's other adds, and a read is seen
    through the elements kept (:meth:`view`)."""

    def __post_init__(self) -> None:
        self._adds: dict[Any, list[int]] = {}
        for op in self.pool:
            if op.f == ADD:
                self._adds.setdefault(_element(op), []).append(op.id)

    def needs(self, op: Operation, kept: set[int]) -> Iterable[int]:
        if op.f == ADD:
            return self._adds.get(_element(op), ())
        return ()

    def view(self, ops: list[Operation]) -> list[Operation]:
        """Each ok read projected onto the elements whose adds are kept: the
        set restricted to those elements, as Elle projects a history onto
        keys.  A read keeps the order of what it returned; an element whose
        add was removed is not a phantom, and what the read missed of the
        kept adds, it still misses.  An element nobody added stays: it is a
        phantom in the whole history too, and may be the anomaly kept."""
        kept = {_element(op) for op in ops if op.f == ADD}
        removed = self._adds.keys() - kept
        return [replace(op, output=[e for e in op.output if freeze(e) not in removed])
                if is_read(op.f) and op.status == "ok" and isinstance(op.output, (list, tuple))
                else op for op in ops]


def _element(op: Operation) -> Any:
    return freeze(op.input if op.input is not None else op.output)


@dataclass
class BankRules(Rules):
    """The bank: a bad read is the same if in-flight transfers still explain
    its deviation (or still do not)."""

    def signature(self, a: Anomaly, outcome: Outcome) -> Hashable:
        explained = any(len(w.window) > 1 for w in _witnesses(outcome)
                        if w.failing_op.id == a.op.id)
        return (a.kind, a.op.id, explained)


def rules_for(workload: str, ops: list[Operation], target: Anomaly,
              model: Model | None = None) -> Rules:
    """The rules of a workload, over the ops a shrink of ``target`` keeps from
    (``model``: the register's)."""
    if workload == "register":
        assert model is not None
        key = target.op.key
        return RegisterRules([op for op in ops if op.key == key], model)
    return {"set": SetRules, "bank": BankRules}[workload](ops)


# ------------------------------------------------------------------- search

@dataclass
class Shrunk:
    """A shrink's result: the full history's verdict and size, the anomaly
    kept and the sub-history (empty when there was nothing to shrink)."""

    verdict: str
    before: int
    ops: list[Operation] = field(default_factory=list)
    target: Anomaly | None = None
    #: ops the minimisation started from (with the pinned block)
    start: int = 0
    #: checks the minimisation ran
    tests: int = 0
    #: seconds per phase, in order
    phases: dict[str, float] = field(default_factory=dict)


class _Clock:
    def __init__(self, phases: dict[str, float]) -> None:
        self.phases, self.t = phases, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = now - self.t
        self.t = now


def shrink(ops: list[Operation], judge: Judge,
           make_rules: Callable[[list[Operation], Anomaly], Rules]) -> Shrunk:
    """Shrink ``ops`` (a whole history, paired) to a sub-history that fails
    ``judge`` the same way (module doc).  Removing a chunk of ops removes the
    ops that cannot stand without them too; the result is 1-minimal over the
    ops the search considered: without any one of them (and what needs it)
    it passes, or fails otherwise."""
    result = Shrunk("", len(ops))
    clock = _Clock(result.phases)
    outcome = judge(ops)  # the whole history: every set read's elements have their adds
    result.verdict = outcome.verdict
    clock.lap("check")
    if outcome.verdict != INVALID:
        return result
    target, window, rules = _cheapest(ops, outcome, make_rules)
    goal = rules.signature(target, outcome)
    known = {rules.signature(a, outcome) for a in outcome.anomalies}

    def fails(kept: list[Operation]) -> bool:
        out = judge(rules.view(kept))
        if out.verdict != INVALID:
            return False
        found = {rules.signature(a, out) for a in out.anomalies}
        return goal in found and found <= known

    by_id = {op.id: op for op in rules.pool}
    block = _closed(rules, by_id, rules.fixed() | ({target.op.id} if rules.pinned else set()))
    start = _focus(rules, by_id, block | ({op.id for op in window} & by_id.keys()), fails)
    clock.lap("focus")
    pinned = [by_id[i] for i in block]

    def whole(part: list[Operation]) -> list[Operation]:
        return _kernel(rules, _in_call_order(pinned + part))
    search = DDMin(lambda part: fails(whole(part)))
    kept = whole(search.minimise(_in_call_order(by_id[i] for i in start - block)))
    if not fails(kept):
        raise ShrinkError(f"no sub-history shows the {target.kind} the way the whole history "
                          "does, not even all of it: nothing written")
    result.ops = rules.view(kept)
    result.target, result.start, result.tests = target, len(start), search.tests
    clock.lap("ddmin")
    return result


def _cheapest(ops: list[Operation], outcome: Outcome,
              make_rules: Callable[[list[Operation], Anomaly], Rules]
              ) -> tuple[Anomaly, list[Operation], Rules]:
    """The anomaly to keep: of the first :data:`CANDIDATES`, the one whose own
    block (the ops it cannot go without) is smallest, the first witness's on
    a tie.  A stale set read returns every element added before it, and each
    needs its add: the earliest stale read costs tens of ops, the worst one
    (the first witness) hundreds."""
    first, window = _target(outcome)
    best = (first, window, make_rules(ops, first))
    size = _block_size(best[2], first)
    for a in outcome.anomalies[:CANDIDATES]:
        if a is first:
            continue
        rules = make_rules(ops, a)
        if (n := _block_size(rules, a)) < size:
            best, size = (a, [], rules), n
    return best


def _block_size(rules: Rules, target: Anomaly) -> int:
    by_id = {op.id: op for op in rules.pool}
    return len(_closed(rules, by_id, rules.fixed() | ({target.op.id} if rules.pinned
                                                      else set())))


def _target(outcome: Outcome) -> tuple[Anomaly, list[Operation]]:
    """The anomaly the first witness shows (its failing op, else an op of its
    window), and that window."""
    for w in _witnesses(outcome):
        in_window = {op.id for op in w.window}
        shown = (next((a for a in outcome.anomalies if a.op.id == w.failing_op.id), None)
                 or next((a for a in outcome.anomalies if a.op.id in in_window), None))
        if shown is not None:
            return shown, w.window
    return outcome.anomalies[0], []


def _witnesses(outcome: Outcome) -> Iterable[Witness]:
    return (k.witness for r in outcome.timeline for k in r.keys
            if k.verdict == INVALID and k.witness is not None)


def _closed(rules: Rules, by_id: dict[int, Operation], ids: set[int]) -> set[int]:
    """``ids`` with every op they need, and every op those need."""
    ids = set(ids)
    while missing := {i for j in ids for i in rules.needs(by_id[j], ids)} - ids:
        ids |= missing
    return ids


def _kernel(rules: Rules, ops: list[Operation]) -> list[Operation]:
    """``ops`` without those that miss an op they need, and so on."""
    while True:
        ids = {op.id for op in ops}
        whole = [op for op in ops if all(i in ids for i in rules.needs(op, ids))]
        if len(whole) == len(ops):
            return ops
        ops = whole


def _focus(rules: Rules, by_id: dict[int, Operation], seed: set[int],
           fails: Callable[[list[Operation]], bool]) -> set[int]:
    """Where the minimisation starts: the first that fails of the witness's
    ops (with what they need), those and the ops concurrent with them, and
    the whole pool."""
    near = _closed(rules, by_id, seed)
    if near and fails(_in_call_order(by_id[i] for i in near)):
        return near
    if near:
        wider = _closed(rules, by_id, near | _concurrent(rules.pool, [by_id[i] for i in near]))
        if wider != near and fails(_in_call_order(by_id[i] for i in wider)):
            return wider
    return set(by_id)


def _concurrent(pool: list[Operation], ops: list[Operation]) -> set[int]:
    """Ops of the pool running at some time within the span of ``ops``; an
    op whose outcome is unknown counts from its call only, since it would
    otherwise overlap everything after it."""
    lo = min(op.call for op in ops)
    hi = max(op.call if op.ret == NEVER else op.ret for op in ops)
    return {op.id for op in pool if op.call < hi
            and (op.ret > lo if op.ret != NEVER else op.call > lo)}


def _in_call_order(ops: Iterable[Operation]) -> list[Operation]:
    return sorted(ops, key=lambda op: op.call)


def sub_history(events: Sequence[Event], ops: Iterable[Operation]) -> list[Event]:
    """The events of ``ops`` (each invoke and its process's next event, the
    completion, carrying the op's output as the checker saw it: a projected
    set read's), in history order and indexed from 0; nemesis events left out."""
    by_call = {op.call: op for op in ops}
    out: list[Event] = []
    open_: dict[int | str, Operation] = {}
    for pos, ev in enumerate(events):
        if ev.process == NEMESIS:
            continue
        if ev.type == "invoke":
            if pos in by_call:
                out.append(ev)
                open_[ev.process] = by_call[pos]
        elif ev.process in open_:
            op = open_.pop(ev.process)
            out.append(replace(ev, value=op.output) if ev.type == "ok" else ev)
    return [Event(i, e.type, e.process, e.f, e.key, e.value, e.time, e.node, e.error)
            for i, e in enumerate(out)]
