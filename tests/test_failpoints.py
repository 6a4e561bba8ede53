"""Disk failpoints (system/failpoints.py): a slow, stalled or power-lost disk
under the storage (system/storage.py), and the node's ``/failpoint`` route."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Callable

import pytest

from system.failpoints import FailpointError, FailpointRequest, parse_request
from system.storage import WAL_NAME, Entry, HardState, RaftStorage, Snapshot


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, b"e%d-t%d" % (i, term)) for i in range(lo, hi + 1)]


def opened(path, **kw) -> RaftStorage:
    s = RaftStorage(path, **kw)
    s.load()
    return s


def reload(path, **kw):
    s = RaftStorage(path, **kw)
    out = s.load()
    s.close()
    return out


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ---------------------------------------------------------------- requests


def test_a_request_may_combine_keys():
    assert parse_request({"fsync_delay_ms": 5, "fsync_stall": True}) == FailpointRequest(
        fsync_delay_ms=5.0, fsync_stall=True)
    assert parse_request({"clear": True}) == FailpointRequest(clear=True)
    assert parse_request({"apply_delay_ms": 20, "fsync_delay_ms": 0}) == FailpointRequest(
        apply_delay_ms=20.0, fsync_delay_ms=0.0)
    assert parse_request({"crash": "lose-unsynced"}).crash == "lose-unsynced"


@pytest.mark.parametrize("body, key", [
    ({"fsync_delay": 5}, "fsync_delay"),
    ({"fsync_delay_ms": -1}, "fsync_delay_ms"),
    ({"fsync_delay_ms": "50"}, "fsync_delay_ms"),
    ({"fsync_delay_ms": True}, "fsync_delay_ms"),
    ({"fsync_delay_ms": float("inf")}, "fsync_delay_ms"),
    ({"fsync_stall": 1}, "fsync_stall"),
    ({"apply_delay_ms": -5}, "apply_delay_ms"),
    ({"apply_delay_ms": None}, "apply_delay_ms"),
    ({"crash": "kill"}, "crash"),
    ({"clear": False}, "clear"),
    ({"fsync_stall": True, "crash": "now"}, "crash"),
])
def test_a_bad_request_names_its_key_and_the_allowed_values(body, key):
    with pytest.raises(FailpointError) as e:
        parse_request(body)
    answer = e.value.to_body()
    assert answer["key"] == key and key in answer["error"]
    if key in ("fsync_delay_ms", "fsync_stall", "apply_delay_ms", "raft_cut_groups", "crash",
               "clear"):
        assert answer["allowed"] in answer["error"]
    else:  # an unknown key: the answer lists the known ones
        assert ("fsync_delay_ms, fsync_stall, apply_delay_ms, raft_cut_groups, crash, clear"
                in answer["error"])


@pytest.mark.parametrize("body", [{}, [], "clear", None])
def test_a_request_must_be_an_object_with_a_key(body):
    with pytest.raises(FailpointError, match="one or more of the keys fsync_delay_ms"):
        parse_request(body)


# ---------------------------------------------------------------- slow and stalled disk


def test_the_delay_slows_every_fsync_of_log_and_snapshot(tmp_path):
    s = opened(tmp_path)
    s.faults.apply(parse_request({"fsync_delay_ms": 100}))
    s.append(ents(1, 3))
    t0 = time.monotonic()
    s.sync()                                   # one fdatasync
    assert time.monotonic() - t0 >= 0.1
    t0 = time.monotonic()
    s.save_snapshot(Snapshot(3, 1, b"s"))      # the file, then the directory
    assert time.monotonic() - t0 >= 0.2
    s.faults.apply(parse_request({"fsync_delay_ms": 0}))
    assert s.faults.state()["fsync_delay_ms"] == 0
    s.close()


@pytest.mark.parametrize("release", [{"fsync_stall": False}, {"clear": True}])
def test_a_stall_blocks_sync_until_it_is_lifted(tmp_path, release):
    s = opened(tmp_path)
    s.faults.apply(parse_request({"fsync_stall": True}))
    s.append(ents(1, 3))
    syncer = threading.Thread(target=s.sync)
    syncer.start()
    assert wait_until(lambda: s.faults.state()["stalled_fsyncs"] == 1)
    time.sleep(0.2)
    assert syncer.is_alive()                   # still inside sync()
    assert s.status()["durable_wal_bytes"] < s.status()["wal_bytes"]
    s.faults.apply(parse_request(release))
    syncer.join(5)
    assert not syncer.is_alive()
    assert s.faults.state() == {"fsync_delay_ms": 0, "fsync_stall": False, "stalled_fsyncs": 0,
                                "apply_delay_ms": 0, "raft_cut_groups": []}
    assert s.status()["durable_wal_bytes"] == s.status()["wal_bytes"]
    s.close()
    assert reload(tmp_path)[2] == ents(1, 3)


# ---------------------------------------------------------------- power loss


def test_power_loss_keeps_exactly_what_was_fsynced(tmp_path):
    s = opened(tmp_path)
    s.append(ents(1, 5))
    s.set_hard_state(HardState(1, "n1", 3))
    s.sync()
    durable = s.status()["wal_bytes"]
    s.append(ents(6, 7))
    s.set_hard_state(HardState(2, None, 5))
    s.flush()                                  # handed to the OS, never fsynced
    s.append(ents(8, 8))                       # only in this process's memory
    loss = s.lose_unsynced()
    s.abandon()
    assert loss.durable_bytes == durable and os.path.getsize(tmp_path / WAL_NAME) == durable
    assert loss.unsynced_bytes > 0 and loss.buffered_bytes > 0
    hs, _, entries = reload(tmp_path)
    assert entries == ents(1, 5) and hs == HardState(1, "n1", 3)


def test_power_loss_with_ack_before_fsync_loses_synced_entries(tmp_path):
    s = opened(tmp_path, fsync=False)
    s.append(ents(1, 10))
    s.set_hard_state(HardState(5, "n1", 10))
    s.sync()                                   # returns, so the node acknowledges
    s.flush()                                  # the lazy flush: in the file now
    s.append(ents(11, 11))
    s.sync()
    loss = s.lose_unsynced()
    s.abandon()
    assert loss.unsynced_bytes > 0 and loss.buffered_bytes > 0
    hs, _, entries = reload(tmp_path, fsync=False)
    assert entries == [] and hs == HardState()  # a kill -9 would have kept 1..10


def test_power_loss_after_compaction_keeps_the_rewritten_log(tmp_path):
    s = opened(tmp_path)
    s.append(ents(1, 20))
    s.sync()
    s.save_snapshot(Snapshot(10, 1, b"s"))
    s.compact(10)
    s.append(ents(21, 22))
    s.sync()
    s.append(ents(23, 23))
    s.flush()
    s.lose_unsynced()
    s.abandon()
    _, snap, entries = reload(tmp_path)
    assert snap == Snapshot(10, 1, b"s") and entries == ents(11, 22)


def test_power_loss_does_not_wait_for_a_stalled_sync(tmp_path):
    s = opened(tmp_path)
    s.append(ents(1, 3))
    s.sync()
    s.faults.set_stall(True)
    s.append(ents(4, 5))
    syncer = threading.Thread(target=s.sync)
    syncer.start()
    assert wait_until(lambda: s.faults.state()["stalled_fsyncs"] == 1)
    loss = s.lose_unsynced()                   # the stalled sync holds the storage's I/O lock
    assert loss.unsynced_bytes > 0 and syncer.is_alive()
    s.faults.clear()
    syncer.join(5)
    s.abandon()
    assert reload(tmp_path)[2] == ents(1, 3)


# ---------------------------------------------------------------- a real node


def _post(node, body: Any) -> tuple[int, dict[str, Any]]:
    from harness.admin import admin_post

    out = admin_post(node, "/failpoint", body)
    if "status" in out and "error" in out:
        return out["status"], json.loads(out["error"])
    return 200, out


def _node(tmp_path, bugs: list[str]):
    from conftest import FAST

    from harness.cluster import LocalCluster

    c = LocalCluster(tmp_path, 1, {**FAST, "bugs": bugs})
    c.start(seed=3)
    return c


def _db(node):
    import boto3
    from botocore.config import Config

    db = boto3.client("dynamodb", endpoint_url=node.endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test",
                      config=Config(retries={"total_max_attempts": 1}, read_timeout=10))
    return db


def _create(db) -> None:
    db.create_table(TableName="items", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST")


def _crash_and_restart(c) -> None:
    from harness.admin import admin_post

    node = c.nodes[0]
    proc = c.procs[node.id]
    with pytest.raises(OSError):               # the node exits without answering
        admin_post(node, "/failpoint", {"crash": "lose-unsynced"})
    assert proc.wait(timeout=10) == 137
    c.start_node(node)
    c.wait_for_leader(30)


@pytest.mark.cluster
def test_the_admin_route_slows_stalls_and_crashes_a_node(tmp_path):
    from harness.admin import admin_get

    c = _node(tmp_path, [])
    try:
        node = c.nodes[0]
        db = _db(node)
        _create(db)
        assert admin_get(node, "/failpoint") == {"fsync_delay_ms": 0, "fsync_stall": False,
                                                 "stalled_fsyncs": 0, "apply_delay_ms": 0,
                                                 "raft_cut_groups": []}
        status, body = _post(node, {"fsync_stall": "yes"})
        assert status == 400 and body["key"] == "fsync_stall" and body["allowed"] == "true or false"

        assert _post(node, {"fsync_delay_ms": 300})[1]["fsync_delay_ms"] == 300
        t0 = time.monotonic()
        db.put_item(TableName="items", Item={"k": {"S": "slow"}})
        assert time.monotonic() - t0 >= 0.3

        _post(node, {"clear": True, "apply_delay_ms": 400})
        t0 = time.monotonic()
        db.put_item(TableName="items", Item={"k": {"S": "slow-apply"}})   # answered once applied
        assert time.monotonic() - t0 >= 0.4
        assert _post(node, {"apply_delay_ms": 0})[1]["apply_delay_ms"] == 0

        _post(node, {"clear": True, "fsync_stall": True})
        done: list[dict] = []
        writer = threading.Thread(target=lambda: done.append(
            db.put_item(TableName="items", Item={"k": {"S": "stalled"}})))
        writer.start()
        assert wait_until(lambda: admin_get(node, "/failpoint")["stalled_fsyncs"] == 1)
        time.sleep(0.3)
        assert writer.is_alive() and admin_get(node)["role"] == "leader"  # the admin loop runs
        assert _post(node, {"clear": True})[1]["fsync_stall"] is False
        writer.join(10)
        assert done and done[0]["ResponseMetadata"]["HTTPStatusCode"] == 200

        _crash_and_restart(c)                  # fsync on: nothing acknowledged is lost
        assert admin_get(node, "/failpoint")["fsync_delay_ms"] == 0  # not persisted
        got = db.scan(TableName="items", ConsistentRead=True)["Items"]
        assert sorted(it["k"]["S"] for it in got) == ["slow", "slow-apply", "stalled"]
    finally:
        c.stop()


@pytest.mark.cluster
def test_a_power_loss_takes_acknowledged_writes_under_ack_before_fsync(tmp_path):
    c = _node(tmp_path, ["ack-before-fsync"])
    try:
        db = _db(c.nodes[0])
        _create(db)
        db.put_item(TableName="items", Item={"k": {"S": "acked"}})
        time.sleep(1.5)                        # the lazy flush hands it to the OS
        _crash_and_restart(c)
        with pytest.raises(db.exceptions.ResourceNotFoundException):
            db.scan(TableName="items")             # the table went with the unsynced log
    finally:
        c.stop()
