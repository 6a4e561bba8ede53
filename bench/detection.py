"""Detection benchmark: prints figures, asserts nothing.

    python bench/detection.py [--runs 3] [--time-limit 30] [--pairings set-unchecked,...]

Runs each pairing (a workload, the faults that expose a bug flag) N times with
the bug flag on and N times with it off (same seeds), each as a real
`faultline run` in a fresh process, and prints per pairing: the detection
rate, the median time from the start of a run to the first anomalous op, and
the false alarms of the correct configuration (any verdict but VALID).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from runs import one_run

#: name -> (workload, nemesis, flags of the broken configuration, flags of the correct one)
PAIRINGS: dict[str, tuple[str, str, list[str], list[str]]] = {
    "set-unchecked": ("set", "partition-leader", ["--bug", "unchecked-range-reads"], []),
    "register-long-lease": ("register", "partition-leader", ["--bug", "long-lease"], []),
    "register-wall-clock": ("register", "partition-leader,clock-bump",
                            ["--bug", "wall-clock-lease"], []),
    "register-transfer": ("register", "leader-churn", ["--bug", "lease-survives-transfer"], []),
    # no bug flag: lease reads under a clock slower than the drift bound, against ReadIndex
    "register-drift": ("register", "partition-leader,clock-drift", [],
                       ["--read-path", "read_index"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--time-limit", type=float, default=30.0)
    ap.add_argument("--pairings", default="set-unchecked")
    ap.add_argument("--seed", type=int, default=100, help="first seed; run i uses seed + i")
    ap.add_argument("--nemesis-interval", type=float, default=4.0, help="fault window, s")
    ap.add_argument("--nemesis-quiet", type=float, default=2.0, help="quiet window, s")
    ap.add_argument("--extra", default="", help="more `faultline run` flags for both sides")
    ap.add_argument("--keep", metavar="DIR", help="keep the runs' results folders here")
    args = ap.parse_args()
    print(f"{'pairing':<22} {'detected':>9} {'median first anomaly':>21} {'false alarms':>13}")
    for name in args.pairings.split(","):
        workload, nemesis, broken, correct = PAIRINGS[name]
        found, firsts, alarms, crashed = 0, [], 0, 0
        with tempfile.TemporaryDirectory() as scratch:
            tmp = Path(args.keep or scratch) / name
            for i in range(args.runs):
                seed = args.seed + i
                timing = ["--nemesis-interval", str(args.nemesis_interval),
                          "--nemesis-quiet", str(args.nemesis_quiet), *args.extra.split()]
                bad = one_run(workload, nemesis, broken + timing, seed,
                              args.time_limit, tmp / "broken")
                found += bad.verdict == "invalid"
                if bad.first_anomaly_s is not None:
                    firsts.append(bad.first_anomaly_s)
                good = one_run(workload, nemesis, correct + timing, seed,
                               args.time_limit, tmp / "correct")
                alarms += good.verdict != "valid"
                for side, out in (("broken", bad), ("correct", good)):
                    if out.verdict == "crashed":
                        crashed += 1
                        print(f"  seed {seed} {side}: {out.tail}", file=sys.stderr)
        rate = f"{found}/{args.runs}"
        med = f"{statistics.median(firsts):.1f} s" if firsts else "-"
        print(f"{name:<22} {rate:>9} {med:>21} {alarms:>10}/{args.runs}"
              + (f"  ({crashed} crashed)" if crashed else ""))


if __name__ == "__main__":
    main()
