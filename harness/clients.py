"""The client side of a run: logical processes issuing a workload's ops.

A *logical process* (Jepsen's process) issues one op at a time against ONE
node: slot ``s`` (0 <= s < concurrency) starts as process ``s`` and talks to
node ``s % n`` for the whole run, so a node that is cut off keeps receiving
traffic and shows what it serves.  When an op completes as ``info`` its
process is retired and the slot goes on as process ``p + concurrency``
(bound to the same node), with a fresh rng seeded from the run seed and the
new id: the same seed gives every process the same op sequence.

boto3 costs 1.5-2 ms of CPU per call, so the slots are spread over several
OS worker processes (spawned, daemonic, ignoring SIGINT), each running its
slots as threads with one boto3 client each (retries off, short timeouts).

**The history stays in real-time order.**  Every invoke and completion is
sent to the parent the moment it happens, stamped with the harness host's
``time.monotonic_ns()`` (one clock for all processes on this host).  Each
worker has its own pipe and stamps and sends under one lock, so a worker's
stream is in time order; it also sends a heartbeat when it has been quiet.
The parent merges the streams by time and releases an event only when every
live worker has reported a later time, so the history order never shows an
op finishing before another starts unless it did (an order the checkers
rely on).  Events reach ``on_event`` a heartbeat or so (about 20 ms) after
they happen, from one thread of the pool.

One pipe per worker rather than one shared queue: a worker terminated while
sending can garble only its own stream, and a pipe is FIFO per sender.
"""

from __future__ import annotations

import heapq
import itertools
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from harness.workloads import (INFO, OK, Completion, Op, StaleTableError, make_workload,
                               shared_state)

#: How often a quiet worker tells the parent its clock has moved on.
HEARTBEAT_S = 0.02
#: A slot pauses this long after an ``info`` or a refused connection, so a
#: dead node is not hammered in a tight loop.
ERROR_BACKOFF_S = 0.05
UNAVAILABLE_PREFIXES = ("EndpointConnectionError", "ConnectTimeoutError")


@dataclass(frozen=True)
class Timeouts:
    """Client timeouts in seconds (a request is never retried)."""

    connect: float = 1.0
    read: float = 2.0

    @classmethod
    def of(cls, value: "Timeouts | dict[str, float] | tuple[float, float] | None") -> "Timeouts":
        if value is None:
            return cls()
        if isinstance(value, Timeouts):
            return value
        if isinstance(value, dict):
            return cls(**value)
        return cls(*value)


def make_client(url: str, timeouts: Timeouts | None = None, session: Any = None) -> Any:
    """A DynamoDB client for one endpoint: no retries, dummy credentials.

    Clients are thread-safe, sessions are not: create clients from one
    thread (a fresh session each unless ``session`` is given)."""
    import boto3
    from botocore.config import Config

    t = timeouts or Timeouts()
    session = session or boto3.session.Session()
    return session.client(
        "dynamodb", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="faultline", aws_secret_access_key="faultline",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=t.connect,
                      read_timeout=t.read, max_pool_connections=2,
                      parameter_validation=False))


def process_rng(seed: int, process: int) -> random.Random:
    """The op rng of a logical process (string seeds hash the same in every run)."""
    return random.Random(f"faultline:{seed}:{process}")


def node_index(process: int, concurrency: int, n_nodes: int) -> int:
    """Which endpoint a process talks to: its slot's, round-robin."""
    return (process % concurrency) % n_nodes


# ------------------------------------------------------------------- workers

@dataclass(frozen=True)
class _WorkerConfig:
    index: int
    workload: str
    options: dict[str, Any]
    slots: tuple[int, ...]
    endpoints: tuple[tuple[str, str], ...]
    concurrency: int
    rate: float
    seed: int
    timeouts: Timeouts
    parent_pid: int
    heartbeat_s: float
    error_backoff_s: float


class _Sender:
    """Stamps and sends under one lock, so one worker's stream is in time order."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.last = 0

    def send(self, *msg: Any) -> int:
        with self.lock:
            t = time.monotonic_ns()
            try:
                self.conn.send((*msg, t))
            except (OSError, ValueError):  # the parent is gone
                os._exit(3)
            self.last = t
            return t

    def heartbeat(self, quiet_ns: int) -> None:
        with self.lock:
            if time.monotonic_ns() - self.last < quiet_ns:
                return
        self.send("hb")


def _worker_main(cfg: _WorkerConfig, conn: Any, stop: Any, go: Any, deadline: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    sender = _Sender(conn)
    try:
        import boto3

        workload = make_workload(cfg.workload, cfg.options)
        session = boto3.session.Session()
        clients = {s: make_client(cfg.endpoints[node_index(s, cfg.concurrency,
                                                           len(cfg.endpoints))][1],
                                  cfg.timeouts, session)
                   for s in cfg.slots}
    except BaseException:  # noqa: BLE001
        sender.send("error", traceback.format_exc())
        return
    sender.send("ready")

    def heartbeats() -> None:
        quiet = int(cfg.heartbeat_s * 1e9)
        while True:
            time.sleep(cfg.heartbeat_s)
            if os.getppid() != cfg.parent_pid:
                os._exit(3)  # orphaned: never outlive the harness
            sender.heartbeat(quiet)

    threading.Thread(target=heartbeats, daemon=True, name="heartbeat").start()
    while not go.wait(0.1):
        if stop.is_set():
            sender.send("done")
            return
    threads = [threading.Thread(target=_run_slot, daemon=True, name=f"slot-{s}",
                                args=(s, cfg, workload, clients[s], sender, stop,
                                      deadline.value))
               for s in cfg.slots]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sender.send("done")


def _run_slot(slot: int, cfg: _WorkerConfig, workload: Any, client: Any, sender: _Sender,
              stop: Any, deadline_ns: int) -> None:
    node = cfg.endpoints[node_index(slot, cfg.concurrency, len(cfg.endpoints))][0]
    process = slot
    rng = process_rng(cfg.seed, process)
    interval = cfg.concurrency / cfg.rate if cfg.rate > 0 else 0.0
    # Stagger the slots over one interval (its own rng: the op stream stays put).
    next_at = time.monotonic() + random.Random(f"pace:{cfg.seed}:{slot}").random() * interval
    while not stop.is_set():
        if interval:
            delay = next_at - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            next_at = max(next_at, time.monotonic()) + interval
        if deadline_ns and time.monotonic_ns() >= deadline_ns:
            break
        op = workload.next_op(rng, process)
        sender.send("ev", "invoke", process, op.f, op.key, op.value, node, None)
        try:
            done = workload.invoke(client, op)
        except Exception as e:  # noqa: BLE001 - never leave an invoke open
            done = Completion(INFO, op.value, f"{type(e).__name__}: {e}")
        sender.send("ev", done.type, process, op.f, op.key, done.value, node, done.error)
        workload.observe(process, op, done)
        if done.type == INFO:
            workload.forget(process)
            process += cfg.concurrency
            rng = process_rng(cfg.seed, process)
        if done.type != OK and (done.type == INFO or
                                (done.error or "").startswith(UNAVAILABLE_PREFIXES)):
            if stop.wait(cfg.error_backoff_s):
                break


# -------------------------------------------------------------------- parent

EventSink = Callable[..., Any]


class ClientPool:
    """Logical client processes over worker OS processes; see the module doc.

    ``endpoints``: ``[(node_id, url), ...]``.  ``rate``: total ops/s across
    all processes (0: as fast as they go), applied per slot as
    ``rate/concurrency``.  ``on_event(type, process, f, key=, value=,
    time=, node=, error=)`` receives every event in time order, e.g.
    ``HistoryWriter.append``; it is called from one thread of the pool.

    Use: ``setup()`` (tables and seed data), ``start(time_limit=...)``,
    ``wait()`` (until the deadline), ``stop()``, ``run_final()``; or as a
    context manager, which always stops the workers.
    """

    def __init__(self, workload_name: str, workload_options: dict[str, Any] | None,
                 endpoints: Sequence[tuple[str, str]], concurrency: int, rate: float = 0.0,
                 seed: int = 0, timeouts: Timeouts | dict[str, float] | None = None,
                 on_event: EventSink | None = None, workers: int | None = None,
                 heartbeat_s: float = HEARTBEAT_S,
                 error_backoff_s: float = ERROR_BACKOFF_S, *,
                 timeout: float | None = None) -> None:
        """``timeout`` (seconds) is shorthand for ``timeouts`` with that read
        timeout and a connect timeout of at most 1 s."""
        if not endpoints:
            raise ValueError("no endpoints to talk to")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.workload_name = workload_name
        self.endpoints = tuple((str(n), str(u)) for n, u in endpoints)
        self.concurrency = concurrency
        self.rate = float(rate or 0)
        self.seed = seed
        if timeout is not None and timeouts is None:
            timeouts = Timeouts(connect=min(1.0, timeout), read=timeout)
        self.timeouts = Timeouts.of(timeouts)
        self.on_event = on_event or (lambda *a, **kw: None)
        self.n_workers = max(1, min(workers or min(concurrency, os.cpu_count() or 1),
                                    concurrency))
        self.heartbeat_s, self.error_backoff_s = heartbeat_s, error_backoff_s
        self._ctx = multiprocessing.get_context("spawn")
        options = dict(workload_options or {})
        self.options = {**options, **shared_state(workload_name, self._ctx, options)}
        #: The parent's own instance: setup, final ops, the current keys.
        self.workload = make_workload(workload_name, self.options)
        self._procs: list[Any] = []
        self._conns: dict[Any, int] = {}
        self._stop = self._ctx.Event()
        self._go = self._ctx.Event()
        self._deadline = self._ctx.Value("q", 0, lock=False)
        self._lock = threading.Lock()
        self._heap: list[tuple[int, int, tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self._watermarks: dict[int, int] = {}
        self._ready: set[int] = set()
        #: workers that said they issue no more ops
        self._done: set[int] = set()
        self._errors: list[str] = []
        self._pending: dict[Any, tuple[str, Any, Any, str | None]] = {}
        self._counts: Counter[str] = Counter()
        self._by_f: dict[str, Counter[str]] = defaultdict(Counter)
        #: node -> time of its latest ok completion (ns)
        self._last_ok: dict[str, int] = {}
        self._max_process = concurrency - 1
        self._receiver: threading.Thread | None = None
        self._closing = False
        self._emit_lock = threading.RLock()
        self._started = False
        self.started_at: int | None = None
        self.stopped_at: int | None = None
        #: The first exception ``on_event`` raised (stop() raises it again).
        self.sink_error: Exception | None = None

    # ------------------------------------------------------------ lifecycle

    def node_of(self, process: int) -> str:
        return self.endpoints[node_index(process, self.concurrency, len(self.endpoints))][0]

    def setup(self, timeout: float = 30.0) -> None:
        """Create the workload's tables and seed data, retrying while the
        cluster elects a leader (setup is idempotent), on each node in turn."""
        deadline = time.monotonic() + timeout
        for attempt in itertools.count():
            url = self.endpoints[attempt % len(self.endpoints)][1]
            try:
                self.workload.setup(make_client(url, self.timeouts))
                return
            except StaleTableError:
                raise
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def start(self, time_limit: float | None = None, ready_timeout: float = 60.0) -> None:
        """Spawn the workers, wait until each has its clients, then let them
        all go at once; they stop by themselves after ``time_limit`` s."""
        if self._started:
            raise RuntimeError("a pool runs once: make another")
        self._started = True
        try:
            slots: list[list[int]] = [[] for _ in range(self.n_workers)]
            for s in range(self.concurrency):
                slots[s % self.n_workers].append(s)
            for i, mine in enumerate(slots):
                cfg = _WorkerConfig(i, self.workload_name, self.options, tuple(mine),
                                    self.endpoints, self.concurrency, self.rate, self.seed,
                                    self.timeouts, os.getpid(), self.heartbeat_s,
                                    self.error_backoff_s)
                recv, send = self._ctx.Pipe(duplex=False)
                proc = self._ctx.Process(target=_worker_main, name=f"faultline-client-{i}",
                                         args=(cfg, send, self._stop, self._go,
                                               self._deadline), daemon=True)
                proc.start()
                send.close()
                self._procs.append(proc)
                self._conns[recv] = i
                self._watermarks[i] = 0
            self._receiver = threading.Thread(target=self._receive, daemon=True,
                                              name="client-pool-receiver")
            self._receiver.start()
            deadline = time.monotonic() + ready_timeout
            while True:
                with self._lock:
                    if self._errors:
                        raise RuntimeError("a client worker failed to start:\n" +
                                           self._errors[0])
                    if len(self._ready) == self.n_workers:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"client workers not ready within {ready_timeout:g} s")
                if any(p.exitcode is not None for p in self._procs):
                    time.sleep(0.1)  # let the receiver read the error first
                    with self._lock:
                        if not self._errors:
                            raise RuntimeError("a client worker exited while starting")
                time.sleep(0.01)
            self.started_at = time.monotonic_ns()
            if time_limit:
                self._deadline.value = self.started_at + int(time_limit * 1e9)
            self._go.set()
        except BaseException:
            self.stop(0)
            raise

    def running(self) -> bool:
        """Whether any worker still issues ops (false once the time limit passed)."""
        return any(p.is_alive() for p in self._procs) and not self._stop.is_set()

    @property
    def deadline_ns(self) -> int | None:
        """When the workers stop issuing ops (monotonic ns), if a time limit was given."""
        return self._deadline.value or None

    @property
    def grace_s(self) -> float:
        """How long an op in flight may still take: connect + read timeout + 1 s."""
        return self.timeouts.connect + self.timeouts.read + 1.0

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the workers to stop issuing ops by themselves at the
        deadline, each after its op in flight, and for their events to reach
        ``on_event``; True if they did.  ``timeout`` defaults to the deadline
        plus :attr:`grace_s` (forever without a deadline), so the pool's
        deadline is what ends a run's main phase.  Their processes exit in
        :meth:`stop`."""
        if timeout is None and self.deadline_ns is not None:
            timeout = max(0.0, (self.deadline_ns - time.monotonic_ns()) / 1e9) + self.grace_s
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                finished = all(i in self._done or not p.is_alive()
                               for i, p in enumerate(self._procs))
            if finished:
                self._release()  # what the receiver has not handed on yet
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def stop(self, grace_s: float | None = None) -> None:
        """Stop issuing ops; let in-flight ops finish for up to ``grace_s``
        (default: connect + read timeout + 1 s); terminate the workers; and
        complete every op still open as ``info``.  Idempotent."""
        if grace_s is None:
            grace_s = self.grace_s
        self._stop.set()
        self._go.set()  # workers still waiting to go see the stop and leave
        try:
            deadline = time.monotonic() + grace_s
            for p in self._procs:
                p.join(max(0.0, deadline - time.monotonic()))
        finally:
            for p in self._procs:
                if p.is_alive():
                    p.terminate()
            for p in self._procs:
                p.join(2.0)
                if p.is_alive():
                    p.kill()
                    p.join(2.0)
            self._closing = True
            if self._receiver is not None:
                self._receiver.join(5.0)
                if self._receiver.is_alive():  # a pipe that never closed: give up on it
                    with self._lock:
                        self._conns.clear()
                    self._receiver.join(2.0)
                self._receiver = None
            self._finish()
            for p in self._procs:
                try:
                    p.close()
                except ValueError:
                    pass
            self._procs = []
            if self.stopped_at is None:
                self.stopped_at = time.monotonic_ns()
        if self.sink_error is not None:
            err, self.sink_error = self.sink_error, None
            raise RuntimeError(f"on_event failed; events after that were lost: {err!r}") from err

    close = stop

    def __enter__(self) -> "ClientPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(0 if exc[0] else None)

    # -------------------------------------------------------------- receiving

    def _receive(self) -> None:
        while True:
            with self._lock:
                conns = list(self._conns)
            if not conns:
                if self._closing:
                    break
                time.sleep(0.05)
                continue
            ready: list[Any] = multiprocessing.connection.wait(conns, timeout=0.05)
            for conn in ready:
                wid = self._conns.get(conn)
                if wid is None:
                    continue
                try:
                    msg = conn.recv()
                except Exception:  # noqa: BLE001 - EOF, or a stream cut mid-message
                    with self._lock:
                        self._conns.pop(conn, None)
                        self._watermarks.pop(wid, None)
                    conn.close()
                    continue
                self._handle(wid, msg)
            self._release()
        self._release(everything=True)

    def _handle(self, wid: int, msg: tuple[Any, ...]) -> None:
        kind, t = msg[0], msg[-1]
        with self._lock:
            if kind == "ev":
                _, typ, process, f, key, value, node, error, _ = msg
                heapq.heappush(self._heap, (t, next(self._seq),
                                            (typ, process, f, key, value, t, node, error)))
                self._count(typ, process, f, key, value, node, t)
            elif kind == "ready":
                self._ready.add(wid)
            elif kind == "done":
                self._done.add(wid)
            elif kind == "error":
                self._errors.append(msg[1])
            if wid in self._watermarks:
                self._watermarks[wid] = max(self._watermarks[wid], t)

    def _count(self, typ: str, process: Any, f: str, key: Any, value: Any,
               node: str | None, t: int) -> None:
        self._counts[typ] += 1
        self._by_f[f][typ] += 1
        if typ == OK and node is not None:
            self._last_ok[node] = max(t, self._last_ok.get(node, t))
        if isinstance(process, int) and process > self._max_process:
            self._max_process = process
        if typ == "invoke":
            self._pending[process] = (f, key, value, node)
        else:
            self._pending.pop(process, None)

    def _release(self, everything: bool = False) -> None:
        """Hand on, in time order, every event no worker can still precede."""
        with self._emit_lock:
            with self._lock:
                mark = min(self._watermarks.values(), default=None)
                if everything or mark is None:
                    mark = 1 << 63
                out = []
                while self._heap and self._heap[0][0] <= mark:
                    out.append(heapq.heappop(self._heap)[2])
            for typ, process, f, key, value, t, node, error in out:
                try:
                    self.on_event(typ, process, f, key=key, value=value, time=t, node=node,
                                  error=error)
                except Exception as e:  # noqa: BLE001 - keep receiving; stop() raises it
                    if self.sink_error is None:
                        self.sink_error = e

    def _finish(self) -> None:
        """After the workers are gone: flush, then close every open op as info."""
        with self._lock:
            self._watermarks.clear()
        self._release(everything=True)
        with self._lock:
            pending = sorted(self._pending.items(), key=lambda kv: str(kv[0]))
        now = time.monotonic_ns()
        for process, (f, key, value, node) in pending:
            self._emit("info", process, f, key, value, now, node,
                       "still in flight when the clients stopped")

    def _emit(self, typ: str, process: Any, f: str, key: Any, value: Any, t: int,
              node: str | None, error: str | None) -> dict[str, Any]:
        """An event from the parent: through the merge while workers run."""
        with self._lock:
            self._count(typ, process, f, key, value, node, t)
            heapq.heappush(self._heap, (t, next(self._seq),
                                        (typ, process, f, key, value, t, node, error)))
        self._release(everything=self._receiver is None)
        return {"type": typ, "process": process, "f": f, "key": key, "value": value,
                "time": t, "node": node, "error": error}

    def record(self, type: str, process: Any, f: str, *, key: Any = None, value: Any = None,
               time: int | None = None, node: str | None = None,
               error: Any = None) -> None:
        """Put another event (a nemesis op) into the history, in time order
        with the clients' events; ``time`` defaults to now."""
        import time as _time
        t = _time.monotonic_ns() if time is None else time
        with self._lock:
            heapq.heappush(self._heap, (t, next(self._seq),
                                        (type, process, f, key, value, t, node, error)))
        self._release(everything=self._receiver is None)

    # ------------------------------------------------------------ final reads

    def healthy_endpoint(self, timeout: float = 10.0) -> tuple[str, str]:
        """The first endpoint that answers ListTables (tried in turn until ``timeout``)."""
        deadline = time.monotonic() + timeout
        for attempt in itertools.count():
            node, url = self.endpoints[attempt % len(self.endpoints)]
            try:
                make_client(url, self.timeouts).list_tables(Limit=1)
                return node, url
            except Exception:
                if time.monotonic() > deadline:
                    raise
                if attempt % len(self.endpoints) == len(self.endpoints) - 1:
                    time.sleep(0.2)
        raise AssertionError("unreachable")

    def run_final(self, ops: Sequence[Op] | None = None,
                  endpoint: tuple[str, str] | None = None, attempts: int = 5,
                  emit: bool = True) -> list[dict[str, Any]]:
        """Run the final reads (default: the workload's) one at a time on one
        healthy endpoint, each as a fresh process; a read that does not come
        back ``ok`` is tried again (a new process after an ``info``) up to
        ``attempts`` times, moving to the next endpoint.  Returns every event
        it made (also sent to ``on_event`` unless ``emit`` is false).  Call
        after :meth:`stop`."""
        ops = list(self.workload.final_ops() if ops is None else ops)
        node, url = endpoint or self.healthy_endpoint()
        order = [(node, url)] + [e for e in self.endpoints if e[1] != url]
        clients: dict[str, Any] = {}
        events: list[dict[str, Any]] = []

        def event(typ: str, process: int, op: Op, value: Any, nid: str,
                  error: str | None) -> None:
            t = time.monotonic_ns()
            if emit:
                events.append(self._emit(typ, process, op.f, op.key, value, t, nid, error))
            else:
                events.append({"type": typ, "process": process, "f": op.f, "key": op.key,
                               "value": value, "time": t, "node": nid, "error": error})

        with self._lock:
            process = self._max_process + 1
            self._max_process = process
        for op in ops:
            for attempt in range(max(1, attempts)):
                nid, u = order[attempt % len(order)]
                client = clients.get(u) or clients.setdefault(u, make_client(u, self.timeouts))
                event("invoke", process, op, op.value, nid, None)
                try:
                    done = self.workload.invoke(client, op)
                except Exception as e:  # noqa: BLE001
                    done = Completion(INFO, op.value, f"{type(e).__name__}: {e}")
                event(done.type, process, op, done.value, nid, done.error)
                if done.type == INFO:
                    with self._lock:
                        process = self._max_process + 1
                        self._max_process = process
                if done.type == OK:
                    break
                time.sleep(0.2)
        return events

    # ---------------------------------------------------------------- status

    def counts(self) -> dict[str, int]:
        """Events so far: ``{"invoke", "ok", "fail", "info"}`` counts."""
        with self._lock:
            return {k: self._counts.get(k, 0) for k in ("invoke", "ok", "fail", "info")}

    def answering(self, within_s: float = 2.0) -> list[str]:
        """The nodes that completed an op ok in the last ``within_s`` seconds."""
        since = time.monotonic_ns() - int(within_s * 1e9)
        with self._lock:
            return [n for n, _ in self.endpoints if self._last_ok.get(n, 0) >= since]

    def counts_by_f(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {f: dict(c) for f, c in self._by_f.items()}

    def in_flight(self) -> int:
        with self._lock:
            return len(self._pending)
