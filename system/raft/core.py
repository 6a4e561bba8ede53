"""The Raft consensus core: a pure, deterministic state machine.

No sockets, threads, asyncio or clocks: a driver feeds it inputs
(``tick``, ``step``, ``propose``, ``read_index``, ``transfer_leadership``,
``compact``) and collects its outputs as a :class:`Ready`, the way etcd's
``RawNode`` works. The node process drives it over TCP; the tests drive it
with a simulated network (``tests/raft_sim.py``).

The driver loop (one Ready outstanding at a time)::

    node.tick() every config.tick_ms; node.step(msg) for each message; ...
    if node.has_ready():
        rd = node.ready()
        # 1. persist: if rd.snapshot, store it and drop every durable entry;
        #    if rd.truncate_from, drop durable entries >= it; append
        #    rd.entries (dropping any durable entry at or after
        #    rd.entries[0].index); store rd.hard_state if not None.
        #    fsync if rd.must_sync.
        # 2. send rd.messages (never before step 1 is durable: a vote or an
        #    append acknowledgement must not leave before what it promises
        #    is on disk -- etcd's rule).
        # 3. apply: if rd.snapshot, restore the state machine from
        #    rd.snapshot.data; then apply rd.committed_entries in order
        #    (skip entries whose data is b"": the leader's no-ops); answer
        #    rd.read_states once applied >= their index; fail
        #    rd.dropped_reads.
        # 4. node.advance(rd)

With ``config.async_apply`` step 3 only hands the snapshot and the committed
entries over to an apply stage that runs apart from this loop (as etcd's
server and elastickv apply): ``advance`` then means "handed over", the next
Ready carries only entries committed since, and the stage reports how far it
has applied with ``node.applied_to(index)``, as etcd's ``Advance`` /
``AppliedIndex`` split goes. ``applied`` (what leases, read waits and
``compact`` rely on) is that reported index.

Inputs may be given between ``ready()`` and ``advance()`` (e.g. while the
fsync runs); their effects go into the next Ready. A crash anywhere in the
loop is safe as long as step 2 never overtakes step 1: whatever was not
persisted was never promised to anyone.

Proposals: ``propose`` returns the entry's index; its term is ``node.term``
at that moment. The write is committed iff ``Ready.committed_entries``
later yields an entry with that index *and* term (after a leader change the
index may be reused by another entry: the client gets an error and may
retry).

Compaction: when ``compaction_due()``, the driver snapshots its state machine
at its applied index ``i`` and calls ``compact(i, data)``; it persists the
returned Snapshot and may then drop durable entries up to ``i -
compaction_margin`` (it may also keep more; recovery accepts an overlap).

Reads: ``read_index`` on a follower raises :class:`NotLeader` with the
leader hint (fail fast, no forwarding): the node's request path forwards the
whole request to the leader anyway, and a forwarded read would need a
timeout of its own. On the leader a read completes as a ``ReadState`` (serve
once applied >= its index) or comes back in ``Ready.dropped_reads`` if
leadership is lost first; on a leader cut off from a quorum (without
CheckQuorum) it never completes, so the node must time it out.

Time: election and heartbeat timers count ticks. ``now()`` (milliseconds,
float, given by the driver: the process Clock or simulated time) is only read
to stamp leader messages and acknowledgements for the lease facts.

Leases: the core only gives facts. :meth:`RaftNode.quorum_ack_time` is the
time by which a majority had acknowledged this leader, anchored on when the
acknowledged messages were sent (``"sent"``) or when the acks arrived
(``"received"``). ``lease_generation`` increases (and
``on_lease_invalidated(generation, reason)`` is called) when the leader steps
down (``"step-down"``) or sends TimeoutNow (``"transfer"``); both clear the
ack times, and acknowledgements of messages sent before that point never
count again; none are recorded while a transfer is pending. The node decides
the lease (duration, drift, which anchor and clock).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .log import LogError, RaftLog
from .messages import (AppendEntries, AppendResponse, Entry, HardState, Heartbeat,
                       HeartbeatResponse, InstallSnapshot, Message, Snapshot, TimeoutNow,
                       VoteRequest, VoteResponse)
from .progress import PROBE, REPLICATE, SNAPSHOT, Progress

FOLLOWER = "follower"
PRE_CANDIDATE = "pre_candidate"
CANDIDATE = "candidate"
LEADER = "leader"

_PRE, _ELECT, _TRANSFER = "pre", "elect", "transfer"


class NotLeader(Exception):
    """The operation needs the leader. ``leader_hint`` is the node believed
    to lead (the transfer target while a transfer is in progress), or None."""

    def __init__(self, leader_hint: str | None, reason: str = "not the leader") -> None:
        super().__init__(f"{reason} (leader hint: {leader_hint})")
        self.leader_hint = leader_hint
        self.reason = reason


@dataclass
class RaftConfig:
    """Static configuration of one node.

    Bug-class flags (off by default, i.e. set to the unsafe value only on
    purpose): ``check_quorum=False`` (``no-check-quorum``: an isolated
    leader never steps down), ``noop_before_reads=False`` (``no-noop-read``:
    a new leader serves ReadIndex before committing an entry of its term, so
    it may miss entries committed by its predecessor),
    ``lease_survives_transfer=True`` (``lease-survives-transfer``: sending
    TimeoutNow neither bumps the lease generation nor clears the quorum ack
    times, and the step-down that follows keeps them: the ex-leader's
    :meth:`quorum_ack_time` still answers, as if the invalidation callback
    had never fired), ``commit_previous_term=True``
    (``commit-previous-term``: the leader commits an entry of an earlier
    term once a majority holds it, the Raft paper's Figure 8 bug; such an
    entry can still be overwritten by a leader elected without it).
    """

    id: str
    peers: list[str]
    tick_ms: float = 10.0
    heartbeat_ticks: int = 20            # 200 ms
    election_ticks: int = 200            # 2 s; randomised in [e, 2e)
    pre_vote: bool = True
    check_quorum: bool = True
    max_append_entries: int = 256        # entries per AppendEntries
    max_append_bytes: int = 1 << 20      # payload bytes per AppendEntries (>= 1 entry)
    max_inflight: int = 64               # unacknowledged appends per follower
    snapshot_threshold: int = 10_000     # compaction_due() after this many applied entries
    compaction_margin: int = 1_000       # entries kept behind a snapshot for slow followers
    noop_before_reads: bool = True
    lease_survives_transfer: bool = False
    commit_previous_term: bool = False
    #: the driver applies apart from the Ready loop and calls applied_to()
    async_apply: bool = False

    def __post_init__(self) -> None:
        self.peers = list(self.peers)
        if self.id not in self.peers:
            raise ValueError(f"node {self.id!r} is not in its peer list {self.peers}")
        if len(set(self.peers)) != len(self.peers):
            raise ValueError(f"duplicate peers in {self.peers}")
        if not 0 < self.heartbeat_ticks < self.election_ticks:
            raise ValueError("need 0 < heartbeat_ticks < election_ticks")
        if self.max_append_entries < 1 or self.max_inflight < 1:
            raise ValueError("max_append_entries and max_inflight must be >= 1")
        if self.snapshot_threshold < 1 or self.compaction_margin < 0:
            raise ValueError("snapshot_threshold >= 1 and compaction_margin >= 0")


@dataclass
class StorageState:
    """What a node recovers from disk: the hard state, the latest snapshot
    and the durable log entries (those after the snapshot, possibly with a
    margin before it). ``applied`` is how far the state machine is known to
    have applied (default: the snapshot index, i.e. the state machine is
    rebuilt from the snapshot and the committed entries are re-applied)."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    applied: int | None = None


@dataclass(frozen=True)
class SoftState:
    role: str
    leader: str | None


@dataclass(frozen=True)
class ReadState:
    """A ReadIndex request that is confirmed: serve it once the state
    machine has applied ``index``."""

    ctx: Any
    index: int


@dataclass
class Ready:
    """Everything the driver must do, in this order: persist, send, apply,
    then ``advance(ready)``."""

    hard_state: HardState | None = None          # persist when not None
    entries: list[Entry] = field(default_factory=list)   # append durably
    truncate_from: int | None = None             # drop durable entries >= this first
    snapshot: Snapshot | None = None             # persist; replace the log; restore the SM
    messages: list[Message] = field(default_factory=list)  # send after persisting
    committed_entries: list[Entry] = field(default_factory=list)  # apply in order
    read_states: list[ReadState] = field(default_factory=list)
    dropped_reads: list[Any] = field(default_factory=list)  # ReadIndex ctxs that will never complete
    soft_state: SoftState | None = None          # role/leader, when changed
    must_sync: bool = False                      # fsync before sending

    def is_empty(self) -> bool:
        return not (self.hard_state or self.entries or self.truncate_from is not None
                    or self.snapshot or self.messages or self.committed_entries
                    or self.read_states or self.dropped_reads or self.soft_state)


class RaftNode:
    """One Raft participant. See the module docstring for the driver loop."""

    def __init__(self, config: RaftConfig, storage_state: StorageState | None = None,
                 rng: random.Random | None = None, now: Callable[[], float] | None = None,
                 on_lease_invalidated: Callable[[int, str], None] | None = None) -> None:
        self.config = config
        self.id = config.id
        self.peers = list(config.peers)
        self._peer_set = frozenset(self.peers)
        self._others = [p for p in self.peers if p != self.id]
        self.quorum = len(self.peers) // 2 + 1
        self._rng = rng if rng is not None else random.Random()
        self._ticks = 0
        self._now = now if now is not None else (lambda: self._ticks * self.config.tick_ms)
        self._on_lease_invalidated = on_lease_invalidated
        self._stickiness = config.check_quorum or config.pre_vote

        st = storage_state or StorageState()
        hs = st.hard_state
        self.log = RaftLog(st.snapshot, st.entries, hs.commit, st.applied)
        self.term = hs.term
        self.vote = hs.vote
        self.role = FOLLOWER
        self.lead: str | None = None
        self._persisted_hs = HardState(self.term, self.vote, self.log.committed)
        self._reported_soft = SoftState(FOLLOWER, None)
        self._outstanding: Ready | None = None

        self._msgs: list[Message] = []
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = config.election_ticks
        self._votes: dict[str, bool] = {}
        self._prs: dict[str, Progress] = {}
        self._seq = 0
        self._lease_floor_seq = 0
        self.lease_generation = 0
        #: quorum ack times (by anchor) a leader kept when it stepped down
        #: after a transfer, under ``lease_survives_transfer`` only
        self._kept_acks: dict[str, float | None] = {}
        self._transferee: str | None = None
        self._transfer_elapsed = 0
        self._pending_reads: deque[tuple[Any, int, int]] = deque()
        self._reads_waiting_noop: list[Any] = []
        self._read_states: list[ReadState] = []
        self._dropped_reads: list[Any] = []
        self._read_hb_due = False
        self._append_dirty = False
        self._commit_dirty = False
        self._reset()

    # ======================================================================
    # Inputs

    def tick(self) -> None:
        """Advance the logical clock by one tick (``config.tick_ms``)."""
        self._ticks += 1
        if self.role == LEADER:
            self._tick_leader()
        else:
            self._election_elapsed += 1
            if self._election_elapsed >= self._randomized_timeout:
                self._election_elapsed = 0
                self._campaign(_PRE if self.config.pre_vote else _ELECT)

    def campaign(self) -> None:
        """Start an election now (as if the election timer had fired)."""
        if self.role != LEADER:
            self._campaign(_PRE if self.config.pre_vote else _ELECT)

    def propose(self, data: bytes) -> int:
        """Append ``data`` to the log; returns its index. The entry's term
        is ``self.term``: it is committed iff a committed entry with that
        index and term comes out of ``Ready.committed_entries``."""
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise ValueError("a proposal must be non-empty bytes (b'' is the leader no-op)")
        if self.role != LEADER:
            raise NotLeader(self.lead)
        if self._transferee is not None:
            raise NotLeader(self._transferee, "leadership transfer in progress")
        index = self.log.last_index() + 1
        self.log.append([Entry(index, self.term, bytes(data))])
        self._prs[self.id].match = index
        self._append_dirty = True
        if self.quorum == 1:
            self._maybe_commit()
        return index

    def read_index(self, ctx: Any) -> None:
        """Register a linearizable read. On the leader: the commit index is
        recorded (once the leader has committed an entry of its own term,
        unless ``noop_before_reads`` is off), a heartbeat round goes out, and
        when a quorum has answered a message sent after the registration,
        ``ReadState(ctx, index)`` comes out of a Ready. If leadership is
        lost first, ``ctx`` comes out in ``Ready.dropped_reads`` instead. On
        a non-leader: raises :class:`NotLeader` (no forwarding)."""
        if self.role != LEADER:
            raise NotLeader(self.lead)
        if self.config.noop_before_reads and self.log.term(self.log.committed) != self.term:
            self._reads_waiting_noop.append(ctx)
            return
        self._register_read(ctx)

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to ``to``: bring its log up to date, then send
        TimeoutNow (it campaigns at once, its votes bypass leader
        stickiness). Proposals are refused meanwhile; the transfer is
        abandoned after an election timeout."""
        if self.role != LEADER:
            raise NotLeader(self.lead)
        if to not in self._peer_set:
            raise ValueError(f"unknown transfer target {to!r}")
        if to == self.id or to == self._transferee:
            return
        self._transferee = to
        self._transfer_elapsed = 0
        pr = self._prs[to]
        if pr.match == self.log.last_index():
            self._send_timeout_now(to)
        else:
            self._send_appends(to)

    def compact(self, index: int, snapshot_data: bytes) -> Snapshot:
        """Record the state machine's snapshot of everything up to ``index``
        (which must be applied) and forget log entries up to ``index -
        compaction_margin``. Returns the Snapshot (with the term of
        ``index``): the driver persists it and may drop durable entries up
        to ``index - compaction_margin``."""
        log = self.log
        current = log.snapshot.index if log.snapshot else 0
        if index <= current:
            raise ValueError(f"snapshot at {index} is not newer than the current one at {current}")
        if index > log.applied:
            raise ValueError(f"cannot snapshot at {index}: only {log.applied} is applied")
        term = log.term(index)
        if term is None:
            raise ValueError(f"index {index} is no longer in the log")
        snap = Snapshot(index, term, bytes(snapshot_data), tuple(self.peers))
        log.compact(snap, self.config.compaction_margin)
        return snap

    def compaction_due(self) -> bool:
        """True once ``snapshot_threshold`` entries were applied since the
        latest snapshot: the driver should snapshot and call compact()."""
        snap_index = self.log.snapshot.index if self.log.snapshot else 0
        return self.log.applied - snap_index >= self.config.snapshot_threshold

    def step(self, m: Message) -> None:
        """Handle a message from a peer."""
        if m.dst != self.id or m.src not in self._peer_set or m.src == self.id:
            return
        if m.term > self.term:
            if isinstance(m, VoteRequest):
                if not m.force and self._leader_recently_heard():
                    return  # leader stickiness: we have a live leader
                if not m.pre:
                    self._become_follower(m.term, None)
            elif isinstance(m, VoteResponse) and m.pre and m.granted:
                pass  # granted pre-votes carry the future term
            elif isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if self._stickiness and isinstance(m, (AppendEntries, Heartbeat)):
                # A stale leader (e.g. cut off while we moved on): tell it our
                # term so that it steps down instead of being ignored forever.
                self._send(AppendResponse(self.term, self.id, m.src, success=False))
            elif isinstance(m, VoteRequest) and m.pre:
                self._send(VoteResponse(self.term, self.id, m.src, granted=False, pre=True))
            return

        if isinstance(m, VoteRequest):
            self._handle_vote_request(m)
        elif self.role == LEADER:
            if isinstance(m, AppendResponse):
                self._handle_append_response(m)
            elif isinstance(m, HeartbeatResponse):
                self._handle_heartbeat_response(m)
        elif self.role in (CANDIDATE, PRE_CANDIDATE):
            if isinstance(m, VoteResponse):
                self._handle_vote_response(m)
            elif isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
                self._become_follower(self.term, m.src)
                self._step_follower(m)
        else:
            self._step_follower(m)

    # ======================================================================
    # Outputs

    def has_ready(self) -> bool:
        """Is there anything for the driver (and no Ready outstanding)?"""
        if self._outstanding is not None:
            return False
        if self.role == LEADER:
            self._flush()
        if self._msgs:
            return True
        log = self.log
        if log.last_index() > log.stable or log.committed > log.applying:
            return True
        p = self._persisted_hs
        if self.term != p.term or self.vote != p.vote or log.committed != p.commit:
            return True
        s = self._reported_soft
        if self.role != s.role or self.lead != s.leader:
            return True
        return bool(log.pending_snapshot is not None or log.truncate_from is not None
                    or self._read_states or self._dropped_reads)

    def ready(self) -> Ready:
        """Collect the outputs. Call ``advance(ready)`` when done with it."""
        if self._outstanding is not None:
            raise RuntimeError("advance() the previous Ready before asking for another")
        self._flush()
        log = self.log
        hs = self._hard_state()
        hs_changed = hs != self._persisted_hs
        snap = log.pending_snapshot
        entries = log.entries[log.stable - log.offset:] if log.last_index() > log.stable else []
        start = max(log.applying, snap.index if snap else 0) + 1
        committed = (log.entries[start - log.offset - 1: log.committed - log.offset]
                     if log.committed >= start else [])
        soft = SoftState(self.role, self.lead)
        p = self._persisted_hs
        rd = Ready(
            hard_state=hs if hs_changed else None,
            entries=entries,
            truncate_from=log.truncate_from,
            snapshot=snap,
            messages=self._msgs,
            committed_entries=committed,
            read_states=self._read_states,
            dropped_reads=self._dropped_reads,
            soft_state=soft if soft != self._reported_soft else None,
            must_sync=bool(entries) or snap is not None or log.truncate_from is not None
            or hs.term != p.term or hs.vote != p.vote,
        )
        self._msgs = []
        self._read_states = []
        self._dropped_reads = []
        self._reported_soft = soft
        log.handed = entries[-1].index if entries else None
        log.truncate_from = None
        log.pending_snapshot = None
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver has persisted, sent and applied ``rd`` (with
        ``async_apply``: handed its snapshot and entries to the apply stage)."""
        if rd is not self._outstanding:
            raise RuntimeError("advance() with a Ready that is not the outstanding one")
        log = self.log
        if rd.hard_state is not None:
            self._persisted_hs = rd.hard_state
        if log.handed is not None:
            log.stable = max(log.stable, log.handed)
            log.handed = None
        if rd.snapshot is not None:
            log.applying = max(log.applying, rd.snapshot.index)
        if rd.committed_entries:
            log.applying = max(log.applying, rd.committed_entries[-1].index)
        if not self.config.async_apply:
            log.applied = log.applying
        self._outstanding = None

    def applied_to(self, index: int) -> None:
        """With ``async_apply``: the state machine has applied everything up
        to ``index``, which an advanced Ready handed over."""
        log = self.log
        if index > log.applying:
            raise ValueError(f"applied {index}, but only {log.applying} was handed over")
        log.applied = max(log.applied, index)

    # ======================================================================
    # Facts for the node

    def quorum_ack_time(self, anchor: str = "sent") -> float | None:
        """The time by which a majority had acknowledged this leader: the
        quorum-th largest of (now for ourselves, and per follower the latest
        acknowledgement: the time the acknowledged message was sent by us
        (``anchor="sent"``) or the time its acknowledgement arrived
        (``"received"``)). None when not leader or no quorum has answered
        since leadership began or the lease was last invalidated (but see
        ``lease_survives_transfer``).  Why "sent" is the safe anchor and
        "received" is not: ``system.reads.ReadPath.lease_holds``."""
        if self.role != LEADER:
            return self._kept_acks.get(anchor)
        if anchor == "sent":
            times = [pr.ack_sent for p, pr in self._prs.items() if p != self.id]
        elif anchor == "received":
            times = [pr.ack_recv for p, pr in self._prs.items() if p != self.id]
        else:
            raise ValueError(f"anchor must be 'sent' or 'received', not {anchor!r}")
        known = sorted((t for t in times if t is not None), reverse=True)
        need = self.quorum - 1  # besides ourselves
        if need == 0:
            return self._now()
        if len(known) < need:
            return None
        return known[need - 1]

    @property
    def transfer_target(self) -> str | None:
        return self._transferee

    def peer_caught_up(self, peer: str) -> bool:
        """On a leader: has ``peer`` answered within an election timeout, and
        does it hold the whole log (so a transfer to it is immediate)?"""
        pr = self._prs.get(peer) if self.role == LEADER else None
        return (pr is not None and pr.match == self.log.last_index()
                and self._ticks - pr.last_active < self.config.election_ticks)

    @property
    def applied(self) -> int:
        return self.log.applied

    @property
    def commit(self) -> int:
        return self.log.committed

    def status(self) -> dict:
        log = self.log
        return {
            "id": self.id,
            "role": self.role,
            "term": self.term,
            "vote": self.vote,
            "leader": self.lead,
            "commit": log.committed,
            "applied": log.applied,
            "first_index": log.first_index(),
            "last_index": log.last_index(),
            "last_term": log.last_term(),
            "snapshot_index": log.snapshot.index if log.snapshot else 0,
            "quorum_ack_sent": self.quorum_ack_time("sent"),
            "quorum_ack_received": self.quorum_ack_time("received"),
            "lease_generation": self.lease_generation,
            "transfer_target": self._transferee,
            "pending_reads": len(self._pending_reads) + len(self._reads_waiting_noop),
            "progress": ({p: {"match": pr.match, "next": pr.next, "state": pr.state}
                          for p, pr in self._prs.items() if p != self.id}
                         if self.role == LEADER else {}),
        }

    # ======================================================================
    # Roles

    def _reset(self) -> None:
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        e = self.config.election_ticks
        self._randomized_timeout = e + self._rng.randrange(e)
        self._votes = {}
        self._transferee = None
        self._transfer_elapsed = 0

    def _become_follower(self, term: int, lead: str | None) -> None:
        was_leader = self.role == LEADER
        if was_leader and self._transferee is not None and self.config.lease_survives_transfer:
            self._kept_acks = {a: self.quorum_ack_time(a) for a in ("sent", "received")}
        if term > self.term:
            self.term = term
            self.vote = None
        self._reset()
        self.role = FOLLOWER
        self.lead = lead
        if was_leader:
            self._leave_leadership()

    def _leave_leadership(self) -> None:
        if not self._kept_acks:
            self._invalidate_lease("step-down")
        self._dropped_reads.extend(ctx for ctx, _, _ in self._pending_reads)
        self._dropped_reads.extend(self._reads_waiting_noop)
        self._pending_reads.clear()
        self._reads_waiting_noop = []
        self._read_hb_due = False
        self._append_dirty = self._commit_dirty = False
        self._prs = {}

    def _become_leader(self) -> None:
        self._reset()
        self.role = LEADER
        self.lead = self.id
        last = self.log.last_index()
        self._prs = {p: Progress(last + 1, self._ticks) for p in self.peers}
        self._lease_floor_seq = self._seq
        self._kept_acks = {}
        noop = Entry(last + 1, self.term, b"")
        self.log.append([noop])
        self._prs[self.id].match = noop.index
        self._append_dirty = True
        self._maybe_commit()

    def _campaign(self, kind: str) -> None:
        if kind == _PRE:
            self._reset()
            self.role = PRE_CANDIDATE
            self.lead = None
            vote_term = self.term + 1
        else:
            self.term += 1
            self.vote = self.id
            self._reset()
            self.role = CANDIDATE
            self.lead = None
            vote_term = self.term
        self._votes = {self.id: True}
        if self.quorum == 1:
            if kind == _PRE:
                self._campaign(_ELECT)
            else:
                self._become_leader()
            return
        li, lt = self.log.last_index(), self.log.last_term()
        for p in self._others:
            self._send(VoteRequest(vote_term, self.id, p, li, lt,
                                   pre=kind == _PRE, force=kind == _TRANSFER))

    def _leader_recently_heard(self) -> bool:
        """Leader stickiness: do we believe a leader is alive?  True on the
        leader, and on a follower that heard from its leader less than an
        election timeout ago: such a node ignores vote requests (unless
        forced by TimeoutNow), so a partitioned node rejoining with a higher
        term cannot depose a healthy leader.  The read lease relies on it: a
        follower that acknowledged a heartbeat sent at ``t`` votes for no one
        else before ``t`` + election timeout.  A node that has just started
        counts as having heard from a leader: before a crash it may have
        acknowledged a heartbeat, and a quick restart would otherwise let it
        vote at once, electing a new leader while the old one's lease (which
        counted that acknowledgement) still holds."""
        if not self._stickiness:
            return False
        if self.role == LEADER or self._ticks < self.config.election_ticks:
            return True
        return self.lead is not None and self._election_elapsed < self.config.election_ticks

    # ======================================================================
    # Elections

    def _handle_vote_request(self, m: VoteRequest) -> None:
        can_vote = (self.vote == m.src
                    or (self.vote is None and self.lead is None)
                    or (m.pre and m.term > self.term))
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            self._send(VoteResponse(m.term, self.id, m.src, granted=True, pre=m.pre))
            if not m.pre:
                self._election_elapsed = 0
                self.vote = m.src
        else:
            self._send(VoteResponse(self.term, self.id, m.src, granted=False, pre=m.pre))

    def _handle_vote_response(self, m: VoteResponse) -> None:
        if self.role == PRE_CANDIDATE:
            if not m.pre or (m.granted and m.term != self.term + 1):
                return
        elif m.pre:
            return
        self._votes[m.src] = m.granted
        granted = sum(1 for v in self._votes.values() if v)
        rejected = len(self._votes) - granted
        if granted >= self.quorum:
            if self.role == PRE_CANDIDATE:
                self._campaign(_ELECT)
            else:
                self._become_leader()
        elif rejected >= self.quorum:
            self._become_follower(self.term, None)

    # ======================================================================
    # Follower side of replication

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendEntries):
            self._election_elapsed = 0
            self.lead = m.src
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self._election_elapsed = 0
            self.lead = m.src
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(HeartbeatResponse(self.term, self.id, m.src, seq=m.seq, ts=m.ts))
        elif isinstance(m, InstallSnapshot):
            self._election_elapsed = 0
            self.lead = m.src
            self._handle_snapshot(m)
        elif isinstance(m, TimeoutNow):
            self._campaign(_TRANSFER)

    def _handle_append(self, m: AppendEntries) -> None:
        log = self.log
        prev_index, prev_term, entries = m.prev_index, m.prev_term, m.entries
        if prev_index < log.committed:
            # Everything up to our commit index matches the leader's log.
            skip = log.committed - prev_index
            if len(entries) <= skip:
                self._send(AppendResponse(self.term, self.id, m.src, success=True,
                                          index=log.committed, seq=m.seq, ts=m.ts))
                return
            prev_index, prev_term = log.committed, entries[skip - 1].term
            entries = entries[skip:]
        last_new = log.maybe_append(prev_index, prev_term, m.commit, entries)
        if last_new is not None:
            self._send(AppendResponse(self.term, self.id, m.src, success=True,
                                      index=last_new, seq=m.seq, ts=m.ts))
            return
        last = log.last_index()
        if prev_index > last:
            hint_index, hint_term = last + 1, None
        else:
            hint_term = log.term(prev_index)
            hint_index = max(log.first_index_of_term_at(prev_index), log.committed + 1)
        self._send(AppendResponse(self.term, self.id, m.src, success=False, index=m.prev_index,
                                  hint_index=hint_index, hint_term=hint_term,
                                  seq=m.seq, ts=m.ts))

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        log = self.log
        snap = m.snapshot
        if snap.index > log.committed:
            if log.match_term(snap.index, snap.term):
                log.commit_to(snap.index)   # we already hold it: just learn the commit
            else:
                log.restore(snap)
        self._send(AppendResponse(self.term, self.id, m.src, success=True,
                                  index=log.committed, seq=m.seq, ts=m.ts))

    # ======================================================================
    # Leader side of replication

    def _tick_leader(self) -> None:
        cfg = self.config
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= cfg.election_ticks:
            # CheckQuorum as etcd/raft (and so elastickv) does it: once per
            # election timeout, so an isolated leader lingers for one to two
            # election timeouts -- the window in which a leader that is cut
            # off but has not stepped down can serve stale local reads.
            self._election_elapsed = 0
            if cfg.check_quorum and not self._quorum_recently_active():
                self._become_follower(self.term, None)
                return
        if self._transferee is not None:
            self._transfer_elapsed += 1
            if self._transfer_elapsed >= cfg.election_ticks:
                self._transferee = None  # abandon the transfer
        for p in self._others:
            pr = self._prs[p]
            if pr.state == SNAPSHOT:
                pr.snapshot_elapsed += 1
                if pr.snapshot_elapsed >= cfg.election_ticks:
                    pr.become_probe()   # the snapshot (or its answer) was lost: retry
        if self._heartbeat_elapsed >= cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def _quorum_recently_active(self) -> bool:
        """CheckQuorum: has a quorum (counting us) answered within the last
        election timeout?"""
        need = self.quorum - 1
        if need == 0:
            return True
        acts = sorted((self._prs[p].last_active for p in self._others), reverse=True)
        return self._ticks - acts[need - 1] < self.config.election_ticks

    def _send(self, m: Message) -> None:
        self._msgs.append(m)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _bcast_heartbeat(self) -> None:
        ts = self._now()
        committed = self.log.committed
        for p in self._others:
            pr = self._prs[p]
            self._send(Heartbeat(self.term, self.id, p, commit=min(pr.match, committed),
                                 seq=self._next_seq(), ts=ts))

    def _send_append(self, to: str, send_if_empty: bool = True) -> bool:
        """Send the next AppendEntries (or the snapshot) to ``to``; False if
        nothing was sent as an append."""
        pr = self._prs[to]
        if pr.paused(self.config.max_inflight):
            return False
        log = self.log
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None or pr.next <= log.offset:
            snap = log.snapshot
            if snap is None:  # pragma: no cover - offset > 0 implies a snapshot
                raise LogError(f"entries before {log.first_index()} are gone but no snapshot")
            self._send(InstallSnapshot(self.term, self.id, to, snap,
                                       seq=self._next_seq(), ts=self._now()))
            pr.become_snapshot(snap.index)
            return False
        last = log.last_index()
        ents = (log.slice(pr.next, last + 1, self.config.max_append_entries,
                          self.config.max_append_bytes) if pr.next <= last else [])
        if not ents and not send_if_empty:
            return False
        committed = log.committed
        self._send(AppendEntries(self.term, self.id, to, prev, prev_term, ents, committed,
                                 seq=self._next_seq(), ts=self._now()))
        pr.commit_sent = committed
        if pr.state == REPLICATE:
            if ents:
                pr.next = ents[-1].index + 1
                pr.inflight.append(ents[-1].index)
        else:
            pr.probe_sent = True
        return True

    def _send_appends(self, to: str) -> None:
        """Send as much as the flow control allows (one probe, or a window
        of pipelined appends)."""
        pr = self._prs[to]
        while self._send_append(to, send_if_empty=False):
            if pr.state != REPLICATE:
                break

    def _flush(self) -> None:
        """Deferred leader sends, batched per Ready: appends for new entries,
        commit index updates, the heartbeat round for new ReadIndex reads."""
        if self.role != LEADER:
            return
        if self._append_dirty or self._commit_dirty:
            committed = self.log.committed
            for p in self._others:
                self._send_appends(p)
                pr = self._prs[p]
                if (pr.commit_sent < committed and pr.state == REPLICATE
                        and pr.next - 1 == pr.match):
                    # Nothing in flight to carry the new commit index.
                    self._send_append(p, send_if_empty=True)
            self._append_dirty = self._commit_dirty = False
        if self._read_hb_due:
            self._read_hb_due = False
            self._bcast_heartbeat()

    def _record_ack(self, pr: Progress, m: AppendResponse | HeartbeatResponse) -> None:
        pr.last_active = self._ticks
        if m.seq > pr.acked_seq:
            pr.acked_seq = m.seq
        if m.seq > self._lease_floor_seq and (self._transferee is None
                                              or self.config.lease_survives_transfer):
            if pr.ack_sent is None or m.ts > pr.ack_sent:
                pr.ack_sent = m.ts
            t = self._now()
            if pr.ack_recv is None or t > pr.ack_recv:
                pr.ack_recv = t
        if self._pending_reads:
            self._advance_reads()

    def _handle_append_response(self, m: AppendResponse) -> None:
        pr = self._prs[m.src]
        self._record_ack(pr, m)
        log = self.log
        if m.index > log.last_index():
            return  # cannot acknowledge what we never sent (a confused peer)
        if not m.success:
            if pr.state == REPLICATE:
                if m.index <= pr.match:
                    return  # stale
                pr.become_probe()
            elif pr.state == PROBE:
                if m.index != pr.next - 1:
                    return  # stale
                if m.hint_term is not None:
                    k = log.last_index_of_term(m.hint_term, m.index)
                    nxt = k + 1 if k is not None else m.hint_index
                else:
                    nxt = m.hint_index
                pr.next = max(min(nxt, m.index), pr.match + 1, 1)
                pr.probe_sent = False
            else:
                return
            self._send_appends(m.src)
            return
        if pr.maybe_update(m.index):
            if pr.state == PROBE:
                pr.become_replicate()
            elif pr.state == SNAPSHOT and (pr.match >= pr.pending_snapshot
                                           or pr.match >= log.offset):
                pr.become_replicate()
            elif pr.state == REPLICATE:
                pr.free_to(m.index)
            if self._maybe_commit():
                self._commit_dirty = True
            if m.src == self._transferee and pr.match == log.last_index():
                self._send_timeout_now(m.src)
        elif pr.state == REPLICATE:
            pr.free_to(m.index)
        self._send_appends(m.src)

    def _handle_heartbeat_response(self, m: HeartbeatResponse) -> None:
        pr = self._prs[m.src]
        self._record_ack(pr, m)
        pr.probe_sent = False
        if pr.state == REPLICATE and len(pr.inflight) >= self.config.max_inflight:
            pr.inflight.popleft()
        if pr.match < self.log.last_index() and pr.state != SNAPSHOT:
            self._send_append(m.src, send_if_empty=True)

    def _maybe_commit(self) -> bool:
        matches = sorted((pr.match for pr in self._prs.values()), reverse=True)
        mci = matches[self.quorum - 1]
        log = self.log
        own_term = log.term(mci) == self.term
        # Only entries of the current term are committed by counting (§5.4.2):
        # a majority holding an older entry does not stop a candidate with a
        # later last term from winning without it and overwriting it (Figure 8).
        if mci <= log.committed or not (own_term or self.config.commit_previous_term):
            return False
        log.commit_to(mci)
        if own_term and self._reads_waiting_noop:
            waiting, self._reads_waiting_noop = self._reads_waiting_noop, []
            for ctx in waiting:
                self._register_read(ctx)
        return True

    def _send_timeout_now(self, to: str) -> None:
        self._send(TimeoutNow(self.term, self.id, to))
        if not self.config.lease_survives_transfer:
            self._invalidate_lease("transfer")

    def _invalidate_lease(self, reason: str) -> None:
        self.lease_generation += 1
        self._lease_floor_seq = self._seq
        for pr in self._prs.values():
            pr.ack_sent = pr.ack_recv = None
        if self._on_lease_invalidated is not None:
            self._on_lease_invalidated(self.lease_generation, reason)

    # ======================================================================
    # ReadIndex

    def _register_read(self, ctx: Any) -> None:
        index = self.log.committed
        if self.quorum == 1:
            self._read_states.append(ReadState(ctx, index))
            return
        # Confirmed once a quorum answered any message sent from now on.
        self._pending_reads.append((ctx, index, self._seq + 1))
        self._read_hb_due = True

    def _advance_reads(self) -> None:
        acked = sorted((self._prs[p].acked_seq for p in self._others), reverse=True)
        confirmed = acked[self.quorum - 2]
        q = self._pending_reads
        while q and q[0][2] <= confirmed:
            ctx, index, _ = q.popleft()
            self._read_states.append(ReadState(ctx, index))

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def __repr__(self) -> str:
        return (f"RaftNode({self.id} {self.role} term={self.term} lead={self.lead} "
                f"commit={self.log.committed} last={self.log.last_index()})")
