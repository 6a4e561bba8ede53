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
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

from harness.serve.paths import safe_path
from harness.spec import STORE_DEFAULTS

#: Top-level folders that are not test names: campaigns (``campaigns/<name>/
#: <stamp>/``) will be listed by a scanner of their own, beside the runs.
OTHER_KINDS = frozenset({"campaigns"})
#: A verdict from results.json, or what a run without one is.
VERDICTS = ("valid", "invalid", "unknown")
INCOMPLETE, SETUP_FAILED = "incomplete", "setup-failed"
STATUSES = (*VERDICTS, INCOMPLETE, SETUP_FAILED)
#: Files whose presence makes a folder a run folder: the runner writes test.json
#: first, and a set-up failure leaves setup-failed.txt.
RUN_MARKERS = ("test.json", "results.json", "setup-failed.txt")

_STAMP = re.compile(r"(\d{8}T\d{6})(?:-(\d+))?")


@dataclass(frozen=True)
class RunRecord:
    """One run as the listing shows and filters it."""

    name: str
    stamp: str
    path: Path
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

    @property
    def url(self) -> str:
        return f"/run/{quote(self.name, safe='')}/{quote(self.stamp, safe='')}/"

    @property
    def when(self) -> str:
        """The stamp as a date and time, for people."""
        m = _STAMP.match(self.stamp)
        if not m:
            return self.stamp
        s = m.group(1)
        return f"{s[:4]}-{s[4:6]}-{s[6:8]} {s[9:11]}:{s[11:13]}:{s[13:15]}"

    def sort_key(self) -> tuple[str, int, str]:
        """Oldest to newest by stamp; ``STAMP-2`` (two runs in one second) after STAMP."""
        m = _STAMP.match(self.stamp)
        return (m.group(1), int(m.group(2) or 1), self.name) if m else ("", 0, self.name)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; the one place the index reads run files (a
    test counts its calls)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def load_run(name: str, stamp: str, path: Path) -> RunRecord:
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
        anomaly_count=results.get("anomaly_count"))


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


@dataclass
class _Test:
    """A test folder as last seen: its mtime, its subfolders (runs, and any
    not a run yet: the runner makes the folder, then writes test.json), and
    per run its signature (folder and results.json mtimes) and record."""

    mtime: int | None
    folders: list[str]
    runs: dict[str, tuple[tuple[int | None, int | None], RunRecord]]


class ResultsIndex:
    """The runs under ``root``, newest first, refreshed by stat alone."""

    def __init__(self, root: Path, *, min_interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root.resolve()
        self.min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._tests: dict[str, _Test] = {}
        self._sorted: list[RunRecord] = []
        self._by_key: dict[tuple[str, str], RunRecord] = {}
        self._checked: float | None = None
        self.refresh(force=True)

    def runs(self) -> list[RunRecord]:
        """Every run, newest first (refreshed first if it is time)."""
        self.refresh()
        return self._sorted

    def run(self, name: str, stamp: str) -> RunRecord | None:
        self.refresh()
        return self._by_key.get((name, stamp))

    def refresh(self, *, force: bool = False) -> None:
        """Bring the index up to date, unless it was less than ``min_interval``
        ago: stats only, and reads only what changed."""
        with self._lock:
            now = self._clock()
            if not force and self._checked is not None and now - self._checked < self.min_interval:
                return
            self._checked = now
            tests = {e.name: self._test(e) for e in _dirs(self.root)
                     if e.name not in OTHER_KINDS}
            self._tests = tests
            records = [rec for t in tests.values() for _, rec in t.runs.values()]
            records.sort(key=RunRecord.sort_key, reverse=True)
            self._sorted = records
            self._by_key = {(r.name, r.stamp): r for r in records}

    def _test(self, entry: os.DirEntry[str]) -> _Test:
        old = self._tests.get(entry.name)
        mtime = _mtime(entry.path)
        if old is not None and old.mtime == mtime:
            folders = old.folders
        else:
            folders = [e.name for e in _dirs(Path(entry.path))]
        runs = {}
        for stamp in folders:
            path = Path(entry.path, stamp)
            sig = (_mtime(path), _mtime(path / "results.json"))
            seen = old.runs.get(stamp) if old is not None else None
            if sig[0] is None:  # removed since the folder was listed
                continue
            if seen is not None and seen[0] == sig:
                runs[stamp] = seen
            elif any(os.path.lexists(path / m) for m in RUN_MARKERS):
                runs[stamp] = (sig, load_run(entry.name, stamp, path))
        return _Test(mtime, folders, runs)
