"""Local clusters of reference-store nodes: start, inspect, stop.

The harness reaches the store only through the processes it starts
(``python -m system.node``) and their network APIs, never in-process, so the
same code can drive stores we did not write.  ``cluster.json`` in the
cluster's directory records what was started, so ``status`` and ``down`` work
from another process, and two clusters in two directories never collide
(every port is a fresh one from the kernel).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.admin import (PLACEMENT_S, NodeInfo, Status, leader_of, statuses, to_toml,
                           wait_placed)
from harness.poll import wait_for_leader

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ClusterInfo:
    dir: str
    nodes: list[NodeInfo] = field(default_factory=list)

    def save(self) -> None:
        path = Path(self.dir) / "cluster.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> "ClusterInfo":
        path = Path(directory) / "cluster.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no cluster here (run `faultline cluster up`)") from None
        return cls(data["dir"], [NodeInfo(**n) for n in data["nodes"]])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free ports below the kernel's ephemeral range.

    A node binds its ports a moment after they are chosen; a port from the
    ephemeral range could meanwhile become the local end of some outgoing
    connection (the harness makes hundreds), and the node would fail with
    EADDRINUSE.  Ports below that range are never handed out implicitly.
    All are held until all are known, so they are distinct."""
    low, high = 10000, _ephemeral_low() - 1
    rng = random.SystemRandom()
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, rng.randint(low, high)))
            except OSError:
                s.close()
                continue
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return max(int(fh.read().split()[0]), 12000)
    except (OSError, ValueError, IndexError):
        return 32768


class LocalCluster:
    """N nodes as local processes on loopback, with direct peer links.

    ``config`` is the node configuration as plain data (sections ``raft``,
    ``lease``, ``reads`` and a ``bugs`` list), written to each node's TOML.
    ``links`` maps (from, to) to the address ``from`` dials for ``to``; the
    default is ``to``'s own address (the local backend passes proxies).
    """

    def __init__(self, directory: str | os.PathLike[str], n: int,
                 config: dict[str, Any] | None = None, host: str = "127.0.0.1") -> None:
        self.dir = Path(directory).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = config or {}
        ports = free_ports(3 * n, host)
        ids = [f"n{i + 1}" for i in range(n)]
        self.info = ClusterInfo(str(self.dir), [
            NodeInfo(id=nid, api=f"{host}:{ports[3 * i]}", admin=f"{host}:{ports[3 * i + 1]}",
                     raft=f"{host}:{ports[3 * i + 2]}", data=str(self.dir / nid / "data"),
                     log=str(self.dir / f"{nid}.log"), config=str(self.dir / f"{nid}.toml"))
            for i, nid in enumerate(ids)])
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def nodes(self) -> list[NodeInfo]:
        return self.info.nodes

    def node(self, node_id: str) -> NodeInfo:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"no node {node_id!r} in this cluster")

    def command(self, node: NodeInfo, links: dict[tuple[str, str], tuple[str, str]] | None = None,
                seed: int | None = None) -> list[str]:
        cmd = [sys.executable, "-m", "system.node", "--id", node.id, "--raft", node.raft,
               "--api", node.api, "--admin", node.admin, "--data", node.data,
               "--config", node.config]
        for other in self.nodes:
            if other.id == node.id:
                continue
            raft, api = (links or {}).get((node.id, other.id), (other.raft, other.api))
            cmd += ["--peer", f"{other.id}={raft}/{api}"]
        if seed is not None:
            cmd += ["--seed", str(seed)]
        return cmd

    def start_node(self, node: NodeInfo, links: dict[tuple[str, str], tuple[str, str]] | None = None,
                   seed: int | None = None) -> None:
        Path(node.data).mkdir(parents=True, exist_ok=True)
        Path(node.config).write_text(to_toml(self.config))
        logf = open(node.log, "ab")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        proc = subprocess.Popen(self.command(node, links, seed), stdout=logf, stderr=logf,
                                stdin=subprocess.DEVNULL, cwd=str(ROOT), env=env,
                                start_new_session=True)
        logf.close()
        self.procs[node.id] = proc
        node.pid = proc.pid
        self.info.save()

    def start(self, links: dict[tuple[str, str], tuple[str, str]] | None = None,
              seed: int | None = None, timeout: float = 30.0) -> None:
        """Start every node and wait for a leader; on failure, stop them all."""
        try:
            for i, node in enumerate(self.nodes):
                self.start_node(node, links, None if seed is None else seed + i)
            self.wait_for_leader(timeout, check_exits=True)
            wait_placed(self.nodes, PLACEMENT_S)
        except BaseException:
            self.stop()
            raise

    def statuses(self, timeout: float = 1.0) -> dict[str, Status | None]:
        return statuses(self.nodes, timeout)

    def leader(self) -> str | None:
        """The node that says it leads in the highest term, if any."""
        return leader_of(self.nodes)

    def wait_for_leader(self, timeout: float = 30.0, check_exits: bool = False) -> str:
        """The leader's id, once there is one; with ``check_exits`` (while
        starting) a node that exits is an error rather than a fault."""
        return wait_for_leader(self, timeout, check=self._check_exits if check_exits else None,
                               where=f"; logs in {self.dir}")

    def _check_exits(self) -> None:
        for nid, proc in self.procs.items():
            if proc.poll() is not None:
                log = self.node(nid).log
                raise RuntimeError(f"node {nid} exited with {proc.returncode}; "
                                   f"see {log}:\n{_tail(log)}")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every node: those this process started (their Popen tells a
        live one from a reaped one, whose pid may since be another process's),
        or, for a cluster loaded from cluster.json, the pids it records."""
        if self.procs:
            pids = [p.pid for p in self.procs.values() if p.poll() is None]
        else:
            pids = [n.pid for n in self.nodes if n.pid]
        stop_pids(pids, timeout)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        for n in self.nodes:
            n.pid = None
        self.info.save()


def stop_pids(pids: list[int], timeout: float = 5.0) -> None:
    """SIGCONT (a paused node cannot exit), SIGTERM, then SIGKILL after ``timeout``."""
    live = []
    for pid in pids:
        for sig in (signal.SIGCONT, signal.SIGTERM):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
        else:
            live.append(pid)
    deadline = time.monotonic() + timeout
    while live and time.monotonic() < deadline:
        live = [p for p in live if is_alive(p)]
        time.sleep(0.05)
    for pid in live:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie nobody reaped yet counts as gone."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of someone else's counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
