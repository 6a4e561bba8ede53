"""What the docker and ssh backends share: nodes on other hosts, driven by shell.

A remote node is a ``python -m system.node`` process on a host the harness
reaches over some command channel (``docker exec`` for the docker backend,
SSH for the ssh backend).  Everything that is the same on both lives here,
in :class:`RemoteBackend`; a subclass supplies only the channel
(:meth:`RemoteBackend._sh`, ``_put``, ``_fetch``) and how hosts come and go
(``_provision``, ``_release``).

Faults, as the remote hosts see them:

* **partitions** are iptables DROP rules in a chain of our own,
  :data:`CHAIN`, jumped to from INPUT and OUTPUT.  A partition is a set of
  *cuts*, ordered pairs ``(src, dst)``: what ``src`` sends ``dst`` is lost.
  The whole chain of a host is replaced at once (``iptables-restore
  --noflush`` declaring the chain flushes it and loads the new rules in one
  transaction), so healing is replacing it with nothing and the harness never
  touches another chain's rules.  With direct peer links a cut drops by peer
  IP, at both ends; with peer links through harness proxies (below) it drops
  the sender's packets to the proxy ports of that link.
* **kill / restart**: SIGKILL to the node's pid (kept in a pid file); restart
  runs the same command on the same data directory.  Every script that
  signals the pid first checks that it is still this run's node (its command
  line names the node's config file, unique per node and run): once the node
  exits the host may give its pid to any other process.
* **pause / resume**: SIGSTOP / SIGCONT by default (the docker backend uses
  the cgroup freezer instead).
* **clocks, leadership transfer, disk failpoints and crashes**: the node's
  admin endpoint over HTTP, as on the local backend; after a crash the
  harness polls until the process is gone.
* **delay and loss**: ``tc netem`` on the peer traffic when the hosts' kernel
  has it (probed at start), otherwise harness-owned TCP proxies
  (:class:`nemesis.proxy.ProxyPool`) on every peer link.  Peer links go
  through proxies only when the test asks for delay or loss and netem is
  missing; partitions then stay iptables rules.

``close`` heals, stops the nodes, copies every node's folder (log, config,
data) into the run's folder and releases the hosts, whatever happened before;
a Ctrl-C while it runs is held until it is done.
"""

from __future__ import annotations

import abc
import concurrent.futures
import contextlib
import logging
import shlex
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from harness.admin import (CRASH_EXIT_S, PLACEMENT_S, NodeInfo, admin_post, get_failpoints,
                           leader_and_term, leader_of, post_clock, post_crash, set_failpoint,
                           statuses, to_toml, wait_placed)
from harness.poll import poll, wait_for_leader
from nemesis.faults import Cut, cuts_of
from nemesis.proxy import LinkProxy, ProxyPool

log = logging.getLogger("backend")

T = TypeVar("T")

#: The iptables chain the harness owns on every node host.
CHAIN = "FAULTLINE"
RAFT_PORT, API_PORT, ADMIN_PORT = 7000, 8000, 9000
#: Faults that shape peer traffic (netem or proxies).
SHAPING_FAULTS = frozenset({"delay", "loss"})

Links = dict[tuple[str, str], tuple[str, str]]


class BackendError(RuntimeError):
    """A backend that cannot do its job; the message names what is missing."""


# --------------------------------------------------------------------------- nodes


@dataclass
class RemoteNode:
    """One node on a remote host: its addresses and its folder there."""

    id: str
    #: the IP address peers and the harness reach the node at (iptables matches it)
    address: str
    #: the node's folder on its host: log, config, pid file, data
    workdir: str
    python: str = "python3"
    raft_port: int = RAFT_PORT
    api_port: int = API_PORT
    admin_port: int = ADMIN_PORT
    #: prepended to the node's PYTHONPATH (the shipped project source, if any)
    pythonpath: str | None = None

    @property
    def log(self) -> str:
        return f"{self.workdir}/{self.id}.log"

    @property
    def config(self) -> str:
        return f"{self.workdir}/{self.id}.toml"

    @property
    def pidfile(self) -> str:
        return f"{self.workdir}/{self.id}.pid"

    @property
    def data(self) -> str:
        return f"{self.workdir}/data"

    @property
    def raft(self) -> str:
        return f"{self.address}:{self.raft_port}"

    @property
    def api(self) -> str:
        return f"{self.address}:{self.api_port}"

    @property
    def admin(self) -> str:
        return f"{self.address}:{self.admin_port}"

    @property
    def info(self) -> NodeInfo:
        """The node as :mod:`harness.admin` describes one (for its admin endpoint)."""
        return NodeInfo(id=self.id, api=self.api, admin=self.admin, raft=self.raft,
                        data=self.data, log=self.log, config=self.config)


def node_argv(node: RemoteNode, nodes: list[RemoteNode], links: Links | None = None,
              seed: int | None = None) -> list[str]:
    """The node's command line; ``links[(node, peer)]`` overrides a peer's addresses."""
    argv = [node.python, "-m", "system.node", "--id", node.id, "--raft", node.raft,
            "--api", node.api, "--admin", node.admin, "--data", node.data,
            "--config", node.config]
    for other in nodes:
        if other.id != node.id:
            raft, api = (links or {}).get((node.id, other.id), (other.raft, other.api))
            argv += ["--peer", f"{other.id}={raft}/{api}"]
    if seed is not None:
        argv += ["--seed", str(seed)]
    return argv


# --------------------------------------------------------------------------- scripts
# Every action on a host is one POSIX sh script, run as root by the channel.

q = shlex.quote


def _read_pid(node: RemoteNode) -> str:
    """Shell: ``pid`` from the pid file; fails if there is none."""
    return f'pid=$(cat {q(node.pidfile)} 2>/dev/null) && [ -n "$pid" ]'


def _is_node(node: RemoteNode) -> str:
    """Shell: succeeds iff process ``$pid`` is this run's node, i.e. one of its
    arguments is the node's config file (unique per node and run).  Once the
    node exits, its pid is free for any process of the host: a pid file alone
    would have a script signal a stranger.  A zombie's command line is empty."""
    return f"cat /proc/$pid/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -qxF -- {q(node.config)}"


def _node_pid(node: RemoteNode) -> str:
    """Shell: ``pid`` of the node's process; fails unless that process runs."""
    return f"{_read_pid(node)} && {_is_node(node)}"


def _wait_gone(node: RemoteNode, tries: int) -> str:
    return (f"i=0; while [ $i -lt {tries} ] && {_is_node(node)}; "
            "do sleep 0.05; i=$((i+1)); done")


def start_script(node: RemoteNode, argv: list[str]) -> str:
    """Start the node in its own session, detached from the channel; its pid
    goes to the pid file, its output to the log (appended, across restarts).
    Returns once the pid is the node's own (the shell that wrote the pid file
    has exec'd it: until then the other scripts would not know it as the
    node), or has exited at once (the caller's liveness check says so)."""
    env = f"PYTHONPATH={q(node.pythonpath)} " if node.pythonpath else ""
    inner = (f"echo $$ > {q(node.pidfile)}; exec env {env}PYTHONUNBUFFERED=1 "
             f"{shlex.join(argv)} >> {q(node.log)} 2>&1")
    pid = q(node.pidfile)
    settled = f"{_read_pid(node)} && {{ {_is_node(node)} || ! kill -0 $pid 2>/dev/null; }}"
    return (f"mkdir -p {q(node.data)} && cd {q(node.workdir)} && rm -f {pid} && "
            f"{{ nohup setsid sh -c {q(inner)} > /dev/null 2>&1 < /dev/null & }} && "
            f"i=0; until {settled} || [ $i -ge 200 ]; do sleep 0.05; i=$((i+1)); done; "
            f"[ -s {pid} ]")


def signal_script(node: RemoteNode, sig: str) -> str:
    """Send ``sig`` (STOP, CONT, ...) to the node process, if it runs."""
    return f"{_node_pid(node)} && kill -{sig} $pid 2>/dev/null; true"


def kill_script(node: RemoteNode) -> str:
    """SIGKILL the node (continued first, in case it was stopped) and wait until it
    is gone; nothing if it does not run."""
    return (f"{_node_pid(node)} || exit 0; kill -CONT $pid 2>/dev/null; "
            f"kill -9 $pid 2>/dev/null; {_wait_gone(node, 200)}; true")


def stop_script(node: RemoteNode, grace_s: float = 5.0) -> str:
    """SIGTERM the node, SIGKILL it after ``grace_s`` if it still runs."""
    return (f"{_node_pid(node)} || exit 0; kill -CONT $pid 2>/dev/null; "
            f"kill -TERM $pid 2>/dev/null; {_wait_gone(node, int(grace_s / 0.05))}; "
            f"{_is_node(node)} && kill -9 $pid 2>/dev/null; {_wait_gone(node, 100)}; true")


def alive_script(node: RemoteNode) -> str:
    """Exit 0 iff the node process runs (not a zombie, not a stranger with its old pid)."""
    return _node_pid(node)


def put_script(path: str, data: str) -> str:
    """Write ``data`` (text) to ``path`` through the shell (no file transfer needed)."""
    return f"mkdir -p {q(str(Path(path).parent))} && printf %s {q(data)} > {q(path)}"


# --------------------------------------------------------------------------- iptables


def drop_rules(cuts: Iterable[Cut], nodes: dict[str, RemoteNode],
               proxy_ports: dict[Cut, tuple[str, list[int]]] | None = None
               ) -> dict[str, list[str]]:
    """iptables rules (``-A CHAIN ...`` lines) per node host for ``cuts``.

    Direct links: the cut ``src -> dst`` drops, at ``src``, what goes to
    ``dst``'s address and, at ``dst``, what comes from ``src``'s.  Proxied
    links (``proxy_ports[(src, dst)] = (proxy_host, ports)``): ``src`` drops
    what it sends to that link's proxy ports (``dst`` sees only the proxy's
    address, so cannot tell ``src``'s traffic apart).  Every host gets an
    entry, empty when nothing is cut there.
    """
    rules: dict[str, list[str]] = {nid: [] for nid in nodes}
    for src, dst in sorted(cuts):
        if proxy_ports is not None:
            host, ports = proxy_ports[(src, dst)]
            rules[src].append(f"-A {CHAIN} -d {host}/32 -p tcp -m multiport --dports "
                              f"{','.join(str(p) for p in sorted(ports))} -j DROP")
        else:
            rules[src].append(f"-A {CHAIN} -d {nodes[dst].address}/32 -j DROP")
            rules[dst].append(f"-A {CHAIN} -s {nodes[src].address}/32 -j DROP")
    return rules


def chain_setup_script() -> str:
    """Create the chain (if missing) and jump to it first from INPUT and OUTPUT (once)."""
    lines = [f"iptables -w -N {CHAIN} 2>/dev/null || true"]
    for hook in ("INPUT", "OUTPUT"):
        lines.append(f"iptables -w -C {hook} -j {CHAIN} 2>/dev/null || "
                     f"iptables -w -I {hook} 1 -j {CHAIN}")
    return " && ".join(lines)


def chain_load_script(rules: list[str]) -> str:
    """Replace the chain's rules with ``rules`` in one iptables-restore transaction."""
    body = "\n".join(["*filter", f":{CHAIN} - [0:0]", *rules, "COMMIT", ""])
    return f"printf %s {q(body)} | iptables-restore -w --noflush"


def chain_teardown_script() -> str:
    """Remove the jumps and the chain (for hosts that outlive the run)."""
    return "; ".join([f"iptables -w -D INPUT -j {CHAIN} 2>/dev/null",
                      f"iptables -w -D OUTPUT -j {CHAIN} 2>/dev/null",
                      f"iptables -w -F {CHAIN} 2>/dev/null",
                      f"iptables -w -X {CHAIN} 2>/dev/null", "true"])


# --------------------------------------------------------------------------- netem


def netem_script(peers: list[str], delay_ms: float, loss: float) -> str:
    """Shape the traffic to ``peers`` (IP addresses) with netem, and only it.

    A ``prio`` root with a fourth band holding netem; u32 filters send the
    packets to each peer into that band, so the harness's own traffic (clients,
    admin) is not delayed.  Zero delay and loss removes the qdisc."""
    dev = (f"dev=$(ip -o route get {q(peers[0])} | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p'); "
           '[ -n "$dev" ] || exit 3; tc qdisc del dev $dev root 2>/dev/null')
    if delay_ms <= 0 and loss <= 0:
        return dev + "; true"
    lines = [dev,
             "tc qdisc add dev $dev root handle 1: prio bands 4 "
             "priomap 1 2 2 2 1 2 0 0 1 1 1 1 1 1 1 1",
             f"tc qdisc add dev $dev parent 1:4 handle 40: netem delay {delay_ms:g}ms "
             f"loss {loss * 100:g}%"]
    lines += [f"tc filter add dev $dev parent 1: protocol ip prio 1 u32 match ip dst "
              f"{q(p)}/32 flowid 1:4" for p in peers]
    return lines[0] + "; " + " && ".join(lines[1:])


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold a Ctrl-C or SIGTERM until the block is done (teardown must not stop
    half-way), then raise KeyboardInterrupt.  Does nothing outside the main
    thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    try:
        old = [signal.signal(sig, lambda s, f: got.append(s)) for sig in held]
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        for sig, handler in zip(held, old):
            signal.signal(sig, handler)
    if got:
        raise KeyboardInterrupt


class RemoteBackend(abc.ABC):
    """The :class:`nemesis.faults.Backend` of nodes on remote hosts.

    A subclass provides the channel (:meth:`_sh`, :meth:`_fetch`) and the hosts
    (:meth:`_provision`, :meth:`_release`); this class does the rest.
    """

    #: the docker backend freezes whole containers, which then cannot run commands
    freezes_hosts = False
    name = "remote"

    def __init__(self, directory: str | Path, n: int, config: dict[str, Any], seed: int,
                 *, shaping: bool = False) -> None:
        self.dir = Path(directory)
        self.n = n
        self.config = config
        #: the store's Raft groups (the group faults aim at non-default ones)
        self.raft_groups = int(config.get("shards", {}).get("groups", 1))
        self.seed = seed
        #: the test asks for delay or loss: netem, or proxies on every peer link
        self.shaping = shaping
        self.node_ids = [f"n{i + 1}" for i in range(n)]
        self.nodes: dict[str, RemoteNode] = {}
        self.links: Links = {}
        #: "direct" (peer to peer), "netem" (direct, shaped by tc) or "proxy"
        self.link_mode = "direct"
        self.pool: ProxyPool | None = None
        self._proxies: dict[Cut, list[LinkProxy]] = {}
        self._proxy_host = ""
        self._rules: dict[str, list[str]] = {}
        self._shape = {"delay_ms": 0.0, "loss": 0.0}
        self.paused: set[str] = set()
        self.killed: set[str] = set()
        self.skewed: set[str] = set()
        #: nodes whose process has a failpoint set (a killed or crashed one has none)
        self.failpointed: set[str] = set()
        self._collected: dict[str, Path] = {}
        self._lock = threading.RLock()
        self._closed = False

    # ------------------------------------------------------------ channel (subclass)

    @abc.abstractmethod
    def _sh(self, node: str, script: str, *, timeout: float = 60.0) -> tuple[int, str]:
        """Run ``script`` with ``sh -c`` as root on ``node``'s host: (exit code, output)."""

    @abc.abstractmethod
    def _fetch(self, node: str, dest: Path) -> None:
        """Copy the node's folder (``workdir``) into ``dest``."""

    @abc.abstractmethod
    def _provision(self) -> tuple[list[RemoteNode], str]:
        """Make the hosts ready; the nodes and the address of the harness the
        nodes can reach (where proxies listen)."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Give the hosts back (remove containers, close connections); idempotent."""

    def _freeze(self, node: str) -> None:
        self.run(node, signal_script(self.nodes[node], "STOP"))

    def _thaw(self, node: str) -> None:
        self.run(node, signal_script(self.nodes[node], "CONT"))

    # ------------------------------------------------------------ plumbing

    def run(self, node: str, script: str, *, timeout: float = 60.0, what: str = "") -> str:
        """``script`` on ``node``'s host; a non-zero exit is a :class:`BackendError`."""
        rc, out = self._sh(node, script, timeout=timeout)
        if rc != 0:
            raise BackendError(f"{self.name} node {node}: {what or script[:80]} failed "
                               f"(exit {rc}): {out.strip()[-500:]}")
        return out

    def each(self, fn: Callable[[str], T], nodes: Iterable[str] | None = None) -> dict[str, T]:
        """``fn(node)`` on every node (or ``nodes``) in parallel; the first error is raised."""
        ids = list(self.node_ids if nodes is None else nodes)
        if len(ids) <= 1:
            return {nid: fn(nid) for nid in ids}
        with concurrent.futures.ThreadPoolExecutor(len(ids), "backend") as ex:
            futures = {nid: ex.submit(fn, nid) for nid in ids}
            return {nid: f.result() for nid, f in futures.items()}

    # ------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 60.0) -> None:
        nodes, self._proxy_host = self._provision()
        self.nodes = {n.id: n for n in nodes}
        self.node_ids = [n.id for n in nodes]
        self.each(lambda nid: self.run(nid, chain_setup_script(), what="iptables chain setup"))
        if self.shaping:
            self.link_mode = "netem" if self._netem_works() else "proxy"
        log.info("%s backend: peer links %s", self.name, self.link_mode)
        if self.link_mode == "proxy":
            self._start_proxies()
        config = to_toml(self.config)
        self.each(lambda nid: self.run(nid, put_script(self.nodes[nid].config, config),
                                       what="writing the node config"))
        seeds = {nid: self.seed + i for i, nid in enumerate(self.node_ids)}
        self.each(lambda nid: self._start_node(nid, seeds[nid]))
        self.wait_for_leader(timeout, check_alive=True)
        wait_placed(self._running(), PLACEMENT_S)

    def _start_node(self, nid: str, seed: int | None = None) -> None:
        node = self.nodes[nid]
        argv = node_argv(node, list(self.nodes.values()), self.links, seed)
        self.run(nid, start_script(node, argv), what="starting the node")

    def _netem_works(self) -> bool:
        probe = self.node_ids[0]
        peers = [self.nodes[n].address for n in self.node_ids if n != probe]
        rc, out = self._sh(probe, netem_script(peers, 1.0, 0.0))
        self._sh(probe, netem_script(peers, 0.0, 0.0))
        if rc != 0:
            log.info("no netem on %s (%s): delay and loss through proxies", probe,
                     out.strip()[-200:])
        return rc == 0

    def _start_proxies(self) -> None:
        self.pool = ProxyPool(host=self._proxy_host)
        self.pool.start()
        for i, a in enumerate(self.node_ids):
            for j, b in enumerate(self.node_ids):
                if a == b:
                    continue
                seed = self.seed * 1000 + i * 31 + j
                nb = self.nodes[b]
                raft = self.pool.add((nb.address, nb.raft_port), seed=seed, name=f"{a}->{b} raft")
                api = self.pool.add((nb.address, nb.api_port), seed=seed + 500,
                                    name=f"{a}->{b} api")
                self._proxies[(a, b)] = [raft, api]
                self.links[(a, b)] = (f"{self._proxy_host}:{raft.port}",
                                      f"{self._proxy_host}:{api.port}")

    def endpoints(self) -> list[tuple[str, str]]:
        return [(nid, f"http://{self.nodes[nid].api}") for nid in self.node_ids]

    def log_files(self) -> list[Path]:
        """The node logs copied out by :meth:`close` (none before)."""
        return [d / f"{nid}.log" for nid, d in sorted(self._collected.items())]

    def alive(self, node: str) -> bool:
        rc, _ = self._sh(node, alive_script(self.nodes[node]))
        return rc == 0

    def wait_for_leader(self, timeout: float = 30.0, check_alive: bool = False) -> str:
        """The leader's id once there is one; with ``check_alive`` (while starting)
        a node that exited is an error naming its log."""
        return wait_for_leader(self, timeout, check=self._check_alive if check_alive else None,
                               where=f" on the {self.name} backend", interval=0.2)

    def _check_alive(self) -> None:
        for nid, ok in self.each(self.alive).items():
            if not ok:
                _, tail = self._sh(nid, f"tail -n 15 {q(self.nodes[nid].log)}")
                raise BackendError(f"{self.name} node {nid} exited; "
                                   f"{self.nodes[nid].log}:\n{tail}")

    def heal_all(self) -> None:
        """Every fault removed: rules flushed, shaping off, nodes resumed and restarted,
        failpoints cleared, clocks reset."""
        with self._lock:
            for nid in sorted(self.paused):
                self.resume(nid)
            for nid in sorted(self.failpointed):
                try:
                    self.failpoint(nid, clear=True)
                except (OSError, RuntimeError) as e:
                    log.warning("could not clear the failpoints of %s: %s", nid, e)
            self.heal_network()
            if self._shape["delay_ms"] or self._shape["loss"] or self.pool is not None:
                self._set_shape(delay_ms=0.0, loss=0.0)
            for nid in sorted(self.killed):
                self.restart(nid)
            for nid in sorted(self.skewed):
                try:
                    self.clock(nid, reset=True)
                except (OSError, RuntimeError) as e:
                    log.warning("could not reset the clock of %s: %s", nid, e)

    def close(self) -> None:
        """Heal, stop the nodes, copy their folders into the run's folder, release the
        hosts.  Safe after a failed start and when called twice."""
        if self._closed:
            return
        self._closed = True
        with interrupts_held():
            try:
                self._teardown_nodes()
            finally:
                try:
                    self._release()
                finally:
                    if self.pool is not None:
                        self.pool.close()

    def _teardown_nodes(self) -> None:
        for nid in sorted(self.paused):
            try:
                self._thaw(nid)
            except Exception as e:  # noqa: BLE001 - tear down the rest regardless
                log.warning("could not resume %s: %s", nid, e)
        self.paused.clear()
        ready = [nid for nid in self.node_ids if nid in self.nodes]

        def down(nid: str) -> None:
            node = self.nodes[nid]
            for script in (chain_load_script([]), stop_script(node)):
                rc, out = self._sh(nid, script)
                if rc != 0:
                    log.warning("%s: %s", nid, out.strip()[-200:])
            dest = self.dir / nid
            dest.mkdir(parents=True, exist_ok=True)
            try:
                self._fetch(nid, dest)
                self._collected[nid] = dest
            except Exception as e:  # noqa: BLE001
                log.warning("could not copy the folder of %s: %s", nid, e)
        try:
            self.each(down, ready)
        except Exception as e:  # noqa: BLE001
            log.warning("tearing down the nodes: %s", e)

    # ------------------------------------------------------------ Backend

    def _running(self) -> list[NodeInfo]:
        """The nodes that run: asking a frozen one who leads would only cost a timeout."""
        return [self.nodes[nid].info for nid in self.node_ids
                if nid not in self.paused and nid not in self.killed]

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
        """Lose what each ``src`` sends ``dst`` for every ``(src, dst)`` in ``cuts``
        (one-way when the reverse pair is absent); replaces the previous partition."""
        proxy_ports = None
        if self.link_mode == "proxy":
            proxy_ports = {pair: (self._proxy_host, [p.port for p in proxies])
                           for pair, proxies in self._proxies.items()}
        with self._lock:
            self._rules = drop_rules(cuts, self.nodes, proxy_ports)
            self.each(self._load_rules)

    def _load_rules(self, nid: str) -> None:
        if self.freezes_hosts and nid in self.paused:
            return  # loaded by resume(); its peers' rules already cut it off
        self.run(nid, chain_load_script(self._rules.get(nid, [])), what="loading iptables rules")

    def heal_network(self) -> None:
        self.cut(())

    def clock(self, node: str, **op: Any) -> None:
        post_clock(self.nodes[node].info, op)
        with self._lock:
            (self.skewed.discard if op.get("reset") else self.skewed.add)(node)

    def kill(self, node: str) -> None:
        with self._lock:
            if node in self.killed:
                return
            self.resume(node)  # a frozen container cannot run the script
            self.run(node, kill_script(self.nodes[node]), what="kill -9")
            self._gone(node)

    def _gone(self, node: str) -> None:
        """The node's process exited: it has no failpoint any more."""
        self.failpointed.discard(node)
        self.killed.add(node)

    def crash(self, node: str) -> None:
        with self._lock:
            if node in self.killed:
                return
            self.resume(node)  # a stopped process cannot take the request
            post_crash(self.nodes[node].info)
            if poll(lambda: None if self.alive(node) else True, CRASH_EXIT_S, 0.1) is None:
                raise BackendError(f"{self.name} node {node} still runs {CRASH_EXIT_S:g} s "
                                   "after its crash failpoint")
            self._gone(node)

    def failpoint(self, node: str, **op: Any) -> None:
        with self._lock:
            set_failpoint(self.nodes[node].info, op, self.failpointed)

    def failpoint_settings(self, node: str) -> dict[str, Any] | None:
        return get_failpoints(self.nodes[node].info)

    def restart(self, node: str) -> None:
        with self._lock:
            if node in self.killed:
                self._start_node(node)
                self.killed.discard(node)

    def pause(self, node: str) -> None:
        with self._lock:
            if node not in self.killed and node not in self.paused:
                self._freeze(node)
                self.paused.add(node)

    def resume(self, node: str) -> None:
        with self._lock:
            if node in self.paused:
                self._thaw(node)
                self.paused.discard(node)
                if self.freezes_hosts:  # what it missed while frozen
                    self._load_rules(node)
                    if self.link_mode == "netem" and any(self._shape.values()):
                        self._set_shape()

    def transfer_leadership(self, leader: str, to: str | None = None,
                            group: int = 0) -> str | None:
        body: dict[str, Any] = {"group": group} if group else {}
        if to:
            body["to"] = to
        return admin_post(self.nodes[leader].info, "/transfer", body).get("transfer_to")

    def set_delay(self, ms: float) -> None:
        self._set_shape(delay_ms=ms)

    def set_loss(self, p: float) -> None:
        self._set_shape(loss=p)

    def _set_shape(self, **change: float) -> None:
        with self._lock:
            self._shape.update(change)
            if self.link_mode == "proxy":
                assert self.pool is not None
                for proxies in self._proxies.values():
                    for p in proxies:
                        if "delay_ms" in change:
                            p.set_delay(change["delay_ms"])
                        if "loss" in change:
                            p.set_loss(change["loss"])
            elif self.link_mode == "netem":
                d, loss = self._shape["delay_ms"], self._shape["loss"]

                def shape(nid: str) -> None:
                    peers = [self.nodes[o].address for o in self.node_ids if o != nid]
                    self.run(nid, netem_script(peers, d, loss), what="tc netem")
                self.each(shape, [nid for nid in self.node_ids
                                  if not (self.freezes_hosts and nid in self.paused)])
            elif any(change.values()):
                raise BackendError(f"delay and loss on the {self.name} backend need the test "
                                   "to name them (--nemesis delay/loss) before it starts")
