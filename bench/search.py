"""The exact search on keys with failed compares and indeterminate writes.

    python bench/search.py [--keys 200] [--ops 100] [--budget 300000] [--anchor DIR]
    python bench/search.py --histories results/register-*/*/history.jsonl [--anchor DIR]

Keys of the register workload whose failed conditional updates keep them off
the unique-value fast path go to the WGL search; under faults they also hold
many indeterminate writes nobody read. This generates such keys (linearizable
by construction: bench/gen_register.py, failed compares read as "found
another value"), checks every key with the search alone under a state
budget, and prints per share of indeterminate ops: keys decided, unknown
(budget ran out), the median and maximum configurations explored, and the
time. ``--histories`` measures every key of saved register runs instead
(model ``dynamo-item``). ``--anchor DIR`` runs the same keys through the
checkers of another checkout (e.g. ``git worktree add /tmp/anchor HEAD~5``)
in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from checkers.history import write_jsonl  # noqa: E402
from gen_register import generate  # noqa: E402

#: Runs under the root given in argv[1]: that checkout's checkers.
MEASURE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from checkers import importers, wgl
from checkers.models import get_model
model, budget = get_model(sys.argv[2]), wgl.Budget(max_states=int(sys.argv[3]))
out = []
for path in sys.argv[4:]:
    ops = importers.load(path, "jsonl").operations()
    for key, part in model.partition(ops).items():
        t = time.perf_counter()
        r = wgl.check_key(model, key, part, budget)
        out.append([r.verdict, r.explored or 0, time.perf_counter() - t])
print(json.dumps(out))
"""


def measure(root: Path, model: str, budget: int, files: list[str]) -> list[tuple[str, int, float]]:
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(root), model, str(budget), *files],
                          capture_output=True, text=True, check=True)
    return [tuple(x) for x in json.loads(proc.stdout)]  # type: ignore[misc]


def report(label: str, name: str, rows: list[tuple[str, int, float]]) -> None:
    states = [s for _, s, _ in rows]
    verdicts = [v for v, _, _ in rows]
    print(f"{label:>8} {name:>8} {verdicts.count('valid'):>6} {verdicts.count('unknown'):>8} "
          f"{len(rows) - verdicts.count('valid') - verdicts.count('unknown'):>6} "
          f"{statistics.median(states):>14,.0f} {max(states):>11,} "
          f"{sum(t for _, _, t in rows):>8.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=200)
    ap.add_argument("--ops", type=int, default=100, help="ops per key")
    ap.add_argument("--processes", type=int, default=10)
    ap.add_argument("--budget", type=int, default=300_000, help="configurations per key")
    ap.add_argument("--info", default="0.05,0.2,0.4", help="shares of indeterminate ops")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--anchor", type=Path, help="another checkout to compare with")
    ap.add_argument("--histories", nargs="+", metavar="JSONL",
                    help="saved register runs' history.jsonl files, instead of generated keys")
    args = ap.parse_args()
    roots = [("this", ROOT)] + ([("anchor", args.anchor.resolve())] if args.anchor else [])
    header = (f"{'checkout':>8} {'valid':>6} {'unknown':>8} {'other':>6} "
              f"{'median states':>14} {'max states':>11} {'seconds':>8}")
    if args.histories:
        print(f"every key of {len(args.histories)} saved histories, model dynamo-item, "
              f"budget {args.budget:,} configurations")
        print(f"{'':>8} {header}")
        for name, root in roots:
            report("saved", name, measure(root, "dynamo-item", args.budget, args.histories))
        return
    print(f"{args.keys} keys x {args.ops} ops, {args.processes} processes, "
          f"budget {args.budget:,} configurations, seed {args.seed}")
    print(f"{'info':>8} {header}")
    with tempfile.TemporaryDirectory() as tmp:
        for share in (float(x) for x in args.info.split(",")):
            files = []
            for k in range(args.keys):
                path = f"{tmp}/k{share}-{k}.jsonl"
                write_jsonl(path, generate(args.ops, args.processes, share, args.seed + k))
                files.append(path)
            for name, root in roots:
                report(f"{share:.2f}", name, measure(root, "etcd", args.budget, files))


if __name__ == "__main__":
    main()
