"""MVCC store: snapshot reads, tombstones, scans, GC, snapshots."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from system.mvcc import (BadSnapshot, MVCCStore, NoSuchTable, SnapshotTooOld,
                         TableExists)


def item(pk: str, sk: str = "", v: object = 0) -> dict:
    return {"pk": {"S": pk}, "sk": {"S": sk}, "v": {"N": str(v)}}


def store_with_table(name: str = "t") -> MVCCStore:
    m = MVCCStore()
    m.create_table(name, {"hash": "pk", "range": "sk"}, 1)
    return m


# --------------------------------------------------------------- catalogue


def test_catalogue():
    m = MVCCStore()
    assert m.list_tables() == []
    m.create_table("b", {"hash": "id"}, 5)
    m.create_table("a", {"hash": "pk", "range": "sk"}, 6)
    assert m.list_tables() == ["a", "b"]
    assert m.describe("b") == {"name": "b", "schema": {"hash": "id"}, "created_ts": 5,
                               "item_count": 0}
    assert m.last_commit_ts == 6
    with pytest.raises(TableExists):
        m.create_table("a", {}, 7)
    m.apply_writes(8, [("a", b"x", b"1", item("x", "1"))])
    assert m.describe("a")["item_count"] == 1
    desc = m.delete_table("a", 9)
    assert desc["item_count"] == 1
    assert m.list_tables() == ["b"] and m.last_commit_ts == 9
    for call in (lambda: m.get("a", b"x", b"1", 10), lambda: m.describe("a"),
                 lambda: m.scan_table("a", 10), lambda: m.delete_table("a", 11),
                 lambda: m.apply_writes(11, [("a", b"x", b"1", {})])):
        with pytest.raises(NoSuchTable):
            call()
    m.create_table("a", {}, 12)  # a new table of the same name starts empty
    assert m.get("a", b"x", b"1", 12) is None
    assert m.scan_table("a", 12) == []


# ------------------------------------------------------------ point reads


def test_snapshot_reads_at_older_timestamps_and_tombstones():
    m = store_with_table()
    m.apply_writes(10, [("t", b"k", b"", item("k", v=1))])
    m.apply_writes(20, [("t", b"k", b"", item("k", v=2))])
    m.apply_writes(30, [("t", b"k", b"", None)])
    m.apply_writes(40, [("t", b"k", b"", item("k", v=4))])
    expect = {5: None, 10: 1, 15: 1, 20: 2, 29: 2, 30: None, 39: None, 40: 4, 10**9: 4}
    for ts, v in expect.items():
        got = m.get("t", b"k", b"", ts)
        assert (got is None if v is None else got["v"]["N"] == str(v)), ts
    assert m.latest_commit_ts("t", b"k", b"") == 40
    assert m.latest_commit_ts("t", b"nope", b"") == 0
    assert m.describe("t")["item_count"] == 1
    m.apply_writes(50, [("t", b"k", b"", None)])
    assert m.latest_commit_ts("t", b"k", b"") == 50  # tombstones count for conflicts
    assert m.describe("t")["item_count"] == 0
    assert m.get("t", b"k", b"", 45)["v"]["N"] == "4"


def test_batch_is_atomic_and_validated_first():
    m = store_with_table()
    m.apply_writes(10, [("t", b"a", b"", item("a"))])
    with pytest.raises(NoSuchTable):
        m.apply_writes(20, [("t", b"b", b"", item("b")), ("missing", b"c", b"", item("c"))])
    with pytest.raises(TypeError):
        m.apply_writes(20, [("t", b"b", b"", item("b")), ("t", "str-key", b"", item("c"))])
    with pytest.raises(ValueError):
        m.apply_writes(-1, [])
    assert m.get("t", b"b", b"", 100) is None
    assert m.last_commit_ts == 10
    assert m.stats()["versions"] == 1
    m.apply_writes(20, [("t", b"b", b"", item("b")), ("t", b"a", b"", None)])
    assert m.get("t", b"b", b"", 20) is not None and m.get("t", b"a", b"", 20) is None
    assert m.get("t", b"a", b"", 19) is not None
    assert m.stats()["batches_applied"] == 2 and m.stats()["writes_applied"] == 3


def test_same_timestamp_replaces_and_older_is_inserted_in_order():
    m = store_with_table()
    m.apply_writes(10, [("t", b"k", b"", item("k", v=1))])
    m.apply_writes(10, [("t", b"k", b"", item("k", v=2))])  # re-applied: replaces
    assert [ts for ts, _ in m.versions("t", b"k", b"")] == [10]
    assert m.get("t", b"k", b"", 10)["v"]["N"] == "2"
    m.apply_writes(30, [("t", b"k", b"", item("k", v=3))])
    m.apply_writes(20, [("t", b"k", b"", None)])  # late, older timestamp
    assert [ts for ts, _ in m.versions("t", b"k", b"")] == [10, 20, 30]
    assert m.get("t", b"k", b"", 25) is None
    assert m.get("t", b"k", b"", 30)["v"]["N"] == "3"
    assert m.last_commit_ts == 30
    st_ = m.stats()
    assert st_["versions"] == 3 and st_["tombstones"] == 1 and st_["live_items"] == 1
    # two writes of one key in one batch: the last wins
    m.apply_writes(40, [("t", b"k", b"", item("k", v=4)), ("t", b"k", b"", item("k", v=5))])
    assert m.get("t", b"k", b"", 40)["v"]["N"] == "5"
    assert m.stats()["versions"] == 4


# ------------------------------------------------------------------- scans


def _fill_partition(m: MVCCStore) -> None:
    sks = [b"", b"a", b"a\x00", b"ab", b"b", b"\x00", b"\xff", b"\xff\xff", b"m"]
    m.apply_writes(10, [("t", b"p", sk, {"sk": sk}) for sk in sks])
    # neighbours whose keys share a prefix with b"p" must stay out of it
    m.apply_writes(11, [("t", b"p\x00", b"a", {"sk": b"x"}), ("t", b"pa", b"", {"sk": b"y"}),
                        ("t", b"", b"z", {"sk": b"z"}), ("t", b"o", b"\xff", {"sk": b"w"})])


def sks(rows):
    return [sk for sk, _ in rows]


def test_partition_scan_order_bounds_reverse_limit_start_after():
    m = store_with_table()
    _fill_partition(m)
    allsk = sorted([b"", b"a", b"a\x00", b"ab", b"b", b"\x00", b"\xff", b"\xff\xff", b"m"])
    assert sks(m.scan_partition("t", b"p", 100)) == allsk
    assert sks(m.scan_partition("t", b"p", 100, reverse=True)) == allsk[::-1]
    assert m.scan_partition("t", b"p", 9) == []          # before the writes
    assert sks(m.scan_partition("t", b"p", 100, lo=b"a", hi=b"b")) == [b"a", b"a\x00", b"ab", b"b"]
    assert sks(m.scan_partition("t", b"p", 100, lo=b"a", hi=b"b", lo_inclusive=False,
                                hi_inclusive=False)) == [b"a\x00", b"ab"]
    assert sks(m.scan_partition("t", b"p", 100, lo=b"a", hi=b"b", reverse=True,
                                limit=2)) == [b"b", b"ab"]
    assert sks(m.scan_partition("t", b"p", 100, lo=b"m")) == [b"m", b"\xff", b"\xff\xff"]
    assert sks(m.scan_partition("t", b"p", 100, hi=b"a", hi_inclusive=False)) == [b"", b"\x00"]
    assert sks(m.scan_partition("t", b"p", 100, limit=3)) == allsk[:3]
    assert m.scan_partition("t", b"p", 100, limit=0) == []
    assert sks(m.scan_partition("t", b"p", 100, start_after=b"ab")) == [b"b", b"m", b"\xff",
                                                                         b"\xff\xff"]
    assert sks(m.scan_partition("t", b"p", 100, start_after=b"ab", reverse=True)) == [
        b"a\x00", b"a", b"\x00", b""]
    # start_after outside the bounds: the bounds win
    assert sks(m.scan_partition("t", b"p", 100, lo=b"b", start_after=b"a")) == [
        b"b", b"m", b"\xff", b"\xff\xff"]
    assert sks(m.scan_partition("t", b"p", 100, lo=b"a", hi=b"b", start_after=b"b")) == []
    assert sks(m.scan_partition("t", b"p", 100, hi=b"b", reverse=True, start_after=b"z",
                                limit=1)) == [b"b"]
    assert m.scan_partition("t", b"nope", 100) == []
    assert sks(m.scan_partition("t", b"p\x00", 100)) == [b"a"]
    assert sks(m.scan_partition("t", b"", 100)) == [b"z"]


def test_partition_pages_reassemble_the_scan():
    m = store_with_table()
    m.apply_writes(10, [("t", b"p", b"%03d" % i, {"i": i}) for i in range(50)])
    m.apply_writes(11, [("t", b"p", b"%03d" % i, None) for i in range(0, 50, 7)])
    for reverse in (False, True):
        full = m.scan_partition("t", b"p", 11, reverse=reverse)
        pages, last = [], None
        while True:
            page = m.scan_partition("t", b"p", 11, reverse=reverse, limit=4, start_after=last)
            if not page:
                break
            pages += page
            last = page[-1][0]
        assert pages == full and len(full) == 50 - 8
        assert all(r[1]["i"] % 7 for r in full)


def test_table_scan_order_and_paging():
    m = store_with_table()
    _fill_partition(m)
    rows = m.scan_table("t", 100)
    keys = [(pk, sk) for pk, sk, _ in rows]
    assert keys == sorted(keys) and len(keys) == 13
    assert keys[0] == (b"", b"z") and keys[-1] == (b"pa", b"")
    got, last = [], None
    while True:
        page = m.scan_table("t", 100, start_after=last, limit=5)
        if not page:
            break
        got += page
        last = page[-1][:2]
    assert got == rows
    assert m.scan_table("t", 10) == [r for r in rows if r[0] == b"p"]  # snapshot at 10
    assert m.scan_table("t", 100, limit=2) == rows[:2]


# ------------------------------------------------------------- a model


_keys = st.tuples(st.sampled_from([b"", b"a", b"a\x00", b"b"]),
                  st.sampled_from([b"", b"\x00", b"x", b"xy", b"\xff"]))
_ops = st.lists(st.lists(st.tuples(_keys, st.one_of(st.none(), st.integers(0, 9))),
                         min_size=1, max_size=4),
                min_size=1, max_size=25)


def _model_read(history, key, ts):
    """The newest write of ``key`` at or before ``ts`` (None: absent)."""
    val = None
    for cts, writes in history:
        if cts <= ts:
            for k, v in writes:
                if k == key:
                    val = v
    return val


def _build(batches):
    m = MVCCStore()
    m.create_table("t", {}, 1)
    history = []
    for i, batch in enumerate(batches):
        cts = 10 * (i + 1)
        m.apply_writes(cts, [("t", pk, sk, None if v is None else {"v": v})
                             for (pk, sk), v in batch])
        history.append((cts, batch))
    return m, history


def _observe(m, read_ts):
    """Everything a read at ``read_ts`` can see, through every read API."""
    out = {"table": m.scan_table("t", read_ts)}
    for pk in (b"", b"a", b"a\x00", b"b"):
        out[pk] = m.scan_partition("t", pk, read_ts)
        out[pk, "rev"] = m.scan_partition("t", pk, read_ts, reverse=True, lo=b"\x00")
        for sk in (b"", b"\x00", b"x", b"xy", b"\xff"):
            out[pk, sk] = m.get("t", pk, sk, read_ts)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ops)
def test_reads_match_a_model(batches):
    m, history = _build(batches)
    for read_ts in range(0, 10 * len(batches) + 11, 5):
        table = m.scan_table("t", read_ts)
        expect = []
        for key in sorted({k for _, w in history for k, _ in w}):
            v = _model_read(history, key, read_ts)
            if v is not None:
                expect.append((key[0], key[1], {"v": v}))
        assert table == expect
        for pk in (b"a", b"b"):
            assert m.scan_partition("t", pk, read_ts) == [(sk, it) for p, sk, it in expect
                                                          if p == pk]
    st_ = m.stats()
    assert st_["versions"] == sum(len(m.versions("t", *k)) for k in
                                  {k for _, w in history for k, _ in w})


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ops, st.integers(0, 30))
def test_gc_keeps_every_read_at_or_after_the_gc_point(batches, gc_step):
    m, history = _build(batches)
    gc_ts = min(gc_step, len(batches) + 1) * 10 + (gc_step % 2) * 5  # on or between commits
    top = max(10 * len(batches) + 10, gc_ts)
    read_points = sorted({gc_ts, top, *range(gc_ts, top + 1, 5)})
    before = {ts: _observe(m, ts) for ts in read_points}
    latest = {k: m.latest_commit_ts("t", *k) for _, w in history for k, _ in w}
    versions_before = m.stats()["versions"]

    dropped = m.gc(gc_ts)

    for ts in read_points:
        assert _observe(m, ts) == before[ts], ts
    st_ = m.stats()
    assert st_["versions"] == versions_before - dropped
    for key in latest:
        vs = m.versions("t", *key)
        old = [(ts, it) for ts, it in vs if ts <= gc_ts]
        # at most the one version a read at gc_ts sees, and never a tombstone
        assert len(old) <= 1 and all(it is not None for _, it in old)
        if vs and vs[-1][0] > gc_ts:
            assert m.latest_commit_ts("t", *key) == latest[key]
    assert st_["tombstones"] == sum(1 for k in latest for _, it in m.versions("t", *k)
                                    if it is None)
    assert st_["live_items"] == sum(1 for k in latest if m.get("t", *k, top) is not None)
    if gc_ts > 0:
        with pytest.raises(SnapshotTooOld):
            m.get("t", b"a", b"", gc_ts - 1)
        with pytest.raises(SnapshotTooOld):
            m.scan_table("t", gc_ts - 1)
    # a second GC at the same point changes nothing
    assert m.gc(gc_ts) == 0
    for ts in read_points:
        assert _observe(m, ts) == before[ts]


def test_gc_drops_dead_keys_and_keeps_only_candidates():
    m = store_with_table()
    m.apply_writes(10, [("t", b"%d" % i, b"", {"i": i}) for i in range(100)])
    assert m.stats()["gc_candidates"] == 0          # single live versions: nothing to do
    m.apply_writes(20, [("t", b"%d" % i, b"", {"i": -i}) for i in range(10)])
    m.apply_writes(30, [("t", b"%d" % i, b"", None) for i in range(10, 20)])
    assert m.stats()["gc_candidates"] == 20
    assert m.gc(25) == 10                             # the overwritten versions at 10
    assert m.stats()["gc_candidates"] == 10           # the deleted keys wait for 30
    assert m.gc(30) == 20                             # their versions and tombstones
    s = m.stats()
    assert s["keys"] == 90 and s["versions"] == 90 and s["tombstones"] == 0
    assert s["gc_candidates"] == 0 and s["gc_ts"] == 30 and s["live_items"] == 90
    assert m.latest_commit_ts("t", b"15", b"") == 0
    assert m.get("t", b"5", b"", 30) == {"i": -5}


# --------------------------------------------------------------- snapshots


def test_snapshot_round_trip():
    m = MVCCStore()
    m.create_table("t", {"hash": "pk", "range": "sk", "attrs": [["pk", "S"], ["sk", "B"]]}, 1)
    m.create_table("u", {"hash": "id"}, 2)
    nested = {"pk": {"S": "a"}, "b": {"B": b"\x00\xff"}, "l": {"L": [{"N": "1"}, {"NULL": True}]},
              "m": {"M": {"x": {"BOOL": False}}}, "ss": {"SS": ["p", "q"]}}
    m.apply_writes(10, [("t", b"a", b"\x00", nested), ("u", b"x", b"", {"id": {"S": "x"}})])
    m.apply_writes(20, [("t", b"a", b"\x00", None), ("t", b"b", b"", {"v": {"N": "2"}})])
    m.apply_writes(30, [("t", b"a", b"\x01", {"v": {"N": "3"}})])
    m.gc(15)
    data = m.snapshot()
    assert isinstance(data, bytes)

    r = MVCCStore()
    r.create_table("junk", {}, 99)  # replaced wholesale
    r.restore(data)
    assert r.list_tables() == ["t", "u"]
    assert r.describe("t") == m.describe("t")
    assert r.stats() == m.stats()
    for ts in (15, 19, 20, 25, 30, 99):
        assert r.scan_table("t", ts) == m.scan_table("t", ts)
        assert r.scan_table("u", ts) == m.scan_table("u", ts)
    assert r.get("t", b"a", b"\x00", 15) == nested
    assert r.last_commit_ts == 30 and r.gc_ts == 15
    with pytest.raises(SnapshotTooOld):
        r.get("t", b"a", b"\x00", 14)
    # the restored store keeps working, GC candidates included
    r.apply_writes(40, [("t", b"b", b"", {"v": {"N": "4"}})])
    # b's version at 20; a/\x00's item at 10 and its tombstone at 20
    assert r.gc(40) == 3
    assert r.versions("t", b"a", b"\x00") == []
    assert r.snapshot() != data
    assert MVCCStore().restore(m.snapshot()) is None


def _doc(rows, **kw):
    doc = {"format": "faultline-mvcc/1", "last_commit_ts": 1, "gc_ts": 0,
           "tables": [{"name": "x", "schema": {}, "created_ts": 1, "rows": rows}]}
    doc.update(kw)
    return msgpack.packb(doc, use_bin_type=True)


@pytest.mark.parametrize("bad", [b"", b"\xc1", b"\x93\x01\x02\x03", b"\x81\xa6format\xa1x",
                                 _doc([[b"a", b"", [[]]]]), _doc(5), _doc([[b"a"]]),
                                 _doc([], gc_ts="x"), _doc([], tables=None)])
def test_restore_rejects_garbage(bad):
    m = store_with_table()
    with pytest.raises(BadSnapshot):
        m.restore(bad)
    assert m.list_tables() == ["t"]  # untouched


def test_many_items_smoke():
    m = store_with_table()
    for b in range(40):
        m.apply_writes(10 + b, [("t", b"p%03d" % (i % 50), b"%05d" % (b * 100 + i), {"i": i})
                                for i in range(100)])
    assert m.stats()["keys"] == 4000
    part = m.scan_partition("t", b"p007", 10**6)
    assert len(part) == 80 and sks(part) == sorted(sks(part))
    r = MVCCStore()
    r.restore(m.snapshot())
    assert r.scan_table("t", 10**6) == m.scan_table("t", 10**6)
