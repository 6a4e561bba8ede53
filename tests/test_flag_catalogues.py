"""The harness's copies of the store's catalogues equal the store's own.

The harness drives the reference store only from outside (processes, TOML,
HTTP), so it keeps its own lists of read paths, read families, lease knobs
and bug flags, and the store's defaults for what a spec leaves unset.  A flag
added to system/config.py and not to harness/spec.py would be refused by
`faultline run`, and a changed default would name tests wrongly: this keeps
them equal.
"""

from __future__ import annotations

import argparse

import pytest

from harness import spec
from harness.cli import build_parser
from system import config


@pytest.mark.parametrize("name", ["READ_PATHS", "READ_FAMILIES", "LEASE_CLOCKS",
                                  "LEASE_ANCHORS"])
def test_the_harness_lists_equal_the_stores(name):
    assert getattr(spec, name) == getattr(config, name)


def test_the_unchecked_range_families_equal_the_stores():
    from system import reads
    assert spec.RANGE_FAMILIES == reads.RANGE_FAMILIES


def test_a_specs_read_path_per_family_applies_the_unchecked_flag():
    plain = spec.TestSpec(read_path="read_index")
    assert plain.read_path_of("scan") == "read_index"
    assert spec.TestSpec().read_path_of("get_item") == "lease"
    buggy = spec.TestSpec(bugs=["unchecked-range-reads"])
    assert [buggy.read_path_of(f) for f in ("get_item", "query", "scan")] == [
        "lease", "local", "local"]


def test_bug_flags_equal_the_stores():
    assert spec.BUG_FLAGS == tuple(config.BUGS)


def test_the_stores_defaults_as_the_harness_knows_them():
    lease, reads = config.LeaseConfig(), config.ReadPaths()
    assert {getattr(reads, f) for f in config.READ_FAMILIES} == {spec.STORE_DEFAULTS["read_path"]}
    assert (lease.clock, lease.anchor, lease.drift_bound) == (
        spec.STORE_DEFAULTS["lease_clock"], spec.STORE_DEFAULTS["lease_anchor"],
        spec.STORE_DEFAULTS["drift_bound"])
    assert lease.duration_ms is None
    timings = config.RaftTimings()
    default = config.NodeConfig(raft=timings)
    assert default.lease_duration_ms == timings.election_timeout_ms - spec.LEASE_MARGIN_MS
    # the spec's Raft timings are the store's
    t = spec.TestSpec()
    assert (t.heartbeat_ms, t.election_timeout_ms) == (timings.heartbeat_ms,
                                                       timings.election_timeout_ms)


def test_the_node_config_a_spec_writes_is_one_the_store_accepts():
    t = spec.TestSpec(read_path="read_index", lease_ms=900, lease_clock="wall",
                      lease_anchor="received", drift_bound=0.1, bugs=list(spec.BUG_FLAGS),
                      groups=4)
    cfg = config.from_dict(t.node_config())
    assert cfg.reads.scan == "read_index" and cfg.lease.anchor == "received"
    assert cfg.bugs == spec.BUG_FLAGS and cfg.shards.groups == 4
    assert t.workload_options == {"partitions": 8, "groups": 4}   # the set spreads over them


def test_the_run_flags_offer_the_stores_choices():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    choices = {a.dest: tuple(a.choices) for a in sub.choices["run"]._actions if a.choices}
    assert choices["read_path"] == config.READ_PATHS
    assert choices["lease_clock"] == config.LEASE_CLOCKS
    assert choices["lease_anchor"] == config.LEASE_ANCHORS
    assert choices["bugs"] == tuple(config.BUGS)
