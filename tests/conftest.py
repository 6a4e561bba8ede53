"""Shared test helpers: where the reference histories of ../shared/data live."""

from __future__ import annotations

from pathlib import Path

import pytest


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the repository, or ``None`` where it is absent
    (a clone without the shared folder): tests that need it skip."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder; skips the test when it is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is absent: no reference histories to read")
    return path


#: Node timings for cluster tests: fast elections, small snapshots.
FAST = {"raft": {"tick_ms": 10, "heartbeat_ms": 50, "election_timeout_ms": 600,
                 "snapshot_threshold": 300, "compaction_margin": 50}}


def module_cluster(tmp_path_factory, seed: int, groups: int = 1):
    """A started 3-node local cluster with FAST timings (and ``groups`` Raft
    groups); stopped by the caller."""
    from harness.cluster import LocalCluster

    config = FAST if groups == 1 else {**FAST, "shards": {"groups": groups}}
    c = LocalCluster(tmp_path_factory.mktemp("cluster"), 3, config)
    c.start(seed=seed)
    if groups > 1:
        every_node_knows_every_leader(c, groups)
    return c


def every_node_knows_every_leader(cluster, groups: int, timeout: float = 15.0) -> None:
    """Until every node names the same leader for every group, placed where
    the store places it: before that a node may know no leader to forward a
    request to, and answer 503 as it should."""
    from harness.admin import placed, statuses
    from harness.poll import poll

    def ready() -> bool | None:
        found = statuses(cluster.nodes)
        if not all(found.values()) or not placed(found):
            return None
        views = {tuple(g["leader"] for g in st["groups"]) for st in found.values()}
        return True if len(views) == 1 and None not in next(iter(views)) else None

    assert poll(ready, timeout, 0.1), f"groups not settled: {statuses(cluster.nodes)}"
