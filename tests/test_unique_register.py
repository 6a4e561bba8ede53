"""The unique-value register fast path: hand-written histories, and agreement
with the exact WGL search (and a brute-force oracle) on random histories."""

from __future__ import annotations

import dataclasses
import math
import sys
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from checkers import unique_register as ur
from checkers import wgl
from checkers.history import Event, Operation, pair
from checkers.models import CasRegister, get_model
from checkers.result import INVALID, VALID

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from gen_register import generate  # noqa: E402

MODELS = ["register", "cas-register", "etcd", "dynamo-item"]
CCF = "ConditionalCheckFailedException: The conditional request failed"


def ops_of(*events: tuple) -> list[Operation]:
    """Events as (process, type, f, value) tuples, in real-time order."""
    return pair([Event(i, t, p, f, None, v) for i, (p, t, f, v) in enumerate(events)])


def check(model: str, *events: tuple):
    m = get_model(model)
    ops = ops_of(*events)
    assert ur.applies(m, ops), ur.why_not(m, ops)
    res = ur.check_key(m, None, ops)
    assert res.algorithm == "unique-register"
    assert res.verdict == wgl.check_key(m, None, ops).verdict == brute_force(m, ops)
    if res.verdict == VALID:
        assert_linearization(m, ops, res.linearization)
    else:
        assert res.witness is not None and res.witness.explanation
    return res


class Generic(CasRegister):
    """The same semantics through the duck-typed path (keep/as_register calls)."""


def generic(model) -> Generic:
    return Generic(**{f.name: getattr(model, f.name) for f in dataclasses.fields(model)})


def W(p, v, t="ok"):
    """A write by p of v, as an invoke/completion pair (to be spread out)."""
    return [(p, "invoke", "write", v), (p, t, "write", v)]


# ------------------------------------------------------------------ oracles

def brute_force(model, ops: list[Operation]) -> str:
    """Every linearization, memoised on (done set, state): exact and tiny.

    An op may go next when no op that must complete returned before it was
    invoked; indeterminate ops may also never happen.
    """
    kept = [op for op in ops if model.keep(op)]
    n = len(kept)
    must = sum(1 << i for i, op in enumerate(kept) if op.ret != math.inf)

    @lru_cache(maxsize=None)
    def go(done: int, state) -> bool:
        if done & must == must:
            return True
        horizon = min(kept[i].ret for i in range(n) if must >> i & 1 and not done >> i & 1)
        for i in range(n):
            if not done >> i & 1 and kept[i].call < horizon:
                ok, nxt = model.step(state, kept[i])
                if ok and go(done | 1 << i, nxt):
                    return True
        return False

    return VALID if go(0, model.init()) else INVALID


def assert_linearization(model, ops: list[Operation], lin: list[Operation] | None) -> None:
    """``lin`` has every completed kept op once, respects real time, and
    every op in it is legal in the state its predecessors leave."""
    assert lin is not None
    ids = [op.id for op in lin]
    assert len(ids) == len(set(ids))
    kept = {op.id for op in ops if model.keep(op)}
    assert set(ids) <= kept
    assert {op.id for op in ops if model.keep(op) and op.ret != math.inf} <= set(ids)
    for i, a in enumerate(lin):
        for b in lin[i + 1:]:
            assert not b.ret < a.call, f"{b} precedes {a} in real time"
    state = model.init()
    for op in lin:
        ok, state = model.step(state, op)
        assert ok, f"{model.describe_op(op)} is not legal in state {state!r}"


# ---------------------------------------------------------- hand-written cases

def test_stale_read_after_completed_write():
    res = check("register", *W(0, 3), *W(1, 5), (2, "invoke", "read", None), (2, "ok", "read", 3))
    assert res.verdict == INVALID
    w = res.witness
    assert w.failing_op.f == "read" and w.failing_op.output == 3
    assert "write 5" in w.explanation and "never written again" in w.explanation
    assert [op.id for op in w.window] == [0, 1, 2]
    assert w.states == ["5"]


def test_read_concurrent_with_overwrite_may_see_old_value():
    res = check("register", *W(0, 3), (1, "invoke", "write", 5), (2, "invoke", "read", None),
                (2, "ok", "read", 3), (1, "ok", "write", 5))
    assert res.verdict == VALID


def test_read_of_never_written_value():
    res = check("register", *W(0, 1), (1, "invoke", "read", None), (1, "ok", "read", 7))
    assert res.verdict == INVALID
    assert res.witness.failing_op.output == 7
    assert "no operation wrote" in res.witness.explanation


def test_read_of_value_written_only_by_a_failed_write():
    res = check("cas-register", (0, "invoke", "write", 1), (0, "fail", "write", 1),
                (1, "invoke", "read", None), (1, "ok", "read", 1))
    assert res.verdict == INVALID


def test_read_before_the_write_began():
    res = check("register", (1, "invoke", "read", None), (1, "ok", "read", 4), *W(0, 4))
    assert res.verdict == INVALID
    assert "began after the read completed" in res.witness.explanation


def test_two_successful_cas_from_one_value():
    res = check("cas-register", *W(0, 1),
                (1, "invoke", "cas", [1, 2]), (2, "invoke", "cas", [1, 3]),
                (1, "ok", "cas", [1, 2]), (2, "ok", "cas", [1, 3]))
    assert res.verdict == INVALID
    assert res.witness.failing_op.input == [1, 3]
    assert "at most one cas" in res.witness.explanation


def test_second_cas_from_one_value_is_fine_if_indeterminate_and_unobserved():
    res = check("cas-register", *W(0, 1),
                (1, "invoke", "cas", [1, 2]), (2, "invoke", "cas", [1, 3]),
                (1, "ok", "cas", [1, 2]), (2, "info", "cas", [1, 3]),
                (3, "invoke", "read", None), (3, "ok", "read", 2))
    assert res.verdict == VALID


def test_indeterminate_cas_that_is_observed_conflicts_with_an_ok_one():
    res = check("cas-register", *W(0, 1),
                (1, "invoke", "cas", [1, 2]), (2, "invoke", "cas", [1, 3]),
                (1, "ok", "cas", [1, 2]), (2, "info", "cas", [1, 3]),
                (3, "invoke", "read", None), (3, "ok", "read", 3))
    assert res.verdict == INVALID


def test_info_write_observed_later():
    res = check("register", (0, "invoke", "write", 1), (0, "info", "write", 1),
                *W(1, 2), (2, "invoke", "read", None), (2, "ok", "read", 1))
    assert res.verdict == VALID         # the write of 1 took effect after the write of 2
    assert [op.id for op in res.linearization] == [1, 0, 2]


def test_info_write_observed_before_it_was_invoked():
    res = check("register", (2, "invoke", "read", None), (2, "ok", "read", 1),
                (0, "invoke", "write", 1), (0, "info", "write", 1))
    assert res.verdict == INVALID


def test_info_write_never_observed():
    res = check("register", (0, "invoke", "write", 1), (0, "info", "write", 1),
                (1, "invoke", "read", None), (1, "ok", "read", None),
                *W(1, 2), (2, "invoke", "read", None), (2, "ok", "read", 2))
    assert res.verdict == VALID
    assert 0 not in [op.id for op in res.linearization]


def test_info_cas_chain_observed_transitively():
    # write 1, info cas 1->2, info cas 2->3, read 3: both cas must have happened.
    res = check("cas-register", *W(0, 1),
                (1, "invoke", "cas", [1, 2]), (1, "info", "cas", [1, 2]),
                (2, "invoke", "cas", [2, 3]), (2, "info", "cas", [2, 3]),
                (3, "invoke", "read", None), (3, "ok", "read", 3))
    assert res.verdict == VALID
    assert len(res.linearization) == 4
    # ... so a read of 1 after the read of 3 is stale.
    res = check("cas-register", *W(0, 1),
                (1, "invoke", "cas", [1, 2]), (1, "info", "cas", [1, 2]),
                (2, "invoke", "cas", [2, 3]), (2, "info", "cas", [2, 3]),
                (3, "invoke", "read", None), (3, "ok", "read", 3),
                (4, "invoke", "read", None), (4, "ok", "read", 1))
    assert res.verdict == INVALID


def test_observed_info_cas_from_a_value_never_written():
    res = check("cas-register", (1, "invoke", "cas", [9, 2]), (1, "info", "cas", [9, 2]),
                (3, "invoke", "read", None), (3, "ok", "read", 2))
    assert res.verdict == INVALID
    assert "no operation wrote" in res.witness.explanation


def test_cas_cycle_without_a_write():
    res = check("cas-register", (1, "invoke", "cas", [1, 2]), (2, "invoke", "cas", [2, 1]),
                (1, "ok", "cas", [1, 2]), (2, "ok", "cas", [2, 1]))
    assert res.verdict == INVALID
    assert "cycle" in res.witness.explanation


def test_read_of_a_value_a_completed_cas_replaced():
    res = check("cas-register", *W(0, 1), (1, "invoke", "cas", [1, 2]), (1, "ok", "cas", [1, 2]),
                (2, "invoke", "read", None), (2, "ok", "read", 1))
    assert res.verdict == INVALID
    assert res.witness.failing_op.f == "read"


def test_cas_chain_with_reads_concurrent():
    res = check("cas-register", *W(0, 1),
                (1, "invoke", "cas", [1, 2]), (2, "invoke", "read", None),
                (3, "invoke", "cas", [2, 3]), (2, "ok", "read", 1),
                (1, "ok", "cas", [1, 2]), (4, "invoke", "read", None),
                (3, "ok", "cas", [2, 3]), (4, "ok", "read", 2))
    assert res.verdict == VALID


def test_backward_zone_inside_forward_zone():
    # 1's zone runs from the write's return to the read's call; 2's ops
    # (a write and a read of 2, concurrent) all fall strictly inside it.
    res = check("register", *W(0, 1),
                (1, "invoke", "write", 2), (2, "invoke", "read", None), (2, "ok", "read", 2),
                (1, "ok", "write", 2),
                (3, "invoke", "read", None), (3, "ok", "read", 1))
    assert res.verdict == INVALID
    assert res.witness.failing_op.output == 1
    assert {op.id for op in res.witness.window} == {0, 1, 2, 3}


def test_backward_zone_sticking_out_of_a_forward_zone():
    # The write of 2 began before the write of 1 returned: it may go first.
    res = check("register", (0, "invoke", "write", 1), (1, "invoke", "write", 2),
                (0, "ok", "write", 1), (2, "invoke", "read", None), (2, "ok", "read", 1),
                (1, "ok", "write", 2))
    assert res.verdict == VALID


def test_overlapping_forward_zones():
    res = check("register", *W(0, 1), *W(1, 2),
                (2, "invoke", "read", None), (2, "ok", "read", 1),
                (3, "invoke", "read", None), (3, "ok", "read", 2))
    assert res.verdict == INVALID


def test_forward_zones_touching_but_disjoint():
    # Zones [ret w1, call r1] and [ret w2, call r2] with r1 invoked before w2 returned.
    res = check("register", *W(0, 1), (1, "invoke", "write", 2),
                (2, "invoke", "read", None), (2, "ok", "read", 1),
                (1, "ok", "write", 2), (3, "invoke", "read", None), (3, "ok", "read", 2))
    assert res.verdict == VALID


def test_nil_read_conventions():
    h = [*W(0, 1), (1, "invoke", "read", None), (1, "ok", "read", None)]
    assert check("register", *h).verdict == INVALID     # nil: never written
    assert check("etcd", *h).verdict == INVALID
    assert check("cas-register", *h).verdict == VALID   # Knossos: nil matches anything


def test_initial_value_read_concurrent_with_first_write():
    res = check("register", (0, "invoke", "write", 1), (1, "invoke", "read", None),
                (1, "ok", "read", None), (0, "ok", "write", 1))
    assert res.verdict == VALID


def test_cas_from_nil_consumes_the_initial_value():
    h = [(0, "invoke", "update", [None, 1]), (0, "ok", "update", [None, 1]),
         (1, "invoke", "get", None), (1, "ok", "get", 1)]
    assert check("dynamo-item", *h).verdict == VALID
    h2 = [*W(2, 5)] + h
    h2 = [(p, t, "put" if f == "write" else f, v) for p, t, f, v in h2]
    assert check("dynamo-item", *h2).verdict == INVALID


def test_lone_concurrent_writes_and_empty_history():
    assert check("register", (0, "invoke", "write", 1), (1, "invoke", "write", 2),
                 (0, "ok", "write", 1), (1, "ok", "write", 2)).verdict == VALID
    assert ur.check_key(get_model("register"), None, []).verdict == VALID


def test_applies():
    reg, cas, etcd, dyn = (get_model(n) for n in MODELS)
    assert ur.applies(reg, ops_of(*W(0, 1), *W(1, 2)))
    assert not ur.applies(reg, ops_of(*W(0, 1), *W(1, 1)))          # value written twice
    assert not ur.applies(reg, ops_of(*W(0, None)))                  # writes the initial value
    failed = ops_of(*W(0, 1), (1, "invoke", "cas", [2, 3]), (1, "fail", "cas", [2, 3]))
    assert ur.applies(cas, failed)                                    # dropped
    assert not ur.applies(etcd, failed)                               # a negative constraint
    assert "compare" in ur.why_not(etcd, failed)
    assert not ur.applies(dyn, ops_of((0, "invoke", "delete", None), (0, "ok", "delete", None)))
    assert not ur.applies(get_model("kv"), ops_of((0, "invoke", "put", "x"), (0, "ok", "put", "x")))
    # a failed write of a value written again is dropped, so not a duplicate
    assert ur.applies(reg, ops_of((0, "invoke", "write", 1), (0, "fail", "write", 1), *W(1, 1)))
    with pytest.raises(ur.NotApplicable):
        ur.check_key(etcd, None, failed)


def test_unhashable_values():
    reg = get_model("register")
    ops = ops_of(*W(0, 1), (1, "invoke", "read", None), (1, "ok", "read", [1]))
    assert ur.applies(reg, ops)
    assert ur.check_key(reg, None, ops).verdict == INVALID == wgl.check_key(reg, None, ops).verdict
    assert not ur.applies(reg, ops_of(*W(0, [1, 2])))


def test_generic_model_path_and_applies_agree():
    for name in MODELS:
        m = get_model(name)
        g = generic(m)
        f = dict((k, f) for f, k in reversed(m.fs))
        ops = ops_of((0, "invoke", f["write"], 1), (0, "ok", f["write"], 1),
                     (1, "invoke", f["read"], None), (1, "ok", f["read"], None),
                     (2, "invoke", f["write"], 2), (2, "info", f["write"], 2))
        assert ur.applies(g, ops) == ur.applies(m, ops)
        assert ur.check_key(g, None, ops).verdict == ur.check_key(m, None, ops).verdict


def test_long_cas_chain_with_concurrent_reads():
    """One chain of 10,000 values; a stale read at the end breaks it, and the
    witness stays small (building it must not be quadratic in the chain)."""
    def history(stale: bool) -> list[Operation]:
        ev: list[tuple] = [*W(0, 1)]
        for v in range(1, 10_000):
            ev += [(1, "invoke", "read", None), (0, "invoke", "cas", [v, v + 1]),
                   (1, "ok", "read", v), (0, "ok", "cas", [v, v + 1])]
        if stale:
            ev += [(3, "invoke", "read", None), (3, "ok", "read", 2)]
        return ops_of(*ev)

    m = get_model("cas-register")
    ok = ur.check_key(m, None, history(False))
    assert ok.verdict == VALID and len(ok.linearization) == 19_999
    bad = ur.check_key(m, None, history(True))
    assert bad.verdict == INVALID
    assert bad.witness.failing_op.process == 3 and len(bad.witness.window) < 10


def test_generated_history_valid_and_with_stale_read():
    model = get_model("cas-register")
    for seed in range(3):
        ops = pair(generate(3000, 8, 0.05, seed))
        assert ur.applies(model, ops)
        res = ur.check_key(model, None, ops)
        assert res.verdict == VALID
        assert_linearization(model, ops, res.linearization)
        bad = pair(generate(3000, 8, 0.05, seed, stale_read=True))
        [stale] = [b for a, b in zip(ops, bad) if a.output != b.output]
        res = ur.check_key(model, None, bad)
        assert res.verdict == INVALID, seed
        assert res.witness.failing_op is stale     # the witness blames the stale read
        assert stale in res.witness.window
    small = pair(generate(60, 3, 0.1, 7))
    assert ur.check_key(model, None, small).verdict == wgl.check_key(model, None, small).verdict


# ---------------------------------------------------------- random histories

def names(model) -> dict[str, str]:
    out: dict[str, str] = {}
    for f, kind in model.fs:
        out.setdefault(kind, f)
    return out


@st.composite
def simulated(draw, model_name: str, max_procs: int = 4, max_ops: int = 10):
    """A history of a real register: each op takes effect at a point inside
    its interval (info ops: at any point after their call, or never), then
    perhaps one corruption (a read or a cas from a different value)."""
    model = get_model(model_name)
    fname = names(model)
    kinds = ["read", "write"] + (["cas"] if "cas" in fname else [])
    mismatch = getattr(model, "failed_cas", "drop") in ("mismatch", "condition")
    n_procs = draw(st.integers(1, max_procs))
    n_ops = draw(st.integers(2, max_ops))
    state = None
    written: list = [None]
    fresh = iter(range(1, 100))
    ops: list[dict] = []
    busy: dict[int, dict] = {}
    floating: list[dict] = []       # info ops that may still take effect
    timeline: list[tuple] = []      # ("invoke"|"complete", op)
    while len(ops) < n_ops or busy:
        acts = []
        if len(ops) < n_ops and len(busy) < n_procs:
            acts.append("invoke")
        if any(not o["done"] for o in list(busy.values()) + floating):
            acts.append("effect")
        if busy:
            acts.append("complete")
        act = draw(st.sampled_from(acts))
        if act == "invoke":
            p = draw(st.sampled_from([p for p in range(n_procs) if p not in busy]))
            op = {"p": p, "kind": draw(st.sampled_from(kinds)), "done": False,
                  "value": None, "failed": False}
            if op["kind"] != "read":
                op["value"] = next(fresh)
            ops.append(op)
            busy[p] = op
            timeline.append(("invoke", op))
        elif act == "complete":
            p = draw(st.sampled_from(sorted(busy)))
            op = busy[p]
        else:
            op = draw(st.sampled_from([o for o in list(busy.values()) + floating
                                       if not o["done"]]))
        # (a completing op that has not taken effect mostly does so just before)
        if act == "effect" or (act == "complete" and not op["done"] and draw(st.integers(0, 3))):
            op["done"] = True
            if op["kind"] == "read":
                op["out"] = state
            elif op["kind"] == "write":
                state = op["value"]
                written.append(state)
            else:
                op["from"] = state if draw(st.integers(0, 3)) else draw(st.sampled_from(written))
                if op["from"] == state:
                    state = op["value"]
                    written.append(state)
                else:
                    op["failed"] = True
            if op in floating:
                floating.remove(op)
        if act == "complete":
            busy.pop(p)
            if op["done"]:
                if op["failed"]:
                    t = "info" if mismatch and draw(st.booleans()) else "fail"
                else:
                    t = "info" if draw(st.integers(0, 5)) == 0 else "ok"
            else:
                t = "info" if draw(st.integers(0, 3)) else "fail"
                if t == "info":
                    floating.append(op)
            op["type"] = t
            timeline.append(("complete", op))
    # Info ops that never took effect get a from-value of their own.
    for op in ops:
        if op["kind"] == "cas" and "from" not in op:
            op["from"] = draw(st.sampled_from(written))
        if op["kind"] == "read" and "out" not in op:
            op["out"] = None
    targets = [o for o in ops if o["type"] == "ok" and o["kind"] != "write"]
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2])) if targets else 0):
        o = draw(st.sampled_from(targets))
        key = "out" if o["kind"] == "read" else "from"
        others = [v for v in written + [99] if v != o[key]]
        o[key] = draw(st.sampled_from(others))
    events = []
    for i, (what, op) in enumerate(timeline):
        f = fname[op["kind"]]
        if op["kind"] == "cas":
            v = [op["from"], op["value"]]
        elif op["kind"] == "write":
            v = op["value"]
        else:
            v = op["out"] if what == "complete" and op["type"] == "ok" else None
        # the store's word for a compare that found another value
        error = CCF if what == "complete" and op["failed"] and op["type"] == "fail" else None
        events.append(Event(i, "invoke" if what == "invoke" else op["type"], op["p"], f, None, v,
                            error=error))
    return events


@st.composite
def arbitrary(draw, model_name: str, max_procs: int = 4, max_ops: int = 10):
    """Random ops with random values and overlaps: mostly not linearizable."""
    model = get_model(model_name)
    fname = names(model)
    kinds = ["read", "write"] + (["cas"] if "cas" in fname else [])
    n_procs = draw(st.integers(1, max_procs))
    n_ops = draw(st.integers(2, max_ops))
    fresh = iter(range(1, 100))
    written: list = [None]
    pending: dict[int, tuple] = {}
    events: list[Event] = []
    made = 0
    while made < n_ops or pending:
        choices = [p for p in range(n_procs) if (p in pending) or made < n_ops]
        p = draw(st.sampled_from(choices))
        if p in pending:
            f, v = pending.pop(p)
            t = draw(st.sampled_from(["ok", "ok", "ok", "info", "fail"]))
            if f == fname["read"] and t == "ok":
                v = draw(st.sampled_from(written + [99]))
            events.append(Event(len(events), t, p, f, None, v))
        else:
            kind = draw(st.sampled_from(kinds))
            if kind == "read":
                v = None
            elif kind == "write":
                v = next(fresh)
                written.append(v)
            else:
                v = [draw(st.sampled_from(written + [99])), next(fresh)]
                written.append(v[1])
            pending[p] = (fname[kind], v)
            events.append(Event(len(events), "invoke", p, fname[kind], None, v))
            made += 1
    return events


def agree(model_name: str, events: list[Event], counts: Counter) -> None:
    model = get_model(model_name)
    ops = pair(events)
    if not ur.applies(model, ops):
        counts["n/a"] += 1
        event("not applicable")
        return
    fast = ur.check_key(model, None, ops)
    exact = wgl.check_key(model, None, ops)
    assert ur.check_key(generic(model), None, ops).verdict == fast.verdict
    assert fast.ops == exact.ops        # both count the ops the model keeps
    assert fast.verdict == exact.verdict, (fast.verdict, exact.verdict, fast.reason)
    assert fast.verdict == brute_force(model, ops)
    if fast.verdict == VALID:
        assert_linearization(model, ops, fast.linearization)
    else:
        w = fast.witness
        assert w is not None and w.failing_op in ops and w.explanation
        assert w.failing_op in w.window
        assert len(w.linearized) == len(w.states_after)
    counts[fast.verdict] += 1
    event(fast.verdict)


SETTINGS = settings(max_examples=600, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("model_name", MODELS)
def test_agrees_with_exact_search_on_simulated_histories(model_name):
    counts: Counter = Counter()

    @SETTINGS
    @given(st.data())
    def prop(data):
        agree(model_name, data.draw(simulated(model_name)), counts)

    prop()
    print(model_name, dict(counts))
    checked = counts[VALID] + counts[INVALID]
    assert checked >= 400, counts
    assert counts[VALID] >= 0.25 * checked and counts[INVALID] >= 0.15 * checked, counts


@pytest.mark.parametrize("model_name", MODELS)
def test_agrees_with_exact_search_on_arbitrary_histories(model_name):
    counts: Counter = Counter()

    @SETTINGS
    @given(st.data())
    def prop(data):
        agree(model_name, data.draw(arbitrary(model_name)), counts)

    prop()
    print(model_name, dict(counts))
    checked = counts[VALID] + counts[INVALID]
    assert checked >= 250, counts
    assert counts[INVALID] >= 0.25 * checked and counts[VALID] >= 0.1 * checked, counts


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["etcd", "dynamo-item"])
def test_search_agrees_with_brute_force_where_the_fast_path_does_not_apply(model_name):
    """Failed compares and indeterminate writes nobody read: the search's
    reductions (unobserved values, interchangeable indeterminate ops) must
    not change a verdict."""
    counts: Counter = Counter()
    model = get_model(model_name)

    @settings(SETTINGS, max_examples=1500)
    @given(st.data())
    def prop(data):
        ops = pair(data.draw(simulated(model_name, max_procs=5, max_ops=12)))
        if ur.applies(model, ops):
            return
        exact = wgl.check_key(model, None, ops)
        assert exact.verdict == brute_force(model, ops)
        if exact.verdict == VALID:
            assert_linearization(model, ops, exact.linearization)
        counts[exact.verdict] += 1

    prop()
    print(model_name, dict(counts))
    assert counts[VALID] >= 100 and counts[INVALID] >= 40, counts
