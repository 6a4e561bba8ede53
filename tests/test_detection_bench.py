"""The detection bench's bookkeeping: the Wilson bound, pairings validation,
resuming from runs.jsonl and merging across settings. Pure Python, no runs."""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from detection import (  # noqa: E402
    PAIRINGS_FILE, Pairing, PairingError, Run, append_run, ignored_note, parse_pairings,
    read_runs, summarise, todo)
from harness.campaign.confidence import wilson_lower  # noqa: E402
from system.config import BUGS, LATENCY_BUGS  # noqa: E402

SET_UNCHECKED = """
[set-unchecked]
flag = "unchecked-range-reads"
workload = "set"
nemesis = "partition-leader"
flags = ["--nodes", "5"]
time_limit = 30
why = "a cut-off leader serves Query and Scan from local state"
"""


def pairing() -> Pairing:
    return parse_pairings(SET_UNCHECKED)["set-unchecked"]


def run(p: Pairing, side: str, seed: int, verdict: str = "valid",
        first: float | None = None) -> Run:
    return Run(p.name, side, seed, p.settings, verdict, first, 40.0, None, "abc1234",
               p.workload, p.nemesis, p.side_flags(side), p.time_limit,
               "2025-01-01T00:00:00+00:00")


@pytest.mark.parametrize(("k", "n", "bound"), [(19, 20, 0.7639), (20, 20, 0.8389),
                                               (8, 8, 0.6756), (0, 20, 0.0)])
def test_wilson_lower_bound(k, n, bound):
    assert wilson_lower(k, n) == pytest.approx(bound, abs=1e-4)


def test_wilson_lower_bound_of_no_runs_is_zero():
    assert wilson_lower(0, 0) == 0.0


def test_pairing_defaults_and_settings():
    p = pairing()
    assert p.broken == ("--bug", "unchecked-range-reads") and p.correct == ()
    assert p.side_flags("broken") == ["--bug", "unchecked-range-reads", "--nodes", "5"]
    assert p.time_limit == 30.0
    assert replace(p, why="another sentence").settings == p.settings
    assert replace(p, time_limit=10.0).settings != p.settings


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t + 'window = 4\n', "pairing [set-unchecked], key 'window': unknown key"),
    (lambda t: t.replace('workload = "set"\n', ""), "key 'workload': missing"),
    (lambda t: t.replace('nemesis = "partition-leader"\n', ""), "key 'nemesis': missing"),
    (lambda t: t.replace("unchecked-range-reads", "unchecked-reads"),
     "key 'flag': unknown bug flag 'unchecked-reads'"),
    (lambda t: t + 'correct = ["--bug", "no-such-bug"]\n',
     "key 'correct': unknown bug flag 'no-such-bug'"),
    (lambda t: t.replace('["--nodes", "5"]', '["--seed", "5"]'),
     "key 'flags': --seed is set by the bench"),
    (lambda t: t.replace("time_limit = 30", 'time_limit = "30"'), "key 'time_limit'"),
])
def test_pairings_validation_names_pairing_and_key(edit, message):
    with pytest.raises(PairingError, match=re.escape(message)):
        parse_pairings(edit(SET_UNCHECKED))


def test_a_pairing_without_flag_needs_two_different_sides():
    text = SET_UNCHECKED.replace('flag = "unchecked-range-reads"\n', "")
    with pytest.raises(PairingError, match="key 'correct': both sides"):
        parse_pairings(text)
    p = parse_pairings(text + 'correct = ["--read-path", "read_index"]\n')["set-unchecked"]
    assert p.flag is None and p.broken == ()


def test_resume_does_what_runs_jsonl_lacks(tmp_path):
    p = pairing()
    path = tmp_path / "runs.jsonl"
    for r in (run(p, "broken", 100, "invalid", 5.0), run(p, "correct", 100),
              run(p, "broken", 101, "crashed"),
              replace(run(p, "correct", 101), settings="0ld5e771n95")):
        append_run(path, r)
    with path.open("a") as f:
        f.write('{"pairing": "set-unch')  # torn by a kill mid-write
    plan = todo([p], range(100, 103), read_runs(path))
    assert [(seed, side) for _, seed, side in plan] == [
        (101, "broken"), (101, "correct"), (102, "broken"), (102, "correct")]


def test_merge_counts_only_current_settings():
    p = pairing()
    old = replace(p, nemesis="partition-leader,clock-bump")
    runs = [run(p, "broken", 100, "invalid", 5.0), run(p, "broken", 101, "invalid", 7.0),
            run(p, "broken", 102, "valid"), run(p, "broken", 103, "crashed"),
            run(p, "correct", 100), run(p, "correct", 101, "unknown"),
            run(p, "broken", 100, "valid"),  # a repeat from another session: first one counts
            run(old, "broken", 104, "invalid", 1.0), run(old, "correct", 104, "invalid")]
    row = summarise(p, runs)
    assert (row.detected, row.broken_runs) == (2, 3)
    assert row.firsts == (5.0, 7.0)
    assert (row.alarms, row.correct_runs) == (1, 2)
    assert row.crashed == 1
    assert row.cells(markdown=True)[1:5] == ["`unchecked-range-reads`", "set, partition-leader",
                                             "2/3", f"{wilson_lower(2, 3):.1%}"]
    assert ignored_note(p, runs) == "set-unchecked: 2 runs under other settings ignored"
    assert ignored_note(old, runs) == "set-unchecked: 7 runs under other settings ignored"


def test_ignored_note_names_other_time_limits():
    p = pairing()
    short = replace(p, time_limit=10.0)
    runs = [run(short, "broken", 100, "invalid", 5.0), run(short, "correct", 100)]
    assert summarise(p, runs).broken_runs == 0
    assert ignored_note(p, runs) == ("set-unchecked: 2 runs under other settings ignored (time "
                                     "limit 10 s among them: add --time-limit to count those)")
    assert summarise(short, runs).broken_runs == 1 and ignored_note(short, runs) is None


def test_every_bug_flag_has_a_pairing():
    pairings = parse_pairings(PAIRINGS_FILE.read_text())
    assert set(BUGS) - LATENCY_BUGS <= {p.flag for p in pairings.values()}
