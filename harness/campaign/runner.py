"""Run a campaign: every cell at every seed, each an ordinary ``faultline run``.

The campaign folder, ``RESULTS/campaigns/<name>/<stamp>/``, holds
``campaign.json`` (what it runs: the parsed file), ``cells/<cell>.toml``
(each cell as a ``faultline run --spec`` file, to reproduce one run by
hand), ``runs/<cell>/seed-N/<stamp>/`` (the run folders), ``logs/`` (each
run's output), ``runs.jsonl`` (a line per finished run) and, once it stops,
the reports (harness/campaign/report.py).

Runs go ``jobs`` at a time in worker threads, each a child process
(harness/subrun.py).  Ctrl-C or SIGTERM stops the runs under way (each heals
its faults and stops its nodes), keeps every finished one and writes the
reports of what finished; ``--resume`` runs what is missing, and retries
crashed runs.  With a budget, no run starts that the median run so far would
take past it.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import tomli_w

from harness.campaign.record import (CampaignRun, append_record, current, figures,
                                     median_wall, read_records)
from harness.campaign.spec import Campaign, RunKey
from harness.folders import claim_folder
from harness.subrun import CRASHED, Halted, Outcome, run_faultline

#: What a run is assumed to cost beyond its time limit before any has run
#: (start-up, heal, quiet period, final reads, check).
OVERHEAD_S = 15.0


class CampaignFolderError(ValueError):
    """A folder ``--resume`` cannot continue: not this campaign's, or none yet."""


@dataclass
class Finished:
    """How a campaign invocation ended."""

    folder: Path
    records: list[CampaignRun]
    interrupted: bool = False


def new_folder(results_dir: Path, campaign: Campaign) -> Path:
    """A new campaign folder, ``RESULTS/campaigns/<name>/<stamp>`` (``<stamp>-1``...
    for another started in the same second), made here, so that two campaigns
    started in the same second never share one."""
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    return claim_folder(results_dir / "campaigns" / campaign.name / stamp, first=1)


def resume_folder(results_dir: Path, campaign: Campaign, given: str | None) -> Path:
    """The folder to continue: ``given``, else the campaign's newest."""
    if given:
        folder = Path(given)
    else:
        parent = results_dir / "campaigns" / campaign.name
        stamps = sorted(p for p in parent.glob("*") if (p / "campaign.json").is_file())
        if not stamps:
            raise CampaignFolderError(f"--resume: no earlier run of campaign {campaign.name!r} "
                                      f"under {parent}")
        folder = stamps[-1]
    try:
        name = json.loads((folder / "campaign.json").read_text())["name"]
    except (OSError, ValueError, KeyError):
        raise CampaignFolderError(f"--resume: {folder} is not a campaign folder "
                                  "(no readable campaign.json)") from None
    if name != campaign.name:
        raise CampaignFolderError(f"--resume: {folder} holds campaign {name!r}, not "
                                  f"{campaign.name!r}")
    return folder


def prepare(folder: Path, campaign: Campaign, source_text: str) -> None:
    """campaign.json, the source file as given, and a spec file per cell."""
    (folder / "cells").mkdir(parents=True, exist_ok=True)
    (folder / "campaign.json").write_text(json.dumps(
        {**campaign.to_dict(), "started": datetime.now(timezone.utc).isoformat(
            timespec="seconds")}, indent=2))
    (folder / "campaign.toml").write_text(source_text)
    for cell in campaign.cells:
        (folder / "cells" / f"{cell.name}.toml").write_text(
            f"# campaign {campaign.name}, cell {cell.name}: expect {cell.expect}\n"
            f"# faultline run --spec {cell.name}.toml --seed N\n"
            + tomli_w.dumps({k: v for k, v in cell.spec.items() if v is not None}))


def todo(campaign: Campaign, records: list[CampaignRun]) -> list[RunKey]:
    """The planned runs not yet finished under their cell's settings; a crashed
    run is not finished."""
    settings = {c.name: c.settings for c in campaign.cells}
    done = {(r.cell, r.seed, r.repeat) for r in current(records, settings)
            if r.verdict != CRASHED}
    return [k for k in campaign.plan() if (k.cell, k.seed, k.repeat) not in done]


Listener = Callable[[CampaignRun, list[CampaignRun]], None]


def run_campaign(campaign: Campaign, folder: Path, *, jobs: int | None = None,
                 budget_s: float | None = None, on_run: Listener | None = None,
                 on_start: Callable[[RunKey], None] | None = None) -> Finished:
    """Every run still to do in ``folder``, ``jobs`` at once; ``on_run`` hears
    of each as it finishes (with every record so far).  KeyboardInterrupt
    (Ctrl-C, or SIGTERM made one) stops the runs under way and returns."""
    jobs = jobs or campaign.jobs
    budget_s = budget_s if budget_s is not None else campaign.budget_s
    runs_file = folder / "runs.jsonl"
    records = read_records(runs_file)
    pending = todo(campaign, records)
    halt = threading.Event()
    lock = threading.Lock()
    start = time.monotonic()
    default_cost = max(c.spec.get("time_limit", 30.0) for c in campaign.cells) + OVERHEAD_S

    def affordable() -> bool:
        if budget_s is None:
            return True
        return time.monotonic() - start + median_wall(records, default_cost) <= budget_s

    def one(key: RunKey) -> CampaignRun:
        cell = campaign.cell(key.cell)
        spec = folder / "cells" / f"{cell.name}.toml"
        out = run_faultline(["--spec", str(spec), "--seed", str(key.seed)],
                            folder / "runs" / cell.name, key.label,
                            cell.spec.get("time_limit", 30.0),
                            log=folder / "logs" / f"{cell.name}-{key.label}.log", halt=halt)
        record = _record(folder, key, cell.settings, cell.expect, cell.as_expected(out.verdict),
                         out)
        with lock:
            append_record(runs_file, record)
            records.append(record)
        return record

    queue = list(pending)
    interrupted = False
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        running: set[Future[CampaignRun]] = set()
        try:
            while queue or running:
                while queue and len(running) < jobs and affordable():
                    key = queue.pop(0)
                    if on_start:
                        on_start(key)
                    running.add(pool.submit(one, key))
                if not running:
                    break  # the budget allows no more
                done, running = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    try:
                        record = fut.result()
                    except Halted:
                        continue
                    if on_run:
                        on_run(record, records)
        except KeyboardInterrupt:
            interrupted = True
            halt.set()
            for fut in running:
                try:
                    fut.result()
                except Halted:
                    pass
    return Finished(folder, records, interrupted)


def _record(folder: Path, key: RunKey, settings: str, expected: str, as_expected: bool,
            out: Outcome) -> CampaignRun:
    return CampaignRun(
        key.cell, key.seed, key.repeat, settings, expected, out.verdict, as_expected,
        round(out.wall_s, 1),
        str(out.directory.relative_to(folder)) if out.directory else "",
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
        out.tail if out.verdict == CRASHED else "", figures(out.results))
