"""Checker benchmark: prints figures, asserts nothing.

    python bench/checker.py                 # Porcupine set + 1,000,000-op register
    python bench/checker.py --ops 200000    # a smaller generated history

Part 1 checks every history of ../shared/data/porcupine (one process, keys in
parallel as `faultline check` does) and prints per-file and total wall time
with the verdicts against verdicts.tsv.  Part 2 generates a unique-value
register history (50 processes, 5% indeterminate ops) as JSONL and times
``faultline check`` on it in a fresh process, with its peak memory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from checkers import importers  # noqa: E402
from checkers.check import check_histories  # noqa: E402

WORDS = {"valid": "linearizable", "invalid": "not-linearizable"}


def porcupine(data: Path, jobs: int | None) -> None:
    verdicts = dict(line.split("\t") for line in
                    (data / "verdicts.tsv").read_text().splitlines() if line)
    t0 = time.monotonic()
    paths = importers.discover([str(data / "test_data")])
    histories = [importers.load(p) for p in paths]
    t_load = time.monotonic() - t0
    results = check_histories(histories, jobs=jobs)
    total = time.monotonic() - t0
    wrong = 0
    print(f"{'file':<34} {'ops':>5} {'seconds':>8}  verdict (expected)")
    for r in results:
        rel = str(Path(r.path).relative_to(data))
        want = verdicts.get(rel)
        got = WORDS.get(r.verdict, r.verdict)
        wrong += want is not None and got != want
        mark = "" if want in (None, got) else "  <-- WRONG"
        print(f"{rel:<34} {r.ops:>5} {r.elapsed:>8.3f}  {got} ({want or '-'}){mark}")
    print(f"porcupine set: {len(results)} files, load {t_load:.2f} s, "
          f"load+check {total:.2f} s wall, {wrong} verdicts differ from verdicts.tsv")


def generated(n_ops: int, processes: int, info: float, seed: int, stale: bool) -> None:
    """Time `faultline check` itself, in a fresh process, on a generated history."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "history.jsonl")
        gen = [sys.executable, str(ROOT / "bench" / "gen_register.py"), "--ops", str(n_ops),
               "--processes", str(processes), "--info", str(info), "--seed", str(seed),
               "--out", path] + (["--stale-read"] if stale else [])
        print(subprocess.run(gen, check=True, capture_output=True, text=True).stdout.strip())
        out = os.path.join(tmp, "out.txt")
        t0 = time.monotonic()
        with open(out, "w") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "check", path],
                                    stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
            # wait4: the peak memory of this child alone, not of the generator
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        text = open(out).read()
    line = text.splitlines()[0] if text else ""
    print(f"  faultline check: {wall:.1f} s wall, peak RSS {usage.ru_maxrss / 1024:.0f} MiB, "
          f"exit {os.waitstatus_to_exitcode(status)}")
    print(f"  {line}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "porcupine")
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--processes", type=int, default=50)
    ap.add_argument("--info", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stale-read", action="store_true",
                    help="inject one stale read into the generated history")
    ap.add_argument("--jobs", type=int)
    ap.add_argument("--skip-porcupine", action="store_true")
    ap.add_argument("--skip-generated", action="store_true")
    args = ap.parse_args()
    print(f"seed {args.seed}")
    if not args.skip_porcupine:
        if (args.data / "verdicts.tsv").exists():
            porcupine(args.data, args.jobs)
        else:
            print(f"porcupine set: {args.data} not found, skipped")
    if not args.skip_generated:
        generated(args.ops, args.processes, args.info, args.seed, args.stale_read)


if __name__ == "__main__":
    main()
