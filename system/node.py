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
from typing import Any, Collection, NoReturn

import aiohttp
import msgpack
from aiohttp import web
from aiohttp.typedefs import Handler

from system import config as node_config
from system.clock import Clock
from system.concurrency import all_or_first_error
from system.config import NodeConfig
from system.dynamo import errors
from system.dynamo.commands import result_error
from system.dynamo.errors import DynamoError
from system.dynamo.service import DynamoService
from system.failpoints import FailpointError, Failpoints, parse_request
from system.group import Group
from system.hlc import HLC
from system.mvcc import MVCCStore
from system.raft.core import LEADER, NotLeader
from system.raft.messages import Message, message_from_wire
from system.reads import lease_clock
from system.routing import DEFAULT_GROUP, Router
from system.transport import Transport

log = logging.getLogger("node")

JSON_TYPE = "application/x-amz-json-1.0"
FORWARDED = "X-Faultline-Forwarded"
#: the API port's route for group calls between nodes (:meth:`Node._call`)
INTERNAL_PATH = "/internal/group"
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
        self.faults = Failpoints()
        self.router = Router(cfg.shards)
        node_ids = [node_id, *peers]
        self.groups = [Group(g, node_id, node_ids, data_dir, cfg, self.clock, self.hlc,
                             self.lease_now, self.faults, self._send, self._role_changed, seed)
                       for g in range(cfg.shards.groups)]
        self.service = DynamoService(self)
        self._forwardable = frozenset(self.service.operations)
        #: per group, set (and replaced) whenever this node's role or that
        #: group's leader changes
        self._leader_changed = [asyncio.Event() for _ in self.groups]
        self._tasks: list[asyncio.Task[Any]] = []
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None
        self.transport = Transport(raft_addr, {p: a.raft for p, a in peers.items()},
                                   self._on_message)
        log.info("node %s starting: %d group(s), bugs %s", node_id, len(self.groups),
                 ",".join(cfg.bugs) or "none")

    @property
    def group_count(self) -> int:
        return len(self.groups)

    # ------------------------------------------------------------ Raft messages

    def _send(self, gid: int, msg: Message) -> None:
        if gid not in self.faults.raft_cut_groups:
            self.transport.send(msg.dst, (gid, msg.to_wire()))

    def _on_message(self, obj: Any) -> None:
        try:
            gid, wire = obj
            group = self.groups[gid]
            msg = message_from_wire(wire)
        except (TypeError, ValueError, IndexError, KeyError) as e:
            log.warning("dropping a malformed Raft message: %s", e)
            return
        if gid not in self.faults.raft_cut_groups:
            group.step(msg)

    async def _ticker(self) -> None:
        period = self.cfg.raft.tick_ms / 1000.0
        while True:
            await self.clock.sleep(period)
            for g in self.groups:
                g.tick()

    async def _flusher(self) -> None:
        """With ``ack-before-fsync``: hand the buffered logs to the OS now and then."""
        while True:
            await self.clock.sleep(1.0)
            for g in self.groups:
                g.storage.flush()

    def _role_changed(self, gid: int) -> None:
        self._leader_changed[gid].set()
        self._leader_changed[gid] = asyncio.Event()

    # ------------------------------------------------------------ backend for the service

    @property
    def catalogue(self) -> MVCCStore:
        """The default group's store: it holds the table catalogue."""
        return self.groups[DEFAULT_GROUP].store

    def store_of(self, group: int) -> MVCCStore:
        return self.groups[group].store

    def group_of(self, table: str, pk: bytes) -> int:
        return self.router.group_of(table, pk)

    def has_bug(self, name: str) -> bool:
        return self.cfg.has(name)

    def read_ts(self, group: int) -> int:
        return self.groups[group].reads.read_ts()

    async def ensure_fresh(self, family: str, groups: Collection[int]) -> None:
        """The freshness check of every group a read touches, concurrently,
        all under one check timeout; the first failure cancels the others."""
        gids = sorted(set(groups))
        if self.cfg.has("keyless-lease-default-group") and family in ("query", "scan"):
            gids = [DEFAULT_GROUP]
        if len(gids) == 1:  # one check, under its own timeouts (the read path's)
            await self._fresh(family, gids[0])
            return
        if self.cfg.has("sequential-lease-checks") and family == "transact_get_items":
            checks = self._one_by_one(family, gids)
        else:
            checks = all_or_first_error([self._fresh(family, g) for g in gids])
        try:
            await asyncio.wait_for(checks, self.cfg.lease.check_timeout_ms / 1000.0)
        except asyncio.TimeoutError:
            raise errors.internal_server_error(
                f"lease checks of groups {gids} timed out") from None

    async def _one_by_one(self, family: str, gids: list[int]) -> None:
        for g in gids:
            await self._fresh(family, g)

    async def _fresh(self, family: str, gid: int) -> None:
        group = self.groups[gid]
        if group.raft.role == LEADER or self.group_count == 1 or group.reads.unconfirmed(family):
            await group.reads.ensure_fresh(family)
            return
        # A follower read: the group's leader confirms its commit index (by
        # its lease or a ReadIndex round), and this replica applies up to it.
        timeout = self.cfg.lease.check_timeout_ms / 1000.0
        try:
            answer = await asyncio.wait_for(
                self._call(gid, {"op": "fresh", "group": gid, "family": family}), timeout)
            await group.reads.wait_applied(int(answer["index"]), timeout)
        except asyncio.TimeoutError:
            raise errors.internal_server_error(
                f"lease check of group {gid} failed: timed out") from None

    async def propose(self, command: dict[str, Any], group: int = DEFAULT_GROUP) -> dict[str, Any]:
        g = self.groups[group]
        if g.raft.role == LEADER or self.group_count == 1:
            return await g.propose(command)
        return await self._call(group, {"op": "propose", "group": group, "command": command})

    # ------------------------------------------------------------ group calls between nodes

    async def _call(self, gid: int, body: dict[str, Any]) -> dict[str, Any]:
        """Ask the leader of group ``gid`` (as this node knows it) to check
        freshness or to propose: the internal route of the API port."""
        leader = self.groups[gid].raft.lead
        if leader is None or leader == self.id or leader not in self.peers:
            raise errors.internal_server_error(f"group {gid} has no leader this node can reach")
        host, port = self.peers[leader].api
        session = self._session
        assert session is not None
        try:
            async with session.post(f"http://{host}:{port}{INTERNAL_PATH}",
                                    data=msgpack.packb(body, use_bin_type=True)) as resp:
                answer = msgpack.unpackb(await resp.read(), raw=False)
        except (aiohttp.ClientError, ValueError, msgpack.UnpackException) as e:
            raise errors.internal_server_error(
                f"call to {leader}, leader of group {gid}, failed: {e}") from None
        if not isinstance(answer, dict):
            raise errors.internal_server_error(f"malformed answer from {leader}")
        err = result_error(answer)
        if err is not None:
            raise err
        return answer

    async def handle_internal(self, request: web.Request) -> web.Response:
        """A group call from another node (see :meth:`_call`)."""
        try:
            body = msgpack.unpackb(await request.read(), raw=False)
            gid = int(body["group"])
            group = self.groups[gid]
            if body["op"] == "fresh":
                if group.raft.role != LEADER:
                    raise errors.service_unavailable(f"{self.id} does not lead group {gid}")
                await group.reads.ensure_fresh(str(body["family"]))
                answer: dict[str, Any] = {"index": group.raft.commit}
            elif body["op"] == "propose":
                answer = await group.propose(body["command"])
            else:
                raise errors.validation(f"unknown group call {body['op']!r}")
        except DynamoError as e:
            answer = {"error": e.to_body(), "status": e.status}
        except (KeyError, IndexError, TypeError, ValueError, msgpack.UnpackException) as e:
            err = errors.validation(f"malformed group call: {e}")
            answer = {"error": err.to_body(), "status": err.status}
        return web.Response(body=msgpack.packb(answer, use_bin_type=True),
                            content_type="application/x-msgpack")

    # ------------------------------------------------------------ HTTP: DynamoDB API

    async def handle_api(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        target = request.headers.get("X-Amz-Target", "")
        op = target.rpartition(".")[2]
        # A request goes to the leader of the group it touches (as
        # elastickv's followers forward to the leader); one touching several
        # groups is served here, each group checked by its own leader.  Reads
        # stay here under the stale-follower-reads bug, and at an ex-leader
        # whose lease survived a transfer (lease-survives-transfer).
        home, decoded = ((DEFAULT_GROUP, None) if self.group_count == 1
                         else self.service.route(op, body))
        if home is not None and op in self._forwardable:
            group = self.groups[home]
            local_read = op in READ_TARGETS and (
                self.cfg.has("stale-follower-reads")
                or self.cfg.has("lease-survives-transfer") and group.reads.lease_holds())
            if group.raft.role != LEADER and not local_read:
                return await self._forward(request, body, home)
        try:
            status, payload = await self.service.handle(target, body, decoded)
        except Exception:  # noqa: BLE001 - the service should never raise; never crash
            log.exception("unhandled error in %s", op)
            err = errors.internal_server_error()
            status, payload = err.status, err.to_body()
        return _json_response(status, payload)

    async def _forward(self, request: web.Request, body: bytes, gid: int) -> web.StreamResponse:
        leader = self.groups[gid].raft.lead
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
        changed = asyncio.ensure_future(self._leader_changed[gid].wait())
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
        """The node, with the default group's state at the top level (what
        an unsharded node reports) and every group's under ``groups``."""
        groups = [g.status() for g in self.groups]
        top = {k: v for k, v in groups[DEFAULT_GROUP].items() if k != "group"}
        return {
            "id": self.id, "pid": os.getpid(), **top,
            "clock": self.clock.state(), "hlc": self.hlc.state(),
            "failpoints": self.faults.state(),
            "bugs": list(self.cfg.bugs), "config": self.cfg.to_dict(),
            "groups": groups,
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
        """``{"to": node, "group": g}``, both optional: a random other node,
        the default group."""
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError as e:
            return web.json_response({"error": str(e)}, status=400)
        body = body if isinstance(body, dict) else {}
        gid = body.get("group", DEFAULT_GROUP)
        if isinstance(gid, bool) or not isinstance(gid, int) or not 0 <= gid < self.group_count:
            return web.json_response(
                {"error": f"group: {gid!r} is not a group of this node (0..{self.group_count - 1})"},
                status=400)
        group = self.groups[gid]
        to = body.get("to")
        if to is None:
            others = [p for p in group.raft.peers if p != self.id]
            to = random.choice(others) if others else None
        try:
            group.raft.transfer_leadership(to)
        except NotLeader as e:
            return web.json_response({"error": str(e), "leader": e.leader_hint}, status=409)
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        group.wake.set()
        log.info("group %d: leadership transfer to %s requested", gid, to)
        return web.json_response({"transfer_to": to, "group": gid})

    async def admin_failpoints(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.state())

    async def admin_set_failpoint(self, request: web.Request) -> web.Response:
        try:
            req = parse_request(await request.json())
        except json.JSONDecodeError as e:
            return web.json_response({"error": f"the body is not JSON: {e}"}, status=400)
        except FailpointError as e:
            return web.json_response(e.to_body(), status=400)
        faults = self.faults
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
        losses = [asdict(g.storage.lose_unsynced()) for g in self.groups]
        log.warning("failpoint crash lose-unsynced: %s; exiting with status 137",
                    losses[0] if len(losses) == 1 else losses)
        os._exit(137)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self.cfg.has("ack-before-fsync"):
            self._tasks.append(asyncio.create_task(self._flusher()))
        await self.transport.start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        api = web.Application(client_max_size=16 * 1024 * 1024, middlewares=[_client_gone])
        api.router.add_post("/", self.handle_api)
        api.router.add_post(INTERNAL_PATH, self.handle_internal)
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
        for g in self.groups:
            g.start()
        self._tasks.append(asyncio.create_task(self._ticker()))
        log.info("serving: api %s:%d, admin %s:%d, raft %s:%d", *self.api_addr,
                 *self.admin_addr, *self.raft_addr)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for g in self.groups:
            g.stop()
        for runner in self._runners:
            await runner.cleanup()
        if self._session:
            await self._session.close()
        await self.transport.close()
        self.faults.clear()  # a stalled fsync must not hold up the shutdown
        for g in self.groups:
            g.storage.close()


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
