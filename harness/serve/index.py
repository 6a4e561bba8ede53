"""What ``results/`` holds, kept in memory so that no page walks the folder.

The first scan reads each run's ``results.json`` and ``test.json`` once.  A
refresh after that (at most every ``min_interval`` seconds, when a page asks)
only stats: the top-level folders, and each run folder and its
``results.json``; it reads again only the runs whose stamp changed (a run that
finished, was re-analysed, or appeared) and lists again only the test folders
whose own mtime changed (a run added, removed, or renamed ``-setup-failed``).

A run folder is ``results/<test-name>/<stamp>/`` (harness/runner.py).  Symlinks
are never followed (``results/latest`` is one), so nothing the index holds lies
outside the results folder.  Top-level folders in :data:`OTHER_KINDS` hold
other kinds of results and are not scanned as tests.

A campaign folder is ``results/campaigns/<name>/<stamp>/``
(harness/campaign/runner.py): the index keeps its counts, read from
campaign.json and runs.jsonl again only when their mtimes (or report.html's,
which says whether it stopped) change.  Its runs are not listed with the
others: its page lists them, and a page of one reads that run alone.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar
from urllib.parse import quote

from harness.campaign.record import CampaignRun, current, read_records
from harness.campaign.spec import Campaign
from harness.serve.paths import safe_path
from harness.spec import STORE_DEFAULTS

CAMPAIGNS = "campaigns"
#: Top-level folders that are not test names: campaigns (``campaigns/<name>/
#: <stamp>/``) have a scanner of their own.
OTHER_KINDS = frozenset({CAMPAIGNS})
#: A verdict from results.json, or what a run without one is.
VERDICTS = ("valid", "invalid", "unknown")
INCOMPLETE, SETUP_FAILED = "incomplete", "setup-failed"
STATUSES = (*VERDICTS, INCOMPLETE, SETUP_FAILED)
#: Files whose presence makes a folder a run folder: the runner writes test.json
#: first, and a set-up failure leaves setup-failed.txt.
RUN_MARKERS = ("test.json", "results.json", "setup-failed.txt")

_STAMP = re.compile(r"(\d{8}T\d{6})(?:-(\d+))?")


def _url(base: str, *parts: str) -> str:
    """``base`` and each part quoted whole (a ``/`` inside one is no separator), a folder's URL."""
    return base + "".join(f"{quote(p, safe='')}/" for p in parts)


@dataclass(frozen=True)
class Stamped:
    """A folder named by when it started: a run or a campaign."""

    name: str
    stamp: str
    path: Path

    @property
    def when(self) -> str:
        """The stamp as a date and time, for people."""
        m = _STAMP.match(self.stamp)
        if not m:
            return self.stamp
        s = m.group(1)
        return f"{s[:4]}-{s[4:6]}-{s[6:8]} {s[9:11]}:{s[11:13]}:{s[13:15]}"

    def sort_key(self) -> tuple[str, int, str]:
        """Oldest to newest by stamp; ``STAMP-2`` (two in one second) after STAMP."""
        m = _STAMP.match(self.stamp)
        return (m.group(1), int(m.group(2) or 0), self.name) if m else ("", 0, self.name)


@dataclass(frozen=True)
class CampaignRecord(Stamped):
    """One campaign folder as the listing shows it."""

    #: valid (complete, every run as expected), invalid (any run off) or incomplete
    status: str
    #: the same in words: complete, N off, how many runs are left
    state: str
    #: runs that count (runs.jsonl's, under their cell's settings), and runs planned
    finished: int = 0
    planned: int = 0
    #: runs not as expected (a crashed run included)
    off: int = 0
    description: str = ""
    #: why it has no counts (campaign.json unreadable)
    note: str | None = None

    @property
    def url(self) -> str:
        return _url("/campaign/", self.name, self.stamp)

    @property
    def crumbs(self) -> tuple[tuple[str, str], ...]:
        """The links a page of it leads back by, itself last."""
        return ("campaigns", "/#campaigns"), (f"{self.name} / {self.stamp}", self.url)

    def run_url(self, folder: str) -> str | None:
        """The page of a run, from its folder as runs.jsonl names it
        (``runs/<cell>/<label>/<stamp>``); None for a run that left none."""
        parts = folder.split("/")
        if len(parts) != 4 or parts[0] != "runs":
            return None
        return _url(self.url + "run/", *parts[1:])


@dataclass(frozen=True)
class RunRecord(Stamped):
    """One run as the listing shows and filters it; ``name`` is
    ``<cell>/<label>`` for a run of a campaign."""

    #: valid, invalid, unknown (results.json's verdict), incomplete or setup-failed
    status: str
    #: why a run has no verdict (crashed, running, unreadable results.json)
    note: str | None = None
    #: when it started (test.json's ``started``, ISO 8601)
    started: str | None = None
    workload: str | None = None
    nemesis: tuple[str, ...] = ()
    bugs: tuple[str, ...] = ()
    read_path: str | None = None
    seed: int | None = None
    nodes: int | None = None
    backend: str | None = None
    ops: int | None = None
    duration_s: float | None = None
    first_anomaly_s: float | None = None
    anomaly_count: int | None = None
    #: the campaign it is a run of, whose pages it is served under
    campaign: CampaignRecord | None = None

    @property
    def url(self) -> str:
        if self.campaign is None:
            return _url("/run/", self.name, self.stamp)
        return _url(self.campaign.url + "run/", *self.name.split("/", 1), self.stamp)

    @property
    def crumbs(self) -> tuple[tuple[str, str], ...]:
        """The links a page of it leads back by, itself last."""
        up = self.campaign.crumbs if self.campaign else (("runs", "/"),)
        return *up, (f"{self.name} / {self.stamp}", self.url)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; the one place the index reads run files (a
    test counts its calls)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def is_run(path: Path) -> bool:
    return any(os.path.lexists(path / m) for m in RUN_MARKERS)


def load_run(name: str, stamp: str, path: Path,
             campaign: CampaignRecord | None = None) -> RunRecord:
    """A run folder's record; a folder with missing or broken files is still
    one, marked incomplete or set-up-failed with why, never an error.  Its
    files are read only where they lie inside it (a symlink out is broken)."""
    try:
        meta = read_json(safe_path(path, "test.json"))
    except (OSError, ValueError):
        meta = {}
    spec = meta.get("spec") if isinstance(meta.get("spec"), dict) else {}
    note = None
    results: dict[str, Any] = {}
    if os.path.lexists(path / "setup-failed.txt"):
        status = SETUP_FAILED
        note = _first_line(path, "setup-failed.txt")
    else:
        try:
            results = read_json(safe_path(path, "results.json"))
            status = results.get("verdict") if results.get("verdict") in VERDICTS else INCOMPLETE
            if status == INCOMPLETE:
                note = "results.json has no verdict"
        except FileNotFoundError:
            status, note = INCOMPLETE, ("no results.json: the run crashed, was interrupted, "
                                        "or is still running")
        except (OSError, ValueError) as e:
            status, note = INCOMPLETE, f"results.json is unreadable: {e}"
    seed = results.get("seed", meta.get("seed"))
    return RunRecord(
        name=name, stamp=stamp, path=path, status=status, note=note,
        started=meta.get("started") if isinstance(meta.get("started"), str) else None,
        workload=results.get("workload") or spec.get("workload"),
        nemesis=tuple(str(n).split(":", 1)[0] for n in spec.get("nemesis") or ()),
        bugs=tuple(sorted(spec.get("bugs") or ())),
        read_path=spec.get("read_path") or (STORE_DEFAULTS["read_path"] if spec else None),
        seed=seed if isinstance(seed, int) else None,
        nodes=spec.get("nodes"), backend=spec.get("backend"),
        ops=results.get("ops"), duration_s=results.get("duration_s"),
        first_anomaly_s=results.get("first_anomaly_s"),
        anomaly_count=results.get("anomaly_count"), campaign=campaign)


def read_campaign(path: Path) -> tuple[Campaign, list[CampaignRun]]:
    """A campaign folder's campaign and the runs that count (runs.jsonl's,
    under their cell's settings, as its reports count them); OSError or
    ValueError where campaign.json is missing or is not one."""
    try:
        campaign = Campaign.from_dict(read_json(safe_path(path, "campaign.json")))
        campaign.plan()  # its seeds comparable, its cells named
        settings = {c.name: c.settings for c in campaign.cells}
        return campaign, current(read_records(safe_path(path, "runs.jsonl")), settings)
    except (KeyError, TypeError) as e:
        raise ValueError(f"not a campaign: {e!r}") from None


def load_campaign(name: str, stamp: str, path: Path) -> CampaignRecord:
    """A campaign folder's record.  It has stopped when report.html, written
    as it stops, is newer than the runs and campaign.json (which a resume
    rewrites); until then it is running, or was killed before its report."""
    try:
        campaign, runs = read_campaign(path)
    except (OSError, ValueError) as e:
        return CampaignRecord(name, stamp, path, INCOMPLETE, "unreadable",
                              note=f"campaign.json is unreadable: {e}")
    plan = {(k.cell, k.seed, k.repeat) for k in campaign.plan()}
    left = len(plan - {(r.cell, r.seed, r.repeat) for r in runs})
    off = sum(not r.as_expected for r in runs)
    report = _mtime(path / "report.html")
    stopped = report is not None and all(
        report >= (m or 0) for m in (_mtime(path / "runs.jsonl"), _mtime(path / "campaign.json")))
    return CampaignRecord(
        name, stamp, path,
        status="invalid" if off else "valid" if stopped and not left else INCOMPLETE,
        state=_campaign_state(off, left, stopped), finished=len(runs), planned=len(plan),
        off=off, description=campaign.description)


def _campaign_state(off: int, left: int, stopped: bool) -> str:
    """What the listing says of a campaign: no more than its files tell (a
    folder without an up-to-date report may be running, or may have been killed)."""
    parts = [f"{off} off"] if off else []
    if left:
        parts.append(f"{'stopped' if stopped else 'running or stopped'} with {left} left")
    elif not stopped:
        parts.append("every run finished, no report yet")
    return ", ".join(parts) or "complete"


def _first_line(run: Path, name: str) -> str | None:
    try:
        with safe_path(run, name).open(encoding="utf-8", errors="replace") as fh:
            return fh.readline().strip() or None
    except (OSError, ValueError):
        return None


def _dirs(path: Path) -> Iterator[os.DirEntry[str]]:
    """Real (not symlinked) subfolders, hidden ones left out."""
    try:
        with os.scandir(path) as it:
            for e in it:
                if not e.name.startswith(".") and e.is_dir(follow_symlinks=False):
                    yield e
    except OSError:
        return


def _mtime(path: str | Path) -> int | None:
    try:
        return os.stat(path, follow_symlinks=False).st_mtime_ns
    except OSError:
        return None


R = TypeVar("R", bound=Stamped)
Signature = tuple[int | None, ...]


@dataclass
class _Group(Generic[R]):
    """A test's or a campaign's folder as last seen: its mtime, its subfolders
    (stamps, and any not a run or campaign yet: the runner makes the folder,
    then writes test.json), and per stamp its signature (the mtimes of the
    folder and of the files its record is read from) and record."""

    mtime: int | None
    folders: list[str]
    records: dict[str, tuple[Signature, R]]


def _rescan(old: _Group[R] | None, path: Path, sign: Callable[[Path], Signature],
            load: Callable[[str, Path], R | None]) -> _Group[R]:
    """``path`` brought up to date: listed again only if its mtime changed, a
    record read again only if its signature did (``load`` None: not one yet)."""
    mtime = _mtime(path)
    if old is not None and old.mtime == mtime:
        folders = old.folders
    else:
        folders = [e.name for e in _dirs(path)]
    records = {}
    for stamp in folders:
        sig = sign(path / stamp)
        seen = old.records.get(stamp) if old is not None else None
        if sig[0] is None:  # removed since the folder was listed
            continue
        if seen is not None and seen[0] == sig:
            records[stamp] = seen
        elif (rec := load(stamp, path / stamp)) is not None:
            records[stamp] = (sig, rec)
    return _Group(mtime, folders, records)


def _run_signature(path: Path) -> Signature:
    return _mtime(path), _mtime(path / "results.json")


def _campaign_signature(path: Path) -> Signature:
    return (_mtime(path), *(_mtime(path / f) for f in ("campaign.json", "runs.jsonl",
                                                        "report.html")))


def _newest_first(groups: dict[str, _Group[R]]) -> list[R]:
    return sorted((rec for g in groups.values() for _, rec in g.records.values()),
                  key=Stamped.sort_key, reverse=True)


class ResultsIndex:
    """The runs and campaigns under ``root``, newest first, refreshed by stat alone."""

    def __init__(self, root: Path, *, min_interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root.resolve()
        self.min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._tests: dict[str, _Group[RunRecord]] = {}
        self._sorted: list[RunRecord] = []
        self._by_key: dict[tuple[str, str], RunRecord] = {}
        self._campaign_groups: dict[str, _Group[CampaignRecord]] = {}
        self._campaigns: list[CampaignRecord] = []
        self._campaign_by_key: dict[tuple[str, str], CampaignRecord] = {}
        self._checked: float | None = None
        self.refresh(force=True)

    def runs(self) -> list[RunRecord]:
        """Every run, newest first (refreshed first if it is time)."""
        self.refresh()
        return self._sorted

    def run(self, name: str, stamp: str) -> RunRecord | None:
        self.refresh()
        return self._by_key.get((name, stamp))

    def campaigns(self) -> list[CampaignRecord]:
        """Every campaign, newest first (refreshed first if it is time)."""
        self.refresh()
        return self._campaigns

    def campaign(self, name: str, stamp: str) -> CampaignRecord | None:
        self.refresh()
        return self._campaign_by_key.get((name, stamp))

    def refresh(self, *, force: bool = False) -> None:
        """Bring the index up to date, unless it was less than ``min_interval``
        ago: stats only, and reads only what changed."""
        with self._lock:
            now = self._clock()
            if not force and self._checked is not None and now - self._checked < self.min_interval:
                return
            self._checked = now
            top = [e.name for e in _dirs(self.root)]
            self._tests = {name: self._test(name) for name in top if name not in OTHER_KINDS}
            self._sorted = _newest_first(self._tests)
            self._by_key = {(r.name, r.stamp): r for r in self._sorted}
            found = _dirs(self.root / CAMPAIGNS) if CAMPAIGNS in top else iter(())
            self._campaign_groups = {e.name: self._campaign_group(e.name) for e in found}
            self._campaigns = _newest_first(self._campaign_groups)
            self._campaign_by_key = {(c.name, c.stamp): c for c in self._campaigns}

    def _test(self, name: str) -> _Group[RunRecord]:
        return _rescan(self._tests.get(name), self.root / name, _run_signature,
                       lambda stamp, path: load_run(name, stamp, path) if is_run(path) else None)

    def _campaign_group(self, name: str) -> _Group[CampaignRecord]:
        def load(stamp: str, path: Path) -> CampaignRecord | None:
            if not os.path.lexists(path / "campaign.json"):
                return None
            return load_campaign(name, stamp, path)
        return _rescan(self._campaign_groups.get(name), self.root / CAMPAIGNS / name,
                       _campaign_signature, load)
