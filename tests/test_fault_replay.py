"""Faults as data: a recorded fault's targets applied again, as they were or
aimed by role at whoever leads now (the groundwork of replaying a saved
schedule), on a recording backend (a unit test of nemesis/faults.py alone)."""

from __future__ import annotations

import copy
import json
import random

import pytest
from test_nemesis import RecordingBackend

from nemesis.faults import FAULT_KINDS, FAULTS, recorded_leader, retarget


class Blind(RecordingBackend):
    """A backend that cannot say who leads: applying a record must not ask."""

    def leader_term(self):
        raise AssertionError("apply asked who leads; it must act on the record alone")


def _as_saved(targets: dict) -> dict:
    return json.loads(json.dumps(targets))  # as schedule.jsonl gives it back: lists, not tuples


@pytest.mark.parametrize("leader", ["n3", None])
@pytest.mark.parametrize("name", sorted(FAULTS))
def test_a_recorded_fault_applied_again_makes_the_calls_the_run_made(name, leader):
    for seed in range(5):
        b = RecordingBackend()
        b.current_leader = leader
        ran = FAULTS[name](b, random.Random(seed))
        started = list(b.calls)
        ran.undo()
        undone = b.calls[len(started):]

        again = Blind()
        record = _as_saved(ran.targets)
        act = FAULT_KINDS[name].apply(again, record, random.Random(seed))
        assert (act.fault, act.targets) == (name, record)
        assert again.calls == started
        act.undo()
        assert again.calls[len(started):] == undone
        assert (act.tick is None, act.period) == (ran.tick is None, ran.period)


@pytest.mark.parametrize("name", ["clock-strobe", "leader-churn"])
def test_a_recorded_ticking_fault_ticks_as_the_run_did_given_the_same_rng(name):
    def run(b, start):
        act = start(b)
        ticks = [act.tick() for _ in range(4)]
        act.undo()
        return b.calls, ticks

    rng = random.Random(3)
    kind = FAULT_KINDS[name]
    record = kind.choose(RecordingBackend(), rng)
    live = random.Random()
    live.setstate(rng.getstate())  # where the run's rng stood once the fault was chosen
    calls, ticks = run(RecordingBackend(), lambda b: FAULTS[name](b, random.Random(3)))
    assert run(RecordingBackend(), lambda b: kind.apply(b, _as_saved(record), live)) == (
        calls, ticks)
    if name == "clock-strobe":  # back and forth from the start, then reset
        node, d = record["node"], record["delta_s"]
        assert calls == [*(("clock", node, {"bump": s * d}) for s in (1, -1, 1, -1, 1)),
                         ("clock", node, {"reset": True})]
    else:  # each move from the node the last one made leader; the stop does nothing
        moves = [record["first"], *ticks]
        assert calls == [("transfer", m["from"], m["to"]) for m in moves]
        assert all(m["from"] == prev["to"] for prev, m in zip(moves, moves[1:]))


def test_churn_replayed_makes_the_recorded_first_move_then_follows_who_leads_now():
    b = RecordingBackend()
    record = {"first": {"from": "n3", "term": 7, "to": "n2"}}
    act = FAULT_KINDS["leader-churn"].apply(b, record, random.Random(5))
    assert b.calls == [("transfer", "n3", "n2")]
    b.current_leader, b.term = "n4", 12  # leadership moved on its own since
    to = random.Random(5).choice(["n1", "n2", "n3", "n5"])
    assert act.tick() == {"from": "n4", "term": 12, "to": to}
    assert b.calls[-1] == ("transfer", "n4", to)
    idle = Blind()  # none led when it was recorded: no first move, all of the churn live
    assert FAULT_KINDS["leader-churn"].apply(idle, {"first": None}, random.Random(5)).tick
    assert idle.calls == []


@pytest.mark.parametrize("record, then, now, aimed", [
    ({"groups": [["n3"], ["n1", "n2", "n4", "n5"]], "leader": "n3", "term": 7}, "n3", "n5",
     {"groups": [["n5"], ["n1", "n2", "n4", "n3"]], "leader": "n5", "term": None}),
    ({"node": "n3", "bump_s": -6.344, "leader": "n3", "term": 7}, "n3", "n1",
     {"node": "n1", "bump_s": -6.344, "leader": "n1", "term": None}),
    ({"nodes": ["n2", "n3", "n4"], "leader": "n3", "term": 7, "fsync_delay_ms": 483}, "n3", "n5",
     {"nodes": ["n2", "n5", "n4"], "leader": "n5", "term": None, "fsync_delay_ms": 483}),
    ({"nodes": ["n1", "n3", "n5"], "leader": "n3", "term": 7}, "n3", "n5",  # held both
     {"nodes": ["n1", "n5", "n3"], "leader": "n5", "term": None}),
    ({"node": "n3", "cuts": [["n1", "n3"], ["n2", "n3"], ["n5", "n3"]], "leader": "n3", "term": 7},
     "n3", "n5",
     {"node": "n5", "cuts": [["n1", "n5"], ["n2", "n5"], ["n3", "n5"]], "leader": "n5",
      "term": None}),
    ({"nodes": ["n1", "n2", "n4", "n5"], "leader": "n3", "term": 7, "apply_delay_ms": 13,
      "spared": "n3"}, "n3", "n2",
     {"nodes": ["n1", "n3", "n4", "n5"], "leader": "n2", "term": None, "apply_delay_ms": 13,
      "spared": "n2"}),
    ({"first": {"from": "n3", "term": 7, "to": "n5"}}, "n3", "n5",
     {"first": {"from": "n5", "term": None, "to": "n3"}}),
], ids=["groups", "node", "nodes", "nodes-with-both", "cuts", "spared", "churn"])
def test_retarget_swaps_the_old_and_new_leader_in_every_shape(record, then, now, aimed):
    saved = copy.deepcopy(record)
    assert recorded_leader(record) == then
    assert retarget(record, then, now) == aimed
    assert record == saved  # pure: the record is left as it was


@pytest.mark.parametrize("record, now", [
    ({"groups": [["n2"], ["n1", "n3", "n4", "n5"]], "leader": None, "term": None}, "n5"),
    ({"nodes": ["n1", "n2", "n3"], "leader": None, "term": None}, "n3"),
    ({"first": None}, "n3"),
    ({"node": "n2"}, "n3"),  # kill: aimed at no role
    ({"groups": [["n1", "n2"], ["n3", "n4", "n5"]]}, "n1"),
    ({"node": "n3", "bump_s": -6.344, "leader": "n3", "term": 7}, None),  # none leads now
])
def test_retarget_leaves_a_record_that_follows_no_role_as_it_was(record, now):
    then = recorded_leader(record)
    assert then is None or now is None
    assert retarget(record, then, now) is record


def _plain(t: dict) -> dict:
    """Targets without the order of their names, nor the term."""
    out = {k: v for k, v in t.items() if k != "term"}
    if "groups" in t:
        out["groups"] = sorted(sorted(g) for g in t["groups"])
    for key in ("nodes", "cuts"):
        if key in t:
            out[key] = sorted(map(tuple, t[key]) if key == "cuts" else t[key])
    return out


@pytest.mark.parametrize("name", ["partition-leader", "deafen-leader", "mute-leader", "kill-leader",
                                  "pause-leader", "clock-bump", "clock-drift", "disk-stall",
                                  "apply-slow"])
def test_a_leader_fault_retargeted_is_what_it_would_have_chosen_under_the_new_leader(name):
    """For a fault whose one choice is the leader, following the role gives what
    the same seed chooses when the other node leads."""
    for seed in range(5):
        then, now = RecordingBackend(), RecordingBackend()
        now.current_leader = "n5"
        record = _as_saved(FAULT_KINDS[name].choose(then, random.Random(seed)))
        chosen = FAULT_KINDS[name].choose(now, random.Random(seed))
        aimed = retarget(record, recorded_leader(record), "n5")
        assert aimed != record and aimed["term"] is None
        assert _plain(aimed) == _plain(chosen)
