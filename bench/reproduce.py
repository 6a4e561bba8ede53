"""Reproduction benchmark: prints figures, asserts nothing.

    python bench/reproduce.py [--pairings a,b] [--replays 10] [--seed 100] [--tries 5]
                              [--targets recorded|role] [--keep DIR]

For each pairing of bench/pairings.toml that plants a bug: run its broken
side from --seed on until a run finds the bug (at most --tries seeds), then
`faultline replay` that run --replays times with its recorded fault schedule,
and print how often the original anomaly came back (the same kind, on the
same kind of op, in the same fault window) and how often the same anomaly
came back in another window.  Each run and each replay is a real
`faultline` process; --keep keeps their folders.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detection import PAIRINGS_FILE, parse_pairings  # noqa: E402
from harness.subrun import ROOT  # noqa: E402
from runs import one_run  # noqa: E402


def replay(run: Path, replays: int, targets: str, into: Path) -> tuple[int, int, int, float]:
    """Replays of ``run``: reproduced, near misses (another window), done, seconds."""
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "harness.cli", "replay", str(run),
                          "--max", str(replays), "--targets", targets,
                          "--results-dir", str(into)],
                         cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "CI": "1"})
    lines = [line for line in out.stdout.splitlines() if line.startswith("replay ")]
    near = sum("the same anomaly in another window" in line for line in lines)
    m = re.search(r"reproduced in (\d+) of (\d+) replays", out.stdout)
    found, done = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return found, near, done, time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairings", help="comma-separated pairing names (default: every one "
                    "with a bug flag)")
    ap.add_argument("--replays", type=int, default=10)
    ap.add_argument("--seed", type=int, default=100, help="first seed of the original runs")
    ap.add_argument("--tries", type=int, default=5,
                    help="seeds to try for a run that finds the bug")
    ap.add_argument("--targets", choices=("recorded", "role"), default="recorded")
    ap.add_argument("--keep", type=Path, help="keep every run's folder here")
    args = ap.parse_args()
    pairings = parse_pairings(PAIRINGS_FILE.read_text())
    names = args.pairings.split(",") if args.pairings else [n for n, p in pairings.items()
                                                             if p.flag]
    print(f"{'pairing':<32}{'original':>12}{'reproduced':>14}{'other window':>14}"
          f"{'s/replay':>10}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        for name in names:
            p = pairings[name]
            original = None
            for seed in range(args.seed, args.seed + args.tries):
                out = one_run(p.workload, p.nemesis, p.side_flags("broken"), seed,
                              p.time_limit, root / name)
                if out.verdict == "invalid":
                    original = (seed, out.directory)
                    break
            if original is None:
                print(f"{name:<32}{'none found':>12}", flush=True)
                continue
            seed, run = original
            found, near, done, took = replay(run, args.replays, args.targets,
                                             root / name / "replays")
            print(f"{name:<32}{f'seed {seed}':>12}{f'{found}/{done}':>14}{f'{near}/{done}':>14}"
                  f"{took / max(done, 1):>10.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
