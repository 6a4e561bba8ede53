"""One real `faultline run` in a fresh process, as the benchmarks use it.

Shared by bench/detection.py and bench/false_alarms.py: both compare
verdicts of whole runs, so each run is exactly what a user would type.
"""

from __future__ import annotations

from pathlib import Path

from harness.subrun import ROOT, Outcome, run_faultline

__all__ = ["ROOT", "Outcome", "one_run"]


def one_run(workload: str, nemesis: str, flags: list[str], seed: int, time_limit: float,
            results: Path) -> Outcome:
    """``faultline run`` with these settings, its folder under ``results/seed-N``."""
    return run_faultline(["--workload", workload, "--nemesis", nemesis,
                          "--time-limit", str(time_limit), "--seed", str(seed), *flags],
                         results, f"seed-{seed}", time_limit)
