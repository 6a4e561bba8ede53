"""`faultline shrink`: delta debugging, what each workload's shrink keeps, the
command's files, messages and exit codes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from checkers import importers
from checkers.bank import check_bank
from checkers.check import check_ops
from checkers.ddmin import DDMin
from checkers.history import NEMESIS, Event, Operation, pair, write_jsonl
from checkers.models import get_model
from checkers.report import Anomaly
from checkers.result import INVALID, VALID
from checkers.set_checker import check_set
from checkers.shrink import RegisterRules, Rules, shrink, sub_history
from harness.shrink_source import linearizability
from harness.cli import EX_DATAERR, main
from harness.workloads import CheckOutcome

FIXTURES = Path(__file__).parent / "fixtures"


class H:
    """A history in real-time order: each op's invoke and completion."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def op(self, t_call: int, t_ret: int | None, process: int | str, f: str, value=None,
           result=None, status: str = "ok", key: str | None = "k", error: str | None = None
           ) -> "H":
        """An op from ``t_call`` to ``t_ret`` (ms; None: never completes)."""
        self.events.append(Event(0, "invoke", process, f, key, value, t_call * 10**6))
        if t_ret is not None:
            self.events.append(Event(0, status, process, f, key,
                                     result if result is not None else value,
                                     t_ret * 10**6, error=error))
        return self

    def written(self) -> list[Event]:
        """The events in time order (completions before invokes at a tie)."""
        events = sorted(self.events, key=lambda e: (e.time, e.type == "invoke"))
        return [Event(i, e.type, e.process, e.f, e.key, e.value, e.time, e.node, e.error)
                for i, e in enumerate(events)]

    def save(self, path: Path) -> Path:
        write_jsonl(path, self.written())
        return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def saved_run(directory: Path, h: H, workload: str, **options) -> Path:
    directory.mkdir()
    (directory / "test.json").write_text(json.dumps(
        {"spec": {"workload": workload, "workload_options": options}, "seed": 1, "t0_ns": 0}))
    h.save(directory / "history.jsonl")
    return directory


def brief(ops: list[Operation]) -> list[tuple]:
    return [(op.f, op.input if op.status != "ok" or op.f != "get" else op.output)
            for op in ops]


# ------------------------------------------------------------------- ddmin

def test_ddmin_finds_the_items_the_failure_needs_and_no_more():
    dd = DDMin(lambda xs: {3, 17, 18} <= set(xs))
    assert dd.minimise(list(range(40))) == [3, 17, 18]
    assert dd.tests < 60  # O(k log n), not one test per subset
    # a test that fails on nothing at all needs no item
    assert DDMin(lambda xs: True).minimise([1, 2, 3]) == []


def test_a_shrink_keeps_its_anomaly_and_makes_no_new_one():
    """A judge that sees the anomaly at op 4 when op 1 is there too, and a
    phantom at op 4 when op 2 is gone: the smallest set with the anomaly,
    {1, 4}, has a phantom the full history does not, so op 2 stays."""
    ops = [Operation(i, i, "op", None, i, i, "ok", 2 * i, 2 * i + 1) for i in range(6)]

    def judge(kept: list[Operation]) -> CheckOutcome:
        ids = {op.id for op in kept}
        found = [Anomaly(kind, ops[4], "") for kind, seen in (
            ("stale read", {1, 4} <= ids), ("phantom", 4 in ids and 2 not in ids)) if seen]
        return CheckOutcome(INVALID if found else VALID, {}, [], found, [], str)
    result = shrink(ops, judge, lambda o, target: Rules(o))
    assert [op.id for op in result.ops] == [1, 2, 4]
    assert result.target is not None and result.target.kind == "stale read"


# ---------------------------------------------------------------- register

def stale_register() -> H:
    """put 1, put 2 (after it), then a get of 1 that began after put 2
    returned: not linearizable.  Around it, ops that have nothing to do with it."""
    return (H()
            .op(0, 10, 0, "put", 1)
            .op(12, 14, 1, "get", result=1)
            .op(11, 20, 2, "put", 2)
            .op(15, 18, 3, "get", status="fail", error="ConnectTimeoutError: x")
            .op(22, 30, 1, "get", result=1)                 # stale: put 2 returned at 20
            .op(25, 35, 3, "put", 3)
            .op(36, 40, 1, "get", result=3)
            .op(37, None, 4, "update", [3, 4], status="info")
            .op(41, 45, 0, "get", result=4)
            .op(46, 50, 2, "put", 5, key="other")
            .op(51, 55, 0, "get", result=5, key="other"))


def test_a_stale_register_read_shrinks_to_the_three_ops_that_show_it():
    h = stale_register()
    events = h.written()
    events.insert(3, Event(0, "info", NEMESIS, "start-partition", None, {"n1": ["n2"]}, 10**6))
    ops = pair(events)
    model = get_model("dynamo-item")
    judge = linearizability(model)
    result = shrink(ops, lambda o: judge(o, None),
                    lambda o, target: RegisterRules([x for x in o if x.key == target.op.key],
                                                    model))
    assert result.verdict == INVALID and result.before == 11
    assert result.target.kind == "not linearizable" and result.target.op.key == "k"
    assert brief(result.ops) == [("put", 1), ("put", 2), ("get", 1)]
    assert result.ops[2].call_time == 22 * 10**6  # the stale get, not the first one
    assert check_ops(result.ops, "dynamo-item").verdict == INVALID
    # 1-minimal: without any one op it passes, or (without put 1) its get
    # returns a value nobody wrote, an anomaly of the shrink's own making
    for i in range(3):
        rest = result.ops[:i] + result.ops[i + 1:]
        assert (check_ops(rest, "dynamo-item").verdict == VALID) == (i != 0)
    # written out: the ops' own events, nemesis events left out, indexed anew
    written = sub_history(events, result.ops)
    assert [e.index for e in written] == list(range(6))
    assert all(e.process != NEMESIS for e in written)
    assert brief(pair(written)) == brief(result.ops)


def test_a_failed_update_keeps_the_write_that_made_it_fail():
    """update 1->3 failed (the value was not 1): with put 1 kept, so must be
    put 2, the only write that could have replaced 1 first, else the update's
    failure would be a contradiction of the shrink's own making."""
    ops = pair(H().op(0, 1, 0, "put", 1).op(2, 10, 1, "put", 2)
               .op(5, 6, 0, "update", [1, 3], status="fail",
                   error="ConditionalCheckFailedException: no")
               .op(20, 21, 0, "put", 9).written())
    put1, put2, update, put9 = ops
    rules = RegisterRules(ops, get_model("dynamo-item"))
    assert set(rules.needs(update, {put1.id, update.id})) == {put2.id}
    assert set(rules.needs(update, {update.id})) == set()  # 1 never written: it cannot be 1
    assert check_ops([put1, update], "dynamo-item").verdict == INVALID  # what it prevents


def test_values_written_twice_keep_every_write():
    """Knossos's small integers: which write a read saw is not known, so
    removing a write could make any read stale; only reads go."""
    ops = pair(H().op(0, 1, 0, "put", 1).op(2, 3, 0, "put", 2).op(4, 5, 0, "put", 1)
               .op(6, 7, 1, "get", result=1).written())
    rules = RegisterRules(ops, get_model("dynamo-item"))
    assert rules.fixed() == {op.id for op in ops if op.f == "put"}
    assert list(rules.needs(ops[3], {op.id for op in ops})) == []


def test_the_command_writes_a_shrunk_history_that_check_finds_invalid(capsys, tmp_path):
    history = tmp_path / "cas-register-invalid.edn"
    shutil.copy(FIXTURES / "cas-register-invalid.edn", history)
    code, out, err = run(capsys, "shrink", str(history))
    assert code == 1, err
    shrunk = tmp_path / "shrunk.jsonl"
    assert out.splitlines()[-1].startswith(f"shrunk {history}: 4 -> 3 ops in ")
    assert out.splitlines()[-1].endswith(" s: not linearizable")
    assert "read -> 3 by process 1" in out and "cannot take effect" in out  # the witness
    assert "cannot be linearized" in (tmp_path / "shrunk.html").read_text()
    # the failed cas is gone; the writes and the stale read stay
    assert [(e.type, e.f, e.value) for e in importers.load(str(shrunk)).events] == [
        ("invoke", "write", 3), ("ok", "write", 3), ("invoke", "write", 4),
        ("ok", "write", 4), ("invoke", "read", None), ("ok", "read", 3)]
    code, out, _ = run(capsys, "check", str(shrunk))
    assert code == 1 and " INVALID " in out.splitlines()[0]


def test_a_jepsen_etcd_history_shrinks_and_still_fails_under_its_model(
        capsys, tmp_path, shared_data):
    history = tmp_path / "etcd_000.log"
    shutil.copy(shared_data / "porcupine" / "test_data" / "jepsen" / "etcd_000.log", history)
    out_path = tmp_path / "small.jsonl"
    code, out, err = run(capsys, "shrink", str(history), "-o", str(out_path))
    assert code == 1, err
    sizes = re.search(r": (\d+) -> (\d+) ops in ", out.splitlines()[-1])
    assert sizes is not None
    before, after = map(int, sizes.groups())
    assert after < before
    assert f"check it: faultline check --model etcd {out_path}" in out
    assert (tmp_path / "small.html").exists()
    code, out, _ = run(capsys, "check", "--model", "etcd", str(out_path))
    assert code == 1 and f"{after} ops" in out.splitlines()[0]


# --------------------------------------------------------------------- set

def stale_set() -> H:
    """A read-scan that misses 3, acknowledged before it began; the final
    reads have everything."""
    return (H()
            .op(0, 10, 0, "add", 1, key=None)
            .op(5, 15, 1, "add", 2, key=None)
            .op(20, 30, 0, "add", 3, key=None)
            .op(35, 40, 1, "read-query", result=[1, 2, 3], key=None)
            .op(42, 50, 2, "read-scan", result=[1, 2], key=None)
            .op(45, 60, 0, "add", 4, key=None)
            .op(70, None, 1, "add", 5, status="info", key=None)
            .op(90, 95, 2, "read-query", result=[1, 2, 3, 4], key=None)
            .op(96, 99, 3, "read-scan", result=[1, 2, 3, 4], key=None))


def test_a_stale_set_read_shrinks_to_the_read_and_what_it_missed(
        capsys, tmp_path):
    run_dir = saved_run(tmp_path / "run", stale_set(), "set")
    code, out, err = run(capsys, "shrink", str(run_dir))
    assert code == 1, err
    assert out.splitlines()[-1].endswith(" s: stale read")
    ops = importers.load(str(run_dir / "shrunk.jsonl")).operations()
    res = check_set(ops)
    assert res.verdict == INVALID
    [stale] = res.stale_reads
    assert (stale.op.f, stale.missing) == ("read-scan", [3])
    # the read is seen through the elements kept: the adds of 1 and 2 went,
    # and with them 1 and 2 from what it returned, so neither is a phantom;
    # a later op keeps the stale read from passing for a final one
    assert not res.phantoms and not res.lost
    assert [op.input for op in ops if op.f == "add"] == [3]
    assert stale.op.output == [] and len(ops) == 3
    # shrinking the shrunk history finds nothing to remove
    code, out, _ = run(capsys, "shrink", "--workload", "set", str(run_dir / "shrunk.jsonl"),
                       "-o", str(tmp_path / "again.jsonl"))
    assert code == 1 and ": 3 -> 3 ops in " in out.splitlines()[-1]
    # and faultline check, judging with the set's checker, finds it invalid
    code, out, _ = run(capsys, "check", "--workload", "set", str(run_dir / "shrunk.jsonl"))
    assert code == 1 and out.startswith(f"{run_dir / 'shrunk.jsonl'}  INVALID  3 ops")
    assert "stale reads: 1 of 2 ok reads" in out


def test_a_phantom_is_kept_not_projected_away(capsys, tmp_path):
    """An element nobody added is the anomaly itself: the projection of set
    reads drops only elements whose adds were removed."""
    h = (H()
         .op(0, 10, 0, "add", 1, key=None)
         .op(5, 15, 1, "add", 2, key=None)
         .op(20, 30, 2, "read-query", result=[1, 2, 99], key=None)
         .op(40, 50, 0, "read-scan", result=[1, 2], key=None)
         .op(60, 70, 1, "read-query", result=[1, 2], key=None))
    run_dir = saved_run(tmp_path / "run", h, "set")
    code, out, err = run(capsys, "shrink", str(run_dir))
    assert code == 1, out + err
    assert out.splitlines()[-1].endswith(": phantom")
    ops = importers.load(str(run_dir / "shrunk.jsonl")).operations()
    res = check_set(ops)
    assert res.verdict == INVALID and res.phantoms
    assert any(op.output and 99 in op.output for op in ops if op.f == "read-query")


# -------------------------------------------------------------------- bank

def test_a_bad_bank_read_shrinks_to_the_read_and_the_transfer_in_flight(capsys, tmp_path):
    def t(a: str, b: str, n: int) -> dict:
        return {"from": a, "to": b, "amount": n}
    h = (H()
         .op(0, 10, 0, "transfer", t("a0", "a1", 5), key=None)
         .op(12, 15, 1, "read-txn", result={"a0": 5, "a1": 15, "a2": 10}, key=None)
         .op(20, 40, 0, "transfer", t("a1", "a2", 3), key=None)
         .op(25, 30, 1, "read-txn", result={"a0": 5, "a1": 12, "a2": 10}, key=None)
         .op(26, 35, 2, "transfer", t("a2", "a0", 2), key=None)
         .op(50, 55, 1, "read-scan", result={"a0": 7, "a1": 12, "a2": 11}, key=None))
    run_dir = saved_run(tmp_path / "run", h, "bank", accounts=3, initial=10)
    code, out, err = run(capsys, "shrink", str(run_dir))
    assert code == 1, err
    assert ": 6 -> 2 ops in " in out.splitlines()[-1]
    assert out.splitlines()[-1].endswith(" s: wrong total")
    ops = importers.load(str(run_dir / "shrunk.jsonl")).operations()
    res = check_bank(ops, total=30, accounts=["a0", "a1", "a2"])
    assert res.verdict == INVALID
    [bad] = res.bad_reads
    assert bad.deviation == -3 and [x.input for x in bad.in_flight] == [t("a1", "a2", 3)]


# ---------------------------------------------------------- nothing to do

def test_a_valid_history_has_nothing_to_shrink(capsys, tmp_path):
    history = (H().op(0, 10, 0, "put", 1).op(5, 8, 1, "get", result=None)
               .op(12, 20, 1, "get", result=1).op(15, None, 2, "put", 2, status="info")
               .save(tmp_path / "h.jsonl"))
    code, out, _ = run(capsys, "shrink", str(history))
    assert code == 0
    assert out == f"{history}: VALID (4 ops): nothing to shrink\n"
    assert not (tmp_path / "shrunk.jsonl").exists()


def test_unreadable_input_exits_65_naming_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "invoke", "process": 0, "f": "get", "key": "k"}\n'
                   '{"type": "okay", "process": 0, "f": "get", "key": "k"}\n')
    code, out, err = run(capsys, "shrink", str(bad))
    assert (code, out) == (EX_DATAERR, "")
    assert err == f"faultline shrink: {bad}:2: field 'type': 'okay' is not one of " \
                  "invoke, ok, fail, info\n"


def test_a_set_history_without_its_workload_says_to_name_it(capsys, tmp_path):
    history = stale_set().save(tmp_path / "set.jsonl")
    code, _, err = run(capsys, "shrink", str(history))
    assert code == EX_DATAERR and len(err.splitlines()) == 1
    assert err.startswith(f"faultline shrink: {history}: model cas-register has no "
                          "operation 'add'")
    assert err.rstrip().endswith("a set or bank history needs --workload")
