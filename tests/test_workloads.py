"""Workloads without a store: op streams, values, invocation and error mapping."""

from __future__ import annotations

import random

import pytest
from botocore.exceptions import (ClientError, ConnectionClosedError, ConnectTimeoutError,
                                 EndpointConnectionError, ReadTimeoutError)

from checkers.history import Event, History
from checkers.result import INVALID, VALID
from harness.clients import node_index, process_rng
from harness.workloads import (FAIL, INFO, OK, VALUE_BASE, BankWorkload, Completion, KeyRing, Op,
                               RegisterWorkload, SetWorkload, StaleTableError, classify,
                               make_workload)


def ops_of(workload, process: int, n: int, seed: int = 1) -> list[Op]:
    rng = process_rng(seed, process)
    return [workload.next_op(rng, process) for _ in range(n)]


# ------------------------------------------------------------------ generation

@pytest.mark.parametrize("name", ["register", "set", "bank"])
def test_same_seed_same_ops_per_process(name):
    a = [ops_of(make_workload(name), p, 300) for p in range(3)]
    b = [ops_of(make_workload(name), p, 300) for p in range(3)]
    assert a == b
    assert ops_of(make_workload(name), 0, 300, seed=2) != a[0]
    assert a[0] != a[1]


@pytest.mark.parametrize("name", ["register", "set", "bank"])
def test_ops_are_plain_data_and_use_every_f(name):
    w = make_workload(name)
    ops = ops_of(w, 0, 400)
    assert {op.f for op in ops} == set(w.fs)
    for op in ops:
        assert isinstance(op.f, str) and (op.key is None or isinstance(op.key, str))


def test_mix_is_configurable():
    w = make_workload("set", {"mix": {"add": 1, "read-query": 0, "read-scan": 1}})
    fs = {op.f for op in ops_of(w, 0, 200)}
    assert fs == {"add", "read-scan"}
    with pytest.raises(ValueError, match="unknown ops"):
        make_workload("set", {"mix": {"add": 1, "read": 1}})
    with pytest.raises(ValueError, match="unknown workload"):
        make_workload("queue")


def test_written_values_are_unique_across_processes():
    for name, written in (("register", lambda op: op.value if op.f == "put" else
                           op.value[1] if op.f == "update" else None),
                          ("set", lambda op: op.value if op.f == "add" else None)):
        w = make_workload(name)
        values = [written(op) for p in (0, 1, 7, 13) for op in ops_of(w, p, 500)]
        values = [v for v in values if v is not None]
        assert len(values) > 300 and len(values) == len(set(values))
        assert all(isinstance(v, int) and v > 0 for v in values)
        # process p writes p * 10**9 + n
        assert {v // VALUE_BASE for v in values} == {0, 1, 7, 13}


def test_register_keys_rotate_after_ops_per_key():
    w = RegisterWorkload(keys=2, ops_per_key=3)
    rng = random.Random(0)
    keys = [w.next_op(rng, 0).key for _ in range(30)]
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    assert all(c <= 3 for c in counts.values())
    assert set(counts) >= {"k0", "k1", "k2", "k3"}
    # slot s holds k{s}, k{s+2}, ...: a key's slot is its number mod K
    slots = {int(k[1:]) % 2 for k in keys}
    assert slots == {0, 1}
    assert sorted(w.final_ops(), key=lambda op: int(op.key[1:])) == [
        Op("get", k, None) for k in sorted(w.ring.current(), key=lambda k: int(k[1:]))]


def test_key_ring_with_shared_counts():
    import multiprocessing
    arr = multiprocessing.get_context("spawn").Array("q", 3)
    ring = KeyRing(3, 2, arr)
    assert [ring.take(0) for _ in range(5)] == ["k0", "k0", "k3", "k3", "k6"]
    assert ring.current() == ["k6", "k1", "k2"]
    assert arr[0] == 5


def test_register_update_compares_with_what_the_process_saw():
    w = RegisterWorkload(keys=1, ops_per_key=10**6, mix={"update": 1})
    rng = random.Random(3)
    op = w.next_op(rng, 4)
    assert op.f == "update" and op.key == "k0" and op.value[0] is None
    w.observe(4, Op("get", "k0"), Completion(OK, 17))
    assert w.next_op(rng, 4).value[0] == 17
    assert w.next_op(rng, 5).value[0] is None  # another process saw nothing
    last = w.next_op(rng, 4)
    w.observe(4, last, Completion(OK, last.value))
    assert w.next_op(rng, 4).value[0] == last.value[1]
    w.observe(4, Op("get", "k0"), Completion(OK, None))
    assert w.next_op(rng, 4).value[0] is None
    w.observe(4, Op("put", "k0", 99), Completion(FAIL, 99, "x"))  # not seen
    assert w.next_op(rng, 4).value[0] is None
    w.forget(4)


def test_bank_transfers_are_between_two_accounts():
    w = BankWorkload(accounts=3, max_transfer=4)
    for op in ops_of(w, 2, 300):
        if op.f == "transfer":
            v = op.value
            assert set(v) == {"from", "to", "amount"} and v["from"] != v["to"]
            assert {v["from"], v["to"]} <= {"a0", "a1", "a2"} and 1 <= v["amount"] <= 4
        else:
            assert op.value is None
    assert w.total == 300
    assert w.final_ops() == [Op("read-txn"), Op("read-scan")]
    assert SetWorkload().final_ops() == [Op("read-query"), Op("read-scan")]


def test_round_robin_binding_survives_retirement():
    c, n = 5, 3
    for slot in range(c):
        for gen in range(4):
            assert node_index(slot + gen * c, c, n) == slot % n


# --------------------------------------------------------------- error mapping

def client_error(code: str, status: int = 400, reasons=None, op: str = "PutItem"):
    resp = {"Error": {"Code": code, "Message": "m"},
            "ResponseMetadata": {"HTTPStatusCode": status}}
    if reasons is not None:
        resp["CancellationReasons"] = [{"Code": r} for r in reasons]
    return ClientError(resp, op)


URL = "http://127.0.0.1:1"
CASES = [
    # (error, read outcome, write outcome)
    (client_error("ConditionalCheckFailedException"), FAIL, FAIL),
    (client_error("ValidationException"), FAIL, FAIL),
    (client_error("ResourceNotFoundException"), FAIL, FAIL),
    (client_error("TransactionConflictException"), FAIL, FAIL),
    (client_error("TransactionCanceledException", reasons=["None", "ConditionalCheckFailed"]),
     FAIL, FAIL),
    (client_error("TransactionCanceledException", reasons=["ConditionalCheckFailed", "None"]),
     FAIL, FAIL),
    (client_error("TransactionCanceledException", reasons=["None", "TransactionConflict"]),
     FAIL, INFO),
    (client_error("TransactionCanceledException"), FAIL, INFO),  # no reasons given
    (client_error("SomethingNewException"), FAIL, INFO),
    (client_error("InternalServerError", 500), INFO, INFO),
    (client_error("ServiceUnavailable", 503), INFO, INFO),
    (client_error("WhateverItIs", 502), INFO, INFO),
    (client_error("ConditionalCheckFailedException", 500), INFO, INFO),  # 5xx wins
    (ReadTimeoutError(endpoint_url=URL), INFO, INFO),
    (ConnectionClosedError(endpoint_url=URL), INFO, INFO),
    (ConnectionResetError("reset by peer"), INFO, INFO),
    (EndpointConnectionError(endpoint_url=URL), FAIL, FAIL),
    (ConnectTimeoutError(endpoint_url=URL), FAIL, FAIL),
]


@pytest.mark.parametrize("exc,read,write", CASES, ids=lambda x: type(x).__name__
                         if isinstance(x, BaseException) else str(x))
def test_error_mapping_table(exc, read, write):
    rtype, rtext = classify(exc, read=True)
    wtype, wtext = classify(exc, read=False)
    assert (rtype, wtype) == (read, write)
    assert rtext == wtext and rtext and "\n" not in rtext


def test_error_text_names_the_code_and_reasons():
    _, text = classify(client_error("TransactionCanceledException",
                                    reasons=["None", "ConditionalCheckFailed"]), read=False)
    assert text == "TransactionCanceledException: m [None, ConditionalCheckFailed]"
    _, text = classify(client_error("InternalServerError", 500), read=False)
    assert text == "InternalServerError: m (HTTP 500)"
    _, text = classify(ReadTimeoutError(endpoint_url=URL), read=True)
    assert text.startswith("ReadTimeoutError: Read timeout")


# ------------------------------------------------------- invoking a fake client

class FakeClient:
    """Just enough of a DynamoDB client: canned answers, recorded calls."""

    def __init__(self, **answers):
        self.answers = answers
        self.calls: list[tuple[str, dict]] = []

    def __getattr__(self, name):
        def call(**kw):
            self.calls.append((name, kw))
            ans = self.answers[name]
            if callable(ans):
                return ans(**kw)
            if isinstance(ans, BaseException):
                raise ans
            return ans
        return call


def test_register_invoke_maps_values_and_conditions():
    w = RegisterWorkload()
    c = FakeClient(get_item={"Item": {"pk": {"S": "k1"}, "v": {"N": "42"}}},
                   put_item={}, update_item={})
    assert w.invoke(c, Op("get", "k1")) == Completion(OK, 42)
    assert c.calls[-1][1]["ConsistentRead"] is True
    assert w.invoke(FakeClient(get_item={}), Op("get", "k1")) == Completion(OK, None)
    assert w.invoke(c, Op("put", "k1", 7)) == Completion(OK, 7)
    assert c.calls[-1][1]["Item"] == {"pk": {"S": "k1"}, "v": {"N": "7"}}
    assert w.invoke(c, Op("update", "k1", [7, 8])) == Completion(OK, [7, 8])
    kw = c.calls[-1][1]
    assert kw["ConditionExpression"] == "v = :old" and kw["UpdateExpression"] == "SET v = :new"
    assert kw["ExpressionAttributeValues"] == {":old": {"N": "7"}, ":new": {"N": "8"}}
    w.invoke(c, Op("update", "k1", [None, 9]))
    kw = c.calls[-1][1]
    assert kw["ConditionExpression"] == "attribute_not_exists(v)"
    assert kw["ExpressionAttributeValues"] == {":new": {"N": "9"}}
    bad = FakeClient(update_item=client_error("ConditionalCheckFailedException"),
                     put_item=ReadTimeoutError(endpoint_url=URL),
                     get_item=client_error("InternalServerError", 500))
    done = w.invoke(bad, Op("update", "k1", [1, 2]))
    assert (done.type, done.value) == (FAIL, [1, 2])
    assert done.error.startswith("ConditionalCheckFailedException")
    assert w.invoke(bad, Op("put", "k1", 3)).type == INFO
    assert w.invoke(bad, Op("get", "k1")).type == INFO
    weird = FakeClient(get_item={"Item": {"v": {"S": "not a number"}}})
    assert w.invoke(weird, Op("get", "k1")).type == INFO  # a bug is never an ok


def test_set_reads_page_through_last_evaluated_key():
    pages = [{"Items": [{"sk": {"N": "5"}}, {"sk": {"N": "1"}}],
              "LastEvaluatedKey": {"pk": {"S": "s"}, "sk": {"N": "5"}}},
             {"Items": [{"sk": {"N": "3"}}]}]
    seen = []

    def query(**kw):
        seen.append(kw.get("ExclusiveStartKey"))
        return pages[len(seen) - 1]

    w = SetWorkload()
    assert w.invoke(FakeClient(query=query), Op("read-query")) == Completion(OK, [1, 3, 5])
    assert seen == [None, {"pk": {"S": "s"}, "sk": {"N": "5"}}]
    scan = FakeClient(scan={"Items": [{"pk": {"S": "s"}, "sk": {"N": "2"}},
                                      {"pk": {"S": "other"}, "sk": {"N": "9"}}]})
    assert w.invoke(scan, Op("read-scan")) == Completion(OK, [2])
    c = FakeClient(put_item={})
    assert w.invoke(c, Op("add", None, 12)) == Completion(OK, 12)
    assert c.calls[0][1]["Item"] == {"pk": {"S": "s"}, "sk": {"N": "12"}}


def test_a_read_told_the_table_is_gone_observes_its_loss_and_a_write_fails():
    gone = client_error("ResourceNotFoundException", op="Query")
    lost = FakeClient(query=gone, scan=gone, get_item=gone, put_item=gone)
    for w, op, empty in [(SetWorkload(), Op("read-query"), []),
                         (SetWorkload(), Op("read-scan"), []),
                         (RegisterWorkload(), Op("get", "k1"), None)]:
        done = w.invoke(lost, op)
        assert (done.type, done.value) == (OK, empty)
        assert done.error == "ResourceNotFoundException: m (read as the table's loss)"
    assert SetWorkload().invoke(lost, Op("add", None, 4)).type == FAIL
    assert SetWorkload().invoke(FakeClient(scan=client_error("ValidationException")),
                                Op("read-scan")).type == FAIL   # other 4xx: a failed read


def test_bank_invoke():
    w = BankWorkload(accounts=3)
    c = FakeClient(transact_write_items={}, transact_get_items={"Responses": [
        {"Item": {"pk": {"S": "a0"}, "b": {"N": "90"}}}, {},
        {"Item": {"pk": {"S": "a2"}, "b": {"N": "110"}}}]},
        scan={"Items": [{"pk": {"S": "a1"}, "b": {"N": "5"}},
                        {"pk": {"S": "a0"}, "b": {"N": "95"}}]})
    v = {"from": "a0", "to": "a2", "amount": 3}
    assert w.invoke(c, Op("transfer", None, v)) == Completion(OK, v)
    items = c.calls[0][1]["TransactItems"]
    assert items[0]["Update"]["ConditionExpression"] == "b >= :x"
    assert items[0]["Update"]["Key"] == {"pk": {"S": "a0"}}
    assert items[1]["Update"]["UpdateExpression"] == "SET b = b + :x"
    assert w.invoke(c, Op("read-txn")) == Completion(OK, {"a0": 90, "a2": 110})
    assert len(c.calls[-1][1]["TransactItems"]) == 3
    assert w.invoke(c, Op("read-scan")) == Completion(OK, {"a0": 95, "a1": 5})
    broke = FakeClient(transact_write_items=client_error(
        "TransactionCanceledException", reasons=["ConditionalCheckFailed", "None"]))
    assert w.invoke(broke, Op("transfer", None, v)) == Completion(
        FAIL, v, "TransactionCanceledException: m [ConditionalCheckFailed, None]")


def test_bank_setup_seeds_idempotently():
    created = []

    def put_item(**kw):
        if kw["Item"]["pk"]["S"] in created:
            raise client_error("ConditionalCheckFailedException")
        assert kw["ConditionExpression"] == "attribute_not_exists(pk)"
        created.append(kw["Item"]["pk"]["S"])
        return {}

    def scan(**kw):
        return {"Items": [{"pk": {"S": a}, "b": {"N": "25"}} for a in created]}

    c = FakeClient(create_table={}, describe_table={"Table": {"TableStatus": "ACTIVE"}},
                   put_item=put_item, scan=scan)
    w = BankWorkload(accounts=4, initial=25)
    w.setup(c)
    c.answers["create_table"] = client_error("ResourceInUseException")
    w.setup(c)
    assert created == ["a0", "a1", "a2", "a3"]
    # balances that moved: an earlier run's table
    c.answers["scan"] = {"Items": [{"pk": {"S": "a0"}, "b": {"N": "20"}}]}
    with pytest.raises(StaleTableError, match="already holds data"):
        w.setup(c)


@pytest.mark.parametrize("name", ["register", "set"])
def test_setup_refuses_a_table_with_data_from_an_earlier_run(name):
    c = FakeClient(create_table=client_error("ResourceInUseException"),
                   describe_table={"Table": {"TableStatus": "ACTIVE"}}, scan={"Items": []})
    make_workload(name).setup(c)  # exists but empty: fine (a retried setup)
    c.answers["scan"] = {"Items": [{"pk": {"S": "k0"}, "v": {"N": "1"}}]}
    with pytest.raises(StaleTableError):
        make_workload(name).setup(c)


# ------------------------------------------------------------------ checking

MS = 1_000_000


def history_of(*ops: tuple) -> History:
    """(call_ms, ret_ms, process, f, key, invoke value, ok value, node), in time order."""
    events: list[Event] = []
    for call, ret, process, f, key, value, out, node in ops:
        events.append(Event(len(events), "invoke", process, f, key, value, call * MS, node))
        events.append(Event(len(events), "ok", process, f, key, out, ret * MS, node))
    return History(events, path="history.jsonl")


def checked(workload, history: History):
    """The workload's check of a history's ops, paired once here as a run's analysis does."""
    return workload.check(history.operations(), t0=0, path=history.path)


def test_each_workload_carries_its_checker_and_no_model_name():
    for name in ("register", "set", "bank"):
        w = make_workload(name)
        assert callable(w.check) and not hasattr(w, "model")


def test_register_check_finds_a_stale_get_and_places_it_in_time():
    h = history_of((10, 20, 0, "put", "k0", 1000000001, 1000000001, "n1"),
                   (30, 40, 1, "get", "k0", None, None, "n3"))
    ops = h.operations()
    out = make_workload("register").check(ops, t0=0, path=h.path)
    assert out.verdict == INVALID and out.results["linearizable"]["invalid_keys"] == ["k0"]
    [a] = out.anomalies
    assert (a.kind, a.op.node, a.time) == ("not linearizable", "n3", 30 * MS)
    assert a.op is ops[1]  # the very op given: the check paired nothing again
    assert out.summary[0] == "linearizability: INVALID over 1 keys"
    [page] = out.timeline
    assert (page.ops, page.path) == (2, "history.jsonl")
    assert page.keys[0].witness.failing_op is a.op
    assert out.describe(a.op).startswith("get -> ")


def test_set_check_reports_stale_reads_with_the_whole_history_on_its_page():
    h = history_of((0, 10, 0, "add", None, 1, 1, "n1"),
                   (20, 30, 1, "read-query", None, None, [], "n3"),
                   (40, 50, 2, "read-scan", None, None, [1], "n2"))
    out = checked(SetWorkload(), h)
    assert out.verdict == INVALID and out.results["set"]["stale_reads"] == 1
    [a] = out.anomalies
    assert (a.kind, a.op.f, a.time) == ("stale read", "read-query", 20 * MS)
    assert out.summary[0] == "set: INVALID" and any("at 0.020 s" in s for s in out.summary)
    [page] = out.timeline
    assert (page.ops, page.path) == (3, "history.jsonl")
    assert out.describe(a.op) == "read-query -> 0 elements"


def test_register_check_measures_staleness_and_takes_a_bound():
    # get -> 1001 on n3 began 500 ms after put 1002 (begun after put 1001 returned) was acked.
    h = history_of((0, 10, 0, "put", "k0", 1001, 1001, "n1"),
                   (20, 30, 1, "put", "k0", 1002, 1002, "n2"),
                   (530, 540, 2, "get", "k0", None, 1001, "n3"),
                   (550, 560, 2, "get", "k0", None, 1002, "n1"))
    ops = h.operations()
    plain = checked(RegisterWorkload(), h)
    st = plain.results["staleness"]
    assert plain.verdict == INVALID
    assert (st["reads"], st["stale"], st["max_ms"], st["max_staleness_ms"]) == (2, 1, 500.0, None)
    assert st["by_node"]["n3"]["stale"] == 1 and st["by_node"]["n1"]["stale"] == 0
    assert st["by_read"]["get"]["family"] == "get_item"
    assert st["worst"][0]["superseded_by"] == ops[1].id
    assert plain.summary[:2] == [
        "linearizability: INVALID over 1 keys",
        "  stale reads: 1 of 2 ok reads, max 500 ms (n3, get), p50 500 ms, p90 500 ms, "
        "p99 500 ms"]
    for bound, verdict in ((499, INVALID), (500, VALID), (2000, VALID)):
        out = RegisterWorkload().check(ops, t0=0, path=h.path, max_staleness_ms=bound)
        assert out.verdict == verdict, bound
        assert out.results["staleness"]["max_staleness_ms"] == bound
        assert out.results["staleness"]["max_ms"] == 500.0  # reported in full
    assert out.summary[0] == "linearizability: VALID within max staleness 2,000 ms over 1 keys"
    tight = RegisterWorkload().check(ops, t0=0, path=h.path, max_staleness_ms=499)
    [a] = tight.anomalies
    assert a.op is ops[2] and a.time == 530 * MS  # the op given, at its real time


def test_set_check_takes_a_bound_and_reports_staleness_in_full():
    h = history_of((0, 10, 0, "add", None, 1, 1, "n1"),
                   (510, 520, 1, "read-query", None, None, [], "n3"),
                   (540, 550, 2, "read-scan", None, None, [1], "n2"))
    plain = checked(SetWorkload(), h)
    assert plain.verdict == INVALID
    assert plain.results["staleness"]["by_read"]["read-query"]["family"] == "query"
    out = SetWorkload().check(h.operations(), t0=0, path=h.path, max_staleness_ms=500)
    assert (out.verdict, out.anomalies) == (VALID, [])
    st = out.results["staleness"]
    assert (st["stale"], st["max_ms"], st["beyond_bound"], st["max_staleness_ms"]) == (
        1, 500.0, 0, 500)
    assert out.summary[0] == "set: VALID within max staleness 500 ms"
    assert "  stale reads: 1 of 2 ok reads, max 500 ms (n3, read-query), p50 500 ms, " \
           "p90 500 ms, p99 500 ms; all within the max staleness of 500 ms" in out.summary


def test_bank_check_uses_the_workloads_total_and_accounts():
    bank = BankWorkload(accounts=2, initial=10)
    h = history_of((0, 10, 0, "read-txn", None, None, {"a0": 10, "a1": 10}, "n1"),
                   (20, 30, 1, "read-scan", None, None, {"a0": 5, "a1": 10}, "n2"))
    out = checked(bank, h)
    assert out.verdict == INVALID and out.results["bank"]["total"] == 20
    [a] = out.anomalies
    assert (a.kind, a.op.node, a.time) == ("wrong total", "n2", 20 * MS)
    assert out.timeline[0].keys[0].witness.failing_op is a.op
    assert out.describe(a.op) == "read-scan -> total 15"
    valid = checked(bank, history_of((0, 10, 0, "read-txn", None, None, {"a0": 10, "a1": 10},
                                      "n1")))
    assert (valid.verdict, valid.anomalies) == (VALID, [])
    bounded = bank.check(h.operations(), t0=0, path=h.path, max_staleness_ms=10_000)
    assert bounded.verdict == INVALID  # a bound changes nothing of the bank's invariants


def test_the_set_spreads_its_partitions_over_the_groups_and_reports_each():
    from collections import Counter
    from types import SimpleNamespace

    w = SetWorkload(partitions=8, groups=4)
    route = w._router()
    assert Counter(route(p) for p in w._names) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert len(set(w._names)) == 8 and w.partition_of(9) == w._names[1]
    res = SimpleNamespace(stale_elements=[1, 9, 2], lost=[3])
    by = w.by_group(res)
    g1, g2, g3 = (str(route(w.partition_of(e))) for e in (1, 2, 3))
    assert by[g1]["stale_elements"] == 2 + (g2 == g1)
    assert by[g3]["lost"] == 1
    assert sum(c["stale_elements"] for c in by.values()) == 3
    assert SetWorkload()._names == ["s"]          # unsharded: the one partition, as ever


def test_register_check_counts_the_keys_of_each_group():
    from harness.workloads import group_router

    route = group_router("faultline_register", 4)
    k_a = "k0"
    k_b = next(f"k{i}" for i in range(1, 50) if route(f"k{i}") != route(k_a))
    h = history_of((10, 20, 0, "put", k_a, 1000000001, 1000000001, "n1"),
                   (30, 40, 1, "get", k_a, None, None, "n3"),          # stale: k_a invalid
                   (50, 60, 2, "put", k_b, 1000000002, 1000000002, "n2"),
                   (70, 80, 2, "get", k_b, None, 1000000002, "n2"))
    out = checked(RegisterWorkload(groups=4), h)
    by = out.results["by_group"]
    assert by[str(route(k_a))] == {"keys": 1, "invalid_keys": 1}
    assert by[str(route(k_b))] == {"keys": 1, "invalid_keys": 0}
    assert out.summary[-1].startswith("  by Raft group: group 0: ")
    assert "by_group" not in checked(RegisterWorkload(), h).results    # unsharded: no such part
