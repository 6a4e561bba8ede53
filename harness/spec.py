"""A test is plain data: every part of a run reads this one spec.

``faultline run`` builds it from its flags or from a TOML file (``--spec``);
``test.json`` in the results folder holds it, with the seed actually used,
and ``--spec`` takes it back, so a saved run runs again as configured.  Its
``nemesis`` entries stay as typed, ``NAME[:WINDOW[/QUIET]]``
(nemesis/nemesis.py parses them), so test.json reads back as it was given.
"""

from __future__ import annotations

import json
import random
import tomllib
from dataclasses import asdict, dataclass, field, fields
from typing import Any

WORKLOADS = ("register", "set", "bank")
BACKENDS = ("local", "docker", "ssh")
READ_PATHS = ("lease", "read_index", "local")
LEASE_CLOCKS = ("monotonic", "wall")
LEASE_ANCHORS = ("sent", "received")
READ_FAMILIES = ("get_item", "query", "scan", "transact_get_items", "batch_get_item")
#: The reference store's bug flags (system/config.py documents each anomaly).
BUG_FLAGS = ("unchecked-range-reads", "read-ts-before-check", "long-lease",
             "wall-clock-lease", "no-check-quorum", "ack-before-fsync", "no-noop-read",
             "lease-survives-transfer", "stale-follower-reads", "commit-previous-term",
             "read-index-no-apply-wait", "keyless-lease-default-group",
             "sequential-lease-checks")
#: What the reference store does with a setting a spec leaves unset (None).  Like
#: the lists above it is the harness's own copy, since the harness drives the
#: store only from outside; tests/test_flag_catalogues.py keeps them equal.
STORE_DEFAULTS: dict[str, Any] = {"read_path": "lease", "lease_clock": "monotonic",
                                  "lease_anchor": "sent", "drift_bound": 0.0}
#: The store's default lease is the election timeout less this.
LEASE_MARGIN_MS = 300
#: Bug flags that only exist with several Raft groups.
GROUP_BUGS = frozenset({"keyless-lease-default-group", "sequential-lease-checks"})
#: The read families ``unchecked-range-reads`` leaves unchecked.
RANGE_FAMILIES = ("query", "scan", "transact_get_items")


class SpecError(ValueError):
    """A spec that cannot run, naming the option and its allowed values."""


@dataclass
class TestSpec:
    __test__ = False  # a spec, not a pytest test class
    workload: str = "set"
    nodes: int = 5
    #: Raft groups of the reference store (key ranges by hash; group 0 also
    #: holds the tables); 1 is the unsharded store
    groups: int = 1
    #: faults, each ``NAME[:WINDOW[/QUIET]]``: a timing of its own, or the two below
    nemesis: list[str] = field(default_factory=list)
    #: seconds each fault window lasts ...
    nemesis_interval: float = 4.0
    #: ... and each quiet window between them (long enough for a new leader
    #: and for clients to find it again)
    nemesis_quiet: float = 2.0
    time_limit: float = 30.0
    #: four clients per node by default, so a cut-off node sees steady reads
    concurrency: int = 20
    rate: float = 0.0
    seed: int | None = None
    backend: str = "local"
    results_dir: str = "results"
    name: str | None = None
    #: the read path of every read family; None keeps the store's default (lease)
    read_path: str | None = None
    lease_ms: int | None = None
    lease_clock: str | None = None
    lease_anchor: str | None = None
    drift_bound: float | None = None
    bugs: list[str] = field(default_factory=list)
    #: Raft timings of the reference store (elastickv's by default).
    heartbeat_ms: int = 200
    election_timeout_ms: int = 2000
    quiet_period: float = 3.0
    #: a client read timeout: a worker bound to a cut-off leader blocks this long
    #: on every write, so it bounds how often that node is read
    client_timeout: float = 0.5
    workload_options: dict[str, Any] = field(default_factory=dict)
    #: ssh backend: the nodes (host, port, user, key per node) as a TOML or JSON file
    nodes_file: str | None = None
    #: ssh backend: the known-hosts file host keys are checked against (default ~/.ssh/known_hosts)
    known_hosts: str | None = None
    #: ssh backend: accept unknown host keys (an explicit opt-out of host key checking)
    insecure_host_keys: bool = False
    #: judge reads by bounded staleness (ms); None: every stale read is an anomaly
    max_staleness_ms: float | None = None

    def __post_init__(self) -> None:
        _choice("workload", self.workload, WORKLOADS)
        _choice("backend", self.backend, BACKENDS)
        if self.backend == "ssh" and not self.nodes_file:
            raise SpecError("--nodes-file: required with --backend ssh (a TOML or JSON file "
                            "listing host, port, user and key of every node)")
        if self.read_path is not None:
            _choice("read-path", self.read_path, READ_PATHS)
        if self.lease_clock is not None:
            _choice("lease-clock", self.lease_clock, LEASE_CLOCKS)
        if self.lease_anchor is not None:
            _choice("lease-anchor", self.lease_anchor, LEASE_ANCHORS)
        self._check_nemesis()
        for b in self.bugs:
            _choice("bug", b, BUG_FLAGS)
        if not 1 <= self.groups <= 64:
            raise SpecError(f"--groups: must be between 1 and 64, got {self.groups}")
        for b in GROUP_BUGS & set(self.bugs):
            if self.groups < 2:
                raise SpecError(f"--groups: --bug {b} is about which group's lease a read "
                                f"checks, so it needs 2 or more, got {self.groups}")
        if self.groups > 1 and self.workload == "bank":
            raise SpecError("--groups: the bank workload's transfers span accounts in several "
                            "Raft groups, and the reference store runs a transaction in one "
                            "group only so far; use --groups 1 with bank")
        if self.groups > 1:  # the checkers report each group's anomalies
            self.workload_options.setdefault("groups", self.groups)
        if self.groups > 1 and self.workload == "set":
            # spread the set's elements over partitions, and so over groups
            self.workload_options.setdefault("partitions", 2 * self.groups)
        for name, value, low in (("nodes", self.nodes, 1), ("concurrency", self.concurrency, 1)):
            if value < low:
                raise SpecError(f"--{name}: must be at least {low}, got {value}")
        from nemesis.faults import GROUP_FAULTS, NEEDS_NODES  # the catalogue lives with the faults

        for fault in self.fault_names:
            if fault in GROUP_FAULTS and self.groups < 2:
                raise SpecError(f"--groups: --nemesis {fault} aims at the leader of a "
                                f"non-default Raft group, so it needs 2 or more, got {self.groups}")
            need, why = NEEDS_NODES.get(fault, (1, ""))
            if self.nodes < need:
                raise SpecError(f"--nodes: --nemesis {fault} needs at least {need} nodes "
                                f"({why}), got {self.nodes}")
        for name, value in (("time-limit", self.time_limit),
                            ("nemesis-interval", self.nemesis_interval),
                            ("nemesis-quiet", self.nemesis_quiet),
                            ("client-timeout", self.client_timeout),
                            ("lease-ms", self.lease_ms)):
            if value is not None and value <= 0:
                raise SpecError(f"--{name}: must be positive, got {value}")
        if self.rate < 0:
            raise SpecError(f"--rate: must be >= 0 (0 = unlimited), got {self.rate}")
        if self.quiet_period < 0:
            raise SpecError(f"--quiet-period: must be >= 0, got {self.quiet_period}")
        if not 0 < self.heartbeat_ms < self.election_timeout_ms:
            raise SpecError(f"--heartbeat-ms, --election-timeout-ms: need 0 < heartbeat "
                            f"< election timeout, got {self.heartbeat_ms} and "
                            f"{self.election_timeout_ms}")
        if self.drift_bound is not None and not 0 <= self.drift_bound < 1:
            raise SpecError(f"--drift-bound: must be in [0, 1), got {self.drift_bound}")
        if self.max_staleness_ms is not None and not self.max_staleness_ms >= 0:
            raise SpecError(f"--max-staleness: must be >= 0 ms, got {self.max_staleness_ms}")

    def _check_nemesis(self) -> None:
        """Every entry parses, names a known fault, and names it once (a
        fault's start and stop pair up by name)."""
        from nemesis.faults import FAULTS
        from nemesis.nemesis import parse_fault

        seen: set[str] = set()
        for entry in self.nemesis:
            try:
                name = parse_fault(entry).name
            except ValueError as e:
                raise SpecError(f"--nemesis {e}") from None
            _choice("nemesis", name, tuple(FAULTS))
            if name in seen:
                raise SpecError(f"--nemesis: {name} is listed twice; a fault runs on one "
                                "schedule")
            seen.add(name)

    @property
    def fault_names(self) -> list[str]:
        """The faults of ``nemesis``, without their timings."""
        from nemesis.nemesis import parse_fault

        return [parse_fault(entry).name for entry in self.nemesis]

    @property
    def test_name(self) -> str:
        """The run folders' parent: workload, faults, then the read path, lease
        settings and bug flags that differ from the store's defaults, so two
        configurations of what is tested never share it (sizes and timings,
        per-fault ones too, are left to test.json, which holds every setting)."""
        return self.name or "-".join([self.workload, *(self.fault_names or ["none"]),
                                      *self._store_tags()])

    def _store_tags(self) -> list[str]:
        lease_ms = self.election_timeout_ms - LEASE_MARGIN_MS
        tags = [(self.read_path, STORE_DEFAULTS["read_path"], "{}"),
                (self.lease_ms, lease_ms, "lease-{}ms"),
                (self.lease_clock, STORE_DEFAULTS["lease_clock"], "lease-{}"),
                (self.lease_anchor, STORE_DEFAULTS["lease_anchor"], "anchor-{}"),
                (self.drift_bound, STORE_DEFAULTS["drift_bound"], "drift-{:g}")]
        return ([fmt.format(value) for value, default, fmt in tags
                 if value is not None and value != default]
                + ([f"{self.groups}-groups"] if self.groups > 1 else []) + sorted(set(self.bugs)))

    def resolve_seed(self) -> int:
        if self.seed is None:
            self.seed = random.SystemRandom().randrange(1, 2**31)
        return self.seed

    def node_config(self) -> dict[str, Any]:
        """The reference store's configuration (see system/config.py) as data."""
        cfg: dict[str, Any] = {"raft": {"heartbeat_ms": self.heartbeat_ms,
                                        "election_timeout_ms": self.election_timeout_ms}}
        lease = {"duration_ms": self.lease_ms, "clock": self.lease_clock,
                 "anchor": self.lease_anchor, "drift_bound": self.drift_bound}
        lease = {k: v for k, v in lease.items() if v is not None}
        if lease:
            cfg["lease"] = lease
        if self.read_path:
            cfg["reads"] = {f: self.read_path for f in READ_FAMILIES}
        if self.bugs:
            cfg["bugs"] = list(self.bugs)
        if self.groups > 1:
            cfg["shards"] = {"groups": self.groups}
        return cfg

    def read_path_of(self, family: str) -> str:
        """The path reads of ``family`` take on the leader in this test, bug
        flags applied (``unchecked-range-reads`` sends range reads down the
        unchecked path), for reports that group reads by path."""
        if "unchecked-range-reads" in self.bugs and family in RANGE_FAMILIES:
            return "local"
        return self.read_path or STORE_DEFAULTS["read_path"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _choice(option: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise SpecError(f"--{option}: {value!r} is not one of {', '.join(allowed)}")


def read_spec_file(path: str) -> dict[str, Any]:
    """A spec file's settings, every key a TestSpec field (unchecked values):
    a TOML file, or a run's test.json (its ``spec``), so that a saved run
    runs again as it was configured, its seed included."""
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            if isinstance(data, dict) and isinstance(data.get("spec"), dict):
                data = data["spec"]
        else:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError, ValueError) as e:
        raise SpecError(f"--spec {path}: {e}") from None
    if not isinstance(data, dict):
        raise SpecError(f"--spec {path}: not a table of settings")
    known = {f.name for f in fields(TestSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(f"--spec {path}: unknown key {unknown[0]!r}; "
                        f"expected one of {', '.join(sorted(known))}")
    return data


def load_spec(path: str, **overrides: Any) -> TestSpec:
    """A spec from a TOML file; ``overrides`` (flags given too) win."""
    data = read_spec_file(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TestSpec(**data)
    except TypeError as e:
        raise SpecError(f"--spec {path}: {e}") from None
