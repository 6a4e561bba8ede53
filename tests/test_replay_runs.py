"""`faultline replay` on real runs: a failing run, exported as a bundle,
replays to the same anomaly from the bundle alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runs import FAST, faultline

pytestmark = pytest.mark.cluster


def test_an_exported_run_replays_to_its_anomaly(tmp_path: Path) -> None:
    out = faultline("run", *FAST, "--workload", "register", "--nemesis", "partition-one:2/1",
                    "--bug", "stale-follower-reads", "--time-limit", "5", "--seed", "1",
                    "--results-dir", str(tmp_path / "results"), "--name", "original")
    assert out.returncode == 1, out.stdout + out.stderr  # the planted bug was found
    [run] = (tmp_path / "results" / "original").iterdir()
    bundle = tmp_path / "bug.tar.gz"
    assert faultline("export", str(run), "-o", str(bundle)).returncode == 0

    replay = faultline("replay", str(bundle), "--until-reproduced", "--max", "3",
                       "--results-dir", str(tmp_path / "replays"), timeout=400)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    # the same signature: kind, op and window (or outside every window) alike
    assert "reproduced: not linearizable on get " in replay.stdout
    assert "Traceback" not in replay.stderr
    [again] = (tmp_path / "replays" / "original-replay").iterdir()
    meta = json.loads((again / "test.json").read_text())
    assert meta["replay"] == {"of": str(bundle), "targets": "recorded"}
    recorded = [json.loads(line)["value"] for line in
                (run / "schedule.jsonl").read_text().splitlines()]
    played = [json.loads(line)["value"] for line in
              (again / "schedule.jsonl").read_text().splitlines()]
    assert played[:-1] == recorded[:-1]  # the same faults on the same nodes, heal aside
