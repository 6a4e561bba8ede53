"""A node's read path: the freshness check a read passes before it takes its
timestamp.

Each read family (``get_item``, ``query``, ``scan``, ``transact_get_items``,
``batch_get_item``) takes the path the node's ``[reads]`` config gives it:

* ``lease``: served from local state while the leader's lease holds; on a
  miss, one ReadIndex round, whose quorum confirmation also renews the lease.
* ``read_index``: one ReadIndex round for every read.
* ``local``: no check at all (``unchecked-range-reads`` puts Query, Scan and
  TransactGetItems here: the pre-fix behaviour).

The service takes the read timestamp (:meth:`ReadPath.read_ts`, the last
applied commit) only once :meth:`ReadPath.ensure_fresh` has returned, with no
``await`` in between, so a read sees every write committed before its check
completed (``read-ts-before-check`` samples it before the check instead).
A ReadIndex check returns only once the state machine has applied the read
index (``read-index-no-apply-wait`` returns at the quorum's confirmation).
The node applies apart from its Raft driver (:mod:`system.apply`, as etcd
and elastickv do), so a read can be confirmed while a backlog is still being
applied -- e.g. the previous leader's tail, which a new leader commits with
its no-op -- and the wait is what keeps it from missing that backlog.

The lease is the time by which a quorum had acknowledged this leader
(:meth:`~system.raft.core.RaftNode.quorum_ack_time`) plus
:attr:`~system.config.NodeConfig.lease_duration_ms`; :meth:`ReadPath.lease_holds`
says why it is anchored where it is, the config why it lasts what it lasts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from system.clock import Clock
from system.config import NodeConfig
from system.dynamo import errors
from system.mvcc import MVCCStore
from system.raft.core import LEADER, NotLeader, RaftNode

log = logging.getLogger("node")

RANGE_FAMILIES = ("query", "scan", "transact_get_items")


def lease_clock(cfg: NodeConfig, clock: Clock) -> Callable[[], float]:
    """Milliseconds on the clock that measures the lease (and stamps the
    Raft messages whose acks renew it)."""
    if cfg.lease_clock == "wall":
        return lambda: clock.wall() * 1000.0
    return lambda: clock.monotonic() * 1000.0


@dataclass
class LeaseStats:
    hits: int = 0
    misses: int = 0
    read_index_failures: int = 0
    unchecked: int = 0
    by_family: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, family: str, what: str) -> None:
        setattr(self, what, getattr(self, what) + 1)
        fam = self.by_family.setdefault(family, {})
        fam[what] = fam.get(what, 0) + 1


class ReadPath:
    """The freshness check of every read family, and the lease it keeps.

    The node's Raft driver feeds it :meth:`confirmed` and :meth:`dropped`
    for the Ready's read states and dropped reads, :meth:`role_changed` and
    :meth:`invalidated`; the apply stage calls :meth:`applied_changed` after
    each chunk it applies.
    """

    def __init__(self, cfg: NodeConfig, raft: RaftNode, store: MVCCStore,
                 now: Callable[[], float], wake: Callable[[], None]) -> None:
        self.cfg, self.raft, self.store = cfg, raft, store
        self.now = now
        self._wake = wake
        self.stats = LeaseStats()
        self._reads: dict[int, asyncio.Future[int]] = {}
        self._read_ids = itertools.count(1)
        self._apply_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._lease_until = 0.0
        self._lease_gen = -1
        #: lease-clock ms of the last ReadIndex confirmed
        self.last_quorum_read: float | None = None

    def path(self, family: str) -> str:
        if self.cfg.has("unchecked-range-reads") and family in RANGE_FAMILIES:
            return "local"
        return getattr(self.cfg.reads, family)

    def read_ts(self) -> int:
        return self.store.last_commit_ts

    def unconfirmed(self, family: str) -> bool:
        """Would this node serve ``family`` without asking a quorum -- its
        path is ``local``, it reads as a follower under
        ``stale-follower-reads``, or a lease it kept past a transfer holds?"""
        path = self.path(family)
        return (path == "local" or self.cfg.has("stale-follower-reads")
                or path == "lease" and self.cfg.lease_duration_ms > 0 and self.lease_holds())

    async def ensure_fresh(self, family: str) -> None:
        """The freshness check before a read takes its timestamp."""
        path = self.path(family)
        if path == "local" or self.raft.role != LEADER and self.cfg.has("stale-follower-reads"):
            self.stats.count(family, "unchecked")
            return
        if path == "lease" and self.cfg.lease_duration_ms > 0 and self.lease_holds():
            self.stats.count(family, "hits")
            return
        if self.raft.role != LEADER:
            raise errors.internal_server_error("not the leader")
        self.stats.count(family, "misses")
        # Sampled before the ReadIndex heartbeat round goes out: the renewed
        # lease is anchored at the send time, as quorum_ack_time("sent") is.
        started, gen = self.now(), self.raft.lease_generation
        timeout = self.cfg.lease.check_timeout_ms / 1000.0
        try:
            index = await asyncio.wait_for(self._read_index(), timeout)
            await self.wait_applied(index, timeout)
        except (asyncio.TimeoutError, NotLeader) as e:
            self.stats.count(family, "read_index_failures")
            raise errors.internal_server_error(
                f"lease check failed: {'timed out' if isinstance(e, asyncio.TimeoutError) else e}"
            ) from None
        self.last_quorum_read = self.now()
        # A step-down or transfer during the round bumped the generation: the
        # round then proves nothing about a lease from here on.
        if path == "lease" and gen == self.raft.lease_generation and self.raft.role == LEADER:
            self._lease_until, self._lease_gen = started + self.cfg.lease_duration_ms, gen

    def lease_holds(self) -> bool:
        """Is the lease valid now, and local state fit to serve from it?"""
        r = self.raft
        now = self.now()
        duration = self.cfg.lease_duration_ms
        # Anchored where the acknowledged heartbeats were *sent* (the
        # default): a follower restarts its election timer when a heartbeat
        # reaches it and refuses votes for an election timeout after that
        # (leader stickiness), so no other leader can exist before send time
        # + election timeout, however late the heartbeat arrived.  Anchored
        # at the acks' *receipt* (elastickv's way, kept as a knob), the lease
        # also counts the time an ack spent coming back: an ack held up in
        # the network (the delay fault, a loaded host) pushes the lease's end
        # out by that delay while the follower's timer runs from when it got
        # the heartbeat; once the delay exceeds the 300 ms margin, the lease
        # outlives the moment the followers may elect a new leader, and this
        # node serves stale reads from it.
        ack = r.quorum_ack_time(self.cfg.lease.anchor)
        fresh = (ack is not None and now - ack < duration) or (
            self._lease_gen == r.lease_generation and now < self._lease_until)
        if not fresh:
            return False
        # A lease read serves local state: everything committed must be
        # applied, and the leader must know the commit index of its term.
        # (Only an ex-leader whose lease survived a transfer gets here as a
        # non-leader; it knows no better than its own commit index.)
        noop_done = (r.role != LEADER or r.log.term(r.commit) == r.term
                     or self.cfg.has("no-noop-read"))
        return noop_done and r.applied >= r.commit

    # ------------------------------------------------------------ fed by the driver

    def confirmed(self, ctx: int, index: int) -> None:
        fut = self._reads.pop(ctx, None)
        if fut is not None and not fut.done():
            fut.set_result(index)

    def dropped(self, ctx: int) -> None:
        fut = self._reads.pop(ctx, None)
        if fut is not None and not fut.done():
            fut.set_exception(NotLeader(self.raft.lead, "leadership lost"))

    def applied_changed(self) -> None:
        applied = self.raft.applied
        for index, f in self._apply_waiters:
            if applied >= index and not f.done():
                f.set_result(None)
        self._apply_waiters = [(i, f) for i, f in self._apply_waiters if not f.done()]

    def role_changed(self, role: str) -> None:
        if role != LEADER:
            self._lease_until = 0.0

    def invalidated(self, generation: int, reason: str) -> None:
        self._lease_until = 0.0
        log.info("lease invalidated (generation %d): %s", generation, reason)

    def status(self) -> dict[str, Any]:
        r = self.raft
        now = self.now()
        ack = r.quorum_ack_time(self.cfg.lease.anchor)
        duration = self.cfg.lease_duration_ms
        expiry = max(ack + duration if ack is not None else 0.0,
                     self._lease_until if self._lease_gen == r.lease_generation else 0.0)
        s = self.stats
        return {"clock": self.cfg.lease_clock, "anchor": self.cfg.lease.anchor,
                "duration_ms": duration, "now_ms": now,
                "last_quorum_ack_ms": ack, "expiry_ms": expiry if expiry else None,
                "valid": r.role == LEADER and expiry > now,
                "generation": r.lease_generation,
                "hits": s.hits, "misses": s.misses,
                "read_index_failures": s.read_index_failures,
                "unchecked": s.unchecked, "by_family": s.by_family}

    # ------------------------------------------------------------ internals

    async def _read_index(self) -> int:
        ctx = next(self._read_ids)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads[ctx] = fut
        try:
            self.raft.read_index(ctx)
        except NotLeader:
            self._reads.pop(ctx, None)
            raise
        self._wake()
        try:
            return await fut
        finally:
            self._reads.pop(ctx, None)

    async def wait_applied(self, index: int, timeout: float) -> None:
        """Until the state machine has applied ``index`` (a read index), or
        at once under ``read-index-no-apply-wait``; TimeoutError after
        ``timeout`` seconds."""
        if self.raft.applied >= index or self.cfg.has("read-index-no-apply-wait"):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._apply_waiters.append((index, fut))
        await asyncio.wait_for(fut, timeout)
