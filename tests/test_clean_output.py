"""A correct run prints no traceback, anywhere: not the runner, not the
checker's workers, not the proxies, not a node.

One test per cause that used to print one, each driven to the exact moment
it happened, and one short real run with process and network faults that
reads every output of it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import socket
import subprocess
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

import pytest

from system import group as group_module
from system.config import NodeConfig
from system.dynamo.errors import DynamoError
from system.node import Node, PeerAddr
from system.raft.messages import AppendEntries, Entry, VoteResponse
from system.transport import Transport

from cli_runs import ROOT, faultline

HOST = "127.0.0.1"
NOISE = ("Traceback", "never retrieved")


def free_ports(n: int) -> list[int]:
    socks = [socket.create_server((HOST, 0)) for _ in range(n)]
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def loud(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What was logged at WARNING or above, or with a traceback."""
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING or r.exc_info]


# -- the checker's pool workers ------------------------------------------------

CHECK_UNDER_A_RUNNERS_HANDLER = """
import signal, sys
from checkers import importers
from checkers.check import check_histories

def interrupt(signum, frame):  # what `faultline run` installs for SIGTERM
    raise KeyboardInterrupt(f"signal {signum}")

signal.signal(signal.SIGTERM, interrupt)
history = importers.load(sys.argv[1], "jsonl")
for _ in range(5):
    [res] = check_histories([history], model="dynamo-item", jobs=2)
    assert res.verdict == "valid", res.verdict
"""


def test_checker_workers_end_quietly_under_a_runners_signal_handler(tmp_path):
    path = tmp_path / "history.jsonl"
    lines, t = [], 0
    for i in range(1800):          # 3,600 ops on 8 keys: enough for the worker pool
        key, value = f"k{i % 8}", i + 1
        for f, inv, ok in (("put", value, value), ("get", None, value)):
            for kind, v in (("invoke", inv), ("ok", ok)):
                t += 1
                lines.append(json.dumps({"index": len(lines), "type": kind, "process": i % 4,
                                         "f": f, "key": key, "value": v, "time": t}))
    path.write_text("\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, "-c", CHECK_UNDER_A_RUNNERS_HANDLER, str(path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "ForkPoolWorker" not in out.stderr, out.stderr


# -- a node's Raft transport ---------------------------------------------------

def test_closing_a_transport_with_live_connections_logs_nothing(caplog):
    a, b = free_ports(2)

    async def scenario() -> None:
        got: list[object] = []
        server = Transport((HOST, a), {}, got.append)
        client = Transport((HOST, b), {"a": (HOST, a)}, lambda msg: None)
        await server.start()
        await client.start()
        client.send("a", {"hello": 1})
        for _ in range(500):
            if got:
                break
            await asyncio.sleep(0.01)
        assert got == [{"hello": 1}]
        await server.close()       # its connection from the client is still open
        await client.close()

    asyncio.run(scenario())
    assert not loud(caplog)


# -- a node ----------------------------------------------------------------------

@asynccontextmanager
async def running_node(tmp_path: Path) -> AsyncIterator[Node]:
    """n1 of a three-node group whose peers never answer, serving."""
    raft, api, admin, *peer_ports = free_ports(7)
    peers = {pid: PeerAddr((HOST, peer_ports[2 * k]), (HOST, peer_ports[2 * k + 1]))
             for k, pid in enumerate(("n2", "n3"))}
    node = Node("n1", (HOST, raft), (HOST, api), (HOST, admin), str(tmp_path), NodeConfig(),
                peers, seed=1)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


def test_a_write_that_timed_out_and_was_overwritten_leaves_no_unread_error(
        tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(group_module, "PROPOSE_TIMEOUT_S", 0.2)

    async def scenario() -> None:
        async with running_node(tmp_path) as node:
            r = node.groups[0].raft
            r.campaign()           # n2's votes make n1 leader of term 1
            r.step(VoteResponse(r.term + 1, "n2", "n1", granted=True, pre=True))
            r.step(VoteResponse(r.term, "n2", "n1", granted=True))
            with pytest.raises(DynamoError, match="not applied"):
                await node.propose({"op": "noop"})   # no follower acknowledges it
            index = r.log.last_index()
            # n2 leads term 2 and commits other entries over n1's
            r.step(AppendEntries(2, "n2", "n1", prev_index=0, prev_term=0,
                                 entries=[Entry(i, 2, b"") for i in range(1, index + 1)],
                                 commit=index))
            for _ in range(200):
                if r.applied >= index:
                    break
                await asyncio.sleep(0.01)
            assert r.applied >= index and r.log.term(index) == 2
            gc.collect()

    asyncio.run(scenario())
    assert not loud(caplog)


def test_a_client_leaving_mid_body_is_one_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="node")

    async def scenario() -> None:
        async with running_node(tmp_path) as node:
            _, writer = await asyncio.open_connection(*node.api_addr)
            writer.write(b"POST / HTTP/1.1\r\nHost: n1\r\n"
                         b"X-Amz-Target: DynamoDB_20120810.PutItem\r\n"
                         b"Content-Type: application/x-amz-json-1.0\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"TableName\": ")
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()
            await asyncio.sleep(0.3)

    asyncio.run(scenario())
    assert not loud(caplog)
    gone = [r.getMessage() for r in caplog.records if "went away" in r.getMessage()]
    assert gone == ["client 127.0.0.1 went away mid-request (DynamoDB_20120810.PutItem)"]


# -- a real run ------------------------------------------------------------------

@pytest.mark.cluster
@pytest.mark.slow
def test_a_run_with_process_and_network_faults_prints_no_traceback(tmp_path):
    out = faultline("run", "--workload", "register",
                    "--nemesis", "kill,partition-random,delay,loss", "--time-limit", "12",
                    "--seed", "4", "--results-dir", str(tmp_path))
    assert out.returncode != 255, out.stdout + out.stderr
    logs = sorted((tmp_path / "latest" / "logs").glob("*.log"))
    assert len(logs) == 5
    outputs = {"stdout": out.stdout, "stderr": out.stderr,
               **{p.name: p.read_text(errors="replace") for p in logs}}
    noisy = {name: [line for line in text.splitlines() if any(n in line for n in NOISE)]
             for name, text in outputs.items()}
    assert not {name: lines for name, lines in noisy.items() if lines}
