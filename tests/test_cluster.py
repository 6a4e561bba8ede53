"""A real 3-node cluster on loopback, driven by boto3 unmodified."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request

import boto3
import pytest
from conftest import FAST, module_cluster
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from harness.admin import admin_get, admin_post
from harness.cluster import LocalCluster

pytestmark = pytest.mark.cluster



def client(node, timeout: float = 5.0):
    return boto3.client(
        "dynamodb", endpoint_url=node.endpoint, region_name="us-east-1",
        aws_access_key_id="test", aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2,
                      read_timeout=timeout))


def retry(fn, timeout: float = 15.0):
    """Call ``fn`` until it stops raising (elections take a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:  # noqa: BLE001 - ClientError, connection errors
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module", params=[1, 4], ids=["1-group", "4-groups"])
def cluster(request, tmp_path_factory):
    """The module's cluster: unsharded, then with 4 Raft groups (the same
    tests; where one needs a group's leader, it asks for its key's group)."""
    c = module_cluster(tmp_path_factory, seed=7, groups=request.param)
    yield c
    c.stop()


def groups_of(cluster) -> int:
    return cluster.config.get("shards", {}).get("groups", 1)


def group_of(cluster, pk: str) -> int:
    from harness.workloads import group_router
    return group_router("items", groups_of(cluster))(pk)


def group_leader(cluster, group: int) -> str:
    from harness.admin import leader_and_term
    found = retry(lambda: leader_and_term(cluster.nodes, group=group) or 1 / 0)
    return found[0]


@pytest.fixture(scope="module")
def table(cluster):
    db = client(cluster.nodes[0])
    db.create_table(TableName="items",
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                               {"AttributeName": "sk", "KeyType": "RANGE"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                          {"AttributeName": "sk", "AttributeType": "N"}],
                    BillingMode="PAY_PER_REQUEST")
    return "items"


def test_every_node_answers_and_forwards(cluster, table):
    for i, node in enumerate(cluster.nodes):
        db = client(node)
        # a 503 while a group changes leader is a right answer; clients retry it
        retry(lambda db=db, i=i, node=node: db.put_item(
            TableName=table, Item={"pk": {"S": "fwd"}, "sk": {"N": str(i)}, "v": {"S": node.id}}))
    got = client(cluster.nodes[2]).query(
        TableName=table, KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "fwd"}})
    assert [it["v"]["S"] for it in got["Items"]] == ["n1", "n2", "n3"]
    assert "items" in client(cluster.nodes[1]).list_tables()["TableNames"]


def test_conditions_updates_and_transactions(cluster, table):
    db = client(cluster.nodes[1])
    key = {"pk": {"S": "c"}, "sk": {"N": "1"}}
    db.put_item(TableName=table, Item={**key, "n": {"N": "1"}},
                ConditionExpression="attribute_not_exists(pk)")
    with pytest.raises(ClientError) as e:
        db.put_item(TableName=table, Item={**key, "n": {"N": "9"}},
                    ConditionExpression="attribute_not_exists(pk)")
    assert e.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    out = db.update_item(TableName=table, Key=key, UpdateExpression="SET n = n + :one",
                         ConditionExpression="n = :cur",
                         ExpressionAttributeValues={":one": {"N": "1"}, ":cur": {"N": "1"}},
                         ReturnValues="ALL_NEW")
    assert out["Attributes"]["n"] == {"N": "2"}
    # "t": a partition in the group of "c" (a transaction keeps to one group)
    t = next(f"t{i}" for i in range(100) if group_of(cluster, f"t{i}") == group_of(cluster, "c"))
    with pytest.raises(ClientError) as e:
        db.transact_write_items(TransactItems=[
            {"Put": {"TableName": table, "Item": {"pk": {"S": t}, "sk": {"N": "1"}}}},
            {"ConditionCheck": {"TableName": table, "Key": key,
                                "ConditionExpression": "n = :x",
                                "ExpressionAttributeValues": {":x": {"N": "5"}}}}])
    err = e.value.response
    assert err["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in err["CancellationReasons"]] == ["None", "ConditionalCheckFailed"]
    assert "Item" not in db.get_item(TableName=table, Key={"pk": {"S": t}, "sk": {"N": "1"}},
                                     ConsistentRead=True)
    got = db.transact_get_items(TransactItems=[{"Get": {"TableName": table, "Key": key}}])
    assert got["Responses"][0]["Item"]["n"] == {"N": "2"}


def test_admin_status_and_clock(cluster):
    leader = cluster.node(cluster.wait_for_leader())
    st = admin_get(leader)
    assert st["role"] == "leader" and st["lease"]["clock"] == "monotonic"
    assert st["lease"]["duration_ms"] == 300.0  # election timeout - 300 ms
    out = admin_post(cluster.nodes[0], "/clock", {"bump": -5})
    assert abs(out["offset"] + 5) < 1e-6
    out = admin_post(cluster.nodes[0], "/clock", {"reset": True})
    assert out["offset"] == 0
    bad = admin_post(cluster.nodes[0], "/clock", {"rate": "fast"})
    assert bad["status"] == 400


def test_malformed_requests_get_errors_and_node_keeps_serving(cluster, table):
    node = cluster.node(cluster.wait_for_leader())
    host, port = node.api.split(":")

    def raw(body: bytes, target: str = "DynamoDB_20120810.PutItem") -> tuple[int, dict]:
        req = urllib.request.Request(f"http://{node.api}/", data=body, method="POST",
                                     headers={"X-Amz-Target": target,
                                              "Content-Type": "application/x-amz-json-1.0"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, body = raw(b"{not json")
    assert status == 400 and "SerializationException" in body["__type"]
    status, body = raw(b"{}", "DynamoDB_20120810.Frobnicate")
    assert status == 400 and "UnknownOperationException" in body["__type"]
    status, body = raw(json.dumps({"TableName": table, "Item": {"pk": {"S": 1}}}).encode())
    assert status == 400
    # half a request, then a closed socket
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    db = client(node)
    db.put_item(TableName=table, Item={"pk": {"S": "alive"}, "sk": {"N": "1"}})
    assert "Item" in db.get_item(TableName=table, Key={"pk": {"S": "alive"}, "sk": {"N": "1"}})


def test_leader_kill_reelection_no_acknowledged_write_lost(cluster, table):
    leader_id = cluster.wait_for_leader()
    survivors = [n for n in cluster.nodes if n.id != leader_id]
    acked = []
    db = client(survivors[0])
    for i in range(20):
        db.put_item(TableName=table, Item={"pk": {"S": "k"}, "sk": {"N": str(i)}})
        acked.append(i)
    os.kill(cluster.node(leader_id).pid, signal.SIGKILL)
    for i in range(20, 40):
        retry(lambda i=i: db.put_item(TableName=table,
                                      Item={"pk": {"S": "k"}, "sk": {"N": str(i)}}))
        acked.append(i)
    new_leader = cluster.wait_for_leader()
    assert new_leader != leader_id
    items = retry(lambda: client(survivors[1]).query(
        TableName=table, KeyConditionExpression="pk = :p",
        ExpressionAttributeValues={":p": {"S": "k"}}, ConsistentRead=True)["Items"])
    assert sorted(int(it["sk"]["N"]) for it in items) == acked
    # the killed node restarts from its data directory and catches up
    cluster.start_node(cluster.node(leader_id))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = cluster.statuses()
        if st[leader_id] and st[leader_id]["applied"] >= st[new_leader]["commit"]:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"restarted node did not catch up: {cluster.statuses()}")


def test_lagging_node_catches_up_by_snapshot(cluster, table):
    from harness.admin import group_status

    g = group_of(cluster, "snap")
    assert g == group_of(cluster, "bulk")
    leader_id = group_leader(cluster, g)
    lagger = next(n for n in cluster.nodes if n.id != leader_id)
    os.kill(lagger.pid, signal.SIGSTOP)
    try:
        db = client(cluster.node(leader_id))
        items = [{"PutRequest": {"Item": {"pk": {"S": "bulk"}, "sk": {"N": str(i)}}}}
                 for i in range(25)]
        for _ in range(15):  # one log entry per batch
            db.batch_write_item(RequestItems={table: items})
        for i in range(400):  # past the snapshot threshold and its margin
            db.put_item(TableName=table, Item={"pk": {"S": "snap"}, "sk": {"N": str(i)}})
    finally:
        os.kill(lagger.pid, signal.SIGCONT)
    leader_st = group_status(admin_get(cluster.node(leader_id)), g)
    assert leader_st["storage"]["first_index"] > 1, leader_st["storage"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = group_status(admin_get(lagger), g)
        if st["applied"] >= leader_st["commit"]:
            break
        time.sleep(0.2)
    assert st["applied"] >= leader_st["commit"]
    assert st["storage"]["snapshot_index"] > 0


def test_full_cluster_restart_from_disk(cluster, table):
    db = client(cluster.nodes[0])
    retry(lambda: db.put_item(TableName=table,
                              Item={"pk": {"S": "durable"}, "sk": {"N": "1"}}))
    cluster.stop()
    cluster.start(seed=11)
    got = retry(lambda: client(cluster.nodes[2]).get_item(
        TableName=table, Key={"pk": {"S": "durable"}, "sk": {"N": "1"}}, ConsistentRead=True))
    assert got["Item"]["pk"] == {"S": "durable"}


def test_fuzzed_requests_never_take_a_node_down(cluster, table):
    """Thousands of broken requests: each gets a DynamoDB-shaped error, and the
    node answers a good request correctly afterwards."""
    import http.client
    import random

    node = cluster.node(cluster.wait_for_leader())
    host, port = node.api.split(":")
    rng = random.Random(5)
    good = json.dumps({"TableName": table, "Item": {"pk": {"S": "f"}, "sk": {"N": "1"},
                                                    "m": {"M": {"a": {"L": [{"N": "1"}]}}}}})
    targets = ["PutItem", "GetItem", "UpdateItem", "Query", "Scan", "TransactWriteItems",
               "BatchWriteItem", "CreateTable", "Nope", ""]
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    statuses = set()
    for _ in range(2000):
        body = bytearray(good.encode())
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(body))
            body[pos:pos + rng.randint(0, 3)] = bytes(rng.choice(b'{}[]":,SNLMx0\\\x00')
                                                      for _ in range(rng.randint(0, 3)))
        conn.request("POST", "/", bytes(body),
                     {"X-Amz-Target": "DynamoDB_20120810." + rng.choice(targets)})
        r = conn.getresponse()
        payload = json.loads(r.read())
        statuses.add(r.status)
        if r.status != 200:
            assert "#" in payload["__type"]
    assert statuses & {400}
    db = client(node)
    db.put_item(TableName=table, Item={"pk": {"S": "after-fuzz"}, "sk": {"N": "1"}})
    assert "Item" in db.get_item(TableName=table,
                                 Key={"pk": {"S": "after-fuzz"}, "sk": {"N": "1"}})


@pytest.mark.parametrize("bugs, query_status", [([], 500), (["unchecked-range-reads"], 200)])
def test_isolated_leader_serves_range_reads_only_with_the_bug(tmp_path, bugs, query_status):
    """Followers paused: the leader is cut off but has not stepped down.  Its
    lease runs out, GetItem's ReadIndex cannot reach a quorum (500); Query
    does the same unless unchecked-range-reads skips its check."""
    cfg = {"raft": {"tick_ms": 10, "heartbeat_ms": 50, "election_timeout_ms": 5000},
           "lease": {"duration_ms": 500, "check_timeout_ms": 500}, "bugs": bugs}
    c = LocalCluster(tmp_path, 3, cfg)
    c.start(seed=3)
    paused = []
    try:
        leader = c.node(c.wait_for_leader())
        db = client(leader)
        db.create_table(TableName="iso", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
        db.put_item(TableName="iso", Item={"pk": {"S": "a"}})
        for n in c.nodes:
            if n.id != leader.id:
                os.kill(n.pid, signal.SIGSTOP)
                paused.append(n.pid)
        time.sleep(1.0)  # the lease (0.5 s) ran out; CheckQuorum is not due before 5 s
        assert admin_get(leader)["role"] == "leader"
        with pytest.raises(ClientError) as e:
            db.get_item(TableName="iso", Key={"pk": {"S": "a"}})
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
        try:
            got = db.query(TableName="iso", KeyConditionExpression="pk = :p",
                           ExpressionAttributeValues={":p": {"S": "a"}})
            status = 200
            assert got["Count"] == 1
        except ClientError as e:
            status = e.response["ResponseMetadata"]["HTTPStatusCode"]
        assert status == query_status
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
        c.stop()


@pytest.mark.parametrize("bugs", [[], ["lease-survives-transfer"]])
def test_ex_leader_serves_reads_after_a_transfer_only_with_the_bug(tmp_path, bugs):
    """After handing leadership over, the ex-leader forwards reads to the new
    leader; under lease-survives-transfer it keeps its lease and answers them
    itself -- even with every other node paused."""
    cfg = {"raft": {"tick_ms": 10, "heartbeat_ms": 50, "election_timeout_ms": 3000},
           "lease": {"duration_ms": 2500}, "bugs": bugs}
    c = LocalCluster(tmp_path, 3, cfg)
    c.start(seed=4)
    paused = []
    try:
        old = c.node(c.wait_for_leader())
        db = client(old, timeout=1.0)
        db.create_table(TableName="xfer", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
        db.put_item(TableName="xfer", Item={"pk": {"S": "a"}})
        to = next(n for n in c.nodes if n.id != old.id)
        admin_post(old, "/transfer", {"to": to.id})
        deadline = time.monotonic() + 2.0
        while admin_get(old)["leader"] != to.id and time.monotonic() < deadline:
            time.sleep(0.005)  # until the ex-leader follows the new one
        for n in c.nodes:
            if n.id != old.id:
                os.kill(n.pid, signal.SIGSTOP)
                paused.append(n.pid)
        st = admin_get(old)
        assert st["role"] == "follower" and st["leader"] == to.id
        try:
            served = "Item" in db.get_item(TableName="xfer", Key={"pk": {"S": "a"}})
        except Exception:  # noqa: BLE001 - forwarded to a paused leader: 5xx or timeout
            served = False
        assert served == bool(bugs)
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
        c.stop()


def test_a_request_forwarded_to_a_lost_leader_ends_when_a_new_one_is_elected(tmp_path):
    """The leader is paused: a follower's forwarded PutItem would hang until the
    client gives up; it ends (503, retryable) as soon as the follower hears of
    a new term."""
    c = LocalCluster(tmp_path, 3, FAST)
    c.start(seed=6)
    paused = None
    try:
        leader = c.node(c.wait_for_leader())
        follower = next(n for n in c.nodes if n.id != leader.id)
        db = client(follower, timeout=20.0)
        retry(lambda: db.create_table(
            TableName="fwd", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST"))
        os.kill(leader.pid, signal.SIGSTOP)
        paused = leader.pid
        t0 = time.monotonic()
        with pytest.raises(ClientError) as e:
            db.put_item(TableName="fwd", Item={"pk": {"S": "a"}})
        assert time.monotonic() - t0 < 10.0
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert "leadership changed" in str(e.value)
    finally:
        if paused:
            os.kill(paused, signal.SIGCONT)
        c.stop()


def test_every_operation_through_boto3(cluster):
    db = client(cluster.nodes[2])  # a follower most likely: forwarding too
    retry(lambda: db.create_table(
        TableName="ops", KeySchema=[{"AttributeName": "h", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "h", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST"))
    assert db.describe_table(TableName="ops")["Table"]["TableStatus"] == "ACTIVE"
    with pytest.raises(ClientError) as e:
        db.create_table(TableName="ops", KeySchema=[{"AttributeName": "h", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "h", "AttributeType": "S"}],
                        BillingMode="PAY_PER_REQUEST")
    assert e.value.response["Error"]["Code"] == "ResourceInUseException"
    db.put_item(TableName="ops", Item={"h": {"S": "a"}, "n": {"N": "1"}, "s": {"SS": ["x"]}})
    out = db.update_item(TableName="ops", Key={"h": {"S": "a"}},
                         UpdateExpression="SET l = list_append(if_not_exists(l, :e), :v) "
                         "ADD s :y, n :two REMOVE gone",
                         ExpressionAttributeValues={":e": {"L": []}, ":v": {"L": [{"S": "q"}]},
                                                    ":y": {"SS": ["y"]}, ":two": {"N": "2"}},
                         ReturnValues="UPDATED_NEW")
    assert out["Attributes"]["n"] == {"N": "3"} and set(out["Attributes"]["s"]["SS"]) == {"x", "y"}
    db.batch_write_item(RequestItems={"ops": [
        {"PutRequest": {"Item": {"h": {"S": f"b{i}"}}}} for i in range(5)]})
    got = db.batch_get_item(RequestItems={"ops": {"Keys": [{"h": {"S": "a"}}, {"h": {"S": "b3"}}]}})
    assert len(got["Responses"]["ops"]) == 2
    pages = list(db.get_paginator("scan").paginate(TableName="ops", Limit=2))
    assert sum(p["Count"] for p in pages) == 6 and len(pages) >= 3
    old = db.delete_item(TableName="ops", Key={"h": {"S": "b0"}}, ReturnValues="ALL_OLD")
    assert old["Attributes"]["h"] == {"S": "b0"}
    filt = db.scan(TableName="ops", FilterExpression="begins_with(h, :b)",
                   ExpressionAttributeValues={":b": {"S": "b"}})
    assert filt["Count"] == 4
    with pytest.raises(ClientError) as e:
        db.get_item(TableName="nope", Key={"h": {"S": "a"}})
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    db.delete_table(TableName="ops")
    assert "ops" not in db.list_tables()["TableNames"]


# ------------------------------------------------------------------ the local backend's faults


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    from harness.local_backend import LocalBackend

    b = LocalBackend(tmp_path_factory.mktemp("backend"), 3, FAST, seed=5)
    b.start(timeout=30)
    yield b
    b.close()


def _proxy(backend, link: str, kind: str) -> dict:
    return backend.pool.stats()[f"{link} {kind}"]


def test_a_one_way_cut_loses_what_src_sends_dst_and_nothing_else(backend):
    """Cut leader -> follower only: the follower's forwarded request still
    reaches the leader, which applies it, but its answer is lost; the leader's
    Raft messages to the follower are lost too."""
    leader = backend.cluster.node(backend.cluster.wait_for_leader())
    follower = next(n for n in backend.cluster.nodes if n.id != leader.id)
    retry(lambda: client(leader).create_table(
        TableName="cut", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST"))
    up, down = f"{follower.id}->{leader.id}", f"{leader.id}->{follower.id}"
    before = _proxy(backend, up, "api")
    try:
        backend.cut({(leader.id, follower.id)})
        assert _proxy(backend, up, "api")["faults"]["blocked"] == ["backward"]
        assert _proxy(backend, up, "raft")["faults"]["blocked"] == ["backward"]
        assert _proxy(backend, down, "raft")["faults"]["blocked"] == ["forward"]
        # the answer never comes: the client times out, or the follower gives up
        # once it stops hearing the leader (503)
        with pytest.raises((ReadTimeoutError, ClientError)):
            client(follower, timeout=1.0).put_item(TableName="cut", Item={"pk": {"S": "a"}})
        after = _proxy(backend, up, "api")
        assert after["forward"]["forwarded_bytes"] > before["forward"]["forwarded_bytes"]
        assert after["backward"]["dropped_bytes"] > before["backward"]["dropped_bytes"]
        assert _proxy(backend, down, "raft")["forward"]["dropped_bytes"] > 0
    finally:
        backend.heal_network()
    got = retry(lambda: client(leader).get_item(TableName="cut", Key={"pk": {"S": "a"}},
                                                ConsistentRead=True)["Item"])
    assert got == {"pk": {"S": "a"}}  # applied: only its answer was lost
    assert all(not p["faults"]["blocked"] for p in backend.pool.stats().values())


def test_disk_failpoints_and_a_crash_on_real_nodes(backend):
    """The store takes the failpoints the disk faults use; a crashed node is
    counted killed, and the heal clears failpoints and brings it back."""
    from nemesis.faults import check_support

    check_support(backend, ["disk-slow", "power-loss"])
    leader = backend.cluster.wait_for_leader()
    follower = next(n for n in backend.node_ids if n != leader)
    backend.failpoint(leader, fsync_delay_ms=120)
    assert backend.failpoint_settings(leader)["fsync_delay_ms"] == 120
    backend.crash(follower)
    assert backend.cluster.procs[follower].returncode == 137
    assert backend.killed == {follower} and backend.failpointed == {leader}
    backend.heal_all()
    assert not backend.killed and not backend.failpointed
    assert backend.failpoint_settings(leader)["fsync_delay_ms"] == 0
    assert retry(lambda: backend.failpoint_settings(follower))["fsync_stall"] is False
