"""Campaigns without a cluster: the file, the plan, resuming, the reports,
pruning, the statistics.  The whole command on real runs is in
tests/test_campaign_runs.py (marked cluster)."""

from __future__ import annotations

import csv
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.campaign.confidence import rate_text, runs_needed, wilson_interval, wilson_lower
from harness.campaign.prune import prune
from harness.campaign.record import (CampaignRun, append_record, current, figures,
                                     read_records)
from harness.campaign.report import format_table, summarise, write_reports
from harness.campaign.runner import new_folder, prepare, resume_folder, todo
from harness.campaign.spec import (CampaignError, RunKey, load_campaign, parse_campaign)
from harness.campaign.runner import CampaignFolderError
from harness.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def campaign(**top):
    doc = {"seeds": 2, "time_limit": 10, "defaults": {"nodes": 3},
           "cells": [{"workload": "set", "nemesis": "partition-leader",
                      "bugs": ["", "unchecked-range-reads"]}], **top}
    return parse_campaign(doc, "demo")


# ------------------------------------------------------------- statistics

@pytest.mark.parametrize(("k", "n", "bound"), [(19, 20, 0.7639), (20, 20, 0.8389),
                                               (8, 8, 0.6756), (0, 20, 0.0)])
def test_wilson_lower_bound(k, n, bound):
    assert wilson_lower(k, n) == pytest.approx(bound, abs=1e-4)


def test_wilson_interval_is_symmetric_and_of_no_runs_is_everything():
    low, high = wilson_interval(3, 10)
    assert (1 - high, 1 - low) == pytest.approx(wilson_interval(7, 10))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="k <= n"):
        wilson_interval(3, 2)


def test_runs_needed_for_a_claim():
    assert runs_needed(0.95) == 73
    assert wilson_lower(73, 73) >= 0.95 > wilson_lower(72, 72)
    assert runs_needed(0.8) == 16
    with pytest.raises(ValueError):
        runs_needed(1.0)


def test_rate_text_says_what_the_runs_support():
    assert rate_text(8, 8) == "8/8 (>= 68%)"
    assert rate_text(0, 5) == "0/5 (<= 43%)"
    assert rate_text(3, 5) == "3/5 (23-88%)"


# ------------------------------------------------------------- the file

def test_axes_multiply_and_bugs_set_the_expectation():
    c = campaign()
    assert [(cell.name, cell.expect) for cell in c.cells] == [
        ("set-partition-leader", "valid"),
        ("set-partition-leader-unchecked-range-reads", "invalid")]
    assert c.cells[1].spec == {"nodes": 3, "time_limit": 10.0, "workload": "set",
                               "nemesis": ["partition-leader"],
                               "bugs": ["unchecked-range-reads"]}
    assert c.seeds == (1, 2)
    # seed by seed across the cells, so a budget cut leaves every cell at the same seeds
    assert c.plan() == [RunKey(c.cells[0].name, 1), RunKey(c.cells[1].name, 1),
                        RunKey(c.cells[0].name, 2), RunKey(c.cells[1].name, 2)]


def test_named_tables_name_cells_by_their_axis_values():
    c = parse_campaign({"cells": [{"name": "clk", "workload": "register",
                                   "nemesis": ["clock-bump", "partition-leader,clock-bump"],
                                   "nodes": [3, 5], "bugs": ["", "long-lease"],
                                   "expect": "any"}]}, "x")
    names = [cell.name for cell in c.cells]
    assert names[:2] == ["clk-clock-bump-3-correct", "clk-clock-bump-3-long-lease"]
    assert "clk-partition-leader+clock-bump-5-long-lease" in names
    assert len(names) == 8 and {cell.expect for cell in c.cells} == {"any"}


def test_cells_that_would_share_a_name_get_their_differences_appended():
    c = parse_campaign({"cells": [{"workload": "set", "nodes": [3, 5]}]}, "x")
    assert [cell.name for cell in c.cells] == ["set-none-nodes-3", "set-none-nodes-5"]


def test_settings_hash_follows_what_runs_and_what_is_expected():
    a, b = campaign().cells
    assert a.settings != b.settings
    assert campaign(seeds=5).cells[0].settings == a.settings
    edited = parse_campaign({"cells": [{"workload": "set", "nemesis": "partition-leader",
                                        "bugs": "", "expect": "any"}], "time_limit": 10,
                             "defaults": {"nodes": 3}}, "demo")
    assert edited.cells[0].spec == a.spec and edited.cells[0].settings != a.settings


def test_expectations():
    valid, invalid = campaign().cells
    assert valid.as_expected("valid") and not valid.as_expected("unknown")
    assert invalid.as_expected("invalid") and not invalid.as_expected("valid")
    anything = parse_campaign({"cells": [{"workload": "set", "expect": "any"}]}, "x").cells[0]
    assert anything.as_expected("unknown") and not anything.as_expected("crashed")


@pytest.mark.parametrize(("doc", "message"), [
    ({"cellz": []}, "unknown key 'cellz' (allowed: name, description"),
    ({}, "key 'cells': needs at least one [[cells]] table"),
    ({"cells": [{"workload": "nope"}]}, "cells[0]: --workload: 'nope' is not one of"),
    ({"cells": [{"workload": "set", "nemesis": ["kill", "kil"]}]},
     "cells[0] (nemesis=kil): --nemesis: 'kil' is not one of"),
    ({"cells": [{"workload": "set", "seed": 3}]},
     "cells[0]: unknown key 'seed' (the campaign sets it for every run)"),
    ({"cells": [{"workload": "set", "expect": "maybe"}]},
     "cells[0], key 'expect': 'maybe' is not one of valid, invalid, any"),
    ({"cells": [{"workload": "set", "nodes": "5"}]},
     "cells[0], key 'nodes': must be an integer, got '5'"),
    ({"cells": [{"workload": "set", "rate": True}]},
     "cells[0], key 'rate': must be a number, got True"),
    ({"cells": [{"workload": "set", "bugs": [["long-lease"]]}]},
     "cells[0], key 'bugs': a comma-separated string, as --bug takes it"),
    ({"cells": [{"workload": "set", "expect": ["valid"]}]},
     "cells[0], key 'expect': one value, not a list"),
    ({"cells": [{"workload": "set", "nodes": []}]},
     "cells[0], key 'nodes': an axis needs at least one value"),
    ({"cells": [{"workload": "set"}, {"workload": "set"}]},
     "cells[0] and cells[1]: cell 'set-none' twice, alike in every setting"),
    ({"defaults": {"nodes": [3, 5]}, "cells": [{"workload": "set"}]},
     "defaults, key 'nodes': one value, not a list (axes go in [[cells]])"),
    ({"seeds": 0, "cells": [{"workload": "set"}]}, "key 'seeds': must be a positive integer"),
    ({"seeds": [1, 1], "cells": [{"workload": "set"}]}, "must hold distinct integers"),
    ({"budget_minutes": -1, "cells": [{"workload": "set"}]}, "key 'budget_minutes'"),
    ({"name": "a/b", "cells": [{"workload": "set"}]}, "key 'name': 'a/b' must be letters"),
])
def test_file_errors_name_the_table_and_the_key(doc, message):
    with pytest.raises(CampaignError) as e:
        parse_campaign(doc, "x")
    assert message in str(e.value)


def test_load_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("cells = [")
    with pytest.raises(CampaignError, match=r"bad\.toml: not TOML"):
        load_campaign(bad)
    with pytest.raises(CampaignError, match=r"missing\.toml"):
        load_campaign(tmp_path / "missing.toml")


@pytest.mark.parametrize("name", ["smoke", "nightly", "leases"])
def test_shipped_campaigns_parse(name):
    c = load_campaign(ROOT / "campaigns" / f"{name}.toml")
    assert c.name == name and c.cells


def test_smoke_pairs_every_planted_bug_with_the_correct_store():
    c = load_campaign(ROOT / "campaigns" / "smoke.toml")
    planted = [cell for cell in c.cells if cell.expect == "invalid"]
    assert len(planted) >= 4
    for bug in planted:
        twin = {**bug.spec, "bugs": []}
        assert any(cell.spec == twin and cell.expect == "valid" for cell in c.cells), bug.name


# ------------------------------------------------------------- records, resuming

def record(cell, seed, verdict, expected="valid", settings="s", folder="", first=None):
    return CampaignRun(cell.name if hasattr(cell, "name") else cell, seed, 0,
                       getattr(cell, "settings", settings), expected, verdict,
                       verdict == expected, 40.0, folder, "2026-01-01T00:00:00+00:00",
                       figures={"first_anomaly_s": first, "ops": 100, "ok ops/s": 50.0})


def test_todo_skips_finished_runs_and_retries_crashed_ones():
    c = campaign()
    valid, invalid = c.cells
    records = [record(valid, 1, "valid"), record(invalid, 1, "crashed", "invalid"),
               record(invalid, 2, "invalid", "invalid")]
    assert todo(c, records) == [RunKey(invalid.name, 1), RunKey(valid.name, 2)]


def test_runs_under_other_settings_do_not_count():
    c = campaign()
    valid = c.cells[0]
    stale = CampaignRun(valid.name, 1, 0, "other", "valid", "valid", True, 1.0, "", "")
    assert current([stale], {valid.name: valid.settings}) == []
    assert RunKey(valid.name, 1) in todo(c, [stale])


def test_records_round_trip_and_torn_lines_are_skipped(tmp_path, capsys):
    path = tmp_path / "runs.jsonl"
    first = record("a", 1, "valid")
    append_record(path, first)
    with path.open("a") as f:
        f.write('{"cell": "a", "se\n')
    assert read_records(path) == [first]
    assert "runs.jsonl:2: not a run, skipped" in capsys.readouterr().err


def test_figures_flatten_results_json():
    results = {"anomaly_count": 3, "first_anomaly_s": 4.25, "ops": 200, "duration_s": 10.0,
               "anomalies": [{"kind": "stale read"}, {"kind": "stale read"}, {"kind": "lost"}],
               "stats": {"overall": {"ok": 150},
                         "availability": {"inside": {"ok_fraction": 0.5}}},
               "latency": {"add": {"p50": 1.23456, "p99": 9.0, "max": 20.0}},
               "availability": {"by_family": {"read": {"max_s": 2.5}, "write": {"max_s": 1.0}}},
               "staleness": {"max_ms": 812.0}}
    f = figures(results)
    assert f["anomalies: stale read"] == 2 and f["anomalies: lost"] == 1
    assert f["ok ops/s"] == 15.0 and f["ok fraction in faults"] == 0.5
    assert f["add p50 ms"] == 1.235 and "add max ms" not in f
    assert f["read unavailable max s"] == 2.5 and f["staleness max ms"] == 812.0


def test_resume_finds_the_newest_folder_of_the_campaign(tmp_path):
    c = campaign()
    with pytest.raises(CampaignFolderError, match="no earlier run of campaign 'demo'"):
        resume_folder(tmp_path, c, None)
    old, new = (tmp_path / "campaigns" / "demo" / s for s in ("20260101T000000",
                                                              "20260102T000000"))
    for folder in (old, new):
        prepare(folder, c, "")
    assert resume_folder(tmp_path, c, None) == new
    other = campaign(name="other")
    with pytest.raises(CampaignFolderError, match="holds campaign 'demo', not 'other'"):
        resume_folder(tmp_path, other, str(old))
    assert new_folder(tmp_path, c).parent == new.parent


def test_cell_spec_files_run_as_faultline_run_specs(tmp_path):
    c = campaign()
    prepare(tmp_path, c, "seeds = 2\n")
    spec = load_spec(str(tmp_path / "cells" / f"{c.cells[1].name}.toml"))
    assert spec.bugs == ["unchecked-range-reads"] and spec.nodes == 3
    assert spec.time_limit == 10.0 and spec.nemesis == ["partition-leader"]
    assert json.loads((tmp_path / "campaign.json").read_text())["name"] == "demo"
    assert (tmp_path / "campaign.toml").read_text() == "seeds = 2\n"


# ------------------------------------------------------------- reports

def test_reports(tmp_path):
    c = campaign(seeds=3)
    valid, invalid = c.cells
    records = [record(valid, 1, "valid", folder="runs/a/seed-1/x"),
               record(invalid, 1, "invalid", "invalid", first=3.0),
               record(valid, 2, "unknown"),
               record(invalid, 2, "invalid", "invalid", first=5.0),
               record(invalid, 3, "crashed", "invalid")]
    not_run = [RunKey(valid.name, 3)]
    rows = write_reports(tmp_path, c, records, not_run, "budget spent")
    by = {r.name: r for r in rows}
    assert by[valid.name].met == 1 and by[valid.name].off == 1
    assert by[invalid.name].rate == "2/3 (21-94%)"
    assert by[invalid.name].first_anomaly == "4.0 s (3.0-5.0)"
    assert by[valid.name].verdicts == "1V 1U"

    with (tmp_path / "summary.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 5 and table[0]["folder"] == "runs/a/seed-1/x"
    assert table[1]["first_anomaly_s"] == "3.0" and table[0]["first_anomaly_s"] == ""

    suites = ET.parse(tmp_path / "junit.xml").getroot()
    got = {s.get("name"): (s.get("tests"), s.get("failures"), s.get("errors"),
                           s.get("skipped")) for s in suites}
    assert got == {valid.name: ("3", "1", "0", "1"), invalid.name: ("3", "0", "1", "0")}
    failure = suites.find(".//failure")
    assert failure is not None and failure.get("message") == "expected valid, got unknown"

    html = (tmp_path / "report.html").read_text()
    assert "2 runs off expectation" in html and 'href="runs/a/seed-1/x/timeline.html"' in html
    assert "1 runs not run yet" in html
    cells = re.search(r'<table id="cells">(.*?)</table>', html, re.S).group(1)
    assert re.findall(r'<tr class="v-(\w+)"><td>([\w-]+)</td>', cells) == [
        ("invalid", valid.name), ("invalid", invalid.name)]
    assert "<td>1V 1U</td>" in cells and "<td>2/3 (21-94%) found</td>" in cells
    assert "<td>4.0 s (3.0-5.0)</td>" in cells
    assert (tmp_path / "expectations.png").stat().st_size > 1000
    assert (tmp_path / "first_anomaly.png").exists()
    text = format_table(rows)
    assert "2/3 (21-94%) found" in text.splitlines()[2]


def test_runs_needed_shows_for_cells_with_every_run_as_expected():
    c = campaign()
    valid, invalid = c.cells
    rows = summarise(c, [record(valid, 1, "valid"), record(invalid, 1, "valid", "invalid")])
    assert [r.needed for r in rows] == ["73 (has 1)", "-"]


# ------------------------------------------------------------- prune

def make_campaign_folder(root: Path, stamp: str, offs: list[bool]) -> Path:
    folder = root / "campaigns" / "nightly" / stamp
    (folder / "logs").mkdir(parents=True)
    (folder / "campaign.json").write_text('{"name": "nightly"}')
    for i, off in enumerate(offs):
        run = folder / "runs" / "cell" / f"seed-{i}" / "20260101T000000"
        (run / "logs").mkdir(parents=True)
        latest = run.parents[1] / "latest"  # as the runner points it: the cell's newest run
        latest.unlink(missing_ok=True)
        latest.symlink_to(run)
        (run / "history.jsonl").write_text("x" * 1000)
        (folder / "logs" / f"cell-seed-{i}.log").write_text("log")
        append_record(folder / "runs.jsonl", CampaignRun(
            "cell", i, 0, "s", "valid", "invalid" if off else "valid", not off, 1.0,
            str(run.relative_to(folder)), ""))
    return folder


def test_prune_keeps_a_crash_that_left_no_run_folder(tmp_path):
    """A run that crashed before its folder existed is still off expectation:
    its campaign folder and its log stay."""
    older = make_campaign_folder(tmp_path, "20260101T000000", [False])
    (older / "logs" / "cell-seed-5.log").write_text("Traceback: the evidence")
    append_record(older / "runs.jsonl", CampaignRun("cell", 5, 0, "s", "valid", "crashed",
                                                    False, 1.0, "", ""))
    make_campaign_folder(tmp_path, "20260102T000000", [False])
    prune(tmp_path, 1, log=lambda s: None)
    assert (older / "runs.jsonl").exists()
    assert sorted(p.name for p in (older / "logs").iterdir()) == ["cell-seed-5.log"]


def test_new_folders_are_claimed(tmp_path):
    c = campaign()
    first, second = new_folder(tmp_path, c), new_folder(tmp_path, c)
    assert first.is_dir() and second.is_dir() and first != second


def test_prune_keeps_the_newest_and_every_unexpected_run(tmp_path):
    oldest = make_campaign_folder(tmp_path, "20260101T000000", [False, False])
    older = make_campaign_folder(tmp_path, "20260102T000000", [False, True])
    newest = make_campaign_folder(tmp_path, "20260103T000000", [False, False])
    assert prune(tmp_path, 1, dry_run=True, log=lambda s: None) > 0
    assert oldest.exists()
    freed = prune(tmp_path, 1, log=lambda s: None)
    assert freed >= 3000
    assert not oldest.exists()
    assert (older / "runs" / "cell" / "seed-1" / "20260101T000000" / "logs").is_dir()
    assert not (older / "runs" / "cell" / "seed-0" / "20260101T000000").exists()
    assert sorted(p.name for p in (older / "logs").iterdir()) == ["cell-seed-1.log"]
    assert (older / "runs.jsonl").exists()
    assert len(list((newest / "runs" / "cell").glob("seed-*"))) == 2


def test_a_table_may_run_its_own_seeds():
    c = parse_campaign({"seed": 100, "seeds": 1, "cells": [
        {"workload": "set", "seeds": 3}, {"workload": "register"},
        {"workload": "bank", "seeds": [7]}]}, "x")
    assert [cell.seeds for cell in c.cells] == [(100, 101, 102), (100,), (7,)]
    assert [(k.cell, k.seed) for k in c.plan()] == [
        ("bank-none", 7), ("set-none", 100), ("register-none", 100), ("set-none", 101),
        ("set-none", 102)]
    with pytest.raises(CampaignError, match=r"cells\[0\], key 'seeds': must be a positive"):
        parse_campaign({"cells": [{"workload": "set", "seeds": 0}]}, "x")


def test_nightly_runs_the_correct_store_under_every_fault_with_every_workload():
    from harness.spec import WORKLOADS, SpecError, TestSpec
    from nemesis.faults import FAULTS, GROUP_FAULTS

    def runnable(workload: str, fault: str) -> bool:
        try:
            TestSpec(workload=workload, nemesis=[fault], groups=4 if fault in GROUP_FAULTS else 1)
        except SpecError:
            return False
        return True

    c = load_campaign(ROOT / "campaigns" / "nightly.toml")
    correct = {(cell.spec["workload"], name) for cell in c.cells if cell.expect == "valid"
               and not cell.spec.get("bugs") for name in cell.spec["nemesis"]}
    # every pair the harness can run (not yet: bank on several groups)
    wanted = {(w, f) for w in WORKLOADS for f in FAULTS if runnable(w, f)}
    assert len(wanted) == len(WORKLOADS) * len(FAULTS) - len(GROUP_FAULTS)
    missing = wanted - correct
    assert not missing, f"nightly.toml leaves out {sorted(missing)}"
    planted = {b for cell in c.cells for b in cell.spec.get("bugs", [])}
    from harness.spec import BUG_FLAGS
    assert set(BUG_FLAGS) - planted == {"commit-previous-term", "sequential-lease-checks"}


# ------------------------------------------------------------- the runner, runs faked

def fake_runs(monkeypatch, wall_s: float = 1.0, pause: float = 0.0):
    """run_faultline replaced by a stand-in that records who ran and how many at once."""
    import threading
    import time

    from harness.campaign import runner
    from harness.subrun import Outcome

    seen: list[str] = []
    live = [0, 0]  # now, most
    lock = threading.Lock()

    def fake(args, results_dir, name, time_limit, log=None, halt=None):
        with lock:
            live[0] += 1
            live[1] = max(live[1], live[0])
            seen.append(f"{results_dir.name}/{name}")
        time.sleep(pause)
        with lock:
            live[0] -= 1
        verdict = "invalid" if "unchecked" in results_dir.name else "valid"
        return Outcome(verdict, {"verdict": verdict, "ops": 10}, wall_s, None)

    monkeypatch.setattr(runner, "run_faultline", fake)
    return seen, live


def test_runs_go_jobs_at_a_time_and_each_is_recorded(tmp_path, monkeypatch):
    from harness.campaign.runner import run_campaign

    seen, live = fake_runs(monkeypatch, pause=0.3)
    c = campaign()
    prepare(tmp_path, c, "")
    heard = []
    done = run_campaign(c, tmp_path, jobs=2, on_run=lambda r, rs: heard.append(r.cell))
    assert len(seen) == 4 and live[1] == 2
    assert sorted(heard) == sorted(k.cell for k in c.plan())
    assert all(r.as_expected for r in done.records) and not done.interrupted
    assert len(read_records(tmp_path / "runs.jsonl")) == 4
    assert todo(c, read_records(tmp_path / "runs.jsonl")) == []


def test_the_budget_stops_starting_runs(tmp_path, monkeypatch):
    from harness.campaign.runner import run_campaign

    seen, _ = fake_runs(monkeypatch, wall_s=200.0)
    c = campaign()
    prepare(tmp_path, c, "")
    # the first run is assumed to cost its time limit and start-up (25 s): it
    # starts; it took 200 s, so a second would end past the 150-s budget
    done = run_campaign(c, tmp_path, budget_s=150.0)
    assert len(seen) == 1 and len(done.records) == 1
    assert len(todo(c, done.records)) == 3
