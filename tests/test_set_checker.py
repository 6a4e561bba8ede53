"""The set checker: hand-written histories with known anomalies, exact figures."""

from __future__ import annotations

import json
import time

from checkers.history import Event, Operation, pair, read_jsonl, write_jsonl
from checkers.result import INVALID, UNKNOWN, VALID
from checkers.set_checker import check_set


class H:
    """A history written in real-time order; times in ms."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, t_ms: float, process, type: str, f: str, value=None,
                 node: str | None = None) -> "H":
        self.events.append(Event(len(self.events), type, process, f, None, value,
                                 int(t_ms * 1_000_000), node))
        return self

    def op(self, t_call, t_ret, process, f, value=None, result=None, node=None,
           status="ok") -> "H":
        """An op whose invoke and completion follow each other directly."""
        self(t_call, process, "invoke", f, value, node)
        return self(t_ret, process, status, f, result if result is not None else value, node)

    def ops(self) -> list[Operation]:
        return pair(self.events)


def by_element(ops: list[Operation]) -> dict:
    return {op.input: op for op in ops if op.f == "add"}


# ------------------------------------------------------------- stale reads

def stale_history() -> H:
    h = H()
    h(0, "nemesis", "info", "start-partition", ["n1"])
    h.op(10, 20, 1, "add", 1, node="n2")
    h.op(30, 40, 2, "add", 2, node="n3")
    h.op(50, 60, 1, "add", 3, node="n2")
    # n1 is the old leader, cut off: its Query serves its local state.
    h.op(100, 105, 7, "read-query", None, [1], node="n1")
    h.op(110, 120, 8, "read-scan", None, [1, 2, 3], node="n2")
    h(150, "nemesis", "info", "stop-partition")
    h.op(200, 210, 9, "final-read", None, [1, 2, 3], node="n3")
    return h


def test_stale_query_read_on_a_partitioned_leader():
    ops = stale_history().ops()
    r = check_set(ops)
    assert r.verdict == INVALID and r.reason is None
    assert r.t0 == 10_000_000
    [s] = r.stale_reads
    assert (s.kind, s.op.process, s.op.node) == ("read-query", 7, "n1")
    assert s.missing == [2, 3]
    assert s.stale_ms == 60.0 and s.min_stale_ms == 40.0
    assert s.at_s == 0.09
    assert s.oldest is by_element(ops)[2]  # the earliest acknowledged of those it missed
    st = r.staleness
    assert {k: (d.reads, d.stale, d.max) for k, d in st.by_read.items()} == {
        "final-read": (1, 0, None), "read-query": (1, 1, 60.0), "read-scan": (1, 0, None)}
    assert {k: (d.reads, d.stale, d.max) for k, d in st.by_node.items()} == {
        "n1": (1, 1, 60.0), "n2": (1, 0, None), "n3": (1, 0, None)}
    assert (st.overall.stale, st.overall.p50, st.overall.max) == (1, 60.0, 60.0)
    assert r.lost == [] and r.phantoms == [] and r.duplicates == []
    assert r.final_source == "final-read" and len(r.final_reads) == 1
    f = r.figures()
    assert f["stale_reads"] == 1 and f["stale_elements"] == 2
    assert f["adds"] == {"ok": 3} and f["ok_reads"] == 3
    # The witness: the stale read and the two adds it missed, as op records.
    w = r.witness
    assert w is not None and w.kind == "stale-read"
    assert w.reads == [s.op]
    adds = by_element(ops)
    assert w.adds == [adds[2], adds[3]]
    text = r.describe()
    assert ("read-query by process 7 on n1 at 0.090 s missed 2 elements acknowledged "
            "up to 60 ms before it began: 2, 3") in text
    assert text.startswith("set: INVALID")
    json.dumps(r.to_dict())  # results.json material


def test_the_same_figures_from_a_history_file(tmp_path):
    path = tmp_path / "history.jsonl"
    write_jsonl(path, stale_history().events)
    events = read_jsonl(path)
    r = check_set(pair(events, path=str(path)))
    assert r.verdict == INVALID
    assert [(s.op.f, s.missing, s.stale_ms) for s in r.stale_reads] == [
        ("read-query", [2, 3], 60.0)]


def test_time_origin_can_be_given():
    r = check_set(stale_history().ops(), t0=0)
    assert r.stale_reads[0].at_s == 0.1
    assert "at 0.100 s" in r.describe()


def test_a_read_that_misses_one_element_says_element():
    h = H()
    h.op(0, 1, 1, "add", 1).op(2, 3, 2, "read-scan", None, [], node="n4")
    h.op(10, 11, 3, "final-read", None, [1])
    r = check_set(h.ops())
    assert ("read-scan by process 2 on n4 at 0.002 s missed 1 element acknowledged "
            "up to 1 ms before it began: 1") in r.describe()


def test_event_order_decides_not_times():
    # Equal timestamps (a coarse clock): the ok of the add comes before the
    # read's invoke in the history, so the read must see it.
    h = H()
    h.op(5, 5, 1, "add", 1)
    h.op(5, 6, 2, "read-query", None, [])
    h.op(9, 9, 3, "final-read", None, [1])
    r = check_set(h.ops())
    assert r.verdict == INVALID
    assert r.stale_reads[0].missing == [1] and r.stale_reads[0].stale_ms == 0.0


# ------------------------------------------------------------------ lost

def test_lost_element():
    h = H()
    h.op(0, 10, 1, "add", 1)
    h.op(20, 30, 2, "add", 2)
    h.op(40, 45, 3, "read-query", None, [1, 2])   # seen once...
    h.op(50, 55, 3, "read-scan", None, [1])       # ...then gone
    h.op(100, 110, 4, "final-read", None, [1])
    ops = h.ops()
    r = check_set(ops)
    assert r.verdict == INVALID
    assert r.lost == [2]
    # A lost element is reported once, not again as a stale read per read.
    assert r.stale_reads == []
    w = r.witness
    assert w.kind == "lost" and w.elements == [2]
    assert w.adds == [by_element(ops)[2]]
    assert r.figures()["lost"] == 1
    assert "lost elements: 2" in r.describe()


def test_final_reads_that_disagree():
    # After healing, n1 still misses an element n2 returns: not lost, but
    # the final read on n1 is stale.
    h = H()
    h.op(0, 10, 1, "add", 1).op(20, 30, 1, "add", 2)
    h.op(100, 110, 4, "final-read", None, [1, 2], node="n2")
    h.op(100, 111, 5, "final-read", None, [1], node="n1")
    r = check_set(h.ops())
    assert r.lost == []
    [s] = r.stale_reads
    assert (s.kind, s.op.node, s.missing, s.stale_ms) == ("final-read", "n1", [2], 70.0)
    assert r.verdict == INVALID


def test_an_add_acknowledged_after_a_final_read_began_is_not_lost_from_it():
    h = H()
    h.op(0, 10, 1, "add", 1)
    h(20, 2, "invoke", "add", 2)
    h(25, 4, "invoke", "final-read")
    h(30, 2, "ok", "add", 2)
    h(35, 4, "ok", "final-read", [1])
    h.op(40, 50, 5, "final-read", None, [1, 2])
    r = check_set(h.ops())
    assert r.lost == [] and r.stale_reads == [] and r.verdict == VALID


# --------------------------------------------------- phantoms, duplicates

def test_phantom():
    h = H()
    h.op(0, 10, 1, "add", 1)
    h.op(20, 30, 2, "read-scan", None, [1, 99], node="n3")
    h.op(40, 50, 3, "final-read", None, [1])
    r = check_set(h.ops())
    assert r.verdict == INVALID
    [p] = r.phantoms
    assert p.elements == {99: 1} and p.op.node == "n3"
    assert r.phantom_elements == [99]
    assert r.stale_reads == [] and r.lost == []
    assert r.witness.kind == "phantom" and r.witness.elements == [99]
    assert ("read-scan by process 2 on n3 at 0.020 s returned elements no add ever attempted: 99"
            in r.describe())


def test_duplicate():
    h = H()
    h.op(0, 10, 1, "add", 1).op(10, 15, 1, "add", 2)
    h.op(20, 30, 2, "read-query", None, [1, 1, 2, 2, 2])
    h.op(40, 50, 3, "final-read", None, [1, 2])
    r = check_set(h.ops())
    assert r.verdict == INVALID
    [d] = r.duplicates
    assert d.elements == {1: 2, 2: 3}
    assert r.stale_reads == [] and r.phantoms == []
    assert r.figures()["duplicate_reads"] == 1
    assert "returned elements more than once: 1 (x2), 2 (x3)" in r.describe()


def test_early_read_of_an_element_whose_add_came_later():
    h = H()
    h.op(0, 10, 2, "read-query", None, [4])
    h.op(20, 30, 1, "add", 4)
    h.op(40, 50, 3, "final-read", None, [4])
    r = check_set(h.ops())
    assert r.verdict == INVALID
    [e] = r.early
    assert e.elements == {4: 1} and e.op.f == "read-query"
    assert r.phantoms == []


def test_failed_add_seen():
    h = H()
    h.op(0, 10, 1, "add", 7, status="fail")
    h.op(20, 30, 2, "read-scan", None, [7])
    h.op(40, 50, 3, "final-read", None, [7])
    r = check_set(h.ops())
    assert r.verdict == INVALID
    assert [a.elements for a in r.failed_seen] == [{7: 1}, {7: 1}]
    assert r.adds == {"fail": 1}


# ------------------------------------------------------------------ valid

def test_concurrent_adds_may_or_may_not_be_seen():
    h = H()
    # add 1 overlaps a read that does not see it,
    h(10, 1, "invoke", "add", 1, "n1")
    h(15, 2, "invoke", "read-query", None, "n2")
    h(20, 1, "ok", "add", 1, "n1")
    h(25, 2, "ok", "read-query", [], "n2")
    # add 2 overlaps a read that sees it before the add is acknowledged,
    h(30, 1, "invoke", "add", 2, "n1")
    h(35, 3, "invoke", "read-scan", None, "n3")
    h(40, 3, "ok", "read-scan", [1, 2], "n3")
    h(45, 1, "ok", "add", 2, "n1")
    # and add 3 overlaps two reads, one seeing it and one not.
    h(50, 1, "invoke", "add", 3, "n1")
    h(51, 2, "invoke", "read-query", None, "n2")
    h(52, 3, "invoke", "read-scan", None, "n3")
    h(53, 2, "ok", "read-query", [1, 2, 3], "n2")
    h(54, 3, "ok", "read-scan", [1, 2], "n3")
    h(55, 1, "ok", "add", 3, "n1")
    h.op(60, 70, 4, "final-read", None, [1, 2, 3])
    r = check_set(h.ops())
    assert r.verdict == VALID, r.describe()
    assert r.stale_reads == [] and r.early == [] and r.lost == []
    assert r.witness is None
    assert (r.staleness.by_read["read-query"].reads, r.staleness.overall.stale) == (2, 0)


def test_info_adds_recovered_and_never_read():
    h = H()
    h(0, 1, "invoke", "add", 5, "n1")
    h(1000, 1, "info", "add", None, "n1")   # timed out: unknown
    h(1001, 2, "invoke", "add", 6, "n2")
    h(2000, 2, "info", "add", None, "n2")
    h.op(2100, 2110, 3, "read-query", None, [])   # not yet visible: fine
    h.op(2200, 2210, 3, "read-scan", None, [5])   # it took effect later
    h.op(3000, 3010, 4, "final-read", None, [5])
    r = check_set(h.ops())
    assert r.verdict == VALID, r.describe()
    assert r.recovered == [5] and r.never_read == [6]
    assert r.adds == {"info": 2}
    assert r.figures()["recovered"] == 1 and r.figures()["never_read"] == 1


# ---------------------------------------------------------- final reads

def test_no_final_read_is_unknown():
    h = H()
    h(0, 1, "invoke", "add", 1)
    h.op(1, 2, 2, "read-query", None, [])
    h(3, 1, "ok", "add", 1)
    r = check_set(h.ops())
    assert r.verdict == UNKNOWN and "no final read" in r.reason
    assert r.final_source == "none"


def test_never_read_is_unknown():
    h = H().op(0, 1, 1, "add", 1)
    r = check_set(h.ops())
    assert r.verdict == UNKNOWN and r.reason == "the set was never read"


def test_last_reads_stand_in_for_final_reads():
    h = H()
    h.op(0, 10, 1, "add", 1).op(20, 30, 1, "add", 2)
    h.op(40, 50, 2, "read-scan", None, [1])
    h.op(60, 70, 3, "read-query", None, [1])
    r = check_set(h.ops())
    assert r.final_source == "last-reads" and len(r.final_reads) == 2
    assert r.lost == [2] and r.verdict == INVALID


def test_final_reads_can_be_given():
    h = H()
    h.op(0, 10, 1, "add", 1)
    h.op(40, 50, 2, "read-scan", None, [1])
    ops = h.ops()
    r = check_set(ops, final_reads=[ops[-1]])
    assert r.final_source == "given" and r.verdict == VALID


def test_fail_and_info_reads_are_counted_only():
    h = H()
    h.op(0, 10, 1, "add", 1)
    h.op(20, 30, 2, "read-query", None, None, status="fail")
    h(40, 3, "invoke", "read-scan")
    h(50, 3, "info", "read-scan")
    h.op(60, 70, 4, "final-read", None, [1])
    r = check_set(h.ops())
    assert r.verdict == VALID
    assert r.reads == {"read-query": {"ok": 0, "fail": 1, "info": 0},
                       "read-scan": {"ok": 0, "fail": 0, "info": 1},
                       "final-read": {"ok": 1, "fail": 0, "info": 0}}


# ------------------------------------------------------------------ speed

def test_100k_ops_in_well_under_a_few_seconds():
    """99,900 adds, 100 reads of the whole set (5M elements read in all);
    the reads of ops 60,999 to 69,999 come from a node frozen at op 60,999."""
    ops: list[Operation] = []
    acked: list[int] = []
    frozen: list[int] | None = None
    pos = 0
    for i in range(100_000):
        t = i * 1_000_000
        if i % 1000 == 999:
            stale = 60_000 <= i < 70_000
            if stale and frozen is None:
                frozen = list(acked)
            value = frozen if stale else list(acked)
            ops.append(Operation(len(ops), 2, "read-scan" if i % 2 else "read-query", None,
                                 None, value, "ok", pos, pos + 1, t, t + 500_000,
                                 "n1" if stale else "n2"))
        else:
            ops.append(Operation(len(ops), 1, "add", None, i, i, "ok", pos, pos + 1,
                                 t, t + 500_000, "n3"))
            acked.append(i)
        pos += 2
    ops[-1].f = "final-read"
    started = time.perf_counter()
    r = check_set(ops)
    elapsed = time.perf_counter() - started
    assert elapsed < 4.0, elapsed
    assert r.verdict == INVALID
    # The first frozen read is up to date; the 9 after it miss ever more.
    assert len(r.stale_reads) == 9
    n1 = r.staleness.by_node["n1"]
    assert (n1.reads, n1.stale, n1.max) == (10, 9, 8998.5)
    assert r.staleness.by_node["n2"].stale == 0
    first, last = r.stale_reads[0], r.stale_reads[-1]
    assert first.missing == list(range(61_000, 61_999))
    assert (first.stale_ms, first.min_stale_ms) == (998.5, 0.5)
    assert len(last.missing) == 999 * 9 and last.missing[0] == 61_000
    assert r.staleness.overall.max == 8998.5
    assert r.lost == []


# ------------------------------------------------------------ for the report

def several_anomalies() -> H:
    """Element 2 is lost, 1 is missed by two reads, 99 was never added."""
    h = H()
    h.op(0, 10, 1, "add", 1, node="n2")
    h.op(20, 30, 2, "add", 2, node="n3")
    h.op(40, 45, 7, "read-query", None, [1], node="n1")
    h.op(50, 52, 8, "read-scan", None, [2, 99], node="n2")
    h.op(60, 70, 7, "read-scan", None, [], node="n1")
    h.op(100, 110, 9, "final-read", None, [1, 99], node="n3")
    return h


def test_every_anomaly_at_its_op_in_time_order():
    ops = several_anomalies().ops()
    r = check_set(ops, t0=0)
    got = [(a.kind, a.op.f, a.op.node, a.time) for a in r.anomalies()]
    assert got == [("lost", "add", "n3", 20_000_000),
                   ("stale read", "read-scan", "n2", 50_000_000),
                   ("phantom", "read-scan", "n2", 50_000_000),
                   ("stale read", "read-scan", "n1", 60_000_000),
                   ("phantom", "final-read", "n3", 100_000_000)]
    stale = r.anomalies()[1]
    assert stale.text == r.stale_reads[0].line()
    assert stale.to_dict(t0=0)["at_s"] == 0.05


def test_the_page_counts_the_whole_history_and_draws_each_witness():
    ops = several_anomalies().ops()
    r = check_set(ops, t0=0)
    page = r.page(len(ops), "history.jsonl")
    assert (page.ops, page.model, page.verdict, page.path) == (len(ops), "set", INVALID,
                                                               "history.jsonl")
    # The worst stale read first, then the other, the lost element, the phantoms.
    assert [k.algorithm for k in page.keys] == ["stale-read", "stale-read", "lost",
                                                "phantom", "phantom"]
    assert page.keys[0].key == "stale-read at 0.060 s on n1"
    w = page.keys[0].witness
    assert w.failing_op.f == "read-scan" and [a.input for a in w.linearized] == [1]
    assert page.keys[2].key == "lost at 0.020 s on n3"
    assert len(r.page(len(ops), limit=2).keys) == 2
    assert r.witness.explanation.startswith("the worst stale read: ")
