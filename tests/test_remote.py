"""What the backends share, without an engine or a host: the cut and iptables
rule builders (and which proxy direction a local cut blocks), the node command
line, the shell scripts that start, stop and signal a node (run here on this
machine), the fault bookkeeping over a fake channel, failpoints and crashes
against stand-in admin endpoints, the backend factory, and the leader wait
and pick of every backend."""

from __future__ import annotations

import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from harness import admin, poll, remote
from harness.backends import make_backend, wait_for_leader
from harness.remote import (CHAIN, BackendError, RemoteBackend, RemoteNode, chain_load_script,
                            chain_setup_script, chain_teardown_script, drop_rules, netem_script,
                            node_argv)
from harness.spec import BACKENDS, SpecError, TestSpec
from nemesis.faults import UnsupportedFault, check_support, cuts_of

IDS = ["n1", "n2", "n3"]


def nodes(workdir: str = "/w") -> dict[str, RemoteNode]:
    return {nid: RemoteNode(nid, f"10.0.0.{i + 11}", f"{workdir}/{nid}")
            for i, nid in enumerate(IDS)}


# ------------------------------------------------------------------ cuts and rules


def test_cuts_of_isolation_halves_and_bridge():
    assert cuts_of([["n1"], ["n2", "n3"]], IDS) == {("n1", "n2"), ("n2", "n1"),
                                                    ("n1", "n3"), ("n3", "n1")}
    assert cuts_of([IDS], IDS) == set()
    # a bridge node is in both groups: it talks to everyone, the others not to each other
    assert cuts_of([["n1", "n2"], ["n1", "n3"]], IDS) == {("n2", "n3"), ("n3", "n2")}


def test_drop_rules_direct_links_drop_by_peer_address_at_both_ends():
    rules = drop_rules(cuts_of([["n1"], ["n2", "n3"]], IDS), nodes())
    assert sorted(rules["n1"]) == sorted([
        f"-A {CHAIN} -d 10.0.0.12/32 -j DROP", f"-A {CHAIN} -s 10.0.0.12/32 -j DROP",
        f"-A {CHAIN} -d 10.0.0.13/32 -j DROP", f"-A {CHAIN} -s 10.0.0.13/32 -j DROP"])
    assert sorted(rules["n2"]) == [f"-A {CHAIN} -d 10.0.0.11/32 -j DROP",
                                   f"-A {CHAIN} -s 10.0.0.11/32 -j DROP"]
    assert drop_rules(set(), nodes()) == {"n1": [], "n2": [], "n3": []}


def test_drop_rules_one_way_cut():
    rules = drop_rules({("n1", "n2")}, nodes())
    assert rules == {"n1": [f"-A {CHAIN} -d 10.0.0.12/32 -j DROP"],
                     "n2": [f"-A {CHAIN} -s 10.0.0.11/32 -j DROP"], "n3": []}


def test_local_cuts_block_the_proxy_direction_that_carries_src_to_dst():
    """Link (a, b) is what a dials for b: forward is a -> b (Raft messages, and
    requests a forwards), backward is b -> a (answers to those requests)."""
    from harness.local_backend import blocked_directions

    one_way = {("n1", "n2")}
    assert blocked_directions(("n1", "n2"), one_way) == ["forward"]
    assert blocked_directions(("n2", "n1"), one_way) == ["backward"]
    assert blocked_directions(("n1", "n3"), one_way) == []
    both = cuts_of([["n1"], ["n2", "n3"]], IDS)
    assert blocked_directions(("n3", "n1"), both) == ["forward", "backward"]
    assert blocked_directions(("n2", "n3"), both) == []


def test_drop_rules_proxied_links_drop_the_senders_proxy_ports():
    ports = {("n1", "n2"): ("10.0.0.1", [4001, 4000]), ("n2", "n1"): ("10.0.0.1", [5000, 5001])}
    rules = drop_rules({("n1", "n2")}, nodes(), ports)
    assert rules == {"n1": [f"-A {CHAIN} -d 10.0.0.1/32 -p tcp -m multiport --dports "
                            "4000,4001 -j DROP"], "n2": [], "n3": []}


def test_chain_scripts_are_idempotent_and_replace_the_whole_chain():
    setup = chain_setup_script()
    assert f"-N {CHAIN}" in setup and f"-C INPUT -j {CHAIN}" in setup
    assert f"-I OUTPUT 1 -j {CHAIN}" in setup
    load = chain_load_script(["-A FAULTLINE -d 10.0.0.2/32 -j DROP"])
    assert "iptables-restore -w --noflush" in load and f":{CHAIN} - [0:0]" in load
    assert "COMMIT" in load
    assert f"-X {CHAIN}" in chain_teardown_script()


def _in_private_netns(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True,
                          text=True, timeout=30)


def test_chain_scripts_in_a_private_network_namespace():
    """The generated iptables scripts run for real in a throwaway netns (root only)."""
    if shutil.which("unshare") is None or shutil.which("iptables-restore") is None:
        pytest.skip("needs unshare and iptables")
    probe = _in_private_netns("iptables -w -S")
    if probe.returncode != 0:
        pytest.skip(f"no private network namespace with iptables here: {probe.stderr.strip()}")
    rules = drop_rules(cuts_of([["n1"], ["n2", "n3"]], IDS), nodes())["n1"]
    script = " && ".join([chain_setup_script(), chain_setup_script(),  # twice: one jump
                          chain_load_script(["-A FAULTLINE -d 9.9.9.9/32 -j DROP"]),
                          chain_load_script(rules), "iptables -w -S",
                          chain_load_script([]), "echo HEALED", "iptables -w -S",
                          chain_teardown_script(), "echo GONE", "iptables -w -S"])
    out = _in_private_netns(script)
    assert out.returncode == 0, out.stderr
    loaded, healed = out.stdout.split("HEALED")
    healed, gone = healed.split("GONE")
    assert loaded.count(f"-A INPUT -j {CHAIN}") == 1 and loaded.count(f"-A OUTPUT -j {CHAIN}") == 1
    assert "9.9.9.9" not in loaded  # replaced, not appended
    assert sum(line.startswith(f"-A {CHAIN}") for line in loaded.splitlines()) == 4
    assert f"-A {CHAIN}" not in healed and f"-N {CHAIN}" in healed
    assert CHAIN not in gone


def test_netem_script_shapes_only_peer_traffic_and_zero_removes_it():
    s = netem_script(["10.0.0.12", "10.0.0.13"], 50, 0.1)
    assert "netem delay 50ms loss 10%" in s and "prio bands 4" in s
    assert s.count("u32 match ip dst") == 2 and "10.0.0.13/32" in s
    off = netem_script(["10.0.0.12"], 0, 0)
    assert "netem" not in off and "qdisc del" in off


# ------------------------------------------------------------------ node command and scripts


def test_node_argv_peers_and_links():
    ns = nodes()
    argv = node_argv(ns["n1"], list(ns.values()), seed=7)
    assert argv[:3] == ["python3", "-m", "system.node"]
    assert "--peer" in argv and "n2=10.0.0.12:7000/10.0.0.12:8000" in argv
    assert argv[-2:] == ["--seed", "7"] and "--data" in argv and "/w/n1/data" in argv
    via = node_argv(ns["n1"], list(ns.values()), {("n1", "n2"): ("10.0.0.1:4000", "10.0.0.1:4001")})
    assert "n2=10.0.0.1:4000/10.0.0.1:4001" in via and "n3=10.0.0.13:7000/10.0.0.13:8000" in via
    assert "--seed" not in via


def _sh(script: str) -> int:
    return subprocess.run(["sh", "-c", script], timeout=30).returncode


def _state(pid: int) -> str:
    return subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True,
                          text=True).stdout.strip()


def test_start_signal_kill_and_stop_scripts_on_this_machine(tmp_path):
    """The very scripts both backends send, run with sh here on a sleeping stand-in."""
    node = RemoteNode("n1", "127.0.0.1", str(tmp_path / "n1"), python=sys.executable)
    argv = [sys.executable, "-c", "import sys, time; print('up', flush=True); time.sleep(120)",
            "--config", node.config]  # as the node's own command line names it
    assert _sh(remote.start_script(node, argv)) == 0
    pid = int(Path(node.pidfile).read_text())  # written before the script returns
    try:
        # by a shell that has exec'd the node already: the other scripts know it as the node
        assert _sh(remote.alive_script(node)) == 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
                Path(node.log).exists() and "up" in Path(node.log).read_text()):
            time.sleep(0.05)
        assert os.getsid(pid) == pid  # its own session: not killed with the channel
        assert _sh(remote.signal_script(node, "STOP")) == 0
        time.sleep(0.2)
        assert _state(pid).startswith("T")
        assert _sh(remote.kill_script(node)) == 0  # continues, kills and waits
        assert _sh(remote.alive_script(node)) != 0
        assert _sh(remote.kill_script(node)) == 0  # again: nothing to do
        assert Path(node.data).is_dir()
        # a restart appends to the same log; stop is TERM then KILL
        assert _sh(remote.start_script(node, argv)) == 0
        while time.monotonic() < deadline and Path(node.log).read_text().count("up") < 2:
            time.sleep(0.05)
        pid = int(Path(node.pidfile).read_text())
        assert _sh(remote.stop_script(node, grace_s=2)) == 0
        assert _sh(remote.alive_script(node)) != 0
        assert Path(node.log).read_text().count("up") == 2
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_scripts_never_signal_a_process_that_took_the_nodes_old_pid(tmp_path):
    """Once the node is gone its pid may be any process's: the pid file then names
    a stranger, whose command line lacks the node's config file (a path that only
    begins like it is not it)."""
    node = RemoteNode("n1", "127.0.0.1", str(tmp_path / "n1"))
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                                 "--config", node.config + ".old"])
    try:
        Path(node.workdir).mkdir(parents=True)
        Path(node.pidfile).write_text(f"{stranger.pid}\n")
        assert _sh(remote.alive_script(node)) != 0
        for script in (remote.signal_script(node, "STOP"), remote.kill_script(node),
                       remote.stop_script(node, grace_s=0.1)):
            assert _sh(script) == 0
        time.sleep(0.2)
        assert stranger.poll() is None and not _state(stranger.pid).startswith("T")
    finally:
        stranger.kill()
        stranger.wait()


# ------------------------------------------------------------------ the base class over a fake channel


class FakeBackend(RemoteBackend):
    """Records every script; hosts 'freeze' like docker containers."""

    name = "fake"
    freezes_hosts = True

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, 3, {}, 1)
        self.nodes = nodes()
        self.scripts: list[tuple[str, str]] = []
        self.frozen: set[str] = set()
        #: nodes whose process is gone, as the alive script sees it
        self.exited: set[str] = set()

    def _sh(self, node, script, *, timeout=60.0):
        assert node not in self.frozen, f"exec in frozen {node}"
        self.scripts.append((node, script))
        if script == remote.alive_script(self.nodes[node]):
            return (1 if node in self.exited else 0), ""
        return 0, ""

    def _fetch(self, node, dest):
        (dest / f"{node}.log").write_text("log")

    def _provision(self):
        return list(nodes().values()), "10.0.0.1"

    def _release(self):
        self.released = True

    def _freeze(self, node):
        self.frozen.add(node)

    def _thaw(self, node):
        self.frozen.discard(node)

    def loads(self, node: str) -> list[str]:
        return [s for n, s in self.scripts if n == node and "iptables-restore" in s]


def test_partition_of_a_frozen_host_waits_for_its_resume(tmp_path):
    b = FakeBackend(tmp_path)
    b.pause("n1")
    b.partition([["n1"], ["n2", "n3"]])
    assert b.loads("n1") == [] and len(b.loads("n2")) == 1  # its peers cut it off already
    b.resume("n1")
    assert len(b.loads("n1")) == 1 and "10.0.0.12" in b.loads("n1")[0]
    b.pause("n2")
    b.kill("n2")  # a frozen node is resumed before it is killed
    assert "n2" not in b.paused and "n2" in b.killed
    b.heal_all()
    assert not b.killed and not b.paused
    assert all(":FAULTLINE - [0:0]\nCOMMIT" in b.loads(n)[-1] for n in IDS)


def test_killing_a_killed_node_asks_its_host_nothing(tmp_path):
    b = FakeBackend(tmp_path)
    b.kill("n2")
    b.kill("n2")
    assert sum("kill -9" in s for _, s in b.scripts) == 1 and b.killed == {"n2"}


# ------------------------------------------------------------------ failpoints and crashes


class FakeAdmin:
    """A node's admin endpoint on loopback, as far as failpoints go: records every
    request; without ``failpoints`` it has no such route (404).  A crash op gets
    no answer (the connection just closes) and calls ``on_crash``."""

    def __init__(self, failpoints: bool = True, on_crash=lambda: None, port: int = 0) -> None:
        self.requests: list[tuple[str, dict | None]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                fake.requests.append(("GET", None))
                if not failpoints:
                    self._answer(404, {"error": "Not Found"})
                else:
                    self._answer(200, {"fsync_delay_ms": 0, "fsync_stall": False})

            def do_POST(self):
                op = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(("POST", op))
                if not failpoints:
                    self._answer(404, {"error": "Not Found"})
                elif "crash" in op:
                    on_crash()
                    self.close_connection = True
                elif op.get("fsync_delay_ms", 0) < 0:
                    self._answer(400, {"error": "fsync_delay_ms must be >= 0"})
                else:
                    self._answer(200, op)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()

    def info(self, nid: str = "n1") -> admin.NodeInfo:
        return admin.NodeInfo(nid, "-", f"127.0.0.1:{self.port}", "-", "-", "-", "-")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_admin():
    made: list[FakeAdmin] = []

    def make(**kw) -> FakeAdmin:
        made.append(FakeAdmin(**kw))
        return made[-1]
    yield make
    for a in made:
        a.close()


def test_post_failpoint_returns_the_answer_and_names_the_node_and_op_on_errors(fake_admin):
    fa = fake_admin()
    assert admin.post_failpoint(fa.info(), {"fsync_delay_ms": 120}) == {"fsync_delay_ms": 120}
    with pytest.raises(RuntimeError, match=r'failpoint \{"fsync_delay_ms": -1\} on n1: HTTP 400: '
                                           r'.*must be >= 0'):
        admin.post_failpoint(fa.info(), {"fsync_delay_ms": -1})
    assert admin.post_failpoint(fa.info(), {"crash": "lose-unsynced"}) == {}  # no answer: fine
    gone = fa.info()
    fa.close()
    for op in ({"fsync_stall": True}, {"crash": "lose-unsynced"}):  # never got there
        with pytest.raises(admin.NotDelivered, match=r"failpoint \{.*\} on n1: .*refused"):
            admin.post_failpoint(gone, op)


def test_a_crash_is_asked_again_until_the_node_listens(fake_admin):
    """A node restarted a moment ago does not listen yet: its crash waits for it."""
    from harness.cluster import free_ports

    port = free_ports(1)[0]
    later = threading.Timer(0.3, lambda: fake_admin(port=port))
    later.start()
    info = admin.NodeInfo("n1", "-", f"127.0.0.1:{port}", "-", "-", "-", "-")
    admin.post_crash(info, timeout=10)
    later.join()
    with pytest.raises(admin.NotDelivered, match=r"on n2: .*refused.* \(asked for 0.2 s\)"):
        admin.post_crash(admin.NodeInfo("n2", "-", f"127.0.0.1:{free_ports(1)[0]}", "-", "-",
                                        "-", "-"), timeout=0.2)


def test_get_failpoints_is_none_for_a_store_without_the_route(fake_admin):
    assert admin.get_failpoints(fake_admin().info()) == {"fsync_delay_ms": 0,
                                                         "fsync_stall": False}
    assert admin.get_failpoints(fake_admin(failpoints=False).info()) is None


def _with_admins(b: FakeBackend, make) -> dict[str, FakeAdmin]:
    """Point every node of ``b`` at an admin endpoint of its own."""
    admins = {}
    for nid in IDS:
        admins[nid] = make(on_crash=lambda nid=nid: b.exited.add(nid))
        b.nodes[nid].address, b.nodes[nid].admin_port = "127.0.0.1", admins[nid].port
    return admins


def _posts(a: FakeAdmin) -> list[dict]:
    return [op for verb, op in a.requests if verb == "POST"]


def test_failpoints_are_cleared_at_heal_on_the_nodes_that_still_have_them(tmp_path, fake_admin):
    b = FakeBackend(tmp_path)
    fa = _with_admins(b, fake_admin)
    b.failpoint("n1", fsync_stall=True)
    b.failpoint("n2", fsync_delay_ms=100)
    b.failpoint("n3", clear=True)       # none set: nothing to ask
    b.kill("n1")                        # its restart will have none
    b.heal_all()
    assert _posts(fa["n1"]) == [{"fsync_stall": True}]
    assert _posts(fa["n2"]) == [{"fsync_delay_ms": 100}, {"clear": True}]
    assert _posts(fa["n3"]) == [] and not b.failpointed
    with pytest.raises(RuntimeError, match="failpoint .* on n2: HTTP 400"):
        b.failpoint("n2", fsync_delay_ms=-1)
    assert not b.failpointed


def test_crash_resumes_posts_lose_unsynced_waits_until_gone_and_restart_revives(
        tmp_path, fake_admin):
    b = FakeBackend(tmp_path)
    fa = _with_admins(b, fake_admin)
    b.failpoint("n1", fsync_delay_ms=300)
    b.pause("n1")
    b.crash("n1")
    assert _posts(fa["n1"])[-1] == {"crash": "lose-unsynced"} and "n1" not in b.frozen
    assert b.killed == {"n1"} and not b.paused and not b.failpointed
    b.crash("n1")                       # down already: asks nothing
    b.kill("n1")
    assert len(_posts(fa["n1"])) == 2 and not any("kill -9" in s for _, s in b.scripts)
    b.heal_all()
    assert not b.killed and any("system.node" in s for n, s in b.scripts if n == "n1")


def test_a_crash_that_leaves_the_node_running_is_an_error(tmp_path, fake_admin, monkeypatch):
    b = FakeBackend(tmp_path)
    monkeypatch.setattr(remote, "CRASH_EXIT_S", 0.3)
    b.nodes["n2"].address, b.nodes["n2"].admin_port = "127.0.0.1", fake_admin().port
    with pytest.raises(BackendError, match="fake node n2 still runs 0.3 s after its crash"):
        b.crash("n2")
    assert not b.killed


def test_check_support_asks_the_store_whether_it_has_failpoints(tmp_path, fake_admin):
    b = FakeBackend(tmp_path)
    _with_admins(b, fake_admin)
    check_support(b, ["power-loss"])
    b.nodes["n1"].admin_port = fake_admin(failpoints=False).port
    with pytest.raises(UnsupportedFault, match="--nemesis disk-stall: the system under test "
                                               "has no failpoints"):
        check_support(b, ["kill", "disk-stall"])


def test_close_resumes_stops_collects_and_releases_even_when_called_twice(tmp_path):
    b = FakeBackend(tmp_path)
    b.pause("n3")
    b.close()
    b.close()
    assert b.released and not b.frozen
    assert [p.name for p in b.log_files()] == ["n1.log", "n2.log", "n3.log"]
    assert any("kill -TERM" in s for n, s in b.scripts if n == "n3")


def test_delay_without_shaping_links_is_refused(tmp_path):
    b = FakeBackend(tmp_path)
    with pytest.raises(BackendError, match="--nemesis"):
        b.set_delay(50)
    b.set_delay(0)  # removing nothing is fine


def test_sigint_held_until_the_block_is_done():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with remote.interrupts_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            done.append(True)
    assert done == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_extract_tree_drops_the_top_folder_and_refuses_escapes(tmp_path):
    from harness.docker_backend import extract_tree

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("faultline/n1.log", b"log"), ("faultline/data/wal", b"w"),
                           ("faultline/../../evil", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    extract_tree(buf.getvalue(), tmp_path / "out")
    assert (tmp_path / "out" / "n1.log").read_bytes() == b"log"
    assert (tmp_path / "out" / "data" / "wal").read_bytes() == b"w"
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()


# ------------------------------------------------------------------ selection


def test_backends_and_the_ssh_spec_fields():
    assert set(BACKENDS) == {"local", "docker", "ssh"}
    with pytest.raises(SpecError, match="--nodes-file"):
        TestSpec(backend="ssh")
    spec = TestSpec(backend="ssh", nodes_file="n.toml", known_hosts="kh")
    assert spec.to_dict()["nodes_file"] == "n.toml" and spec.insecure_host_keys is False


def test_make_backend_builds_each_backend_without_starting_it(tmp_path):
    from harness.docker_backend import DockerBackend
    from harness.local_backend import LocalBackend
    from harness.ssh_backend import SshBackend

    local = make_backend(TestSpec(nodes=3), tmp_path / "l", 1)
    assert isinstance(local, LocalBackend)
    local.close()
    docker = make_backend(TestSpec(backend="docker", nodes=3, nemesis=["delay"]), tmp_path, 1)
    assert isinstance(docker, DockerBackend) and docker.shaping and docker.node_ids == IDS
    nf = tmp_path / "nodes.toml"
    nf.write_text('user = "u"\n' + '[[nodes]]\nhost = "10.1.1.1"\n' * 3)
    ssh = make_backend(TestSpec(backend="ssh", nodes=3, nodes_file=str(nf)), tmp_path, 1)
    assert isinstance(ssh, SshBackend) and not ssh.shaping
    assert [h.user for h in ssh.hosts.values()] == ["u"] * 3
    with pytest.raises(BackendError, match="lists 3 node.*asks for 5"):
        make_backend(TestSpec(backend="ssh", nodes=5, nodes_file=str(nf)), tmp_path, 1)


def test_wait_for_leader_polls_the_backend():
    class B:
        node_ids = IDS
        calls = 0

        def leader(self):
            self.calls += 1
            return "n2" if self.calls >= 3 else None

    assert wait_for_leader(B(), timeout=5) == "n2"  # type: ignore[arg-type]

    class Never(B):
        def leader(self):
            return None

    with pytest.raises(TimeoutError):
        wait_for_leader(Never(), timeout=0.3)  # type: ignore[arg-type]


def test_wait_for_leader_runs_the_check_between_polls_and_names_where():
    class Dead:
        node_ids = IDS

        def leader(self):
            return None

    def check():
        raise BackendError("node n2 exited")

    with pytest.raises(BackendError, match="n2 exited"):
        poll.wait_for_leader(Dead(), timeout=5, check=check)
    with pytest.raises(TimeoutError, match="no leader within 0.2 s on the fake backend"):
        poll.wait_for_leader(Dead(), timeout=0.2, where=" on the fake backend")


def test_poll_calls_until_an_answer_or_the_deadline():
    answers = iter([None, None, 7])
    assert poll.poll(lambda: next(answers), timeout=5, interval=0.01) == 7
    calls = []
    t0 = time.monotonic()
    assert poll.poll(lambda: calls.append(1), timeout=0.1, interval=0.02) is None
    assert time.monotonic() - t0 >= 0.1 and len(calls) >= 2  # once more at the deadline
    assert poll.poll(lambda: calls.append(1), timeout=0) is None and len(calls) >= 3


def test_the_leader_is_the_one_in_the_highest_term():
    assert admin.pick_leader({"n1": {"role": "leader", "term": 3},
                              "n2": {"role": "leader", "term": 5},
                              "n3": {"role": "follower", "term": 5}, "n4": None}) == ("n2", 5)
    assert admin.pick_leader({"n1": {"role": "candidate", "term": 9}, "n2": None}) is None
    assert admin.pick_leader({}) is None


def test_a_backend_asks_only_its_running_nodes_who_leads_and_in_which_term(tmp_path,
                                                                           monkeypatch):
    asked: list[list[str]] = []

    def statuses(infos, timeout=1.0):
        asked.append([i.id for i in infos])
        return {"n2": {"role": "leader", "term": 4}, "n3": {"role": "follower", "term": 4}}

    monkeypatch.setattr(admin, "statuses", statuses)
    b = FakeBackend(tmp_path)
    b.pause("n1")
    assert b.leader_term() == ("n2", 4) and b.leader() == "n2"
    assert asked == [["n2", "n3"], ["n2", "n3"]]


def test_statuses_of_nodes_that_do_not_answer_are_none():
    from harness.cluster import free_ports

    port = free_ports(1)[0]  # nobody listens
    nodes = [admin.NodeInfo(nid, "-", f"127.0.0.1:{port}", "-", "-", "-", "-") for nid in IDS]
    assert admin.statuses(nodes, timeout=0.5) == {"n1": None, "n2": None, "n3": None}
    assert admin.leader_of(nodes) is None


_FAKE_NODE = """
import http.server, json, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        op = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if "crash" in op:
            os._exit(137)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_local_backend_crash_waits_for_the_process_to_exit(tmp_path):
    """A stand-in node process that exits with 137 on its crash failpoint, as the
    store does: the backend sees it gone and counts it killed, failpoints and all."""
    from harness.local_backend import LocalBackend

    backend = LocalBackend(tmp_path, 1, {}, seed=1)
    info = backend.cluster.node("n1")
    proc = subprocess.Popen([sys.executable, "-c", _FAKE_NODE, info.admin.rsplit(":", 1)[1]])
    backend.cluster.procs["n1"] = proc
    try:
        assert poll.poll(lambda: _answers(info) or None, timeout=10)  # listening
        backend.failpoint("n1", fsync_stall=True)
        assert backend.failpointed == {"n1"}
        backend.crash("n1")
        assert proc.returncode == 137
        assert backend.killed == {"n1"} and not backend.failpointed
    finally:
        proc.kill()
        proc.wait()


def _answers(info: admin.NodeInfo) -> bool:
    try:
        admin.post_failpoint(info, {"clear": True})
        return True
    except RuntimeError:
        return False


@pytest.mark.cluster
def test_local_backend_never_signals_a_node_it_already_killed(tmp_path, monkeypatch):
    """A killed node's pid may be reused by any process once it is reaped:
    killing or pausing that node again must signal nothing."""
    from harness.local_backend import LocalBackend

    backend = LocalBackend(tmp_path, 3, {"raft": {"heartbeat_ms": 50,
                                                  "election_timeout_ms": 600}}, seed=1)
    try:
        backend.start(timeout=30)
        old = backend.cluster.procs["n1"].pid
        backend.kill("n1")
        sent: list[tuple[int, int]] = []
        monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
        backend.kill("n1")
        backend.pause("n1")
        backend.resume("n1")
        assert sent == [] and backend.killed == {"n1"} and not backend.paused
        monkeypatch.undo()
        backend.restart("n1")
        assert backend.cluster.procs["n1"].pid != old
        backend.pause("n1")
        assert backend.paused == {"n1"}
        backend.resume("n1")
        assert backend.cluster.procs["n1"].poll() is None
    finally:
        backend.close()
