"""The Raft core (``system.raft``) on a deterministic simulated network.

Randomised runs (``run_chaos``) check the safety properties over many seeds
with drops, duplicates, reordering, partitions (including one-way cuts),
crashes and restarts; targeted scenarios check PreVote, CheckQuorum,
leadership transfer, ReadIndex, snapshots, the lease facts and the bug-class
flags. A few tests break the core on purpose to show the checks have teeth.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from raft_sim import SafetyViolation, Sim, run_chaos
from system.raft import (FOLLOWER, LEADER, PRE_CANDIDATE, AppendEntries,
                         AppendResponse, Entry, HardState, Heartbeat, HeartbeatResponse,
                         InstallSnapshot, Message, NotLeader, RaftConfig, RaftNode, Snapshot,
                         StorageState, TimeoutNow, VoteRequest, VoteResponse, message_from_wire)
from system.raft.log import RaftLog

TICK = 10.0
HB = 2           # heartbeat ticks in the simulations
ELECTION = 10    # election ticks in the simulations (100 ms)
ELECTION_MS = ELECTION * TICK


def drain(node: RaftNode):
    rd = node.ready()
    node.advance(rd)
    return rd


# --------------------------------------------------------------------------
# Randomised safety runs


CHAOS_TICKS = 2000


@pytest.mark.parametrize("first", range(0, 150, 25))
def test_chaos_3_nodes(first):
    reports = [run_chaos(seed, 3, CHAOS_TICKS) for seed in range(first, first + 25)]
    _check_exercised(reports)


@pytest.mark.parametrize("first", range(1000, 1060, 20))
def test_chaos_5_nodes(first):
    reports = [run_chaos(seed, 5, CHAOS_TICKS) for seed in range(first, first + 20)]
    _check_exercised(reports)


def _check_exercised(reports):
    # The runs must actually have exercised what they claim to check.
    assert sum(r.acked for r in reports) > 100 * len(reports)
    assert sum(r.elections for r in reports) > 2 * len(reports)
    assert sum(r.crashes for r in reports) > 0
    assert sum(r.snapshots_installed for r in reports) > 0
    assert sum(r.transfers for r in reports) > 0
    assert sum(r.reads for r in reports) > 0
    assert max(r.heal_to_commit_ms for r in reports) < 3000


def test_checker_catches_votes_for_stale_logs(monkeypatch):
    """Granting votes regardless of log up-to-dateness must be caught."""
    monkeypatch.setattr(RaftLog, "is_up_to_date", lambda self, li, lt: True)
    with pytest.raises(SafetyViolation):
        for seed in range(20):
            run_chaos(seed, 3, CHAOS_TICKS)


def test_checker_catches_reads_without_quorum(monkeypatch):
    """A ReadIndex answered without the quorum round must be caught."""
    from system.raft.core import ReadState

    def register(self, ctx):
        self._read_states.append(ReadState(ctx, self.log.committed))
    monkeypatch.setattr(RaftNode, "_register_read", register)
    with pytest.raises(SafetyViolation, match="ReadIndex"):
        for seed in range(20):
            run_chaos(seed, 3, CHAOS_TICKS)


# --------------------------------------------------------------------------
# Basic operation, restarts


def test_single_node_commits_and_reads_at_once():
    sim = Sim(1, seed=1)
    lead = sim.stable_leader()
    idx = sim.propose(lead, b"x")
    sim.run(5)
    assert sim.acked[b"x"] == idx
    node = sim.nodes[lead].raft
    assert sim.read(lead, "r")
    sim.run(5)
    assert sim.read_results["r"] >= idx
    assert node.quorum_ack_time("sent") == sim.now


def test_replication_in_order_on_every_node():
    sim = Sim(3, seed=2)
    lead = sim.stable_leader()
    datas = [b"v%d" % k for k in range(50)]
    for d in datas:
        sim.propose(lead, d)
    sim.run(500)
    for nd in sim.nodes.values():
        assert [d for _, d in nd.applied_data] == datas
    sim.check_convergence()
    assert len(sim.leaders) == 1


def test_restart_of_every_node_from_persisted_state():
    sim = Sim(3, seed=3)
    lead = sim.stable_leader()
    for k in range(30):
        sim.propose(lead, b"a%d" % k)
    sim.run(300)
    assert len(sim.acked) == 30
    terms = {i: nd.raft.term for i, nd in sim.nodes.items()}
    for i in sim.ids:
        sim.crash(i)
    sim.run(500)
    for i in sim.ids:
        sim.restart(i)
        nd = sim.nodes[i]
        assert nd.raft.term == terms[i]                  # term and vote survive
        assert nd.raft.log.last_index() >= 31            # so does the log
    new = sim.stable_leader()
    sim.propose(new, b"after")
    sim.run(300)
    sim.check_convergence()
    sim.check_acknowledged()
    for nd in sim.nodes.values():   # the committed prefix was re-applied after restart
        assert [d for _, d in nd.applied_data][:30] == [b"a%d" % k for k in range(30)]


def test_crash_loses_what_was_not_persisted():
    sim = Sim(3, seed=4, io_delay=(30.0, 30.0))
    lead = sim.stable_leader()
    idx = sim.propose(lead, b"doomed")
    assert sim.nodes[lead].raft.log.last_index() == idx
    sim.crash(lead)     # before its Ready was persisted (and so before any send)
    assert sim.nodes[lead].durable.last_index() < idx
    sim.restart(lead)
    assert sim.nodes[lead].raft.log.last_index() < idx
    sim.stable_leader()
    sim.run(500)
    assert all(d != b"doomed" for _, d in sim.committed.values())
    assert b"doomed" not in sim.acked


# --------------------------------------------------------------------------
# Figure 8: only entries of the current term are committed by counting


def _figure8_abc(sim: Sim) -> None:
    s1, s2, s3, s4, s5 = sim.ids
    sim.nodes[s1].raft.campaign()
    sim.run(100)
    assert sim.leader() == s1
    sim.run(100)
    # (a) s1 (term 1) replicates index 2 to s2 only.
    for o in (s3, s4, s5):
        sim.cut.add((s1, o))
    sim.propose(s1, b"x")
    sim.run(100)
    assert sim.nodes[s2].raft.log.last_index() == 2
    # (b) s1 crashes; s5 wins term 2 with s3, s4 and crashes before replicating.
    sim.crash(s1)
    sim.heal()
    sim.cut.update({(s5, s2), (s2, s5)})
    sim.nodes[s5].raft.campaign()
    assert sim.run_until(lambda: sim.leader() == s5, 100)
    sim.isolate(s5)
    sim.run(50)
    sim.crash(s5)
    sim.heal()
    # (c) s1 restarts, wins a later term, replicates index 2 (term 1) to s3
    # but its own no-op (index 3) reaches nobody.
    sim.restart(s1)

    def strip_noop(m):
        if isinstance(m, AppendEntries) and m.src == s1:
            return dataclasses.replace(m, entries=[e for e in m.entries if e.index < 3])
        return True
    sim.msg_filter = strip_noop
    while sim.leader() != s1:
        sim.nodes[s1].raft.campaign()
        sim.run(50)
    sim.run_until(lambda: sim.nodes[s1].sm_index >= 2, 300)


def _figure8_d(sim: Sim) -> None:
    s1, s5 = sim.ids[0], sim.ids[4]
    # (d) s1 crashes; s5 comes back and wins with s2, s3, s4 (its last term
    # 2 beats their 1) and overwrites index 2.
    sim.crash(s1)
    sim.msg_filter = None
    sim.restart(s5)
    while sim.leader() != s5:
        sim.nodes[s5].raft.campaign()
        sim.run(50)
    sim.run(300)


def _figure8_sim(**raft_kw) -> Sim:
    return Sim(5, seed=8, election_ticks=10_000, heartbeat_ticks=2, pre_vote=False,
               check_quorum=False, max_append_entries=1, delay=(1.0, 2.0), io_delay=(0.0, 0.0),
               **raft_kw)


def test_figure8_previous_term_entry_is_not_committed_by_counting():
    sim = _figure8_sim()
    _figure8_abc(sim)
    s1, s2, s3 = sim.ids[:3]
    # A majority holds index 2 (term 1), but s1 leads a later term and has
    # no entry of its own on a majority: it must not commit index 2.
    assert [sim.nodes[i].node.log.term(2) for i in (s1, s2, s3)] == [1, 1, 1]
    assert sim.nodes[s1].node.term > 2 and sim.nodes[s1].node.commit == 1
    _figure8_d(sim)
    # Index 2 was overwritten by s5's entry (term 2): safe, because it was
    # never reported committed (s1 never applied it).
    assert sim.committed[2][0] == 2
    assert sim.nodes[s2].node.log.term(2) == 2
    assert b"x" not in sim.acked


def test_figure8_commit_previous_term_flag_loses_an_acknowledged_entry():
    """The ``commit-previous-term`` bug flag: the same run, but s1 commits
    index 2 by counting its replicas, applies it and answers its client --
    and s5 then overwrites it."""
    sim = _figure8_sim(commit_previous_term=True)
    _figure8_abc(sim)
    s1 = sim.ids[0]
    assert sim.nodes[s1].node.commit == 2 and sim.acked[b"x"] == 2
    with pytest.raises(SafetyViolation, match="leader completeness: n4 .* term 2 at committed "
                                              "index 2 \\(term 1\\)"):
        _figure8_d(sim)


# --------------------------------------------------------------------------
# PreVote, CheckQuorum, leader stickiness


@pytest.mark.parametrize("pre_vote", [True, False])
def test_prevote_keeps_a_rejoining_node_from_disrupting(pre_vote):
    sim = Sim(3, seed=5, pre_vote=pre_vote)
    lead = sim.stable_leader()
    term = sim.nodes[lead].raft.term
    f = next(i for i in sim.ids if i != lead)
    sim.isolate(f)
    sim.run(30 * ELECTION_MS)
    if pre_vote:
        assert sim.nodes[f].raft.term == term          # pre-candidates do not bump terms
        assert sim.nodes[f].raft.role == PRE_CANDIDATE
    else:
        assert sim.nodes[f].raft.term > term + 5
    sim.heal()
    sim.run(20 * ELECTION_MS)
    new = sim.stable_leader()
    if pre_vote:
        assert (new, sim.nodes[new].raft.term) == (lead, term)
        assert len(sim.leader_log) == 1
    else:
        assert sim.nodes[new].raft.term > term         # the rejoining node disrupted the term


def test_check_quorum_isolated_leader_steps_down_within_two_election_timeouts():
    """As etcd/raft: the quorum is checked once per election timeout, so an
    isolated leader steps down one to two election timeouts after its last
    quorum contact."""
    sim = Sim(3, seed=6)
    lead = sim.stable_leader()
    sim.run(3 * ELECTION_MS)
    t0 = sim.now
    sim.isolate(lead)
    assert sim.read(lead, "iso")
    node = sim.nodes[lead]
    assert sim.run_until(lambda: node.raft.role != LEADER, 3 * ELECTION_MS)
    took = sim.now - t0
    assert (ELECTION - HB - 1) * TICK <= took <= 2 * ELECTION_MS + TICK
    sim.run(50)
    assert "iso" in node.dropped and "iso" not in node.reads     # the read failed
    assert node.raft.quorum_ack_time("sent") is None


def test_without_check_quorum_an_isolated_leader_stays_leader():
    sim = Sim(3, seed=6, check_quorum=False)
    lead = sim.stable_leader()
    sim.isolate(lead)
    assert sim.read(lead, "iso")
    sim.run(20 * ELECTION_MS)
    node = sim.nodes[lead]
    assert node.raft.role == LEADER                   # the no-check-quorum bug class
    others = [i for i in sim.ids if i != lead]
    assert any(sim.nodes[i].raft.role == LEADER for i in others)  # and a newer leader exists
    assert "iso" not in node.reads and "iso" not in node.dropped  # the read never completes


def _follower_of_a() -> RaftNode:
    cfg = RaftConfig(id="b", peers=["a", "b", "c"], heartbeat_ticks=2, election_ticks=10)
    b = RaftNode(cfg, rng=random.Random(1))
    b.step(Heartbeat(1, "a", "b", commit=0, seq=1, ts=0.0))
    drain(b)
    assert (b.term, b.lead) == (1, "a")
    return b


def test_leader_stickiness_refuses_votes_while_the_leader_is_live():
    b = _follower_of_a()
    # c asks for term 2 while a is live: ignored, no term bump, no answer.
    b.step(VoteRequest(2, "c", "b", last_index=0, last_term=0))
    b.step(VoteRequest(2, "c", "b", last_index=0, last_term=0, pre=True))
    rd = drain(b)
    assert b.term == 1 and rd.messages == []
    # Once a has been silent for an election timeout, the pre-vote is
    # granted (without bumping b's term).
    for _ in range(ELECTION):
        b.tick()
    b.step(VoteRequest(2, "c", "b", last_index=0, last_term=0, pre=True))
    rd = drain(b)
    (resp,) = [m for m in rd.messages if isinstance(m, VoteResponse) and m.dst == "c"]
    assert resp.granted and resp.pre and resp.term == 2 and b.term == 1


def test_forced_vote_bypasses_stickiness():
    b = _follower_of_a()
    b.step(VoteRequest(2, "c", "b", last_index=0, last_term=0, force=True))
    rd = drain(b)
    assert b.term == 2 and b.vote == "c"
    assert rd.hard_state == HardState(2, "c", 0) and rd.must_sync
    assert [type(m) for m in rd.messages] == [VoteResponse] and rd.messages[0].granted


#: Without leader stickiness (no PreVote, no CheckQuorum), which would have a
#: node that has just started refuse every vote for an election timeout.
UNSTICKY = {"pre_vote": False, "check_quorum": False}


def test_vote_needs_an_up_to_date_log():
    st = StorageState(HardState(2, None, 0), [Entry(1, 1, b"a"), Entry(2, 2, b"b")])
    n = RaftNode(RaftConfig(id="b", peers=["a", "b", "c"], heartbeat_ticks=2, election_ticks=10,
                            **UNSTICKY), st, random.Random(0))
    n.step(VoteRequest(3, "a", "b", last_index=5, last_term=1))   # longer but older
    rd = drain(n)
    assert not rd.messages[0].granted and n.term == 3 and n.vote is None
    n.step(VoteRequest(3, "c", "b", last_index=2, last_term=2))
    rd = drain(n)
    assert rd.messages[0].granted and n.vote == "c"
    n.step(VoteRequest(3, "a", "b", last_index=9, last_term=3))   # one vote per term
    assert not drain(n).messages[0].granted


# --------------------------------------------------------------------------
# Leadership transfer


def test_transfer_moves_leadership_to_the_target():
    gens = []
    sim = Sim(3, seed=7)
    lead = sim.stable_leader()
    node = sim.nodes[lead].raft
    node._on_lease_invalidated = lambda gen, why: gens.append((gen, why))
    sim.run(100)
    assert node.quorum_ack_time("sent") is not None
    gen = node.lease_generation
    target = next(i for i in sim.ids if i != lead)
    term = node.term
    node.transfer_leadership(target)
    # The target was up to date: TimeoutNow went at once; the lease is void.
    assert gens == [(gen + 1, "transfer")] and node.quorum_ack_time("sent") is None
    with pytest.raises(NotLeader) as exc:
        node.propose(b"during")
    assert exc.value.leader_hint == target
    sim._io(sim.nodes[lead])
    t0 = sim.now
    assert sim.run_until(lambda: sim.leader() == target, ELECTION_MS)
    assert sim.now - t0 < ELECTION_MS / 2          # no election timeout waited for
    assert sim.nodes[target].raft.term == term + 1
    sim.run(20)
    assert node.role == FOLLOWER and gens[-1][1] == "step-down"


def test_transfer_to_a_lagging_target_catches_it_up_first():
    sim = Sim(3, seed=9)
    lead = sim.stable_leader()
    target = next(i for i in sim.ids if i != lead)
    sim.isolate(target)
    for k in range(20):
        sim.propose(lead, b"t%d" % k)
    sim.run(200)
    last = sim.nodes[lead].raft.log.last_index()
    assert sim.nodes[target].raft.log.last_index() < last
    sim.heal()
    sim.nodes[lead].raft.transfer_leadership(target)
    sim._io(sim.nodes[lead])
    assert sim.run_until(lambda: sim.leader() == target, 3 * ELECTION_MS)
    assert sim.nodes[target].raft.log.term(last) is not None
    sim.propose(target, b"new")
    sim.run(200)
    sim.check_acknowledged()
    assert b"new" in sim.acked


def test_transfer_to_a_dead_target_is_abandoned():
    sim = Sim(3, seed=10)
    lead = sim.stable_leader()
    target = next(i for i in sim.ids if i != lead)
    sim.crash(target)
    sim.run(50)
    for k in range(3):
        sim.propose(lead, b"d%d" % k)
    node = sim.nodes[lead].raft
    node.transfer_leadership(target)
    assert node.transfer_target == target
    sim.run(ELECTION_MS + 2 * TICK)
    assert node.role == LEADER and node.transfer_target is None
    assert sim.propose(lead, b"again") is not None


@pytest.mark.parametrize("survives", [False, True])
def test_lease_survives_transfer_flag(survives):
    sim = Sim(3, seed=11, lease_survives_transfer=survives)
    lead = sim.stable_leader()
    sim.run(100)
    node = sim.nodes[lead].raft
    gen, before = node.lease_generation, node.quorum_ack_time("sent")
    node.transfer_leadership(next(i for i in sim.ids if i != lead))
    if survives:   # the bug class: the old leader keeps its lease facts
        assert node.lease_generation == gen and node.quorum_ack_time("sent") == before
    else:
        assert node.lease_generation == gen + 1 and node.quorum_ack_time("sent") is None
    assert sim.run_until(lambda: node.role != LEADER, 200)
    # ... and still keeps them once the target has taken over
    kept = node.quorum_ack_time("sent")
    assert (kept is not None and kept >= before) if survives else kept is None
    assert (node.lease_generation == gen) if survives else (node.lease_generation > gen)


# --------------------------------------------------------------------------
# ReadIndex


def test_read_index_covers_every_acknowledged_write():
    sim = Sim(3, seed=12)
    lead = sim.stable_leader()
    for k in range(10):
        idx = sim.propose(lead, b"w%d" % k)
        assert sim.run_until(lambda: b"w%d" % k in sim.acked, 200)
        assert sim.read(lead, k)
        assert sim.run_until(lambda: k in sim.read_results, 200)
        assert sim.read_results[k] >= idx
    follower = next(i for i in sim.ids if i != lead)
    with pytest.raises(NotLeader) as exc:
        sim.nodes[follower].raft.read_index("f")
    assert exc.value.leader_hint == lead


def test_read_index_needs_acks_of_messages_sent_after_the_read():
    cfg = RaftConfig(id="a", peers=["a", "b", "c"], heartbeat_ticks=2, election_ticks=10)
    a = RaftNode(cfg, rng=random.Random(0))
    a.campaign()
    a.step(VoteResponse(1, "b", "a", granted=True, pre=True))
    a.step(VoteResponse(1, "b", "a", granted=True))
    assert a.role == LEADER
    rd = drain(a)
    app = [m for m in rd.messages if isinstance(m, AppendEntries) and m.dst == "b"][0]
    a.step(AppendResponse(1, "b", "a", success=True, index=1, seq=app.seq, ts=app.ts))
    drain(a)
    assert a.commit == 1
    a.read_index("r")
    # An acknowledgement of a message sent before the read does not count.
    a.step(HeartbeatResponse(1, "b", "a", seq=app.seq, ts=app.ts))
    rd = drain(a)
    assert rd.read_states == []
    hb = [m for m in rd.messages if isinstance(m, Heartbeat) and m.dst == "c"][0]
    a.step(HeartbeatResponse(1, "c", "a", seq=hb.seq, ts=hb.ts))
    rd = drain(a)
    assert [(r.ctx, r.index) for r in rd.read_states] == [("r", 1)]


@pytest.mark.parametrize("noop_before_reads", [True, False])
def test_new_leader_reads_wait_for_its_noop(noop_before_reads):
    """The no-noop-read bug class: a new leader that has not committed an
    entry of its term may not know the latest commit index."""
    sim = Sim(3, seed=13, noop_before_reads=noop_before_reads, io_delay=(0.0, 0.0),
              delay=(2.0, 4.0))
    old = sim.stable_leader()
    sim.run(100)
    sim.stale_read = lambda n, rs, floor: stale.append((rs.index, floor))
    stale: list = []
    idx = sim.propose(old, b"x")
    # Cut the old leader off the moment it commits x, before any follower
    # hears the new commit index.
    assert sim.run_until(lambda: sim.nodes[old].raft.commit >= idx, 100)
    sim.isolate(old)
    assert sim.run_until(lambda: b"x" in sim.acked, 10)      # the client has its answer
    assert b"x" in sim.acked and all(sim.nodes[i].raft.commit < idx for i in sim.ids if i != old)
    others = [i for i in sim.ids if i != old]
    assert sim.run_until(lambda: any(sim.nodes[i].raft.role == LEADER for i in others),
                         5 * ELECTION_MS)
    new = next(i for i in others if sim.nodes[i].raft.role == LEADER)
    assert sim.read(new, "r")
    assert sim.run_until(lambda: "r" in sim.read_results, ELECTION_MS)
    if noop_before_reads:
        assert sim.read_results["r"] > idx and stale == []
    else:
        assert sim.read_results["r"] < idx and stale == [(sim.read_results["r"], idx)]


# --------------------------------------------------------------------------
# Replication mechanics


def test_conflicting_suffix_is_truncated_and_reported():
    st = StorageState(HardState(2, "x", 1),
                      [Entry(1, 1, b"a"), Entry(2, 1, b"b"), Entry(3, 2, b"c"), Entry(4, 2, b"d")])
    n = RaftNode(RaftConfig(id="b", peers=["a", "b", "c"], heartbeat_ticks=2, election_ticks=10),
                 st, random.Random(0))
    n.step(AppendEntries(3, "a", "b", prev_index=2, prev_term=1,
                         entries=[Entry(3, 3, b"C")], commit=3, seq=5, ts=1.0))
    rd = drain(n)
    assert rd.truncate_from == 3 and rd.entries == [Entry(3, 3, b"C")] and rd.must_sync
    assert [e.index for e in rd.committed_entries] == [1, 2, 3]
    (resp,) = rd.messages
    assert isinstance(resp, AppendResponse) and resp.success and resp.index == 3
    assert (resp.seq, resp.ts) == (5, 1.0)
    assert n.log.last_index() == 3 and n.log.term(3) == 3


def test_rejection_hint_skips_a_whole_divergent_term():
    sim = Sim(3, seed=14, check_quorum=False, max_append_entries=8)
    old = sim.stable_leader()
    sim.isolate(old)
    for k in range(50):
        sim.propose(old, b"lost%d" % k)            # 50 uncommitted entries
    sim.run(10 * ELECTION_MS)
    others = [i for i in sim.ids if i != old]
    assert sim.run_until(lambda: any(sim.nodes[i].raft.role == LEADER for i in others), 2000)
    new = next(i for i in others if sim.nodes[i].raft.role == LEADER)
    for k in range(30):                             # a longer log of a newer term
        sim.propose(new, b"kept%d" % k)
    sim.run(300)
    rejections = []

    def count(m):
        if isinstance(m, AppendResponse) and m.src == old and not m.success:
            rejections.append(m)
        return True
    sim.msg_filter = count
    sim.heal()
    sim.run(10 * ELECTION_MS)
    assert sim.nodes[old].raft.log.term(sim.nodes[old].raft.log.last_index()) == \
        sim.nodes[new].raft.term
    sim.check_convergence()
    # one probe per divergent term, not one per entry (30 without the hint)
    assert 1 <= len(rejections) <= 3
    assert not any(d.startswith(b"lost") for _, d in sim.committed.values())


def test_batching_and_pipelining_respect_their_limits():
    sim = Sim(3, seed=15, max_append_entries=4, max_inflight=3, delay=(20.0, 30.0))
    lead = sim.stable_leader(10_000)
    sizes, inflight = [], []

    def measure(m):
        if isinstance(m, AppendEntries):
            sizes.append(len(m.entries))
        return True
    sim.msg_filter = measure
    node = sim.nodes[lead].raft
    for k in range(60):
        sim.propose(lead, b"p%d" % k)
    t0 = sim.now
    while len(sim.acked) < 60 and sim.now - t0 < 5000:
        sim.run(1)
        inflight.append(max(len(node._prs[p].inflight) for p in sim.ids if p != lead))
    assert len(sim.acked) == 60
    assert max(sizes) == 4
    assert max(inflight) == 3
    # 60 entries, 4 per message, 3 in flight per ~50 ms round trip: well
    # under 60 round trips.
    assert sim.now - t0 < 20 * 50


# --------------------------------------------------------------------------
# Snapshots and compaction


def test_lagging_node_catches_up_by_snapshot():
    sim = Sim(3, seed=16, compact_every=10, compaction_margin=2)
    lead = sim.stable_leader()
    lag = next(i for i in sim.ids if i != lead)
    sim.isolate(lag)
    for k in range(60):
        sim.propose(lead, b"s%d" % k)
    sim.run(300)
    leader_log = sim.nodes[lead].raft.log
    assert leader_log.offset > sim.nodes[lag].raft.log.last_index()   # entries it needs are gone
    sim.heal()
    target = sim.nodes[lead].sm_index
    assert sim.run_until(lambda: sim.nodes[lag].sm_index >= target, 10 * ELECTION_MS)
    assert sim.nodes[lag].snapshots_installed >= 1
    assert sim.nodes[lag].durable.snapshot is not None
    sim.check_convergence()
    # and it restarts from the installed snapshot
    sim.crash(lag)
    sim.restart(lag)
    assert sim.nodes[lag].raft.log.snapshot is not None
    sim.propose(lead, b"after")
    sim.run(300)
    sim.check_convergence()


def test_async_apply_hands_entries_over_once_and_applied_follows_the_driver():
    """With ``async_apply`` an advanced Ready only hands its committed entries
    over: ``applied`` (which compaction relies on) moves only as the driver
    reports its apply, and no entry is handed over twice meanwhile."""
    cfg = RaftConfig(id="a", peers=["a"], heartbeat_ticks=2, election_ticks=10,
                     snapshot_threshold=3, async_apply=True)
    a = RaftNode(cfg, rng=random.Random(0))
    a.campaign()
    for k in range(4):
        a.propose(b"c%d" % k)
    rd = drain(a)
    assert [e.index for e in rd.committed_entries] == [1, 2, 3, 4, 5]
    assert a.applied == 0 and not a.has_ready() and not a.compaction_due()
    with pytest.raises(ValueError):
        a.compact(3, b"")              # handed over, not applied
    with pytest.raises(ValueError):
        a.applied_to(6)                # never handed over
    a.applied_to(3)
    assert a.applied == 3 and a.compaction_due() and a.compact(3, b"state@3").index == 3
    a.propose(b"c4")
    assert [e.index for e in drain(a).committed_entries] == [6]
    a.applied_to(6)
    assert a.applied == 6


def test_compact_rules_and_recovery_with_a_margin():
    cfg = RaftConfig(id="a", peers=["a"], heartbeat_ticks=2, election_ticks=10,
                     snapshot_threshold=5, compaction_margin=3)
    a = RaftNode(cfg, rng=random.Random(0))
    a.campaign()
    for k in range(9):
        a.propose(b"c%d" % k)
    assert not a.compaction_due()
    with pytest.raises(ValueError):
        a.compact(5, b"")              # nothing applied yet
    rd = drain(a)
    assert a.applied == 10 and a.compaction_due()
    snap = a.compact(8, b"state@8")
    assert (snap.index, snap.term) == (8, 1)
    assert a.log.first_index() == 6 and a.log.term(5) == 1 and a.log.term(4) is None
    with pytest.raises(ValueError):
        a.compact(8, b"")
    # restart from the snapshot and a log that overlaps it
    b = RaftNode(cfg, StorageState(rd.hard_state, [e for e in rd.entries if e.index >= 6], snap),
                 random.Random(0))
    assert b.log.first_index() == 7 and b.log.last_index() == 10 and b.applied == 8
    rd2 = b.ready()
    assert [e.index for e in rd2.committed_entries] == [9, 10]
    with pytest.raises(ValueError):
        RaftNode(cfg, StorageState(HardState(1, "a", 0), [Entry(9, 1)], Snapshot(5, 1)))
    with pytest.raises(ValueError):
        RaftNode(cfg, StorageState(HardState(2, "a", 0), [Entry(5, 2), Entry(6, 2)], Snapshot(5, 1)))


# --------------------------------------------------------------------------
# Lease facts


def _sample(sim, node, ms):
    out = []
    end = sim.now + ms
    while sim.now < end:
        sim.run(1)
        out.append((sim.now, node.quorum_ack_time("sent"), node.quorum_ack_time("received")))
    return out


def test_quorum_ack_time_is_monotone_and_stops_on_an_isolated_leader():
    sim = Sim(3, seed=17, check_quorum=False, delay=(1.0, 8.0))
    lead = sim.stable_leader()
    node = sim.nodes[lead].raft
    healthy = _sample(sim, node, 1000)
    sent = [s for _, s, _ in healthy]
    recv = [r for _, _, r in healthy]
    assert None not in sent and sent == sorted(sent) and recv == sorted(recv)
    assert all(r >= s for _, s, r in healthy)
    # fresh: within a heartbeat interval plus a round trip of now
    # (heartbeat interval + two 8 ms hops + up to 2 ms of I/O at each end)
    assert all(now - s <= HB * TICK + 2 * (8.0 + 2.0) + 2 for now, s, _ in healthy)
    # Isolated for less than the followers' election timeout: the facts
    # freeze at (or before) the isolation, then resume after healing.
    t_iso = sim.now
    sim.isolate(lead)
    isolated = _sample(sim, node, ELECTION_MS - 10)
    assert node.role == LEADER
    assert len({s for _, s, _ in isolated}) == 1 and isolated[-1][1] <= t_iso
    assert len({r for _, _, r in isolated}) == 1 and isolated[-1][2] <= t_iso
    sim.heal()
    resumed = _sample(sim, node, 100)
    assert node.role == LEADER and resumed[-1][1] > t_iso
    assert [s for _, s, _ in resumed] == sorted(s for _, s, _ in resumed)


def test_quorum_ack_time_is_the_quorum_th_largest():
    sim = Sim(5, seed=18, check_quorum=False)
    lead = sim.stable_leader()
    node = sim.nodes[lead].raft
    others = [i for i in sim.ids if i != lead]
    for o in others[:2]:                 # two followers cut off: a quorum of 3 remains
        sim.isolate(o)
    sim.run(100)
    t = sim.now
    sim.run(200)
    assert node.quorum_ack_time("sent") > t
    sim.isolate(others[2])               # now only 2 of 5
    t = sim.now
    sim.run(200)
    assert node.quorum_ack_time("sent") <= t


def test_step_down_invalidates_the_lease():
    calls = []
    sim = Sim(3, seed=19)
    lead = sim.stable_leader()
    node = sim.nodes[lead].raft
    node._on_lease_invalidated = lambda gen, why: calls.append((gen, why))
    gen = node.lease_generation
    sim.isolate(lead)
    sim.run(2 * ELECTION_MS)
    assert node.role != LEADER
    assert calls == [(gen + 1, "step-down")] and node.lease_generation == gen + 1
    assert node.quorum_ack_time("sent") is None
    st = node.status()
    assert st["lease_generation"] == gen + 1 and st["quorum_ack_sent"] is None


# --------------------------------------------------------------------------
# Interface: Ready contract, errors, status, wire format


def test_a_node_that_just_started_votes_for_no_one_for_an_election_timeout():
    # Before a crash it may have acknowledged a heartbeat whose lease still
    # holds; voting at once after a quick restart could elect a second leader
    # inside that lease.
    n = RaftNode(RaftConfig(id="b", peers=["a", "b", "c"], heartbeat_ticks=2, election_ticks=10),
                 rng=random.Random(0))
    for _ in range(9):
        n.tick()
    n.step(VoteRequest(5, "a", "b", last_index=0, last_term=0))
    assert not any(isinstance(m, VoteResponse) and m.granted for m in drain(n).messages)
    assert n.term == 0
    n.tick()
    n.step(VoteRequest(n.term + 5, "a", "b", last_index=0, last_term=0))
    assert any(isinstance(m, VoteResponse) and m.granted for m in drain(n).messages)
    # a leadership transfer (TimeoutNow) is obeyed at once all the same
    fresh = RaftNode(RaftConfig(id="c", peers=["a", "b", "c"], heartbeat_ticks=2,
                                election_ticks=10), rng=random.Random(0))
    fresh.step(VoteRequest(5, "a", "c", last_index=0, last_term=0, force=True))
    assert any(isinstance(m, VoteResponse) and m.granted for m in drain(fresh).messages)


def test_ready_contract():
    n = RaftNode(RaftConfig(id="b", peers=["a", "b", "c"], heartbeat_ticks=2, election_ticks=10,
                            **UNSTICKY), rng=random.Random(0))
    assert not n.has_ready()
    n.step(VoteRequest(1, "a", "b", last_index=0, last_term=0))
    assert n.has_ready()
    rd = n.ready()
    # the vote and its answer come in one Ready: persist (fsync), then send
    assert rd.hard_state == HardState(1, "a", 0) and rd.must_sync
    assert isinstance(rd.messages[0], VoteResponse) and rd.messages[0].granted
    with pytest.raises(RuntimeError):
        n.ready()
    assert not n.has_ready()
    n.step(Heartbeat(1, "a", "b", commit=0, seq=1, ts=0.0))   # inputs between ready and advance
    n.advance(rd)
    rd2 = n.ready()
    assert rd2.hard_state is None and not rd2.must_sync
    assert rd2.soft_state is not None and rd2.soft_state.leader == "a"
    assert isinstance(rd2.messages[0], HeartbeatResponse)
    with pytest.raises(RuntimeError):
        n.advance(rd)


def test_errors_and_status():
    with pytest.raises(ValueError):
        RaftConfig(id="z", peers=["a", "b"])
    with pytest.raises(ValueError):
        RaftConfig(id="a", peers=["a", "b"], heartbeat_ticks=10, election_ticks=10)
    sim = Sim(3, seed=20)
    lead = sim.stable_leader()
    follower = next(i for i in sim.ids if i != lead)
    with pytest.raises(NotLeader) as exc:
        sim.nodes[follower].raft.propose(b"x")
    assert exc.value.leader_hint == lead
    with pytest.raises(ValueError):
        sim.nodes[lead].raft.propose(b"")
    with pytest.raises(ValueError):
        sim.nodes[lead].raft.transfer_leadership("nobody")
    sim.propose(lead, b"y")
    sim.run(100)
    st = sim.nodes[lead].raft.status()
    assert st["role"] == LEADER and st["leader"] == lead
    assert st["commit"] == st["applied"] == st["last_index"] >= 2 and st["transfer_target"] is None
    assert st["quorum_ack_sent"] <= st["quorum_ack_received"] <= sim.now
    assert set(st["progress"]) == set(sim.ids) - {lead}
    assert sim.nodes[follower].raft.status()["role"] == FOLLOWER


def _all_messages() -> list[Message]:
    snap = Snapshot(7, 3, b"\x00state", ("a", "b", "c"))
    return [
        VoteRequest(4, "a", "b", last_index=9, last_term=3, pre=True, force=False),
        VoteRequest(4, "a", "b", last_index=9, last_term=3, pre=False, force=True),
        VoteResponse(5, "b", "a", granted=True, pre=True),
        AppendEntries(4, "a", "b", prev_index=2, prev_term=1,
                      entries=[Entry(3, 4, b"x"), Entry(4, 4, b"")], commit=2, seq=11, ts=12.5),
        AppendResponse(4, "b", "a", success=False, index=2, hint_index=1, hint_term=None,
                       seq=11, ts=12.5),
        AppendResponse(4, "b", "a", success=True, index=4, hint_index=0, hint_term=3, seq=1, ts=0.0),
        Heartbeat(4, "a", "b", commit=2, seq=12, ts=13.0),
        HeartbeatResponse(4, "b", "a", seq=12, ts=13.0),
        InstallSnapshot(4, "a", "b", snapshot=snap, seq=13, ts=14.0),
        TimeoutNow(4, "a", "b"),
    ]


def _plain(obj) -> bool:
    if isinstance(obj, list):
        return all(_plain(x) for x in obj)
    return obj is None or isinstance(obj, (bool, int, float, str, bytes))


def test_wire_form_is_plain_and_round_trips():
    msgs = _all_messages()
    assert {type(m) for m in msgs} == {VoteRequest, VoteResponse, AppendEntries, AppendResponse,
                                       Heartbeat, HeartbeatResponse, InstallSnapshot, TimeoutNow}
    for m in msgs:
        wire = m.to_wire()
        assert _plain(wire)
        back = message_from_wire(wire)
        assert back == m and type(back) is type(m)
        assert Message.from_wire(wire) == m
    with pytest.raises(ValueError):
        Heartbeat.from_wire(msgs[0].to_wire())
    for bad in ([], [99, 1, "a", "b"], [3, 1, "a", "b", 0, 0, 0, 0, 0.0, [1, 10**9]], "x", [1],
                [6, 1, "a", "b", "seq", 0.0]):
        with pytest.raises(ValueError):
            message_from_wire(bad)


def test_wire_round_trip_through_msgpack():
    msgpack = pytest.importorskip("msgpack")
    msgs = _all_messages()
    for m in msgs:
        raw = msgpack.packb(m.to_wire(), use_bin_type=True)
        assert message_from_wire(msgpack.unpackb(raw, raw=False)) == m
    assert len(msgpack.packb(Heartbeat(4, "n1", "n2", commit=2, seq=12, ts=13.0).to_wire())) < 32
