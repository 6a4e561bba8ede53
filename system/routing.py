"""Which Raft group owns a key: the route table of a sharded store.

A key's *route key* is its table name and its partition key's stored bytes
(:func:`system.dynamo.values.encode_key_value`), so every item of one
partition lives in one group and a Query (always one partition) touches one
group.  The ``[shards]`` config (:class:`system.config.Shards`) splits the
route keys into ``groups`` ranges:

* ``split = "hash"`` (the default): over a 64-bit hash of the route key, in
  equal ranges -- partitions spread evenly whatever their names;
* ``split = "points"``: over the route keys themselves, cut at explicit split
  points -- a table's partitions stay in key order, so a test can put chosen
  keys in chosen groups.

The table is static: every node reads it from the same config, and there is
no split or merge at run time, so there is nothing to replicate.  Group 0
(the default group) also holds the table catalogue.
"""

from __future__ import annotations

import bisect
import hashlib
from typing import Any

from system.config import ConfigError, Shards

DEFAULT_GROUP = 0


def route_key(table: str, pk: bytes) -> bytes:
    """Route keys order by table, then partition key bytes."""
    return table.encode("utf-8", "surrogatepass") + b"\x00" + pk


def point_key(point: Any, where: str) -> bytes:
    """The route key of a ``{table = ..., key = {S|N|B = ...}}`` split point."""
    from system.dynamo import values as V
    from system.dynamo.errors import DynamoError
    if not isinstance(point, dict) or set(point) != {"table", "key"} \
            or not isinstance(point["table"], str):
        raise ConfigError(f"{where}: expected {{table = \"name\", key = {{S = \"value\"}}}}, "
                          f"got {point!r}")
    try:
        return route_key(point["table"], V.encode_key_value(point["key"]))
    except (DynamoError, TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"{where}: key {point['key']!r} is not an S, N or B value "
                          f"({getattr(e, 'message', e)})") from None


class Router:
    """Maps (table, partition key bytes) to a group id in ``range(groups)``."""

    def __init__(self, shards: Shards) -> None:
        self.groups = shards.groups
        self._points = [point_key(p, f"shards.points[{i}]")
                        for i, p in enumerate(shards.points)] if shards.split == "points" else None

    def group_of(self, table: str, pk: bytes) -> int:
        if self.groups == 1:
            return DEFAULT_GROUP
        key = route_key(table, pk)
        if self._points is not None:
            return bisect.bisect_right(self._points, key)
        h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
        return (h * self.groups) >> 64
