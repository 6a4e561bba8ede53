"""Fault windows chosen per fault: ``--nemesis NAME[:WINDOW[/QUIET]]``.

The parsing, the grouping by timing, and the groups' schedules on a
recording backend (a unit test of nemesis/ alone, as in test_nemesis.py).
Timing assertions are lower bounds, plus upper bounds loose enough for a
busy machine: a window may stretch a little, never shrink.
"""

from __future__ import annotations

import random
import time

import pytest
from test_nemesis import RecordingBackend

from harness.spec import SpecError, TestSpec
from nemesis.nemesis import (FaultEntry, FaultGroup, FaultSchedule, fault_groups, group_rng,
                             parse_fault)

SLACK = 0.005  # timer rounding


@pytest.mark.parametrize("entry, parsed", [
    ("partition-leader", FaultEntry("partition-leader")),
    ("partition-leader:12", FaultEntry("partition-leader", 12.0)),
    ("partition-leader:12/3", FaultEntry("partition-leader", 12.0, 3.0)),
    ("leader-churn:0.5/0.25", FaultEntry("leader-churn", 0.5, 0.25)),
])
def test_an_entry_is_a_name_and_its_own_timing(entry, parsed):
    assert parse_fault(entry) == parsed


@pytest.mark.parametrize("entry, part", [
    ("partition-leader:x", "window"), ("partition-leader:", "window"),
    ("partition-leader:0", "window"), ("partition-leader:-2", "window"),
    ("partition-leader:nan", "window"), ("partition-leader:inf", "window"),
    ("partition-leader:1:2", "window"), ("partition-leader:/3", "window"),
    ("partition-leader:12/", "quiet"), ("partition-leader:12/0", "quiet"),
    ("partition-leader:12/x", "quiet"), ("partition-leader:12/3/4", "quiet"),
])
def test_a_bad_timing_names_the_entry_and_the_part(entry, part):
    with pytest.raises(ValueError) as e:
        parse_fault(entry)
    assert str(e.value) == f"{entry}: {part} must be a number of seconds > 0"


def test_faults_group_by_timing_in_listed_order():
    entries = ["partition-leader:12/3", "pause", "clock-bump:12/3", "leader-churn:2/1",
               "kill:4/2", "delay:4"]
    assert fault_groups(entries, window=4.0, quiet=2.0) == [
        FaultGroup(12.0, 3.0, ("partition-leader", "clock-bump")),
        # an entry whose timing is the test's joins the faults without one
        FaultGroup(4.0, 2.0, ("pause", "kill", "delay")),
        FaultGroup(2.0, 1.0, ("leader-churn",)),
    ]
    assert str(fault_groups(entries, 4.0, 2.0)[0]) == (
        "partition-leader, clock-bump: 12-s windows, 3 s apart")


@pytest.mark.parametrize("nemesis, words", [
    (["partition-leader:x"], "--nemesis partition-leader:x: window must be a number of "
                             "seconds > 0"),
    (["kill:2/-1"], "--nemesis kill:2/-1: quiet must be a number of seconds > 0"),
    (["nap:2/1"], "--nemesis: 'nap' is not one of partition-one"),
    (["kill", "pause", "kill:2/1"], "--nemesis: kill is listed twice"),
])
def test_spec_refuses_bad_entries_naming_them(nemesis, words):
    with pytest.raises(SpecError) as e:
        TestSpec(nemesis=nemesis)
    assert str(e.value).startswith(words), e.value


def test_spec_keeps_entries_as_typed_and_names_the_test_by_faults():
    spec = TestSpec(workload="register", nemesis=["partition-leader:12/3", "clock-bump"])
    again = TestSpec(**spec.to_dict())  # test.json read back
    assert again.nemesis == ["partition-leader:12/3", "clock-bump"]
    assert again.fault_names == ["partition-leader", "clock-bump"]
    assert again.test_name == "register-partition-leader-clock-bump"  # no "/" in a path
    with pytest.raises(SpecError, match="--nodes: --nemesis kill needs at least 3 nodes"):
        TestSpec(nodes=2, nemesis=["kill:3/1"])


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_spec_refuses_a_negative_staleness_bound(bad):
    assert TestSpec(max_staleness_ms=0).max_staleness_ms == 0
    with pytest.raises(SpecError, match="--max-staleness: must be >= 0 ms"):
        TestSpec(max_staleness_ms=bad)


# ------------------------------------------------------------------ the schedules


Events = list[tuple[str, dict, float]]


def _schedule(entries: list[str], seed: int = 3) -> tuple[FaultSchedule, Events,
                                                         RecordingBackend]:
    b = RecordingBackend()
    events: Events = []
    sched = FaultSchedule(b, entries, seed, lambda f, v: events.append((f, v, time.monotonic())),
                          window=4.0, quiet=2.0)
    return sched, events, b


def _wait_until(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "the nemesis did not get that far"
        time.sleep(0.01)


def _count(events: Events, f: str) -> int:
    return sum(e[0] == f for e in events)


def _of(events: Events, *faults: str) -> Events:
    return [e for e in events if e[0].partition("-")[2] in faults]


def _check_spacing(events: Events, t0: float, halted: float, window: float,
                   quiet: float) -> None:
    """One group's windows: quiet first, then each fault window at least
    ``window`` long (and one window, not two), each gap at least ``quiet``.
    A window that stop() cut short at ``halted`` is only checked to have ended."""
    starts = [t for f, _, t in events if f.startswith("start-")]
    stops = [t for f, _, t in events if f.startswith("stop-")]
    assert len(starts) == len(stops) >= 2
    assert starts[0] - t0 >= quiet - SLACK
    for start, stop in zip(starts, stops):
        assert stop - start < 2 * window
        assert stop >= halted or stop - start >= window - SLACK
    for stop, start in zip(stops, starts[1:]):
        assert start - stop >= quiet - SLACK


def test_groups_with_different_timings_run_on_their_own_schedules():
    sched, events, _ = _schedule(["partition-one:0.2/0.1", "delay:0.5/0.3", "loss:0.5/0.3"])
    assert [g.faults for g in sched.groups] == [("partition-one",), ("delay", "loss")]
    t0 = time.monotonic()
    sched.start()
    _wait_until(lambda: _count(events, "stop-delay") >= 2)
    halted = time.monotonic()
    sched.stop()
    short, long_ = _of(events, "partition-one"), _of(events, "delay", "loss")
    _check_spacing(short, t0, halted, 0.2, 0.1)
    _check_spacing(_of(events, "delay"), t0, halted, 0.5, 0.3)
    # in lockstep both would open as many windows; the short one cycles faster
    assert _count(short, "start-partition-one") >= _count(long_, "start-delay") + 1
    # within a group: started in listed order, stopped together in reverse
    fs = [f for f, _, _ in long_]
    assert fs == ["start-delay", "start-loss", "stop-loss", "stop-delay"] * (len(fs) // 4)


def _choices(entries: list[str], seed: int, windows: int = 3) -> dict[str, list]:
    """What each fault picked in its first ``windows`` windows."""
    sched, events, _ = _schedule(entries, seed)
    sched.start()
    _wait_until(lambda: all(_count(events, f"stop-{e.partition(':')[0]}") >= windows
                            for e in entries))
    sched.stop()
    picks: dict[str, list] = {}
    for f, v, _ in events:
        kind, _, fault = f.partition("-")
        if kind == "start":
            picks.setdefault(fault, []).append(v.get("groups") or v.get("ms"))
    return {fault: p[:windows] for fault, p in picks.items()}


def test_same_seed_same_choices_per_group_however_the_groups_interleave():
    a = _choices(["partition-one:0.05/0.05", "delay:0.1/0.05"], seed=5)
    # the other group's timing changes the interleaving, not this group's choices
    b = _choices(["partition-one:0.05/0.05", "delay:0.07/0.03"], seed=5)
    assert a == b and len(set(map(str, a["partition-one"]))) > 1
    assert _choices(["partition-one:0.05/0.05", "delay:0.1/0.05"], seed=6) != a


def test_each_group_draws_from_its_own_rng_and_group_0_from_the_seed():
    assert group_rng(5, 0).random() == random.Random(5).random()
    draws = {(s, i): group_rng(s, i).random() for s in (5, 6) for i in (0, 1, 2)}
    assert len(set(draws.values())) == len(draws)
    assert group_rng(5, 1).random() == draws[(5, 1)]


def test_no_group_opens_a_window_after_the_clients_deadline():
    sched, events, _ = _schedule(["partition-one:0.2/0.1", "delay:0.1/0.5"])
    until = time.monotonic_ns() + 350_000_000
    sched.start(until_ns=until)
    time.sleep(0.8)  # past the delay group's first quiet window
    sched.stop()
    assert _count(events, "start-partition-one") >= 1
    assert _count(events, "start-delay") == 0
    assert all(t * 1e9 < until for f, _, t in events if f.startswith("start-"))


def test_stop_heals_every_group_at_once():
    sched, events, b = _schedule(["partition-one:5/0.05", "delay:5/0.1"])
    sched.start()
    _wait_until(lambda: _count(events, "start-delay") == 1)
    began = time.monotonic()
    sched.stop()
    assert time.monotonic() - began < 2  # not the rest of the 5-s windows
    fs = [f for f, _, _ in events]
    assert fs == ["start-partition-one", "start-delay", "stop-delay", "stop-partition-one"]
    assert b.calls[-2:] == [("delay", 0), ("heal",)]
