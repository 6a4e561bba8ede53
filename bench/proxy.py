"""Link proxy benchmark: prints figures, asserts nothing.

    python bench/proxy.py                  # 512 MiB bulk, 5000 ping-pongs
    python bench/proxy.py --mb 256 --pings 2000

Three processes, as in a real run: the upstream (a sink that counts bytes,
or an echo server for ping-pong), one ProxyPool with one LinkProxy in its
own process (so the proxy thread does not share an interpreter lock with the
load), and this process as the client.  Prints, direct vs through the proxy:

* bulk throughput in MB/s (client -> sink, 1 MiB sendall calls);
* round-trip latency of a 1 KiB ping-pong (p50/p99) and what the proxy adds;
* CPU seconds the proxy thread spends per GB forwarded (bulk run), and the
  CPU per round trip (ping-pong run);
* the same bulk run with a 1 ms delay set (the delay-queue path).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
MB = 1_000_000


# -- child processes ------------------------------------------------------------

def serve_upstream(mode: str) -> None:
    """A blocking, thread-per-connection sink or echo server; prints its port."""
    srv = socket.create_server((HOST, 0))
    print(srv.getsockname()[1], flush=True)

    def sink(c: socket.socket) -> None:
        buf = bytearray(1 << 20)
        n = 0
        while True:
            k = c.recv_into(buf)
            if not k:
                break
            n += k
        c.sendall(struct.pack(">Q", n))
        c.close()

    def echo(c: socket.socket) -> None:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = c.recv(1 << 16)
            if not data:
                break
            c.sendall(data)
        c.close()

    while True:
        c, _ = srv.accept()
        threading.Thread(target=sink if mode == "sink" else echo, args=(c,), daemon=True).start()


def serve_proxy(upstream_port: int) -> None:
    """One pool, one proxy to ``upstream_port``; commands on stdin."""
    from nemesis.proxy import ProxyPool

    with ProxyPool() as pool:
        proxy = pool.add((HOST, upstream_port), seed=1)
        print(proxy.port, flush=True)
        for line in sys.stdin:
            cmd = line.split()
            if not cmd or cmd[0] == "quit":
                break
            if cmd[0] == "cpu":
                print(f"{pool.cpu_seconds():.6f}", flush=True)
            elif cmd[0] == "delay":
                proxy.set_delay(float(cmd[1]))
                print("ok", flush=True)
            elif cmd[0] == "heal":
                proxy.heal()
                print("ok", flush=True)


class Child:
    def __init__(self, *args: str) -> None:
        self.p = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.port = int(self.p.stdout.readline())  # type: ignore[union-attr]

    def ask(self, line: str) -> str:
        self.p.stdin.write(line + "\n")  # type: ignore[union-attr]
        self.p.stdin.flush()  # type: ignore[union-attr]
        return self.p.stdout.readline().strip()  # type: ignore[union-attr]

    def stop(self) -> None:
        try:
            self.p.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        if self.p.poll() is None:
            self.p.terminate()
        self.p.wait(10)


# -- measurements -------------------------------------------------------------------

def bulk(port: int, total: int) -> float:
    """Seconds to push ``total`` bytes into the sink and hear its count back."""
    block = b"\0" * (1 << 20)
    with socket.create_connection((HOST, port)) as c:
        t0 = time.perf_counter()
        left = total
        while left > 0:
            n = min(left, len(block))
            c.sendall(block[:n] if n < len(block) else block)
            left -= n
        c.shutdown(socket.SHUT_WR)
        got = b""
        while len(got) < 8:
            chunk = c.recv(8 - len(got))
            if not chunk:
                raise RuntimeError("sink closed early")
            got += chunk
        elapsed = time.perf_counter() - t0
    (n,) = struct.unpack(">Q", got)
    if n != total:
        raise RuntimeError(f"sink counted {n} bytes, sent {total}")
    return elapsed


def ping_pong(port: int, count: int, size: int = 1024) -> list[float]:
    msg = b"p" * size
    out = []
    with socket.create_connection((HOST, port)) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray(size)
        view = memoryview(buf)
        for i in range(count + 50):
            t0 = time.perf_counter()
            c.sendall(msg)
            got = 0
            while got < size:
                k = c.recv_into(view[got:])
                if not k:
                    raise RuntimeError("echo closed")
                got += k
            if i >= 50:                               # warm-up discarded
                out.append(time.perf_counter() - t0)
    return out


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=512, help="MiB per bulk run (default 512)")
    ap.add_argument("--pings", type=int, default=5000, help="1 KiB round trips (default 5000)")
    ap.add_argument("--serve", choices=["sink", "echo"], help=argparse.SUPPRESS)
    ap.add_argument("--serve-proxy", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        return serve_upstream(args.serve)
    if args.serve_proxy:
        return serve_proxy(args.serve_proxy)

    total = args.mb << 20
    sink, echo = Child("--serve", "sink"), Child("--serve", "echo")
    psink, pecho = Child("--serve-proxy", str(sink.port)), Child("--serve-proxy", str(echo.port))
    try:
        bulk(sink.port, 16 << 20)                     # warm up both paths
        bulk(psink.port, 16 << 20)
        direct = bulk(sink.port, total)
        cpu0 = float(psink.ask("cpu"))
        proxied = bulk(psink.port, total)
        cpu1 = float(psink.ask("cpu"))
        psink.ask("delay 1")
        delayed = bulk(psink.port, total // 2)
        cpu2 = float(psink.ask("cpu"))
        psink.ask("heal")

        lat_direct = ping_pong(echo.port, args.pings)
        cpu3 = float(pecho.ask("cpu"))
        lat_proxy = ping_pong(pecho.port, args.pings)
        cpu4 = float(pecho.ask("cpu"))
    finally:
        for c in (psink, pecho, sink, echo):
            c.stop()

    gb = total / 1e9
    print(f"bulk transfer, {args.mb} MiB, client -> sink, 1 MiB writes, proxy reads 64 KiB")
    print(f"  direct                    {total / direct / MB:8.0f} MB/s")
    print(f"  through proxy             {total / proxied / MB:8.0f} MB/s   "
          f"proxy CPU {(cpu1 - cpu0) / gb:.2f} s/GB")
    print(f"  through proxy, delay 1 ms {total / 2 / delayed / MB:8.0f} MB/s   "
          f"proxy CPU {(cpu2 - cpu1) / (gb / 2):.2f} s/GB")
    print(f"1 KiB ping-pong, {args.pings} round trips (TCP_NODELAY)")
    for name, xs in (("direct", lat_direct), ("through proxy", lat_proxy)):
        print(f"  {name:<25} p50 {quantile(xs, 0.5) * 1e6:7.0f} us   p99 {quantile(xs, 0.99) * 1e6:7.0f} us"
              f"   mean {statistics.fmean(xs) * 1e6:7.0f} us")
    print(f"  added by the proxy        p50 {(quantile(lat_proxy, 0.5) - quantile(lat_direct, 0.5)) * 1e6:7.0f} us"
          f"   p99 {(quantile(lat_proxy, 0.99) - quantile(lat_direct, 0.99)) * 1e6:7.0f} us"
          f"   proxy CPU {(cpu4 - cpu3) / len(lat_proxy) * 1e6:.0f} us per round trip (2 chunks)")


if __name__ == "__main__":
    main()
