"""Node configuration: timings, read paths, lease knobs and bug flags (TOML).

Defaults follow elastickv: heartbeat 200 ms, election timeout 2 s, lease =
election timeout - 300 ms, every read family on the lease path.  A bug flag
changes the node's behaviour to a known-broken one so the harness can show
it detects the anomaly; :data:`BUGS` documents each.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

READ_PATHS = ("lease", "read_index", "local")
READ_FAMILIES = ("get_item", "query", "scan", "transact_get_items", "batch_get_item")
LEASE_CLOCKS = ("monotonic", "wall")
LEASE_ANCHORS = ("sent", "received")
SPLITS = ("hash", "points")
LEADER_PLACEMENTS = ("spread", "any")
#: the default lease is the election timeout less this (elastickv's margin)
LEASE_MARGIN_MS = 300

#: Each bug flag and the anomaly it must produce.
BUGS: dict[str, str] = {
    "unchecked-range-reads":
        "Query, Scan and TransactGetItems skip the freshness check (the behaviour "
        "before the seed fix): a partitioned leader that has not stepped down serves "
        "them from local state -> stale Query/Scan reads in the set workload.",
    "read-ts-before-check":
        "the read timestamp is sampled before the freshness check, so a read that "
        "waits on ReadIndex still reads the snapshot of before the wait -> stale "
        "reads of writes committed during the check.",
    "long-lease":
        "the lease lasts twice the election timeout, so an isolated leader keeps "
        "serving lease reads after a new leader has been elected and committed "
        "writes -> stale reads under partition-leader.",
    "wall-clock-lease":
        "the lease is measured on the wall clock, so a leader whose wall clock is "
        "set back while cut off believes its lease still holds -> stale reads "
        "under partition-leader + clock-bump.",
    "no-check-quorum":
        "CheckQuorum off: a partitioned leader never steps down on its own; with "
        "local reads it serves stale data indefinitely, and clients bound to it "
        "see no error.",
    "ack-before-fsync":
        "writes are acknowledged before they are durable (log records buffered in "
        "memory, flushed later), so kill -9 of a majority loses acknowledged "
        "writes -> lost updates / lost set items.",
    "no-noop-read":
        "a new leader serves ReadIndex reads before it has committed an entry of "
        "its own term, so its commit index may lag the old leader's -> stale reads "
        "right after an election.",
    "lease-survives-transfer":
        "a leader that handed leadership over with TimeoutNow keeps its lease and "
        "serves lease reads while the target already accepts writes -> stale reads "
        "under leader-churn.",
    "stale-follower-reads":
        "followers answer reads from their own applied state instead of forwarding "
        "them to the leader -> stale reads from lagging followers.",
    "commit-previous-term":
        "the leader advances its commit index by counting replicas of an entry of "
        "an earlier term (the Raft paper's Figure 8; section 5.4.2 forbids it), so "
        "an entry it applied and acknowledged can be overwritten by a later leader "
        "elected without it -> lost writes, or reads of a write that later vanishes, "
        "after leader changes.",
    "read-index-no-apply-wait":
        "a ReadIndex read (and the lease path's ReadIndex fallback) is served once a "
        "quorum confirms its read index, without waiting for the state machine to "
        "apply up to it -> stale reads on a leader whose apply lags its commit index.",
    "keyless-lease-default-group":
        "with several Raft groups, Query and Scan check only the default group's lease "
        "(the pull request's first version), then read each group's replica on this node "
        "unconfirmed -> stale reads where that replica lags its group's leader; and "
        "Query and Scan answer 500 while the default group has no leader, even for keys "
        "of groups that have one.",
    "sequential-lease-checks":
        "TransactGetItems checks the lease of each group it touches one after another "
        "instead of concurrently: on lease misses a Raft round trip per group, and past "
        "the 5 s check timeout the request fails (a latency bug, not a safety one).",
}


#: Bug flags that cost time, not safety: no checker can find them, and
#: ``bench/sharding.py`` measures what they cost.
LATENCY_BUGS = frozenset({"sequential-lease-checks"})


class ConfigError(ValueError):
    """A configuration that cannot be used, naming the key and allowed values."""


@dataclass(frozen=True)
class RaftTimings:
    tick_ms: int = 10
    heartbeat_ms: int = 200
    election_timeout_ms: int = 2000
    pre_vote: bool = True
    check_quorum: bool = True
    snapshot_threshold: int = 10_000
    #: entries kept behind a snapshot for followers that lag a little
    compaction_margin: int = 1_000
    max_append_entries: int = 256
    #: committed entries the apply stage applies before it yields to the
    #: Raft driver (etcd caps a Ready's committed entries likewise,
    #: MaxCommittedSizePerReady): a backlog is applied a chunk at a time
    #: while reads are confirmed and heartbeats go out.
    max_apply_batch: int = 64


@dataclass(frozen=True)
class LeaseConfig:
    #: None: election timeout - 300 ms (elastickv); <= 0 turns leases off.
    duration_ms: int | None = None
    clock: str = "monotonic"
    anchor: str = "sent"
    #: assumed bound on clock drift: the lease is shortened by this fraction.
    drift_bound: float = 0.0
    check_timeout_ms: int = 5000


@dataclass(frozen=True)
class ReadPaths:
    get_item: str = "lease"
    query: str = "lease"
    scan: str = "lease"
    transact_get_items: str = "lease"
    batch_get_item: str = "lease"


@dataclass(frozen=True)
class Shards:
    """How many Raft groups there are and which keys each one owns
    (:mod:`system.routing`).  Group 0 is the default group: it also holds
    the table catalogue.  One group (the default) is the unsharded store."""
    groups: int = 1
    #: ``hash``: groups own equal ranges of a hash of (table, partition key);
    #: ``points``: group i owns the route keys from ``points[i-1]`` up to
    #: ``points[i]`` (each point a table ``{table = "t", key = {S = "m"}}``).
    split: str = "hash"
    points: tuple[dict[str, Any], ...] = ()
    #: ``spread``: group g > 0 prefers the g-th node (in id order, wrapping)
    #: as its leader and its leader hands over to it when it can; ``any``:
    #: whoever wins an election leads.
    leaders: str = "spread"


@dataclass(frozen=True)
class NodeConfig:
    raft: RaftTimings = field(default_factory=RaftTimings)
    lease: LeaseConfig = field(default_factory=LeaseConfig)
    reads: ReadPaths = field(default_factory=ReadPaths)
    shards: Shards = field(default_factory=Shards)
    bugs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in self.bugs:
            if name not in BUGS:
                raise ConfigError(f"bugs: unknown bug flag {name!r}; "
                                  f"choose from {', '.join(BUGS)}")
        for fam in READ_FAMILIES:
            if getattr(self.reads, fam) not in READ_PATHS:
                raise ConfigError(f"reads.{fam}: {getattr(self.reads, fam)!r} is not one "
                                  f"of {', '.join(READ_PATHS)}")
        if self.lease.clock not in LEASE_CLOCKS:
            raise ConfigError(f"lease.clock: {self.lease.clock!r} is not one of "
                              f"{', '.join(LEASE_CLOCKS)}")
        if self.lease.anchor not in LEASE_ANCHORS:
            raise ConfigError(f"lease.anchor: {self.lease.anchor!r} is not one of "
                              f"{', '.join(LEASE_ANCHORS)}")
        if not 0 <= self.lease.drift_bound < 1:
            raise ConfigError(f"lease.drift_bound: {self.lease.drift_bound} must be in [0, 1)")
        r = self.raft
        if not 0 < r.tick_ms <= r.heartbeat_ms < r.election_timeout_ms:
            raise ConfigError("raft: need 0 < tick_ms <= heartbeat_ms < election_timeout_ms")
        if r.max_apply_batch < 1:
            raise ConfigError(f"raft.max_apply_batch: {r.max_apply_batch} must be >= 1")
        _check_shards(self.shards)

    def has(self, bug: str) -> bool:
        return bug in self.bugs

    @property
    def lease_duration_ms(self) -> float:
        """The lease the read path uses, bug flags applied.

        The lease must end before a follower can vote for another leader:
        one election timeout after it received the heartbeat it acknowledged,
        so no sooner than one election timeout after that heartbeat was sent
        (``ReadPath.lease_holds`` on that anchor).  The default keeps 300 ms
        short of that: elastickv's safety margin, sized there to absorb its
        receipt anchor's overshoot (an ack's one-way delay and scheduling
        slop); with the send anchor it covers what is left, a follower's
        timer counting whole ticks and the gap between reading the lease
        clock and serving the read.

        ``drift_bound`` then shortens it by that fraction, as the Raft
        dissertation's lease (``start + election timeout / drift bound``):
        the lease runs on the leader's clock and each stickiness window on a
        follower's, and a follower clock faster by a fraction ``p`` closes
        its window ``p`` sooner on the leader's clock.  The default 0 trusts
        all clocks to run at one rate: true on one host, not under the
        ``clock-drift`` fault.
        """
        if self.has("long-lease"):
            return 2.0 * self.raft.election_timeout_ms
        d = self.lease.duration_ms
        base = self.raft.election_timeout_ms - LEASE_MARGIN_MS if d is None else d
        return base * (1.0 - self.lease.drift_bound)

    @property
    def lease_clock(self) -> str:
        return "wall" if self.has("wall-clock-lease") else self.lease.clock

    @property
    def check_quorum(self) -> bool:
        return self.raft.check_quorum and not self.has("no-check-quorum")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["bugs"] = list(self.bugs)
        return d


def _check_shards(s: Shards) -> None:
    if s.split not in SPLITS:
        raise ConfigError(f"shards.split: {s.split!r} is not one of {', '.join(SPLITS)}")
    if s.leaders not in LEADER_PLACEMENTS:
        raise ConfigError(f"shards.leaders: {s.leaders!r} is not one of "
                          f"{', '.join(LEADER_PLACEMENTS)}")
    if not 1 <= s.groups <= 64:
        raise ConfigError(f"shards.groups: {s.groups} must be between 1 and 64")
    if s.split == "hash" and s.points:
        raise ConfigError("shards.points: only with split = \"points\"")
    if s.split == "points":
        if len(s.points) != s.groups - 1:
            raise ConfigError(f"shards.points: {s.groups} groups need {s.groups - 1} split "
                              f"points, got {len(s.points)}")
        from system.routing import point_key  # the one place points are read
        keys = [point_key(p, f"shards.points[{i}]") for i, p in enumerate(s.points)]
        if keys != sorted(keys) or len(set(keys)) != len(keys):
            raise ConfigError("shards.points: split points must be in increasing order")


_SECTIONS = {"raft": RaftTimings, "lease": LeaseConfig, "reads": ReadPaths, "shards": Shards}


def from_dict(data: dict[str, Any]) -> NodeConfig:
    """Build a config from plain data; unknown keys are errors, not ignored."""
    kw: dict[str, Any] = {}
    for key, value in data.items():
        if key == "bugs":
            if not isinstance(value, list) or not all(isinstance(b, str) for b in value):
                raise ConfigError("bugs: expected a list of bug flag names")
            kw["bugs"] = tuple(value)
            continue
        cls = _SECTIONS.get(key)
        if cls is None:
            raise ConfigError(f"unknown section {key!r}; expected "
                              f"{', '.join([*_SECTIONS, 'bugs'])}")
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table")
        known = {f.name: f for f in fields(cls)}
        if key == "shards" and isinstance(value.get("points"), list):
            value = {**value, "points": tuple(value["points"])}
        for k, v in value.items():
            if k not in known:
                raise ConfigError(f"{key}.{k}: unknown key; expected one of "
                                  f"{', '.join(known)}")
            default = getattr(cls(), k)
            if default is not None and v is not None and not _same_kind(default, v):
                raise ConfigError(f"{key}.{k}: expected {type(default).__name__}, "
                                  f"got {v!r}")
        kw[key] = replace(cls(), **value)
    return NodeConfig(**kw)


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def load(path: str) -> NodeConfig:
    with open(path, "rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from None
    try:
        return from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None

