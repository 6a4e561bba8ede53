"""The bank checker: hand-written histories with known anomalies, exact figures."""

from __future__ import annotations

import json

from checkers.bank import check_bank
from checkers.history import Event, Operation, pair, read_jsonl, write_jsonl
from checkers.result import INVALID, UNKNOWN, VALID

ACCOUNTS = [0, 1, 2]
TOTAL = 30


class H:
    """A history in real-time order; times in ms."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, t_ms, process, type, f, value=None, node=None) -> "H":
        self.events.append(Event(len(self.events), type, process, f, None, value,
                                 int(t_ms * 1_000_000), node))
        return self

    def transfer(self, t_call, t_ret, process, frm, to, amount, status="ok", node="n1"):
        v = {"from": frm, "to": to, "amount": amount}
        self(t_call, process, "invoke", "transfer", v, node)
        return self(t_ret, process, status, "transfer", v if status == "ok" else None, node)

    def read(self, t_call, t_ret, process, balances, f="read-txn", node="n1"):
        self(t_call, process, "invoke", f, None, node)
        return self(t_ret, process, "ok", f, balances, node)

    def ops(self) -> list[Operation]:
        return pair(self.events)


def bal(a, b, c):
    """Balances as they come out of JSON: string keys."""
    return {"0": a, "1": b, "2": c}


def valid_history() -> H:
    h = H()
    h.read(0, 5, 9, bal(10, 10, 10))
    h.transfer(10, 20, 1, 0, 1, 5)
    h.read(30, 40, 2, bal(5, 15, 10), node="n2")
    h.transfer(50, 60, 1, 2, 0, 20, status="fail")  # insufficient funds
    h.read(70, 80, 3, bal(5, 15, 10), f="read-scan", node="n3")
    h(90, 4, "invoke", "transfer", {"from": 1, "to": 2, "amount": 3}, "n2")
    h(1090, 4, "info", "transfer", None, "n2")       # timed out, but applied
    h.read(1100, 1110, 2, bal(5, 12, 13))
    h.read(1200, 1210, 3, bal(5, 12, 13), f="read-scan")
    return h


def test_valid_history():
    r = check_bank(valid_history().ops(), total=TOTAL, accounts=ACCOUNTS)
    assert r.verdict == VALID and r.reason is None
    assert r.bad_reads == [] and r.witness is None
    assert r.transfers == {"ok": 1, "fail": 1, "info": 1}
    assert r.by_kind["txn"]["reads"] == 3 and r.by_kind["scan"]["reads"] == 2
    assert r.by_kind["txn"]["bad"] == r.by_kind["scan"]["bad"] == 0
    assert r.accounts == ["0", "1", "2"]
    f = r.figures()
    assert (f["txn_violations"], f["scan_violations"], f["negative_reads"],
            f["incomplete_reads"]) == (0, 0, 0, 0)
    assert r.describe().startswith("bank: VALID")
    json.dumps(r.to_dict())


def test_total_and_accounts_can_be_derived():
    r = check_bank(valid_history().ops())
    assert r.verdict == VALID
    assert (r.total, r.total_source) == (30, "first-read")
    assert r.accounts == ["0", "1", "2"]


def test_int_keys_are_the_same_accounts():
    h = H().read(0, 1, 1, {0: 10, 1: 10, 2: 10})
    assert check_bank(h.ops(), total=TOTAL, accounts=["0", "1", "2"]).verdict == VALID


def in_flight_history(f: str) -> H:
    """A read that saw the debit of a transfer but not its credit."""
    h = H()
    h(10, 1, "invoke", "transfer", {"from": 0, "to": 1, "amount": 5}, "n1")
    h(11, 6, "invoke", "transfer", {"from": 2, "to": 1, "amount": 4}, "n2")
    h.read(12, 15, 2, bal(5, 10, 10), f=f, node="n2")
    h(20, 1, "ok", "transfer", {"from": 0, "to": 1, "amount": 5}, "n1")
    h(21, 6, "ok", "transfer", {"from": 2, "to": 1, "amount": 4}, "n2")
    h.read(30, 35, 3, bal(5, 19, 6), node="n3")
    return h


def test_read_txn_off_by_a_transfer_in_flight():
    ops = in_flight_history("read-txn").ops()
    r = check_bank(ops, total=TOTAL, accounts=ACCOUNTS)
    assert r.verdict == INVALID
    [b] = r.bad_reads
    assert (b.kind, b.problems, b.sum, b.deviation) == ("txn", ["wrong-total"], 25, -5)
    assert b.op.node == "n2" and b.at_s == 0.002
    # The culprit: the transfer of 5 in flight (not the one of 4).
    assert b.in_flight == [ops[0]]
    assert r.txn_violations == [b] and r.scan_violations == []
    assert r.by_kind["txn"] == {"reads": 2, "bad": 1, "wrong-total": 1, "negative": 0,
                                "incomplete": 0, "max_abs_deviation": 5}
    assert r.by_node == {"n2": {"reads": 1, "bad": 1}, "n3": {"reads": 1, "bad": 0}}
    assert r.witness is b
    text = r.describe()
    assert ("read-txn by process 2 on n2 at 0.002 s: total 25, expected 30 (-5); "
            "in flight: transfer 0->1 of 5 by process 1 (ok)") in text
    d = r.to_dict()
    assert d["txn_violations"] == 1 and d["details"]["txn_violations"][0]["deviation"] == -5
    json.dumps(d)


def test_the_same_figures_from_a_history_file(tmp_path):
    # Named accounts, as the workload writes them, through JSONL.
    h = H()
    h.transfer(0, 10, 1, "a0", "a1", 5)
    h.read(20, 30, 2, {"a0": 95, "a1": 100, "a2": 100})
    path = tmp_path / "history.jsonl"
    write_jsonl(path, h.events)
    r = check_bank(pair(read_jsonl(path)), total=300, accounts=["a0", "a1", "a2"])
    assert r.verdict == INVALID and r.bad_reads[0].deviation == -5
    assert r.bad_reads[0].in_flight == []  # the transfer had completed: no excuse


def test_scan_off_by_a_transfer_in_flight_is_invalid_when_scans_are_snapshots():
    ops = in_flight_history("read-scan").ops()
    r = check_bank(ops, total=TOTAL, accounts=ACCOUNTS)
    assert r.verdict == INVALID
    assert r.txn_violations == [] and len(r.scan_violations) == 1
    assert r.scan_violations[0].deviation == -5
    assert r.by_kind["scan"]["bad"] == 1


def test_scan_need_not_be_a_snapshot_when_told():
    ops = in_flight_history("read-scan").ops()
    r = check_bank(ops, total=TOTAL, accounts=ACCOUNTS, scan_snapshot=False)
    assert r.verdict == VALID
    assert r.scan_violations == [] and len(r.nonsnapshot_scans) == 1
    assert r.by_kind["scan"] == {"reads": 1, "bad": 0, "wrong-total": 1, "negative": 0,
                                 "incomplete": 0, "max_abs_deviation": 5}
    assert "1 scans with a wrong total, allowed" in r.describe()


def test_negative_balance():
    h = H()
    h.transfer(0, 10, 1, 0, 1, 15)
    h.read(20, 30, 2, bal(-5, 25, 10), node="n4")
    r = check_bank(h.ops(), total=TOTAL, accounts=ACCOUNTS)
    assert r.verdict == INVALID
    [b] = r.bad_reads
    assert b.problems == ["negative"] and b.negative == {"0": -5}
    assert b.deviation is None and b.sum == 30
    assert r.figures()["negative_reads"] == 1
    assert "account 0 has balance -5" in r.describe()


def test_negative_balance_in_a_scan_counts_even_without_snapshots():
    h = H().read(0, 1, 1, bal(-1, 21, 10), f="read-scan")
    r = check_bank(h.ops(), total=TOTAL, accounts=ACCOUNTS, scan_snapshot=False)
    assert r.verdict == INVALID and r.scan_violations[0].problems == ["negative"]


def test_incomplete_and_unknown_accounts():
    h = H()
    h.read(0, 1, 1, {"0": 10, "1": 20})
    h.read(2, 3, 1, {"0": 10, "1": 10, "2": 5, "7": 5}, f="read-scan")
    h.read(4, 5, 1, {"0": 10, "1": 10, "2": None})
    r = check_bank(h.ops(), total=TOTAL, accounts=ACCOUNTS)
    assert r.verdict == INVALID
    a, b, c = r.bad_reads
    assert (a.problems, a.missing, a.deviation) == (["missing"], ["2"], None)
    assert (b.problems, b.unexpected) == (["unexpected"], ["7"])
    assert c.missing == ["2"]
    assert r.figures()["incomplete_reads"] == 3


def test_malformed_read():
    h = H().read(0, 1, 1, [10, 10, 10])
    r = check_bank(h.ops(), total=TOTAL, accounts=ACCOUNTS)
    assert r.verdict == INVALID and r.bad_reads[0].problems == ["malformed"]


def test_no_read_is_unknown():
    h = H().transfer(0, 1, 1, 0, 1, 5)
    r = check_bank(h.ops(), total=TOTAL, accounts=ACCOUNTS)
    assert r.verdict == UNKNOWN and r.reason == "no ok read"


def test_anomalies_and_the_page_name_each_bad_read():
    ops = in_flight_history("read-txn").ops()
    r = check_bank(ops, total=TOTAL, accounts=ACCOUNTS, t0=0)
    [a] = r.anomalies()
    assert (a.kind, a.op.node, a.time, a.text) == ("wrong total", "n2", 12_000_000,
                                                    r.bad_reads[0].line(TOTAL))
    page = r.page(len(ops))
    assert (page.ops, page.model) == (len(ops), "bank")
    [k] = page.keys
    assert k.key == "read-txn at 0.012 s on n2" and k.algorithm == "bank"
    # The witness: the read and the transfer in flight that explains it.
    assert k.witness.failing_op is a.op and k.witness.window == [ops[0], a.op]
    assert k.witness.states == ["sum 25"]
