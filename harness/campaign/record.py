"""runs.jsonl: one line per finished run of a campaign, the figures its reports need.

Each line is written the moment its run ends, so an interrupted campaign
keeps every finished run and ``--resume`` knows which are done.  The
figures are taken from the run's results.json once (:func:`figures`), flat,
so that summary.csv, the JUnit file and the report read this file alone.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

#: Latency quantiles kept per op family (results.json has p50, p95, p99, max).
QUANTILES = ("p50", "p99")


@dataclass
class CampaignRun:
    cell: str
    seed: int
    repeat: int
    #: the cell's settings hash when it ran: a cell edited since has other runs
    settings: str
    expected: str
    verdict: str
    as_expected: bool
    wall_s: float
    #: the run folder, relative to the campaign folder ("" when it crashed early)
    folder: str
    finished_at: str
    #: why a crashed run crashed (the last lines of its output)
    note: str = ""
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int, int, str]:
        return self.cell, self.seed, self.repeat, self.settings


def figures(results: dict[str, Any]) -> dict[str, Any]:
    """What summary.csv shows of a run, flat: anomalies by kind, time to the
    first, ops and throughput, latency quantiles per op family, the ok
    fraction inside fault windows, the longest unavailability per family, the
    stale reads and the stalest, and the lease hit rate."""
    out: dict[str, Any] = {"anomalies": results.get("anomaly_count", 0),
                           "first_anomaly_s": results.get("first_anomaly_s"),
                           "ops": results.get("ops"), "duration_s": results.get("duration_s")}
    kinds: dict[str, int] = {}
    for a in results.get("anomalies", []):
        kinds[a.get("kind", "?")] = kinds.get(a.get("kind", "?"), 0) + 1
    out.update({f"anomalies: {k}": n for k, n in sorted(kinds.items())})
    stats = results.get("stats") or {}
    ok = (stats.get("overall") or {}).get("ok")
    if ok is not None and out["duration_s"]:
        out["ok ops/s"] = ok / out["duration_s"]
    inside = ((stats.get("availability") or {}).get("inside") or {}).get("ok_fraction")
    out["ok fraction in faults"] = inside
    for f, row in sorted((results.get("latency") or {}).items()):
        for q in QUANTILES:
            if row.get(q) is not None:
                out[f"{f} {q} ms"] = row[q]
    for family, agg in sorted(((results.get("availability") or {}).get("by_family")
                               or {}).items()):
        out[f"{family} unavailable max s"] = agg.get("max_s")
    staleness = results.get("staleness") or {}
    out["stale reads"] = staleness.get("stale")
    out["staleness max ms"] = staleness.get("max_ms")
    out["lease hit rate"] = (results.get("lease") or {}).get("hit_rate")
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def read_records(path: Path) -> list[CampaignRun]:
    """The runs of a runs.jsonl, none if absent; a torn line (a kill mid-write)
    is reported and skipped."""
    if not path.exists():
        return []
    names = {f.name for f in fields(CampaignRun)}
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(CampaignRun(**{k: v for k, v in json.loads(line).items() if k in names}))
        except (ValueError, TypeError):
            print(f"{path}:{number}: not a run, skipped", file=sys.stderr)
    return out


def append_record(path: Path, run: CampaignRun) -> None:
    with path.open("a") as f:
        f.write(json.dumps(asdict(run), default=str) + "\n")
        f.flush()


def current(records: list[CampaignRun], settings: dict[str, str]) -> list[CampaignRun]:
    """The runs that count: under their cell's current settings, the latest
    of any (cell, seed, repeat) that ran twice."""
    latest: dict[tuple[str, int, int], CampaignRun] = {}
    for r in records:
        if settings.get(r.cell) == r.settings:
            latest[(r.cell, r.seed, r.repeat)] = r
    return list(latest.values())


def median_wall(records: list[CampaignRun], default: float) -> float:
    """What a run costs, for the budget and the time left."""
    walls = [r.wall_s for r in records if r.wall_s > 0]
    return statistics.median(walls) if walls else default
