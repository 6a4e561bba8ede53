"""The ssh backend: the nodes file, and real runs over real sshd in containers made
from the node image (a fresh ed25519 key per test session, a known_hosts file from
the containers' own freshly made host keys).  Engine-needing tests skip when no
Docker engine answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.remote import BackendError
from harness.ssh_backend import SshBackend, SshHost, load_nodes_file

ROOT = Path(__file__).resolve().parents[1]
FAST_CONFIG = {"raft": {"heartbeat_ms": 100, "election_timeout_ms": 1000}}


# ------------------------------------------------------------------ the nodes file (no engine)


def test_nodes_file_toml_with_defaults(tmp_path):
    key = tmp_path / "id"
    key.write_text("k")
    f = tmp_path / "nodes.toml"
    f.write_text(f'user = "admin"\nkey = "{key}"\nsudo = true\n'
                 '[[nodes]]\nhost = "10.0.0.1"\n'
                 '[[nodes]]\nhost = "h2"\nport = 2222\nuser = "root"\naddress = "10.0.0.2"\n')
    a, b = load_nodes_file(f)
    assert a == SshHost(host="10.0.0.1", user="admin", key=str(key), sudo=True)
    assert (b.port, b.user, b.address, b.sudo) == (2222, "root", "10.0.0.2", True)


def test_nodes_file_json_list(tmp_path):
    f = tmp_path / "nodes.json"
    f.write_text(json.dumps([{"host": "a"}, {"host": "b", "workdir": "/srv/fl"}]))
    assert [h.workdir for h in load_nodes_file(f)] == ["/tmp/faultline", "/srv/fl"]


@pytest.mark.parametrize("text, message", [
    ('[[nodes]]\nport = 22\n', "nodes[0].host: missing"),
    ('[[nodes]]\nhost = "a"\nport = "22"\n', "nodes[0].port: expected int, got '22'"),
    ('[[nodes]]\nhost = "a"\n[[nodes]]\nhost = "b"\nprot = 22\n', "nodes[1].prot: unknown field"),
    ('[[nodes]]\nhost = "a"\nkey = "/nonexistent/key"\n', "nodes[0].key: no such file"),
    ('[[nodes]]\nhost = "a"\nport = 70000\n', "nodes[0].port: 70000 is not a TCP port"),
    ('user = 3\n[[nodes]]\nhost = "a"\n', "user: expected str"),
    ('nodes = []\n', "'nodes': expected a non-empty list"),
    ('[[nodes]\n', "not valid TOML or JSON"),
])
def test_a_malformed_nodes_file_names_the_file_and_the_field(tmp_path, text, message):
    f = tmp_path / "nodes.toml"
    f.write_text(text)
    with pytest.raises(BackendError) as e:
        load_nodes_file(f)
    assert str(e.value).startswith(f"{f}: ") and message in str(e.value)


def test_a_missing_nodes_file_is_named(tmp_path):
    with pytest.raises(BackendError, match="nope.toml: cannot read the nodes file"):
        load_nodes_file(tmp_path / "nope.toml")


# ------------------------------------------------------------------ sshd in containers


@pytest.fixture(scope="module")
def sshd_hosts(tmp_path_factory):
    """Three containers of the node image running sshd; (dir, nodes file, known_hosts)."""
    from harness.docker_backend import ContainerSet, docker_client
    from harness.docker_image import DockerImageError, ensure_image

    try:
        engine = docker_client()
        image = ensure_image(log=lambda line: None)
    except (BackendError, DockerImageError) as e:
        pytest.skip(str(e))
    d = tmp_path_factory.mktemp("ssh")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "faultline-test",
                    "-f", str(d / "id_ed25519")], check=True)
    pub = (d / "id_ed25519.pub").read_text().strip()
    hosts = ContainerSet(engine, f"sshtest-{os.getpid()}", image, ["h1", "h2", "h3"])
    try:
        hosts.create()
        known = hosts.enable_sshd(pub)
        (d / "known_hosts").write_text("\n".join(known) + "\n")
        (d / "nodes.toml").write_text(
            f'user = "root"\nkey = "{d / "id_ed25519"}"\n'
            + "".join(f'[[nodes]]\nhost = "{ip}"\n' for ip in hosts.addresses.values()))
        yield d, d / "nodes.toml", d / "known_hosts", hosts
    finally:
        hosts.remove()


def _on_host(hosts, name: str, script: str) -> str:
    return hosts.containers[name].exec_run(["sh", "-c", script]).output.decode()


@pytest.mark.docker
def test_an_unknown_host_key_stops_the_run_and_the_opt_out_accepts_it(sshd_hosts, tmp_path):
    d, nodes_file, known, hosts = sshd_hosts
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    strict = SshBackend(tmp_path, load_nodes_file(nodes_file)[:1], FAST_CONFIG, 1,
                        known_hosts=str(empty))
    with pytest.raises(BackendError, match=r"host key unknown to .*known_hosts.*ssh-keyscan"):
        strict._connect("n1")
    loose = SshBackend(tmp_path, load_nodes_file(nodes_file)[:1], FAST_CONFIG, 1,
                       insecure_host_keys=True, progress=lambda m: None)
    with pytest.warns(UserWarning, match="NOT checked"):
        try:
            loose._provision()
            assert loose.run("n1", "id -u").strip() == "0"
        finally:
            loose.close()


@pytest.mark.docker
@pytest.mark.slow
def test_faults_over_ssh_and_nothing_left_on_the_hosts(sshd_hosts, tmp_path):
    d, nodes_file, known, hosts = sshd_hosts
    b = SshBackend(tmp_path, load_nodes_file(nodes_file), FAST_CONFIG, 2,
                   known_hosts=str(known))
    try:
        b.start()
        assert b.link_mode == "direct"
        leader = b.wait_for_leader()
        rest = [n for n in b.node_ids if n != leader]
        b.partition([[leader], rest])
        assert b.run(leader, "iptables -S FAULTLINE").count("DROP") == 4
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and b.leader() in (None, leader):
            time.sleep(0.2)
        assert b.leader() in rest
        b.heal_network()
        b.pause(rest[0])  # SIGSTOP: the host still answers, the node does not
        pid = b.run(rest[0], f"cat {b.nodes[rest[0]].pidfile}").strip()
        assert b.run(rest[0], f"ps -o stat= -p {pid}").strip().startswith("T")
        b.kill(rest[1])
        assert not b.alive(rest[1])
        b.heal_all()
        assert all(b.alive(n) for n in b.node_ids)
        b.wait_for_leader()
    finally:
        b.close()
    for n, host in zip(b.node_ids, hosts.names):
        assert (tmp_path / n / f"{n}.log").stat().st_size > 0
        state = _on_host(hosts, host, "iptables -S; ls /tmp/faultline; ps -eo args")
        assert "FAULTLINE" not in state and b.run_id not in state
        assert "system.node" not in state


@pytest.mark.docker
@pytest.mark.slow
def test_a_20_second_ssh_run_completes_with_a_verdict(sshd_hosts, tmp_path):
    d, nodes_file, known, hosts = sshd_hosts
    spec = tmp_path / "test.toml"
    spec.write_text(f'backend = "ssh"\nnodes_file = "{nodes_file}"\nknown_hosts = "{known}"\n')
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--spec", str(spec), "--nodes", "3",
         "--workload", "set", "--nemesis", "partition-leader", "--time-limit", "20",
         "--seed", "8", "--results-dir", str(tmp_path / "results")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "CI": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verdict: VALID" in out.stdout
    run = (tmp_path / "results" / "latest").resolve()
    assert json.loads((run / "results.json").read_text())["verdict"] == "valid"
    assert (run / "logs" / "n3.log").stat().st_size > 0
    assert "start-partition-leader" in (run / "schedule.jsonl").read_text()


@pytest.mark.docker
@pytest.mark.slow
def test_a_host_without_a_venv_gets_one_from_the_wheelhouse(sshd_hosts, tmp_path):
    d, nodes_file, known, hosts = sshd_hosts
    host = load_nodes_file(nodes_file)[0]
    host.workdir = f"/tmp/faultline-venv-{os.getpid()}"
    b = SshBackend(tmp_path, [host], FAST_CONFIG, 3, known_hosts=str(known),
                   progress=lambda m: None)
    try:
        b._connect("n1")
        python = b._make_venv("n1")
        assert python == f"{host.workdir}/venv/bin/python"
        assert b.run("n1", f"{python} -c 'import aiohttp, msgpack; print(1)'").strip() == "1"
    finally:
        b.run("n1", f"rm -rf {host.workdir}")
        b.close()
