"""Checker benchmark: prints figures, asserts nothing.

    python bench/checker.py                 # Porcupine set + 1,000,000-op register
    python bench/checker.py --ops 200000    # a smaller generated history

Part 1 checks every history of ../shared/data/porcupine (one process, keys in
parallel as `faultline check` does) and prints per-file and total wall time
with the verdicts against verdicts.tsv.  Part 2 generates a unique-value
register history (50 processes, 5% indeterminate ops), writes it as JSONL,
and times reading, pairing and checking it, with peak memory.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from checkers import importers  # noqa: E402
from checkers.check import check_histories  # noqa: E402
from checkers.history import write_jsonl  # noqa: E402

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


def generated(n_ops: int, processes: int, info: float, seed: int) -> None:
    from gen_register import generate

    t0 = time.monotonic()
    events = generate(n_ops, processes, info, seed)
    t_gen = time.monotonic() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "history.jsonl")
        write_jsonl(path, events)
        del events
        rss0 = _maxrss_mib()
        t0 = time.monotonic()
        # a generator: the events are freed once paired, as in `faultline check`
        [r] = check_histories(importers.load(p) for p in [path])
        t_all = time.monotonic() - t0
    print(f"generated register history: {n_ops:,} ops, {processes} processes, "
          f"{info:.0%} indeterminate, seed {seed} (generated in {t_gen:.1f} s)")
    print(f"  read+validate JSONL, pair and check: {t_all:.1f} s; verdict {r.verdict} via "
          f"{r.keys[0].algorithm if r.keys else '-'}")
    print(f"  peak RSS {_maxrss_mib():.0f} MiB (before loading: {rss0:.0f} MiB)")


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "porcupine")
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--processes", type=int, default=50)
    ap.add_argument("--info", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)
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
        generated(args.ops, args.processes, args.info, args.seed)


if __name__ == "__main__":
    main()
