"""The route table of a sharded store and its ``[shards]`` config."""

from __future__ import annotations

from collections import Counter

import pytest

from system import config
from system.config import ConfigError, Shards
from system.dynamo import values as V
from system.routing import Router


def test_one_group_routes_everything_to_the_default_group():
    r = Router(Shards())
    assert {r.group_of("t", f"k{i}".encode()) for i in range(100)} == {0}


def test_hash_split_spreads_partitions_evenly_and_is_stable():
    r = Router(Shards(groups=4))
    counts = Counter(r.group_of("items", f"key-{i}".encode()) for i in range(4000))
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > 850          # 1000 each, give or take
    # a pure function of (table, key): another router agrees, another table differs
    again = Router(Shards(groups=4))
    assert all(r.group_of("items", f"key-{i}".encode()) == again.group_of("items", f"key-{i}".encode())
               for i in range(200))
    assert any(r.group_of("items", f"key-{i}".encode()) != r.group_of("other", f"key-{i}".encode())
               for i in range(200))


def test_split_points_cut_route_keys_in_order():
    shards = config.from_dict({"shards": {"groups": 3, "split": "points", "points": [
        {"table": "t", "key": {"S": "h"}}, {"table": "t", "key": {"S": "p"}}]}}).shards
    r = Router(shards)
    enc = lambda s: V.encode_key_value({"S": s})  # noqa: E731
    assert [r.group_of("t", enc(s)) for s in ("a", "g", "h", "o", "p", "z")] == [0, 0, 1, 1, 2, 2]
    assert r.group_of("a-table-before", enc("zzz")) == 0   # tables order first
    assert r.group_of("u", enc("a")) == 2


@pytest.mark.parametrize("shards, fragment", [
    ({"groups": 0}, "shards.groups: 0 must be between 1 and 64"),
    ({"split": "range"}, "shards.split: 'range' is not one of hash, points"),
    ({"leaders": "pinned"}, "shards.leaders: 'pinned' is not one of spread, any"),
    ({"groups": 3, "split": "points", "points": [{"table": "t", "key": {"S": "a"}}]},
     "3 groups need 2 split points, got 1"),
    ({"groups": 2, "split": "points", "points": [{"table": "t"}]}, "shards.points[0]: expected"),
    ({"groups": 2, "split": "points", "points": [{"table": "t", "key": {"BOOL": True}}]},
     "shards.points[0]: key {'BOOL': True} is not an S, N or B value"),
    ({"groups": 3, "split": "points", "points": [{"table": "t", "key": {"S": "p"}},
                                                  {"table": "t", "key": {"S": "h"}}]},
     "split points must be in increasing order"),
    ({"groups": 2, "points": [{"table": "t", "key": {"S": "p"}}]}, "only with split"),
    ({"groups": "4"}, "shards.groups: expected int"),
])
def test_bad_shards_config_names_the_key(shards, fragment):
    with pytest.raises(ConfigError, match=None) as e:
        config.from_dict({"shards": shards})
    assert fragment in str(e.value)
