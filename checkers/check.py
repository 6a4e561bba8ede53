"""Check whole histories: pick a model, split by key, choose an algorithm.

Keys are independent (P-compositionality: a history is linearizable iff the
sub-history of every key is), so each (history, key) is a task, and tasks
run in parallel across processes when there is enough work to pay for it.
A key whose ops a unique-value register describes takes the polynomial
fast path; everything else takes the exact WGL search.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from checkers import unique_register, wgl
from checkers.history import History, Operation
from checkers.models import Model, get_model, infer_model
from checkers.result import INVALID, CheckResult, KeyResult, combine

#: Below this many ops in all, forking workers costs more than it saves.
PARALLEL_THRESHOLD = 3_000
#: A fast-path witness window up to this size is re-explained by the search.
WITNESS_SEARCH_OPS = 200
#: Every key first gets this many states; only keys still undecided after
#: that, in histories not already shown invalid, get the full budget.
FIRST_ROUND_STATES = 20_000


def model_for(history: History, ops: Sequence[Operation], name: str | None) -> Model:
    """The model named, or the one the history's format and ops imply."""
    return get_model(name or history.model or
                     infer_model({op.f for op in ops}, history.format))


def check_key(model: Model, key: Any, ops: list[Operation],
              budget: wgl.Budget | None = None) -> KeyResult:
    """One key, by the fastest exact algorithm that applies."""
    if not unique_register.applies(model, ops):
        return wgl.check_key(model, key, ops, budget)
    res = unique_register.check_key(model, key, ops)
    if res.witness and len(res.witness.window) <= WITNESS_SEARCH_OPS:
        # The zones say which ops conflict; the search over just those ops
        # says it the way a person checks it: the op that cannot be placed
        # after the longest order that works.
        exact = wgl.check_key(model, key, res.witness.window, budget)
        if exact.witness:
            res.witness = exact.witness
    return res


@dataclass
class _Task:
    history: int
    key: Any
    ops: list[Operation]


_TASKS: list[_Task] = []
_MODELS: list[Model] = []
_BUDGET: wgl.Budget = wgl.Budget()


def _run(i: int) -> tuple[int, KeyResult]:
    t = _TASKS[i]
    res = check_key(_MODELS[t.history], t.key, t.ops, _BUDGET)
    res.linearization = None  # only witnesses travel back
    return i, res


def _run_all(indexes: list[int], jobs: int) -> dict[int, KeyResult]:
    """Run tasks (by index into ``_TASKS``), in forked workers when it pays."""
    total = sum(len(_TASKS[i].ops) for i in indexes)
    if jobs > 1 and len(indexes) > 1 and total >= PARALLEL_THRESHOLD \
            and "fork" in multiprocessing.get_all_start_methods():
        with multiprocessing.get_context("fork").Pool(min(jobs, len(indexes)),
                                                      initializer=_worker_signals) as pool:
            results = dict(pool.imap_unordered(_run, indexes, chunksize=1))
            # Let idle workers exit on their own; leaving the block terminates
            # them (SIGTERM) only when the parent is bailing out.
            pool.close()
            pool.join()
        return results
    return dict(_run(i) for i in indexes)


def _worker_signals() -> None:
    """A forked worker inherits its parent's handlers, e.g. a runner's
    SIGTERM-raises-KeyboardInterrupt: the parent alone decides when to stop
    (SIGINT ignored), and the pool's terminate() just ends a worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class _Ops:
    """One history's paired ops and the model they are checked against."""

    ops: list[Operation]
    model: Model
    path: str | None


def check_histories(histories: Iterable[History], *, model: str | None = None,
                    budget: wgl.Budget | None = None,
                    jobs: int | None = None) -> list[CheckResult]:
    """Check every history; one result per history, in the same order.

    Histories are paired one at a time and not kept: pass a generator of
    loaded histories and only their operations stay in memory.

    ``ValueError`` if a history's ops do not fit the model (an op name the
    model does not know, a malformed cas value).
    """
    def paired() -> Iterator[_Ops]:
        for history in histories:
            ops = history.operations()
            yield _Ops(ops, model_for(history, ops, model), history.path)
    return _check(paired(), budget, jobs)


def check_ops(ops: list[Operation], model: str, *, path: str | None = None,
              budget: wgl.Budget | None = None, jobs: int | None = None) -> CheckResult:
    """Check one history's ops, already paired (a run's analysis pairs them
    once for every checker), against the model named; ``path`` only labels the
    result.  ``ValueError`` as for :func:`check_histories`."""
    return _check([_Ops(ops, get_model(model), path)], budget, jobs)[0]


def _check(histories: Iterable[_Ops], budget: wgl.Budget | None,
           jobs: int | None) -> list[CheckResult]:
    """The one core: each history split by key, every key checked (in forked
    workers when it pays), one result per history, in the same order."""
    global _TASKS, _MODELS, _BUDGET
    t0 = time.monotonic()
    tasks: list[_Task] = []
    models: list[Model] = []
    counts: list[int] = []
    paths: list[str | None] = []
    for h_idx, h in enumerate(histories):
        for op in h.ops:
            h.model.keep(op)  # surfaces ops the model cannot read before any work
        paths.append(h.path)
        models.append(h.model)
        counts.append(len(h.ops))
        for key, part in h.model.partition(h.ops).items():
            tasks.append(_Task(h_idx, key, part))
    jobs = jobs or os.cpu_count() or 1
    budget = budget or wgl.Budget()
    order = sorted(range(len(tasks)), key=lambda i: -len(tasks[i].ops))
    _TASKS, _MODELS = tasks, models
    try:
        # Round one: a small budget each, so that an easy contradiction in one
        # key settles its history before a hard key eats the whole budget.
        first = wgl.Budget(budget.time_limit, _min(budget.max_states, FIRST_ROUND_STATES))
        _BUDGET = first
        results = _run_all(order, jobs)
        if first != budget:
            invalid = {tasks[i].history: tasks[i].key for i, r in results.items()
                       if r.verdict == INVALID}
            again = [i for i in order if results[i].reason and
                     "state budget" in results[i].reason]
            for i in again:
                if tasks[i].history in invalid:
                    results[i].reason = (f"not searched further: key "
                                         f"{invalid[tasks[i].history]!r} already "
                                         "shows the history is not linearizable")
            _BUDGET = budget
            results.update(_run_all([i for i in again if tasks[i].history not in invalid],
                                    jobs))
    finally:
        _TASKS, _MODELS, _BUDGET = [], [], wgl.Budget()
    elapsed = time.monotonic() - t0
    out = [CheckResult("valid", m.name, c, 0.0, [], h)
           for h, m, c in zip(paths, models, counts)]
    for i, task in enumerate(tasks):
        out[task.history].keys.append(results[i])
    for r in out:
        r.keys.sort(key=lambda k: _sortable(k.key))
        r.verdict = combine(k.verdict for k in r.keys)
        r.elapsed = sum(k.elapsed for k in r.keys) if len(out) > 1 else elapsed
    return out


def _min(a: int | None, b: int) -> int:
    return b if a is None else min(a, b)


def check_history(history: History, **kw: Any) -> CheckResult:
    return check_histories([history], **kw)[0]


def _sortable(key: Any) -> tuple[str, str]:
    return (type(key).__name__, str(key))
