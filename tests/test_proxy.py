"""The local backend's link proxies, on real loopback sockets.

The upstream of each proxy is a plain listening socket held by the test: the
proxy connects to it when it accepts a client, so the test owns both ends
(``client`` and ``server``) of every proxied connection and no server thread
is needed.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
import time

import pytest

from nemesis.proxy import ProxyPool

HOST = "127.0.0.1"


# -- helpers -----------------------------------------------------------------

class Upstream:
    """A listening socket standing in for a node's Raft port."""

    def __init__(self) -> None:
        self.sock = socket.create_server((HOST, 0))
        self.sock.settimeout(2.0)
        self.addr = self.sock.getsockname()

    def accept(self, timeout: float = 2.0) -> socket.socket:
        self.sock.settimeout(timeout)
        s, _ = self.sock.accept()
        track(s).settimeout(2.0)
        return s

    def close(self) -> None:
        self.sock.close()


_opened: list[socket.socket] = []


@pytest.fixture(autouse=True)
def close_test_sockets():
    """Close every socket a test opened (the tests' own ends, not the proxy's)."""
    yield
    while _opened:
        _opened.pop().close()


def track(sock: socket.socket) -> socket.socket:
    _opened.append(sock)
    return sock


@pytest.fixture
def pool():
    with ProxyPool() as p:
        yield p


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.close()


def dial(proxy, upstream: Upstream) -> tuple[socket.socket, socket.socket]:
    """A client connected through ``proxy`` and the upstream end of it."""
    client = track(socket.create_connection((HOST, proxy.port), timeout=2.0))
    client.settimeout(2.0)
    return client, upstream.accept()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def silent(sock: socket.socket, wait: float = 0.2) -> bool:
    """True if nothing at all arrives on ``sock`` within ``wait`` seconds."""
    old = sock.gettimeout()
    sock.settimeout(wait)
    try:
        data = sock.recv(1 << 16)
    except socket.timeout:
        return True
    finally:
        sock.settimeout(old)
    raise AssertionError(f"expected silence, got {len(data)} bytes: {data[:40]!r}")


def is_dead(sock: socket.socket) -> bool:
    """True if ``sock`` is closed or reset by the other end (waits up to 2 s)."""
    try:
        return sock.recv(1 << 16) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def refused(port: int) -> bool:
    """True if a connection to ``port`` is accepted and then reset or closed at
    once (the reset may even beat ``connect()`` back to the caller)."""
    try:
        sock = socket.create_connection((HOST, port), timeout=2.0)
    except ConnectionResetError:
        return True
    with sock:
        sock.settimeout(2.0)
        return is_dead(sock)


def wait_until(pred, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def rtt(client: socket.socket, server: socket.socket, size: int = 64) -> float:
    msg = os.urandom(size)
    t0 = time.monotonic()
    client.sendall(msg)
    assert recv_exactly(server, size) == msg
    server.sendall(msg)
    assert recv_exactly(client, size) == msg
    return time.monotonic() - t0


# -- forwarding ----------------------------------------------------------------

def test_forwards_both_ways_and_counts_bytes(pool, upstream):
    proxy = pool.add(upstream.addr, seed=1)
    assert proxy.port > 0
    client, server = dial(proxy, upstream)
    up = os.urandom(1 << 20)
    down = os.urandom(300_000)
    client.sendall(up)
    assert recv_exactly(server, len(up)) == up
    server.sendall(down)
    assert recv_exactly(client, len(down)) == down
    st = proxy.stats()
    assert st["forward"]["forwarded_bytes"] == len(up)
    assert st["backward"]["forwarded_bytes"] == len(down)
    assert st["forward"]["dropped_bytes"] == st["backward"]["dropped_bytes"] == 0
    assert st["connections"]["accepted"] == 1 and st["connections"]["active"] == 1


def test_half_close_is_forwarded(pool, upstream):
    proxy = pool.add(upstream.addr)
    client, server = dial(proxy, upstream)
    client.sendall(b"request")
    client.shutdown(socket.SHUT_WR)
    assert recv_exactly(server, 7) == b"request"
    assert server.recv(10) == b""               # the client's FIN came through
    server.sendall(b"answer")                   # the other direction still open
    assert recv_exactly(client, 6) == b"answer"
    server.close()
    assert client.recv(10) == b""
    wait_until(lambda: proxy.stats()["connections"]["closed"] == 1)


def test_upstream_down_resets_the_client(pool):
    u = Upstream()
    addr = u.addr
    u.close()                                   # nothing listens there now
    proxy = pool.add(addr)
    assert refused(proxy.port)
    wait_until(lambda: proxy.stats()["connections"]["upstream_failed"] == 1)


# -- block / unblock -----------------------------------------------------------

def test_block_forward_drops_client_bytes_and_keeps_the_connection(pool, upstream):
    proxy = pool.add(upstream.addr)
    client, server = dial(proxy, upstream)
    proxy.block("forward")
    # The upstream reads nothing, yet the sender is never stalled: 16 MiB is
    # more than the loopback socket buffers hold, so it only goes through if
    # the proxy keeps reading and dropping.
    blob = b"x" * (16 << 20)
    client.sendall(blob)
    wait_until(lambda: proxy.stats()["forward"]["dropped_bytes"] == len(blob))
    assert silent(server)
    server.sendall(b"still-here")               # the other direction flows
    assert recv_exactly(client, 10) == b"still-here"
    assert proxy.stats()["faults"]["blocked"] == ["forward"]

    proxy.unblock()
    client.sendall(b"after")                    # the same connection carries it
    assert recv_exactly(server, 5) == b"after"
    assert silent(server, 0.1)                  # and nothing of the blocked bytes
    st = proxy.stats()
    assert st["connections"]["accepted"] == 1 and st["connections"]["closed"] == 0
    assert st["forward"]["forwarded_bytes"] == 5
    assert st["backward"]["forwarded_bytes"] == 10


def test_block_releases_a_sender_stalled_by_a_full_receiver(pool, upstream):
    """The upstream reads nothing, so the proxy stops reading the client (TCP
    back-pressure); a block then lets the client write into the void."""
    proxy = pool.add(upstream.addr)
    client, server = dial(proxy, upstream)
    total = 48 << 20
    done = threading.Event()

    def write() -> None:
        try:
            client.sendall(b"z" * total)
            done.set()
        except OSError:
            pass

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    last = -1
    while True:                                 # until forwarding stops growing
        time.sleep(0.05)
        now = proxy.stats()["forward"]["forwarded_bytes"]
        if now == last:
            break
        last = now
    assert not done.is_set()                    # stalled: the pipe is full
    proxy.block("forward")
    assert done.wait(5.0)
    wait_until(lambda: proxy.stats()["forward"]["forwarded_bytes"]
               + proxy.stats()["forward"]["dropped_bytes"] == total)
    assert proxy.stats()["forward"]["dropped_bytes"] > 0
    writer.join(1)


def test_block_backward_drops_upstream_bytes(pool, upstream):
    proxy = pool.add(upstream.addr)
    client, server = dial(proxy, upstream)
    proxy.block("backward")
    blob = b"y" * (8 << 20)
    server.sendall(blob)
    wait_until(lambda: proxy.stats()["backward"]["dropped_bytes"] == len(blob))
    assert silent(client)
    client.sendall(b"ping")
    assert recv_exactly(server, 4) == b"ping"
    proxy.unblock()
    server.sendall(b"pong")
    assert recv_exactly(client, 4) == b"pong"
    assert silent(client, 0.1)
    assert proxy.stats()["connections"]["accepted"] == 1


def test_block_both_then_unblock_on_the_same_connection(pool, upstream):
    proxy = pool.add(upstream.addr)
    client, server = dial(proxy, upstream)
    proxy.block("both")
    client.sendall(b"a" * 1000)
    server.sendall(b"b" * 2000)
    wait_until(lambda: (proxy.stats()["forward"]["dropped_bytes"],
                        proxy.stats()["backward"]["dropped_bytes"]) == (1000, 2000))
    assert silent(server) and silent(client, 0.05)
    assert sorted(proxy.stats()["faults"]["blocked"]) == ["backward", "forward"]
    proxy.unblock()
    assert rtt(client, server) < 0.5
    assert proxy.stats()["connections"]["accepted"] == 1


def test_unblock_reset_dirty_resets_only_connections_that_lost_bytes(pool, upstream):
    proxy = pool.add(upstream.addr)
    dirty_c, dirty_s = dial(proxy, upstream)
    clean_c, clean_s = dial(proxy, upstream)
    proxy.block("forward")
    dirty_c.sendall(b"half a frame")
    wait_until(lambda: proxy.stats()["forward"]["dropped_bytes"] == 12)
    proxy.unblock(reset_dirty=True)
    assert is_dead(dirty_c) and is_dead(dirty_s)
    assert rtt(clean_c, clean_s) < 0.5
    assert proxy.stats()["connections"]["reset_dirty"] == 1


def test_set_blocked_replaces_the_blocked_directions_at_once(pool, upstream):
    """A two-way cut turned one-way, then healed, on the same connection."""
    proxy = pool.add(upstream.addr)
    client, server = dial(proxy, upstream)
    proxy.block("both")
    proxy.set_blocked(["backward"])
    assert proxy.stats()["faults"]["blocked"] == ["backward"]
    client.sendall(b"ping")
    assert recv_exactly(server, 4) == b"ping"
    server.sendall(b"pong")
    wait_until(lambda: proxy.stats()["backward"]["dropped_bytes"] == 4)
    assert silent(client)
    proxy.set_blocked([])
    assert proxy.stats()["faults"]["blocked"] == []
    assert rtt(client, server) < 0.5


def test_reset_dirty_spares_a_connection_whose_dropping_direction_stays_blocked(pool,
                                                                                  upstream):
    """Only a direction that lost bytes and flows again can put a framed reader
    out of step: while it stays blocked the connection is kept."""
    proxy = pool.add(upstream.addr)
    client, server = dial(proxy, upstream)
    proxy.block("both")
    client.sendall(b"half a frame")
    wait_until(lambda: proxy.stats()["forward"]["dropped_bytes"] == 12)
    proxy.set_blocked(["forward"], reset_dirty=True)
    server.sendall(b"pong")
    assert recv_exactly(client, 4) == b"pong"
    assert proxy.stats()["connections"]["reset_dirty"] == 0
    proxy.set_blocked([], reset_dirty=True)
    assert is_dead(client) and is_dead(server)
    assert proxy.stats()["connections"]["reset_dirty"] == 1


def test_bad_arguments_are_refused(pool, upstream):
    proxy = pool.add(upstream.addr)
    with pytest.raises(ValueError):
        proxy.block("sideways")
    with pytest.raises(ValueError):
        proxy.set_blocked(["forward", "sideways"])
    with pytest.raises(ValueError):
        proxy.set_loss(1.5)
    with pytest.raises(ValueError):
        proxy.set_delay(-1)


# -- cut / heal ------------------------------------------------------------------

def test_cut_resets_connections_and_refuses_new_ones_until_heal(pool, upstream):
    proxy = pool.add(upstream.addr)
    client, server = dial(proxy, upstream)
    proxy.cut()
    assert is_dead(client) and is_dead(server)
    # a new connection is accepted, then reset; the upstream never hears of it
    assert refused(proxy.port)
    with pytest.raises(socket.timeout):
        upstream.accept(timeout=0.2)
    st = proxy.stats()
    assert st["faults"]["cut"] is True
    assert st["connections"]["refused"] == 1 and st["connections"]["reset_by_cut"] == 1
    proxy.heal()
    client, server = dial(proxy, upstream)
    assert rtt(client, server) < 0.5
    assert proxy.stats()["faults"]["cut"] is False


# -- delay -----------------------------------------------------------------------

def test_delay_of_100ms_on_a_round_trip(pool, upstream):
    proxy = pool.add(upstream.addr)
    client, server = dial(proxy, upstream)
    assert rtt(client, server) < 0.1
    proxy.set_delay(100)
    assert proxy.stats()["faults"]["delay_ms"] == 100
    took = rtt(client, server)
    assert 2 * 0.100 <= took < 2 * 0.100 + 0.200
    proxy.heal()
    assert rtt(client, server) < 0.1


def test_held_eof_for_an_upstream_that_is_gone_resets_the_client_quietly(pool, upstream,
                                                                         caplog):
    proxy = pool.add(upstream.addr)
    client, server = dial(proxy, upstream)
    proxy.set_delay(50)
    server.close()                              # the node went away
    assert client.recv(10) == b""               # its FIN came through
    client.sendall(b"late")                     # held; the upstream answers it with RST
    client.shutdown(socket.SHUT_WR)             # held behind it: shutdown() meets a dead socket
    assert is_dead(client)
    wait_until(lambda: proxy.stats()["connections"]["active"] == 0)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_jitter_never_reorders_a_stream(pool, upstream):
    proxy = pool.add(upstream.addr, seed=3)
    client, server = dial(proxy, upstream)
    proxy.set_delay(5, jitter_ms=40)
    sent = bytearray()
    t0 = time.monotonic()
    for i in range(60):                         # 60 separate chunks, each jittered
        msg = f"<{i:04d}>".encode()
        client.sendall(msg)
        sent += msg
        time.sleep(0.001)
    got = recv_exactly(server, len(sent))
    assert got == bytes(sent)
    assert time.monotonic() - t0 >= 0.005
    assert proxy.stats()["forward"]["forwarded_bytes"] == len(sent)


def test_changing_delay_while_traffic_flows_keeps_the_stream_intact(pool, upstream):
    """Controls called from another thread (and from an asyncio task) while a
    stream flows: delay on/off transitions must not reorder or lose bytes."""
    proxy = pool.add(upstream.addr, seed=4)
    client, server = dial(proxy, upstream)
    total = 4 << 20
    data = random.Random(9).randbytes(total)
    received = bytearray()

    def read() -> None:
        while len(received) < total:
            chunk = server.recv(1 << 16)
            if not chunk:
                return
            received.extend(chunk)

    def write() -> None:
        for i in range(0, total, 32 << 10):
            client.sendall(data[i:i + (32 << 10)])
            time.sleep(0.0005)

    async def nemesis() -> None:
        for i in range(20):
            proxy.set_delay(i % 3 * 2, jitter_ms=i % 2)
            await asyncio.sleep(0.005)
        proxy.heal()

    reader = threading.Thread(target=read)
    writer = threading.Thread(target=write)
    reader.start()
    writer.start()
    asyncio.run(nemesis())
    writer.join(10)
    reader.join(10)
    assert len(received) == total and bytes(received) == data


# -- loss ------------------------------------------------------------------------

def test_loss_one_drops_everything_and_resets(pool, upstream):
    proxy = pool.add(upstream.addr, seed=5)
    proxy.set_loss(1.0)
    for _ in range(3):
        client, server = dial(proxy, upstream)
        client.sendall(b"lost message")
        assert is_dead(server)                  # nothing arrived, connection gone
        assert is_dead(client)
    st = proxy.stats()
    assert st["forward"]["forwarded_bytes"] == 0
    assert st["forward"]["dropped_bytes"] == 3 * 12
    assert st["forward"]["lost_chunks"] == 3
    assert st["connections"]["reset_by_loss"] == 3


def test_loss_zero_drops_nothing(pool, upstream):
    proxy = pool.add(upstream.addr, seed=5)
    proxy.set_loss(0.0)
    client, server = dial(proxy, upstream)
    for _ in range(200):
        assert rtt(client, server, 256) < 0.5
    st = proxy.stats()
    assert st["forward"]["dropped_bytes"] == st["backward"]["dropped_bytes"] == 0
    assert st["forward"]["forwarded_bytes"] == 200 * 256


def loss_pattern(pool, upstream: Upstream, seed: int, trials: int = 24) -> list[str]:
    """One request/answer per connection at p = 0.5: where did it get lost?"""
    proxy = pool.add(upstream.addr, seed=seed)
    proxy.set_loss(0.5)
    out = []
    for _ in range(trials):
        client, server = dial(proxy, upstream)
        client.sendall(b"request!")
        try:
            got = recv_exactly(server, 8)
        except (EOFError, ConnectionResetError):
            got = None
        if got is None:
            out.append("forward-lost")
        else:
            server.sendall(b"answer")
            try:
                recv_exactly(client, 6)
                out.append("ok")
            except (EOFError, ConnectionResetError):
                out.append("backward-lost")
        client.close()
        server.close()
    proxy.close()
    return out


def test_seeded_loss_is_reproducible(pool, upstream):
    first = loss_pattern(pool, upstream, seed=42)
    again = loss_pattern(pool, upstream, seed=42)
    other = loss_pattern(pool, upstream, seed=43)
    assert first == again
    assert first != other
    assert {"ok", "forward-lost", "backward-lost"} <= set(first)
    # the documented contract: one draw of random.Random(seed) per chunk read
    rng, expected = random.Random(42), []
    for _ in first:
        if rng.random() < 0.5:
            expected.append("forward-lost")
        elif rng.random() < 0.5:
            expected.append("backward-lost")
        else:
            expected.append("ok")
    assert first == expected


# -- stats, close, threads ---------------------------------------------------------

def test_stats_count_connections(pool, upstream):
    proxy = pool.add(upstream.addr, name="n1->n2")
    pairs = [dial(proxy, upstream) for _ in range(3)]
    for c, s in pairs[:2]:
        c.close()
        assert s.recv(10) == b""
        s.close()
    wait_until(lambda: proxy.stats()["connections"]["closed"] == 2)
    st = proxy.stats()
    assert st["name"] == "n1->n2" and st["port"] == proxy.port
    assert st["connections"]["accepted"] == 3 and st["connections"]["active"] == 1
    assert pool.stats()["n1->n2"]["connections"]["accepted"] == 3


def test_close_with_live_connections_and_faults_leaves_nothing_behind(upstream):
    before = set(threading.enumerate())
    count = threading.active_count()
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    pool = ProxyPool(thread_name="proxy-under-test").start()
    assert threading.active_count() == count + 1
    a = pool.add(upstream.addr, seed=1)
    b = pool.add(upstream.addr, seed=2)
    ca, sa = dial(a, upstream)
    cb, sb = dial(b, upstream)
    a.set_delay(2000)                           # bytes held in a's delay queue
    ca.sendall(b"held")
    wait_until(lambda: a.stats()["forward"]["held_bytes"] == 4)
    b.block("both")
    b.set_loss(0.3)
    ports = [a.port, b.port]
    t0 = time.monotonic()
    pool.close()
    assert time.monotonic() - t0 < 2.0
    assert threading.active_count() == count
    assert set(threading.enumerate()) == before
    assert not any(t.name == "proxy-under-test" for t in threading.enumerate())
    for sock in (ca, sa, cb, sb):
        assert is_dead(sock)
    while _opened:
        _opened.pop().close()
    if fds is not None:                         # no socket (or loop pipe) left open
        assert len(os.listdir("/proc/self/fd")) == fds
    for port in ports:                          # released: bind without SO_REUSEADDR
        with socket.socket() as s:
            s.bind((HOST, port))
            s.listen()
    # healed first, and the counters are still readable after close
    st = a.stats()
    assert st["faults"] == {"blocked": [], "cut": False, "delay_ms": 0.0,
                            "jitter_ms": 0.0, "loss": 0.0}
    assert st["forward"]["forwarded_bytes"] == 0
    assert b.stats()["faults"]["blocked"] == []
    with pytest.raises(RuntimeError):
        a.block("forward")
    pool.close()                                # idempotent


def test_one_proxy_closes_alone_as_a_context_manager(pool, upstream):
    keep = pool.add(upstream.addr)
    with pool.add(upstream.addr) as gone:
        client, server = dial(gone, upstream)
        port = gone.port
        gone.block("forward")
        gone.set_delay(30)
    assert is_dead(client)
    with socket.socket() as s:
        s.bind((HOST, port))
    assert gone not in pool.proxies and keep in pool.proxies
    st = gone.stats()                           # still readable, and healed first
    assert st["connections"]["closed"] == 1
    assert st["faults"]["blocked"] == [] and st["faults"]["delay_ms"] == 0
    c, s2 = dial(keep, upstream)
    assert rtt(c, s2) < 0.5


def test_heal_all_clears_every_proxy(pool, upstream):
    a = pool.add(upstream.addr)
    b = pool.add(upstream.addr)
    a.block("both")
    a.set_loss(0.5)
    b.cut()
    b.set_delay(50, jitter_ms=10)
    pool.heal_all()
    for p in (a, b):
        f = p.stats()["faults"]
        assert f == {"blocked": [], "cut": False, "delay_ms": 0.0, "jitter_ms": 0.0, "loss": 0.0}
        c, s = dial(p, upstream)
        assert rtt(c, s) < 0.1
    assert pool.cpu_seconds() > 0
