"""One store node: Raft + MVCC + the DynamoDB JSON API + lease reads.

    python -m system.node --id n1 --raft 127.0.0.1:7001 --api 127.0.0.1:8001 \\
        --admin 127.0.0.1:9001 --data /tmp/n1 --config node.toml \\
        --peer n2=127.0.0.1:7002/127.0.0.1:8002 --peer n3=...

``--peer ID=RAFT/API`` gives, for each other node, the address to dial for
Raft messages and the address to forward DynamoDB requests to (in the
harness's local backend, both are TCP proxies it controls).

The event loop owns everything: the Raft core, the MVCC store and the API
handlers run on it, so a handler never sees a half-applied entry.  The Raft
driver and the apply stage (:mod:`system.apply`) are two tasks on it: the
driver persists, sends and hands committed entries over; the stage applies
them a chunk at a time, so a backlog lags the commit index as it does in
etcd or elastickv.  Only the storage calls that fsync run in a worker thread (so a slow or stalled disk,
see :mod:`system.failpoints`, never stops the admin endpoint).  Every reading
of time goes through one :class:`~system.clock.Clock`, which the admin
endpoint can skew.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import random
import signal
import sys
import uuid
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

import aiohttp
import msgpack
from aiohttp import web
from aiohttp.typedefs import Handler

from system import config as node_config
from system.clock import Clock
from system.apply import ApplyStage, Result
from system.config import NodeConfig
from system.dynamo import errors
from system.dynamo.commands import apply_command
from system.dynamo.service import DynamoService
from system.failpoints import FailpointError, parse_request
from system.hlc import HLC
from system.mvcc import MVCCStore
from system.raft.core import LEADER, NotLeader, RaftConfig, RaftNode, StorageState
from system.raft.messages import Entry, HardState, Snapshot, message_from_wire
from system.reads import ReadPath, lease_clock
from system.storage import RaftStorage
from system.transport import Transport

log = logging.getLogger("node")

JSON_TYPE = "application/x-amz-json-1.0"
FORWARDED = "X-Faultline-Forwarded"
#: How long a write waits for its entry to be applied before answering 500.
PROPOSE_TIMEOUT_S = 5.0
READ_TARGETS = frozenset({"GetItem", "Query", "Scan", "TransactGetItems", "BatchGetItem",
                          "DescribeTable", "ListTables"})


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


@dataclass
class PeerAddr:
    raft: tuple[str, int]
    api: tuple[str, int]


def _peer(text: str) -> tuple[str, PeerAddr]:
    pid, sep, rest = text.partition("=")
    raft, sep2, api = rest.partition("/")
    if not sep or not sep2 or not pid:
        raise argparse.ArgumentTypeError(f"expected ID=RAFTHOST:PORT/APIHOST:PORT, got {text!r}")
    return pid, PeerAddr(_addr(raft), _addr(api))


class Node:
    """The node process's state and its three servers (Raft, API, admin)."""

    def __init__(self, node_id: str, raft_addr: tuple[str, int], api: tuple[str, int],
                 admin: tuple[str, int], data_dir: str, cfg: NodeConfig,
                 peers: dict[str, PeerAddr], seed: int | None = None) -> None:
        self.id = node_id
        self.cfg = cfg
        self.peers = peers
        self.api_addr, self.admin_addr, self.raft_addr = api, admin, raft_addr
        self.clock = Clock()
        self.lease_now = lease_clock(cfg, self.clock)
        self.hlc = HLC(self.clock)
        self.storage = RaftStorage(data_dir, fsync=not cfg.has("ack-before-fsync"))
        self.store = MVCCStore()
        self.service = DynamoService(self)
        self._forwardable = frozenset(self.service.operations)
        self._wake = asyncio.Event()
        #: set (and replaced) whenever this node's role or leader changes
        self._leader_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None

        hs, snap, entries = self.storage.load()
        if snap is not None:
            self.store.restore(snap.data)
        r = cfg.raft
        rc = RaftConfig(
            id=node_id, peers=sorted([node_id, *peers]), tick_ms=r.tick_ms,
            heartbeat_ticks=max(1, r.heartbeat_ms // r.tick_ms),
            election_ticks=max(2, r.election_timeout_ms // r.tick_ms),
            pre_vote=r.pre_vote, check_quorum=cfg.check_quorum,
            max_append_entries=r.max_append_entries, snapshot_threshold=r.snapshot_threshold,
            compaction_margin=r.compaction_margin,
            noop_before_reads=not cfg.has("no-noop-read"),
            lease_survives_transfer=cfg.has("lease-survives-transfer"),
            commit_previous_term=cfg.has("commit-previous-term"), async_apply=True)
        state = StorageState(
            hard_state=HardState(hs.term, hs.vote, hs.commit),
            entries=[Entry(e.index, e.term, e.data) for e in entries],
            snapshot=Snapshot(snap.index, snap.term, snap.data) if snap else None)
        self.raft = RaftNode(rc, state, rng=random.Random(seed), now=self.lease_now,
                             on_lease_invalidated=self._lease_invalidated)
        self.reads = ReadPath(cfg, self.raft, self.store, self.lease_now, self._wake.set)
        self.applier = ApplyStage(self.raft, self._execute, self.store.restore, self._applied,
                                  r.max_apply_batch, lambda: self.storage.faults.apply_delay_ms)
        self.transport = Transport(raft_addr, {p: a.raft for p, a in peers.items()},
                                   self._on_message)
        log.info("node %s starting: term %d, %d log entries, snapshot at %s, bugs %s",
                 node_id, hs.term, len(entries), snap.index if snap else 0,
                 ",".join(cfg.bugs) or "none")

    def _lease_invalidated(self, generation: int, reason: str) -> None:
        self.reads.invalidated(generation, reason)

    # ------------------------------------------------------------ Raft driver

    def _on_message(self, obj: Any) -> None:
        try:
            msg = message_from_wire(obj)
        except (TypeError, ValueError, IndexError, KeyError) as e:
            log.warning("dropping a malformed Raft message: %s", e)
            return
        self.raft.step(msg)
        self._wake.set()

    async def _ticker(self) -> None:
        period = self.cfg.raft.tick_ms / 1000.0
        while True:
            await self.clock.sleep(period)
            self.raft.tick()
            self._wake.set()

    async def _flusher(self) -> None:
        """With ``ack-before-fsync``: hand the buffered log to the OS now and then."""
        while True:
            await self.clock.sleep(1.0)
            self.storage.flush()

    async def _driver(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.raft.has_ready():
                rd = self.raft.ready()
                if rd.snapshot is not None:
                    await loop.run_in_executor(None, self.storage.install_snapshot, rd.snapshot)
                if rd.entries:
                    self.storage.append(rd.entries)
                if rd.hard_state is not None:
                    self.storage.set_hard_state(rd.hard_state)
                if rd.must_sync:
                    await loop.run_in_executor(None, self.storage.sync)
                for m in rd.messages:
                    self.transport.send(m.dst, m.to_wire())
                self.applier.submit(rd.snapshot, rd.committed_entries)
                for rs in rd.read_states:
                    self.reads.confirmed(rs.ctx, rs.index)
                for ctx in rd.dropped_reads:
                    self.reads.dropped(ctx)
                if rd.soft_state is not None:
                    self._role_changed(rd.soft_state.role, rd.soft_state.leader)
                self.raft.advance(rd)
            # The apply stage wakes the driver as it advances, so this runs
            # between Readies: the store and ``applied`` agree here.
            if self.raft.compaction_due():
                await self._compact()

    def _applied(self) -> None:
        self.reads.applied_changed()
        self._wake.set()

    def _execute(self, e: Entry) -> Result:
        rec = msgpack.unpackb(e.data, raw=False)
        # Deterministic on every replica: the proposer's HLC time, made
        # strictly increasing in log order.
        ts = max(int(rec["ts"]), self.store.last_commit_ts + 1)
        self.hlc.observe(ts)
        try:
            return apply_command(self.store, ts, rec["cmd"])
        except Exception as exc:  # noqa: BLE001 - a bad entry must not stop the node
            log.exception("apply of entry %d failed", e.index)
            return {"error": errors.internal_server_error(f"apply failed: {exc}").to_body()}

    def _role_changed(self, role: str, leader: str | None) -> None:
        # Pending proposals stay pending: their entries may still commit
        # under the next leader, and are answered when applied or time out.
        log.info("role %s, term %d, leader %s", role, self.raft.term, leader)
        self.reads.role_changed(role)
        self._leader_changed.set()
        self._leader_changed = asyncio.Event()

    async def _compact(self) -> None:
        index = self.raft.applied
        snap = self.raft.compact(index, self.store.snapshot())
        await asyncio.get_running_loop().run_in_executor(
            None, self._persist_snapshot, snap, max(0, index - self.raft.config.compaction_margin))
        gc_ts = self.store.last_commit_ts - (60_000 << 16)  # keep a minute of versions
        if gc_ts > 0:
            self.store.gc(gc_ts)
        log.info("snapshot at index %d, log compacted", index)

    def _persist_snapshot(self, snap: Snapshot, upto: int) -> None:
        """Save the snapshot and compact the log (in a worker thread: both fsync)."""
        self.storage.save_snapshot(snap)
        self.storage.compact(upto)

    # ------------------------------------------------------------ backend for the service

    def has_bug(self, name: str) -> bool:
        return self.cfg.has(name)

    def read_ts(self) -> int:
        return self.reads.read_ts()

    async def ensure_fresh(self, family: str) -> None:
        await self.reads.ensure_fresh(family)

    async def propose(self, command: dict[str, Any]) -> dict[str, Any]:
        data = msgpack.packb({"ts": self.hlc.now(), "cmd": command}, use_bin_type=True)
        try:
            index = self.raft.propose(data)
        except NotLeader as e:
            raise errors.service_unavailable(f"not the leader ({e.reason}); "
                                             f"leader hint {e.leader_hint}") from None
        fut = self.applier.expect(index, self.raft.term)
        self._wake.set()
        try:
            # Not shielded: a write that times out (or whose request goes
            # away) cancels its future, and the apply stage then skips it
            # instead of setting an answer nobody will read.
            return await asyncio.wait_for(fut, PROPOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            raise errors.internal_server_error(
                f"write not applied within {PROPOSE_TIMEOUT_S:g} s") from None
        except NotLeader as e:
            raise errors.internal_server_error(f"write lost its leader: {e.reason}") from None

    # ------------------------------------------------------------ HTTP: DynamoDB API

    async def handle_api(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        op = target.rpartition(".")[2]
        # Followers forward every request to the leader (as elastickv does),
        # except reads under the stale-follower-reads bug, and reads at an
        # ex-leader whose lease survived a transfer (lease-survives-transfer).
        local_read = op in READ_TARGETS and (
            self.cfg.has("stale-follower-reads")
            or self.cfg.has("lease-survives-transfer") and self.reads.lease_holds())
        if self.raft.role != LEADER and not local_read and op in self._forwardable:
            return await self._forward(request, body)
        try:
            status, payload = await self.service.handle(target, body)
        except Exception:  # noqa: BLE001 - the service should never raise; never crash
            log.exception("unhandled error in %s", op)
            err = errors.internal_server_error()
            status, payload = err.status, err.to_body()
        return _json_response(status, payload)

    async def _forward(self, request: web.Request, body: bytes) -> web.StreamResponse:
        leader = self.raft.lead
        if request.headers.get(FORWARDED) or leader is None or leader not in self.peers:
            err = errors.service_unavailable(
                f"node {self.id} is not the leader and knows no leader to forward to")
            return _json_response(err.status, err.to_body())
        host, port = self.peers[leader].api
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        headers[FORWARDED] = self.id
        session = self._session
        assert session is not None

        async def call() -> web.Response:
            async with session.post(f"http://{host}:{port}/", data=body,
                                    headers=headers) as resp:
                data = await resp.read()
                return web.Response(status=resp.status, body=data, headers={
                    "Content-Type": JSON_TYPE,
                    "x-amzn-RequestId": resp.headers.get("x-amzn-RequestId", _request_id())})

        # A leader that is cut off never answers; once this node hears of a
        # new term or leader, give up on the old one (the client may retry)
        # instead of holding the request until the client's timeout.
        forward = asyncio.ensure_future(call())
        changed = asyncio.ensure_future(self._leader_changed.wait())
        try:
            await asyncio.wait((forward, changed), return_when=asyncio.FIRST_COMPLETED)
            if forward.done():
                return forward.result()
            err = errors.service_unavailable(
                f"leadership changed while forwarding to {leader}; retry")
            return _json_response(err.status, err.to_body())
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            err = errors.internal_server_error(f"forwarding to leader {leader} failed: {e}")
            return _json_response(err.status, err.to_body())
        finally:
            for task in (forward, changed):
                task.cancel()

    # ------------------------------------------------------------ HTTP: admin

    def status(self) -> dict[str, Any]:
        r = self.raft
        return {
            "id": self.id, "pid": os.getpid(), "role": r.role, "term": r.term,
            "leader": r.lead, "commit": r.commit, "applied": r.applied,
            "last_log_index": r.log.last_index(),
            "lease": self.reads.status(),
            "last_quorum_read_ms": self.reads.last_quorum_read,
            "transfer_target": r.transfer_target,
            "clock": self.clock.state(), "hlc": self.hlc.state(),
            "failpoints": self.storage.faults.state(),
            "bugs": list(self.cfg.bugs), "config": self.cfg.to_dict(),
            "store": self.store.stats(), "storage": self.storage.status(),
            "transport": {p.id: {"connected": p.connected, "dropped": p.dropped}
                          for p in self.transport.peers.values()},
        }

    async def admin_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def admin_clock(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            if body.get("reset"):
                self.clock.reset()
            if "offset" in body:
                self.clock.set_offset(float(body["offset"]))
            if "bump" in body:
                self.clock.bump(float(body["bump"]))
            if "rate" in body:
                self.clock.set_rate(float(body["rate"]))
        except (ValueError, TypeError, json.JSONDecodeError) as e:
            return web.json_response({"error": str(e)}, status=400)
        log.info("clock set: %s", self.clock.state())
        return web.json_response(self.clock.state())

    async def admin_transfer(self, request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError as e:
            return web.json_response({"error": str(e)}, status=400)
        to = body.get("to") if isinstance(body, dict) else None
        if to is None:
            others = [p for p in self.raft.peers if p != self.id]
            to = random.choice(others) if others else None
        try:
            self.raft.transfer_leadership(to)
        except NotLeader as e:
            return web.json_response({"error": str(e), "leader": e.leader_hint}, status=409)
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        self._wake.set()
        log.info("leadership transfer to %s requested", to)
        return web.json_response({"transfer_to": to})

    async def admin_failpoints(self, request: web.Request) -> web.Response:
        return web.json_response(self.storage.faults.state())

    async def admin_set_failpoint(self, request: web.Request) -> web.Response:
        try:
            req = parse_request(await request.json())
        except json.JSONDecodeError as e:
            return web.json_response({"error": f"the body is not JSON: {e}"}, status=400)
        except FailpointError as e:
            return web.json_response(e.to_body(), status=400)
        faults = self.storage.faults
        faults.apply(req)
        log.info("failpoints: %s", faults.state())
        if req.crash is not None:
            self._lose_power()
        return web.json_response(faults.state())

    def _lose_power(self) -> NoReturn:
        """The ``crash: lose-unsynced`` failpoint: drop what is not durable and
        exit at once, the request unanswered.  No ``await`` between the two:
        the driver must not acknowledge anything after the loss (a sync
        finishing meanwhile would fsync records past the cut)."""
        loss = self.storage.lose_unsynced()
        log.warning("failpoint crash lose-unsynced: %s; exiting with status 137", asdict(loss))
        os._exit(137)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.cfg.has("ack-before-fsync"):
            self._tasks.append(asyncio.create_task(self._flusher()))
        await self.transport.start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        api = web.Application(client_max_size=16 * 1024 * 1024, middlewares=[_client_gone])
        api.router.add_post("/", self.handle_api)
        admin = web.Application(middlewares=[_client_gone])
        admin.router.add_get("/status", self.admin_status)
        admin.router.add_post("/clock", self.admin_clock)
        admin.router.add_post("/transfer", self.admin_transfer)
        admin.router.add_get("/failpoint", self.admin_failpoints)
        admin.router.add_post("/failpoint", self.admin_set_failpoint)
        for app, (host, port) in ((api, self.api_addr), (admin, self.admin_addr)):
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, host, port, reuse_address=True).start()
            self._runners.append(runner)
        self._tasks += [asyncio.create_task(t) for t in
                        (self._ticker(), self._driver(), self.applier.run())]
        self._wake.set()
        log.info("serving: api %s:%d, admin %s:%d, raft %s:%d", *self.api_addr,
                 *self.admin_addr, *self.raft_addr)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for runner in self._runners:
            await runner.cleanup()
        if self._session:
            await self._session.close()
        await self.transport.close()
        self.storage.faults.clear()  # a stalled fsync must not hold up the shutdown
        self.storage.close()


@web.middleware
async def _client_gone(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A client that disconnects before its whole request arrived (its
    timeout fired, it was killed) is an ordinary event: one line, no
    traceback.  The answer has nowhere to go."""
    try:
        return await handler(request)
    except ConnectionResetError:
        log.info("client %s went away mid-request (%s)", request.remote,
                 request.headers.get("X-Amz-Target") or request.path)
        return web.Response(status=400)


def _request_id() -> str:
    return uuid.uuid4().hex.upper()


def _json_response(status: int, payload: dict[str, Any]) -> web.Response:
    return web.Response(status=status, body=json.dumps(payload, separators=(",", ":")),
                        headers={"Content-Type": JSON_TYPE, "x-amzn-RequestId": _request_id()})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="faultline node", description=__doc__.splitlines()[0])
    p.add_argument("--id", required=True)
    p.add_argument("--raft", type=_addr, required=True, help="listen address for peers")
    p.add_argument("--api", type=_addr, required=True, help="DynamoDB API listen address")
    p.add_argument("--admin", type=_addr, required=True, help="admin listen address")
    p.add_argument("--data", required=True, help="data directory")
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--peer", type=_peer, action="append", default=[],
                   metavar="ID=RAFT/API", help="another node (repeat)")
    p.add_argument("--log", help="also log to this file")
    p.add_argument("--seed", type=int, help="seed of the election timer randomness")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log:
        handlers.append(logging.FileHandler(args.log))
    logging.basicConfig(level=logging.INFO, handlers=handlers,
                        format=f"%(asctime)s %(levelname)s {args.id} %(name)s: %(message)s")
    try:
        cfg = node_config.load(args.config) if args.config else NodeConfig()
    except (OSError, node_config.ConfigError) as e:
        print(f"faultline node: {e}", file=sys.stderr)
        return 2
    gc.freeze()
    asyncio.run(_serve(args, cfg))
    return 0


async def _serve(args: argparse.Namespace, cfg: NodeConfig) -> None:
    node = Node(args.id, args.raft, args.api, args.admin, args.data, cfg,
                dict(args.peer), args.seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    await stop.wait()
    log.info("stopping")
    await node.stop()


if __name__ == "__main__":
    sys.exit(main())
