"""`faultline cluster up/status/down` as a person runs it: two clusters at once."""

from __future__ import annotations

import json

import pytest

from harness.cluster import is_alive

from cli_runs import faultline

pytestmark = pytest.mark.cluster


def test_two_clusters_up_status_down(tmp_path):
    cfg = tmp_path / "fast.toml"
    cfg.write_text("[raft]\nheartbeat_ms = 50\nelection_timeout_ms = 600\n")
    dirs = [tmp_path / "a", tmp_path / "b"]
    try:
        for d, groups in zip(dirs, ("1", "3")):   # the second one sharded
            up = faultline("cluster", "up", "--nodes", "3", "--dir", str(d), "--config", str(cfg),
                           "--groups", groups)
            assert up.returncode == 0, up.stderr
            assert "leader n" in up.stdout
        infos = [json.loads((d / "cluster.json").read_text()) for d in dirs]
        ports = [n[k] for info in infos for n in info["nodes"] for k in ("api", "admin", "raft")]
        assert len(set(ports)) == 18  # nothing shared between the two clusters
        st = faultline("cluster", "status", "--dir", str(dirs[0]))
        assert st.returncode == 0
        roles = [line.split()[1] for line in st.stdout.splitlines()]
        assert roles.count("leader") == 1 and roles.count("follower") == 2
        st = faultline("cluster", "status", "--dir", str(dirs[1]))
        assert st.returncode == 0
        lines = [line.split() for line in st.stdout.splitlines()]
        assert len(lines) == 9       # a line per node and group: "n1 group 2 leader term ..."
        for g in ("0", "1", "2"):
            roles = [f[3] for f in lines if f[1:3] == ["group", g]]
            assert sorted(roles) == ["follower", "follower", "leader"], st.stdout
    finally:
        for d in dirs:
            down = faultline("cluster", "down", "--dir", str(d))
            assert down.returncode == 0, down.stderr
    assert not [n["pid"] for info in infos for n in info["nodes"] if is_alive(n["pid"])]


def test_status_without_cluster_is_a_clear_error(tmp_path):
    st = faultline("cluster", "status", "--dir", str(tmp_path))
    assert st.returncode == 65 and "no cluster here" in st.stderr


def test_unknown_bug_flag_names_the_choices(tmp_path):
    up = faultline("cluster", "up", "--dir", str(tmp_path), "--bug", "nope")
    assert up.returncode == 64
    assert "--bug" in up.stderr and "unchecked-range-reads" in up.stderr
