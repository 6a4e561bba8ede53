"""One clock for everything a run shows: seconds since the test started.

A real short run (3 nodes, a partition nemesis) checked file by file, then the
runner's own pieces without a cluster: the fault lines and the status line it
prints, and a set up that fails."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest

from checkers.history import NEMESIS, read_jsonl
from harness import runner
from harness.spec import TestSpec
from nemesis.nemesis import describe

from cli_runs import FAST, faultline


@pytest.mark.cluster
def test_every_file_of_a_real_run_counts_seconds_since_the_test_started(tmp_path):
    out = faultline("run", "--workload", "set", "--nemesis", "partition-leader",
                    "--bug", "unchecked-range-reads", "--nemesis-interval", "2",
                    "--nemesis-quiet", "1", "--time-limit", "8", "--seed", "5",
                    "--results-dir", str(tmp_path), *FAST)
    assert out.returncode in (0, 1), out.stdout + out.stderr
    run = (tmp_path / "latest").resolve()
    t0 = json.loads((run / "test.json").read_text())["t0_ns"]
    results = json.loads((run / "results.json").read_text())
    events = read_jsonl(run / "history.jsonl")
    length = (max(e.time for e in events) - t0) / 1e9

    def since(t: int) -> float:
        return (t - t0) / 1e9

    def within(seconds: float) -> bool:
        return 0 <= seconds <= length + 1e-6

    # The history itself: nothing before the test started.
    assert results["t0_ns"] == t0 and results["duration_s"] == pytest.approx(length)
    assert min(e.time for e in events) >= t0 and 8 <= length < 30

    # schedule.jsonl: each fault event at its history time less t0.
    nemesis = [e for e in events if e.process == NEMESIS]
    schedule = [json.loads(line) for line in (run / "schedule.jsonl").read_text().splitlines()]
    assert [s["f"] for s in schedule] == [e.f for e in nemesis]
    assert schedule[0]["f"] == "start-partition-leader" and schedule[-1]["f"] == "heal"
    for s, e in zip(schedule, nemesis):
        assert s["at_s"] == pytest.approx(since(e.time), abs=1e-6) and within(s["at_s"])
    first = schedule[0]
    target = first["value"]["groups"][0][0]

    # results.json: fault intervals and anomalies on the same clock.
    [iv, *_] = results["stats"]["availability"]["intervals"]
    assert iv["start_s"] == pytest.approx(first["at_s"], abs=1e-6)
    assert iv["targets"] == target
    ops_by_id = {}
    for e in events:  # invocations by op: the anomalies name their op's id
        if e.process != NEMESIS and e.type == "invoke":
            ops_by_id[len(ops_by_id)] = e
    for a in results["anomalies"]:
        assert within(a["at_s"])
        assert a["at_s"] == pytest.approx(since(ops_by_id[a["op"]].time), abs=1e-6)
    if results["anomalies"]:
        assert results["first_anomaly_s"] == results["anomalies"][0]["at_s"]

    # summary.txt: the run, its faults and its first anomaly, in those seconds.
    summary = (run / "summary.txt").read_text()
    assert f"over {length:.1f} s" in summary
    assert f"faults: partition-leader {target} {first['at_s']:.1f}-" in summary
    if results["anomalies"]:
        assert f"at {results['first_anomaly_s']:.3f} s" in summary

    # What the run printed as it went: the same times.
    assert f"{first['at_s']:+6.1f} s  start partition-leader: isolate {target}" in out.stdout
    assert re.search(r"\d+\.\d/8 s .* ops/s  ok [\d,]+ .*answering", out.stdout)

    # timeline.html: the whole history, the fault bands and every time on the page.
    page = (run / "timeline.html").read_text(encoding="utf-8")
    assert f"{results['ops']:,} ops over {length:.1f} s" in page
    assert (f"<title>partition-leader {target}: {first['at_s']:.1f}–" in page)
    shown = [float(t) for t in re.findall(r"t=(-?[\d.]+) s", page)]
    assert all(within(t) for t in shown)
    if results["anomalies"]:
        assert shown and "witness</a>" in page

    # Re-analysed offline, the saved run keeps its origin.
    again = faultline("analyse", str(run))
    assert again.returncode == out.returncode
    redone = json.loads((run / "results.json").read_text())
    assert redone["t0_ns"] == t0 and redone.get("first_anomaly_s") == results.get(
        "first_anomaly_s")


# ---------------------------------------------------------------- without a cluster

class FakePool:
    endpoints = (("n1", "http://a"), ("n2", "http://b"), ("n3", "http://c"))

    def __init__(self) -> None:
        self.recorded: list[tuple] = []
        self.done = 0

    def counts(self) -> dict[str, int]:
        return {"invoke": self.done, "ok": self.done - 3, "fail": 1, "info": 2}

    def answering(self, within_s: float = 2.0) -> list[str]:
        return ["n1", "n2"]

    def record(self, type, process, f, *, value=None, time=None, **kw) -> None:
        self.recorded.append((type, process, f, value, time))


def test_fault_lines_and_schedule_count_from_the_test_start(tmp_path):
    t0 = time.monotonic_ns() - 12_400_000_000
    schedule = runner._Schedule(tmp_path / "schedule.jsonl", t0)
    out = io.StringIO()
    pool = FakePool()
    sink = runner._fault_sink(pool, schedule, runner._Progress(out, live=False))
    part = {"groups": [["n3"], ["n1", "n2"]], "leader": "n3", "term": 7}
    sink("start-partition-leader", part)
    sink("start-clock-bump", {"node": "n3", "bump_s": -7.25})
    assert schedule.in_effect() == ["partition-leader n3", "clock-bump n3"]
    sink("stop-clock-bump", {"node": "n3", "bump_s": -7.25})
    schedule.close()
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r" \+12\.4 s  start partition-leader: isolate n3 \(leader of term 7\)",
                        lines[0]), lines
    assert lines[1].endswith("start clock-bump: n3's clock -7.25 s")
    assert schedule.in_effect() == ["partition-leader n3"]
    rows = [json.loads(line) for line in (tmp_path / "schedule.jsonl").read_text().splitlines()]
    assert [r["f"] for r in rows] == ["start-partition-leader", "start-clock-bump",
                                      "stop-clock-bump"]
    assert 12.4 <= rows[0]["at_s"] < 13 and rows[0]["value"] == part
    # The history gets the same event at the same instant, through the pool.
    type_, process, f, value, at = pool.recorded[0]
    assert (type_, process, f, value) == ("info", NEMESIS, "start-partition-leader", part)
    assert (at - t0) / 1e9 == pytest.approx(rows[0]["at_s"], abs=1e-6)


@pytest.mark.parametrize("fault, targets, words", [
    ("partition-halves", {"groups": [["n1", "n2"], ["n3", "n4", "n5"]]}, "split n1 n2 | n3 n4 n5"),
    ("kill-leader", {"node": "n2"}, "kill n2"),
    ("partition-leader", {"groups": [["n3"], ["n1", "n2"]], "leader": "n3", "term": 7},
     "isolate n3 (leader of term 7)"),
    ("pause-leader", {"node": "n2", "leader": None, "term": None},
     "pause n2 (no leader: picked at random)"),
    ("clock-drift", {"node": "n4", "rate": 0.45}, "n4's clock at 0.45x speed"),
    ("leader-churn", {"first": {"from": "n1", "term": 4, "to": "n3"}},
     "first from n1 (leader of term 4) to n3"),
    ("delay", {"ms": 120.5}, "delay every link by 120.5 ms"),
    ("loss", {"p": 0.12}, "12% loss on every link"),
    ("pause", {"error": "no such node"}, "failed: no such node"),
])
def test_each_fault_is_worded_with_its_targets(fault, targets, words):
    assert words in describe(fault, targets)


def test_status_line_says_where_the_run_is(tmp_path):
    pool = FakePool()
    schedule = runner._Schedule(tmp_path / "s.jsonl", time.monotonic_ns() - 4_000_000_000)
    schedule.record("start-partition-leader", {"groups": [["n3"], ["n1", "n2"]]},
                    time.monotonic_ns())
    status = runner._Status(pool, schedule, 30)
    pool.done = 4003
    line = status()
    schedule.close()
    assert re.match(r"\s*4\.\d/30 s\s+\d+ ops/s  ok 4,000 fail 1 info 2  answering n1 n2 "
                    r"\(not n3\)  faults: partition-leader n3$", line), line
    rate = float(line.split("ops/s")[0].split()[-1])
    assert 900 <= rate <= 1010  # 4003 completions over the 4 s since the start


@pytest.mark.parametrize("live", [False, True])
def test_progress_prints_lines_and_leaves_the_last_status(live):
    out = io.StringIO()
    progress = runner._Progress(out, live=live, period=0.05)
    ticks = iter(range(1000))
    progress.start(lambda: f"status {next(ticks)}")
    progress.line("+1.0 s  start kill: kill n1")
    time.sleep(0.3)
    progress.stop()
    progress.stop()  # twice is fine (the teardown stops it again)
    text = out.getvalue()
    assert "+1.0 s  start kill: kill n1" in text
    last = [line for line in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).splitlines()
            if line.strip()][-1]
    assert last.startswith("status ")
    if not live:  # plain lines every period, no escape codes
        assert "\x1b" not in text and text.count("status") >= 3


class BrokenBackend:
    node_ids = ["n1"]

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def start(self, timeout: float = 60.0) -> None:
        raise TimeoutError("no leader within 60 s; see the node logs")

    def log_files(self) -> list[Path]:
        log = self.directory / "n1.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("n1 could not bind its port\n")
        return [log]

    def close(self) -> None:
        pass


def test_a_run_whose_set_up_fails_says_why_and_leaves_no_result(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "make_backend", lambda spec, d, seed: BrokenBackend(d))
    spec = TestSpec(workload="set", nodes=3, results_dir=str(tmp_path), seed=4)
    out = io.StringIO()
    with pytest.raises(runner.SetupFailed) as raised:
        runner.run_test(spec, out=out, live=False)
    assert isinstance(raised.value.__cause__, TimeoutError)
    assert not (tmp_path / "latest").exists()
    [folder] = (tmp_path / spec.test_name).iterdir()
    assert folder.name.endswith("-setup-failed")
    assert sorted(p.name for p in folder.iterdir()) == ["cluster", "logs", "setup-failed.txt",
                                                        "test.json"]
    assert (folder / "setup-failed.txt").read_text().startswith(
        "TimeoutError: no leader within 60 s")
    assert (folder / "logs" / "n1.log").exists()
    text = out.getvalue()
    assert "set up failed, the test did not start: TimeoutError: no leader" in text
    assert str(folder) in text
