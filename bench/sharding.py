"""What the sharded store's lease checks cost: TransactGetItems over many
groups (concurrent vs sequential checks), and Query while the default group
has no leader.  Prints figures, asserts nothing.

    python bench/sharding.py [--groups 8] [--items 100] [--requests 60] [--outage 8]

For each store (the correct one, whose TransactGetItems checks the groups it
touches concurrently, and ``sequential-lease-checks``, which checks them one
after another), a 3-node local cluster with ``--groups`` Raft groups and
leases off (every check misses and takes a ReadIndex round: the "lease
misses forced" case), a table of ``--items`` items spread over every group,
then one client sending TransactGetItems of all of them to one node, in
three phases:

* ``no delay``: loopback links;
* ``delay D ms`` and ``delay 4D ms``: every peer link delayed that much each
  way (the harness's own proxies), so each remote group check costs a round
  trip; past the 5 s check timeout a request fails with 500.

Each phase reports p50/p99 latency of the answered requests and the share
answered 500.

Then, for the correct store and ``keyless-lease-default-group``: the default
group's leader is isolated for ``--outage`` seconds while a client on a
healthy node queries partitions of the groups that node does not lead (the
groups that keep a leader).  Reported: how long the queries went unanswered
(the longest run of failed queries) and the share that failed: the correct
store checks each Query's own group, the flag checks the default group,
which has no leader until the majority elects one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402

from harness.local_backend import LocalBackend  # noqa: E402
from system.config import Shards  # noqa: E402
from system.dynamo.values import encode_key_value  # noqa: E402
from system.routing import Router  # noqa: E402

TABLE = "bench_txn"


def _client(endpoint: str) -> object:
    return boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x",
                        config=Config(retries={"total_max_attempts": 1}, read_timeout=30,
                                      connect_timeout=5))


def _create(db: object) -> None:
    def create() -> None:
        try:
            db.create_table(  # type: ignore[attr-defined]
                TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        except ClientError as e:  # an earlier attempt made it after all
            if e.response["Error"]["Code"] != "ResourceInUseException":
                raise
    _retry(create)


def _keys(groups: int, items: int) -> list[str]:
    """``items`` partition keys, as evenly over the groups as the hash allows."""
    router = Router(Shards(groups=groups))
    by_group: dict[int, list[str]] = {g: [] for g in range(groups)}
    i = 0
    while sum(map(len, by_group.values())) < items:
        k = f"item{i}"
        g = router.group_of(TABLE, encode_key_value({"S": k}))
        if len(by_group[g]) < -(-items // groups):
            by_group[g].append(k)
        i += 1
    return [k for ks in by_group.values() for k in ks][:items]


def _retry(call: Callable[[], object], seconds: float = 20.0) -> object:
    """A setup call, again until it goes through (leaders settle after a start)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except (ClientError, BotoCoreError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _phase(db: object, keys: list[str], requests: int) -> str:
    lat: list[float] = []
    errors = 0
    for _ in range(requests):
        t0 = time.perf_counter()
        try:
            db.transact_get_items(TransactItems=[  # type: ignore[attr-defined]
                {"Get": {"TableName": TABLE, "Key": {"pk": {"S": k}}}} for k in keys])
            lat.append(time.perf_counter() - t0)
        except ClientError as e:
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500:
                errors += 1
            else:
                raise
        except BotoCoreError:
            errors += 1
    if not lat:
        return f"no answer; 500s {errors}/{requests}"
    lat.sort()
    p50 = statistics.median(lat) * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    return f"p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  500s {errors}/{requests}"


def bench(groups: int, items: int, requests: int, delay_ms: float, bugs: list[str]) -> None:
    config = {"shards": {"groups": groups}, "lease": {"duration_ms": 0}, "bugs": bugs}
    with tempfile.TemporaryDirectory() as tmp:
        b = LocalBackend(tmp, 3, config, seed=7)
        try:
            b.start()
            time.sleep(3.0)                         # leader placement settles
            leads = [b.leader_term(g) for g in range(groups)]
            coordinator = "n1"
            endpoint = b.cluster.node(coordinator).endpoint
            db = _client(endpoint)
            _create(db)
            keys = _keys(groups, items)
            for k in keys:
                _retry(lambda k=k: db.put_item(TableName=TABLE,
                                               Item={"pk": {"S": k}, "v": {"N": "1"}}))
            led_here = sum(1 for lt in leads if lt and lt[0] == coordinator)
            name = ",".join(bugs) or "concurrent (correct)"
            print(f"{name}: {groups} groups, {len(keys)} items, {coordinator} leads "
                  f"{led_here} of them; {requests} TransactGetItems per phase")
            print(f"  no delay      {_phase(db, keys, requests)}")
            for ms, n in ((delay_ms, requests), (4 * delay_ms, max(5, requests // 4))):
                b.set_delay(ms)
                print(f"  delay {ms:4g} ms {_phase(db, keys, n)}")
            b.set_delay(0)
        finally:
            b.close()


def keyless_outage(groups: int, outage_s: float, bugs: list[str]) -> None:
    config = {"shards": {"groups": groups}, "bugs": bugs}
    with tempfile.TemporaryDirectory() as tmp:
        b = LocalBackend(tmp, 5, config, seed=9)
        try:
            b.start()
            default = b.leader_term(0)
            assert default is not None
            victim = default[0]
            healthy = next(n for n in b.node_ids if n != victim)
            db = _client(b.cluster.node(healthy).endpoint)
            _create(db)
            led = {g for g in range(groups) if (b.leader_term(g) or (None,))[0] == victim}
            keys = [k for k in _keys(groups, 8 * groups)
                    if Router(Shards(groups=groups)).group_of(
                        TABLE, encode_key_value({"S": k})) not in led]
            for k in keys:
                _retry(lambda k=k: db.put_item(TableName=TABLE, Item={"pk": {"S": k}}))
            b.partition([[victim], [n for n in b.node_ids if n != victim]])
            end = time.monotonic() + outage_s
            failed = total = 0
            longest = run_start = 0.0
            i = 0
            while time.monotonic() < end:
                k = keys[i % len(keys)]
                i += 1
                t = time.monotonic()
                try:
                    db.query(TableName=TABLE, KeyConditionExpression="pk = :p",
                             ExpressionAttributeValues={":p": {"S": k}})
                    run_start = 0.0
                except (ClientError, BotoCoreError):
                    failed += 1
                    run_start = run_start or t
                    longest = max(longest, time.monotonic() - run_start)
                total += 1
            b.heal_network()
            name = ",".join(bugs) or "correct"
            print(f"{name}: {victim} (default group's leader, leads groups {sorted(led)}) cut off "
                  f"{outage_s:g} s; queries of the other groups through {healthy}: "
                  f"{failed}/{total} failed, unanswered for {longest:.1f} s at most "
                  f"")
        finally:
            b.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--delay-ms", type=float, default=50.0)
    ap.add_argument("--outage", type=float, default=8.0,
                    help="seconds the default group's leader is cut off")
    args = ap.parse_args()
    for bugs in ([], ["sequential-lease-checks"]):
        bench(args.groups, args.items, args.requests, args.delay_ms, bugs)
    for bugs in ([], ["keyless-lease-default-group"]):
        keyless_outage(4, args.outage, bugs)


if __name__ == "__main__":
    main()
