"""Replaying a saved fault schedule (nemesis/replay.py) on a recording backend,
and telling whether a replay found the original anomaly (harness/reproduce.py).
A replay on a real cluster is in tests/test_replay_runs.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness.reproduce import Signature, compare, fault_windows, signatures
from nemesis.replay import Player, ScheduleError, Step, load_schedule
from test_nemesis import RecordingBackend


def write_schedule(path: Path, events: list[tuple[float, str, dict]]) -> Path:
    path.write_text("".join(json.dumps({"at_s": at, "f": f, "value": v}) + "\n"
                            for at, f, v in events))
    return path


CUT = {"groups": [["n3"], ["n1", "n2", "n4", "n5"]], "leader": "n3", "term": 7}


def test_a_schedule_keeps_what_took_effect(tmp_path: Path) -> None:
    """A start that failed has no stop (the nemesis records none): the next
    window's stop is that window's, not the failed one's."""
    n1, n2 = {"node": "n1"}, {"node": "n2"}
    path = write_schedule(tmp_path / "schedule.jsonl", [
        (1.0, "start-partition-leader", CUT),
        (2.0, "start-kill", {"error": "node down"}),  # failed: no window to replay
        (3.0, "stop-partition-leader", CUT),
        (8.0, "start-kill", n1), (12.0, "stop-kill", n1),
        (14.0, "start-kill", n2), (18.0, "stop-kill", n2),
        (19.0, "stop-kill", {"error": "not running"}),  # a stop with nothing open
        (20.2, "heal", {"nodes": ["n1"]})])
    assert load_schedule(path) == [Step(1.0, True, "partition-leader", CUT),
                                   Step(3.0, False, "partition-leader", CUT),
                                   Step(8.0, True, "kill", n1), Step(12.0, False, "kill", n1),
                                   Step(14.0, True, "kill", n2), Step(18.0, False, "kill", n2)]


@pytest.mark.parametrize(("line", "message"), [
    ('{"at_s": "soon", "f": "start-kill"}', "schedule.jsonl:2: not a schedule event"),
    ('{"at_s": 1, "f": "start-kil", "value": {}}', "schedule.jsonl:2: unknown fault 'kil'"),
    ("{torn", "schedule.jsonl:2: not a schedule event"),
])
def test_a_bad_schedule_names_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "schedule.jsonl"
    path.write_text('{"at_s": 0.5, "f": "start-kill", "value": {"node": "n1"}}\n' + line + "\n")
    with pytest.raises(ScheduleError, match=message):
        load_schedule(path)


def play(steps: list[Step], targets: str = "recorded", leader: str | None = "n3",
         entries: tuple[str, ...] = ("partition-leader",), wait: float = 0.5):
    b = RecordingBackend()
    b.current_leader = leader
    recorded: list[tuple[str, dict]] = []
    player = Player(b, steps, lambda f, v: recorded.append((f, v)), seed=1,
                    entries=list(entries), window=4, quiet=2, targets=targets,
                    t0=time.monotonic_ns())
    player.start()
    time.sleep(wait)
    player.stop()
    return b.calls, recorded


def test_steps_are_played_at_their_offsets_on_the_recorded_nodes() -> None:
    started = time.monotonic()
    calls, recorded = play([Step(0.05, True, "partition-leader", CUT),
                            Step(0.15, False, "partition-leader", CUT)], leader="n1")
    assert calls == [("partition", CUT["groups"]), ("heal",)]  # n3 again, though n1 leads
    assert [f for f, _ in recorded] == ["start-partition-leader", "stop-partition-leader"]
    assert recorded[0][1] == CUT
    assert time.monotonic() - started >= 0.15


def test_by_role_the_fault_follows_the_leader() -> None:
    calls, recorded = play([Step(0.05, True, "partition-leader", CUT)], targets="role",
                           leader="n1")
    assert calls[0] == ("partition", [["n1"], ["n3", "n2", "n4", "n5"]])
    assert recorded[0][1]["leader"] == "n1" and recorded[0][1]["term"] == 7  # the term now
    assert calls[-1] == ("heal",)  # stopping the player undoes what is active


def test_a_fault_not_yet_due_is_not_started_after_stop() -> None:
    calls, recorded = play([Step(5.0, True, "partition-leader", CUT)], wait=0.1)
    assert calls == [] and recorded == []


def test_faults_that_act_while_active_tick_between_steps() -> None:
    strobe = {"node": "n2", "delta_s": 3.5}
    calls, recorded = play([Step(0.0, True, "clock-strobe", strobe),
                            Step(0.45, False, "clock-strobe", strobe)],
                           entries=("clock-strobe",), wait=0.6)
    bumps = [op["bump"] for kind, node, op in (c for c in calls if c[0] == "clock")
             if "bump" in op]
    assert len(bumps) >= 3 and bumps[:3] == [3.5, -3.5, 3.5]
    assert ("clock", "n2", {"reset": True}) in calls


# ------------------------------------------------------------- did it come back

def saved_run(d: Path, anomalies: list[dict], schedule: list[tuple[float, str, dict]]) -> Path:
    d.mkdir()
    ms = 1_000_000
    events = [("invoke", 0, "put", 1, 10), ("ok", 0, "put", 1, 20),
              ("invoke", 1, "get", None, 2500), ("ok", 1, "get", None, 2510)]
    (d / "history.jsonl").write_text("".join(
        json.dumps({"index": i, "type": t, "process": p, "f": f, "key": "k0", "value": v,
                    "time": at * ms}) + "\n" for i, (t, p, f, v, at) in enumerate(events)))
    (d / "results.json").write_text(json.dumps({"verdict": "invalid", "anomalies": anomalies}))
    write_schedule(d / "schedule.jsonl", schedule)
    return d


SCHEDULE = [(1.0, "start-partition-leader", CUT), (1.0, "start-clock-bump", {"node": "n3"}),
            (3.0, "stop-clock-bump", {}), (3.0, "stop-partition-leader", CUT),
            (5.0, "start-partition-leader", CUT), (7.0, "stop-partition-leader", CUT)]


def test_windows_merge_faults_started_together(tmp_path: Path) -> None:
    path = write_schedule(tmp_path / "s.jsonl", [*SCHEDULE, (9.0, "start-kill", {"node": "n1"}),
                                                 (9.5, "heal", {})])
    assert fault_windows(path) == [(1.0, 3.0), (5.0, 7.0), (9.0, 9.5)]  # the last to the heal


def test_an_anomaly_is_known_by_kind_op_and_window(tmp_path: Path) -> None:
    run = saved_run(tmp_path / "run", [{"kind": "stale read", "op": 1, "at_s": 2.5},
                                       {"kind": "stale read", "op": 1, "at_s": 4.0}],
                    SCHEDULE)
    assert signatures(run) == {Signature("stale read", "get", 0),
                               Signature("stale read", "get", None)}
    assert str(Signature("stale read", "get", 0)) == "stale read on get in fault window 1"


def test_compare_says_how_close_a_replay_came() -> None:
    original = {Signature("stale read", "get", 1)}
    assert compare(original, {Signature("stale read", "get", 1)}).reproduced
    near = compare(original, {Signature("stale read", "get", 3)})
    assert not near.reproduced and near.text.startswith("the same anomaly in another window")
    other = compare(original, {Signature("lost", "add", 1)})
    assert other.text == "another anomaly: lost on add in fault window 2"
    assert compare(original, set()).text == "no anomaly"
