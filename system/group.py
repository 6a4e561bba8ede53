"""One Raft group on a node: its log, its state machine, its lease.

A node hosts a replica of every group (:mod:`system.routing` says which keys
each owns).  Each group has what an unsharded node had: a Raft core with its
own term, leader and lease; a data directory; an MVCC store; an apply stage
and a read path.  The node shares among them what is per process: the clock,
the HLC, the Raft transport (messages carry their group id) and the disk's
failpoints.

The driver loop here is the node's Ready loop of one group: persist, send,
hand committed entries to the apply stage, answer reads, report role changes.
Leader placement (``shards.leaders = "spread"``): group ``g > 0`` prefers the
``g``-th node in id order (wrapping); its leader hands over to that node once
per term, when the node answers and has the whole log, so the groups' leaders
spread over the nodes instead of piling on whichever node won first.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any, Callable

import msgpack

from system.apply import ApplyStage, Result
from system.clock import Clock
from system.config import NodeConfig
from system.dynamo import errors
from system.dynamo.commands import apply_command
from system.failpoints import Failpoints
from system.hlc import HLC
from system.mvcc import MVCCStore
from system.raft.core import LEADER, NotLeader, RaftConfig, RaftNode, StorageState
from system.raft.messages import Entry, HardState, Message, Snapshot
from system.reads import ReadPath
from system.storage import RaftStorage

log = logging.getLogger("node")

#: How long a write waits for its entry to be applied before answering 500.
PROPOSE_TIMEOUT_S = 5.0


def group_dir(data_dir: str, group: int) -> str:
    """Group 0 keeps the node's data directory itself (an unsharded node's
    layout); group g > 0 lives in ``group-g`` inside it."""
    return data_dir if group == 0 else os.path.join(data_dir, f"group-{group}")


class Group:
    """One group's replica on this node.

    ``send(group, msg)`` hands one of its Raft messages to the transport;
    ``role_changed(group)`` tells the node (which wakes forwarders)."""

    def __init__(self, gid: int, node_id: str, node_ids: list[str], data_dir: str,
                 cfg: NodeConfig, clock: Clock, hlc: HLC, lease_now: Callable[[], float],
                 faults: Failpoints, send: Callable[[int, Message], None],
                 role_changed: Callable[[int], None], seed: int | None) -> None:
        self.id = gid
        self.cfg = cfg
        self.clock, self.hlc = clock, hlc
        self._send, self._notify = send, role_changed
        self.wake = asyncio.Event()
        self.tasks: list[asyncio.Task[Any]] = []
        directory = group_dir(data_dir, gid)
        os.makedirs(directory, exist_ok=True)
        self.storage = RaftStorage(directory, fsync=not cfg.has("ack-before-fsync"), faults=faults)
        self.store = MVCCStore()
        hs, snap, entries = self.storage.load()
        if snap is not None:
            self.store.restore(snap.data)
        r = cfg.raft
        rc = RaftConfig(
            id=node_id, peers=sorted(node_ids), tick_ms=r.tick_ms,
            heartbeat_ticks=max(1, r.heartbeat_ms // r.tick_ms),
            election_ticks=max(2, r.election_timeout_ms // r.tick_ms),
            pre_vote=r.pre_vote, check_quorum=cfg.check_quorum,
            max_append_entries=r.max_append_entries, snapshot_threshold=r.snapshot_threshold,
            compaction_margin=r.compaction_margin,
            noop_before_reads=not cfg.has("no-noop-read"),
            lease_survives_transfer=cfg.has("lease-survives-transfer"),
            commit_previous_term=cfg.has("commit-previous-term"), async_apply=True)
        state = StorageState(
            hard_state=HardState(hs.term, hs.vote, hs.commit),
            entries=[Entry(e.index, e.term, e.data) for e in entries],
            snapshot=Snapshot(snap.index, snap.term, snap.data) if snap else None)
        # Each group's election timer has its own randomness, seeded apart.
        rng = random.Random(None if seed is None else seed * 1000 + gid)
        self.raft = RaftNode(rc, state, rng=rng, now=lease_now,
                             on_lease_invalidated=self._lease_invalidated)
        self.reads = ReadPath(cfg, self.raft, self.store, lease_now, self.wake.set)
        self.applier = ApplyStage(self.raft, self._execute, self.store.restore, self._applied,
                                  r.max_apply_batch, lambda: faults.apply_delay_ms)
        ordered = sorted(node_ids)
        self.preferred = (ordered[gid % len(ordered)]
                          if gid > 0 and cfg.shards.leaders == "spread" else None)
        self._placed_term = -1
        self._leader_since = 0.0
        log.info("group %d: term %d, %d log entries, snapshot at %s", gid, hs.term,
                 len(entries), snap.index if snap else 0)

    def _lease_invalidated(self, generation: int, reason: str) -> None:
        self.reads.invalidated(generation, reason)

    # ------------------------------------------------------------ driver

    def start(self) -> None:
        self.tasks += [asyncio.create_task(self._driver()), asyncio.create_task(self.applier.run())]
        self.wake.set()

    def tick(self) -> None:
        self.raft.tick()
        self._maybe_place()
        self.wake.set()

    def step(self, msg: Message) -> None:
        self.raft.step(msg)
        self.wake.set()

    async def _driver(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.raft.has_ready():
                rd = self.raft.ready()
                if rd.snapshot is not None:
                    await loop.run_in_executor(None, self.storage.install_snapshot, rd.snapshot)
                if rd.entries:
                    self.storage.append(rd.entries)
                if rd.hard_state is not None:
                    self.storage.set_hard_state(rd.hard_state)
                if rd.must_sync:
                    await loop.run_in_executor(None, self.storage.sync)
                for m in rd.messages:
                    self._send(self.id, m)
                self.applier.submit(rd.snapshot, rd.committed_entries)
                for rs in rd.read_states:
                    self.reads.confirmed(rs.ctx, rs.index)
                for ctx in rd.dropped_reads:
                    self.reads.dropped(ctx)
                if rd.soft_state is not None:
                    self._role_changed(rd.soft_state.role, rd.soft_state.leader)
                self.raft.advance(rd)
            # The apply stage wakes the driver as it advances, so this runs
            # between Readies: the store and ``applied`` agree here.
            if self.raft.compaction_due():
                await self._compact()

    def _applied(self) -> None:
        self.reads.applied_changed()
        self.wake.set()

    def _execute(self, e: Entry) -> Result:
        rec = msgpack.unpackb(e.data, raw=False)
        # Deterministic on every replica: the proposer's HLC time, made
        # strictly increasing in this group's log order.
        ts = max(int(rec["ts"]), self.store.last_commit_ts + 1)
        self.hlc.observe(ts)
        try:
            return apply_command(self.store, ts, rec["cmd"])
        except Exception as exc:  # noqa: BLE001 - a bad entry must not stop the node
            log.exception("group %d: apply of entry %d failed", self.id, e.index)
            return {"error": errors.internal_server_error(f"apply failed: {exc}").to_body()}

    def _role_changed(self, role: str, leader: str | None) -> None:
        # Pending proposals stay pending: their entries may still commit
        # under the next leader, and are answered when applied or time out.
        log.info("group %d: role %s, term %d, leader %s", self.id, role, self.raft.term, leader)
        self.reads.role_changed(role)
        if role == LEADER:
            self._leader_since = self.clock.monotonic()
        self._notify(self.id)

    def _maybe_place(self) -> None:
        """Leader placement: hand this group to its preferred node, an
        election timeout after winning it, at the first tick that node has
        the whole log (so the handover refuses no write for long); once per
        term, so a handover that fails is not tried again until the next."""
        r = self.raft
        to = self.preferred
        if (to is None or r.role != LEADER or to == r.id or self._placed_term == r.term
                or r.transfer_target is not None
                or self.clock.monotonic() - self._leader_since
                < self.cfg.raft.election_timeout_ms / 1000.0
                or not r.peer_caught_up(to)):
            return
        self._placed_term = r.term
        log.info("group %d: handing leadership to its preferred node %s", self.id, to)
        r.transfer_leadership(to)

    async def _compact(self) -> None:
        index = self.raft.applied
        snap = self.raft.compact(index, self.store.snapshot())
        await asyncio.get_running_loop().run_in_executor(
            None, self._persist_snapshot, snap, max(0, index - self.raft.config.compaction_margin))
        gc_ts = self.store.last_commit_ts - (60_000 << 16)  # keep a minute of versions
        if gc_ts > 0:
            self.store.gc(gc_ts)
        log.info("group %d: snapshot at index %d, log compacted", self.id, index)

    def _persist_snapshot(self, snap: Snapshot, upto: int) -> None:
        """Save the snapshot and compact the log (in a worker thread: both fsync)."""
        self.storage.save_snapshot(snap)
        self.storage.compact(upto)

    # ------------------------------------------------------------ writes

    async def propose(self, command: dict[str, Any]) -> dict[str, Any]:
        data = msgpack.packb({"ts": self.hlc.now(), "cmd": command}, use_bin_type=True)
        try:
            index = self.raft.propose(data)
        except NotLeader as e:
            raise errors.service_unavailable(f"not the leader of group {self.id} ({e.reason}); "
                                             f"leader hint {e.leader_hint}") from None
        fut = self.applier.expect(index, self.raft.term)
        self.wake.set()
        try:
            # Not shielded: a write that times out (or whose request goes
            # away) cancels its future, and the apply stage then skips it
            # instead of setting an answer nobody will read.
            return await asyncio.wait_for(fut, PROPOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise errors.internal_server_error(
                f"write not applied within {PROPOSE_TIMEOUT_S:g} s") from None
        except NotLeader as e:
            raise errors.internal_server_error(f"write lost its leader: {e.reason}") from None

    # ------------------------------------------------------------ admin

    def status(self) -> dict[str, Any]:
        r = self.raft
        return {"group": self.id, "role": r.role, "term": r.term, "leader": r.lead,
                "commit": r.commit, "applied": r.applied,
                "last_log_index": r.log.last_index(),
                "lease": self.reads.status(),
                "last_quorum_read_ms": self.reads.last_quorum_read,
                "transfer_target": r.transfer_target, "preferred_leader": self.preferred,
                "store": self.store.stats(), "storage": self.storage.status()}

    def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
