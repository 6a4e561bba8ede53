"""The correct store under process faults and random partitions: every
workload must come back VALID (a quick subset of bench/false_alarms.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from false_alarms import QUICK, WORKLOADS  # noqa: E402
from cli_runs import FAST, faultline  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.mark.parametrize("nemesis", QUICK)
@pytest.mark.parametrize("workload", WORKLOADS)
def test_correct_store_is_valid(tmp_path, workload, nemesis):
    out = faultline("run", "--workload", workload, "--nemesis", nemesis, "--seed", "7",
                    "--time-limit", "10", "--nemesis-interval", "2", "--nemesis-quiet", "1",
                    "--results-dir", str(tmp_path), *FAST, timeout=240)
    run = (tmp_path / "latest").resolve()
    summary = (run / "summary.txt").read_text() if (run / "summary.txt").exists() else ""
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:] + summary
    assert json.loads((run / "results.json").read_text())["verdict"] == "valid"
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    started = [e for e in history if e["process"] == "nemesis"
               and e["f"] == f"start-{nemesis}"]
    assert started, "the fault never ran"
    completions = [e for e in history if e["process"] != "nemesis" and e["type"] != "invoke"]
    assert sum(e["type"] == "ok" for e in completions) > 50
    if nemesis.startswith("kill") and workload == "register":
        # what used to raise the false alarm: updates refused by a dead node
        assert any(e["type"] == "fail" and e["f"] == "update"
                   and "EndpointConnectionError" in (e.get("error") or "")
                   for e in completions)
