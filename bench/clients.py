"""Harness client benchmark: prints figures, asserts nothing.

    python bench/clients.py [--seconds 8] [--concurrency 10] [--workers 1,2]

How many ops/s the harness's clients (boto3 in worker processes, every
event merged into one time-ordered history, as in ``faultline run``) sustain
with the register workload:

- against an HTTP endpoint that does nothing (answers every DynamoDB call
  with a fixed, valid response from a separate process): the ceiling of the
  harness itself;
- against a real 5-node reference store on loopback (no faults): what a
  test sees.

Both share the machine's cores with the clients, as they do in a run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.cluster import LocalCluster, free_ports  # noqa: E402
from harness.clients import ClientPool  # noqa: E402

#: What the do-nothing endpoint answers, per X-Amz-Target operation.
_TABLE = {"TableName": "t", "TableStatus": "ACTIVE", "KeySchema": [], "AttributeDefinitions": []}
_ANSWERS = {"CreateTable": {"TableDescription": _TABLE}, "DescribeTable": {"Table": _TABLE},
            "Scan": {"Items": [], "Count": 0, "ScannedCount": 0}, "GetItem": {},
            "PutItem": {}, "UpdateItem": {}}


def _null_server(port: int, ready: mp.Event) -> None:  # type: ignore[valid-type]
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        op = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        return web.Response(body=json.dumps(_ANSWERS.get(op, {})),
                            content_type="application/x-amz-json-1.0")

    app = web.Application()
    app.router.add_post("/", handle)
    ready.set()  # type: ignore[attr-defined]
    web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True)


def measure(endpoints: list[tuple[str, str]], seconds: float, concurrency: int,
            workers: int, table: str) -> tuple[float, dict[str, int]]:
    """Acknowledged-or-not completions per second over ``seconds``."""
    events = [0]

    def sink(type: str, *a: object, **kw: object) -> None:
        events[0] += type != "invoke"

    pool = ClientPool("register", {"table": table}, endpoints, concurrency=concurrency, seed=1,
                      timeout=2.0, on_event=sink, workers=workers)
    with pool:
        pool.setup()
        t0 = time.monotonic()
        pool.start(time_limit=seconds)
        pool.wait(seconds + 30)
        elapsed = time.monotonic() - t0
        pool.stop()
    return events[0] / elapsed, pool.counts()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--workers", default="1,2", help="worker process counts to try")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    print(f"{'target':<22} {'workers':>7} {'ops/s':>8}   ok/fail/info")

    def row(target: str, eps: list[tuple[str, str]], w: int) -> None:
        rate, c = measure(eps, args.seconds, args.concurrency, w, f"bench_w{w}")
        print(f"{target:<22} {w:>7} {rate:>8.0f}   "
              f"{c.get('ok', 0)}/{c.get('fail', 0)}/{c.get('info', 0)}", flush=True)

    ctx = mp.get_context("spawn")
    port, ready = free_ports(1)[0], ctx.Event()
    server = ctx.Process(target=_null_server, args=(port, ready), daemon=True)
    server.start()
    try:
        ready.wait(10)
        time.sleep(0.3)
        for w in counts:
            row("do-nothing endpoint", [(f"n{i}", f"http://127.0.0.1:{port}") for i in range(5)],
                w)
    finally:
        server.terminate()
        server.join(5)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(tmp, 5)
        cluster.start()
        try:
            eps = [(n.id, n.endpoint) for n in cluster.nodes]
            for w in counts:
                row("5-node store", eps, w)
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
