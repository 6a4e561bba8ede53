"""One real ``faultline run`` in a fresh process, as campaigns and benches run it.

A campaign compares the verdicts of whole runs, so each run is exactly what a
user would type, in its own process: a run that crashes, hangs or leaks cannot
take the campaign with it.  The child imports the same code as the parent (its
``PYTHONPATH`` leads with this checkout), runs with ``CI=1`` (plain progress
lines, no live terminal) and in its own session, so a Ctrl-C reaches the
parent alone, which then stops the child the way ``faultline run`` expects.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The folder holding the ``harness`` package: the child imports from it.
ROOT = Path(__file__).resolve().parents[1]
#: A run without a verdict this long after its time limit counts as crashed.
HANG_GRACE_S = 300.0
#: How long a stopped run may take to heal its faults and stop its nodes.
STOP_GRACE_S = 60.0
CRASHED = "crashed"
#: How often a running child is checked on.
POLL_S = 0.2


@dataclass
class Outcome:
    """How one run ended: its verdict (or ``crashed``), its results.json,
    its wall time (start-up and check included: what a budget pays), its
    results folder, and a few lines of output when it crashed."""

    verdict: str
    results: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    directory: Path | None = None
    tail: str = ""

    @property
    def first_anomaly_s(self) -> float | None:
        return self.results.get("first_anomaly_s")

    @property
    def staleness_max_ms(self) -> float | None:
        """The stalest read's staleness, where the checker measured staleness."""
        return (self.results.get("staleness") or {}).get("max_ms")


class Halted(Exception):
    """The run was stopped because its caller was asked to stop (``halt`` set)."""


def run_faultline(args: list[str], results_dir: Path, name: str, time_limit: float,
                  log: Path | None = None, halt: threading.Event | None = None) -> Outcome:
    """``faultline run ARGS --results-dir RESULTS_DIR --name NAME``; its run folder
    is the one that appears under ``RESULTS_DIR/NAME``, so runs in parallel,
    each with its own NAME, never mistake each other's folders.  The child's
    output goes to ``log`` (else to a scratch file: its last lines say why a
    run crashed).  Setting ``halt`` (from another thread) or a Ctrl-C stops the
    child as ``faultline run`` expects and raises :class:`Halted` or
    ``KeyboardInterrupt``."""
    halt = halt or threading.Event()
    parent = results_dir / name
    before = set(_folders(parent))
    cmd = [sys.executable, "-m", "harness.cli", "run", *args,
           "--results-dir", str(results_dir), "--name", name]
    env = {**os.environ, "CI": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT),
                                                        os.environ.get("PYTHONPATH"))))}
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = start + time_limit + HANG_GRACE_S
    with (open(log, "w+") if log is not None else tempfile.TemporaryFile("w+")) as out:
        with subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env,
                              start_new_session=True) as proc:
            hung = False
            try:
                while proc.poll() is None:
                    if halt.wait(POLL_S):
                        stop(proc)
                        raise Halted(name)
                    if time.monotonic() > deadline:
                        stop(proc)
                        hung = True
            except KeyboardInterrupt:
                stop(proc)
                raise
        out.seek(0)
        tail = "\n    ".join(out.read().strip().splitlines()[-6:])
    wall = time.monotonic() - start
    new = sorted(set(_folders(parent)) - before)
    directory = new[-1] if new else None
    try:
        res = json.loads((directory / "results.json").read_text()) if directory else {}
    except (OSError, ValueError):
        res = {}
    if hung:
        return Outcome(CRASHED, {}, wall, directory,
                       f"no verdict after {time_limit + HANG_GRACE_S:g} s\n    {tail}")
    if proc.returncode not in (0, 1, 2) or not res:
        return Outcome(CRASHED, res, wall, directory, f"exit {proc.returncode}\n    {tail}")
    return Outcome(res["verdict"], res, wall, directory)


def _folders(parent: Path) -> list[Path]:
    try:
        return [p for p in parent.iterdir() if p.is_dir() and not p.is_symlink()]
    except FileNotFoundError:
        return []


def stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, which ``faultline run`` takes as Ctrl-C: it heals the faults and
    stops its nodes, which a SIGKILL would leave holding the next run's ports."""
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
