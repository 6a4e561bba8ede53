"""False-alarm matrix: the correct store under every fault, every workload.

    python bench/false_alarms.py [--seeds 2] [--time-limit 20] [--workloads register,set,bank]
                                 [--nemeses "kill;kill,partition-random;..."] [--keep DIR]

Runs every workload against every fault of the catalogue alone and in a few
combinations, on the store with no bug flag, each a real `faultline run` in a
fresh process, and prints one row per fault with each workload's verdicts
(V valid, I invalid, U unknown, C crashed). Every cell must be all V: an
INVALID here is a false alarm, and an UNKNOWN is a verdict nobody can use.
Exit status 1 when any cell is not.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.spec import SpecError, TestSpec  # noqa: E402
from nemesis.faults import FAULTS, GROUP_FAULTS  # noqa: E402
from runs import one_run  # noqa: E402

WORKLOADS = ("register", "set", "bank")
#: Combinations that mix fault kinds: process with network, network with
#: clock, two network faults, churn with pauses, churn onto lagging state
#: machines over slow links (what exposes ``no-noop-read``).
COMBINATIONS = ("kill,partition-random", "partition-halves,clock-strobe", "delay,loss",
                "leader-churn,pause", "apply-slow,leader-churn,delay")
#: The subset the default test suite runs (one seed per workload, short
#: runs): the process faults, power loss and random partitions.
QUICK = ("kill", "kill-leader", "pause", "pause-leader", "power-loss", "partition-random")
LETTER = {"valid": "V", "invalid": "I", "unknown": "U", "crashed": "C"}
#: Raft groups of the store under the faults aimed at a group's leader
GROUPS = 4


def group_flags(workload: str, nemesis: str) -> list[str] | None:
    """The flags a cell needs for its faults (``--groups`` for a group
    fault), or None when the harness cannot run it (bank on several groups)."""
    faults = [f.split(":")[0] for f in nemesis.split(",")]
    groups = GROUPS if GROUP_FAULTS & set(faults) else 1
    try:
        TestSpec(workload=workload, nemesis=faults, groups=groups)
    except SpecError:
        return None
    return ["--groups", str(groups)] if groups > 1 else []


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2, help="runs per cell (seeds seed..seed+N-1)")
    ap.add_argument("--seed", type=int, default=1, help="first seed")
    ap.add_argument("--time-limit", type=float, default=20.0)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--nemeses", default=";".join([*FAULTS, *COMBINATIONS]),
                    help="';'-separated nemesis specs, each as `--nemesis` takes it "
                    "(default: every fault of the catalogue, then the combinations)")
    ap.add_argument("--extra", default="", help="more `faultline run` flags")
    ap.add_argument("--keep", metavar="DIR", help="keep every run's results folder here")
    args = ap.parse_args()
    nemeses = [n for n in args.nemeses.split(";") if n]
    workloads = args.workloads.split(",")
    print(f"seeds {args.seed}..{args.seed + args.seeds - 1}, {args.time_limit:g} s runs, "
          f"correct store (no bug flag)", flush=True)
    print(f"{'faults':<32}" + "".join(f"{w:>12}" for w in workloads), flush=True)
    bad = 0
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.keep or scratch)
        for nemesis in nemeses:
            cells = []
            for workload in workloads:
                letters = ""
                more = group_flags(workload, nemesis)
                if more is None:
                    cells.append("-")
                    continue
                for seed in range(args.seed, args.seed + args.seeds):
                    out = one_run(workload, nemesis, [*args.extra.split(), *more], seed,
                                  args.time_limit, root / workload / nemesis.replace(",", "+"))
                    letters += LETTER.get(out.verdict, "?")
                    if out.verdict != "valid":
                        bad += 1
                        where = out.directory or out.tail
                        print(f"  {workload} {nemesis} seed {seed}: {out.verdict.upper()} "
                              f"({where})", file=sys.stderr, flush=True)
                cells.append(letters)
            print(f"{nemesis:<32}" + "".join(f"{c:>12}" for c in cells), flush=True)
    runs = sum(group_flags(w, n) is not None for n in nemeses for w in workloads) * args.seeds
    print(f"{runs - bad}/{runs} runs VALID in {time.monotonic() - t0:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
