"""The fault catalogue's multi-node, one-way and disk faults, and the check that
refuses a fault the system under test cannot take, on a recording backend
(a unit test of nemesis/faults.py alone)."""

from __future__ import annotations

import json
import random

import pytest
from test_nemesis import RecordingBackend

from nemesis.faults import FAULT_KINDS, FAULTS, UnsupportedFault, check_support


def _hit(b: RecordingBackend, verb: str) -> list[str]:
    return [c[1] for c in b.calls if c[0] == verb]


@pytest.mark.parametrize("name, verb, undo", [("kill-majority", "kill", "restart"),
                                              ("pause-majority", "pause", "resume"),
                                              ("power-loss", "crash", "restart")])
@pytest.mark.parametrize("n, size", [(1, 1), (3, 2), (4, 3), (5, 3)])
def test_a_majority_fault_hits_distinct_nodes_with_the_leader_and_undoes_them_all(
        name, verb, undo, n, size):
    for seed in range(20):
        b = RecordingBackend(n)
        b.current_leader = b.node_ids[-1]
        act = FAULTS[name](b, random.Random(seed))
        nodes = act.targets["nodes"]
        assert nodes == sorted(set(nodes)) and len(nodes) == size
        assert b.node_ids[-1] in nodes and set(nodes) <= set(b.node_ids)
        assert (act.targets["leader"], act.targets["term"]) == (b.node_ids[-1], 7)
        assert _hit(b, verb) == nodes  # all at the window's start
        b.calls.clear()
        act.undo()
        assert b.calls == [(undo, node) for node in nodes]


def test_a_multi_node_fault_that_fails_half_way_undoes_what_it_did():
    class Failing(RecordingBackend):
        def crash(self, node):
            super().crash(node)
            if len(_hit(self, "crash")) == 2:
                raise RuntimeError(f"{node} refused")

    b = Failing(5)
    with pytest.raises(RuntimeError, match="refused"):
        FAULTS["power-loss"](b, random.Random(1))
    crashed = _hit(b, "crash")
    assert len(crashed) == 2 and b.calls[2:] == [("restart", crashed[0])]


def test_a_majority_fault_without_a_leader_says_it_picked_at_random():
    b = RecordingBackend(5)
    b.current_leader = None
    act = FAULTS["kill-majority"](b, random.Random(2))
    assert len(act.targets["nodes"]) == 3
    assert act.targets["leader"] is None and act.targets["term"] is None


def test_the_majority_is_seeded():
    picks = [FAULTS["power-loss"](RecordingBackend(5), random.Random(s)).targets["nodes"]
             for s in (1, 1, 2, 3, 4, 5)]
    assert picks[0] == picks[1] and len({tuple(p) for p in picks}) > 1


@pytest.mark.parametrize("name, leader, targets", [
    ("partition-one", "n3", {"groups": [["n2"], ["n1", "n3", "n4", "n5"]]}),
    ("partition-halves", "n3", {"groups": [["n1", "n2"], ["n3", "n4", "n5"]]}),
    ("partition-bridge", "n3", {"groups": [["n1", "n2", "n5"], ["n2", "n3", "n4"]]}),
    ("partition-random", "n3", {"groups": [["n1"], ["n2"], ["n3", "n5"], ["n4"]]}),
    ("partition-leader", None, {"groups": [["n2"], ["n1", "n3", "n4", "n5"]],
                                "leader": None, "term": None}),
    ("clock-bump", "n3", {"node": "n3", "bump_s": -6.344, "leader": "n3", "term": 7}),
    ("clock-bump", None, {"node": "n2", "bump_s": -10.692, "leader": None, "term": None}),
    ("clock-strobe", "n3", {"node": "n2", "delta_s": 6.123}),
    ("kill", "n3", {"node": "n2"}),
    ("kill-majority", "n3", {"nodes": ["n2", "n3", "n4"], "leader": "n3", "term": 7}),
    ("kill-majority", None, {"nodes": ["n1", "n2", "n3"], "leader": None, "term": None}),
    ("disk-slow", "n3", {"nodes": ["n2", "n3", "n4"], "leader": "n3", "term": 7,
                         "fsync_delay_ms": 483}),
    ("apply-slow", "n3", {"nodes": ["n1", "n2", "n4", "n5"], "leader": "n3", "term": 7,
                          "apply_delay_ms": 13, "spared": "n3"}),
    ("leader-churn", "n3", {"first": {"from": "n3", "term": 7, "to": "n2"}}),
    ("delay", "n3", {"ms": 44.2}),
    ("loss", "n3", {"p": 0.084}),
])
def test_seed_1_chooses_what_it_always_chose(name, leader, targets):
    """Pinned from before faults were split into choose and apply: a saved run's
    seed must keep choosing the same targets, written the same way (key order
    too, as schedule.jsonl has them), and choosing must touch nothing."""
    b = RecordingBackend()
    b.current_leader = leader
    assert json.dumps(FAULT_KINDS[name].choose(b, random.Random(1))) == json.dumps(targets)
    assert b.calls == []
    assert json.dumps(FAULTS[name](b, random.Random(1)).targets) == json.dumps(targets)


def test_kill_all_kills_and_restarts_every_node_and_aims_at_no_leader():
    b = RecordingBackend(5)
    act = FAULTS["kill-all"](b, random.Random(1))
    assert act.targets == {"nodes": b.node_ids}
    assert _hit(b, "kill") == b.node_ids
    act.undo()
    assert _hit(b, "restart") == b.node_ids


@pytest.mark.parametrize("name, inbound", [("deafen-leader", True), ("mute-leader", False)])
def test_one_way_faults_cut_one_direction_of_every_leader_link(name, inbound):
    b = RecordingBackend(5)
    act = FAULTS[name](b, random.Random(1))
    followers = ["n1", "n2", "n4", "n5"]
    cuts = sorted((f, "n3") if inbound else ("n3", f) for f in followers)
    assert b.calls == [("cut", cuts)]
    assert act.targets == {"node": "n3", "cuts": [list(c) for c in cuts], "leader": "n3",
                           "term": 7}
    assert json.loads(json.dumps(act.targets)) == act.targets  # as schedule.jsonl keeps it
    act.undo()
    assert b.calls[-1] == ("heal",)


def test_disk_slow_delays_a_majoritys_fsyncs_by_a_seeded_amount():
    delays = []
    for seed in range(30):
        b = RecordingBackend()
        act = FAULTS["disk-slow"](b, random.Random(seed))
        ms = act.targets["fsync_delay_ms"]
        assert isinstance(ms, int) and 50 <= ms <= 500
        nodes = act.targets["nodes"]
        assert "n3" in nodes and len(set(nodes)) == len(b.node_ids) // 2 + 1
        assert b.calls == [("failpoint", n, {"fsync_delay_ms": ms}) for n in nodes]
        assert act.targets["leader"] == "n3" and act.targets["term"] == 7
        delays.append(ms)
        act.undo()
        assert b.calls[-len(nodes):] == [("failpoint", n, {"fsync_delay_ms": 0}) for n in nodes]
    assert len(set(delays)) > 10
    again = FAULTS["disk-slow"](RecordingBackend(), random.Random(0)).targets["fsync_delay_ms"]
    assert again == delays[0]


def test_disk_stall_stalls_the_leader_until_the_window_ends():
    b = RecordingBackend()
    act = FAULTS["disk-stall"](b, random.Random(1))
    assert b.calls == [("failpoint", "n3", {"fsync_stall": True})]
    assert act.targets == {"node": "n3", "fsync_stall": True, "leader": "n3", "term": 7}
    act.undo()
    assert b.calls[-1] == ("failpoint", "n3", {"fsync_stall": False})


def test_apply_slow_slows_every_node_but_the_leader_and_undoes_only_its_own_key():
    b = RecordingBackend()
    act = FAULTS["apply-slow"](b, random.Random(4))
    ms = act.targets["apply_delay_ms"]
    assert 5 <= ms <= 50
    assert act.targets["nodes"] == ["n1", "n2", "n4", "n5"] and act.targets["spared"] == "n3"
    assert b.calls == [("failpoint", n, {"apply_delay_ms": ms}) for n in ("n1", "n2", "n4", "n5")]
    act.undo()
    # a disk fault of the same window keeps its own failpoint
    assert b.calls[4:] == [("failpoint", n, {"apply_delay_ms": 0}) for n in ("n1", "n2", "n4", "n5")]


class Probed(RecordingBackend):
    """Answers ``GET /failpoint`` as each node is told to: settings, no route, or down."""

    def __init__(self, answers: dict[str, object]) -> None:
        super().__init__(len(answers))
        self.answers = answers

    def failpoint_settings(self, node):
        self.calls.append(("failpoint_settings", node))
        answer = self.answers[node]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_check_support_asks_nothing_when_no_fault_needs_failpoints():
    b = Probed({"n1": None})
    check_support(b, ["kill", "partition-leader", "deafen-leader"])
    assert b.calls == []


@pytest.mark.parametrize("fault", ["disk-slow", "disk-stall", "power-loss"])
def test_check_support_refuses_a_disk_fault_on_a_store_without_failpoints(fault):
    b = Probed({"n1": None, "n2": {}})
    with pytest.raises(UnsupportedFault, match=f"^--nemesis {fault}: the system under test has "
                                               "no failpoints .GET /failpoint on n1: no such"):
        check_support(b, ["kill", fault])


def test_check_support_passes_once_a_running_node_has_failpoints():
    b = Probed({"n1": ConnectionRefusedError("refused"), "n2": {"fsync_delay_ms": 0},
                "n3": None})
    check_support(b, ["disk-slow"])
    assert b.calls == [("failpoint_settings", "n1"), ("failpoint_settings", "n2")]


def test_check_support_says_so_when_no_node_answers():
    b = Probed({"n1": ConnectionRefusedError("refused"), "n2": RuntimeError("HTTP 500: boom")})
    with pytest.raises(UnsupportedFault, match="--nemesis power-loss: no node answered GET "
                                               "/failpoint.*n1: refused; n2: HTTP 500: boom"):
        check_support(b, ["power-loss"])
