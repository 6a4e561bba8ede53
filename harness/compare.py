"""``faultline compare``: configurations side by side on the same seeds and faults.

A lease design is judged on safety and availability together: a read path
that is never stale but leaves reads unanswered for two election timeouts
after a leader crash is a trade-off, and only the two side by side show it.
A comparison is a campaign (harness/campaign/) whose cells are the
configurations, each expecting ``any`` (a measurement), run on the same
seeds (so the same workload and fault schedule); then one table and one
figure per configuration, over its runs: anomalies, stale reads and the
stalest, read and write latency, throughput, the lease hit rate, and how
long reads and writes went unanswered in a fault window.
"""

from __future__ import annotations

import itertools
import textwrap
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from checkers.availability import kind
from harness.campaign.record import CampaignRun
from harness.campaign.spec import Campaign, Cell, safe_name

#: Spec keys a configuration may not set: the comparison sets them per run.
RESERVED = ("seed", "results_dir", "name")


@dataclass(frozen=True)
class Configuration:
    """One side of the comparison: its label as typed (``read-path=lease``)
    and its test spec."""

    label: str
    spec: dict[str, Any]


def configurations(base: dict[str, Any], varies: Sequence[tuple[str, list[tuple[str, Any]]]],
                   files: Sequence[tuple[str, dict[str, Any]]]) -> list[Configuration]:
    """Every combination of the varied settings (``(flag, [(text, value)...])``)
    and the configuration files (``(name, spec)``), each over ``base``."""
    axes: list[list[tuple[str, dict[str, Any]]]] = [
        [(f"{flag}={text}", {field_of(flag): value}) for text, value in values]
        for flag, values in varies]
    if files:
        axes.append([(name, spec) for name, spec in files])
    out = []
    for combo in itertools.product(*axes):
        spec = dict(base)
        for _, part in combo:
            spec.update(part)
        for key in RESERVED:
            spec.pop(key, None)
        out.append(Configuration(",".join(label for label, _ in combo), spec))
    return out


def field_of(flag: str) -> str:
    """The spec field a run flag sets: ``read-path`` -> ``read_path``."""
    return {"bug": "bugs", "max-staleness": "max_staleness_ms"}.get(flag, flag.replace("-", "_"))


def comparison_campaign(name: str, configs: list[Configuration], seeds: tuple[int, ...],
                        description: str) -> Campaign:
    """The configurations as a campaign's cells; ValueError for two that
    would share a cell (two --config files of one name)."""
    cells = tuple(Cell(_cell_name(c.label), c.spec, "any", "--vary", seeds, c.label)
                  for c in configs)
    names = [c.name for c in cells]
    if dup := next((n for n in names if names.count(n) > 1), None):
        raise ValueError(f"two configurations would both be named {dup!r}: give the "
                         "--config files different names")
    return Campaign(name, description, cells, seeds, 1, 1, None)


def _cell_name(label: str) -> str:
    """A label as a folder name: ``read-path=lease,nodes=3`` -> ``read-path-lease_nodes-3``."""
    return safe_name(label.replace("=", "-").replace(",", "_"))


@dataclass(frozen=True)
class Side:
    """One configuration's figures over its runs."""

    label: str
    runs: int
    verdicts: dict[str, int]
    anomalies: int
    stale_reads: int | None
    stalest_ms: float | None
    read_p50_ms: float | None
    read_p99_ms: float | None
    write_p50_ms: float | None
    write_p99_ms: float | None
    ok_per_s: float | None
    lease_hit_rate: float | None
    read_unavailable_s: float | None
    write_unavailable_s: float | None


def sides(campaign: Campaign, records: list[CampaignRun]) -> list[Side]:
    """Per configuration: counts summed, the stalest read and the longest
    unavailability the worst of its runs, the rest the median of its runs."""
    out = []
    for cell in campaign.cells:
        mine = [r.figures for r in records if r.cell == cell.name]
        verdicts: dict[str, int] = {}
        for r in records:
            if r.cell == cell.name:
                verdicts[r.verdict] = verdicts.get(r.verdict, 0) + 1
        out.append(Side(
            cell.label, len(mine), verdicts, sum(f.get("anomalies") or 0 for f in mine),
            _total(mine, "stale reads"), _worst(mine, "staleness max ms"),
            _median([_family_latency(f, "read", "p50") for f in mine]),
            _median([_family_latency(f, "read", "p99") for f in mine]),
            _median([_family_latency(f, "write", "p50") for f in mine]),
            _median([_family_latency(f, "write", "p99") for f in mine]),
            _median([f.get("ok ops/s") for f in mine]),
            _median([f.get("lease hit rate") for f in mine]),
            _worst(mine, "read unavailable max s"), _worst(mine, "write unavailable max s")))
    return out


def _family_latency(figures: dict[str, Any], family: str, q: str) -> float | None:
    """The slowest op kind of a family at quantile ``q`` in one run."""
    values = [v for k, v in figures.items() if k.endswith(f" {q} ms") and v is not None
              and kind(k[:-len(f" {q} ms")]) == family]
    return max(values) if values else None


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _worst(figures: list[dict[str, Any]], key: str) -> float | None:
    known = [f[key] for f in figures if f.get(key) is not None]
    return max(known) if known else None


def _total(figures: list[dict[str, Any]], key: str) -> int | None:
    known = [f[key] for f in figures if f.get(key) is not None]
    return sum(known) if known else None


COLUMNS: tuple[tuple[str, Callable[[Side], str]], ...] = (
    ("configuration", lambda s: s.label),
    ("runs", lambda s: str(s.runs)),
    ("verdicts", lambda s: " ".join(f"{n} {v}" for v, n in sorted(s.verdicts.items()))),
    ("anomalies", lambda s: str(s.anomalies)),
    ("stale reads", lambda s: _n(s.stale_reads)),
    ("stalest", lambda s: _unit(s.stalest_ms, "ms", 0)),
    ("read p50/p99", lambda s: _pair(s.read_p50_ms, s.read_p99_ms)),
    ("write p50/p99", lambda s: _pair(s.write_p50_ms, s.write_p99_ms)),
    ("ok ops/s", lambda s: _unit(s.ok_per_s, "", 0)),
    ("lease hits", lambda s: "-" if s.lease_hit_rate is None else f"{s.lease_hit_rate:.0%}"),
    ("reads unanswered", lambda s: _unit(s.read_unavailable_s, "s", 1)),
    ("writes unanswered", lambda s: _unit(s.write_unavailable_s, "s", 1)),
)


def _n(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def _unit(v: float | None, unit: str, digits: int) -> str:
    return "-" if v is None else f"{v:,.{digits}f} {unit}".rstrip()


def _pair(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a:.0f}/{b:.0f} ms"


def format_comparison(rows: list[Side], markdown: bool = False) -> str:
    """The table: one row per configuration, as columns or as Markdown."""
    lines = [[name for name, _ in COLUMNS], *([cell(s) for _, cell in COLUMNS] for s in rows)]
    if markdown:
        head, *body = lines
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                          *("| " + " | ".join(r) + " |" for r in body)])
    widths = [max(len(r[i]) for r in lines) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in lines)


def plot_comparison(rows: list[Side], path: Path, title: str) -> None:
    """One figure, a panel per question: how stale, how slow, how long
    unanswered, how much work got done; a bar per configuration."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["\n".join(part.partition("=")[2] or part for part in s.label.split(","))
              for s in rows]
    x = range(len(rows))
    fig, axes = plt.subplots(4, 1, figsize=(max(8.0, 1.5 * len(rows) + 2), 13))
    stale, lat, unans, work = axes

    stale.bar(x, [s.stalest_ms or 0 for s in rows], color="#d93025")
    for i, s in enumerate(rows):
        stale.annotate(f"{_n(s.stale_reads)} stale\n{s.anomalies} anomalies",
                       (i, s.stalest_ms or 0), ha="center", va="bottom", fontsize=7)
    stale.set_title("stalest read (ms), worst run", fontsize=9)

    _grouped(lat, rows, [("read p50", lambda s: s.read_p50_ms),
                         ("read p99", lambda s: s.read_p99_ms),
                         ("write p50", lambda s: s.write_p50_ms),
                         ("write p99", lambda s: s.write_p99_ms)])
    lat.set_title("latency (ms), median run", fontsize=9)

    _grouped(unans, rows, [("reads", lambda s: s.read_unavailable_s),
                           ("writes", lambda s: s.write_unavailable_s)])
    unans.set_title("longest time unanswered in a fault window (s), worst run", fontsize=9)

    work.bar(x, [s.ok_per_s or 0 for s in rows], color="#1a56c4")
    for i, s in enumerate(rows):
        if s.lease_hit_rate is not None:
            work.annotate(f"lease hits {s.lease_hit_rate:.0%}", (i, s.ok_per_s or 0),
                          ha="center", va="bottom", fontsize=7)
    work.set_title("ok ops/s, median run", fontsize=9)

    for ax in axes.flat:
        ax.set_xticks(list(x), labels, fontsize=7)
        ax.margins(y=0.2)
    fig.suptitle(textwrap.fill(title, 110), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _grouped(ax: Any, rows: list[Side],
             series: list[tuple[str, Callable[[Side], float | None]]]) -> None:
    width = 0.8 / len(series)
    for j, (name, get) in enumerate(series):
        ax.bar([i - 0.4 + width * (j + 0.5) for i in range(len(rows))],
               [get(s) or 0 for s in rows], width, label=name)
    ax.legend(fontsize=7)
