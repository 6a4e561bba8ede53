"""Generate realistic unique-value register histories, and measure the fast path.

    python bench/gen_register.py --out h.jsonl        # 1,000,000 ops, 50 processes, 5% info
    python bench/gen_register.py --ops 200000 --stale-read --out h.jsonl

:func:`generate` simulates a linearizable register under concurrency: every
op gets an interval (a random latency) and takes effect at a random point in
it, so the history is linearizable by construction.  Writes put fresh
integers; a cas compares against the value current when it takes effect
(most succeed; the others compare against an older value and fail); reads
return the value current when they take effect.  A fraction of ops is
indeterminate: the client times out (``info``) and the op takes effect
later, possibly after the timeout, or never; the process then continues
under a new id, as Jepsen's do.  ``stale_read=True`` then rewrites one read
to return a value that was overwritten before the read began (by a write
that itself began after that value's write completed), which makes the
history not linearizable.

Run as a script it writes the history as JSONL; ``bench/checker.py`` times
``faultline check`` on it.
"""

from __future__ import annotations

import argparse
import heapq
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from checkers.history import Event  # noqa: E402

_INVOKE, _EFFECT, _COMPLETE = 0, 1, 2
_READ, _WRITE, _CAS = 0, 1, 2


def generate(n_ops: int, processes: int = 50, info_fraction: float = 0.05,
             seed: int = 0, *, stale_read: bool = False,
             mix: tuple[float, float, float] = (0.5, 0.3, 0.2),
             names: tuple[str, str, str] = ("read", "write", "cas"),
             cas_success: float = 0.8, key: object = None) -> list[Event]:
    """A linearizable history of ``n_ops`` ops on one register.

    ``mix``: the shares of reads, writes and cas; ``names``: their op names
    (``("get", "put", "update")`` for the dynamo-item model).  Times are in
    nanoseconds; a latency averages 1 ms.
    """
    rng = random.Random(seed)
    rand, expo = rng.random, rng.expovariate
    p_read, p_write = mix[0], mix[0] + mix[1]
    # Per op (index = op number): kind, process, input, output, completion type,
    # invoke and completion times.
    kind = bytearray(n_ops)
    proc = [0] * n_ops
    inp: list = [None] * n_ops
    out: list = [None] * n_ops
    typ = [""] * n_ops
    t_inv = [0.0] * n_ops
    t_done = [0.0] * n_ops
    order: list[int] = []          # op * 2 (+1 for the completion), in time order
    heap: list[tuple[float, int, int, int]] = []
    seq = 0
    for p in range(processes):
        heap.append((expo(10.0), seq, _INVOKE, p))
        seq += 1
    heapq.heapify(heap)
    push, pop = heapq.heappush, heapq.heappop
    state = None
    history_vals: list = []        # values in the order they were written
    next_value = 1
    started = 0
    n_procs = processes
    while heap:
        t, _, what, x = pop(heap)
        if what == _INVOKE:
            if started >= n_ops:
                continue
            i = started
            started += 1
            proc[i] = x
            t_inv[i] = t
            r = rand()
            k = _READ if r < p_read else _WRITE if r < p_write else _CAS
            kind[i] = k
            if k != _READ:
                out[i] = next_value      # the value it will put
                next_value += 1
            order.append(2 * i)
            lat = expo(1.0) + 0.05
            if rand() < info_fraction:
                typ[i] = "info"
                # Times out at t + lat; took effect before, after, or never.
                if rand() < 0.7:
                    push(heap, (t + rand() * lat * 3, seq, _EFFECT, i))
                    seq += 1
            else:
                push(heap, (t + rand() * lat, seq, _EFFECT, i))
                seq += 1
            push(heap, (t + lat, seq + 1, _COMPLETE, i))
            seq += 2
        elif what == _EFFECT:
            k = kind[x]
            if k == _READ:
                out[x] = state
            elif k == _WRITE:
                state = inp[x] = out[x]
                history_vals.append(state)
            else:
                if rand() < cas_success or len(history_vals) < 2:
                    frm = state
                else:
                    frm = history_vals[-1 - rng.randrange(1, min(len(history_vals), 10))]
                inp[x] = (frm, out[x])
                if frm == state:
                    state = out[x]
                    history_vals.append(state)
                    if not typ[x]:
                        typ[x] = "ok"
                elif not typ[x]:
                    typ[x] = "fail"
            if not typ[x]:
                typ[x] = "ok"
        else:  # completion
            t_done[x] = t
            order.append(2 * x + 1)
            p = proc[x]
            if typ[x] == "info":
                p += n_procs              # a crashed client comes back as a new process
            push(heap, (t + expo(10.0), seq, _INVOKE, p))
            seq += 1
    # Ops that never took effect: a write still has its value, a cas a from.
    for i in range(n_ops):
        k = kind[i]
        if k == _WRITE:
            inp[i] = out[i]
        elif k == _CAS and inp[i] is None:
            inp[i] = (history_vals[rng.randrange(len(history_vals))] if history_vals
                      else None, out[i])
        if not typ[i]:
            typ[i] = "fail" if k != _READ else "info"
    if stale_read:
        _inject_stale_read(rng, kind, typ, out, inp, t_inv, t_done)

    events: list[Event] = []
    append = events.append
    for idx, e in enumerate(order):
        i = e >> 1
        k = kind[i]
        f = names[k]
        if e & 1:
            ty = typ[i]
            if k == _READ:
                v = out[i] if ty == "ok" else None
            elif k == _WRITE:
                v = inp[i]
            else:
                v = list(inp[i])
            append(Event(idx, ty, proc[i], f, key, v, int(t_done[i] * 1e6)))
        else:
            v = None if k == _READ else inp[i] if k == _WRITE else list(inp[i])
            append(Event(idx, "invoke", proc[i], f, key, v, int(t_inv[i] * 1e6)))
    return events


def _inject_stale_read(rng: random.Random, kind: bytearray, typ: list, out: list,
                       inp: list, t_inv: list, t_done: list) -> None:
    """Make one ok read in the second half return a value that a write which
    began after that value's writer completed had overwritten before the read
    began."""
    n = len(kind)

    def ok_writer(i: int) -> bool:
        return typ[i] == "ok" and kind[i] != _READ

    reads = [i for i in range(n // 2, n) if kind[i] == _READ and typ[i] == "ok"]
    rng.shuffle(reads)
    for r in reads:
        # w2: an ok writer that completed before the read began ...
        w2 = max((i for i in range(r) if ok_writer(i) and t_done[i] < t_inv[r]),
                 key=lambda i: t_done[i], default=None)
        if w2 is None:
            continue
        # ... and w1: one that completed before w2 began.
        w1 = max((i for i in range(w2) if ok_writer(i) and t_done[i] < t_inv[w2]),
                 key=lambda i: t_done[i], default=None)
        if w1 is None:
            continue
        out[r] = out[w1]
        return
    raise ValueError("no read to make stale: history too short")


# ------------------------------------------------------------------ measuring

def add_history_args(ap: argparse.ArgumentParser) -> None:
    """The flags of :func:`generate`'s history: its size, processes, the share
    of indeterminate ops and the seed (for every bench that generates one)."""
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--processes", type=int, default=50)
    ap.add_argument("--info", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_history_args(ap)
    ap.add_argument("--stale-read", action="store_true")
    ap.add_argument("--out", required=True, help="JSONL file to write")
    args = ap.parse_args()
    from checkers.history import write_jsonl

    t0 = time.perf_counter()
    events = generate(args.ops, args.processes, args.info, args.seed,
                      stale_read=args.stale_read)
    write_jsonl(args.out, events)
    print(f"generated {args.ops:,} ops ({len(events):,} events), {args.processes} processes, "
          f"{args.info:.0%} indeterminate, seed {args.seed}"
          f"{', one stale read' if args.stale_read else ''}: {time.perf_counter() - t0:.1f} s "
          f"-> {args.out}")


if __name__ == "__main__":
    main()
