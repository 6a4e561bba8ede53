"""Store benchmark: prints figures, asserts nothing.

    python bench/store.py [--seconds 5] [--procs 4] [--conns 8] [--groups 1,4]

Starts a 3-node cluster (no faults) per read path and per number of Raft
groups, and loads it from separate processes, in two ways: a raw HTTP load
generator (``http.client`` with keep-alive, many connections per process:
what the store itself can do) and boto3 clients (what the harness will see).
Reports acknowledged ops/s and p50/p99 latency for PutItem, GetItem (per
read path), Query, and a 50/50 Put/Get mix.  Each request goes to the
leader of its key's group, as a client that knows the routes would send it
(with one group: the leader), so no configuration pays a forwarding hop the
other does not.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.admin import leader_and_term  # noqa: E402
from harness.cluster import LocalCluster  # noqa: E402
from harness.spec import READ_FAMILIES, READ_PATHS  # noqa: E402
from system.config import Shards  # noqa: E402
from system.dynamo.values import encode_key_value  # noqa: E402
from system.routing import Router  # noqa: E402

TABLE = "bench"
KEYS = 1000


def _body(op: str, i: int) -> tuple[str, bytes]:
    key = {"pk": {"S": f"k{i % KEYS}"}}
    if op == "put":
        req = {"TableName": TABLE, "Item": {**key, "v": {"N": str(i)}}}
        return "PutItem", json.dumps(req).encode()
    if op == "get":
        return "GetItem", json.dumps({"TableName": TABLE, "Key": key}).encode()
    req = {"TableName": TABLE, "KeyConditionExpression": "pk = :p",
           "ExpressionAttributeValues": {":p": key["pk"]}}
    return "Query", json.dumps(req).encode()


def _routes(endpoints: list[str]) -> list[str]:
    """The endpoint each key's requests go to: its group's leader."""
    router = Router(Shards(groups=len(endpoints)))
    return [endpoints[router.group_of(TABLE, encode_key_value({"S": f"k{i}"}))]
            for i in range(KEYS)]


def _raw_worker(args: tuple[list[str], str, float, int, int]) -> tuple[int, int, list[float]]:
    """One process with ``conns`` threads, each with a keep-alive connection
    to each group leader."""
    import threading

    endpoints, op, seconds, conns, seed = args
    routes = _routes(endpoints)
    lat: list[float] = []
    counts = [0, 0]
    deadline = time.monotonic() + seconds

    def connect(endpoint: str) -> http.client.HTTPConnection:
        host, port = endpoint.rsplit(":", 1)
        return http.client.HTTPConnection(host, int(port), timeout=10)

    def loop(t: int) -> None:
        conn = {e: connect(e) for e in set(endpoints)}
        i = (seed * conns + t) * 1_000_003
        while time.monotonic() < deadline:
            kind = op if op != "mix" else ("put" if i % 2 else "get")
            target, body = _body(kind, i)
            endpoint = routes[i % KEYS]
            c = conn[endpoint]
            t0 = time.perf_counter()
            try:
                c.request("POST", "/", body, {"X-Amz-Target": f"DynamoDB_20120810.{target}",
                                              "Content-Type": "application/x-amz-json-1.0"})
                r = c.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn[endpoint] = connect(endpoint)
            if ok:
                lat.append(time.perf_counter() - t0)
            counts[0 if ok else 1] += 1
            i += 1

    threads = [threading.Thread(target=loop, args=(t,)) for t in range(conns)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return counts[0], counts[1], lat


def _boto_worker(args: tuple[list[str], str, float, int, int]) -> tuple[int, int, list[float]]:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    endpoints, op, seconds, _, seed = args
    routes = _routes(endpoints)
    clients = {e: boto3.client("dynamodb", endpoint_url=f"http://{e}", region_name="us-east-1",
                               aws_access_key_id="x", aws_secret_access_key="x",
                               config=Config(retries={"total_max_attempts": 1}))
               for e in set(endpoints)}
    lat: list[float] = []
    ok = errs = 0
    i = seed * 1_000_003
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        kind = op if op != "mix" else ("put" if i % 2 else "get")
        key = {"pk": {"S": f"k{i % KEYS}"}}
        db = clients[routes[i % KEYS]]
        t0 = time.perf_counter()
        try:
            if kind == "put":
                db.put_item(TableName=TABLE, Item={**key, "v": {"N": str(i)}})
            elif kind == "get":
                db.get_item(TableName=TABLE, Key=key)
            else:
                db.query(TableName=TABLE, KeyConditionExpression="pk = :p",
                         ExpressionAttributeValues={":p": key["pk"]})
            ok += 1
            lat.append(time.perf_counter() - t0)
        except (BotoCoreError, ClientError):
            errs += 1
        i += 1
    return ok, errs, lat


def run(endpoints: list[str], op: str, seconds: float, procs: int, conns: int,
        boto: bool) -> str:
    worker = _boto_worker if boto else _raw_worker
    with mp.get_context("spawn").Pool(procs) as pool:
        parts = pool.map(worker, [(endpoints, op, seconds, conns, s) for s in range(procs)])
    ok = sum(p[0] for p in parts)
    errs = sum(p[1] for p in parts)
    lat = sorted(x for p in parts for x in p[2])
    if not lat:
        return f"{ok / seconds:8.0f} ops/s  (no successful op; {errs} errors)"
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    return f"{ok / seconds:8.0f} ops/s  p50 {p50:6.2f} ms  p99 {p99:7.2f} ms  errors {errs}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--procs", type=int, default=4, help="load processes")
    ap.add_argument("--conns", type=int, default=8, help="connections per raw process")
    ap.add_argument("--paths", default=",".join(READ_PATHS))
    ap.add_argument("--groups", default="1",
                    help="comma-separated numbers of Raft groups to compare (default: 1)")
    ap.add_argument("--placement", default="spread",
                    help="with several groups, comma-separated: spread (each group's leader "
                    "on its own node, the store's default) and/or together (every leader "
                    "on one node, as with one group) (default: spread)")
    ap.add_argument("--profile", action="store_true",
                    help="sample the leader with py-spy during the lease-path mix")
    args = ap.parse_args()
    for groups in [int(g) for g in args.groups.split(",")]:
        for placement in args.placement.split(",") if groups > 1 else ["spread"]:
            for path in args.paths.split(","):
                _bench(args, path, groups, placement)


def _together(cluster: LocalCluster, groups: int, to: str) -> None:
    """Every group's leadership handed to ``to``."""
    from harness.admin import admin_post

    for g in range(1, groups):
        lt = leader_and_term(cluster.nodes, group=g)
        if lt and lt[0] != to:
            admin_post(cluster.node(lt[0]), "/transfer", {"group": g, "to": to})
    time.sleep(1.0)


def _bench(args: argparse.Namespace, path: str, groups: int, placement: str) -> None:
    config: dict = {"reads": {f: path for f in READ_FAMILIES}}
    if groups > 1:
        config["shards"] = {"groups": groups,
                            "leaders": "spread" if placement == "spread" else "any"}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(tmp, 3, config)
        cluster.start(seed=1)
        try:
            leader = cluster.node(cluster.wait_for_leader())
            _setup(leader.api)
            if placement == "together":
                _together(cluster, groups, leader.id)
            leads = [leader_and_term(cluster.nodes, group=g) for g in range(groups)]
            if not all(leads):
                print(f"groups {groups}: a group has no leader; skipped")
                return
            endpoints = [cluster.node(lt[0]).api for lt in leads if lt]
            where = " ".join(lt[0] for lt in leads if lt)
            print(f"read path {path}, {groups} group(s) led by {where} ({placement}): 3 nodes, "
                  f"{args.procs} load processes, {args.seconds:g} s each")
            ops = ["put", "get", "query", "mix"] if path == "lease" else ["get"]
            for op in ops:
                spy = _spy(leader.pid, args.seconds) if args.profile and op == "mix" else None
                raw = run(endpoints, op, args.seconds, args.procs, args.conns, False)
                print(f"  raw   {op:<6} {raw}")
                if spy:
                    _print_profile(*spy)
            # unloaded latency: one connection, one request at a time
            print(f"  raw   get 1c {run(endpoints, 'get', args.seconds, 1, 1, False)}")
            for op in ops:
                bo = run(endpoints, op, args.seconds, args.procs, 1, True)
                print(f"  boto3 {op:<6} {bo}")
        finally:
            cluster.stop()


def _spy(pid: int, seconds: float) -> tuple[subprocess.Popen[bytes], str]:
    out = tempfile.mktemp(suffix=".txt")
    proc = subprocess.Popen(["py-spy", "record", "-p", str(pid), "-d", str(int(seconds)),
                             "-r", "200", "-f", "raw", "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, out


def _print_profile(proc: subprocess.Popen[bytes], path: str, top: int = 12) -> None:
    """Where the leader's time goes: self time and inclusive time per function."""
    proc.wait()
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] + " (" + f.rsplit("/", 1)[-1] for f in stack.split(";")]
        n = int(count)
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    print(f"  leader profile ({total} samples): self time")
    for f, n in own.most_common(top):
        print(f"    {100 * n / total:5.1f}%  {f}")
    print("  inclusive time in the store's own code")
    ours = [(f, n) for f, n in incl.most_common() if "system/" in f or "(node.py" in f
            or any(m in f for m in ("service.py", "commands.py", "core.py", "mvcc.py",
                                    "storage.py", "transport.py", "expressions.py"))]
    for f, n in ours[:top]:
        print(f"    {100 * n / total:5.1f}%  {f}")


def _setup(endpoint: str) -> None:
    host, port = endpoint.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    req = {"TableName": TABLE, "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
           "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
           "BillingMode": "PAY_PER_REQUEST"}
    c.request("POST", "/", json.dumps(req).encode(),
              {"X-Amz-Target": "DynamoDB_20120810.CreateTable"})
    c.getresponse().read()
    for i in range(KEYS):
        target, body = _body("put", i)
        c.request("POST", "/", body, {"X-Amz-Target": f"DynamoDB_20120810.{target}"})
        c.getresponse().read()


if __name__ == "__main__":
    main()
