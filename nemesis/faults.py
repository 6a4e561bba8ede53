"""The fault catalogue: each fault starts, may act while active, and stops.

A fault works on a :class:`Backend` (local processes, docker, ssh), which
knows how to cut links, skew clocks, stop processes and set the store's disk
failpoints on its kind of host.  Randomness comes from the nemesis's seeded
``random.Random``; targets that depend on the cluster's state (the leader,
and the term it leads in) are resolved when the fault starts and recorded,
so a schedule can be read back and replayed.

Each fault is data, as Jepsen's nemesis ops are (:class:`FaultKind`): a
``choose`` that picks its targets, and an ``act`` that carries targets out
from them alone.  A run does both (:data:`FAULTS`); a replay applies the
recorded targets again, as they were or, through :func:`retarget`, aimed at
whoever holds the recorded leader's role now.

Besides the one-node faults, the catalogue has:

* ``kill-majority`` / ``pause-majority`` / ``power-loss``: a majority of
  distinct nodes, the leader among them when there is one, SIGKILLed /
  SIGSTOPped / crashed losing their unsynced writes, all at the window's
  start, and all restarted / resumed when it ends; ``kill-all`` kills every
  node.
* ``deafen-leader``: one-way cuts, nothing the followers send reaches the
  leader while the leader's messages still reach them (its heartbeats keep
  the followers from electing another leader, yet it hears no acknowledgement).
  ``mute-leader``: the reverse, the leader hears the followers but nothing it
  sends reaches them.
* with several Raft groups (``--groups``), faults aimed at the node leading a
  non-default group (one that does not also lead the default group, when
  the groups allow): ``partition-group-leader`` cuts it off from that
  group's other replicas (a store failpoint drops the group's Raft messages
  both ways: every node holds every group, so no network fault cuts one
  group alone), ``kill-group-leader`` kills it, ``transfer-group-leader``
  hands the group to another node.
* ``disk-slow`` (every fsync of the leader, else of a random node, sleeps a
  seeded 50-500 ms) and ``disk-stall`` (the leader's fsyncs block until the
  window ends), ``apply-slow`` (every node but the leader applies each
  committed entry a seeded 5-50 ms slower): through the store's failpoints
  (``POST /failpoint``).

:data:`NEEDS_NODES` says which faults need how many nodes to mean anything;
:func:`check_support` refuses, before a run, a fault the system under test
cannot take.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

#: An ordered pair of nodes ``(src, dst)``: what ``src`` sends ``dst`` is lost.
Cut = tuple[str, str]


class Backend(Protocol):
    node_ids: list[str]
    #: the store's Raft groups; group 0 is the default one
    raft_groups: int

    def leader_term(self, group: int = 0) -> tuple[str, int] | None:
        """The leader of a Raft group and its term, by the nodes' own account;
        ``None`` if none leads."""

    def partition(self, groups: list[list[str]]) -> None:
        """Two nodes can talk iff some group holds both (a bridge node is in two)."""

    def cut(self, cuts: Iterable[Cut]) -> None:
        """What ``src`` sends ``dst`` is lost, for each ``(src, dst)`` in ``cuts``
        (one-way when the reverse pair is absent); replaces the previous partition."""

    def heal_network(self) -> None: ...

    def clock(self, node: str, **op: Any) -> None:
        """``bump=seconds``, ``offset=seconds``, ``rate=r`` or ``reset=True``."""

    def kill(self, node: str) -> None:
        """SIGKILL the node; one already killed is left alone, since its old pid
        may be another process's by now."""

    def restart(self, node: str) -> None:
        """Start a killed or crashed node again on its data; a running one: nothing."""

    def pause(self, node: str) -> None: ...

    def resume(self, node: str) -> None: ...

    def transfer_leadership(self, leader: str, to: str | None = None,
                            group: int = 0) -> str | None: ...

    def set_delay(self, ms: float) -> None: ...

    def set_loss(self, p: float) -> None: ...

    def failpoint(self, node: str, **op: Any) -> None:
        """One store failpoint op (``fsync_delay_ms=ms``, ``fsync_stall=True``, ...);
        ``clear=True`` on a node with none set (never set, or restarted since) asks nothing."""

    def failpoint_settings(self, node: str) -> dict[str, Any] | None:
        """The node's failpoint settings; ``None`` when the store has no failpoints."""

    def crash(self, node: str) -> None:
        """The node loses what it wrote but did not fsync and exits; :meth:`restart`
        brings it back.  A node already down stays down and nothing is asked of it."""


class UnsupportedFault(Exception):
    """A fault the system under test cannot take; the message names the fault."""


#: A fault's targets, as recorded in ``schedule.jsonl`` and the history: plain
#: JSON (lists, not tuples), so that a record read back can be applied again.
Targets = dict[str, Any]
Tick = Callable[[], dict[str, Any] | None]


@dataclass
class Active:
    """A started fault: what it did, so that it can be undone."""

    fault: str
    targets: Targets
    undo: Callable[[], None]
    #: called every ``period`` seconds while the fault is active (strobe, churn)
    tick: Tick | None = None
    period: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Effect:
    """What carrying out targets leaves behind: how to undo it when the window
    ends, and what to do every ``period`` seconds until then."""

    undo: Callable[[], None]
    tick: Tick | None = None
    period: float = 0.0


#: Picks a fault's targets from the seeded rng and the cluster's state (who leads).
Choose = Callable[[Backend, random.Random], Targets]
#: Carries targets out; the rng is for what a fault decides live while active.
Act = Callable[[Backend, Targets, random.Random], Effect]


@dataclass(frozen=True)
class FaultKind:
    """A fault as data, as Jepsen's nemesis ops are: ``choose`` picks the targets
    and ``act`` carries them out.  Kept apart so that the targets of a saved run
    can be applied again without choosing: to the same nodes, or through
    :func:`retarget` to whoever holds the same role now."""

    name: str
    choose: Choose
    act: Act

    def apply(self, b: Backend, targets: Targets, rng: random.Random) -> Active:
        """Carry out ``targets``, chosen just now or read back from a record.
        ``rng`` draws what the fault decides live while active (leader-churn's
        moves: who leads then is not known now); the other faults ignore it."""
        effect = self.act(b, targets, rng)
        return Active(self.name, targets, effect.undo, effect.tick, effect.period)

    def start(self, b: Backend, rng: random.Random) -> Active:
        """Choose, then apply, both from ``rng``: what a run's schedule does."""
        return self.apply(b, self.choose(b, rng), rng)


# What the faults choose.  The draws from ``rng``, and their order, are part of
# a seed's meaning: a seed given again must choose the same targets.

def _leader_or_any(b: Backend, rng: random.Random) -> tuple[str, Targets]:
    """The leader, else a node at random, and how it was picked, for the fault's
    record: ``{"leader": "n3", "term": 7}``, or both ``None`` when none led."""
    found = b.leader_term()
    if found is None:
        return rng.choice(b.node_ids), {"leader": None, "term": None}
    node, term = found
    return node, {"leader": node, "term": term}


def _any_node(b: Backend, rng: random.Random) -> Targets:
    return {"node": rng.choice(b.node_ids)}


def _the_leader(b: Backend, rng: random.Random) -> Targets:
    node, picked = _leader_or_any(b, rng)
    return {"node": node, **picked}


def _majority(b: Backend, rng: random.Random) -> Targets:
    """A majority of distinct nodes (sorted), the leader among them when one
    leads, and how the leader was picked (as :func:`_leader_or_any`)."""
    node, picked = _leader_or_any(b, rng)
    others = [n for n in b.node_ids if n != node]
    return {"nodes": sorted([node, *rng.sample(others, len(b.node_ids) // 2)]), **picked}


def _every_node(b: Backend, rng: random.Random) -> Targets:
    return {"nodes": sorted(b.node_ids)}


def cuts_of(groups: list[list[str]], node_ids: Iterable[str]) -> set[Cut]:
    """The ordered pairs that share no group: a symmetric partition's cuts."""
    ids = list(node_ids)
    return {(a, b) for a in ids for b in ids
            if a != b and not any(a in g and b in g for g in groups)}


def _isolate(b: Backend, node: str) -> list[list[str]]:
    return [[node], [n for n in b.node_ids if n != node]]


def partition_one(b: Backend, rng: random.Random) -> Targets:
    return {"groups": _isolate(b, rng.choice(b.node_ids))}


def partition_leader(b: Backend, rng: random.Random) -> Targets:
    node, picked = _leader_or_any(b, rng)
    return {"groups": _isolate(b, node), **picked}


def partition_halves(b: Backend, rng: random.Random) -> Targets:
    nodes = rng.sample(b.node_ids, len(b.node_ids))
    cut = len(nodes) // 2
    return {"groups": [sorted(nodes[:cut]), sorted(nodes[cut:])]}


def partition_bridge(b: Backend, rng: random.Random) -> Targets:
    """Two halves that cannot talk, and one node that talks to both."""
    nodes = rng.sample(b.node_ids, len(b.node_ids))
    bridge, rest = nodes[0], nodes[1:]
    cut = len(rest) // 2
    return {"groups": [sorted([bridge, *rest[:cut]]), sorted([bridge, *rest[cut:]])]}


def partition_random(b: Backend, rng: random.Random) -> Targets:
    groups: dict[int, list[str]] = {}
    for n in b.node_ids:
        groups.setdefault(rng.randrange(len(b.node_ids)), []).append(n)
    return {"groups": sorted(groups.values())}


def _one_way(b: Backend, rng: random.Random, to_leader: bool) -> Targets:
    node, picked = _leader_or_any(b, rng)
    cuts = sorted((n, node) if to_leader else (node, n) for n in b.node_ids if n != node)
    return {"node": node, "cuts": [list(c) for c in cuts], **picked}


def deafen_leader(b: Backend, rng: random.Random) -> Targets:
    """Nothing the followers send reaches the leader; what it sends reaches them."""
    return _one_way(b, rng, to_leader=True)


def mute_leader(b: Backend, rng: random.Random) -> Targets:
    """Nothing the leader sends reaches the followers; what they send reaches it."""
    return _one_way(b, rng, to_leader=False)


def clock_bump(b: Backend, rng: random.Random) -> Targets:
    """Set the leader's wall clock back by 5-15 s (a wall-clock lease then
    outlives its real duration; a monotonic one does not notice)."""
    node, picked = _leader_or_any(b, rng)
    return {"node": node, "bump_s": -round(rng.uniform(5.0, 15.0), 3), **picked}


def clock_strobe(b: Backend, rng: random.Random) -> Targets:
    """Jump one node's wall clock back and forth every 100 ms."""
    return {"node": rng.choice(b.node_ids), "delta_s": round(rng.uniform(1.0, 10.0), 3)}


def clock_drift(b: Backend, rng: random.Random) -> Targets:
    """The leader's clock (wall, monotonic and timers) runs at half speed: a
    slow oscillator, beyond any assumed drift bound."""
    node, picked = _leader_or_any(b, rng)
    return {"node": node, "rate": round(rng.uniform(0.3, 0.6), 3), **picked}


def _next_move(b: Backend, rng: random.Random) -> dict[str, Any] | None:
    """A leadership move from whoever leads now, with the term it leads in, to
    another node at random; ``None`` when none leads."""
    found = b.leader_term()
    if found is None:
        return None
    leader, term = found
    return {"from": leader, "term": term, "to": rng.choice([n for n in b.node_ids if n != leader])}


def _group_leader(b: Backend, rng: random.Random) -> Targets:
    """A non-default Raft group and the node leading it, picked among the
    groups whose leader does not also lead the default group when there are
    such (the fault must leave the default group's lease whole), with every
    group's leader then: ``{"raft_group": 2, "node": "n3", "leader": "n3",
    "term": 4, "leaders": {"0": "n1", ...}}``.  When no such group has a
    leader, a group and a node at random, leader and term ``None``."""
    found = {g: b.leader_term(g) for g in range(b.raft_groups)}
    leaders = {str(g): lt[0] if lt else None for g, lt in found.items()}
    led = [(g, lt) for g, lt in found.items() if g > 0 and lt is not None]
    pool = [x for x in led if x[1][0] != leaders["0"]] or led
    if not pool:
        return {"raft_group": rng.randrange(1, b.raft_groups), "node": rng.choice(b.node_ids),
                "leader": None, "term": None, "leaders": leaders}
    g, (node, term) = rng.choice(pool)
    return {"raft_group": g, "node": node, "leader": node, "term": term, "leaders": leaders}


def partition_group_leader(b: Backend, rng: random.Random) -> Targets:
    """The group's leader cut off from the group's other replicas (a store
    failpoint: every node holds every group, so no network fault cuts one
    group alone), as a partition does when groups live on different machines."""
    t = _group_leader(b, rng)
    return {**t, "raft_cut_groups": [t["raft_group"]]}


def transfer_group_leader(b: Backend, rng: random.Random) -> Targets:
    t = _group_leader(b, rng)
    return {**t, "to": rng.choice([n for n in b.node_ids if n != t["node"]])}


def leader_churn(b: Backend, rng: random.Random) -> Targets:
    """Hand leadership to another node every second while active.  Only the
    first move is chosen at the start; the others are decided as they come,
    and each records the term its leader led in."""
    return {"first": _next_move(b, rng)}


def delay(b: Backend, rng: random.Random) -> Targets:
    return {"ms": round(rng.uniform(20.0, 200.0), 1)}


def loss(b: Backend, rng: random.Random) -> Targets:
    return {"p": round(rng.uniform(0.05, 0.3), 3)}


def disk_slow(b: Backend, rng: random.Random) -> Targets:
    """Every fsync of a majority, the leader among them, sleeps 50-500 ms: any
    quorum then holds a slow disk, so every commit waits on one, while
    heartbeats, which persist nothing, stay fast."""
    return {**_majority(b, rng), "fsync_delay_ms": rng.randint(50, 500)}


def disk_stall(b: Backend, rng: random.Random) -> Targets:
    """The leader's fsyncs block until the window ends: a disk that hangs rather
    than fails, under a node that stays up and answers."""
    node, picked = _leader_or_any(b, rng)
    return {"node": node, "fsync_stall": True, **picked}


def apply_slow(b: Backend, rng: random.Random) -> Targets:
    """Every node but the leader applies each committed entry 5-50 ms slower:
    followers whose state machine lags their log, so a follower that becomes
    leader (leader churn) holds a backlog of entries its predecessor already
    applied and acknowledged."""
    node, picked = _leader_or_any(b, rng)
    return {"nodes": [n for n in b.node_ids if n != node], **picked,
            "apply_delay_ms": rng.randint(5, 50), "spared": node}


# How the faults act: from the targets alone, never from who leads now, so
# that a recorded fault does to the same nodes what it did then.

def _partition(b: Backend, t: Targets, rng: random.Random) -> Effect:
    b.partition(t["groups"])
    return Effect(b.heal_network)


def _cut(b: Backend, t: Targets, rng: random.Random) -> Effect:
    b.cut([(src, dst) for src, dst in t["cuts"]])  # pairs, where a record has lists
    return Effect(b.heal_network)


#: One backend call on one node, given the fault's targets for its parameters.
NodeOp = Callable[[Backend, str, Targets], None]


def _per_node(do: NodeOp, undo: NodeOp) -> Act:
    """``do`` on every targeted node (``nodes``, or the one ``node``) at the
    window's start, ``undo`` on every one at its end: a multi-node fault is one
    fault, started and stopped together.  If ``do`` fails on one node, the nodes
    done already are undone at once: a fault that failed to start has nothing
    to stop, so nothing may stay down."""
    def act(b: Backend, t: Targets, rng: random.Random) -> Effect:
        nodes: list[str] = t["nodes"] if "nodes" in t else [t["node"]]

        def undo_all(done: list[str]) -> None:
            for node in done:
                undo(b, node, t)

        for i, node in enumerate(nodes):
            try:
                do(b, node, t)
            except Exception:
                undo_all(nodes[:i])
                raise
        return Effect(lambda: undo_all(nodes))
    return act


_kill = _per_node(lambda b, n, t: b.kill(n), lambda b, n, t: b.restart(n))
_pause = _per_node(lambda b, n, t: b.pause(n), lambda b, n, t: b.resume(n))
#: Unsynced writes lost, as a power cut loses them: acknowledged writes must survive it.
_crash = _per_node(lambda b, n, t: b.crash(n), lambda b, n, t: b.restart(n))


def _clock(op: str, key: str) -> Act:
    """The clock op ``op`` (``bump``, ``rate``) at the record's ``key`` on the
    targeted node, until the window ends."""
    return _per_node(lambda b, n, t: b.clock(n, **{op: t[key]}),
                     lambda b, n, t: b.clock(n, reset=True))


def _failpoint(op: str, off: Any) -> Act:
    """The store failpoint ``op`` set to the record's value of that name on every
    targeted node, then back to ``off``: that op only, so that another failpoint
    fault of the same window keeps its own."""
    return _per_node(lambda b, n, t: b.failpoint(n, **{op: t[op]}),
                     lambda b, n, t: b.failpoint(n, **{op: off}))


def _every_link(key: str, shape: Callable[[Backend, float], None]) -> Act:
    """Every link shaped by the record's ``key`` (a delay, a loss), then by 0 again."""
    def act(b: Backend, t: Targets, rng: random.Random) -> Effect:
        shape(b, t[key])
        return Effect(lambda: shape(b, 0))
    return act


def _strobe(b: Backend, t: Targets, rng: random.Random) -> Effect:
    node, delta = t["node"], t["delta_s"]
    signs = itertools.cycle((1, -1))

    def tick() -> None:
        b.clock(node, bump=next(signs) * delta)

    tick()
    return Effect(lambda: b.clock(node, reset=True), tick, 0.1)


def _transfer(b: Backend, move: dict[str, Any] | None) -> dict[str, Any] | None:
    if move is not None:
        b.transfer_leadership(move["from"], move["to"])
    return move


def _move_group(b: Backend, t: Targets, rng: random.Random) -> Effect:
    """One handover of a non-default group's leadership, at the window's start."""
    if t["leader"] is not None:
        b.transfer_leadership(t["node"], t["to"], group=t["raft_group"])
    return Effect(lambda: None)


def _churn(b: Backend, t: Targets, rng: random.Random) -> Effect:
    """The recorded first move, then a live one every second, its target drawn
    from ``rng``: who leads by then depends on the run, not on the record."""
    _transfer(b, t["first"])
    return Effect(lambda: None, lambda: _transfer(b, _next_move(b, rng)), 1.0)


#: The catalogue: each fault is what it chooses and how it acts on that.
FAULT_KINDS: dict[str, FaultKind] = {k.name: k for k in [
    FaultKind("partition-one", partition_one, _partition),
    FaultKind("partition-leader", partition_leader, _partition),
    FaultKind("partition-halves", partition_halves, _partition),
    FaultKind("partition-bridge", partition_bridge, _partition),
    FaultKind("partition-random", partition_random, _partition),
    FaultKind("deafen-leader", deafen_leader, _cut),
    FaultKind("mute-leader", mute_leader, _cut),
    FaultKind("clock-bump", clock_bump, _clock("bump", "bump_s")),
    FaultKind("clock-strobe", clock_strobe, _strobe),
    FaultKind("clock-drift", clock_drift, _clock("rate", "rate")),
    FaultKind("kill", _any_node, _kill),
    FaultKind("kill-leader", _the_leader, _kill),
    FaultKind("kill-majority", _majority, _kill),
    FaultKind("kill-all", _every_node, _kill),
    FaultKind("pause", _any_node, _pause),
    FaultKind("pause-leader", _the_leader, _pause),
    FaultKind("pause-majority", _majority, _pause),
    FaultKind("leader-churn", leader_churn, _churn),
    FaultKind("delay", delay, _every_link("ms", lambda b, ms: b.set_delay(ms))),
    FaultKind("loss", loss, _every_link("p", lambda b, p: b.set_loss(p))),
    FaultKind("disk-slow", disk_slow, _failpoint("fsync_delay_ms", 0)),
    FaultKind("disk-stall", disk_stall, _failpoint("fsync_stall", False)),
    FaultKind("power-loss", _majority, _crash),
    FaultKind("apply-slow", apply_slow, _failpoint("apply_delay_ms", 0)),
    FaultKind("partition-group-leader", partition_group_leader, _failpoint("raft_cut_groups", [])),
    FaultKind("kill-group-leader", _group_leader, _kill),
    FaultKind("transfer-group-leader", transfer_group_leader, _move_group),
]}

#: Faults aimed at a non-default Raft group's leader: they need a sharded store.
GROUP_FAULTS = frozenset({"partition-group-leader", "kill-group-leader",
                          "transfer-group-leader"})

#: Each fault started as a run's schedule starts it: chosen, then applied.
FAULTS: dict[str, Callable[[Backend, random.Random], Active]] = {
    name: kind.start for name, kind in FAULT_KINDS.items()}


def recorded_leader(targets: Targets) -> str | None:
    """The leader a recorded fault was aimed at: its ``leader``, or leader-churn's
    first move's ``from``; ``None`` for a fault that aimed at no role, or found
    none leading."""
    first = targets.get("first")
    return first["from"] if first else targets.get("leader")


def retarget(targets: Targets, leader_then: str | None, leader_now: str | None) -> Targets:
    """The recorded ``targets`` aimed by role: ``leader_then`` and ``leader_now``
    swap names wherever either appears (``node``, ``nodes``, ``groups``, ``cuts``,
    ``spared``, ``leader``, churn's first move), in place in each list, so a
    partition that isolated the old leader isolates the current one and a
    majority that held the old leader holds the new one, the same size.

    Every ``term`` becomes ``None``: it said when the old leader led, and the
    current one leads in a term this pure function cannot know (replay has it
    from the ``leader_term()`` that named ``leader_now``).  When either leader is
    ``None`` (the fault picked at random, or none leads now) there is no role to
    follow, and ``targets`` is returned unchanged.  Every string in a record is
    a node name: that is what makes the swap blind to the shape."""
    if leader_then is None or leader_now is None:
        return targets
    names = {leader_then: leader_now, leader_now: leader_then}

    def swap(value: Any) -> Any:
        if isinstance(value, str):
            return names.get(value, value)
        if isinstance(value, (list, tuple)):
            return [swap(v) for v in value]
        if isinstance(value, dict):
            return {k: None if k == "term" else swap(v) for k, v in value.items()}
        return value

    return swap(targets)


_MAJORITY = "a majority must keep serving while a node or a side is out"
_MINORITY = "a minority must survive the majority's loss; below 3 the majority is every node"
#: Faults that mean something only in a cluster of at least so many nodes, and why:
#: with 2 nodes no side of a partition, and no survivor of a kill or pause, is a
#: majority, so the test would measure nothing but an outage.  ``kill-majority``
#: and ``pause-majority`` differ from stopping every node only by the minority
#: left running.  ``kill-all``, ``power-loss`` (every node, below 3) and
#: ``disk-slow`` test recovery and durability, which any cluster size has.
NEEDS_NODES: dict[str, tuple[int, str]] = {
    **dict.fromkeys(("partition-one", "partition-leader", "partition-halves",
                     "partition-bridge", "partition-random", "deafen-leader", "mute-leader",
                     "kill", "kill-leader", "pause", "pause-leader", "disk-stall",
                     "partition-group-leader", "kill-group-leader"),
                    (3, _MAJORITY)),
    "apply-slow": (2, "a follower must lag its leader"),
    **dict.fromkeys(("kill-majority", "pause-majority"), (3, _MINORITY)),
    **dict.fromkeys(("leader-churn", "transfer-group-leader"),
                    (2, "leadership is handed to another node")),
}

#: Faults that act through the store's failpoints (``/failpoint`` on its admin endpoint).
FAILPOINT_FAULTS = frozenset({"disk-slow", "disk-stall", "power-loss", "apply-slow",
                              "partition-group-leader"})


def check_support(b: Backend, faults: Iterable[str]) -> None:
    """Raise :class:`UnsupportedFault` for the first of ``faults`` the system under
    test cannot take, asking a running node: such a fault would fail every window
    and the run would test nothing while it seemed to."""
    wanted = [f for f in faults if f in FAILPOINT_FAULTS]
    if not wanted:
        return
    errors: list[str] = []
    for node in b.node_ids:
        try:
            settings = b.failpoint_settings(node)
        except (OSError, RuntimeError) as e:  # down, or an answer that says nothing
            errors.append(f"{node}: {e}")
            continue
        if settings is None:
            raise UnsupportedFault(f"--nemesis {wanted[0]}: the system under test has no "
                                   f"failpoints (GET /failpoint on {node}: no such route)")
        return
    raise UnsupportedFault(f"--nemesis {wanted[0]}: no node answered GET /failpoint, so "
                           "whether the system under test has failpoints is unknown "
                           f"({'; '.join(errors)})")
