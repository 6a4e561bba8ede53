"""The nemesis schedule and the fault catalogue, on a recording backend.

The backend here is a stand-in that records calls (a unit test of
nemesis/ alone); the real local backend is exercised by the run tests.
"""

from __future__ import annotations

import random
import time

import pytest

from harness.spec import SpecError, TestSpec
from nemesis.faults import FAULTS
from nemesis.nemesis import Nemesis


class RecordingBackend:
    def __init__(self, n: int = 5) -> None:
        self.node_ids = [f"n{i + 1}" for i in range(n)]
        self.calls: list[tuple] = []
        self.current_leader = "n3"

    def leader(self):
        return self.current_leader

    def partition(self, groups):
        self.calls.append(("partition", groups))

    def heal_network(self):
        self.calls.append(("heal",))

    def clock(self, node, **op):
        self.calls.append(("clock", node, op))

    def kill(self, node):
        self.calls.append(("kill", node))

    def restart(self, node):
        self.calls.append(("restart", node))

    def pause(self, node):
        self.calls.append(("pause", node))

    def resume(self, node):
        self.calls.append(("resume", node))

    def transfer_leadership(self, leader, to=None):
        self.calls.append(("transfer", leader, to))
        self.current_leader = to
        return to

    def set_delay(self, ms):
        self.calls.append(("delay", ms))

    def set_loss(self, p):
        self.calls.append(("loss", p))


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_every_fault_starts_and_undoes(name):
    b = RecordingBackend()
    act = FAULTS[name](b, random.Random(1))
    assert act.fault == name and b.calls
    before = len(b.calls)
    act.undo()
    undo_calls = b.calls[before:]
    if name.startswith("partition"):
        assert undo_calls == [("heal",)]
    elif name.startswith("clock"):
        assert undo_calls == [("clock", act.targets["node"], {"reset": True})]
    elif name.startswith("kill"):
        assert undo_calls == [("restart", act.targets["node"])]
    elif name.startswith("pause"):
        assert undo_calls == [("resume", act.targets["node"])]
    elif name in ("delay", "loss"):
        assert undo_calls == [(name, 0)]


def test_partition_leader_isolates_the_leader_and_bump_sets_its_clock_back():
    b = RecordingBackend()
    rng = random.Random(4)
    part = FAULTS["partition-leader"](b, rng)
    assert part.targets["groups"] == [["n3"], ["n1", "n2", "n4", "n5"]]
    bump = FAULTS["clock-bump"](b, rng)
    assert bump.targets["node"] == "n3" and bump.targets["bump_s"] < -4.9


def test_bridge_and_halves_shapes():
    b = RecordingBackend()
    halves = FAULTS["partition-halves"](b, random.Random(2)).targets["groups"]
    assert sorted(len(g) for g in halves) == [2, 3]
    assert sorted(halves[0] + halves[1]) == b.node_ids
    bridge = FAULTS["partition-bridge"](b, random.Random(2)).targets["groups"]
    shared = set(bridge[0]) & set(bridge[1])
    assert len(shared) == 1 and set(bridge[0]) | set(bridge[1]) == set(b.node_ids)


def _run_schedule(seed: int) -> list[tuple[str, dict]]:
    b = RecordingBackend()
    events: list[tuple[str, dict]] = []
    nem = Nemesis(b, ["partition-leader", "clock-bump"], 0.05, random.Random(seed),
                  lambda f, v: events.append((f, v)))
    nem.start()
    time.sleep(0.33)
    nem.stop()
    return events


def test_schedule_composes_in_order_stops_in_reverse_and_heals_on_stop():
    events = _run_schedule(9)
    fs = [f for f, _ in events]
    assert fs[:4] == ["start-partition-leader", "start-clock-bump",
                      "stop-clock-bump", "stop-partition-leader"]
    # stop() leaves nothing active: every start has its stop
    assert fs.count("start-partition-leader") == fs.count("stop-partition-leader")
    assert fs[-1].startswith("stop-")


def test_same_seed_same_fault_parameters():
    a = [v.get("bump_s") for f, v in _run_schedule(5) if f == "start-clock-bump"]
    b = [v.get("bump_s") for f, v in _run_schedule(5) if f == "start-clock-bump"]
    n = min(len(a), len(b))
    assert n >= 1 and a[:n] == b[:n]


def test_leader_churn_transfers_while_active():
    b = RecordingBackend()
    events: list[tuple[str, dict]] = []
    nem = Nemesis(b, ["leader-churn"], 0.05, random.Random(1),
                  lambda f, v: events.append((f, v)))
    act = FAULTS["leader-churn"](b, random.Random(1))
    assert act.tick is not None and act.period == 1.0
    assert [c[0] for c in b.calls] == ["transfer"]
    nem.stop()


@pytest.mark.parametrize("kw, words", [
    ({"workload": "queue"}, "--workload: 'queue' is not one of register, set, bank"),
    ({"nemesis": ["nap"]}, "--nemesis: 'nap' is not one of partition-one"),
    ({"bugs": ["oops"]}, "--bug: 'oops' is not one of unchecked-range-reads"),
    ({"time_limit": 0}, "--time-limit: must be positive"),
    ({"read_path": "fast"}, "--read-path: 'fast' is not one of lease, read_index, local"),
])
def test_spec_errors_name_the_option_and_choices(kw, words):
    with pytest.raises(SpecError, match=words.replace("(", r"\(")):
        TestSpec(**kw)


def test_spec_node_config():
    spec = TestSpec(read_path="read_index", lease_clock="wall", bugs=["long-lease"])
    cfg = spec.node_config()
    assert cfg["reads"]["query"] == "read_index" and cfg["lease"] == {"clock": "wall"}
    assert cfg["bugs"] == ["long-lease"] and cfg["raft"]["election_timeout_ms"] == 2000
    assert spec.test_name == "set-none-long-lease"


def test_spec_from_toml_with_flag_overrides(tmp_path):
    from harness.spec import load_spec

    f = tmp_path / "t.toml"
    f.write_text('workload = "bank"\nnemesis = ["kill", "pause"]\ntime_limit = 12\n'
                 '[workload_options]\naccounts = 3\n')
    spec = load_spec(str(f), time_limit=5.0, seed=9)
    assert (spec.workload, spec.nemesis, spec.time_limit, spec.seed) == (
        "bank", ["kill", "pause"], 5.0, 9)
    assert spec.workload_options == {"accounts": 3}
    f.write_text('workload = "bank"\nnodez = 3\n')
    with pytest.raises(SpecError, match="unknown key 'nodez'"):
        load_spec(str(f))


@pytest.mark.parametrize("faults", [["partition-one"], ["leader-churn"]])
def test_fault_and_quiet_windows_have_their_own_lengths(faults):
    """Faults last ``interval``, the gaps between them ``quiet``; a fault
    that acts while active (churn) lasts one window too, not two."""
    b = RecordingBackend()
    stamps: list[tuple[str, float]] = []
    nem = Nemesis(b, faults, 0.3, random.Random(3),
                  lambda f, v: stamps.append((f, time.monotonic())), quiet=0.1)
    t0 = time.monotonic()
    nem.start()
    time.sleep(1.0)
    nem.stop()
    starts = [t for f, t in stamps if f.startswith("start-")]
    stops = [t for f, t in stamps if f.startswith("stop-")]
    assert len(starts) >= 2 and len(stops) == len(starts)
    assert 0.08 <= starts[0] - t0 <= 0.2                   # the first quiet window
    assert 0.25 <= stops[0] - starts[0] <= 0.4              # a fault window
    assert 0.08 <= starts[1] - stops[0] <= 0.2              # the next quiet window
