"""A store node's admin endpoint and configuration file, as every backend reaches them.

The harness drives nodes only through their network APIs, the same way on
every backend: ``GET /status`` says who leads, ``POST /clock`` skews a
node's clock, ``POST /transfer`` hands leadership over, ``POST /failpoint``
slows, stalls or crashes its disk writes (``GET /failpoint`` reads them back;
a store without the route has no failpoints).  :class:`NodeInfo`
says where a node listens; :func:`to_toml` writes the configuration file it
reads at start.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.poll import poll

Status = dict[str, Any]


@dataclass
class NodeInfo:
    id: str
    api: str
    admin: str
    raft: str
    data: str
    log: str
    config: str
    pid: int | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.api}"


def to_toml(data: dict[str, Any]) -> str:
    """Plain data (scalars, lists of scalars, one level of tables) as TOML."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    top = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    tables = [f"\n[{k}]\n" + "\n".join(f"{kk} = {value(vv)}" for kk, vv in v.items()
                                        if vv is not None)
              for k, v in data.items() if isinstance(v, dict)]
    return "\n".join(top + tables) + "\n"


def admin_get(node: NodeInfo, path: str = "/status", timeout: float = 2.0) -> Status:
    with urllib.request.urlopen(f"http://{node.admin}{path}", timeout=timeout) as r:
        return json.loads(r.read())


def admin_post(node: NodeInfo, path: str, body: dict[str, Any],
               timeout: float = 2.0) -> dict[str, Any]:
    req = urllib.request.Request(f"http://{node.admin}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return {"error": e.read().decode(errors="replace"), "status": e.code}


def post_clock(node: NodeInfo, op: dict[str, Any]) -> None:
    """One clock control (``bump``, ``offset``, ``rate`` or ``reset``) on a node."""
    out = admin_post(node, "/clock", op)
    if "error" in out:
        raise RuntimeError(f"clock {op} on {node.id}: {out['error']}")


#: Seconds a node has to take a crash op, and then to exit, before the crash counts as failed.
CRASH_EXIT_S = 10.0
CRASH_OP = {"crash": "lose-unsynced"}


class NotDelivered(RuntimeError):
    """A request that never reached the node: it refused the connection, or the
    connection failed before the request was sent."""


def post_failpoint(node: NodeInfo, op: dict[str, Any]) -> dict[str, Any]:
    """One failpoint op on a node (``{"fsync_delay_ms": 200}``, ``{"fsync_stall":
    true}``, ``{"crash": "lose-unsynced"}``, ``{"clear": true}``); its answer.

    A crash op's answer may never come (the node exits at once): a connection
    that fails after the request went out is then the expected outcome, ``{}``;
    whether the node did exit is for the caller to see.  :class:`NotDelivered`
    when the request did not go out."""
    what = f"failpoint {json.dumps(op)} on {node.id}"
    try:
        out = admin_post(node, "/failpoint", op)
    except urllib.error.URLError as e:  # raised by connect and send; HTTPError is answered
        raise NotDelivered(f"{what}: {e.reason}") from e
    except (OSError, http.client.HTTPException) as e:  # sent, and no answer came back
        if "crash" in op:
            return {}
        raise RuntimeError(f"{what}: {e}") from e
    if "error" in out:
        raise RuntimeError(f"{what}: HTTP {out['status']}: {out['error'].strip()[:300]}")
    return out


def post_crash(node: NodeInfo, timeout: float = CRASH_EXIT_S) -> None:
    """Deliver :data:`CRASH_OP`, asking again while the node does not take it: a
    node restarted a moment ago may not listen yet, and its power can fail as
    soon as it does.  :class:`NotDelivered` once ``timeout`` has passed."""
    refused: list[NotDelivered] = []

    def attempt() -> bool | None:
        try:
            post_failpoint(node, CRASH_OP)
            return True
        except NotDelivered as e:
            refused.append(e)
            return None
    if poll(attempt, timeout, 0.1) is None:
        raise NotDelivered(f"{refused[-1]} (asked for {timeout:g} s)")


def set_failpoint(node: NodeInfo, op: dict[str, Any], failpointed: set[str]) -> None:
    """:func:`post_failpoint`, keeping ``failpointed`` (the ids of the nodes with a
    failpoint set, for the backend to clear at heal) up to date; clearing a node
    that has none (never set, or restarted since) asks nothing."""
    clear = op == {"clear": True}
    if clear and node.id not in failpointed:
        return
    post_failpoint(node, op)
    (failpointed.discard if clear else failpointed.add)(node.id)


def get_failpoints(node: NodeInfo) -> dict[str, Any] | None:
    """The node's failpoint settings; ``None`` when the store has no such route
    (404, or 405 for a path it serves only for other methods)."""
    try:
        return admin_get(node, "/failpoint")
    except urllib.error.HTTPError as e:
        if e.code in (404, 405):
            return None
        raise RuntimeError(f"GET /failpoint on {node.id}: HTTP {e.code}: "
                           f"{e.read().decode(errors='replace').strip()[:300]}") from None


def statuses(nodes: Iterable[NodeInfo], timeout: float = 1.0) -> dict[str, Status | None]:
    """Each node's ``/status`` (``None`` where it does not answer), asked in
    parallel so that a stopped node costs one timeout, not one per node."""
    nodes = list(nodes)

    def one(node: NodeInfo) -> Status | None:
        try:
            return admin_get(node, timeout=timeout)
        except (OSError, ValueError):
            return None
    if len(nodes) <= 1:
        return {n.id: one(n) for n in nodes}
    with concurrent.futures.ThreadPoolExecutor(len(nodes), "status") as ex:
        return dict(zip([n.id for n in nodes], ex.map(one, nodes)))


def group_status(st: Status | None, group: int = 0) -> Status | None:
    """One Raft group's part of a node's ``/status``: the top level for the
    default group (what an unsharded node reports), else ``groups[group]``."""
    if not st or group == 0:
        return st
    groups = st.get("groups") or []
    return groups[group] if group < len(groups) else None


def pick_leader(found: Mapping[str, Status | None], group: int = 0) -> tuple[str, int] | None:
    """The node that says it leads ``group`` in the highest term, and that
    term, if any (after a partition heals, an old leader may still say so in
    an older term)."""
    leaders = [(g["term"], nid) for nid, st in found.items()
               if (g := group_status(st, group)) and g.get("role") == "leader"]
    if not leaders:
        return None
    term, nid = max(leaders)
    return nid, term


def leader_and_term(nodes: Iterable[NodeInfo], timeout: float = 0.5,
                    group: int = 0) -> tuple[str, int] | None:
    """The leader of ``group`` among ``nodes`` and its term, by their own account."""
    return pick_leader(statuses(nodes, timeout), group)


def leader_of(nodes: Iterable[NodeInfo], timeout: float = 0.5) -> str | None:
    """The default group's leader among ``nodes``, by their own account, once
    every Raft group has a leader (an unsharded store has the one group):
    before that, part of the key space cannot be written."""
    found = statuses(nodes, timeout)
    first = pick_leader(found)
    if first is None:
        return None
    lead = found[first[0]] or {}
    groups = len(lead.get("groups") or [lead])
    return first[0] if all(pick_leader(found, g) for g in range(1, groups)) else None


#: How long a start waits for the groups' leaders to move where the store
#: places them: an election timeout after each wins, and a handover.
PLACEMENT_S = 10.0


def placed(found: Mapping[str, Status | None]) -> bool:
    """Does every Raft group with a preferred leader (``leaders = "spread"``)
    have it as its leader?  An unsharded store is placed from the start."""
    first = next((st for st in found.values() if st), None)
    if first is None:
        return False
    for g, gs in enumerate(first.get("groups") or []):
        want = gs.get("preferred_leader")
        lead = pick_leader(found, g)
        if want and (lead is None or lead[0] != want):
            return False
    return True


def wait_placed(nodes: Iterable[NodeInfo], timeout: float) -> bool:
    """Until the groups' leaders sit where the store places them, at most
    ``timeout`` seconds (then False: a run may start anyway, its leaders
    moving in the first seconds)."""
    from harness.poll import poll

    nodes = list(nodes)
    return bool(poll(lambda: placed(statuses(nodes)) or None, timeout, 0.2))
