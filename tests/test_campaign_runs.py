"""`faultline campaign` as a person runs it: a small campaign on real runs,
interrupted by SIGTERM after its first run and finished by --resume; a bad
file refused before anything runs."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cli_runs import ROOT, faultline

CAMPAIGN = """
name = "e2e"
seeds = 2
time_limit = 5
[defaults]
nodes = 3
concurrency = 6
election_timeout_ms = 1000
heartbeat_ms = 100
quiet_period = 1
nemesis_interval = 2
nemesis_quiet = 1
[[cells]]
workload = "register"
nemesis = "partition-one"
bugs = ["", "stale-follower-reads"]
"""


def node_processes(under: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(under)], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "harness.cli node" in line
            or "system.node" in line]


@pytest.mark.cluster
def test_interrupted_campaign_resumes_to_the_end(tmp_path: Path) -> None:
    spec = tmp_path / "e2e.toml"
    spec.write_text(CAMPAIGN)
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "campaign", str(spec),
                             "--results-dir", str(results)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "CI": "1"})
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("[1/4]"):
            break
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + out + err
    assert "interrupted with" in out and "resume with: faultline campaign" in out
    assert "Traceback" not in err
    (folder,) = (results / "campaigns" / "e2e").iterdir()
    assert len((folder / "runs.jsonl").read_text().splitlines()) == 1
    assert not node_processes(folder), "an interrupted campaign left nodes running"

    done = faultline("campaign", str(spec), "--results-dir", str(results), "--resume",
                     timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 to do (1 done before)" in done.stdout
    with (folder / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["cell"], r["seed"], r["verdict"]) for r in rows) == [
        ("register-partition-one", "1", "valid"), ("register-partition-one", "2", "valid"),
        ("register-partition-one-stale-follower-reads", "1", "invalid"),
        ("register-partition-one-stale-follower-reads", "2", "invalid")]
    for r in rows:
        assert (folder / r["folder"] / "results.json").is_file()
    cases = ET.parse(folder / "junit.xml").getroot().findall(".//testcase")
    assert len(cases) == 4 and not ET.parse(folder / "junit.xml").getroot().findall(".//failure")
    assert "every run as expected" in (folder / "report.html").read_text()
    assert "complete; 0 runs off expectation" in done.stdout


def test_a_bad_campaign_file_names_the_key(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text('[[cells]]\nworkload = "set"\nnodez = 3\n')
    out = faultline("campaign", str(spec), "--results-dir", str(tmp_path))
    assert out.returncode == 64
    assert "bad.toml: cells[0]: unknown key 'nodez'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.cluster
def test_compare_prints_the_table_and_writes_the_figure(tmp_path: Path) -> None:
    figure = tmp_path / "compare.png"
    out = faultline("compare", "--vary", "read-path=lease,read_index", "--workload", "register",
                    "--nemesis", "partition-leader", "--nodes", "3", "--concurrency", "6",
                    "--election-timeout-ms", "1000", "--heartbeat-ms", "100",
                    "--quiet-period", "1", "--time-limit", "4", "--nemesis-interval", "2",
                    "--nemesis-quiet", "1", "--seed", "7", "--results-dir", str(tmp_path),
                    "--figure", str(figure), timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("configuration"))
    lease, read_index = lines[head + 1], lines[head + 2]
    assert lease.startswith("read-path=lease") and read_index.startswith("read-path=read_index")
    # the lease path serves reads from its lease; ReadIndex never does
    def hits(line: str) -> str:
        return next(word for word in line.split() if word.endswith("%"))
    assert hits(lease) != "0%" and hits(read_index) == "0%"
    assert figure.stat().st_size > 10_000
    (folder,) = (tmp_path / "campaigns" / "compare-read-path").iterdir()
    assert (folder / "compare.png").is_file() and (folder / "compare.txt").is_file()
    assert "Traceback" not in out.stderr
