"""``faultline campaign FILE.toml``: run it, show progress, write the reports.

Exit status: 0 when every run met its cell's expectation, 1 when any did
not (a crashed run included), 2 when none was off but the budget left runs
for ``--resume``, 130 when interrupted (the finished runs and the reports
of what finished are kept), 64 for a campaign file that cannot run.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from harness.campaign.record import CampaignRun, current, median_wall, read_records
from harness.campaign.report import CellSummary, format_table, write_reports
from harness.campaign.runner import (OVERHEAD_S, CampaignFolderError, new_folder, prepare,
                                     resume_folder, run_campaign, todo)
from harness.campaign.spec import Campaign, CampaignError, RunKey, load_campaign

EX_USAGE = 64
INTERRUPTED = 130


def campaign_main(file: str, results_dir: str, resume: str | None, jobs: int | None,
                  budget_minutes: float | None, dry_run: bool, out: TextIO = sys.stdout,
                  live: bool | None = None) -> int:
    try:
        campaign = load_campaign(file)
        source = Path(file).read_text()
        results = Path(results_dir)
        folder = (resume_folder(results, campaign, None if resume == "latest" else resume)
                  if resume else new_folder(results, campaign))
    except (CampaignError, CampaignFolderError) as e:
        print(f"faultline campaign: {e}", file=sys.stderr)
        return EX_USAGE
    jobs = jobs or campaign.jobs
    budget_s = budget_minutes * 60 if budget_minutes is not None else campaign.budget_s
    if dry_run:
        return _dry_run(campaign, jobs, out)
    ended = execute(campaign, folder, source, jobs=jobs, budget_s=budget_s, out=out,
                    live=live, resumed=bool(resume))
    print(format_table(ended.rows), file=out)
    off = sum(r.off for r in ended.rows)
    print(f"{ended.state}; {off} runs off expectation; report: {folder / 'report.html'}",
          file=out)
    if ended.left:
        print(f"resume with: faultline campaign {file} --resume {folder}", file=out)
    if ended.interrupted:
        return INTERRUPTED
    return 1 if off else 2 if ended.left else 0


@dataclass
class Ended:
    """What a campaign's runs came to: the runs that count, the runs still
    to do, the state in words, the cell table."""

    records: list[CampaignRun]
    left: list[RunKey]
    state: str
    rows: list[CellSummary]
    interrupted: bool


def execute(campaign: Campaign, folder: Path, source: str, *, jobs: int,
            budget_s: float | None, out: TextIO, live: bool | None, resumed: bool) -> Ended:
    """Run what is left of ``campaign`` in ``folder`` with progress on ``out``,
    then write its reports; interrupted (Ctrl-C, SIGTERM), it stops the runs
    under way and reports what finished."""
    prepare(folder, campaign, source)
    pending = todo(campaign, read_records(folder / "runs.jsonl"))
    planned = len(campaign.plan())
    print(f"{campaign.name}: {len(campaign.cells)} cells, {planned} runs, {len(pending)} to do"
          + (f" ({planned - len(pending)} done before)" if resumed else "")
          + f", {jobs} at a time; folder {folder}", file=out, flush=True)
    # SIGTERM (a CI timeout, `kill`) stops like Ctrl-C: runs healed and stopped, reports kept
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with _Watcher(len(pending), jobs, out, live) as watcher:
            finished = run_campaign(campaign, folder, jobs=jobs, budget_s=budget_s,
                                    on_run=watcher.finished, on_start=watcher.started)
    finally:
        signal.signal(signal.SIGTERM, previous)
    records = current(finished.records, {c.name: c.settings for c in campaign.cells})
    recorded = {(r.cell, r.seed, r.repeat) for r in records}
    left = [k for k in campaign.plan() if (k.cell, k.seed, k.repeat) not in recorded]
    state = _state(finished.interrupted, left, budget_s)
    rows = write_reports(folder, campaign, records, left, state)
    return Ended(records, left, state, rows, finished.interrupted)


def _state(interrupted: bool, left: list[RunKey], budget_s: float | None) -> str:
    if interrupted:
        return f"interrupted with {len(left)} runs left"
    if left:
        return f"budget of {budget_s / 60:g} min spent with {len(left)} runs left"
    return "complete"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _dry_run(campaign: Campaign, jobs: int, out: TextIO) -> int:
    runs = campaign.plan()
    cost = sum(campaign.cell(k.cell).spec.get("time_limit", 30.0) + OVERHEAD_S for k in runs)
    for cell in campaign.cells:
        print(f"{cell.name}  expect {cell.expect}", file=out)
    print(f"{len(campaign.cells)} cells, {len(runs)} runs, about {cost / jobs / 60:.0f} min "
          f"at {jobs} at a time", file=out)
    return 0


class _Watcher:
    """Progress: runs done / total, elapsed, time left, runs off expectation so
    far; on a terminal a live bar (rich) under a line per finished run, else
    the lines alone."""

    def __init__(self, total: int, jobs: int, out: TextIO, live: bool | None) -> None:
        self.total, self.jobs, self.out = total, jobs, out
        self.live = out.isatty() if live is None else live
        self.done = self.off = 0
        self.t0 = time.monotonic()
        self.progress: Progress | None = None

    def __enter__(self) -> _Watcher:
        if self.live:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                TextColumn("[red]{task.fields[off]}"),
                console=Console(file=self.out), transient=True)
            self.progress.start()
            self.task = self.progress.add_task("runs", total=self.total, off="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()

    def started(self, key: RunKey) -> None:
        if self.progress:
            self.progress.update(self.task, description=f"{key.cell} {key.label}")

    def finished(self, run: CampaignRun, records: list[CampaignRun]) -> None:
        self.done += 1
        self.off += not run.as_expected
        first = run.figures.get("first_anomaly_s")
        what = (f"{run.verdict.upper()}" + ("" if run.as_expected else
                                            f", expected {run.expected}: OFF")
                + (f", first anomaly {first:.1f} s" if first is not None else "")
                + f", {run.wall_s:.0f} s")
        left = median_wall(records, 0) * (self.total - self.done) / self.jobs
        line = (f"[{self.done}/{self.total}] {run.cell} seed {run.seed}: {what}"
                + (f"  ({self.off} off so far, ~{left / 60:.0f} min left)" if not self.live
                   else ""))
        if self.progress:
            self.progress.console.print(line, highlight=False, markup=False)
            self.progress.update(self.task, advance=1,
                                 off=f"{self.off} off" if self.off else "")
        else:
            print(line, file=self.out, flush=True)
            if run.note:
                print(f"    {run.note}", file=self.out, flush=True)
