"""The local backend: nodes as processes on loopback, faults by proxies and signals.

Every peer link (Raft messages, and DynamoDB requests a follower forwards to
the leader) passes through a TCP proxy the harness owns, one per direction
and node pair, so a partition is a set of blocked proxy directions (see
:func:`blocked_directions` for which carries what); pause and resume are
SIGSTOP/SIGCONT, kill is SIGKILL and restart reuses the data directory;
clock faults, disk failpoints and crashes go through each node's admin
endpoint.  ``heal_all`` undoes everything; ``close`` also stops the nodes
and proxies, and is safe to call twice and after a failed start.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

from harness.admin import (CRASH_EXIT_S, NodeInfo, admin_post, get_failpoints,
                           leader_and_term, leader_of, post_clock, post_crash, set_failpoint,
                           statuses)
from harness.cluster import LocalCluster
from nemesis.faults import Cut, cuts_of
from nemesis.proxy import ProxyPool

log = logging.getLogger("backend")


def blocked_directions(link: Cut, cuts: Collection[Cut]) -> list[str]:
    """Which directions of the proxies on ``link = (a, b)`` drop bytes under ``cuts``.

    ``a`` dials ``b`` through the link's proxies.  Raft: ``a`` only writes on
    its connection and ``b`` answers on its own (``b -> a``), so ``forward``
    carries ``a``'s messages to ``b``.  API: a request ``a`` forwards to ``b``
    goes ``forward`` and ``b``'s answer comes back ``backward`` on the same
    connection.  So ``forward`` is ``a -> b`` and ``backward`` is ``b -> a`` on
    both, and a cut ``(src, dst)`` blocks the forward direction of
    ``(src, dst)``'s proxies and the backward one of ``(dst, src)``'s."""
    a, b = link
    return [d for d, pair in (("forward", (a, b)), ("backward", (b, a))) if pair in cuts]


class LocalBackend:
    """Implements :class:`nemesis.faults.Backend` for a :class:`LocalCluster`."""

    def __init__(self, directory: str | os.PathLike[str], n: int, config: dict[str, Any],
                 seed: int) -> None:
        self.cluster = LocalCluster(directory, n, config)
        #: the store's Raft groups (the group faults aim at non-default ones)
        self.raft_groups = int(config.get("shards", {}).get("groups", 1))
        self.node_ids = [node.id for node in self.cluster.nodes]
        self.seed = seed
        self.pool = ProxyPool()
        self.links: dict[tuple[str, str], tuple[str, str]] = {}
        self._proxies: dict[tuple[str, str], list[Any]] = {}
        self.paused: set[str] = set()
        self.killed: set[str] = set()
        self.skewed: set[str] = set()
        #: nodes whose process has a failpoint set (a killed or crashed one has none)
        self.failpointed: set[str] = set()
        self._lock = threading.RLock()

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60.0) -> None:
        self.pool.start()
        for i, a in enumerate(self.cluster.nodes):
            for j, b in enumerate(self.cluster.nodes):
                if a.id == b.id:
                    continue
                seed = self.seed * 1000 + i * 31 + j
                raft = self.pool.add(_hostport(b.raft), seed=seed, name=f"{a.id}->{b.id} raft")
                api = self.pool.add(_hostport(b.api), seed=seed + 500, name=f"{a.id}->{b.id} api")
                self._proxies[(a.id, b.id)] = [raft, api]
                self.links[(a.id, b.id)] = (f"127.0.0.1:{raft.port}", f"127.0.0.1:{api.port}")
        self.cluster.start(links=self.links, seed=self.seed, timeout=timeout)

    def endpoints(self) -> list[tuple[str, str]]:
        return [(n.id, n.endpoint) for n in self.cluster.nodes]

    def log_files(self) -> list[Path]:
        return [Path(n.log) for n in self.cluster.nodes]

    def heal_all(self) -> None:
        """Every fault removed: links open, clocks reset, failpoints cleared, nodes
        resumed and restarted."""
        with self._lock:
            self.pool.heal_all(reset_dirty=True)  # blocks, cuts, delay and loss
            for node in sorted(self.paused):
                self.resume(node)
            for node in sorted(self.failpointed):
                try:
                    self.failpoint(node, clear=True)
                except (OSError, RuntimeError) as e:
                    log.warning("could not clear the failpoints of %s: %s", node, e)
            for node in sorted(self.killed):
                self.restart(node)
            for node in sorted(self.skewed):
                try:
                    self.clock(node, reset=True)
                except OSError as e:
                    log.warning("could not reset the clock of %s: %s", node, e)

    def close(self) -> None:
        try:
            self.heal_all()
        finally:
            try:
                self.cluster.stop()
            finally:
                self.pool.close()

    # ------------------------------------------------------------ Backend

    def _running(self) -> list[NodeInfo]:
        """The nodes that run: asking a stopped one who leads would only cost a timeout."""
        return [n for n in self.cluster.nodes
                if n.id not in self.paused and n.id not in self.killed]

    def leader(self) -> str | None:
        return leader_of(self._running())

    def leader_term(self, group: int = 0) -> tuple[str, int] | None:
        return leader_and_term(self._running(), group=group)

    def node_statuses(self) -> dict[str, dict[str, Any] | None]:
        """Each running node's ``/status`` (None where it does not answer)."""
        return statuses(self._running(), timeout=2.0)

    def partition(self, groups: list[list[str]]) -> None:
        self.cut(cuts_of(groups, self.node_ids))

    def cut(self, cuts: Iterable[Cut]) -> None:
        pairs = set(cuts)
        with self._lock:
            for link, proxies in self._proxies.items():
                blocked = blocked_directions(link, pairs)
                for p in proxies:  # a connection cut mid-frame would stay out of step: reset it
                    p.set_blocked(blocked, reset_dirty=True)

    def heal_network(self) -> None:
        self.cut(())

    def clock(self, node: str, **op: Any) -> None:
        post_clock(self.cluster.node(node), op)
        with self._lock:
            (self.skewed.discard if op.get("reset") else self.skewed.add)(node)

    def _signal(self, node: str, sig: int) -> bool:
        """Signal this run's process of ``node``, if it still runs.  Through
        its Popen, never a bare pid: once a killed node is reaped its pid may
        belong to any process on the host."""
        proc = self.cluster.procs.get(node)
        if proc is None or proc.poll() is not None:
            return False
        proc.send_signal(sig)
        return True

    def kill(self, node: str) -> None:
        with self._lock:
            if node in self.killed:
                return
            self._signal(node, signal.SIGCONT)
            if self._signal(node, signal.SIGKILL):
                self.cluster.procs[node].wait(timeout=10)
            self._gone(node)

    def _gone(self, node: str) -> None:
        """The node's process exited: it is neither paused nor failpointed any more."""
        self.paused.discard(node)
        self.failpointed.discard(node)
        self.killed.add(node)

    def crash(self, node: str) -> None:
        with self._lock:
            if node in self.killed:
                return
            self.resume(node)  # a stopped process cannot take the request
            post_crash(self.cluster.node(node))
            try:
                code = self.cluster.procs[node].wait(timeout=CRASH_EXIT_S)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{node} still runs {CRASH_EXIT_S:g} s after its crash "
                                   "failpoint") from None
            log.info("%s crashed (exit status %s)", node, code)
            self._gone(node)

    def failpoint(self, node: str, **op: Any) -> None:
        with self._lock:
            set_failpoint(self.cluster.node(node), op, self.failpointed)

    def failpoint_settings(self, node: str) -> dict[str, Any] | None:
        return get_failpoints(self.cluster.node(node))

    def restart(self, node: str) -> None:
        with self._lock:
            if node in self.killed:
                self.cluster.start_node(self.cluster.node(node), self.links)
                self.killed.discard(node)

    def pause(self, node: str) -> None:
        with self._lock:
            if node not in self.killed and self._signal(node, signal.SIGSTOP):
                self.paused.add(node)

    def resume(self, node: str) -> None:
        with self._lock:
            if node in self.paused:
                self._signal(node, signal.SIGCONT)
            self.paused.discard(node)

    def transfer_leadership(self, leader: str, to: str | None = None,
                            group: int = 0) -> str | None:
        body: dict[str, Any] = {"group": group} if group else {}
        if to:
            body["to"] = to
        return admin_post(self.cluster.node(leader), "/transfer", body).get("transfer_to")

    def set_delay(self, ms: float) -> None:
        for proxies in self._proxies.values():
            for p in proxies:
                p.set_delay(ms)

    def set_loss(self, p: float) -> None:
        for proxies in self._proxies.values():
            for px in proxies:
                px.set_loss(p)


def _hostport(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)
