"""One real `faultline run` in a fresh process, as the benchmarks use it.

Shared by bench/detection.py and bench/false_alarms.py: both compare
verdicts of whole runs, so each run is exactly what a user would type.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    """What one run ended with: its verdict (or ``crashed``), results.json,
    and a few lines of stderr when it crashed."""

    verdict: str
    results: dict[str, Any]
    directory: Path | None = None
    tail: str = ""

    @property
    def first_anomaly_s(self) -> float | None:
        return self.results.get("first_anomaly_s")


def one_run(workload: str, nemesis: str, flags: list[str], seed: int, time_limit: float,
            results: Path) -> Outcome:
    """``faultline run`` with these settings, its results under ``results``."""
    cmd = [sys.executable, "-m", "harness.cli", "run", "--workload", workload,
           "--nemesis", nemesis, "--time-limit", str(time_limit), "--seed", str(seed),
           "--results-dir", str(results), *flags]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=time_limit + 300, env={**os.environ, "CI": "1"})
    latest = (results / "latest").resolve()
    try:
        res = json.loads((latest / "results.json").read_text())
    except (OSError, ValueError):
        res = {}
    if proc.returncode not in (0, 1, 2) or not res:
        tail = "\n    ".join(proc.stderr.strip().splitlines()[-6:])
        return Outcome("crashed", res, None, f"exit {proc.returncode}\n    {tail}")
    return Outcome(res["verdict"], res, latest)
