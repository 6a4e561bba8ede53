"""Raft messages over TCP: length-prefixed msgpack frames, one connection per peer.

Raft tolerates lost, duplicated and reordered messages, so the transport
never blocks the node: each peer has a bounded outgoing queue that drops the
oldest message when full, and a connection that fails is retried with a
capped backoff.  The addresses dialled are whatever the node was given for
each peer -- in the harness's local backend, the TCP proxy of that link.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from typing import Any, Awaitable, Callable

import msgpack

log = logging.getLogger("transport")

_LEN = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
QUEUE_LIMIT = 4096


def encode(msg: Any) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return _LEN.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> Any:
    head = await reader.readexactly(_LEN.size)
    (n,) = _LEN.unpack(head)
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes exceeds {MAX_FRAME}")
    return msgpack.unpackb(await reader.readexactly(n), raw=False)


class Peer:
    """The outgoing side of one link: a queue and a reconnecting writer task."""

    def __init__(self, peer_id: str, host: str, port: int) -> None:
        self.id, self.host, self.port = peer_id, host, port
        self._queue: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.connected = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def send(self, frame: bytes) -> None:
        if len(self._queue) >= QUEUE_LIMIT:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(frame)
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.01
        while True:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), timeout=1.0)
            except (OSError, asyncio.TimeoutError):
                self.connected = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.2)
                continue
            self.connected, backoff = True, 0.01
            try:
                while True:
                    while not self._queue:
                        self._wake.clear()
                        await self._wake.wait()
                    batch = []
                    while self._queue and len(batch) < 256:
                        batch.append(self._queue.popleft())
                    writer.write(b"".join(batch))
                    await writer.drain()
            except (OSError, ConnectionError):
                pass
            finally:
                self.connected = False
                writer.close()

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass


class Transport:
    """Listens for peers' frames and sends ours; ``on_message`` gets each one."""

    def __init__(self, listen: tuple[str, int], peers: dict[str, tuple[str, int]],
                 on_message: Callable[[Any], Awaitable[None] | None]) -> None:
        self.listen = listen
        self.peers = {pid: Peer(pid, h, p) for pid, (h, p) in peers.items()}
        self._on_message = on_message
        self._server: asyncio.base_events.Server | None = None
        #: each connection's handler task and the writer that ends it
        self._conns: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self.bad_frames = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, *self.listen)
        for p in self.peers.values():
            p.start()

    def send(self, to: str, msg: Any) -> None:
        peer = self.peers.get(to)
        if peer is not None:
            peer.send(encode(msg))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task:
            self._conns[task] = writer
        try:
            while True:
                msg = await read_frame(reader)
                res = self._on_message(msg)
                if asyncio.iscoroutine(res):
                    await res
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except (ValueError, msgpack.UnpackException) as e:
            self.bad_frames += 1
            log.warning("dropping a connection with a bad frame: %s", e)
        finally:
            if task:
                self._conns.pop(task, None)
            writer.close()

    async def close(self) -> None:
        if self._server:
            self._server.close()
        # End each connection by closing its socket, which its handler reads
        # as EOF, rather than by cancelling the handler: Python 3.11's stream
        # server reports a cancelled handler as an error with a traceback.
        conns = list(self._conns.items())
        for _, writer in conns:
            writer.close()
        await asyncio.gather(*(task for task, _ in conns), return_exceptions=True)
        for p in self.peers.values():
            await p.close()
