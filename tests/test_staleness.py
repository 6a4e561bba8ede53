"""Staleness: how stale each read was, its distribution, and the Δ shift."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from checkers.check import check_ops
from checkers.history import NEVER, Event, Operation, pair
from checkers.models import get_model
from checkers.result import INVALID, VALID
from checkers.set_checker import check_set
from checkers.staleness import (Distribution, StalenessReport, fmt_ms, register_staleness,
                                shift_reads, verdict_text)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from gen_register import generate  # noqa: E402

MS = 1_000_000
CCF = "ConditionalCheckFailedException: The conditional request failed"
DYNAMO = get_model("dynamo-item")


class H:
    """Ops given in any order, each as (call_ms, ret_ms); the history is their
    events in time order, as the harness writes it (ties: as given)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, int, Event]] = []

    def op(self, call: float, ret: float | None, process: int, f: str, value=None,
           out=None, node: str = "n1", key: str = "k0", status: str = "ok",
           error: str | None = None) -> "H":
        self._add(call, Event(0, "invoke", process, f, key, value, round(call * MS), node))
        if ret is not None:
            self._add(ret, Event(0, status, process, f, key, value if out is None else out,
                                 round(ret * MS), node, error))
        return self

    def _add(self, t: float, ev: Event) -> None:
        self.events.append((t, len(self.events), ev))

    def ops(self) -> list[Operation]:
        events = [ev for _, _, ev in sorted(self.events, key=lambda e: e[:2])]
        for i, ev in enumerate(events):
            ev.index = i
        return pair(events)


def by_f(ops: list[Operation], f: str) -> list[Operation]:
    return [op for op in ops if op.f == f]


def staleness(ops: list[Operation]) -> list[tuple[int, int, float | None]]:
    """(read id, superseding op id, ms) of every stale read."""
    return [(s.read.id, s.by.id, s.ms) for s in register_staleness(ops, DYNAMO)]


def is_get(op: Operation) -> bool:
    return op.f == "get"


# ------------------------------------------------------------------ register

def overwritten() -> H:
    """get -> 1 began 500 ms after put 2 (invoked after put 1 returned) was acknowledged."""
    return (H().op(0, 10, 1, "put", 1).op(20, 30, 2, "put", 2, node="n2")
            .op(530, 540, 3, "get", None, 1, node="n3"))


def test_a_read_of_an_overwritten_value_is_stale_from_the_overwrites_ack():
    ops = overwritten().ops()
    put2, get = by_f(ops, "put")[1], by_f(ops, "get")[0]
    assert staleness(ops) == [(get.id, put2.id, 500.0)]


def test_the_earliest_superseding_write_counts():
    ops = (H().op(0, 10, 1, "put", 1).op(20, 30, 2, "put", 2).op(40, 50, 1, "put", 3)
           .op(100, 110, 3, "get", None, 1)).ops()
    assert [ms for _, _, ms in staleness(ops)] == [70.0]


def test_a_write_concurrent_with_the_values_writer_proves_nothing():
    # put 2 may take effect before put 1: reading 1 afterwards is linearizable.
    ops = (H().op(0, 100, 1, "put", 1).op(50, 60, 2, "put", 2)
           .op(200, 210, 3, "get", None, 1)).ops()
    assert staleness(ops) == []
    assert check_ops(ops, "dynamo-item").verdict == VALID


def test_a_write_concurrent_with_the_read_proves_nothing():
    ops = (H().op(0, 10, 1, "put", 1).op(20, 60, 2, "put", 2)
           .op(50, 70, 3, "get", None, 1)).ops()
    assert staleness(ops) == []


def test_a_cas_from_the_value_supersedes_it_even_when_concurrent_with_its_write():
    # update 1->2 began before put 1 returned, yet it observed 1 and replaced it.
    ops = (H().op(0, 100, 1, "put", 1).op(10, 50, 2, "update", [1, 2])
           .op(300, 310, 3, "get", None, 1)).ops()
    [update] = by_f(ops, "update")
    assert staleness(ops) == [(by_f(ops, "get")[0].id, update.id, 250.0)]


def test_a_failed_cas_supersedes_nothing():
    ops = (H().op(0, 100, 1, "put", 1)
           .op(10, 50, 2, "update", [1, 2], status="fail", error=CCF)
           .op(300, 310, 3, "get", None, 1)).ops()
    assert staleness(ops) == []


def test_the_initial_value_is_superseded_by_any_acknowledged_write():
    ops = (H().op(0, 10, 1, "update", [None, 5]).op(5, 8, 2, "get", None, None)
           .op(510, 520, 2, "get", None, None)).ops()
    concurrent, late = by_f(ops, "get")
    assert staleness(ops) == [(late.id, by_f(ops, "update")[0].id, 500.0)]
    assert concurrent.id not in {r for r, _, _ in staleness(ops)}


def test_an_indeterminate_writer_may_take_effect_after_a_later_write():
    # put 1 never answered; its value is read, so it happened, at any time.
    ops = (H().op(0, None, 1, "put", 1).op(40, 50, 3, "put", 2)
           .op(100, 110, 2, "get", None, 1)).ops()
    assert staleness(ops) == []
    assert check_ops(ops, "dynamo-item").verdict == VALID


@pytest.mark.parametrize("put_returns", [None, 200], ids=["info", "ok-late"])
def test_a_value_exists_once_a_read_of_it_returned(put_returns):
    # get -> 1 returned at 30: put 2, invoked at 40, comes after put 1.
    ops = (H().op(0, put_returns, 1, "put", 1).op(20, 30, 2, "get", None, 1)
           .op(40, 50, 3, "put", 2).op(100, 110, 2, "get", None, 1)).ops()
    assert staleness(ops) == [(by_f(ops, "get")[1].id, by_f(ops, "put")[1].id, 50.0)]
    assert check_ops(ops, "dynamo-item").verdict == INVALID


def test_a_value_without_a_single_writer_is_not_measured():
    # 7 written twice: which write a read saw is unknown (the check flags nothing here).
    ops = (H().op(0, 10, 1, "put", 7).op(20, 30, 2, "put", 7).op(40, 50, 1, "put", 8)
           .op(100, 110, 3, "get", None, 7)).ops()
    assert staleness(ops) == []


def test_keys_are_measured_apart():
    ops = (H().op(0, 10, 1, "put", 1, key="a").op(20, 30, 1, "put", 2, key="b")
           .op(40, 50, 2, "get", None, 1, key="a")).ops()
    assert staleness(ops) == []


@pytest.mark.parametrize("seed", range(4))
def test_sound_on_generated_histories(seed):
    """No read of a linearizable history is stale; the injected stale read
    is found, and a shift by the largest staleness leaves none stale."""
    names = ("get", "put", "update")
    assert staleness(pair(generate(2000, 8, 0.05, seed, names=names))) == []
    bad = pair(generate(2000, 8, 0.05, seed, stale_read=True, names=names))
    found = register_staleness(bad, DYNAMO)
    assert found and check_ops(bad, "dynamo-item").verdict == INVALID
    worst = max(s.ms for s in found if s.ms is not None)
    shifted = shift_reads(bad, worst, is_get)
    ends = sorted(p for op in shifted for p in (op.call, op.ret) if p != NEVER)
    assert ends == list(range(len(ends))) and all(op.call < op.ret for op in shifted)
    assert staleness(shifted) == []
    assert staleness(shift_reads(bad, worst * 0.999, is_get)) != []


# ---------------------------------------------------------------- the Δ shift

def test_shift_moves_a_read_before_every_event_at_least_delta_before_it():
    ops = H().op(0, 10, 1, "put", 1).op(30, 40, 2, "get", None, None).ops()
    put, get = ops
    shifted = shift_reads(ops, 20, is_get)
    assert [(op.id, op.call, op.ret) for op in shifted] == [(put.id, 0, 2), (get.id, 1, 3)]
    assert shifted[1].call_time == 10 * MS and shifted[0].call_time == 0
    assert (get.call, get.call_time) == (2, 30 * MS)  # the ops given are untouched
    kept = shift_reads(ops, 19.9, is_get)
    assert [(op.call, op.ret) for op in kept] == [(0, 1), (2, 3)]


def test_shift_never_moves_a_write():
    ops = H().op(0, 10, 1, "get", None, None).op(30, 40, 2, "put", 1).ops()
    assert [(op.call, op.ret) for op in shift_reads(ops, 1000, is_get)] == [(0, 1), (2, 3)]


@pytest.mark.parametrize("extra", [[], [(600, 610, 5, "put", 9), (620, 630, 6, "put", 9)]],
                         ids=["unique-register", "wgl"])
def test_delta_atomicity_on_both_linearizability_paths(extra):
    h = overwritten()
    for call, ret, p, f, v in extra:  # a value written twice: only the search applies
        h.op(call, ret, p, f, v)
    ops = h.ops()
    algorithm = "wgl" if extra else "unique-register"
    for delta, verdict in ((None, INVALID), (499.9, INVALID), (500, VALID), (2000, VALID)):
        checked = ops if delta is None else shift_reads(ops, delta, is_get)
        [key] = check_ops(checked, "dynamo-item").keys
        assert (key.verdict, key.algorithm) == (verdict, algorithm), delta


# ------------------------------------------------------------------- the set

def test_a_set_read_missing_an_element_acked_500_ms_before_it():
    ops = (H().op(0, 10, 1, "add", 1).op(510, 520, 2, "read-query", None, [], node="n2")
           .op(600, 610, 3, "read-scan", None, [1])).ops()
    r = check_set(ops)
    assert [(s.op.f, s.stale_ms, s.oldest.input) for s in r.stale_reads] == [
        ("read-query", 500.0, 1)]
    assert (r.staleness.overall.stale, r.staleness.overall.max) == (1, 500.0)


def test_a_set_read_concurrent_with_an_add_is_not_stale():
    ops = (H().op(0, 100, 1, "add", 1).op(50, 60, 2, "read-query", None, [])
           .op(600, 610, 3, "read-scan", None, [1])).ops()
    r = check_set(ops)
    assert r.stale_reads == [] and r.verdict == VALID


def test_set_bound_allows_stale_reads_up_to_it_and_nothing_else():
    h = (H().op(0, 10, 1, "add", 1).op(510, 520, 2, "read-query", None, [], node="n2")
         .op(600, 610, 3, "read-scan", None, [1]))
    assert check_set(h.ops(), max_staleness_ms=499).verdict == INVALID
    r = check_set(h.ops(), max_staleness_ms=500)
    assert (r.verdict, r.anomalies(), r.witness) == (VALID, [], None)
    assert (len(r.stale_reads), r.staleness.beyond_bound) == (1, 0)  # still reported
    assert r.describe().splitlines()[0] == "set: VALID within max staleness 500 ms"
    # A lost element is an anomaly whatever the bound.
    lost = h.op(700, 710, 1, "add", 2).op(800, 810, 3, "read-scan", None, [1])
    assert check_set(lost.ops(), max_staleness_ms=1e9).lost == [2]
    assert check_set(lost.ops(), max_staleness_ms=1e9).verdict == INVALID


# ---------------------------------------------------------------- the figures

def test_percentiles_are_nearest_rank_values():
    d = Distribution.of(12, [float(x) for x in range(10, 0, -1)])
    assert (d.reads, d.stale, d.p50, d.p90, d.p99, d.max) == (12, 10, 5.0, 9.0, 10.0, 10.0)
    assert Distribution.of(70, [float(x) for x in range(1, 71)]).p90 == 63.0
    unknown = Distribution.of(3, [None, 4.0])
    assert (unknown.stale, unknown.p50, unknown.max) == (2, 4.0, 4.0)
    assert Distribution.of(5, []) == Distribution(5, 0)


def test_report_groups_by_node_and_read_kind_with_its_family():
    ops = (H().op(0, 10, 1, "put", 1).op(20, 30, 2, "put", 2)
           .op(530, 540, 3, "get", None, 1, node="n1")
           .op(535, 545, 4, "get", None, 2, node="n2")
           .op(130, 140, 5, "get", None, 1, node="n3")).ops()
    rep = StalenessReport.of(register_staleness(ops, DYNAMO), by_f(ops, "get"),
                             families={"get": "get_item", "read-scan": "scan"}, t0=0)
    assert {k: (d.reads, d.stale, d.max) for k, d in rep.by_node.items()} == {
        "n1": (1, 1, 500.0), "n2": (1, 0, None), "n3": (1, 1, 100.0)}
    assert {k: (d.reads, d.stale, d.p50, d.max) for k, d in rep.by_read.items()} == {
        "get": (3, 2, 100.0, 500.0)}
    assert rep.families == {"get": "get_item"}
    out = rep.to_dict()
    assert out["by_read"]["get"]["family"] == "get_item"
    assert (out["stale"], out["max_ms"], out["max_staleness_ms"], out["beyond_bound"]) == (
        2, 500.0, None, 2)
    assert [(w["node"], w["stale_ms"], w["at_s"]) for w in out["worst"]] == [
        ("n1", 500.0, 0.53), ("n3", 100.0, 0.13)]
    assert rep.lines() == [
        "  stale reads: 2 of 3 ok reads, max 500 ms (n1, get), p50 100 ms, p90 500 ms, "
        "p99 500 ms",
        "  stale by node: n1 1 of 1 (max 500 ms), n3 1 of 1 (max 100 ms); "
        "by read: get (get_item) 2 of 3 (max 500 ms)"]
    bounded = StalenessReport.of(register_staleness(ops, DYNAMO), by_f(ops, "get"),
                                 max_staleness_ms=200)
    assert bounded.beyond_bound == 1
    assert bounded.lines()[0].endswith("; 1 beyond the max staleness of 200 ms")


def test_texts():
    assert [fmt_ms(x) for x in (0.04, 0.5, 59.9, 1840.0, 8998.5)] == [
        "0", "0.5", "59.9", "1,840", "8,998.5"]
    assert verdict_text("valid", None) == "VALID"
    assert verdict_text("valid", 2000) == "VALID within max staleness 2,000 ms"
