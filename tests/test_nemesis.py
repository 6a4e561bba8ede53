"""The nemesis schedule and the fault catalogue, on a recording backend.

The backend here is a stand-in that records calls (a unit test of
nemesis/ alone); the real local backend is exercised by the run tests.
"""

from __future__ import annotations

import random
import re
import time

import pytest

from harness.spec import SpecError, TestSpec
from nemesis.faults import FAULTS, GROUP_FAULTS, NEEDS_NODES
from nemesis.nemesis import Nemesis, describe


class RecordingBackend:
    def __init__(self, n: int = 5, raft_groups: int = 4) -> None:
        self.node_ids = [f"n{i + 1}" for i in range(n)]
        self.raft_groups = raft_groups
        self.calls: list[tuple] = []
        self.current_leader: str | None = "n3"
        self.term = 7
        #: group g > 0 led by these nodes (group 1 by the default group's leader)
        self.group_leaders = {1: "n3", 2: "n1", 3: "n5"}

    def leader_term(self, group=0):
        if group:
            return (self.group_leaders[group], 2) if group in self.group_leaders else None
        return None if self.current_leader is None else (self.current_leader, self.term)

    def partition(self, groups):
        self.calls.append(("partition", groups))

    def cut(self, cuts):
        self.calls.append(("cut", sorted(cuts)))

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

    def transfer_leadership(self, leader, to=None, group=0):
        if group:
            self.calls.append(("transfer", leader, to, group))
            self.group_leaders[group] = to
            return to
        self.calls.append(("transfer", leader, to))
        self.current_leader, self.term = to, self.term + 1
        return to

    def set_delay(self, ms):
        self.calls.append(("delay", ms))

    def set_loss(self, p):
        self.calls.append(("loss", p))

    def failpoint(self, node, **op):
        self.calls.append(("failpoint", node, op))

    def failpoint_settings(self, node):
        self.calls.append(("failpoint_settings", node))
        return {}

    def crash(self, node):
        self.calls.append(("crash", node))


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_every_fault_starts_and_undoes(name):
    b = RecordingBackend()
    act = FAULTS[name](b, random.Random(1))
    assert act.fault == name and b.calls
    before = len(b.calls)
    act.undo()
    nodes = act.targets.get("nodes") or [act.targets.get("node")]
    undone = {"partition": [("heal",)], "deafen": [("heal",)], "mute": [("heal",)],
              "clock": [("clock", nodes[0], {"reset": True})],
              "kill": [("restart", n) for n in nodes], "power": [("restart", n) for n in nodes],
              "pause": [("resume", n) for n in nodes],
              "disk-slow": [("failpoint", n, {"fsync_delay_ms": 0}) for n in nodes],
              "disk-stall": [("failpoint", n, {"fsync_stall": False}) for n in nodes],
              "apply-slow": [("failpoint", n, {"apply_delay_ms": 0}) for n in nodes],
              "partition-group-leader": [("failpoint", n, {"raft_cut_groups": []})
                                         for n in nodes],
              "delay": [("delay", 0)], "loss": [("loss", 0)], "leader": [], "transfer": []}
    assert b.calls[before:] == undone.get(name, undone.get(name.split("-")[0]))


def test_partition_leader_isolates_the_leader_and_bump_sets_its_clock_back():
    b = RecordingBackend()
    rng = random.Random(4)
    part = FAULTS["partition-leader"](b, rng)
    assert part.targets["groups"] == [["n3"], ["n1", "n2", "n4", "n5"]]
    bump = FAULTS["clock-bump"](b, rng)
    assert bump.targets["node"] == "n3" and bump.targets["bump_s"] < -4.9


@pytest.mark.parametrize("name, record, words", [
    ("partition-leader", {"groups": [["n3"], ["n1", "n2", "n4", "n5"]]}, "isolate n3"),
    ("kill-leader", {"node": "n3"}, "kill n3"),
    ("pause-leader", {"node": "n3"}, "pause n3"),
    ("clock-drift", {"node": "n3"}, "n3's clock at"),
])
def test_a_leader_fault_records_and_says_the_term_its_target_led(name, record, words):
    act = FAULTS[name](RecordingBackend(), random.Random(1))
    assert act.targets.items() >= {**record, "leader": "n3", "term": 7}.items()
    line = describe(name, act.targets)
    assert line.startswith(words) and line.endswith(" (leader of term 7)"), line


@pytest.mark.parametrize("name, pattern", [
    ("kill-majority", r"kill (n\d ){2}n\d \(leader of term 7\)"),
    ("pause-majority", r"pause (n\d ){2}n\d \(leader of term 7\)"),
    ("power-loss", r"power loss on (n\d ){2}n\d: unsynced writes lost \(leader of term 7\)"),
    ("disk-slow", r"fsyncs \+\d+ ms on (n\d ){2}n\d \(leader of term 7\)"),
    ("disk-stall", r"n3's fsyncs stall \(leader of term 7\)"),
    ("deafen-leader", r"nothing reaches n3 from n1 n2 n4 n5 \(leader of term 7\)"),
    ("mute-leader", r"nothing n3 sends reaches n1 n2 n4 n5 \(leader of term 7\)"),
    ("kill-all", r"kill n1 n2 n3 n4 n5"),
    ("apply-slow", r"n1 n2 n4 n5 apply each entry \+\d+ ms slower, all but n3 \(leader of term 7\)"),
])
def test_the_new_faults_say_whom_they_hit(name, pattern):
    act = FAULTS[name](RecordingBackend(), random.Random(1))
    line = describe(name, act.targets)
    assert re.fullmatch(pattern, line), line
    if "nodes" in act.targets and name != "kill-all":
        assert "n3" in line.split(" (")[0]  # the leader is among the majority


@pytest.mark.parametrize("name, pattern", [
    ("partition-group-leader",
     r"cut n([15]) off from group ([23])'s other replicas \(leader of group \2, term 2\)"),
    ("kill-group-leader", r"kill n[15] \(leader of group [23], term 2\)"),
    ("transfer-group-leader",
     r"move group [23]'s leadership from n[15] to n\d \(leader of group [23], term 2\)"),
])
def test_a_group_fault_hits_a_group_leader_that_does_not_lead_the_default_group(name, pattern):
    b = RecordingBackend()
    for seed in range(20):
        act = FAULTS[name](b, random.Random(seed))
        t = act.targets
        # group 1 is led by n3, the default group's leader too: never chosen
        assert t["raft_group"] in (2, 3) and t["node"] == t["leader"] != "n3", t
        assert t["leaders"] == {"0": "n3", "1": "n3", "2": "n1", "3": "n5"}
        assert re.fullmatch(pattern, describe(name, t)), describe(name, t)
        if name == "partition-group-leader":
            assert t["raft_cut_groups"] == [t["raft_group"]]
            assert b.calls[-1] == ("failpoint", t["node"], {"raft_cut_groups": [t["raft_group"]]})
        if name == "transfer-group-leader":
            assert b.calls[-1] == ("transfer", t["node"], t["to"], t["raft_group"])
            assert t["to"] != t["node"]
            b.group_leaders = {1: "n3", 2: "n1", 3: "n5"}
        act.undo()


def test_a_group_fault_picks_a_group_at_random_when_every_leader_leads_the_default_one_too():
    b = RecordingBackend()
    b.group_leaders = {1: "n3", 2: "n3", 3: "n3"}
    t = FAULTS["partition-group-leader"](b, random.Random(1)).targets
    assert t["node"] == "n3" and t["raft_group"] in (1, 2, 3)   # the only leaders there are
    b.group_leaders = {}
    t = FAULTS["kill-group-leader"](b, random.Random(1)).targets
    assert t["leader"] is None and t["raft_group"] in (1, 2, 3)
    assert describe("kill-group-leader", t).endswith("(group %d, no leader: picked at random)"
                                                     % t["raft_group"])


@pytest.mark.parametrize("name", ["partition-leader", "kill-leader", "pause-leader",
                                  "clock-bump"])
def test_a_leader_fault_without_a_leader_says_it_picked_at_random(name):
    b = RecordingBackend()
    b.current_leader = None
    act = FAULTS[name](b, random.Random(1))
    assert act.targets["leader"] is None and act.targets["term"] is None
    assert describe(name, act.targets).endswith(" (no leader: picked at random)")


def test_leader_churn_records_and_says_each_moves_term():
    b = RecordingBackend()
    act = FAULTS["leader-churn"](b, random.Random(1))
    first = act.targets["first"]
    assert first["from"] == "n3" and first["term"] == 7
    assert describe("leader-churn", act.targets) == (
        f"move leadership every second, first from n3 (leader of term 7) to {first['to']}")
    assert act.tick() == {"from": first["to"], "term": 8, "to": b.current_leader}
    b.current_leader = None
    assert act.tick() is None
    assert describe("leader-churn", {"first": None}).endswith("first nowhere (no leader)")


def test_bridge_and_halves_shapes():
    b = RecordingBackend()
    halves = FAULTS["partition-halves"](b, random.Random(2)).targets["groups"]
    assert sorted(len(g) for g in halves) == [2, 3]
    assert sorted(halves[0] + halves[1]) == b.node_ids
    bridge = FAULTS["partition-bridge"](b, random.Random(2)).targets["groups"]
    shared = set(bridge[0]) & set(bridge[1])
    assert len(shared) == 1 and set(bridge[0]) | set(bridge[1]) == set(b.node_ids)


def _run_schedule(seed: int, windows: int = 2) -> list[tuple[str, dict]]:
    """The events of a nemesis that ran ``windows`` fault windows (however long a
    busy machine takes for them), then stopped."""
    b = RecordingBackend()
    events: list[tuple[str, dict]] = []
    nem = Nemesis(b, ["partition-leader", "clock-bump"], 0.05, random.Random(seed),
                  lambda f, v: events.append((f, v)))
    nem.start()
    _wait_until(lambda: sum(f == "stop-partition-leader" for f, _ in events) >= windows)
    nem.stop()
    return events


def _wait_until(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "the nemesis did not get that far"
        time.sleep(0.01)


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
    assert n >= 2 and a[:n] == b[:n]


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
    assert spec.test_name == "set-none-read_index-lease-wall-long-lease"


@pytest.mark.parametrize("kw, name", [
    ({"workload": "register", "nemesis": ["partition-leader"]}, "register-partition-leader"),
    ({"workload": "register", "nemesis": ["partition-leader"], "read_path": "read_index"},
     "register-partition-leader-read_index"),
    ({"nemesis": ["partition-leader"], "bugs": ["unchecked-range-reads"]},
     "set-partition-leader-unchecked-range-reads"),
    ({"lease_ms": 900, "lease_anchor": "received", "drift_bound": 0.1},
     "set-none-lease-900ms-anchor-received-drift-0.1"),
    # settings equal to the store's defaults are the same configuration, the same name
    ({"read_path": "lease", "lease_clock": "monotonic", "lease_ms": 1700}, "set-none"),
    ({"bugs": ["long-lease", "ack-before-fsync", "long-lease"]},
     "set-none-ack-before-fsync-long-lease"),
    ({"name": "mine", "read_path": "local"}, "mine"),
])
def test_test_name_holds_every_store_setting_that_differs(kw, name):
    assert TestSpec(**kw).test_name == name


def test_two_configurations_never_share_a_name():
    settings = [{}, {"read_path": "read_index"}, {"read_path": "local"}, {"lease_ms": 500},
                {"lease_clock": "wall"}, {"lease_anchor": "received"}, {"drift_bound": 0.2},
                {"bugs": ["long-lease"]}, {"bugs": ["no-noop-read"]},
                {"read_path": "local", "bugs": ["long-lease"]}]
    names = [TestSpec(nemesis=["partition-leader"], **kw).test_name for kw in settings]
    assert len(set(names)) == len(names), names


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_every_fault_runs_on_the_fewest_nodes_it_allows(name):
    need, why = NEEDS_NODES.get(name, (1, ""))
    groups = 4 if name in GROUP_FAULTS else 1
    TestSpec(nodes=need, nemesis=[name], groups=groups)
    b = RecordingBackend(need)
    b.current_leader = "n1"
    b.group_leaders = {g: f"n{1 + g % need}" for g in (1, 2, 3)}
    FAULTS[name](b, random.Random(1)).undo()
    if need > 1:
        with pytest.raises(SpecError, match=f"--nodes: --nemesis {name} needs at least "
                                            f"{need} nodes .*got {need - 1}"):
            TestSpec(nodes=need - 1, nemesis=[name], groups=groups)
    if name in GROUP_FAULTS:
        with pytest.raises(SpecError, match=f"--groups: --nemesis {name} aims at the leader "
                                            "of a non-default Raft group, so it needs 2 or "
                                            "more, got 1"):
            TestSpec(nodes=need, nemesis=[name])


def test_faults_that_take_some_nodes_out_need_three_nodes():
    """Cutting off, stopping or stalling part of the cluster tests the rest only
    when there are at least three; stopping all of it, or slowing it, does not."""
    three = {n for n, (need, _) in NEEDS_NODES.items() if need == 3}
    out = {n for n in FAULTS if n.startswith(("partition", "kill", "pause", "deafen", "mute"))}
    assert out - {"kill-all"} | {"disk-stall"} == three


@pytest.mark.parametrize("kw, words", [
    ({"lease_ms": 0}, "--lease-ms: must be positive, got 0"),
    ({"lease_ms": -100}, "--lease-ms: must be positive"),
    ({"heartbeat_ms": 2000}, "--heartbeat-ms, --election-timeout-ms: need 0 < heartbeat"),
    ({"drift_bound": 1.0}, r"--drift-bound: must be in \[0, 1\)"),
    ({"client_timeout": 0}, "--client-timeout: must be positive"),
    ({"quiet_period": -1}, "--quiet-period: must be >= 0"),
])
def test_store_settings_out_of_range_name_the_flag(kw, words):
    with pytest.raises(SpecError, match=words):
        TestSpec(**kw)


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


def test_a_runs_test_json_is_a_spec(tmp_path):
    """test.json, as the runner writes it, runs the same test again, its seed too."""
    import json

    from harness.spec import load_spec

    saved = TestSpec(workload="register", nemesis=["partition-leader:8/2"], bugs=["long-lease"],
                     nodes=3, workload_options={"keys": 4})
    saved.resolve_seed()
    f = tmp_path / "test.json"
    f.write_text(json.dumps({"spec": saved.to_dict(), "seed": saved.seed, "t0_ns": 1}))
    assert load_spec(str(f)) == saved
    assert load_spec(str(f), nodes=5).nodes == 5  # flags given too still win
    f.write_text("{not json")
    with pytest.raises(SpecError, match=r"--spec .*test\.json: Expecting property name"):
        load_spec(str(f))
    f.write_text("[1, 2]")
    with pytest.raises(SpecError, match="not a table of settings"):
        load_spec(str(f))


@pytest.mark.parametrize("faults", [["partition-one"], ["leader-churn"]])
def test_fault_and_quiet_windows_have_their_own_lengths(faults):
    """Faults last ``interval``, the gaps between them ``quiet``, each at least as
    long as asked; a fault that acts while active (churn) lasts one window, not
    two.  Only lower bounds and that one upper bound: a busy machine may stretch
    any window a little, never shrink it."""
    interval, quiet = 0.5, 0.1
    b = RecordingBackend()
    stamps: list[tuple[str, float]] = []
    nem = Nemesis(b, faults, interval, random.Random(3),
                  lambda f, v: stamps.append((f, time.monotonic())), quiet=quiet)
    t0 = time.monotonic()
    nem.start()
    _wait_until(lambda: sum(f.startswith("start-") for f, _ in stamps) >= 2)
    nem.stop()
    starts = [t for f, t in stamps if f.startswith("start-")]
    stops = [t for f, t in stamps if f.startswith("stop-")]
    assert len(stops) == len(starts) >= 2
    assert t0 < starts[0] < stops[0] < starts[1] < stops[1]
    slack = 0.005  # timer rounding
    assert starts[0] - t0 >= quiet - slack                  # the first quiet window
    assert stops[0] - starts[0] >= interval - slack         # a fault window ...
    assert stops[0] - starts[0] < 2 * interval              # ... one, not two
    assert starts[1] - stops[0] >= quiet - slack            # the next quiet window
