"""Exact linearizability search: Wing & Gong's algorithm with Lowe's memoisation.

The history of one key becomes a doubly linked list of call and return
entries in real-time order.  The search walks it, trying to linearize each
pending call (lifting it and its return out of the list) when the model
allows it, and backtracks when it meets a return whose call it could not
linearize.  A configuration (set of linearized ops, model state) already
explored is never explored again, which is what makes the search practical
(Lowe, "Testing for linearizability", 2017).

One pruning beyond Lowe's: an op that never changes the state (a read),
legal in the current state, is linearized at once and never un-tried.  Every
op that must precede it is already linearized (else the search would have
met that op's return first), and any completion that linearizes it later
also works with it here, because it changes nothing.  So when the subtree
under such a commitment fails, its siblings fail too, and the search
backtracks past it.

Indeterminate ops (``ret`` is ``NEVER``) return after everything else: they
may take effect at any point after their call, or never.  So once the search
reaches the first of their returns, every completed op is linearized and the
history is linearizable; and an indeterminate op that would change nothing
in the current state is never linearized there, since leaving it pending
keeps every option that taking it would.

Two more exact reductions for registers (models with ``as_register``), which
keep a key with many indeterminate writes (a node cut off or killed leaves
dozens) from costing one configuration per subset of them:

- *Unobserved values.*  A register's step compares the state only with
  values that some op observes: what a read returned, what a cas compared
  against.  A value written but never observed is, to every op, just "not
  any observed value", so all such values are one state here
  (:data:`UNOBSERVED`).
- *Interchangeable indeterminate ops.*  Two indeterminate writes of
  unobserved values (or two such cas from the same expected value) have the
  same effect in every state and may both take effect at any time after
  their calls.  Any linearization that takes m of them can take the m
  called first instead (the k-th earliest call of any m of them is no later
  than the k-th of those taken), so the search takes them only in call
  order: which ones were taken collapses to how many.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Hashable

from checkers.history import NEVER, Operation
from checkers.models import Model
from checkers.result import INVALID, UNKNOWN, VALID, KeyResult, Witness


@dataclass(frozen=True)
class Budget:
    """When to give up: wall seconds per key and configurations remembered.

    The configuration cache is what grows; ``max_states`` bounds its memory
    (roughly 150 bytes a state for a small model).
    """

    time_limit: float | None = None
    max_states: int | None = 2_000_000


class _Unobserved:
    """The state "a value no op of this key observes" (see the module doc)."""

    def __repr__(self) -> str:
        return "a value nobody read"

    __str__ = __repr__


UNOBSERVED = _Unobserved()

def _reductions(model: Model, kept: list[Operation]) -> tuple[list[bool], list[int], list[int], int]:
    """Which ops write a value nobody observes, and each indeterminate such
    op's symmetry class (-1: none) and rank in it, with the number of classes."""
    n = len(kept)
    none = [False] * n, [-1] * n, [0] * n, 0
    as_register = getattr(model, "as_register", None)
    if as_register is None:
        return none
    regs = [as_register(op) for op in kept]
    observed: set[Hashable] = {None, model.init()}
    try:
        for r in regs:
            if r is not None and r.kind != "write":
                observed.add(r.expect)
        hides = [r is not None and r.kind != "read" and r.value not in observed
                 for r in regs]
    except TypeError:  # unhashable values: no reduction
        return none
    classes: dict[tuple[str, Any], int] = {}
    cls, rank, sizes = [-1] * n, [0] * n, []
    for i, (op, r) in enumerate(zip(kept, regs)):
        if op.ret == NEVER and hides[i]:
            assert r is not None
            c = classes.setdefault((r.kind, r.expect if r.kind == "cas" else None), len(classes))
            if c == len(sizes):
                sizes.append(0)
            cls[i], rank[i] = c, sizes[c]
            sizes[c] += 1
    return hides, cls, rank, len(classes)


def check_key(model: Model, key: Any, ops: list[Operation],
              budget: Budget | None = None) -> KeyResult:
    """Check the kept ops of one key; ``ops`` may include ops the model drops."""
    budget = budget or Budget()
    t0 = time.monotonic()
    kept = [op for op in ops if model.keep(op)]
    n = len(kept)
    if n == 0:
        return KeyResult(key, VALID, 0, "wgl", linearization=[])
    kept.sort(key=lambda o: o.call)

    # Entries 1..n are calls, n+1..2n returns, 0 is the head sentinel.
    order = sorted(range(2 * n), key=lambda e: kept[e].call if e < n else kept[e - n].ret)
    size = 2 * n + 1
    nxt = [0] * size
    prv = [0] * size
    seq = [0] + [e + 1 for e in order]
    for a, b in zip(seq, seq[1:]):
        nxt[a], prv[b] = b, a
    nxt[seq[-1]] = -1
    prv[0] = -1

    step = model.step
    hides, cls, rank, n_classes = _reductions(model, kept)
    taken = [0] * n_classes  # ops of each class linearized (the first ones)
    readonly = [model.readonly(op) for op in kept]
    indeterminate = [op.ret == NEVER for op in kept]
    state = model.init()
    linearized = 0
    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any, bool]] = []  # (call entry, state before, greedy)
    best_depth = -1
    best: tuple[list[int], int, Any] | None = None
    best_states: set[Any] = set()
    iterations = 0
    deadline = None if budget.time_limit is None else t0 + budget.time_limit
    max_states = budget.max_states

    states_left = max_states if max_states is not None else -1
    entry = nxt[0]
    while entry != -1:
        if entry <= n:  # a call
            i = entry - 1
            c = cls[i]
            if c >= 0 and rank[i] != taken[c]:  # an interchangeable op called earlier
                entry = nxt[entry]
                continue
            ok, new_state = step(state, kept[i])
            if hides[i] and new_state != state:  # it wrote a value nobody observes
                new_state = UNOBSERVED
            if ok and (new_state != state or not indeterminate[i]):
                lin2 = linearized | (1 << i)
                cfg = (lin2, new_state)
                if cfg not in cache:
                    cache.add(cfg)
                    states_left -= 1
                    if states_left == 0:
                        return _unknown(key, n, f"state budget of {max_states:,} "
                                        "configurations ran out", len(cache), t0)
                    stack.append((entry, state, readonly[i]))
                    state, linearized = new_state, lin2
                    if c >= 0:
                        taken[c] += 1
                    # lift the call and its return out of the list
                    p, q = prv[entry], nxt[entry]
                    nxt[p] = q
                    prv[q] = p
                    r = entry + n
                    p, q = prv[r], nxt[r]
                    nxt[p] = q
                    if q != -1:
                        prv[q] = p
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        elif indeterminate[entry - n - 1]:
            break  # only indeterminate ops are left: they may never happen
        else:  # a return whose call is not linearized: backtrack
            depth = len(stack)
            if depth > best_depth:
                best_depth = depth
                best = ([e - 1 for e, _, _ in stack], entry - n - 1, state)
                best_states = {state}
            elif depth == best_depth and best is not None and entry - n - 1 == best[1]:
                best_states.add(state)
            while True:
                if not stack:
                    return _invalid(model, key, kept, best, best_states, len(cache), t0)
                call, state, greedy = stack.pop()
                linearized &= ~(1 << (call - 1))
                if cls[call - 1] >= 0:
                    taken[cls[call - 1]] -= 1
                # put the return, then the call, back where they were
                r = call + n
                p, q = prv[r], nxt[r]
                nxt[p] = r
                if q != -1:
                    prv[q] = r
                p, q = prv[call], nxt[call]
                nxt[p] = call
                prv[q] = call
                if not greedy:
                    break
            entry = nxt[call]
            iterations += 1
            if deadline is not None and iterations & 0x3FF == 0 \
                    and time.monotonic() > deadline:
                return _unknown(key, n, f"time limit of {budget.time_limit:g} s ran out "
                                f"after {len(cache):,} states", len(cache), t0)
    lin = [kept[e - 1] for e, _, _ in stack]
    return KeyResult(key, VALID, n, "wgl", linearization=lin, explored=len(cache),
                     elapsed=time.monotonic() - t0)


def _unknown(key: Any, n: int, reason: str, explored: int, t0: float) -> KeyResult:
    return KeyResult(key, UNKNOWN, n, "wgl", reason=reason, explored=explored,
                     elapsed=time.monotonic() - t0)


def _invalid(model: Model, key: Any, kept: list[Operation],
             best: tuple[list[int], int, Any] | None, states: set[Any],
             explored: int, t0: float) -> KeyResult:
    assert best is not None
    lin_ids, fail_id, _ = best
    linearized = [kept[i] for i in lin_ids]
    failing = kept[fail_id]
    state = model.init()
    states_after = []
    for op in linearized:
        state = model.step(state, op)[1]
        states_after.append(model.describe_state(state))
    window = failure_window(kept, set(lin_ids), fail_id)
    # An unobserved value is shown as the one the longest prefix wrote.
    described = sorted({model.describe_state(state if s is UNOBSERVED and best[2] is UNOBSERVED
                                             else s) for s in states})
    before = [op for op in linearized if op.ret < failing.call]
    last = max(before, key=lambda op: op.ret, default=None)
    why = (f"; the last, {model.describe_op(last)} by process {last.process} "
           f"(events {last.call}-{_pos(last.ret)}), completed before it began"
           if last is not None else "")
    witness = Witness(
        failing_op=failing, linearized=linearized, states_after=states_after,
        states=described, window=window,
        explanation=(f"{model.describe_op(failing)} by process {failing.process} "
                     f"(events {failing.call}-{_pos(failing.ret)}) cannot take effect: "
                     f"the state could only be {' or '.join(described)} "
                     f"after the {len(linearized)} ops that had to come first{why}"))
    return KeyResult(key, INVALID, len(kept), "wgl", witness=witness, explored=explored,
                     elapsed=time.monotonic() - t0)


def _pos(ret: float) -> str:
    return "?" if ret == NEVER else str(int(ret))


def failure_window(ops: list[Operation], linearized: set[int],
                   failing: int) -> list[Operation]:
    """The ops a person needs to see the contradiction, in call order.

    The failing op, the ops still pending when it had to take effect, the
    linearized ops that overlap them, and the last linearized op before
    those (whose effect the possible states reflect).  Indeterminate ops do
    not stretch the window back: they are shown only if pending.
    """
    ret = ops[failing].ret
    pending = [i for i, op in enumerate(ops) if i not in linearized and op.call < ret]
    chosen = set(pending) | {failing}
    start = min(ops[i].call for i in chosen if ops[i].ret != NEVER or i == failing)
    chosen.update(i for i in linearized if ops[i].ret >= start)
    before = [i for i in linearized if ops[i].ret < start]
    if before:
        chosen.add(max(before, key=lambda i: ops[i].ret))
    return sorted((ops[i] for i in chosen), key=lambda o: o.call)
