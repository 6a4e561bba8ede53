"""faultline serve: the listing, a run's page and files, the archive, paths
that try to leave the results folder, the index that does not walk it,
campaigns and their runs, the CLI."""

from __future__ import annotations

import asyncio
import base64
import html
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from harness import cli
from harness.campaign.record import CampaignRun, append_record
from harness.campaign.spec import Campaign, Cell
from harness.serve import index as index_module
from harness.serve import PathEscape, make_app, safe_path
from harness.serve.app import PAGE_SIZE, is_loopback

#: A 1x1 PNG, the plots' stand-in.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
                       "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
WITNESS = ("get -> 650000000001 by process 672 (events 7586-7665) cannot take effect: "
           "the state could only be 611000000001")
#: In results.json's order (analysis.py's), which is not the alphabet's.
PLOTS = ("latency-raw.png", "latency-quantiles.png", "rate.png")
SCHEDULE = [
    {"at_s": 1.06, "f": "start-partition-leader",
     "value": {"groups": [["n3"], ["n1", "n2", "n4", "n5"]], "leader": "n3", "term": 2}},
    {"at_s": 9.15, "f": "stop-partition-leader",
     "value": {"groups": [["n3"], ["n1", "n2", "n4", "n5"]], "leader": "n3", "term": 2}},
    {"at_s": 30.2, "f": "heal", "value": {"nodes": ["n1", "n2", "n3", "n4", "n5"]}},
]


def write_run(root: Path, name: str, stamp: str, *, verdict: str | None = "valid",
              workload: str = "register", nemesis: tuple[str, ...] = ("partition-leader:12/3",),
              bugs: tuple[str, ...] = (), read_path: str | None = None, seed: int = 7,
              full: bool = True) -> Path:
    """A run folder with the files and keys faultline run writes; ``verdict``
    None leaves out results.json (a run that crashed or is running)."""
    d = root / name / stamp
    (d / "logs").mkdir(parents=True)
    spec = {"workload": workload, "nodes": 5, "nemesis": list(nemesis), "seed": seed,
            "backend": "local", "read_path": read_path, "bugs": list(bugs)}
    (d / "test.json").write_text(json.dumps({"spec": spec, "seed": seed,
                                             "started": "2026-12-07T14:42:16"}))
    (d / "history.jsonl").write_text('{"index":0,"type":"invoke","process":1,"f":"get"}\n')
    if verdict is None:
        return d
    invalid = verdict == "invalid"
    anomalies = [{"kind": "not linearizable", "at_s": 5.257, "node": "n2", "op": 3,
                  "process": 672, "text": WITNESS}] if invalid else []
    results: dict[str, Any] = {
        "verdict": verdict, "seed": seed, "workload": workload, "ops": 4468,
        "duration_s": 33.9, "anomaly_count": len(anomalies), "anomalies": anomalies,
        "linearizable": {"verdict": verdict, "witnesses": [WITNESS] if invalid else []},
        "plots": list(PLOTS)}
    if invalid:
        results["first_anomaly_s"] = 5.257
    (d / "results.json").write_text(json.dumps(results))
    if full:
        (d / "summary.txt").write_text(f"run: 4,468 ops over 33.9 s\nlinearizability: "
                                       f"{verdict.upper()} over 48 keys\n")
        (d / "schedule.jsonl").write_text("".join(json.dumps(e) + "\n" for e in SCHEDULE))
        (d / "timeline.html").write_text("<!doctype html><title>timeline</title>"
                                         "<h1>timeline of the run</h1>")
        for plot in PLOTS:
            (d / plot).write_bytes(PNG)
        for n in ("n1", "n2"):
            (d / "logs" / f"{n}.log").write_text(f"{n} became leader of term 2\n")
        (d / "cluster" / "n1" / "data").mkdir(parents=True)
        (d / "cluster" / "cluster.json").write_text("{}")
    return d


def write_setup_failed(root: Path, name: str, stamp: str) -> Path:
    """What runner._mark_setup_failed leaves: test.json, setup-failed.txt, logs."""
    d = root / name / f"{stamp}-setup-failed"
    (d / "logs").mkdir(parents=True)
    (d / "test.json").write_text(json.dumps({"spec": {"workload": "set", "nemesis": []},
                                             "seed": 3}))
    (d / "setup-failed.txt").write_text("TimeoutError: no leader within 60 s; see the node "
                                        "logs\n\nTraceback (most recent call last):\n")
    (d / "logs" / "n1.log").write_text("n1 starting\n")
    return d


@dataclass
class Reply:
    status: int
    headers: Any
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def fetch(app: web.Application, *steps: str | Callable[[], None]) -> list[Reply]:
    """GET each path as typed, in one server's life (a callable among them runs
    between two requests): sent encoded as it is (no ``..`` folded away by the
    client), so the server sees what an attacker would send."""
    async def go() -> list[Reply]:
        async with TestClient(TestServer(app)) as client:
            base = str(client.make_url("/")).rstrip("/")
            out = []
            for step in steps:
                if callable(step):
                    step()
                    continue
                async with client.session.get(URL(base + step, encoded=True),
                                              allow_redirects=False) as r:
                    out.append(Reply(r.status, r.headers, await r.read()))
            return out
    return asyncio.run(go())


def get(app: web.Application, path: str) -> Reply:
    return fetch(app, path)[0]


def rows(page: str) -> list[tuple[str, str]]:
    """(test name, status) of each row of the listing, in order."""
    return re.findall(r'<tr class="v-([\w-]+)">\s*<td class="when"><a href="/run/([^/]+)/', page)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    write_run(root, "register-partition-leader", "20261207T144216", verdict="valid")
    write_run(root, "register-partition-leader-no-noop-read", "20261207T144343",
              verdict="invalid", bugs=("no-noop-read",), read_path="read_index")
    write_run(root, "set-power-loss", "20261207T145057", verdict="unknown", workload="set",
              nemesis=("power-loss",))
    write_run(root, "set-power-loss", "20261207T150000", verdict=None, workload="set",
              nemesis=("power-loss",))
    write_setup_failed(root, "set-none", "20261207T140000")
    os.symlink(root / "set-power-loss" / "20261207T150000", root / "latest")
    return root


def test_listing_is_newest_first_and_coloured_by_verdict(results: Path) -> None:
    page = get(make_app(results), "/").text
    assert rows(page) == [("incomplete", "set-power-loss"), ("unknown", "set-power-loss"),
                          ("invalid", "register-partition-leader-no-noop-read"),
                          ("valid", "register-partition-leader"),
                          ("setup-failed", "set-none")]
    assert "5</strong> of 5 runs" in page
    assert 'class="badge v-invalid"' in page and "5.257 s" in page  # its first anomaly
    assert "latest" not in re.findall(r'href="/run/([^/"]+)/', page)  # the symlink is no run


def test_runs_in_one_second_sort_by_their_number(tmp_path: Path) -> None:
    for stamp in ("20261207T144216", "20261207T144216-2", "20261207T144216-10"):
        write_run(tmp_path, "t", stamp, full=False)
    page = get(make_app(tmp_path), "/").text
    assert re.findall(r'href="/run/t/([^/]+)/">2026', page) == [
        "20261207T144216-10", "20261207T144216-2", "20261207T144216"]


def test_a_run_without_a_verdict_says_why(results: Path) -> None:
    page = get(make_app(results), "/").text
    assert 'title="no results.json: the run crashed, was interrupted, or is still running"' in page
    assert 'title="TimeoutError: no leader within 60 s; see the node logs"' in page
    failed = get(make_app(results), "/run/set-none/20261207T140000-setup-failed/")
    assert failed.status == 200
    assert "Set up failed" in failed.text and "Traceback (most recent call last)" in failed.text
    crashed = get(make_app(results), "/run/set-power-loss/20261207T150000/")
    assert crashed.status == 200 and "crashed" in crashed.text
    assert "Summary" not in crashed.text  # no summary.txt: no section, no error


def test_a_broken_results_json_is_an_incomplete_run(tmp_path: Path) -> None:
    d = write_run(tmp_path, "t", "20261207T144216", full=False)
    (d / "results.json").write_text('{"verdict": "val')
    page = get(make_app(tmp_path), "/").text
    assert rows(page) == [("incomplete", "t")]
    assert "results.json is unreadable" in page


@pytest.mark.parametrize("query, expected", [
    ("workload=set", {"set-power-loss", "set-none"}),
    ("nemesis=power-loss", {"set-power-loss"}),
    ("nemesis=none", {"set-none"}),
    ("bug=no-noop-read", {"register-partition-leader-no-noop-read"}),
    ("bug=none", {"register-partition-leader", "set-power-loss", "set-none"}),
    ("read_path=read_index", {"register-partition-leader-no-noop-read"}),
    ("verdict=invalid", {"register-partition-leader-no-noop-read"}),
    ("verdict=setup-failed", {"set-none"}),
    ("workload=register&verdict=valid", {"register-partition-leader"}),
    ("workload=bank", set()),
])
def test_filters(results: Path, query: str, expected: set[str]) -> None:
    page = get(make_app(results), f"/?{query}").text
    assert {name for _, name in rows(page)} == expected
    for pair in query.split("&"):  # the chosen value stays selected
        key, value = pair.split("=")
        if value != "bank":
            assert re.search(rf'name="{key}">.*?<option value="{value}" selected>', page, re.S)


def test_filters_offer_the_values_present(results: Path) -> None:
    page = get(make_app(results), "/").text

    def options(name: str) -> list[str]:
        select = re.search(rf'<select name="{name}">(.*?)</select>', page, re.S).group(1)
        return re.findall(r'<option value="([^"]*)"', select)[1:]  # after "any"
    assert options("workload") == ["register", "set"]
    assert options("nemesis") == ["none", "partition-leader", "power-loss"]
    assert options("bug") == ["no-noop-read", "none"]
    assert options("read_path") == ["lease", "read_index"]  # unset: the store's default
    assert options("verdict") == ["valid", "invalid", "unknown", "incomplete", "setup-failed"]


def test_run_page_shows_the_run(results: Path) -> None:
    r = get(make_app(results), "/run/register-partition-leader-no-noop-read/20261207T144343/")
    assert r.status == 200
    page = r.text
    base = "/run/register-partition-leader-no-noop-read/20261207T144343/"
    assert 'id="verdict">invalid<' in page
    assert "linearizability: INVALID over 48 keys" in page  # summary.txt
    assert page.count(html.escape(WITNESS)) == 2  # the witness, and the anomaly it explains
    plots = re.findall(r'<img src="([^"]+)"', page)
    assert plots == [f"{base}file/{p}" for p in PLOTS]
    assert f'href="{base}file/timeline.html"' in page
    assert f'href="{base}file/history.jsonl"' in page
    assert f'href="{base}file/logs/n1.log"' in page and f'href="{base}file/logs/n2.log"' in page
    assert f'href="{base}archive.tar.gz"' in page
    schedule = re.search(r'<table id="schedule">(.*?)</table>', page, re.S).group(1)
    assert schedule.count("<tr>") == 1 + len(SCHEDULE)
    assert "isolate n3 (leader of term 2)" in schedule  # described as the run printed it
    assert "every fault removed" in schedule
    assert "no-noop-read" in page and "read_index" in page and "4,468" in page
    bare = get(make_app(results), base.rstrip("/"))  # no trailing slash: sent to the page
    assert bare.status in (301, 308) and bare.headers["Location"] == base


def test_run_page_escapes_what_it_shows(tmp_path: Path) -> None:
    d = write_run(tmp_path, "t", "20261207T144216")
    (d / "summary.txt").write_text("<script>alert(1)</script>\n")
    page = get(make_app(tmp_path), "/run/t/20261207T144216/").text
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


def test_files_are_served_with_their_types(results: Path) -> None:
    base = "/run/register-partition-leader/20261207T144216/"
    log, png, timeline, history, folder, missing = fetch(
        make_app(results), base + "file/logs/n1.log", base + "file/latency-raw.png",
        base + "file/timeline.html", base + "file/history.jsonl", base + "file/logs/",
        base + "file/nothing.txt")
    assert (log.status, log.headers["Content-Type"]) == (200, "text/plain; charset=utf-8")
    assert log.text == "n1 became leader of term 2\n"
    assert (png.headers["Content-Type"], png.body) == ("image/png", PNG)
    assert timeline.headers["Content-Type"].startswith("text/html")
    assert "timeline of the run" in timeline.text
    assert "sandbox" in timeline.headers["Content-Security-Policy"]
    assert history.headers["Content-Type"].startswith("text/plain") and b'"f":"get"' in history.body
    assert folder.status == 200 and f'href="{base}file/logs/n2.log"' in folder.text
    assert missing.status == 404


def test_unknown_runs_are_404(results: Path) -> None:
    paths = ("/run/nope/20261207T144216/", "/run/register-partition-leader/1999/",
             "/run/register-partition-leader/20261207T144216/logs/", "/run/latest/x/")
    assert [r.status for r in fetch(make_app(results), *paths)] == [404] * len(paths)


def test_archive_holds_the_whole_run(results: Path) -> None:
    r = get(make_app(results), "/run/register-partition-leader/20261207T144216/archive.tar.gz")
    assert r.status == 200 and r.headers["Content-Type"] == "application/gzip"
    top = "register-partition-leader-20261207T144216"
    assert f'filename="{top}.tar.gz"' in r.headers["Content-Disposition"]
    run = results / "register-partition-leader" / "20261207T144216"
    with tarfile.open(fileobj=io.BytesIO(r.body), mode="r:gz") as tar:
        names = set(tar.getnames())
        files = {p.relative_to(run).as_posix() for p in run.rglob("*")}
        assert names == {top} | {f"{top}/{f}" for f in files}
        assert tar.extractfile(f"{top}/logs/n2.log").read() == b"n2 became leader of term 2\n"
        assert tar.extractfile(f"{top}/rate.png").read() == PNG


# -- paths that try to leave the results folder -------------------------------------


SECRET = "the secret outside the results folder"


@pytest.fixture
def escapes(tmp_path: Path) -> Path:
    """A results folder with a secret beside it, a run holding a symlink to the
    secret, and a test folder that is a symlink to a run outside."""
    (tmp_path / "secret.txt").write_text(SECRET)
    root = tmp_path / "results"
    d = write_run(root, "t", "20261207T144216")
    os.symlink(tmp_path / "secret.txt", d / "logs" / "n9.log")
    os.symlink(tmp_path, d / "up")
    outside = write_run(tmp_path / "elsewhere", "o", "20261207T144216")
    (outside / "summary.txt").write_text(SECRET)
    os.symlink(tmp_path / "elsewhere" / "o", root / "linked")
    return root


@pytest.mark.parametrize("path", [
    "/run/t/20261207T144216/file/../../../secret.txt",
    "/run/t/20261207T144216/file/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "/run/t/20261207T144216/file/..%2f..%2f..%2fsecret.txt",
    "/run/t/20261207T144216/file/%2E%2E%2F%2E%2E%2F%2E%2E%2Fsecret.txt",
    "/run/t/20261207T144216/file//{tmp}/secret.txt",
    "/run/t/20261207T144216/file/%2f{tmp}%2fsecret.txt",
    "/run/t/20261207T144216/file/logs/n9.log",  # a symlink to the secret
    "/run/t/20261207T144216/file/up/secret.txt",  # a symlinked folder
    "/run/t/%2e%2e/file/secret.txt",
    "/run/%2e%2e/results/file/secret.txt",
    "/run/..%2f..%2f/x/file/secret.txt",
    "/run/linked/20261207T144216/",  # a test folder that is a symlink out
    "/run/linked/20261207T144216/file/summary.txt",
    "/run/linked/20261207T144216/archive.tar.gz",
])
def test_paths_never_leave_the_results_folder(escapes: Path, path: str) -> None:
    r = get(make_app(escapes), path.format(tmp=str(escapes.parent).lstrip("/")))
    assert r.status in (400, 404), (path, r.status)
    assert SECRET not in r.text


def test_symlinks_out_are_neither_listed_nor_archived(escapes: Path) -> None:
    app = make_app(escapes)
    listing, run, archive = fetch(app, "/", "/run/t/20261207T144216/",
                                  "/run/t/20261207T144216/archive.tar.gz")
    assert [name for _, name in rows(listing.text)] == ["t"]
    assert "n9.log" not in run.text and ">up/<" not in run.text
    with tarfile.open(fileobj=io.BytesIO(archive.body), mode="r:gz") as tar:
        link = tar.getmember("t-20261207T144216/logs/n9.log")
        assert link.issym()  # kept as a link, its target not read
        assert all(SECRET.encode() not in (tar.extractfile(m).read() if m.isfile() else b"")
                   for m in tar.getmembers())


def test_a_run_page_reads_no_file_through_a_symlink_out(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text(SECRET)
    elsewhere = write_run(tmp_path / "elsewhere", "o", "20261207T144216", verdict="invalid")
    d = write_run(tmp_path / "results", "t", "20261207T144216", full=False)
    for name in ("results.json", "summary.txt", "schedule.jsonl"):
        (d / name).unlink(missing_ok=True)
        os.symlink(elsewhere / name, d / name)
    os.symlink(tmp_path / "secret.txt", d / "plot.png")
    app = make_app(tmp_path / "results")
    listing, page = fetch(app, "/", "/run/t/20261207T144216/")
    assert rows(listing.text) == [("incomplete", "t")]  # its results.json is not read
    assert "results.json is unreadable" in listing.text
    assert page.status == 200 and "Summary" not in page.text and "Schedule" not in page.text
    assert "plot.png" not in page.text and SECRET not in page.text


def test_safe_path(tmp_path: Path) -> None:
    (tmp_path / "run" / "logs").mkdir(parents=True)
    (tmp_path / "run" / "logs" / "n1.log").write_text("x")
    os.symlink(tmp_path / "run" / "logs" / "n1.log", tmp_path / "run" / "inside")
    os.symlink(tmp_path, tmp_path / "run" / "outside")
    run = tmp_path / "run"
    assert safe_path(run, "logs/n1.log") == (run / "logs" / "n1.log").resolve()
    assert safe_path(run, "inside") == (run / "logs" / "n1.log").resolve()
    for bad in ("..", "../run/logs/n1.log", "logs/../../x", str(tmp_path / "x"), "/etc/passwd",
                "outside/x", "outside", "", "logs/\x00"):
        with pytest.raises(PathEscape):
            safe_path(run, bad)


# -- the index ------------------------------------------------------------------------


def test_pages_read_no_run_files_with_thousands_of_runs(tmp_path: Path, monkeypatch) -> None:
    """2000 runs are read once, at start; a listing reads none again, and a
    refresh reads only the run that changed."""
    reads: list[Path] = []
    real = index_module.read_json

    def counting(path: Path) -> dict[str, Any]:
        reads.append(path)
        return real(path)
    monkeypatch.setattr(index_module, "read_json", counting)
    for i in range(2000):
        write_run(tmp_path, f"test-{i % 40}", f"2026{1 + i // 1000:02d}01T{i % 1000:06d}",
                  verdict=("valid", "invalid")[i % 2], full=False)
    app = make_app(tmp_path, min_interval=0)  # every request refreshes: the worst case
    assert len(reads) == 4000  # test.json and results.json of each run, once
    reads.clear()
    changed = tmp_path / "test-39" / "20260201T000999"

    def change() -> None:
        assert reads == []  # the two pages before read nothing
        (changed / "results.json").write_text(json.dumps({"verdict": "valid"}))
        os.utime(changed / "results.json", ns=(1, 1))  # a new mtime, whatever the clock's grain
        write_run(tmp_path, "test-new", "20270101T000000")
    first, second, after = fetch(app, "/", "/?verdict=invalid&page=2", change, "/")
    assert len(rows(first.text)) == PAGE_SIZE and "2000</strong> of 2000 runs" in first.text
    assert rows(first.text)[0] == ("invalid", "test-39")  # the newest: 20260201T000999
    assert "1000</strong> of 2000 runs" in second.text and "page 2 of 5" in second.text
    assert sorted(p.relative_to(tmp_path).as_posix() for p in reads) == [
        "test-39/20260201T000999/results.json", "test-39/20260201T000999/test.json",
        "test-new/20270101T000000/results.json", "test-new/20270101T000000/test.json"]
    assert rows(after.text)[:2] == [("valid", "test-new"), ("valid", "test-39")]


def test_refresh_waits_min_interval(tmp_path: Path) -> None:
    now = [0.0]
    write_run(tmp_path, "a", "20261207T144216", full=False)
    index = index_module.ResultsIndex(tmp_path, min_interval=5, clock=lambda: now[0])
    write_run(tmp_path, "b", "20261207T150000", full=False)
    now[0] = 4.9
    assert [r.name for r in index.runs()] == ["a"]
    now[0] = 5.0
    assert [r.name for r in index.runs()] == ["b", "a"]
    (tmp_path / "b" / "20261207T150000" / "test.json").unlink()
    (tmp_path / "b" / "20261207T150000" / "results.json").unlink()
    os.rmdir(tmp_path / "b" / "20261207T150000" / "logs")
    os.rename(tmp_path / "b" / "20261207T150000", tmp_path / "b" / "gone")
    now[0] = 10.0
    assert [r.name for r in index.runs()] == ["a"]  # a folder with no run files is no run


def test_a_folder_that_becomes_a_run_is_found(tmp_path: Path) -> None:
    """The runner makes the run folder, then writes test.json: a refresh in
    between must not forget the folder, though its test folder's mtime stays."""
    (tmp_path / "t" / "20261207T144216").mkdir(parents=True)
    index = index_module.ResultsIndex(tmp_path, min_interval=0)
    assert index.runs() == []
    (tmp_path / "t" / "20261207T144216" / "test.json").write_text('{"spec": {}}')
    os.utime(tmp_path / "t" / "20261207T144216", ns=(1, 1))
    assert [(r.name, r.status) for r in index.runs()] == [("t", "incomplete")]


def test_campaigns_folder_is_not_a_test(tmp_path: Path) -> None:
    write_run(tmp_path, "t", "20261207T144216", full=False)
    write_run(tmp_path / "campaigns", "c", "20261207T150000", full=False)
    assert [(r.name, r.stamp) for r in index_module.ResultsIndex(tmp_path).runs()] == [
        ("t", "20261207T144216")]


# -- campaigns ------------------------------------------------------------------------


CORRECT = Cell("correct", {"workload": "register", "nemesis": ["partition-leader"], "bugs": []},
               "valid", "cells[0]", (1, 2))
BUGGY = Cell("buggy", {**CORRECT.spec, "bugs": ["no-noop-read"]}, "invalid", "cells[1]", (1, 2))
CAMPAIGN = Campaign("smoke", "one bug, and the correct store under the same <faults>",
                    (CORRECT, BUGGY), (1, 2), 1, 1, None)
#: The runs in the order they finish: the bug is missed at seed 2, one run off.
RUNS = ((CORRECT, 1, "valid"), (BUGGY, 1, "invalid"), (CORRECT, 2, "valid"),
        (BUGGY, 2, "valid"))
CSTAMP = "20261208T100000"


def write_campaign(root: Path, stamp: str = CSTAMP,
                   runs: tuple[tuple[Cell, int, str], ...] = RUNS, *,
                   stopped: bool = True) -> Path:
    """A campaign folder as faultline campaign leaves it: campaign.json, its
    runs' folders and runs.jsonl lines, and once ``stopped`` its reports."""
    d = root / "campaigns" / CAMPAIGN.name / stamp
    (d / "cells").mkdir(parents=True)
    (d / "campaign.json").write_text(json.dumps({**CAMPAIGN.to_dict(),
                                                 "started": "2026-12-08T10:00:00+00:00"}))
    (d / "campaign.toml").write_text('name = "smoke"\n')
    (d / "cells" / "correct.toml").write_text('workload = "register"\n')
    for i, (cell, seed, verdict) in enumerate(runs):
        folder = f"runs/{cell.name}/seed-{seed}/{stamp[:-2]}{i + 1:02d}"
        write_run(d, *folder.rsplit("/", 1), verdict=verdict, seed=seed,
                  bugs=tuple(cell.spec["bugs"]))
        first = 5.257 if verdict == "invalid" else None
        append_record(d / "runs.jsonl", CampaignRun(
            cell.name, seed, 0, cell.settings, cell.expect, verdict, cell.as_expected(verdict),
            41.0, folder, "2026-12-08T10:01:00+00:00", figures={"first_anomaly_s": first}))
    if stopped:
        (d / "summary.csv").write_text("cell,seed,repeat\n")
        (d / "junit.xml").write_text("<testsuites/>\n")
        (d / "expectations.png").write_bytes(PNG)
        (d / "report.html").write_text("<!doctype html><title>report</title><h1>campaign</h1>")
    return d


def campaign_rows(page: str) -> list[tuple[str, str, str]]:
    """(status, URL, state) of each row of the listing's campaign table, in order."""
    return re.findall(r'<tr class="v-([\w-]+)">\s*<td class="when"><a href="(/campaign/[^"]+)">'
                      r'.*?<span class="badge [^"]+">([^<]*)</span>', page, re.S)


def run_links(page: str) -> list[str]:
    return re.findall(r'<a href="(/campaign/[^"]+/run/[^"]+)">seed-', page)


def test_listing_shows_campaigns_newest_first_with_their_state(results: Path) -> None:
    assert "Campaigns" not in get(make_app(results), "/").text  # none yet: no table
    write_campaign(results, "20261208T090000")
    write_campaign(results, "20261208T100000", RUNS[:2], stopped=False)
    write_campaign(results, "20261208T110000", (*RUNS[:3], (BUGGY, 2, "invalid")))
    write_campaign(results, "20261208T120000", RUNS[:2])
    page = get(make_app(results), "/").text
    base = "/campaign/smoke/"
    assert campaign_rows(page) == [
        ("incomplete", f"{base}20261208T120000/", "stopped with 2 left"),
        ("valid", f"{base}20261208T110000/", "complete"),
        ("incomplete", f"{base}20261208T100000/", "running or stopped with 2 left"),
        ("invalid", f"{base}20261208T090000/", "1 off")]
    assert "4 of 4" in page and "2 of 4" in page
    assert "the same &lt;faults&gt;" in page  # its description, escaped
    assert len(rows(page)) == 5  # its runs are on its page, not among the runs


def test_campaign_page_shows_cells_figures_and_runs(results: Path) -> None:
    write_campaign(results)
    base = f"/campaign/smoke/{CSTAMP}/"
    page = get(make_app(results), base).text
    assert 'id="state">1 off<' in page and "4 of 4 finished, 1 off expectation" in page
    assert '<a href="/#campaigns">campaigns</a> / smoke / ' in page
    cells = re.search(r'<table id="cells">(.*?)</table>', page, re.S).group(1)
    assert re.findall(r'<tr class="v-(\w+)"><td>([\w-]+)</td>', cells) == [
        ("valid", "correct"), ("invalid", "buggy")]
    assert "<td>2V</td>" in cells and "<td>1V 1I</td>" in cells and "1/2 (9-91%) found" in cells
    assert "5.3 s" in cells  # the buggy cell's first anomaly
    for name in ("report.html", "summary.csv", "junit.xml", "campaign.toml", "runs.jsonl"):
        assert f'href="{base}file/{name}"' in page
    assert re.findall(r'<img src="([^"]+)"', page) == [f"{base}file/expectations.png"]
    assert run_links(page) == [f"{base}run/correct/seed-1/20261208T100001/",
                               f"{base}run/correct/seed-2/20261208T100003/",
                               f"{base}run/buggy/seed-1/20261208T100002/",
                               f"{base}run/buggy/seed-2/20261208T100004/"]
    assert page.count('<strong class="off">off</strong>') == 1
    assert f'href="{base}file/cells/"' in page  # the folder's files


def test_a_comparison_shows_its_table_and_figure_first(results: Path) -> None:
    d = write_campaign(results)
    (d / "compare.txt").write_text("configuration  runs\nread-path=<lease>  2\n")
    (d / "compare.png").write_bytes(PNG)
    page = get(make_app(results), f"/campaign/smoke/{CSTAMP}/").text
    assert "read-path=&lt;lease&gt;  2" in page.split('<pre id="comparison">')[1]
    assert [src.rsplit("/", 1)[1] for src in re.findall(r'<img src="([^"]+)"', page)] == [
        "compare.png", "expectations.png"]


def test_a_running_campaign_shows_what_has_finished(results: Path) -> None:
    write_campaign(results, runs=RUNS[:2], stopped=False)
    page = get(make_app(results), f"/campaign/smoke/{CSTAMP}/").text
    assert 'id="state">running or stopped with 2 left<' in page
    cells = re.search(r'<table id="cells">(.*?)</table>', page, re.S).group(1)
    assert "<td>1V</td>" in cells and "<td>1I</td>" in cells
    assert len(run_links(page)) == 2
    assert "Figures" not in page and "report.html" not in page


def test_a_campaign_run_has_a_run_page_files_and_archive(results: Path) -> None:
    write_campaign(results)
    campaign = f"/campaign/smoke/{CSTAMP}/"
    base = f"{campaign}run/buggy/seed-1/20261208T100002/"
    page, log, folder, archive, missing = fetch(
        make_app(results), base, base + "file/logs/n1.log", base + "file/logs/",
        base + "archive.tar.gz", f"{campaign}run/buggy/seed-3/20261208T100002/")
    assert page.status == 200 and 'id="verdict">invalid<' in page.text
    crumbs = f'<a href="{campaign}">smoke / {CSTAMP}</a> / buggy/seed-1 / 20261208T100002'
    assert crumbs in page.text
    assert f'href="{base}file/timeline.html"' in page.text and "no-noop-read" in page.text
    assert log.text == "n1 became leader of term 2\n"
    assert f'<a href="{campaign}">smoke / {CSTAMP}</a> / <a href="{base}">' in folder.text
    assert f'href="{base}file/logs/n2.log"' in folder.text
    with tarfile.open(fileobj=io.BytesIO(archive.body), mode="r:gz") as tar:
        assert "buggy_seed-1-20261208T100002/summary.txt" in tar.getnames()
    assert missing.status == 404


def test_campaign_files_are_served_with_their_types(results: Path) -> None:
    write_campaign(results)
    base = f"/campaign/smoke/{CSTAMP}/file/"
    report, csv, cells, missing = fetch(make_app(results), base + "report.html",
                                        base + "summary.csv", base + "cells/",
                                        base + "nothing.txt")
    assert "campaign" in report.text and "sandbox" in report.headers["Content-Security-Policy"]
    assert csv.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert f'href="{base}cells/correct.toml"' in cells.text
    assert f'<a href="/campaign/smoke/{CSTAMP}/">smoke / {CSTAMP}</a> / cells/' in cells.text
    assert missing.status == 404


def test_campaign_state_follows_its_files_by_stat_alone(tmp_path: Path, monkeypatch) -> None:
    """A refresh reads a campaign again only when campaign.json, runs.jsonl
    or report.html changed; a resume (runs.jsonl newer than the report) is running."""
    reads: list[str] = []
    real = index_module.read_json
    monkeypatch.setattr(index_module, "read_json",
                        lambda path: reads.append(path.name) or real(path))
    d = write_campaign(tmp_path, runs=RUNS[:2], stopped=False)
    index = index_module.ResultsIndex(tmp_path, min_interval=0)

    def state() -> str:
        return index.campaign("smoke", CSTAMP).state
    assert state() == "running or stopped with 2 left" and reads == ["campaign.json"]
    (d / "report.html").write_text("report")
    os.utime(d / "report.html", ns=(2 * 10**18, 2 * 10**18))
    assert state() == "stopped with 2 left"
    assert state() == "stopped with 2 left" and reads == ["campaign.json"] * 2
    append_record(d / "runs.jsonl", CampaignRun(
        "buggy", 2, 0, BUGGY.settings, "invalid", "valid", False, 41.0, "",
        "2026-12-08T10:05:00+00:00"))
    os.utime(d / "runs.jsonl", ns=(3 * 10**18, 3 * 10**18))
    assert state() == "1 off, running or stopped with 1 left"
    assert index.campaign("smoke", CSTAMP).status == "invalid"


@pytest.fixture
def campaign_escapes(tmp_path: Path) -> Path:
    """A results folder with a secret beside it and a campaign holding a
    symlink to it, a run folder that is a symlink out, and a campaign folder
    that is one."""
    (tmp_path / "secret.txt").write_text(SECRET)
    root = tmp_path / "results"
    d = write_campaign(root)
    os.symlink(tmp_path / "secret.txt", d / "leak.txt")
    os.symlink(tmp_path / "secret.txt", d / "runs" / "correct" / "seed-1" / "20261208T100001"
               / "logs" / "n9.log")
    outside = write_run(tmp_path / "elsewhere", "o", "20261208T100009")
    (outside / "summary.txt").write_text(SECRET)
    os.symlink(outside.parent, d / "runs" / "correct" / "seed-9")
    elsewhere = write_campaign(tmp_path / "elsewhere")
    (elsewhere / "campaign.toml").write_text(SECRET)
    os.symlink(elsewhere.parent, root / "campaigns" / "linked")
    return root


@pytest.mark.parametrize("path", [
    "file/../../../../secret.txt",
    "file/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "file/..%2f..%2f..%2f..%2fsecret.txt",
    "file//{tmp}/secret.txt",
    "file/%2f{tmp}%2fsecret.txt",
    "file/leak.txt",  # a symlink to the secret
    "run/%2e%2e/%2e%2e/%2e%2e/",
    "run/correct/seed-1/..%2f..%2f..%2f..%2f..%2f/file/secret.txt",
    "run/correct/seed-1/20261208T100001/file/logs/n9.log",
    "run/correct/seed-1/20261208T100001/file/../../../../../../../secret.txt",
    "run/correct/seed-9/20261208T100009/",  # a run folder that is a symlink out
    "run/correct/seed-9/20261208T100009/file/summary.txt",
    "run/correct/seed-9/20261208T100009/archive.tar.gz",
    "/campaign/%2e%2e/%2e%2e/",
    "/campaign/smoke/%2e%2e/file/secret.txt",
    "/campaign/linked/" + CSTAMP + "/file/campaign.toml",  # a campaign folder linked out
])
def test_campaign_paths_never_leave_the_results_folder(campaign_escapes: Path,
                                                       path: str) -> None:
    path = path if path.startswith("/") else f"/campaign/smoke/{CSTAMP}/{path}"
    tmp = str(campaign_escapes.parent).lstrip("/")
    r = get(make_app(campaign_escapes), path.format(tmp=tmp))
    assert r.status in (400, 404), (path, r.status)
    assert SECRET not in r.text


def test_campaign_symlinks_out_are_not_listed(campaign_escapes: Path) -> None:
    listing, page = fetch(make_app(campaign_escapes), "/", f"/campaign/smoke/{CSTAMP}/")
    assert [url for _, url, _ in campaign_rows(listing.text)] == [f"/campaign/smoke/{CSTAMP}/"]
    assert "leak.txt" not in page.text and SECRET not in page.text


# -- the command ----------------------------------------------------------------------


def test_missing_results_dir_names_the_flag(tmp_path: Path, capsys) -> None:
    code = cli.main(["serve", "--results-dir", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == cli.EX_DATAERR
    assert "--results-dir" in err and "nope" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("localhost", False),
                                          ("::1", False), ("0.0.0.0", True),
                                          ("192.168.1.20", True), ("example.org", True)])
def test_non_loopback_host_warns(tmp_path: Path, capsys, monkeypatch, host: str,
                                 warned: bool) -> None:
    seen = []

    def fake_serve(results_dir: Path, host: str, port: int, ready) -> None:
        seen.append((results_dir, host, port))
        ready(f"http://{host}:{port}/")
    monkeypatch.setattr("harness.serve.serve", fake_serve)  # nothing listens
    assert cli.main(["serve", "--results-dir", str(tmp_path), "--host", host,
                     "--port", "8123"]) == 0
    out, err = capsys.readouterr()
    assert seen == [(tmp_path, host, 8123)]
    assert f"http://{host}:8123/" in out
    if warned:
        assert len(err.strip().splitlines()) == 1 and "visible to the network" in err
    else:
        assert err == ""
    assert is_loopback(host) is not warned


def test_bad_port_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["serve", "--results-dir", str(tmp_path), "--port", "70000"])
    assert e.value.code == cli.EX_USAGE and "--port" in capsys.readouterr().err


def test_a_port_in_use_is_one_line(tmp_path: Path, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.main(["serve", "--results-dir", str(tmp_path), "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


def start_serving(results: Path) -> tuple[subprocess.Popen[str], str]:
    """``faultline serve`` on a free loopback port, and the URL it printed."""
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve", "--results-dir",
                             str(results), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"at (http://127\.0\.0\.1:\d+/) \(Ctrl-C stops\)", line)
    if not m:
        proc.kill()
        raise AssertionError(f"no URL in {line!r}: {proc.communicate()}")
    return proc, m.group(1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serves_until_stopped_without_a_traceback(results: Path, sig: signal.Signals) -> None:
    proc, url = start_serving(results)
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and b"register-partition-leader" in r.read()
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and err == ""
