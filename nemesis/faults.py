"""The fault catalogue: each fault starts, may act while active, and stops.

A fault works on a :class:`Backend` (local processes, docker, ssh), which
knows how to cut links, skew clocks, stop processes and set the store's disk
failpoints on its kind of host.  Randomness comes from the nemesis's seeded
``random.Random``; targets that depend on the cluster's state (the leader,
and the term it leads in) are resolved when the fault starts and recorded,
so a schedule can be read back and replayed.

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

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

#: An ordered pair of nodes ``(src, dst)``: what ``src`` sends ``dst`` is lost.
Cut = tuple[str, str]


class Backend(Protocol):
    node_ids: list[str]

    def leader_term(self) -> tuple[str, int] | None:
        """The leader and its term, by the nodes' own account; ``None`` if none leads."""

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

    def transfer_leadership(self, leader: str, to: str | None = None) -> str | None: ...

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


@dataclass
class Active:
    """A started fault: what it did, so that it can be undone."""

    fault: str
    targets: dict[str, Any]
    undo: Callable[[], None]
    #: called every ``period`` seconds while the fault is active (strobe, churn)
    tick: Callable[[], dict[str, Any] | None] | None = None
    period: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _leader_or_any(b: Backend, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """The leader, else a node at random, and how it was picked, for the fault's
    record: ``{"leader": "n3", "term": 7}``, or both ``None`` when none led."""
    found = b.leader_term()
    if found is None:
        return rng.choice(b.node_ids), {"leader": None, "term": None}
    node, term = found
    return node, {"leader": node, "term": term}


def _majority_with_leader(b: Backend, rng: random.Random) -> tuple[list[str], dict[str, Any]]:
    """A majority of distinct nodes (sorted), the leader among them when one
    leads, and how the leader was picked (as :func:`_leader_or_any`)."""
    node, picked = _leader_or_any(b, rng)
    others = [n for n in b.node_ids if n != node]
    return sorted([node, *rng.sample(others, len(b.node_ids) // 2)]), picked


def cuts_of(groups: list[list[str]], node_ids: Iterable[str]) -> set[Cut]:
    """The ordered pairs that share no group: a symmetric partition's cuts."""
    ids = list(node_ids)
    return {(a, b) for a in ids for b in ids
            if a != b and not any(a in g and b in g for g in groups)}


def _isolate(b: Backend, node: str) -> list[list[str]]:
    return [[node], [n for n in b.node_ids if n != node]]


def _partition(name: str, groups: list[list[str]], b: Backend,
               picked: dict[str, Any] | None = None) -> Active:
    b.partition(groups)
    return Active(name, {"groups": groups, **(picked or {})}, b.heal_network)


def partition_one(b: Backend, rng: random.Random) -> Active:
    return _partition("partition-one", _isolate(b, rng.choice(b.node_ids)), b)


def partition_leader(b: Backend, rng: random.Random) -> Active:
    node, picked = _leader_or_any(b, rng)
    return _partition("partition-leader", _isolate(b, node), b, picked)


def partition_halves(b: Backend, rng: random.Random) -> Active:
    nodes = rng.sample(b.node_ids, len(b.node_ids))
    cut = len(nodes) // 2
    return _partition("partition-halves", [sorted(nodes[:cut]), sorted(nodes[cut:])], b)


def partition_bridge(b: Backend, rng: random.Random) -> Active:
    """Two halves that cannot talk, and one node that talks to both."""
    nodes = rng.sample(b.node_ids, len(b.node_ids))
    bridge, rest = nodes[0], nodes[1:]
    cut = len(rest) // 2
    return _partition("partition-bridge",
                      [sorted([bridge, *rest[:cut]]), sorted([bridge, *rest[cut:]])], b)


def partition_random(b: Backend, rng: random.Random) -> Active:
    groups: dict[int, list[str]] = {}
    for n in b.node_ids:
        groups.setdefault(rng.randrange(len(b.node_ids)), []).append(n)
    return _partition("partition-random", sorted(groups.values()), b)


def _one_way(name: str, b: Backend, rng: random.Random, to_leader: bool) -> Active:
    node, picked = _leader_or_any(b, rng)
    others = [n for n in b.node_ids if n != node]
    cuts = sorted((n, node) if to_leader else (node, n) for n in others)
    b.cut(cuts)
    return Active(name, {"node": node, "cuts": [list(c) for c in cuts], **picked},
                  b.heal_network)


def deafen_leader(b: Backend, rng: random.Random) -> Active:
    """Nothing the followers send reaches the leader; what it sends reaches them."""
    return _one_way("deafen-leader", b, rng, to_leader=True)


def mute_leader(b: Backend, rng: random.Random) -> Active:
    """Nothing the leader sends reaches the followers; what they send reaches it."""
    return _one_way("mute-leader", b, rng, to_leader=False)


def clock_bump(b: Backend, rng: random.Random) -> Active:
    """Set the leader's wall clock back by 5-15 s (a wall-clock lease then
    outlives its real duration; a monotonic one does not notice)."""
    node, picked = _leader_or_any(b, rng)
    delta = -round(rng.uniform(5.0, 15.0), 3)
    b.clock(node, bump=delta)
    return Active("clock-bump", {"node": node, "bump_s": delta, **picked},
                  lambda: b.clock(node, reset=True))


def clock_strobe(b: Backend, rng: random.Random) -> Active:
    """Jump one node's wall clock back and forth every 100 ms."""
    node = rng.choice(b.node_ids)
    delta = round(rng.uniform(1.0, 10.0), 3)
    state = {"sign": 1}

    def tick() -> None:
        b.clock(node, bump=state["sign"] * delta)
        state["sign"] = -state["sign"]

    tick()
    return Active("clock-strobe", {"node": node, "delta_s": delta},
                  lambda: b.clock(node, reset=True), tick, 0.1)


def clock_drift(b: Backend, rng: random.Random) -> Active:
    """The leader's clock (wall, monotonic and timers) runs at half speed: a
    slow oscillator, beyond any assumed drift bound."""
    node, picked = _leader_or_any(b, rng)
    rate = round(rng.uniform(0.3, 0.6), 3)
    b.clock(node, rate=rate)
    return Active("clock-drift", {"node": node, "rate": rate, **picked},
                  lambda: b.clock(node, reset=True))


def _kill(name: str, node: str, b: Backend, picked: dict[str, Any] | None = None) -> Active:
    b.kill(node)
    return Active(name, {"node": node, **(picked or {})}, lambda: b.restart(node))


def kill(b: Backend, rng: random.Random) -> Active:
    return _kill("kill", rng.choice(b.node_ids), b)


def kill_leader(b: Backend, rng: random.Random) -> Active:
    node, picked = _leader_or_any(b, rng)
    return _kill("kill-leader", node, b, picked)


def _each(name: str, act: Callable[[str], None], undo: Callable[[str], None],
          nodes: list[str], picked: dict[str, Any] | None = None) -> Active:
    """``act`` on every node of ``nodes`` at the window's start, ``undo`` on every
    one at its end: a multi-node fault is one fault, started and stopped together.
    If ``act`` fails on one node, the nodes done already are undone at once: a
    fault that failed to start has nothing to stop, so nothing may stay down."""
    def undo_all(done: list[str]) -> None:
        for node in done:
            undo(node)

    for i, node in enumerate(nodes):
        try:
            act(node)
        except Exception:
            undo_all(nodes[:i])
            raise
    return Active(name, {"nodes": nodes, **(picked or {})}, lambda: undo_all(nodes))


def kill_majority(b: Backend, rng: random.Random) -> Active:
    nodes, picked = _majority_with_leader(b, rng)
    return _each("kill-majority", b.kill, b.restart, nodes, picked)


def kill_all(b: Backend, rng: random.Random) -> Active:
    return _each("kill-all", b.kill, b.restart, sorted(b.node_ids))


def pause_majority(b: Backend, rng: random.Random) -> Active:
    nodes, picked = _majority_with_leader(b, rng)
    return _each("pause-majority", b.pause, b.resume, nodes, picked)


def power_loss(b: Backend, rng: random.Random) -> Active:
    """A majority, the leader among them, loses its unsynced writes and crashes:
    what a power cut does to a rack.  Acknowledged writes must survive it."""
    nodes, picked = _majority_with_leader(b, rng)
    return _each("power-loss", b.crash, b.restart, nodes, picked)


def _pause(name: str, node: str, b: Backend, picked: dict[str, Any] | None = None) -> Active:
    b.pause(node)
    return Active(name, {"node": node, **(picked or {})}, lambda: b.resume(node))


def pause(b: Backend, rng: random.Random) -> Active:
    return _pause("pause", rng.choice(b.node_ids), b)


def pause_leader(b: Backend, rng: random.Random) -> Active:
    node, picked = _leader_or_any(b, rng)
    return _pause("pause-leader", node, b, picked)


def leader_churn(b: Backend, rng: random.Random) -> Active:
    """Hand leadership to another node every second while active; each move
    records the term its leader led in."""
    def tick() -> dict[str, Any] | None:
        found = b.leader_term()
        if found is None:
            return None
        leader, term = found
        to = rng.choice([n for n in b.node_ids if n != leader])
        b.transfer_leadership(leader, to)
        return {"from": leader, "term": term, "to": to}

    first = tick()
    return Active("leader-churn", {"first": first}, lambda: None, tick, 1.0)


def delay(b: Backend, rng: random.Random) -> Active:
    ms = round(rng.uniform(20.0, 200.0), 1)
    b.set_delay(ms)
    return Active("delay", {"ms": ms}, lambda: b.set_delay(0))


def loss(b: Backend, rng: random.Random) -> Active:
    p = round(rng.uniform(0.05, 0.3), 3)
    b.set_loss(p)
    return Active("loss", {"p": p}, lambda: b.set_loss(0))


def disk_slow(b: Backend, rng: random.Random) -> Active:
    """Every fsync of a majority, the leader among them, sleeps 50-500 ms: any
    quorum then holds a slow disk, so every commit waits on one, while
    heartbeats, which persist nothing, stay fast."""
    nodes, picked = _majority_with_leader(b, rng)
    ms = rng.randint(50, 500)
    act = _each("disk-slow", lambda n: b.failpoint(n, fsync_delay_ms=ms),
                lambda n: b.failpoint(n, fsync_delay_ms=0), nodes, picked)
    act.targets["fsync_delay_ms"] = ms
    return act


def disk_stall(b: Backend, rng: random.Random) -> Active:
    """The leader's fsyncs block until the window ends: a disk that hangs rather
    than fails, under a node that stays up and answers."""
    node, picked = _leader_or_any(b, rng)
    b.failpoint(node, fsync_stall=True)
    return Active("disk-stall", {"node": node, "fsync_stall": True, **picked},
                  lambda: b.failpoint(node, fsync_stall=False))


def apply_slow(b: Backend, rng: random.Random) -> Active:
    """Every node but the leader applies each committed entry 5-50 ms slower:
    followers whose state machine lags their log, so a follower that becomes
    leader (leader churn) holds a backlog of entries its predecessor already
    applied and acknowledged."""
    node, picked = _leader_or_any(b, rng)
    ms = rng.randint(5, 50)
    act = _each("apply-slow", lambda n: b.failpoint(n, apply_delay_ms=ms),
                lambda n: b.failpoint(n, apply_delay_ms=0),
                [n for n in b.node_ids if n != node], picked)
    act.targets.update(apply_delay_ms=ms, spared=node)
    return act


FAULTS: dict[str, Callable[[Backend, random.Random], Active]] = {
    "partition-one": partition_one, "partition-leader": partition_leader,
    "partition-halves": partition_halves, "partition-bridge": partition_bridge,
    "partition-random": partition_random, "deafen-leader": deafen_leader,
    "mute-leader": mute_leader, "clock-bump": clock_bump, "clock-strobe": clock_strobe,
    "clock-drift": clock_drift, "kill": kill, "kill-leader": kill_leader,
    "kill-majority": kill_majority, "kill-all": kill_all, "pause": pause,
    "pause-leader": pause_leader, "pause-majority": pause_majority,
    "leader-churn": leader_churn, "delay": delay, "loss": loss, "disk-slow": disk_slow,
    "disk-stall": disk_stall, "power-loss": power_loss, "apply-slow": apply_slow,
}

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
                     "kill", "kill-leader", "pause", "pause-leader", "disk-stall"),
                    (3, _MAJORITY)),
    "apply-slow": (2, "a follower must lag its leader"),
    **dict.fromkeys(("kill-majority", "pause-majority"), (3, _MINORITY)),
    "leader-churn": (2, "leadership is handed to another node"),
}

#: Faults that act through the store's failpoints (``/failpoint`` on its admin endpoint).
FAILPOINT_FAULTS = frozenset({"disk-slow", "disk-stall", "power-loss", "apply-slow"})


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
