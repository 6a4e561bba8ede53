"""Harness-owned TCP proxies on the peer links of the local backend.

Every peer link of a local cluster passes through a :class:`LinkProxy`: it
listens on loopback and forwards each accepted connection to one fixed
upstream (a node's Raft port), both ways.  The nemesis partitions, delays and
loses traffic by calling the proxy's controls; the store never knows.  The
reference store dials one connection per ordered pair of nodes and only
writes on it, so the local backend puts one proxy on each ordered pair
``a -> b`` and ``"forward"`` (client -> upstream) is that link's data
direction; ``"backward"`` matters for protocols that answer on the same
connection (the DynamoDB requests a follower forwards to the leader).

All proxies of a run share one asyncio event loop in one background thread,
owned by a :class:`ProxyPool`::

    with ProxyPool() as pool:
        link = pool.add(("127.0.0.1", raft_port_of_b), seed=7, name="a->b")
        ...                       # give node a the address 127.0.0.1:link.port for b
        link.block("forward")     # a's messages to b are lost from now on
        link.heal()

The controls are plain methods, safe to call from any thread (or from an
asyncio task of another loop): each is marshalled onto the pool's loop and
returns once it is in effect, so every byte the proxy reads afterwards is
treated under the new faults.

Semantics (what Raft sees):

* **block(direction)** DROPS the bytes read in that direction; it does not
  buffer them.  A buffering proxy would turn a partition into a stall that
  delivers every message late on heal, which is not what a lost network
  does and hides bugs that need messages to be lost.  The proxy keeps
  reading (and discarding) from the sender, so a sender in a one-way
  partition keeps writing into the void with no back-pressure and no error,
  and the TCP connection stays open -- as with an iptables DROP rule in one
  direction.  Connection set-up and teardown (SYN, FIN, RST) are not
  blocked: only payload bytes are.  ``unblock()`` lets bytes flow again on
  the same connections.  Caveat: dropping part of a byte stream leaves a
  framed receiver (length-prefixed frames) out of step if the drop began or
  ended inside a frame; it then sees a bad frame and closes, or waits for a
  bogus length.  ``unblock(reset_dirty=True)`` / ``heal(reset_dirty=True)``
  resets every connection with a direction that dropped bytes and now flows
  again, so the peers reconnect with clean framing; the default keeps them
  (the iptables-like behaviour).  ``set_blocked(directions)`` blocks exactly
  those directions and unblocks the other in one step: one one-way partition
  replaced by another.
* **cut()** is the "reset" partition: every current connection is reset
  (RST) and new ones are accepted and reset at once until ``heal()``.
* **set_delay(ms, jitter_ms)** holds every chunk for ``ms`` plus a uniform
  ``[0, jitter_ms]`` drawn from a seeded generator.  A TCP stream cannot be
  reordered, so order is kept per direction: a chunk is never delivered
  before the one read before it (jitter delays the chunks queued behind a
  slow one too).  Up to 4 MiB per direction is held; beyond that the proxy
  stops reading the sender (TCP back-pressure), as a real path's buffers
  would.
* **set_loss(p)** loses each chunk the proxy reads with probability ``p``,
  drawn from ``random.Random(seed)`` (one draw per chunk while ``p > 0``, in
  the order the proxy reads chunks over all connections and both
  directions, so a sequential exchange is reproducible for a seed).  A TCP
  chunk is not a packet: dropping bytes from the middle of a stream would
  corrupt a framed stream rather than lose a message, and a real lossy
  network does not lose bytes of a TCP flow -- it stalls and eventually
  kills the flow.  So a lost chunk is dropped AND its connection is reset:
  the receiver loses the message(s) in flight, the sender's connection
  fails and it reconnects, which is exactly the message loss Raft must
  tolerate.  (With ``p = 1`` every connection dies on its first chunk.)
* **heal()** removes every fault (block, cut, delay, loss); chunks already
  held by a delay are still delivered, in order, at their due time.
* Faults are decided when the proxy *reads* the bytes: bytes already in
  flight (held by a delay, or written to the receiver's socket) when a block
  starts are delivered, like packets already on the wire; bytes a sender
  wrote before a change but the proxy had not yet read are judged under the
  new state.  The proxy reads as fast as the sender writes, so that margin is
  what sits in a loopback socket buffer at that instant (nothing, for
  Raft-sized messages).

Cost: reads are 64 KiB ``recv_into`` calls with one copy and O(1) work per
chunk, never per byte; ``bench/proxy.py`` prints the figures.
``ProxyPool.cpu_seconds()`` reports the CPU used by the proxy thread.

``nemesis`` reaches the store only through sockets: this module imports
nothing of ``system``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Callable

__all__ = ["LinkProxy", "ProxyPool", "DIRECTIONS", "READ_SIZE"]

DIRECTIONS = ("forward", "backward")
READ_SIZE = 64 * 1024                 # bytes per recv_into
QUEUE_LIMIT = 4 * 1024 * 1024         # bytes held by a delay per direction before back-pressure
WRITE_HIGH = 256 * 1024               # transport write buffer high-water mark
CONNECT_TIMEOUT = 5.0                 # seconds to reach the upstream
CONTROL_TIMEOUT = 10.0                # seconds a control waits for the loop
_LINGER_RST = struct.pack("ii", 1, 0)
_RESOLUTION = time.get_clock_info("monotonic").resolution


def _reset(transport: asyncio.BaseTransport | None) -> None:
    """Close ``transport`` with an RST (SO_LINGER 0), discarding unsent data."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
        except OSError:
            pass
    transport.abort()  # type: ignore[attr-defined]


class _DirStats:
    __slots__ = ("forwarded", "dropped", "dropped_chunks", "lost_chunks")

    def __init__(self) -> None:
        self.forwarded = self.dropped = self.dropped_chunks = self.lost_chunks = 0


class _Side(asyncio.BufferedProtocol):
    """One socket of a proxied connection (the accepted client or the upstream)."""

    def __init__(self, link: "LinkProxy", conn: "_Conn | None") -> None:
        self.link = link
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.out: _Pipe | None = None      # the pipe this side's bytes go into
        self.inp: _Pipe | None = None      # the pipe that writes to this side
        self.lost = False
        # bytes read before the connection's pipes exist (upstream still connecting):
        # asyncio 3.11 cannot pause a transport inside connection_made, so hold them
        self.early: list[bytes] = []
        self.early_bytes = 0
        self.early_eof = False
        self.early_paused = False

    # -- asyncio callbacks ------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=WRITE_HIGH)  # type: ignore[attr-defined]
        if self.conn is None:            # an accepted client connection
            self.link._accepted(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.link._buf

    def buffer_updated(self, nbytes: int) -> None:
        out = self.out
        if out is not None:
            out.feed(self.link._buf[:nbytes].tobytes())
            return
        self.early.append(self.link._buf[:nbytes].tobytes())
        self.early_bytes += nbytes
        if self.early_bytes > QUEUE_LIMIT and not self.early_paused:
            self.early_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        if self.out is not None:
            self.out.feed_eof()
        else:
            self.early_eof = True
        return True                       # keep the other direction open

    def attach(self) -> None:
        """The pipes exist: pass on what was read before."""
        early, self.early = self.early, []
        for data in early:
            self.out.feed(data)           # type: ignore[union-attr]
        if self.early_eof:
            self.out.feed_eof()           # type: ignore[union-attr]
        if self.early_paused and not self.lost:
            self.early_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.conn is not None:
            self.conn.side_lost(self, exc)

    def pause_writing(self) -> None:
        if self.inp is not None:
            self.inp.dest_paused = True
            self.inp.update_reading()

    def resume_writing(self) -> None:
        if self.inp is not None:
            self.inp.dest_paused = False
            self.inp.update_reading()


class _Pipe:
    """One direction of one proxied connection: faults, delay queue, flow control."""

    def __init__(self, conn: "_Conn", direction: str, src: _Side, dst: _Side) -> None:
        self.conn, self.link, self.direction = conn, conn.link, direction
        self.stats = conn.link._dir[direction]
        self.src, self.dst = src, dst
        src.out, dst.inp = self, self
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.last_due = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.dest_paused = False
        self.src_paused = False
        self.eof_pending = False
        self.eof_sent = False
        self.dirty = False                # bytes were dropped: a framed reader may be out of step

    def feed(self, data: bytes) -> None:
        link, n = self.link, len(data)
        if self.dst.lost or self.conn.done:
            return                        # nowhere to deliver: the connection is going
        if link._blocked[self.direction]:
            self.stats.dropped += n
            self.stats.dropped_chunks += 1
            self.dirty = True
            return
        if link._loss and link._loss_rng.random() < link._loss:
            self.stats.dropped += n
            self.stats.lost_chunks += 1
            link._conn_stats["reset_by_loss"] += 1
            self.conn.reset()
            return
        if link._delay or link._jitter or self.queue:
            loop = link._loop
            due = loop.time() + link._delay
            if link._jitter:
                due += link._jitter_rng.uniform(0.0, link._jitter)
            if due < self.last_due:
                due = self.last_due       # never overtake the chunk before
            self.last_due = due
            self.queue.append((due, data))
            self.queued += n
            if self.timer is None:
                self.timer = loop.call_at(self.queue[0][0], self._flush)
            if self.queued > QUEUE_LIMIT:
                self.update_reading()
            return
        self.dst.transport.write(data)    # type: ignore[union-attr]
        self.stats.forwarded += n

    def _flush(self) -> None:
        self.timer = None
        if self.dst.lost:
            self.discard()
            return
        now = self.link._loop.time() + _RESOLUTION
        write = self.dst.transport.write  # type: ignore[union-attr]
        while self.queue and self.queue[0][0] <= now:
            _, data = self.queue.popleft()
            self.queued -= len(data)
            write(data)
            self.stats.forwarded += len(data)
        if self.queue:
            self.timer = self.link._loop.call_at(self.queue[0][0], self._flush)
        elif self.eof_pending:
            self._send_eof()
        self.update_reading()

    def feed_eof(self) -> None:
        if self.queue:
            self.eof_pending = True
        else:
            self._send_eof()

    def _send_eof(self) -> None:
        self.eof_pending = False
        if self.eof_sent:
            return
        self.eof_sent = True
        t = self.dst.transport
        if self.src.lost:
            self.conn.close_side(self.dst)
        elif t is not None and not t.is_closing() and t.can_write_eof():
            try:
                t.write_eof()
            except OSError:
                # The receiver reset the connection while chunks were held (on
                # loopback the RST to the last write arrives before shutdown()
                # runs): nothing more can reach it, so the connection ends as
                # TCP would end it, with a reset.
                self.conn.reset()
                return
        self.conn.maybe_done_eof()

    def update_reading(self) -> None:
        """Pause the sender when the receiver or the delay queue is full -- unless
        this direction is blocked: a blocked sender writes into the void."""
        t = self.src.transport
        if t is None or t.is_closing():
            return
        pause = (not self.link._blocked[self.direction]
                 and (self.dest_paused or self.queued > QUEUE_LIMIT))
        if pause and not self.src_paused:
            self.src_paused = True
            t.pause_reading()
        elif not pause and self.src_paused:
            self.src_paused = False
            t.resume_reading()

    def discard(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.queued = 0


class _Conn:
    """A client connection and its upstream connection."""

    def __init__(self, link: "LinkProxy", client: _Side) -> None:
        self.link = link
        self.client = client
        self.upstream: _Side | None = None
        self.pipes: list[_Pipe] = []
        self.task: asyncio.Task[None] | None = None
        self.done = False
        client.conn = self

    async def connect(self) -> None:
        link = self.link
        try:
            _, side = await asyncio.wait_for(link._loop.create_connection(
                lambda: _Side(link, self), *link.upstream), CONNECT_TIMEOUT)
        except asyncio.CancelledError:
            self.task = None
            self._check_done()
            raise
        except (OSError, asyncio.TimeoutError):
            self.task = None
            link._conn_stats["upstream_failed"] += 1
            self.reset()
            return
        self.task = None
        if self.done or self.client.lost or link._cut or link._closed:
            _reset(side.transport)
            self.reset()
            return
        self.upstream = side
        self.pipes = [_Pipe(self, "forward", self.client, side),
                      _Pipe(self, "backward", side, self.client)]
        self.client.attach()
        side.attach()
        for p in self.pipes:
            p.update_reading()

    def reset(self) -> None:
        """Tear both sides down with an RST, discarding anything held."""
        for p in self.pipes:
            p.discard()
        if self.task is not None:
            self.task.cancel()
        for side in (self.client, self.upstream):
            if side is not None and not side.lost:
                _reset(side.transport)
        self._check_done()

    def close_side(self, side: _Side) -> None:
        if not side.lost and side.transport is not None:
            side.transport.close()        # flushes its write buffer, then FIN

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        other = self.upstream if side is self.client else self.client
        if side.inp is not None:          # nothing more can be written to it
            side.inp.discard()
        if other is None:                 # the upstream was not connected yet
            if self.task is not None:
                self.task.cancel()
        elif not other.lost:
            if exc is not None:
                _reset(other.transport)
            elif side.out is not None and side.out.queue:
                side.out.eof_pending = True   # deliver what is held, then close
            else:
                self.close_side(other)
        self._check_done()

    def maybe_done_eof(self) -> None:
        if self.pipes and all(p.eof_sent for p in self.pipes):
            for side in (self.client, self.upstream):
                if side is not None:
                    self.close_side(side)

    def _check_done(self) -> None:
        if self.done:
            return
        if self.client.lost and (self.upstream is None or self.upstream.lost) and self.task is None:
            self.done = True
            self.link._conn_closed(self)

    @property
    def out_of_step(self) -> bool:
        """A direction dropped bytes and now lets bytes through: its framed reader
        may be mid-frame.  (A direction still blocked delivers nothing to confuse.)"""
        return any(p.dirty and not self.link._blocked[p.direction] for p in self.pipes)


class LinkProxy:
    """A TCP proxy from ``127.0.0.1:port`` to one upstream, with fault controls.

    Made by :meth:`ProxyPool.add`.  Every control is thread-safe and returns
    once in effect.  See the module docstring for the exact semantics.
    """

    def __init__(self, pool: "ProxyPool", upstream: tuple[str, int], *, seed: int = 0,
                 name: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self._pool = pool
        self._loop: asyncio.AbstractEventLoop = pool._loop  # type: ignore[assignment]
        self.upstream = (upstream[0], int(upstream[1]))
        self.seed = seed
        self.host = host
        self._want_port = port
        self.port = 0
        self.name = name or f"{host}:?->{upstream[0]}:{upstream[1]}"
        self._buf = memoryview(bytearray(READ_SIZE))
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[_Conn] = set()
        self._pending: set[_Side] = set()   # accepted sides being refused
        self._drained: asyncio.Event | None = None
        self._closed = False
        # faults
        self._blocked = {"forward": False, "backward": False}
        self._cut = False
        self._delay = 0.0
        self._jitter = 0.0
        self._loss = 0.0
        self._loss_rng = random.Random(seed)
        self._jitter_rng = random.Random(f"{seed}/jitter")
        # counters
        self._dir = {d: _DirStats() for d in DIRECTIONS}
        self._conn_stats = {"accepted": 0, "closed": 0, "refused": 0, "upstream_failed": 0,
                            "reset_by_cut": 0, "reset_by_loss": 0, "reset_dirty": 0}

    # -- public controls (any thread) ---------------------------------------
    def block(self, direction: str = "both") -> None:
        """Drop every byte read in ``direction`` ("forward", "backward", "both")."""
        self._call(self._set_blocked, dict.fromkeys(self._directions(direction), True))

    def unblock(self, direction: str = "both", *, reset_dirty: bool = False) -> None:
        """Let bytes flow again in ``direction`` on the same connections.

        ``reset_dirty=True`` also resets every connection with a direction that
        has dropped bytes (since it opened) and now lets bytes through, so
        framed peers reconnect in step."""
        self._call(self._set_blocked, dict.fromkeys(self._directions(direction), False),
                   reset_dirty)

    def set_blocked(self, directions: Iterable[str], *, reset_dirty: bool = False) -> None:
        """Block exactly ``directions`` and unblock the other, in one step (a
        block then an unblock would let the proxy read bytes in between under
        neither the old state nor the new).  ``reset_dirty`` as for :meth:`unblock`."""
        blocked = {d for direction in directions for d in self._directions(direction)}
        self._call(self._set_blocked, {d: d in blocked for d in DIRECTIONS}, reset_dirty)

    def cut(self) -> None:
        """Reset every connection and refuse new ones until :meth:`heal`."""
        self._call(self._do_cut)

    def set_delay(self, ms: float, jitter_ms: float = 0.0) -> None:
        """Hold every chunk ``ms`` (+ uniform ``[0, jitter_ms]``), order kept."""
        if ms < 0 or jitter_ms < 0:
            raise ValueError("delay and jitter must be >= 0")
        self._call(self._set, "_delay", ms / 1000.0, "_jitter", jitter_ms / 1000.0)

    def set_loss(self, p: float) -> None:
        """Lose each chunk with probability ``p``; a lost chunk resets its connection."""
        if not 0.0 <= p <= 1.0:
            raise ValueError("loss probability must be within [0, 1]")
        self._call(self._set, "_loss", float(p))

    def heal(self, *, reset_dirty: bool = False) -> None:
        """Remove every fault (block, cut, delay, loss)."""
        self._call(self._do_heal, reset_dirty)

    def stats(self) -> dict[str, Any]:
        """Bytes forwarded/dropped per direction, connection counts, current faults."""
        if self._pool._alive():           # also once this proxy is closed
            return self._pool._call(self._stats)
        return self._stats()

    def close(self) -> None:
        """Heal, stop listening, reset every connection; the port is free on return."""
        if self._closed or not self._pool._alive():
            self._closed = True
            return
        self._pool._run(self._aclose())
        self._pool._forget(self)

    @property
    def faults(self) -> dict[str, Any]:
        return self.stats()["faults"]

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __enter__(self) -> "LinkProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LinkProxy {self.name} {self.host}:{self.port} -> {self.upstream[0]}:{self.upstream[1]}>"

    # -- loop side ------------------------------------------------------------
    @staticmethod
    def _directions(direction: str) -> tuple[str, ...]:
        if direction == "both":
            return DIRECTIONS
        if direction in DIRECTIONS:
            return (direction,)
        raise ValueError(f"direction must be 'forward', 'backward' or 'both', not {direction!r}")

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        return self._pool._call(fn, *args)

    async def _start(self) -> None:
        self._drained = asyncio.Event()
        self._server = await self._loop.create_server(
            lambda: _Side(self, None), self.host, self._want_port,
            reuse_address=True, backlog=128)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.name.startswith(f"{self.host}:?"):
            self.name = f"{self.host}:{self.port}->{self.upstream[0]}:{self.upstream[1]}"

    def _accepted(self, side: _Side) -> None:
        self._conn_stats["accepted"] += 1
        if self._cut or self._closed:
            self._conn_stats["refused"] += 1
            self._conn_stats["closed"] += 1
            _reset(side.transport)
            return
        conn = _Conn(self, side)
        self._conns.add(conn)
        conn.task = self._loop.create_task(conn.connect())

    def _conn_closed(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        self._conn_stats["closed"] += 1
        if not self._conns and self._drained is not None:
            self._drained.set()

    def _set_blocked(self, state: dict[str, bool], reset_dirty: bool = False) -> None:
        self._blocked.update(state)
        for conn in list(self._conns):
            if reset_dirty and conn.out_of_step:
                self._conn_stats["reset_dirty"] += 1
                conn.reset()
                continue
            for p in conn.pipes:
                p.update_reading()

    def _set(self, *pairs: Any) -> None:
        for attr, value in zip(pairs[::2], pairs[1::2]):
            setattr(self, attr, value)

    def _do_cut(self) -> None:
        self._cut = True
        for conn in list(self._conns):
            self._conn_stats["reset_by_cut"] += 1
            conn.reset()

    def _do_heal(self, reset_dirty: bool = False) -> None:
        self._cut = False
        self._delay = self._jitter = self._loss = 0.0
        self._set_blocked(dict.fromkeys(DIRECTIONS, False), reset_dirty)

    def _stats(self) -> dict[str, Any]:
        held = {d: 0 for d in DIRECTIONS}
        for conn in self._conns:
            for p in conn.pipes:
                held[p.direction] += p.queued
        out: dict[str, Any] = {"name": self.name, "port": self.port,
                               "upstream": f"{self.upstream[0]}:{self.upstream[1]}"}
        for d in DIRECTIONS:
            s = self._dir[d]
            out[d] = {"forwarded_bytes": s.forwarded, "dropped_bytes": s.dropped,
                      "dropped_chunks": s.dropped_chunks, "lost_chunks": s.lost_chunks,
                      "held_bytes": held[d]}
        conns = dict(self._conn_stats)
        conns["active"] = len(self._conns)
        out["connections"] = conns
        out["faults"] = {"blocked": [d for d in DIRECTIONS if self._blocked[d]],
                         "cut": self._cut, "delay_ms": self._delay * 1000.0,
                         "jitter_ms": self._jitter * 1000.0, "loss": self._loss}
        return out

    async def _aclose(self) -> None:
        if self._closed:
            return
        self._do_heal()
        self._closed = True
        if self._server is not None:
            self._server.close()          # closes the listening socket now
        for conn in list(self._conns):
            conn.reset()
        if self._conns and self._drained is not None:
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), 5.0)
            except asyncio.TimeoutError:
                pass
        if self._server is not None:
            await self._server.wait_closed()


class ProxyPool:
    """One asyncio loop in one background thread, for every proxy of a run."""

    def __init__(self, host: str = "127.0.0.1", thread_name: str = "faultline-proxies") -> None:
        self.host = host
        self.thread_name = thread_name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._proxies: list[LinkProxy] = []
        self._lock = threading.Lock()
        self._cpu_final: float | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> "ProxyPool":
        """Start the loop thread (once; later calls do nothing)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the proxy pool is closed")
            if self._thread is not None:
                return self
            self._thread = threading.Thread(target=self._main, name=self.thread_name, daemon=True)
            self._thread.start()
        self._ready.wait()
        return self

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.call_soon(self._ready.set)
        try:
            loop.run_forever()
        finally:
            self._cpu_final = time.thread_time()
            loop.close()
            asyncio.set_event_loop(None)

    def add(self, upstream: tuple[str, int], *, seed: int = 0, name: str | None = None,
            port: int = 0, host: str | None = None) -> LinkProxy:
        """A new proxy to ``upstream`` listening on ``host:port`` (0: a free port)."""
        self.start()
        proxy = LinkProxy(self, upstream, seed=seed, name=name, host=host or self.host, port=port)
        self._run(proxy._start())
        with self._lock:
            self._proxies.append(proxy)
        return proxy

    @property
    def proxies(self) -> list[LinkProxy]:
        with self._lock:
            return list(self._proxies)

    def heal_all(self, *, reset_dirty: bool = False) -> None:
        """Remove every fault of every proxy."""
        for p in self.proxies:
            p.heal(reset_dirty=reset_dirty)

    def stats(self) -> dict[str, dict[str, Any]]:
        return {p.name: p.stats() for p in self.proxies}

    def cpu_seconds(self) -> float | None:
        """CPU time used by the proxy thread so far (Linux; None elsewhere)."""
        if self._cpu_final is not None:
            return self._cpu_final
        t = self._thread
        if t is None or t.ident is None:
            return 0.0
        try:
            return time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except (AttributeError, OSError):
            return None

    def close(self) -> None:
        """Heal and close every proxy, stop the loop and join its thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread is None:
            return
        if self._alive():
            try:
                self._run(self._shutdown(), timeout=15.0)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)  # type: ignore[union-attr]
        self._thread.join(10.0)

    async def _shutdown(self) -> None:
        for p in self.proxies:
            p._do_heal()
        for p in self.proxies:
            await p._aclose()
        with self._lock:
            self._proxies.clear()
        me = asyncio.current_task()
        rest = [t for t in asyncio.all_tasks() if t is not me]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
        await self._loop.shutdown_default_executor()  # type: ignore[union-attr]

    def __enter__(self) -> "ProxyPool":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- marshalling ------------------------------------------------------------
    def _alive(self) -> bool:
        loop = self._loop
        return (loop is not None and not loop.is_closed() and self._thread is not None
                and self._thread.is_alive())

    def _in_loop(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the loop and return its result."""
        if self._in_loop():
            return fn(*args)
        if not self._alive():
            raise RuntimeError("the proxy pool is not running")
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args))
            except BaseException as e:   # handed to the caller
                fut.set_exception(e)

        self._loop.call_soon_threadsafe(run)  # type: ignore[union-attr]
        return fut.result(CONTROL_TIMEOUT)

    def _run(self, coro: Any, timeout: float = CONTROL_TIMEOUT) -> Any:
        if self._in_loop():
            raise RuntimeError("cannot wait for the proxy loop from inside it")
        if not self._alive():
            coro.close()
            raise RuntimeError("the proxy pool is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def _forget(self, proxy: LinkProxy) -> None:
        with self._lock:
            if proxy in self._proxies:
                self._proxies.remove(proxy)
