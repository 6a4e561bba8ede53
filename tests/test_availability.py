"""How long reads and writes went unanswered per fault window
(:mod:`checkers.availability`), on synthetic histories, and its place in a
run's report."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from checkers.availability import availability, kind
from checkers.history import Event, Operation, write_jsonl
from harness.analysis import analyse
from harness.spec import TestSpec
from harness.workloads import WORKLOADS

S = 1_000_000_000  # ns per second


def nem(t_s: float, f: str, value=None) -> Event:
    return Event(0, "info", "nemesis", f, None, value, int(t_s * S))


def op(process, f, status, call_s, ret_s=None, error=None) -> Operation:
    """An op of ``process`` invoked at ``call_s``, answered at ``ret_s`` (s)."""
    ret = None if ret_s is None else int(ret_s * S)
    return Operation(0, process, f, None, None, None, status, 0, 0,
                     int(call_s * S), ret, "n1", error)


def row(result, family, i=0):
    return [r for r in result.rows if r.family == family][i]


PARTITION = [nem(10, "start-partition"), nem(20, "stop-partition")]


def test_every_workload_op_has_an_explicit_family():
    fs = {f: kind(f) for w in WORKLOADS.values() for f in w.fs}
    assert fs == {"get": "read", "put": "write", "update": "write",          # register
                  "add": "write", "read-query": "read", "read-scan": "read",  # set
                  "transfer": "write", "read-txn": "read"}                   # bank
    assert (kind("read"), kind("write"), kind("cas")) == ("read", "write", "write")  # Jepsen's


def test_quick_recovery_inside_the_window():
    ops = []
    for p, answered in ((0, 10.2), (1, 10.5), (2, 11.0)):
        ops.append(op(p, "get", "ok", 9.9, 10.05))  # invoked before the fault: no proof
        ops.append(op(p, "get", "ok", 10.1, answered))
    [r] = availability(ops, PARTITION, t0=0, end=30 * S).rows[:1]
    assert (r.fault, r.family, r.start_s, r.end_s) == ("partition", "read", 10.0, 20.0)
    assert (r.clients, r.ops) == (3, 3)
    assert r.unavailable_s == pytest.approx(0.5)  # the second of three clients
    assert r.recovered is True and r.recovered_after_heal_s is None


def test_no_majority_until_after_the_heal():
    ops = []
    for p, answered in ((0, 20.3), (1, 20.6), (2, 21.0)):
        ops.append(op(p, "put", "info", 10.1))
        ops.append(op(p + 3, "put", "fail", 12.0, 12.1, error="EndpointConnectionError: x"))
        ops.append(op(p + 6, "put", "ok", 19.9, answered))  # sent before the heal
    r = row(availability(ops, PARTITION, t0=0, end=30 * S, concurrency=3), "write")
    assert r.clients == 3 and r.ops == 9
    assert r.unavailable_s == pytest.approx(10.6)
    assert r.recovered is True and r.recovered_after_heal_s == pytest.approx(0.6)


def test_never_recovering_runs_to_the_end_of_the_history():
    ops = [op(0, "put", "ok", 10.1, 10.2), op(1, "put", "info", 10.1), op(2, "put", "info", 10.1)]
    r = row(availability(ops, PARTITION, t0=0, end=30 * S), "write")
    assert r.recovered is False and r.recovered_after_heal_s is None
    assert r.unavailable_s == pytest.approx(20.0)


def test_a_minority_of_clients_answering_is_not_availability():
    ops = [op(p, "get", "ok", 10.1, t)
           for p, t in ((0, 10.2), (1, 10.3), (2, 12.0), (3, 13.0), (4, 13.5))]
    r = row(availability(ops, PARTITION, t0=0, end=30 * S), "read")
    assert r.clients == 5 and r.unavailable_s == pytest.approx(2.0)


def test_a_failed_condition_is_an_answer_other_failures_are_not():
    ops = [op(0, "update", "fail", 10.1, 10.2, error="ConditionalCheckFailedException: no"),
           op(1, "update", "fail", 10.1, 10.3,
              error="TransactionCanceledException: x [ConditionalCheckFailed]"),
           op(2, "update", "fail", 10.1, 10.2, error="ServiceUnavailable: not the leader"),
           op(3, "update", "fail", 10.1, 10.2, error="ServiceUnavailable: not the leader"),
           op(2, "update", "ok", 14.0, 15.0)]
    r = row(availability(ops, PARTITION, t0=0, end=30 * S), "write")
    assert r.unavailable_s == pytest.approx(5.0)  # the third client, at 15 s


def test_a_retired_process_slot_is_the_same_client():
    # Slots 0 and 1 time out and go on as processes 3 and 4 (concurrency 3).
    ops = [op(0, "get", "info", 10.1), op(1, "get", "info", 10.1),
           op(2, "get", "ok", 10.1, 10.2), op(3, "get", "ok", 10.6, 11.0),
           op(4, "get", "ok", 10.6, 12.0)]
    by_slot = row(availability(ops, PARTITION, t0=0, end=30 * S, concurrency=3), "read")
    by_process = row(availability(ops, PARTITION, t0=0, end=30 * S), "read")
    assert (by_slot.clients, by_slot.unavailable_s) == (3, pytest.approx(1.0))
    assert (by_process.clients, by_process.unavailable_s) == (5, pytest.approx(2.0))


def test_a_window_with_no_op_of_a_family_is_not_measured():
    events = [nem(10, "start-kill", "n1"), nem(11, "stop-kill")]
    ops = [op(0, "get", "ok", 5.0, 5.1), op(0, "put", "ok", 10.2, 10.4),
           op(1, "put", "ok", 10.3, 10.5), op(0, "get", "ok", 12.0, 12.1),
           op(1, "get", "ok", 12.0, 12.2)]
    result = availability(ops, events, t0=0, end=30 * S)
    read, write = row(result, "read"), row(result, "write")
    assert (read.ops, read.unavailable_s, read.recovered) == (0, None, None)
    assert (write.ops, write.unavailable_s) == (2, pytest.approx(0.5))
    agg = result.to_dict()["by_family"]
    assert agg["read"] == {"windows": 0, "max_s": None, "median_s": None, "not_recovered": 0}
    assert result.lines() == ["unavailable: writes max 0.5 s (median 0.5 s) over 1 fault window"]


def test_windows_are_measured_each_on_its_own_and_aggregated():
    # A clock bump 0-30 s overlaps partitions at 10-14 and 20-24 s and a kill at 40-44 s.
    events = [nem(0, "start-clock-bump"), nem(10, "start-partition"), nem(14, "stop-partition"),
              nem(20, "start-partition"), nem(24, "stop-partition"), nem(30, "stop-clock-bump"),
              nem(40, "start-kill"), nem(44, "stop-kill")]
    read_at = {0: 0.5, 10: 13.0, 20: 21.0, 40: 42.0}  # when both clients have read again
    ops = [op(p, "get", "ok", start + 0.1, t) for start, t in read_at.items() for p in (0, 1)]
    ops += [op(p, "put", "ok", 40.1, 50.0) for p in (0, 1)]  # writes answered after the heal
    ops += [op(p, "put", "info", start + 0.1) for start in (0, 10, 20) for p in (2, 3)]
    result = availability(ops, events, t0=0, end=60 * S)
    assert [(r.fault, r.start_s) for r in result.rows if r.family == "read"] == [
        ("clock-bump", 0), ("partition", 10), ("partition", 20), ("kill", 40)]
    reads = [r.unavailable_s for r in result.rows if r.family == "read"]
    assert reads == pytest.approx([0.5, 3.0, 1.0, 2.0])
    d = result.to_dict()
    assert d["fault_windows"] == 4 and len(d["windows"]) == 8
    assert d["by_family"]["read"] == {"windows": 4, "max_s": 3.0, "median_s": 1.5,
                                      "not_recovered": 0}
    # Writes: clients 2 and 3 never answer, so 2 of 4 is never a majority.
    assert d["by_family"]["write"]["not_recovered"] == 4
    assert d["by_fault"]["partition"]["read"] == {"windows": 2, "max_s": 3.0, "median_s": 2.0,
                                                  "not_recovered": 0}
    assert d["by_fault"]["kill"]["read"]["max_s"] == 2.0
    assert result.lines() == [
        "unavailable: reads max 3.0 s (median 1.5 s), writes max 60.0 s "
        "(median 45.0 s, 4 cut short by the end of the run) over 4 fault windows"]


def test_no_fault_window_no_rows_and_no_line():
    result = availability([op(0, "get", "ok", 1, 2)], [nem(3, "transfer-leader")], t0=0)
    assert (result.rows, result.lines()) == ([], [])
    assert result.to_dict()["by_family"]["read"]["windows"] == 0


def _saved_run(directory, events):
    directory.mkdir()
    spec = {"workload": "register", "concurrency": 2}
    (directory / "test.json").write_text(json.dumps({"spec": spec, "seed": 1, "t0_ns": 0}))
    write_jsonl(directory / "history.jsonl", [replace(e, index=i) for i, e in enumerate(events)])
    return TestSpec(**spec)


def _ev(t_s, typ, process, f, value=None):
    return Event(0, typ, process, f, "k0", value, int(t_s * S), "n1")


def test_a_run_report_has_the_rows_and_a_summary_line_after_the_head(tmp_path):
    events = [_ev(1, "invoke", 0, "put", 1), _ev(1.1, "ok", 0, "put", 1),
              nem(2, "start-partition"),
              _ev(2.1, "invoke", 0, "get"), _ev(2.1, "invoke", 1, "put", 2),
              _ev(2.4, "ok", 0, "get", 1), _ev(2.5, "invoke", 0, "put", 3),
              _ev(2.6, "ok", 0, "put", 3), _ev(3.5, "ok", 1, "put", 2),
              nem(4, "stop-partition"),
              _ev(4.1, "invoke", 1, "get"), _ev(4.3, "ok", 1, "get", 2)]
    spec = _saved_run(tmp_path / "run", events)
    _, results = analyse(spec, tmp_path / "run")
    rows = results["availability"]["windows"]
    assert [(r["family"], r["unavailable_s"], r["recovered_after_heal_s"]) for r in rows] == [
        ("read", pytest.approx(2.3), pytest.approx(0.3)), ("write", pytest.approx(1.5), None)]
    summary = (tmp_path / "run" / "summary.txt").read_text().splitlines()
    assert summary[:3] == [summary[0], "faults: partition 2.0-4.0 s",
                           "unavailable: reads max 2.3 s (median 2.3 s), "
                           "writes max 1.5 s (median 1.5 s) over 1 fault window"]
    assert results["summary"] == summary


def test_a_run_report_without_faults_has_no_availability_line(tmp_path):
    spec = _saved_run(tmp_path / "run", [_ev(1, "invoke", 0, "get"), _ev(1.1, "ok", 0, "get")])
    _, results = analyse(spec, tmp_path / "run")
    assert results["availability"]["windows"] == []
    assert not any(line.startswith("unavailable:") for line in results["summary"])


def test_a_window_the_clients_stopped_in_is_cut_short_and_final_reads_do_not_count():
    """The clients stop at 15 s, inside the window; the final reads at 25 s
    are not the workload's, so they neither answer for it nor count as clients."""
    ops = [op(p, "get", "fail", 10.5, 10.6, error="EndpointConnectionError: x")
           for p in range(3)]
    ops += [op(p, "get", "ok", 25.0, 25.1) for p in range(3, 9)]  # final reads
    r = row(availability(ops, PARTITION, t0=0, end=30 * S, until=15 * S), "read")
    assert r.clients == 3
    # to when the clients stopped: a lower bound
    assert r.recovered is False and r.unavailable_s == pytest.approx(5.0)
    r = row(availability(ops, PARTITION, t0=0, end=30 * S), "read")
    assert r.recovered is True and r.clients == 9  # without until, the final reads count
