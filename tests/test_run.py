"""`faultline run` end to end on the local backend: the folder, the verdict,
and an interrupted run that leaves nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness.cluster import is_alive

pytestmark = pytest.mark.cluster
from cli_runs import FAST, ROOT, faultline


def test_short_run_with_faults_writes_a_complete_results_folder(tmp_path):
    out = faultline("run", "--workload", "register", "--nemesis", "partition-leader",
                    "--nemesis-interval", "2", "--time-limit", "6", "--seed", "11",
                    "--results-dir", str(tmp_path), *FAST)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "seed 11" in out.stdout and "verdict: VALID" in out.stdout
    run = (tmp_path / "latest").resolve()
    assert run.parent.name == "register-partition-leader"
    for name in ("test.json", "history.jsonl", "schedule.jsonl", "results.json",
                 "summary.txt", "timeline.html", "latency-raw.png", "latency-quantiles.png",
                 "rate.png", "logs/n1.log"):
        assert (run / name).exists() and (run / name).stat().st_size > 0, name
    results = json.loads((run / "results.json").read_text())
    assert results["verdict"] == "valid" and results["seed"] == 11
    assert results["linearizable"]["keys"] > 0 and results["ops"] > 50
    schedule = [json.loads(line) for line in (run / "schedule.jsonl").read_text().splitlines()]
    assert schedule[0]["f"] == "start-partition-leader"
    assert schedule[-1]["f"] == "heal"
    spec = json.loads((run / "test.json").read_text())
    assert spec["seed"] == 11 and spec["spec"]["nemesis"] == ["partition-leader"]
    # the saved run re-checked offline gives the same verdict
    again = faultline("analyse", str(run))
    assert again.returncode == 0 and "verdict: VALID" in again.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_heals_keeps_history_and_leaves_no_process(tmp_path, sig):
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--workload", "set",
                             "--nemesis", "pause", "--nemesis-interval", "1",
                             "--time-limit", "60", "--seed", "3",
                             "--results-dir", str(tmp_path), *FAST],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "CI": "1"})
    run = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the nemesis has paused a node
        runs = list(tmp_path.glob("set-pause/*/schedule.jsonl"))
        if runs and "start-pause" in runs[0].read_text():
            run = runs[0].parent
            break
        time.sleep(0.2)
    assert run is not None, "the run never started its nemesis"
    cluster = json.loads((run / "cluster" / "cluster.json").read_text())
    pids = [n["pid"] for n in cluster["nodes"]]
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 255, err
    assert "interrupted" in err
    assert (run / "history.jsonl").stat().st_size > 0
    assert not [p for p in pids if is_alive(p)]
    leftovers = subprocess.run(["pgrep", "-f", f"system.node.*{run}"], capture_output=True,
                               text=True).stdout.split()
    assert leftovers == []
