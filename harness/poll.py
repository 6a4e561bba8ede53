"""Waiting for a cluster: one poll loop, and the leader wait every backend shares."""

from __future__ import annotations

import time
from typing import Callable, Protocol, TypeVar

T = TypeVar("T")


def poll(fn: Callable[[], T | None], timeout: float, interval: float = 0.1) -> T | None:
    """``fn()`` every ``interval`` seconds until it returns something other than
    ``None``; that, or ``None`` once ``timeout`` seconds have passed.  ``fn`` is
    called at least once, and once more at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if out is not None:
            return out
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(interval, left))


class HasLeader(Protocol):
    def leader(self) -> str | None: ...


def wait_for_leader(cluster: HasLeader, timeout: float = 30.0, *,
                    check: Callable[[], None] | None = None, where: str = "",
                    interval: float = 0.1) -> str:
    """The leader's id once a node leads, else :class:`TimeoutError` (``where``
    ends its message: which cluster, where its logs are).  ``check`` runs after
    each poll that found none; while nodes start it raises for one that exited,
    which would otherwise look like a slow election."""
    def attempt() -> str | None:
        leader = cluster.leader()
        if leader is None and check is not None:
            check()
        return leader

    leader = poll(attempt, timeout, interval)
    if leader is None:
        raise TimeoutError(f"no leader within {timeout:g} s{where}")
    return leader
