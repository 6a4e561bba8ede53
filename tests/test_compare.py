"""`faultline compare` without a cluster: configurations from --vary and
--config, the side-by-side figures, the table and the figure file, and bad
flags.  A real comparison runs in tests/test_campaign_runs.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.campaign.record import CampaignRun
from harness.cli import main
from harness.compare import (comparison_campaign, configurations, field_of,
                             format_comparison, plot_comparison, sides)


def test_configurations_are_every_combination_over_the_base():
    configs = configurations(
        {"workload": "register", "seed": 5, "name": "x"},
        [("read-path", [("lease", "lease"), ("read_index", "read_index")]),
         ("nemesis", [("kill", ["kill"]), ("kill+pause", ["kill", "pause"])])],
        [])
    assert [c.label for c in configs] == [
        "read-path=lease,nemesis=kill", "read-path=lease,nemesis=kill+pause",
        "read-path=read_index,nemesis=kill", "read-path=read_index,nemesis=kill+pause"]
    assert configs[1].spec == {"workload": "register", "read_path": "lease",
                               "nemesis": ["kill", "pause"]}  # seed and name are per run


def test_config_files_are_an_axis_too():
    configs = configurations({"nodes": 3}, [], [("a", {"lease_ms": 100}),
                                                ("b", {"lease_ms": 900, "nodes": 5})])
    assert [(c.label, c.spec) for c in configs] == [("a", {"nodes": 3, "lease_ms": 100}),
                                                    ("b", {"nodes": 5, "lease_ms": 900})]


def test_flags_name_spec_fields():
    assert [field_of(f) for f in ("read-path", "bug", "max-staleness", "nodes")] == [
        "read_path", "bugs", "max_staleness_ms", "nodes"]


def run(cell: str, seed: int, **figures) -> CampaignRun:
    return CampaignRun(cell, seed, 0, "s", "any", figures.pop("verdict", "valid"), True, 30.0,
                       "", "", figures=figures)


def test_sides_sum_counts_take_the_worst_staleness_and_the_median_latency(tmp_path):
    configs = configurations({}, [("read-path", [("lease", "lease"), ("local", "local")])], [])
    campaign = comparison_campaign("compare-read-path", configs, (1, 2), "test")
    lease, local = (c.name for c in campaign.cells)
    records = [
        run(lease, 1, anomalies=0, **{"stale reads": 0, "get p50 ms": 2.0, "get p99 ms": 9.0,
                                      "put p50 ms": 5.0, "put p99 ms": 20.0,
                                      "update p99 ms": 40.0, "update p50 ms": 6.0,
                                      "ok ops/s": 100.0, "lease hit rate": 0.9,
                                      "read unavailable max s": 2.5}),
        run(lease, 2, anomalies=0, **{"stale reads": 0, "get p50 ms": 4.0, "get p99 ms": 11.0,
                                      "ok ops/s": 120.0, "lease hit rate": 0.7,
                                      "read unavailable max s": 4.0}),
        run(local, 1, anomalies=3, verdict="invalid",
            **{"stale reads": 3, "staleness max ms": 900.0, "get p50 ms": 1.0,
               "get p99 ms": 3.0, "ok ops/s": 200.0}),
        run(local, 2, anomalies=1, verdict="invalid",
            **{"stale reads": 1, "staleness max ms": 1500.0, "ok ops/s": 210.0}),
    ]
    a, b = sides(campaign, records)
    assert a.label == "read-path=lease" and a.runs == 2 and a.verdicts == {"valid": 2}
    assert (a.read_p50_ms, a.read_p99_ms) == (3.0, 10.0)
    assert (a.write_p50_ms, a.write_p99_ms) == (6.0, 40.0)  # the slower write kind
    assert a.ok_per_s == 110.0 and a.lease_hit_rate == pytest.approx(0.8)
    assert a.read_unavailable_s == 4.0 and a.write_unavailable_s is None
    assert (b.anomalies, b.stale_reads, b.stalest_ms) == (4, 4, 1500.0)
    assert b.verdicts == {"invalid": 2} and b.lease_hit_rate is None

    table = format_comparison([a, b])
    head, first, second = table.splitlines()
    assert head.split()[:3] == ["configuration", "runs", "verdicts"]
    assert first.startswith("read-path=lease") and "3/10 ms" in first and "80%" in first
    assert "1,500 ms" in second and "2 invalid" in second
    md = format_comparison([a, b], markdown=True).splitlines()
    assert md[0].startswith("| configuration |") and md[1].startswith("|---|")
    plot_comparison([a, b], tmp_path / "c.png", "lease vs local")
    assert (tmp_path / "c.png").stat().st_size > 10_000


@pytest.mark.parametrize(("argv", "message"), [
    (["--vary", "read-pth=lease,local"], "did you mean read-path?"),
    (["--vary", "read-path=lease,foo"], "--vary read-path=foo: argument --read-path: invalid "
                                        "choice: 'foo'"),
    (["--vary", "nemesis=kill,kil+pause"], "unknown fault 'kil'; did you mean kill?"),
    (["--vary", "bug=none,nope"], "--vary bug=nope"),
    (["--vary", "read-path"], "expected FLAG=V1,V2"),
    (["--vary", "read-path=lease"], "needs two configurations or more"),
    (["--vary", "nodes=3,5", "--config", "missing.toml"], "missing.toml"),
])
def test_bad_comparisons_are_refused_before_any_run(argv, message, capsys):
    assert main(["compare", *argv]) == 64
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_config_file_with_an_unknown_key_is_refused(tmp_path: Path, capsys):
    bad = tmp_path / "a.toml"
    bad.write_text("lease_mss = 3\n")
    assert main(["compare", "--config", str(bad), "--config", str(bad)]) == 64
    assert "unknown key 'lease_mss'" in capsys.readouterr().err


def test_lease_counts_come_from_each_nodes_status(tmp_path: Path):
    import json

    from harness.analysis import lease_counts

    assert lease_counts(tmp_path) is None  # a run saved before nodes.json
    (tmp_path / "nodes.json").write_text(json.dumps({
        "n1": {"lease": {"hits": 90, "misses": 10, "valid": True}},
        "n2": {"lease": {"hits": 0, "misses": 0}},
        "n3": None}))  # down at the end: it says nothing
    counts = lease_counts(tmp_path)
    assert counts == {"hits": 90, "misses": 10, "hit_rate": 0.9,
                      "by_node": {"n1": {"hits": 90, "misses": 10},
                                  "n2": {"hits": 0, "misses": 0}}}


def test_config_files_of_one_name_are_refused(tmp_path: Path, capsys):
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        (tmp_path / side / "lease.toml").write_text(f"lease_ms = {100 if side == 'a' else 900}\n")
    assert main(["compare", "--config", str(tmp_path / "a" / "lease.toml"),
                 "--config", str(tmp_path / "b" / "lease.toml")]) == 64
    assert "would both be named 'lease'" in capsys.readouterr().err


def test_a_runs_test_json_serves_as_the_shared_spec(tmp_path: Path):
    """test.json holds nulls for the settings a run left to the store; a
    comparison built on it writes cell specs that faultline run reads back."""
    import json

    from harness.campaign.runner import prepare
    from harness.spec import TestSpec, load_spec, read_spec_file

    saved = tmp_path / "test.json"
    saved.write_text(json.dumps({"spec": TestSpec(workload="register", seed=3).to_dict()}))
    base = read_spec_file(str(saved))
    assert base["read_path"] is None and base["lease_ms"] is None
    configs = configurations(base, [("read-path", [("lease", "lease"), ("local", "local")])], [])
    campaign = comparison_campaign("compare-read-path", configs, (1,), "test")
    prepare(tmp_path / "c", campaign, "")
    spec = load_spec(str(tmp_path / "c" / "cells" / f"{campaign.cells[1].name}.toml"))
    assert (spec.workload, spec.read_path, spec.lease_ms) == ("register", "local", None)
