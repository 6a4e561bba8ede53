"""The fault catalogue: each fault starts, may act while active, and stops.

A fault works on a :class:`Backend` (local processes, docker, ssh), which
knows how to cut links, skew clocks and stop processes on its kind of host.
Randomness comes from the nemesis's seeded ``random.Random``; targets that
depend on the cluster's state (the leader, and the term it leads in) are
resolved when the fault starts and recorded, so a schedule can be read back
and replayed.
:data:`NEEDS_NODES` says which faults need how many nodes to mean anything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol


class Backend(Protocol):
    node_ids: list[str]

    def leader_term(self) -> tuple[str, int] | None:
        """The leader and its term, by the nodes' own account; ``None`` if none leads."""

    def partition(self, groups: list[list[str]]) -> None:
        """Two nodes can talk iff some group holds both (a bridge node is in two)."""

    def heal_network(self) -> None: ...

    def clock(self, node: str, **op: Any) -> None:
        """``bump=seconds``, ``offset=seconds``, ``rate=r`` or ``reset=True``."""

    def kill(self, node: str) -> None: ...

    def restart(self, node: str) -> None: ...

    def pause(self, node: str) -> None: ...

    def resume(self, node: str) -> None: ...

    def transfer_leadership(self, leader: str, to: str | None = None) -> str | None: ...

    def set_delay(self, ms: float) -> None: ...

    def set_loss(self, p: float) -> None: ...


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


FAULTS: dict[str, Callable[[Backend, random.Random], Active]] = {
    "partition-one": partition_one, "partition-leader": partition_leader,
    "partition-halves": partition_halves, "partition-bridge": partition_bridge,
    "partition-random": partition_random, "clock-bump": clock_bump,
    "clock-strobe": clock_strobe, "clock-drift": clock_drift, "kill": kill,
    "kill-leader": kill_leader, "pause": pause, "pause-leader": pause_leader,
    "leader-churn": leader_churn, "delay": delay, "loss": loss,
}

_MAJORITY = "a majority must keep serving while a node or a side is out"
#: Faults that mean something only in a cluster of at least so many nodes, and why:
#: with 2 nodes no side of a partition, and no survivor of a kill or pause, is a
#: majority, so the test would measure nothing but an outage.
NEEDS_NODES: dict[str, tuple[int, str]] = {
    **dict.fromkeys(("partition-one", "partition-leader", "partition-halves",
                     "partition-bridge", "partition-random", "kill", "kill-leader", "pause",
                     "pause-leader"), (3, _MAJORITY)),
    "leader-churn": (2, "leadership is handed to another node"),
}
