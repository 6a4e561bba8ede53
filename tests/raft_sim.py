"""A deterministic simulator for the Raft core (``system.raft``).

N nodes, each a ``RaftNode`` with its own durable storage and a toy state
machine; one seeded event queue carries ticks, messages and "I/O done"
events; simulated time is in milliseconds. The network delays each message
by a random amount (so messages reorder), drops and duplicates some, and
honours a set of cut links ``(src, dst)`` (one-way cuts are single pairs).
A node can crash (losing everything not yet persisted, including Readies
not yet processed) and restart from what its driver persisted.

The driver follows the Raft core's contract exactly: for each Ready it
persists (truncate/append/hard state/snapshot), then sends, then applies,
then advances. Processing of a node's Ready happens ``io_delay`` ms after
the input that produced it, so a crash can fall between an input and its
persistence.

While it runs it checks, and raises ``SafetyViolation`` on the spot:

* election safety: at most one leader per term;
* log matching: an (index, term) pair always names the same entry, with the
  same predecessor term (by induction, identical prefixes);
* leader completeness: a new leader's log holds every entry committed so far;
* state machine safety: no two nodes apply different entries (or reach a
  different state digest) at an index; entries are applied in order;
* ReadIndex: a read returns an index >= every entry applied anywhere before
  the read was registered.

``check_convergence()`` and ``check_acknowledged()`` are for the end of a
run, after healing: every node applied the same entries, and every
acknowledged proposal (its proposer applied it) is in the committed log.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from system.raft import (LEADER, Entry, HardState, Message, NotLeader, RaftConfig, RaftNode,
                         Snapshot, StorageState, message_from_wire)


class SafetyViolation(AssertionError):
    pass


def digest_step(prev: bytes, e: Entry) -> bytes:
    h = hashlib.blake2b(prev, digest_size=16)
    h.update(e.index.to_bytes(8, "big"))
    h.update(e.term.to_bytes(8, "big"))
    h.update(e.data)
    return h.digest()


@dataclass
class Durable:
    """What a node's disk holds."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)

    def last_index(self) -> int:
        if self.entries:
            return self.entries[-1].index
        return self.snapshot.index if self.snapshot else 0


@dataclass
class SimNode:
    id: str
    durable: Durable = field(default_factory=Durable)
    raft: RaftNode | None = None
    incarnation: int = 0
    io_pending: bool = False
    sm_index: int = 0
    sm_digest: bytes = b""
    snapshots_installed: int = 0
    reads: dict = field(default_factory=dict)     # ctx -> index
    dropped: list = field(default_factory=list)   # ctxs of dropped reads
    applied_data: list = field(default_factory=list)  # (index, data) this incarnation

    @property
    def up(self) -> bool:
        return self.raft is not None

    @property
    def node(self) -> RaftNode:
        """The running RaftNode (AssertionError if the node is down)."""
        assert self.raft is not None, f"{self.id} is down"
        return self.raft


class Sim:
    def __init__(self, n: int = 3, seed: int = 0, *, drop: float = 0.0, dup: float = 0.0,
                 delay: tuple[float, float] = (1.0, 8.0), io_delay: tuple[float, float] = (0.0, 2.0),
                 tick_ms: float = 10.0, heartbeat_ticks: int = 2, election_ticks: int = 10,
                 wire: bool = True, compact_every: int = 0, **raft_kw: Any) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.ids = [f"n{i}" for i in range(n)]
        self.now = 0.0
        self.tick_ms = tick_ms
        self.drop, self.dup, self.delay, self.io_delay = drop, dup, delay, io_delay
        self.wire = wire
        self.compact_every = compact_every
        self.raft_kw = dict(tick_ms=tick_ms, heartbeat_ticks=heartbeat_ticks,
                            election_ticks=election_ticks, **raft_kw)
        self.cut: set[tuple[str, str]] = set()
        # At delivery: returns True (deliver), False (drop) or a replacement message.
        self.msg_filter: Callable[[Message], Any] | None = None
        self._events: list = []
        self._evseq = 0
        self.nodes: dict[str, SimNode] = {i: SimNode(i) for i in self.ids}
        # checker state
        self.leaders: dict[int, str] = {}          # term -> leader
        self.leader_log: list[tuple[float, int, str]] = []  # (time, term, id) of elections
        self.committed: dict[int, tuple[int, bytes]] = {}
        self.digest_at: dict[int, bytes] = {0: b""}
        self.max_committed = 0
        self.entry_at: dict[tuple[int, int], bytes] = {}
        self.pred_term: dict[tuple[int, int], int] = {}
        self.proposals: dict[bytes, tuple[str, int, int]] = {}  # data -> (node, index, term)
        self.acked: dict[bytes, int] = {}           # data -> index, applied by its proposer
        self.read_floor: dict[Any, int] = {}        # ctx -> max_committed when registered
        self.read_results: dict[Any, int] = {}
        self.snapshots_installed = 0
        self.messages_sent = 0
        self.events_run = 0
        for i in self.ids:
            self.start(i)

    # ------------------------------------------------------------------
    # nodes

    def config(self, node_id: str) -> RaftConfig:
        return RaftConfig(id=node_id, peers=list(self.ids), **self.raft_kw)

    def start(self, node_id: str) -> None:
        n = self.nodes[node_id]
        assert n.raft is None
        d = n.durable
        st = StorageState(hard_state=d.hard_state, entries=list(d.entries), snapshot=d.snapshot)
        n.raft = RaftNode(self.config(node_id), st, random.Random(self.rng.random()),
                          now=lambda: self.now)
        n.incarnation += 1
        n.io_pending = False
        n.sm_index, n.sm_digest = (d.snapshot.index, d.snapshot.data) if d.snapshot else (0, b"")
        n.applied_data = []
        self._push(self.now + self.rng.uniform(0, self.tick_ms), ("tick", node_id, n.incarnation))
        self._io(n)  # a restarted node re-applies committed entries

    def crash(self, node_id: str) -> None:
        n = self.nodes[node_id]
        n.raft = None
        n.incarnation += 1   # pending ticks and I/O of the old incarnation are void

    def restart(self, node_id: str) -> None:
        if not self.nodes[node_id].up:
            self.start(node_id)

    # ------------------------------------------------------------------
    # network

    def isolate(self, node_id: str) -> None:
        for o in self.ids:
            if o != node_id:
                self.cut.add((node_id, o))
                self.cut.add((o, node_id))

    def partition(self, *groups: list[str]) -> None:
        where = {i: k for k, g in enumerate(groups) for i in g}
        for a in self.ids:
            for b in self.ids:
                if a != b and where.get(a, -1) != where.get(b, -2):
                    self.cut.add((a, b))

    def heal(self) -> None:
        self.cut.clear()

    def _send(self, m: Message) -> None:
        self.messages_sent += 1
        if self.drop and self.rng.random() < self.drop:
            return
        if self.wire:
            m = message_from_wire(m.to_wire())
        copies = 2 if self.dup and self.rng.random() < self.dup else 1
        for _ in range(copies):
            self._push(self.now + self.rng.uniform(*self.delay), ("msg", m))

    # ------------------------------------------------------------------
    # event loop

    def _push(self, t: float, ev: tuple) -> None:
        self._evseq += 1
        heapq.heappush(self._events, (t, self._evseq, ev))

    def _io(self, n: SimNode) -> None:
        if not n.io_pending:
            n.io_pending = True
            lo, hi = self.io_delay
            self._push(self.now + (self.rng.uniform(lo, hi) if hi > 0 else 0.0),
                       ("io", n.id, n.incarnation))

    def step_event(self) -> bool:
        if not self._events:
            return False
        t, _, ev = heapq.heappop(self._events)
        self.now = max(self.now, t)
        self.events_run += 1
        kind = ev[0]
        if kind == "tick":
            n = self.nodes[ev[1]]
            if n.raft is not None and n.incarnation == ev[2]:
                was_leader = n.raft.role == LEADER
                n.raft.tick()
                self._push(t + self.tick_ms, ev)
                if n.raft.role == LEADER and not was_leader:
                    self._on_leader(n)
                if n.raft.has_ready():
                    self._io(n)
        elif kind == "msg":
            m = ev[1]
            n = self.nodes[m.dst]
            if n.raft is None or (m.src, m.dst) in self.cut:
                return True
            if self.msg_filter is not None:
                verdict = self.msg_filter(m)
                if verdict is False:
                    return True
                if isinstance(verdict, Message):
                    m = verdict   # delivered in a rewritten form
            was_leader = n.raft.role == LEADER
            n.raft.step(m)
            if n.raft.role == LEADER and not was_leader:
                self._on_leader(n)
            self._io(n)
        elif kind == "io":
            n = self.nodes[ev[1]]
            if n.raft is not None and n.incarnation == ev[2]:
                n.io_pending = False
                self.process_ready(n)
        return True

    def run(self, ms: float) -> None:
        end = self.now + ms
        ev = self._events
        while ev and ev[0][0] <= end:
            self.step_event()
        self.now = max(self.now, end)

    def run_until(self, pred: Callable[[], bool], ms: float) -> bool:
        """Run event by event until ``pred()`` holds (checked after each
        event) or ``ms`` pass. Returns whether it held."""
        end = self.now + ms
        if pred():
            return True
        ev = self._events
        while ev and ev[0][0] <= end:
            self.step_event()
            if pred():
                return True
        self.now = max(self.now, end)
        return pred()

    # ------------------------------------------------------------------
    # the driver: persist, send, apply, advance

    def process_ready(self, n: SimNode) -> None:
        raft = n.raft
        assert raft is not None
        while raft.has_ready():
            rd = raft.ready()
            self._persist(n, rd)
            for m in rd.messages:
                self._send(m)
            self._apply(n, rd)
            raft.advance(rd)
        if self.compact_every and n.sm_index - (raft.log.snapshot.index if raft.log.snapshot else 0) \
                >= self.compact_every:
            snap = raft.compact(n.sm_index, n.sm_digest)
            d = n.durable
            d.snapshot = snap
            cut = snap.index - raft.config.compaction_margin
            d.entries = [e for e in d.entries if e.index > cut]

    def _persist(self, n: SimNode, rd) -> None:
        d = n.durable
        raft = n.node
        if rd.snapshot is not None:
            d.snapshot = rd.snapshot
            d.entries = []
            self.snapshots_installed += 1
            n.snapshots_installed += 1
        if rd.truncate_from is not None:
            d.entries = [e for e in d.entries if e.index < rd.truncate_from]
        if rd.entries:
            first = rd.entries[0].index
            # The truncation point must have been reported: appending only
            # ever continues the durable log.
            if first != d.last_index() + 1:
                raise SafetyViolation(f"{n.id}: Ready appends at {first} but the durable log "
                                      f"ends at {d.last_index()} (truncate_from={rd.truncate_from})")
            for e in rd.entries:
                key = (e.index, e.term)
                old = self.entry_at.setdefault(key, e.data)
                if old != e.data:
                    raise SafetyViolation(f"log matching: two entries at {key}")
                pt = raft.log.term(e.index - 1)
                if pt is None:
                    pt = d.entries[-1].term if d.entries and d.entries[-1].index == e.index - 1 \
                        else None
                if pt is not None:
                    old_pt = self.pred_term.setdefault(key, pt)
                    if old_pt != pt:
                        raise SafetyViolation(f"log matching: {key} follows term {pt} on {n.id} "
                                              f"but {old_pt} elsewhere")
            d.entries.extend(rd.entries)
        if rd.hard_state is not None:
            if rd.hard_state.term < d.hard_state.term:
                raise SafetyViolation(f"{n.id}: term went back {d.hard_state.term}->{rd.hard_state.term}")
            d.hard_state = rd.hard_state

    def _on_leader(self, n: SimNode) -> None:
        raft = n.node
        term = raft.term
        other = self.leaders.setdefault(term, n.id)
        if other != n.id:
            raise SafetyViolation(f"election safety: {other} and {n.id} both lead term {term}")
        self.leader_log.append((self.now, term, n.id))
        log = raft.log
        if log.last_index() < self.max_committed:
            raise SafetyViolation(f"leader completeness: {n.id} (term {term}) ends at "
                                  f"{log.last_index()} < committed {self.max_committed}")
        for i in range(log.offset + 1, self.max_committed + 1):
            c = self.committed.get(i)
            if c is not None and log.term(i) != c[0]:
                raise SafetyViolation(f"leader completeness: {n.id} (term {term}) has term "
                                      f"{log.term(i)} at committed index {i} (term {c[0]})")

    def _apply(self, n: SimNode, rd) -> None:
        if rd.snapshot is not None:
            s = rd.snapshot
            known = self.digest_at.get(s.index)
            if known is not None and known != s.data:
                raise SafetyViolation(f"{n.id}: snapshot at {s.index} differs")
            n.sm_index, n.sm_digest = s.index, s.data
        for e in rd.committed_entries:
            if e.index != n.sm_index + 1:
                raise SafetyViolation(f"{n.id}: applies {e.index} after {n.sm_index}")
            c = self.committed.setdefault(e.index, (e.term, e.data))
            if c != (e.term, e.data):
                raise SafetyViolation(f"state machine safety: {n.id} applies {(e.term, e.data)} "
                                      f"at {e.index}, another node applied {c}")
            n.sm_digest = digest_step(n.sm_digest, e)
            n.sm_index = e.index
            dg = self.digest_at.setdefault(e.index, n.sm_digest)
            if dg != n.sm_digest:
                raise SafetyViolation(f"state machine safety: {n.id} state differs at {e.index}")
            if e.index > self.max_committed:
                self.max_committed = e.index
            if e.data:
                n.applied_data.append((e.index, e.data))
                p = self.proposals.get(e.data)
                if p is not None and p[0] == n.id:
                    self.acked[e.data] = e.index
        for rs in rd.read_states:
            floor = self.read_floor.get(rs.ctx)
            if floor is not None and rs.index < floor:
                self.stale_read(n, rs, floor)
            n.reads[rs.ctx] = rs.index
            self.read_results[rs.ctx] = rs.index
        n.dropped.extend(rd.dropped_reads)

    def stale_read(self, n: SimNode, rs, floor: int) -> None:
        raise SafetyViolation(f"ReadIndex on {n.id} returned {rs.index} < {floor}, an index "
                              "applied before the read began")

    # ------------------------------------------------------------------
    # clients

    def leader(self) -> str | None:
        """The up node that believes it leads with the highest term."""
        best = None
        for n in self.nodes.values():
            if n.raft is not None and n.raft.role == LEADER:
                if best is None or n.raft.term > self.nodes[best].node.term:
                    best = n.id
        return best

    def stable_leader(self, ms: float = 5000.0) -> str:
        """Run until one leader has committed an entry of its term and every
        up node follows it; returns its id (AssertionError on timeout)."""
        def ok() -> bool:
            lead = self.leader()
            if lead is None:
                return False
            raft = self.nodes[lead].node
            if raft.log.term(raft.commit) != raft.term:
                return False
            return all(nd.node.lead == lead for nd in self.nodes.values() if nd.up)
        if not self.run_until(ok, ms):
            raise AssertionError(f"no stable leader within {ms} ms: "
                                 + ", ".join(repr(nd.raft) for nd in self.nodes.values()))
        return self.leader()  # type: ignore[return-value]

    def propose(self, node_id: str, data: bytes) -> int | None:
        n = self.nodes[node_id]
        if n.raft is None:
            return None
        try:
            index = n.raft.propose(data)
        except NotLeader:
            return None
        self.proposals[data] = (node_id, index, n.raft.term)
        self._io(n)
        return index

    def read(self, node_id: str, ctx: Any) -> bool:
        n = self.nodes[node_id]
        if n.raft is None:
            return False
        try:
            n.raft.read_index(ctx)
        except NotLeader:
            return False
        self.read_floor[ctx] = self.max_committed
        self._io(n)
        return True

    # ------------------------------------------------------------------
    # end-of-run checks

    def check_convergence(self) -> None:
        ups = [n for n in self.nodes.values() if n.up]
        idx = {n.id: n.sm_index for n in ups}
        if len(set(idx.values())) != 1:
            raise SafetyViolation(f"nodes did not converge: applied {idx}")
        digests = {n.sm_digest for n in ups}
        if len(digests) != 1:
            raise SafetyViolation("nodes applied the same number of entries but differ")

    def check_acknowledged(self) -> None:
        for data, index in self.acked.items():
            c = self.committed.get(index)
            if c is None or c[1] != data:
                raise SafetyViolation(f"acknowledged proposal {data!r} at {index} lost: {c}")


# ----------------------------------------------------------------------
# A randomised run: faults, client load, then healing and liveness.


@dataclass
class ChaosReport:
    seed: int
    n: int
    ticks: int
    proposals: int
    acked: int
    committed: int
    elections: int
    max_term: int
    crashes: int
    snapshots_installed: int
    reads: int
    transfers: int
    heal_to_commit_ms: float


def run_chaos(seed: int, n: int = 3, ticks: int = 1500, *, commit_within_ms: float = 3000.0,
              settle_ms: float = 10000.0, **sim_kw: Any) -> ChaosReport:
    """Random faults for ``ticks`` ticks, then heal everything (restart
    crashed nodes, stop dropping) and require a leader and a committed
    client write within ``commit_within_ms``, then every node applying it
    within ``settle_ms``. Safety is checked throughout by the simulator; the
    end checks convergence and that no acknowledged proposal was lost."""
    r = random.Random(seed * 7919 + n)
    kw: dict[str, Any] = dict(
        drop=r.choice([0.0, 0.02, 0.08]), dup=r.choice([0.0, 0.03]),
        delay=(1.0, r.choice([6.0, 15.0, 30.0])), io_delay=(0.0, r.choice([0.0, 3.0])),
        compact_every=r.choice([0, 12, 30]), compaction_margin=r.choice([0, 4]),
        pre_vote=r.random() < 0.75, check_quorum=r.random() < 0.75,
    )
    # batch size x pipelining window: one entry at a time, small batches,
    # no pipelining, both
    kw["max_append_entries"], kw["max_inflight"] = r.choice([(1, 8), (3, 2), (64, 1), (64, 32)])
    kw.update(sim_kw)
    sim = Sim(n, seed=seed, **kw)
    ids = sim.ids
    tick = sim.tick_ms
    p_fault = 1 / r.choice([15, 40, 100])
    crashes = transfers = reads = 0
    k = 0
    for step in range(ticks):
        sim.run(tick)
        if r.random() < 0.35:
            target = sim.leader() if r.random() < 0.7 else r.choice(ids)
            if target is not None:
                k += 1
                sim.propose(target, b"s%d-%d" % (seed, k))
        if r.random() < 0.08:
            # ReadIndex at any node that believes it leads (stale leaders
            # included), sometimes at a follower (NotLeader).
            leaders = [i for i in ids if sim.nodes[i].up and sim.nodes[i].node.role == LEADER]
            target = r.choice(leaders) if leaders and r.random() < 0.9 else r.choice(ids)
            if sim.read(target, ("r", seed, step)):
                reads += 1
        if r.random() < p_fault:
            action = r.choice(["isolate", "split", "oneway", "heal", "heal", "crash",
                               "restart", "restart", "transfer"])
            if action == "isolate":
                sim.isolate(r.choice(ids))
            elif action == "split":
                shuffled = ids[:]
                r.shuffle(shuffled)
                cut_at = r.randrange(1, n)
                sim.partition(shuffled[:cut_at], shuffled[cut_at:])
            elif action == "oneway":
                a, b = r.sample(ids, 2)
                sim.cut.add((a, b))
            elif action == "heal":
                sim.heal()
            elif action == "crash":
                victim = r.choice(ids)
                if sim.nodes[victim].up:
                    sim.crash(victim)
                    crashes += 1
            elif action == "restart":
                for i in ids:
                    sim.restart(i)
            elif action == "transfer":
                lead = sim.leader()
                if lead is not None:
                    sim.nodes[lead].node.transfer_leadership(r.choice(ids))
                    sim._io(sim.nodes[lead])
                    transfers += 1
    # Heal, restart, and require progress.
    sim.heal()
    sim.drop = 0.0
    for i in ids:
        sim.restart(i)
    t0 = sim.now
    attempts = 0
    data = b""

    def committed() -> bool:
        # A client retrying one write until it commits: a new attempt
        # whenever the previous one can no longer commit.
        nonlocal attempts, data
        p = sim.proposals.get(data)
        if p is not None:
            node, idx, term = p
            c = sim.committed.get(idx)
            if c is not None and c[1] == data:
                return True
            raft = sim.nodes[node].raft
            if c is None and raft is not None and raft.role == LEADER and raft.term == term:
                return False  # still pending
        lead = sim.leader()
        if lead is not None:
            attempts += 1
            data = b"final-%d-%d" % (seed, attempts)
            sim.propose(lead, data)
        return False

    if not sim.run_until(committed, commit_within_ms):
        raise AssertionError(f"seed {seed}: nothing committed within {commit_within_ms} ms of "
                             "healing: " + ", ".join(repr(nd.raft) for nd in sim.nodes.values()))
    heal_ms = sim.now - t0
    final_index = sim.proposals[data][1]
    if not sim.run_until(lambda: all(nd.sm_index >= final_index for nd in sim.nodes.values()),
                         settle_ms):
        raise AssertionError(f"seed {seed}: nodes did not catch up within {settle_ms} ms: "
                             + ", ".join(repr(nd.raft) for nd in sim.nodes.values()))
    sim.run(20 * tick)
    sim.check_convergence()
    sim.check_acknowledged()
    return ChaosReport(seed, n, ticks, len(sim.proposals), len(sim.acked), sim.max_committed,
                       len(sim.leader_log), max(sim.leaders) if sim.leaders else 0, crashes,
                       sim.snapshots_installed, reads, transfers, heal_ms)
