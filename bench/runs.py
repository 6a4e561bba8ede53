"""One real `faultline run` in a fresh process, as the benchmarks use it.

Shared by bench/detection.py and bench/false_alarms.py: both compare
verdicts of whole runs, so each run is exactly what a user would type.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    """What one run ended with: its verdict (or ``crashed``), results.json,
    its wall time (start-up and check included: what a bench budget pays),
    and a few lines of stderr when it crashed."""

    verdict: str
    results: dict[str, Any]
    wall_s: float
    directory: Path | None = None
    tail: str = ""

    @property
    def first_anomaly_s(self) -> float | None:
        return self.results.get("first_anomaly_s")

    @property
    def staleness_max_ms(self) -> float | None:
        """The stalest read's staleness, where the checker measured staleness."""
        return (self.results.get("staleness") or {}).get("max_ms")


def one_run(workload: str, nemesis: str, flags: list[str], seed: int, time_limit: float,
            results: Path) -> Outcome:
    """``faultline run`` with these settings, its results under ``results``.
    A run that hangs past its time limit by 300 s counts as crashed, so a long
    bench goes on; an interrupted bench stops its run before it stops."""
    cmd = [sys.executable, "-m", "harness.cli", "run", "--workload", workload,
           "--nemesis", nemesis, "--time-limit", str(time_limit), "--seed", str(seed),
           "--results-dir", str(results), *flags]
    link = results / "latest"
    previous = link.resolve()  # a kept folder's last run, not this one's
    start = time.monotonic()
    # its own session: a Ctrl-C reaches the bench alone, which stops the run once
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, "CI": "1"},
                          start_new_session=True) as proc:
        try:
            _, stderr = proc.communicate(timeout=time_limit + 300)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return Outcome("crashed", {}, time.monotonic() - start, None,
                           f"no verdict after {time_limit + 300:g} s")
        except KeyboardInterrupt:
            _stop(proc)
            raise
    wall = time.monotonic() - start
    latest = link.resolve()
    try:
        res = json.loads((latest / "results.json").read_text()) if latest != previous else {}
    except (OSError, ValueError):
        res = {}
    if proc.returncode not in (0, 1, 2) or not res:
        tail = "\n    ".join(stderr.strip().splitlines()[-6:])
        return Outcome("crashed", res, wall, None, f"exit {proc.returncode}\n    {tail}")
    return Outcome(res["verdict"], res, wall, latest)


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, which `faultline run` takes as Ctrl-C: it heals the faults and
    stops its nodes, which a SIGKILL would leave holding the next run's ports."""
    proc.terminate()
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
