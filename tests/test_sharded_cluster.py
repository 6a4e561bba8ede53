"""A real 3-node cluster of the sharded store: 4 Raft groups on loopback."""

from __future__ import annotations

import os
import signal
import time

import pytest
from botocore.exceptions import ClientError
from conftest import FAST, every_node_knows_every_leader
from test_cluster import client, retry

from harness.admin import admin_get, admin_post, leader_and_term
from harness.cluster import LocalCluster
from system.config import Shards
from system.dynamo.values import encode_key_value
from system.routing import Router

pytestmark = pytest.mark.cluster

GROUPS = 4
ROUTER = Router(Shards(groups=GROUPS))


def group_of(pk: str) -> int:
    return ROUTER.group_of("items", encode_key_value({"S": pk}))


def leaders(cluster: LocalCluster) -> list[str | None]:
    return [(lt or (None,))[0] for lt in
            (leader_and_term(cluster.nodes, group=g) for g in range(GROUPS))]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("sharded"), 3,
                     {**FAST, "shards": {"groups": GROUPS}})
    c.start(seed=11)
    every_node_knows_every_leader(c, GROUPS)
    db = client(c.nodes[0])
    retry(lambda: db.create_table(
        TableName="items", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "N"}]))
    yield c
    c.stop()


def test_group_leaders_spread_over_the_nodes(cluster):
    """Group g > 0 ends up led by the g-th node (wrapping), each group with a
    term and a lease of its own in /status."""
    ids = sorted(n.id for n in cluster.nodes)
    want = [ids[g % 3] for g in range(1, GROUPS)]
    retry(lambda: _expect(leaders(cluster)[1:] == want, leaders(cluster)), timeout=20)
    st = admin_get(cluster.nodes[0])
    assert [g["group"] for g in st["groups"]] == list(range(GROUPS))
    assert {"role", "term", "leader", "commit", "lease", "preferred_leader"} <= set(st["groups"][1])
    assert st["groups"][1]["preferred_leader"] == ids[1]


def _expect(cond: bool, what: object) -> None:
    if not cond:
        raise AssertionError(what)


def test_items_of_every_group_are_written_and_read_from_every_node(cluster):
    pks = [f"p{i}" for i in range(16)]
    assert {group_of(p) for p in pks} == set(range(GROUPS))
    for i, p in enumerate(pks):
        retry(lambda: client(cluster.nodes[i % 3]).put_item(
            TableName="items", Item={"pk": {"S": p}, "sk": {"N": "1"}, "v": {"N": str(i)}}))
    for node in cluster.nodes:
        db = client(node)
        got = retry(lambda: db.scan(TableName="items", ConsistentRead=True))["Items"]
        assert sorted(int(it["v"]["N"]) for it in got if it["pk"]["S"] in pks) == list(range(16))
        for i, p in enumerate(pks):
            q = db.query(TableName="items", KeyConditionExpression="pk = :p",
                         ExpressionAttributeValues={":p": {"S": p}})
            assert [it["v"]["N"] for it in q["Items"]] == [str(i)]
        tg = db.transact_get_items(TransactItems=[
            {"Get": {"TableName": "items", "Key": {"pk": {"S": p}, "sk": {"N": "1"}}}}
            for p in pks])
        assert [r["Item"]["v"]["N"] for r in tg["Responses"]] == [str(i) for i in range(16)]
    # each group's replica holds its own items only
    st = admin_get(cluster.nodes[1])
    counts = [g["store"] for g in st["groups"]]
    assert len(counts) == GROUPS


def test_a_group_changes_leader_alone(cluster):
    before = leaders(cluster)
    leader = before[2]
    to = next(n.id for n in cluster.nodes if n.id != leader)
    out = admin_post(cluster.node(leader), "/transfer", {"to": to, "group": 2})
    assert out == {"transfer_to": to, "group": 2}
    retry(lambda: _expect(leaders(cluster)[2] == to, leaders(cluster)))
    after = leaders(cluster)
    assert after[0] == before[0] and after[1] == before[1]      # the others stay
    bad = admin_post(cluster.node(after[0]), "/transfer", {"group": 9})
    assert bad["status"] == 400 and "group: 9 is not a group of this node" in bad["error"]


def test_a_node_cut_off_from_the_leaders_refuses_reads_it_cannot_confirm(cluster):
    """With its peers stopped, a node can confirm no group's commit index:
    its Scan answers 500 within the check timeout instead of serving its
    replicas, however fresh they look."""
    victim = cluster.nodes[2]
    others = [n for n in cluster.nodes if n.id != victim.id]
    for n in others:
        os.kill(n.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(ClientError) as e:
            client(victim, timeout=10).scan(TableName="items")
        assert e.value.response["Error"]["Code"] == "InternalServerError"
        assert time.monotonic() - t0 < 8
    finally:
        for n in others:
            os.kill(n.pid, signal.SIGCONT)
    retry(lambda: client(victim).scan(TableName="items"))
