"""Failpoints: a slow, stalled or power-lost disk, or a slow state machine,
switched on at run time.

In the spirit of etcd's gofail and TiKV's fail-rs, but driven over the
node's admin endpoint (``POST /failpoint``, ``GET /failpoint``) rather than
compiled in, so a fault test can switch them per node and per window:

* ``{"fsync_delay_ms": X}``: every fsync/fdatasync of the storage sleeps X ms
  first (0 clears): a slow disk.
* ``{"fsync_stall": true|false}``: while true, every fsync blocks until it is
  set back to false or cleared: a disk that stopped answering.
* ``{"apply_delay_ms": X}``: every committed entry takes X ms longer to
  apply (0 clears): a state machine that lags its log -- a compaction, an
  expensive transaction -- while Raft itself keeps up.  The wait is an
  ``await``, so the node goes on replicating and answering meanwhile.
* ``{"raft_cut_groups": [g, ...]}``: the node drops every Raft message of
  these groups, sent or received (``[]`` clears): it is cut off from those
  groups' other replicas while its other groups, and its API, go on -- the
  partition a node sees when groups live on different machines, which one
  network fault cannot make here, every node holding every group.
* ``{"crash": "lose-unsynced"}``: power loss: what was written but not made
  durable is dropped and the process exits at once
  (:meth:`system.storage.RaftStorage.lose_unsynced`).
* ``{"clear": true}``: remove every failpoint.

Keys may be combined in one request; all are checked before any takes
effect, so a bad request changes nothing.  ``GET /failpoint`` and every
accepted ``POST`` answer the settings, ``{"fsync_delay_ms": X,
"fsync_stall": bool, "stalled_fsyncs": n, "apply_delay_ms": Y, "raft_cut_groups":
[...]}`` (n: fsyncs a stall holds right now); a refused one gets 400 and ``{"error", "key", "allowed"}``; a crash
gets no answer.  Failpoints live in the process: they are not persisted, and
a restart clears them.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

CRASH_MODES = ("lose-unsynced",)

#: Each key of a request and the values it allows (the 400 answer quotes it).
ALLOWED: dict[str, str] = {
    "fsync_delay_ms": "a finite number >= 0 (milliseconds; 0 clears)",
    "fsync_stall": "true or false",
    "apply_delay_ms": "a finite number >= 0 (milliseconds per applied entry; 0 clears)",
    "raft_cut_groups": "a list of Raft group ids (integers >= 0; [] clears)",
    "crash": " or ".join(f'"{m}"' for m in CRASH_MODES),
    "clear": "true",
}


class FailpointError(ValueError):
    """A request the endpoint refuses; names the key and its allowed values."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key = key

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": str(self)}
        if self.key is not None:
            body["key"] = self.key
            body["allowed"] = ALLOWED.get(self.key, ", ".join(ALLOWED))
        return body


@dataclass(frozen=True)
class FailpointRequest:
    """One checked ``POST /failpoint`` body; None where a key was absent."""

    clear: bool = False
    fsync_delay_ms: float | None = None
    fsync_stall: bool | None = None
    apply_delay_ms: float | None = None
    raft_cut_groups: tuple[int, ...] | None = None
    crash: str | None = None


def parse_request(body: Any) -> FailpointRequest:
    """Check a decoded JSON body; :class:`FailpointError` on anything else."""
    if not isinstance(body, dict) or not body:
        raise FailpointError(None, "expected a JSON object with one or more of the keys "
                                   f"{', '.join(ALLOWED)}")
    unknown = sorted(set(body) - set(ALLOWED))
    if unknown:
        raise FailpointError(unknown[0], f"unknown key {unknown[0]!r}; the keys are "
                                         f"{', '.join(ALLOWED)}")
    delay, apply_delay = (_milliseconds(body, k) for k in ("fsync_delay_ms", "apply_delay_ms"))
    stall = body.get("fsync_stall")
    if "fsync_stall" in body and not isinstance(stall, bool):
        raise _bad("fsync_stall", stall)
    crash = body.get("crash")
    if "crash" in body and crash not in CRASH_MODES:
        raise _bad("crash", crash)
    if "clear" in body and body["clear"] is not True:
        raise _bad("clear", body["clear"])
    cut = body.get("raft_cut_groups")
    if "raft_cut_groups" in body and not (
            isinstance(cut, list) and all(isinstance(g, int) and not isinstance(g, bool)
                                          and g >= 0 for g in cut)):
        raise _bad("raft_cut_groups", cut)
    return FailpointRequest(clear="clear" in body, fsync_delay_ms=delay,
                            fsync_stall=stall, apply_delay_ms=apply_delay,
                            raft_cut_groups=None if cut is None else tuple(cut), crash=crash)


def _milliseconds(body: dict[str, Any], key: str) -> float | None:
    """The value of a delay key, checked; None when absent."""
    if key not in body:
        return None
    ms = body[key]
    if not (isinstance(ms, (int, float)) and not isinstance(ms, bool)
            and math.isfinite(ms) and ms >= 0):
        raise _bad(key, ms)
    return float(ms)


def _bad(key: str, value: Any) -> FailpointError:
    return FailpointError(key, f"{key}: {value!r} is not allowed; expected {ALLOWED[key]}")


def _running() -> threading.Event:
    ev = threading.Event()
    ev.set()
    return ev


@dataclass
class Failpoints:
    """The failpoints of one node, kept by its storage.  :meth:`before_fsync`
    runs in whichever thread fsyncs (the node's executor), so a stall parks
    that thread on an Event, never the event loop that serves the admin route;
    the apply stage reads :attr:`apply_delay_ms` before each chunk."""

    fsync_delay_ms: float = 0.0
    apply_delay_ms: float = 0.0
    #: Raft groups whose messages this node drops, both ways
    raft_cut_groups: frozenset[int] = frozenset()
    #: set while fsyncs may proceed; cleared by a stall
    _go: threading.Event = field(default_factory=_running, init=False, repr=False)
    _waiting: int = field(default=0, init=False)
    _count_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def fsync_stall(self) -> bool:
        return not self._go.is_set()

    def set_stall(self, on: bool) -> None:
        if on:
            self._go.clear()
        else:
            self._go.set()

    def clear(self) -> None:
        self.fsync_delay_ms = self.apply_delay_ms = 0.0
        self.raft_cut_groups = frozenset()
        self._go.set()

    def apply(self, req: FailpointRequest) -> None:
        """Take the settings of a request (its crash is the caller's)."""
        if req.clear:
            self.clear()
        if req.fsync_delay_ms is not None:
            self.fsync_delay_ms = req.fsync_delay_ms
        if req.fsync_stall is not None:
            self.set_stall(req.fsync_stall)
        if req.apply_delay_ms is not None:
            self.apply_delay_ms = req.apply_delay_ms
        if req.raft_cut_groups is not None:
            self.raft_cut_groups = frozenset(req.raft_cut_groups)

    def before_fsync(self) -> None:
        """Called right before every fsync: wait out a stall, then the delay."""
        if not self._go.is_set():
            with self._count_lock:
                self._waiting += 1
            try:
                self._go.wait()
            finally:
                with self._count_lock:
                    self._waiting -= 1
        delay = self.fsync_delay_ms
        if delay > 0:
            time.sleep(delay / 1000.0)

    def state(self) -> dict[str, Any]:
        """The settings, and how many fsyncs a stall holds right now."""
        return {"fsync_delay_ms": self.fsync_delay_ms, "fsync_stall": self.fsync_stall,
                "stalled_fsyncs": self._waiting, "apply_delay_ms": self.apply_delay_ms,
                "raft_cut_groups": sorted(self.raft_cut_groups)}
