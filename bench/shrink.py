"""Shrink benchmark: prints figures, asserts nothing.

    python bench/shrink.py                  # 1,000,000-op register history
    python bench/shrink.py --ops 100000     # a smaller one

Generates a linearizable register history (``bench/gen_register.py``: 50
processes, 5% indeterminate ops, the register workload's op names) with one
planted stale read, the only anomaly, writes it as JSONL, and shrinks it as
``faultline shrink FILE`` does (same modules, one process): ops before and
after, seconds per phase, the checks delta debugging ran, peak memory, and
the ops kept.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from checkers.history import write_jsonl  # noqa: E402
from checkers.report import op_line  # noqa: E402
from checkers.shrink import shrink  # noqa: E402
from harness.shrink_source import open_source, write_shrunk  # noqa: E402
from gen_register import add_history_args, generate  # noqa: E402

#: The register workload's op names (model dynamo-item).
NAMES = ("get", "put", "update")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_history_args(ap)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.jsonl"
        t = time.perf_counter()
        events = generate(args.ops, args.processes, args.info, args.seed, stale_read=True,
                          names=NAMES, key="k0")
        write_jsonl(path, events)
        del events
        print(f"generated {args.ops:,} ops, {args.processes} processes, {args.info:.0%} "
              f"indeterminate, seed {args.seed}, one stale read: "
              f"{time.perf_counter() - t:.1f} s ({path.stat().st_size / 2**20:.0f} MiB)")

        started = time.perf_counter()
        source = open_source(str(path))
        loaded = time.perf_counter() - started
        result = shrink(source.ops, source.judge(), source.rules)
        t = time.perf_counter()
        outcome = write_shrunk(source, result, Path(tmp) / "shrunk.jsonl")
        written = time.perf_counter() - t
        total = time.perf_counter() - started

    model = source.model
    assert model is not None  # a register history
    phases = {"load": loaded, **result.phases, "write": written}
    print(f"model {model.name}; verdict {result.verdict}, "
          f"shrunk {outcome.verdict}; kept: "
          f"{result.target.kind if result.target else 'nothing to shrink'}")
    print(f"ops: {result.before:,} -> {len(result.ops):,} (ddmin started from "
          f"{result.start:,}, {result.tests:,} checks)")
    print("seconds: " + ", ".join(f"{name} {s:.2f}" for name, s in phases.items())
          + f"; total {total:.2f} (without generating)")
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")
    for op in result.ops:
        print(f"  {op_line(op, model.describe_op)}")


if __name__ == "__main__":
    main()
