"""The node's read path (system/reads.py) over a hand-driven Raft leader.

``n1`` leads a three-node group whose followers exist only as the answers
the test steps into it, at times the test picks: so a test can say when a
heartbeat left and when its acknowledgement came back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from system.apply import ApplyStage
from system.config import LeaseConfig, NodeConfig, ReadPaths
from system.dynamo.errors import DynamoError
from system.mvcc import MVCCStore
from system.raft import LEADER, RaftConfig, RaftNode, Ready
from system.raft.messages import (AppendEntries, AppendResponse, Heartbeat, HeartbeatResponse,
                                  VoteResponse)
from system.reads import ReadPath

LEASE_MS = 2000 - 300  # the default: election timeout less the margin


@dataclass
class FakeTime:
    ms: float = 0.0

    def now(self) -> float:
        return self.ms


def elected(time: FakeTime, **raft_cfg) -> RaftNode:
    r = RaftNode(RaftConfig(id="n1", peers=["n1", "n2", "n3"], **raft_cfg), now=time.now)
    r.campaign()
    r.step(VoteResponse(r.term + 1, "n2", "n1", granted=True, pre=True))
    r.step(VoteResponse(r.term, "n2", "n1", granted=True))
    assert r.role == LEADER
    return r


def answers_to(rd: Ready) -> list:
    """The followers' answers to a Ready's messages."""
    answers = []
    for m in rd.messages:
        if isinstance(m, AppendEntries):
            answers.append(AppendResponse(m.term, m.dst, m.src, success=True,
                                          index=m.prev_index + len(m.entries),
                                          seq=m.seq, ts=m.ts))
        elif isinstance(m, Heartbeat):
            answers.append(HeartbeatResponse(m.term, m.dst, m.src, seq=m.seq, ts=m.ts))
    return answers


def exchange(r: RaftNode, path: ReadPath | None = None) -> list:
    """Hand over one Ready (its messages sent at the current time); returns
    the followers' answers, for the test to step in when it likes."""
    rd = r.ready()
    answers = answers_to(rd)
    if path is not None:
        for rs in rd.read_states:
            path.confirmed(rs.ctx, rs.index)
    r.advance(rd)
    if path is not None:
        path.applied_changed()
    return answers


def settle(r: RaftNode, path: ReadPath | None = None) -> None:
    """Let every message be answered at once until nothing is left to do."""
    while r.has_ready():
        for m in exchange(r, path):
            r.step(m)


def read_path(time: FakeTime, anchor: str = "sent", **cfg) -> tuple[RaftNode, ReadPath]:
    r = elected(time)
    path = ReadPath(NodeConfig(lease=LeaseConfig(anchor=anchor), **cfg), r, MVCCStore(),
                    time.now, lambda: None)
    return r, path


@pytest.mark.parametrize("anchor, holds_after_follower_may_vote", [("sent", False),
                                                                   ("received", True)])
def test_a_delayed_ack_stretches_only_a_lease_anchored_at_receipt(
        anchor, holds_after_follower_may_vote):
    time = FakeTime()
    r, path = read_path(time, anchor)
    settle(r)
    time.ms = 1000                 # a heartbeat round leaves, reaches the followers at 1100
    for _ in range(r.config.heartbeat_ticks):
        r.tick()
    answers = exchange(r)
    time.ms = 1600                 # ... and their acks come back late
    for m in answers:
        r.step(m)
    time.ms = 1000 + LEASE_MS - 1
    assert path.lease_holds()
    # From 1100 + 2000 the followers may elect someone else: by then a lease
    # anchored at the send has ended, one anchored at the late acks has not.
    time.ms = 3200
    assert path.lease_holds() is holds_after_follower_may_vote


def test_the_lease_waits_for_the_leaders_own_entry_to_be_applied():
    time = FakeTime()
    r, path = read_path(time)
    for m in exchange(r):
        r.step(m)
    assert r.commit == 1 and r.applied == 0
    assert not path.lease_holds()
    settle(r)
    assert path.lease_holds()


def test_a_step_down_ends_the_lease():
    time = FakeTime()
    r, path = read_path(time)
    settle(r)
    assert path.lease_holds()
    r.step(Heartbeat(r.term + 1, "n2", "n1"))
    path.role_changed(r.role)
    assert not path.lease_holds()


def test_a_lease_hit_takes_no_round_and_a_miss_renews_the_lease():
    time = FakeTime()
    r, path = read_path(time)
    settle(r)

    async def scenario() -> None:
        await path.ensure_fresh("get_item")
        assert path.stats.hits == 1 and not r.has_ready()
        time.ms = 5000             # the lease from the election is long gone
        check = asyncio.ensure_future(path.ensure_fresh("query"))
        while not r.has_ready():   # until the ReadIndex round is registered
            await asyncio.sleep(0)
        settle(r, path)
        await check
        assert path.stats.misses == 1 and path.last_quorum_read == 5000
        time.ms = 5000 + LEASE_MS - 1
        assert path.lease_holds()

    asyncio.run(scenario())
    assert path.status()["by_family"] == {"get_item": {"hits": 1}, "query": {"misses": 1}}


def test_unchecked_range_reads_skip_the_check_for_range_families_only():
    time = FakeTime()
    r, path = read_path(time, bugs=("unchecked-range-reads",))
    assert [path.path(f) for f in ("get_item", "query", "scan", "transact_get_items")] == \
        ["lease", "local", "local", "local"]
    asyncio.run(path.ensure_fresh("scan"))    # no lease, no round: nothing to wait for
    assert path.stats.unchecked == 1 and path.stats.misses == 0


def test_a_follower_refuses_checked_reads():
    time = FakeTime()
    r, path = read_path(time)
    r.step(Heartbeat(r.term + 1, "n2", "n1"))
    with pytest.raises(DynamoError, match="not the leader"):
        asyncio.run(path.ensure_fresh("get_item"))


def test_the_read_timestamp_is_the_last_applied_commit():
    time = FakeTime()
    r, path = read_path(time)
    path.store.last_commit_ts = 42 << 16
    assert path.read_ts() == 42 << 16


@pytest.mark.parametrize("bugs", [(), ("read-index-no-apply-wait",)])
def test_a_confirmed_read_index_waits_for_the_apply_unless_the_bug(bugs):
    """A driver whose apply lags its commit index (etcd applies in a
    goroutine of its own) hands over a read state above the applied index:
    the read must wait for the apply, except under
    ``read-index-no-apply-wait``."""
    time = FakeTime()
    r, path = read_path(time, reads=ReadPaths(get_item="read_index"), bugs=bugs)
    settle(r, path)
    r.propose(b"w")
    for m in exchange(r, path):
        r.step(m)                  # w (index 2) is committed, not yet applied

    async def scenario() -> None:
        read = asyncio.ensure_future(path.ensure_fresh("get_item"))
        while not r.status()["pending_reads"]:   # its ReadIndex round, at index 2
            await asyncio.sleep(0)
        rd = r.ready()
        rd.committed_entries = []  # this driver defers applying w
        answers = answers_to(rd)
        r.advance(rd)
        for m in answers:
            r.step(m)              # the quorum confirms the read
        rd = r.ready()
        assert [rs.index for rs in rd.read_states] == [2] and r.applied == 1
        for rs in rd.read_states:
            path.confirmed(rs.ctx, rs.index)
        for _ in range(5):
            await asyncio.sleep(0)
        assert read.done() is bool(bugs)   # served with w committed but not applied
        r.advance(rd)              # now w is applied
        path.applied_changed()
        await read

    asyncio.run(scenario())
    assert path.stats.misses == 1 and path.stats.read_index_failures == 0


@pytest.mark.parametrize("bugs", [(), ("read-index-no-apply-wait",)])
def test_the_apply_stage_applies_a_backlog_in_chunks_while_reads_are_confirmed(bugs):
    """The node's apply stage takes a backlog of six chunks a chunk at a
    time and yields between them, so the driver confirms a ReadIndex read
    mid-backlog: the read must wait until the backlog is applied (unless
    ``read-index-no-apply-wait``), and no write is answered before its entry
    is applied."""
    time = FakeTime()
    r = elected(time, async_apply=True)
    path = ReadPath(NodeConfig(reads=ReadPaths(get_item="read_index"), bugs=bugs), r,
                    MVCCStore(), time.now, lambda: None)
    executed: list[int] = []
    chunks_ended_at: list[int] = []

    def execute(e) -> dict:
        executed.append(e.index)
        return {"index": e.index}

    def progressed() -> None:
        chunks_ended_at.append(r.applied)
        path.applied_changed()

    stage = ApplyStage(r, execute, path.store.restore, progressed, batch=2)

    def hand_over() -> list:
        """The driver's Ready loop, with the apply left to the stage."""
        rd = r.ready()
        answers = answers_to(rd)
        stage.submit(rd.snapshot, rd.committed_entries)
        for rs in rd.read_states:
            path.confirmed(rs.ctx, rs.index)
        r.advance(rd)
        return answers

    async def served_at() -> int:
        await path.ensure_fresh("get_item")
        return r.applied

    async def scenario() -> None:
        applier = asyncio.ensure_future(stage.run())
        for m in hand_over():
            r.step(m)              # the no-op commits ...
        hand_over()
        while r.applied < 1:       # ... and is applied
            await asyncio.sleep(0)
        writes = {}
        for k in range(12):
            index = r.propose(b"w%d" % k)
            writes[index] = stage.expect(index, r.term)
        acked_after_apply = {}
        for index, fut in writes.items():
            fut.add_done_callback(lambda f, i=index: acked_after_apply.__setitem__(
                i, f.result() == {"index": i} and i in executed and r.applied >= i))
        for m in hand_over():
            r.step(m)              # entries 2..13 commit
        read = asyncio.ensure_future(served_at())
        while not r.status()["pending_reads"]:   # its ReadIndex round, at index 13
            await asyncio.sleep(0)
        answers = hand_over()      # the backlog 2..13 goes to the stage
        while r.applied < 3:
            await asyncio.sleep(0)
        assert r.applied == 3      # one chunk, then the stage yielded
        for m in answers:
            r.step(m)              # the quorum confirms the read, mid-backlog
        hand_over()
        applied_when_served = await read
        await asyncio.gather(*writes.values())
        applier.cancel()
        assert chunks_ended_at == [1, 3, 5, 7, 9, 11, 13]
        assert executed == list(range(2, 14))
        assert acked_after_apply == {i: True for i in range(2, 14)}
        if bugs:
            assert applied_when_served < 13    # served before the backlog was applied
        else:
            assert applied_when_served == 13

    asyncio.run(scenario())
    assert path.stats.misses == 1 and path.stats.read_index_failures == 0
