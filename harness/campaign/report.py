"""A campaign's reports, from its runs.jsonl alone: summary.csv, junit.xml,
report.html with its figures, and the table the command prints.

Per cell the rate that matters is shown with its 95% Wilson interval (a
cell planting a bug: how often it was found; a correct cell: how often it
came back VALID), and for a cell whose every run met its expectation, how
many such runs would support "at least 95%" (harness/campaign/confidence.py).
"""

from __future__ import annotations

import csv
import statistics
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from harness.campaign.confidence import rate_text, runs_needed, wilson_interval
from harness.campaign.record import CampaignRun
from harness.campaign.spec import Campaign, RunKey
from harness.subrun import CRASHED

#: The claim "runs needed" is about: at least this rate, at 95% confidence.
CLAIM = 0.95
FIXED_COLUMNS = ("cell", "seed", "repeat", "expected", "verdict", "as_expected", "wall_s",
                 "folder")
VERDICT_LETTERS = (("valid", "V"), ("invalid", "I"), ("unknown", "U"), (CRASHED, "C"))


@dataclass(frozen=True)
class CellSummary:
    """One row of the cell table."""

    name: str
    expect: str
    runs: int
    counts: dict[str, int]
    met: int
    firsts: tuple[float, ...]
    ops_per_s: float | None

    @property
    def off(self) -> int:
        return self.runs - self.met

    @property
    def what(self) -> str:
        """What the rate counts: detections, VALID verdicts, or runs that ended."""
        return {"invalid": "found", "valid": "valid"}.get(self.expect, "ended")

    @property
    def rate(self) -> str:
        return rate_text(self.met, self.runs)

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.met, self.runs)

    @property
    def needed(self) -> str:
        """How many all-successful runs "at least 95%" takes, where every run so
        far succeeded; what is missing from that claim otherwise."""
        if not self.runs or self.off:
            return "-"
        n = runs_needed(CLAIM)
        return "met" if self.runs >= n else f"{n} (has {self.runs})"

    @property
    def verdicts(self) -> str:
        return " ".join(f"{self.counts[v]}{letter}" for v, letter in VERDICT_LETTERS
                        if self.counts.get(v))

    @property
    def first_anomaly(self) -> str:
        if not self.firsts:
            return "-"
        med = statistics.median(self.firsts)
        if len(self.firsts) == 1:
            return f"{med:.1f} s"
        return f"{med:.1f} s ({min(self.firsts):.1f}-{max(self.firsts):.1f})"


def summarise(campaign: Campaign, records: list[CampaignRun]) -> list[CellSummary]:
    rows = []
    for cell in campaign.cells:
        mine = [r for r in records if r.cell == cell.name]
        counts: dict[str, int] = {}
        for r in mine:
            counts[r.verdict] = counts.get(r.verdict, 0) + 1
        rates = [r.figures.get("ok ops/s") for r in mine if r.figures.get("ok ops/s")]
        rows.append(CellSummary(
            cell.name, cell.expect, len(mine), counts, sum(r.as_expected for r in mine),
            tuple(sorted(r.figures["first_anomaly_s"] for r in mine
                         if r.verdict == "invalid" and r.figures.get("first_anomaly_s")
                         is not None)),
            statistics.median(rates) if rates else None))
    return rows


TABLE_HEADER = ("cell", "expect", "runs", "verdicts", "as expected (95% Wilson)",
                "runs for >= 95%", "first anomaly")


def table_cells(row: CellSummary) -> tuple[str, ...]:
    return (row.name, row.expect, str(row.runs), row.verdicts or "-",
            f"{row.rate} {row.what}" if row.runs else "-", row.needed, row.first_anomaly)


def format_table(rows: list[CellSummary]) -> str:
    lines = [TABLE_HEADER, *(table_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(TABLE_HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines)


def write_csv(path: Path, records: list[CampaignRun]) -> None:
    """One row a run; a figure a run lacks (a kind of anomaly it did not
    have, an op family it did not issue) is an empty cell."""
    extra: dict[str, None] = {}
    for r in records:
        extra.update(dict.fromkeys(r.figures))
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*FIXED_COLUMNS, *extra])
        for r in records:
            out.writerow([r.cell, r.seed, r.repeat, r.expected, r.verdict, r.as_expected,
                          r.wall_s, r.folder, *(_csv(r.figures.get(k)) for k in extra)])


def _csv(v: Any) -> Any:
    return "" if v is None else v


def write_junit(path: Path, campaign: Campaign, records: list[CampaignRun],
                not_run: list[RunKey]) -> None:
    """JUnit XML as CI systems read it: a test suite per cell, a test case per
    run; a run off its expectation is a failure, a crashed run an error, a run
    the budget or an interruption left out is skipped."""
    suites = ET.Element("testsuites", name=f"faultline campaign {campaign.name}")
    for cell in campaign.cells:
        mine = [r for r in records if r.cell == cell.name]
        skipped = [k for k in not_run if k.cell == cell.name]
        suite = ET.SubElement(suites, "testsuite", name=cell.name,
                              tests=str(len(mine) + len(skipped)),
                              failures=str(sum(not r.as_expected and r.verdict != CRASHED
                                               for r in mine)),
                              errors=str(sum(r.verdict == CRASHED for r in mine)),
                              skipped=str(len(skipped)),
                              time=f"{sum(r.wall_s for r in mine):.1f}")
        for r in mine:
            case = ET.SubElement(suite, "testcase", classname=f"{campaign.name}.{cell.name}",
                                 name=RunKey(r.cell, r.seed, r.repeat).label,
                                 time=f"{r.wall_s:.1f}")
            if r.verdict == CRASHED:
                ET.SubElement(case, "error", message="the run crashed").text = r.note
            elif not r.as_expected:
                ET.SubElement(case, "failure", message=f"expected {r.expected}, got "
                              f"{r.verdict}").text = f"run folder: {r.folder}"
        for k in skipped:
            case = ET.SubElement(suite, "testcase", classname=f"{campaign.name}.{cell.name}",
                                 name=k.label)
            ET.SubElement(case, "skipped", message="not run: the campaign stopped first")
    tree = ET.ElementTree(suites)
    ET.indent(tree)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def plot_figures(folder: Path, rows: list[CellSummary]) -> list[str]:
    """expectations.png (each cell's rate with its Wilson interval) and, when
    any run found an anomaly, first_anomaly.png (each cell's times)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.runs]
    if not shown:
        return []
    names = []
    height = 1.2 + 0.32 * len(shown)
    fig, ax = plt.subplots(figsize=(8, height))
    for i, r in enumerate(shown):
        low, high = r.interval
        rate = r.met / r.runs
        colour = "#188038" if not r.off else "#d93025"
        ax.plot([low, high], [i, i], color=colour, lw=2)
        ax.plot([rate], [i], "o", color=colour)
        ax.annotate(f"{r.met}/{r.runs} {r.what}", (1.02, i), xycoords=("axes fraction", "data"),
                    va="center", fontsize=8)
    ax.set_yticks(range(len(shown)), [r.name for r in shown], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("runs as expected, with the 95% Wilson interval")
    fig.tight_layout()
    fig.savefig(folder / "expectations.png", dpi=110)
    plt.close(fig)
    names.append("expectations.png")
    found = [r for r in shown if r.firsts]
    if found:
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * len(found)))
        for i, r in enumerate(found):
            ax.plot(r.firsts, [i] * len(r.firsts), "|", color="#d93025", ms=12)
            ax.plot([statistics.median(r.firsts)], [i], "D", color="#202124", ms=5)
        ax.set_yticks(range(len(found)), [r.name for r in found], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(left=0)
        ax.set_xlabel("seconds from the start of a run to its first anomaly (◆ median)")
        fig.tight_layout()
        fig.savefig(folder / "first_anomaly.png", dpi=110)
        plt.close(fig)
        names.append("first_anomaly.png")
    return names


def write_html(folder: Path, campaign: Campaign, rows: list[CellSummary],
               records: list[CampaignRun], not_run: list[RunKey], plots: list[str],
               state: str) -> None:
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    order = {c.name: i for i, c in enumerate(campaign.cells)}
    runs = sorted(records, key=lambda r: (order.get(r.cell, 0), r.seed, r.repeat))
    html = env.get_template("campaign_report.html").render(
        campaign=campaign, runs=runs, not_run=not_run, plots=plots, state=state,
        header=TABLE_HEADER, cells=rows, cell_text=table_cells, off=sum(r.off for r in rows))
    (folder / "report.html").write_text(html)


def write_reports(folder: Path, campaign: Campaign, records: list[CampaignRun],
                  not_run: list[RunKey], state: str) -> list[CellSummary]:
    """Every report of the campaign folder, from what has finished so far."""
    rows = summarise(campaign, records)
    write_csv(folder / "summary.csv", records)
    write_junit(folder / "junit.xml", campaign, records, not_run)
    write_html(folder, campaign, rows, records, not_run, plot_figures(folder, rows), state)
    return rows
