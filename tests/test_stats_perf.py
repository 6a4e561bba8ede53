"""Stats (counts, nemesis intervals, availability) and perf (latency figures,
PNG plots)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from checkers.history import Event, Operation
from checkers.report import Anomaly
from checkers.stats import (Interval, Mark, compute_stats, fault_targets, nemesis_intervals,
                            parse_nemesis)

S = 1_000_000_000  # ns per second
MS = 1_000_000


def nem(t_s: float, f: str, value=None, type: str = "info") -> Event:
    return Event(0, type, "nemesis", f, None, value, int(t_s * S))


# -------------------------------------------------------- nemesis intervals

def test_start_stop_pairs_by_suffix():
    events = [nem(1, "start-partition", ["n1"]), nem(2, "start-clock-skew", "n2"),
              nem(3, "stop-partition"), nem(4, "stop-clock-skew"),
              nem(5, "start-partition", ["n4", "n5"]), nem(7, "stop-partition")]
    ivs = nemesis_intervals(events)
    assert [(iv.name, iv.start, iv.end, iv.value) for iv in ivs] == [
        ("partition", 1 * S, 3 * S, ["n1"]), ("clock-skew", 2 * S, 4 * S, "n2"),
        ("partition", 5 * S, 7 * S, ["n4", "n5"])]
    assert [(iv.start_f, iv.stop_f) for iv in ivs] == [
        ("start-partition", "stop-partition"), ("start-clock-skew", "stop-clock-skew"),
        ("start-partition", "stop-partition")]


def test_unpaired_start_runs_to_the_end():
    events = [nem(1, "start-partition"), nem(2, "start-kill", "n3"), nem(3, "stop-partition")]
    assert [(iv.name, iv.end) for iv in nemesis_intervals(events)] == [
        ("partition", 3 * S), ("kill", None)]
    assert [(iv.name, iv.end) for iv in nemesis_intervals(events, end=10 * S)] == [
        ("partition", 3 * S), ("kill", 10 * S)]


def test_invoke_and_completion_count_once_at_the_completion():
    events = [nem(1, "start-partition", ["n1"], "invoke"), nem(1.5, "start-partition", None),
              nem(4, "stop-partition", None, "invoke"), nem(4.2, "stop-partition", "healed")]
    [iv] = nemesis_intervals(events)
    assert (iv.start, iv.end, iv.value) == (int(1.5 * S), int(4.2 * S), ["n1"])


def test_failed_starts_stray_stops_instants_and_restarts():
    events = [nem(0.5, "stop-partition"),                                  # nothing open
              nem(1, "start-partition", None, "invoke"), nem(1.1, "start-partition", None, "fail"),
              nem(2, "transfer-leader", "n2"),
              nem(3, "start-partition", ["n1"]), nem(5, "start-partition", ["n2"]),
              nem(6, "stop-partition"),
              nem(7, "kill", "n3"), nem(8, "restart", "n3"),
              nem(9, "pause", "n1"), nem(10, "resume", "n1"), nem(11, "resume", "n1")]
    ivs, marks = parse_nemesis(events)
    assert [(iv.name, iv.start // S, iv.end // S, iv.value) for iv in ivs] == [
        ("partition", 3, 5, ["n1"]),   # a new start replaces the open one
        ("partition", 5, 6, ["n2"]),
        ("kill", 7, 8, "n3"), ("pause", 9, 10, "n1")]
    assert marks == [Mark(2 * S, "transfer-leader", "n2"), Mark(11 * S, "resume", "n1")]


def test_a_start_that_failed_opens_no_interval():
    events = [nem(1, "start-partition-leader", {"error": "no leader"}),
              nem(2, "start-clock-bump", {"node": "n1"}),
              nem(3, "stop-clock-bump", {"error": "node down"})]
    ivs, marks = parse_nemesis(events)
    assert [(iv.name, iv.start, iv.end) for iv in ivs] == [("clock-bump", 2 * S, 3 * S)]
    assert marks == [Mark(1 * S, "start-partition-leader", {"error": "no leader"})]


@pytest.mark.parametrize("value, targets", [
    ({"groups": [["n3"], ["n1", "n2", "n4", "n5"]]}, "n3"),
    ({"groups": [["n4", "n5", "n1"], ["n2", "n3"]]}, "n2 n3 | n4 n5 n1"),
    ({"groups": [["n1", "n2", "n3"], ["n1", "n4", "n5"]]}, "n1 n2 n3 | n1 n4 n5"),  # a bridge
    ({"node": "n2", "bump_s": -7.2}, "n2"),
    ({"first": {"from": "n1", "to": "n3"}}, "n1->n3"),
    ({"ms": 120.5}, "120.5 ms"),
    ({"p": 0.125}, "12% loss"),
    ({"error": "no leader"}, ""),
    (["n1"], ""),
])
def test_fault_targets_name_what_a_fault_hit(value, targets):
    assert fault_targets(value) == targets


def test_an_interval_is_labelled_with_its_targets():
    [iv] = nemesis_intervals([nem(1, "start-partition-leader", {"groups": [["n3"], ["n1"]]}),
                              nem(2, "stop-partition-leader")])
    assert iv.label == "partition-leader n3"
    [iv] = nemesis_intervals([nem(1, "start-delay", {}), nem(2, "stop-delay")])
    assert iv.label == "delay"


def test_client_events_and_untimed_events_are_ignored():
    events = [Event(0, "invoke", 1, "add", None, 1, 0), nem(1, "start-partition"),
              Event(2, "info", "nemesis", "stop-partition", None, None, None)]
    assert [iv.end for iv in nemesis_intervals(events)] == [None]


# ------------------------------------------------------------------- stats

def op(i, f, status, call_ms, ret_ms=None, node="n1") -> Operation:
    ret = ret_ms if status != "info" else None
    return Operation(i, i, f, None, None, None, status, 2 * i,
                     2 * i + 1 if status != "info" else float("inf"),
                     int(call_ms * MS), None if ret is None else int(ret * MS), node)


def sample_ops() -> list[Operation]:
    # 0-1 s: healthy; 1-2 s: partition of n1 (its ops time out); 2-3 s: healed.
    ops = []
    for k in range(30):
        t = k * 100  # ms
        in_fault = 1000 <= t < 2000
        node = "n1" if k % 2 else "n2"
        if in_fault and node == "n1":
            ops.append(op(k, "read" if k % 3 else "write", "info", t, None, node))
        else:
            status = "fail" if k == 4 else "ok"
            ops.append(op(k, "read" if k % 3 else "write", status, t, t + 5 + k, node))
    return ops


def test_counts_per_f_status_and_node():
    s = compute_stats(sample_ops())
    assert s.overall["count"] == 30 and s.overall["ok"] == 24
    assert (s.overall["fail"], s.overall["info"]) == (1, 5)
    assert s.overall["ok_fraction"] == 0.8
    assert s.by_f["write"]["count"] == 10 and s.by_f["read"]["count"] == 20
    # info ops are the odd k in 11..19: 11, 13, 15, 17, 19 -> writes at 15
    assert s.by_f["write"]["info"] == 1 and s.by_f["read"]["info"] == 4
    assert s.by_node["n1"]["info"] == 5 and s.by_node["n2"]["info"] == 0
    assert s.by_node["n2"]["fail"] == 1
    assert s.by_f_node["read"]["n1"]["count"] == 10
    assert s.duration_s == pytest.approx(2.934)
    assert s.overall["ops_per_s"] == pytest.approx(30 / s.duration_s)


def test_availability_inside_and_outside_nemesis_intervals():
    events = [nem(1, "start-partition", ["n1"]), nem(2, "stop-partition"),
              nem(2.5, "start-kill", "n2")]  # never stopped: runs to the end
    s = compute_stats(sample_ops(), events, t0=0)
    [part, kill] = s.intervals
    assert (part["name"], part["start_s"], part["end_s"]) == ("partition", 1.0, 2.0)
    assert (part["count"], part["ok"], part["info"]) == (10, 5, 5)
    assert part["ok_fraction"] == 0.5 and part["closed"] is True
    assert (kill["name"], kill["start_s"], kill["closed"]) == ("kill", 2.5, False)
    assert kill["end_s"] == pytest.approx(2.934)
    assert (kill["count"], kill["ok"]) == (5, 5)
    assert (s.inside["count"], s.inside["ok"]) == (15, 10)
    assert (s.outside["count"], s.outside["ok"], s.outside["fail"]) == (15, 14, 1)
    assert s.inside_by_f["read"]["info"] == 4
    assert s.by_fault["partition"]["intervals"] == 1
    text = s.describe()
    assert "no fault" in text and "partition (1x)" in text
    json.dumps(s.to_dict())
    events[0] = nem(1, "start-partition", {"groups": [["n1"], ["n2"]]})
    assert compute_stats(sample_ops(), events, t0=0).intervals[0]["targets"] == "n1"


# -------------------------------------------------------------------- perf

perf = pytest.importorskip("checkers.perf")


def test_latency_summary():
    ops = [op(i, "read", "ok", i * 10, i * 10 + i + 1) for i in range(100)]  # 1..100 ms
    ops += [op(100, "read", "info", 2000), op(101, "write", "fail", 10, 30)]
    s = perf.latency_summary(ops)
    assert s["read"] == {"count": 100, "info": 1, "p50": pytest.approx(50.5),
                         "p95": pytest.approx(95.05), "p99": pytest.approx(99.01),
                         "max": pytest.approx(100.0)}
    assert s["write"]["count"] == 1 and s["write"]["max"] == pytest.approx(20.0)


def test_ops_frame_and_window():
    df = perf.ops_frame(sample_ops())
    assert len(df) == 30 and df["latency_ms"].isna().sum() == 5
    assert df["start_s"].min() == 0 and df["latency_ms"].max() == pytest.approx(34.0)
    assert perf.choose_window(30, 60) == 0.5
    assert perf.choose_window(300, 60) == 5


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plot_all_writes_the_three_pngs(tmp_path):
    ops = sample_ops()
    events = [nem(1, "start-partition", ["n1"]), nem(2, "stop-partition"),
              nem(2.2, "transfer-leader", "n2"), nem(2.5, "start-kill", "n2")]
    paths = perf.plot_all(ops, events, tmp_path / "plots", t0=0, title="unit")
    assert [p.name for p in paths] == ["latency-raw.png", "latency-quantiles.png", "rate.png"]
    width = int(perf.WIDTH * perf.DPI)
    expected = {"latency-raw.png": perf.RAW_HEIGHT, "rate.png": perf.RATE_HEIGHT,
                "latency-quantiles.png": perf.quantiles_height(2)}  # read, write
    for p in paths:
        assert p.stat().st_size > 10_000
        assert png_size(p) == (width, int(round(expected[p.name] * perf.DPI)))


def test_plots_shade_the_intervals_of_the_events(tmp_path):
    ops = sample_ops()
    events = [nem(1, "start-partition", ["n1"]), nem(2, "stop-partition"),
              nem(2.5, "start-kill", "n2")]
    ctx = perf._Context(ops, events, 0)
    # The unpaired kill runs to the end of the history (the last completion).
    assert [(iv.name, iv.start, iv.end) for iv in ctx.intervals] == [
        ("partition", 1 * S, 2 * S), ("kill", int(2.5 * S), 2934 * MS)]
    assert ctx.end_s == pytest.approx(2.934)
    assert isinstance(ctx.intervals[0], Interval)


def test_plots_of_an_empty_history(tmp_path):
    paths = perf.plot_all([], [], tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)


def test_fault_windows_are_named_with_their_targets_above_the_plots(tmp_path):
    from matplotlib.figure import Figure

    events = [nem(1, "start-partition-leader", {"groups": [["n3"], ["n1", "n2"]]}),
              nem(1, "start-clock-bump", {"node": "n3", "bump_s": -5}),
              nem(2, "stop-clock-bump"), nem(2, "stop-partition-leader")]
    ctx = perf._Context(sample_ops(), events, 0)
    ax = Figure().subplots()
    ctx.shade(ax, labels=True)
    # Composed faults share a window: their names go on two rows, not one over the other.
    names = {t.get_text(): t.xyann for t in ax.texts}
    assert set(names) == {"partition-leader n3", "clock-bump n3"}
    assert names["partition-leader n3"] != names["clock-bump n3"]


def test_anomalies_are_marked_at_their_op_on_the_latency_plot(tmp_path):
    from matplotlib.figure import Figure

    ops = sample_ops()
    stale = Anomaly("stale read", ops[2], "read missed 1")   # ok: at its latency
    lost = Anomaly("not linearizable", ops[11], "info op")  # info: on the top edge
    ctx = perf._Context(ops, [], 0, [stale, lost, Anomaly("stale read", ops[4], "again")])
    ax = Figure().subplots()
    handles = ctx.mark_anomalies(ax)
    assert [h.get_label() for h in handles] == ["stale read (2)", "not linearizable (1)"]
    stale_line, info_line = ax.lines
    assert list(stale_line.get_xdata()) == [0.2, 0.4]
    assert list(stale_line.get_ydata()) == [pytest.approx(7.0), pytest.approx(9.0)]
    assert list(info_line.get_xdata()) == [1.1] and list(info_line.get_ydata()) == [0.97]
    paths = perf.plot_all(ops, [], tmp_path, t0=0, anomalies=[stale, lost])
    assert paths[0].stat().st_size > 10_000
