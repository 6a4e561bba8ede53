"""``faultline prune``: keep the newest campaign folders and every unexpected run.

A nightly campaign writes gigabytes a month of run folders nobody opens: the
runs that met their expectation.  Per campaign the newest ``keep`` folders
stay whole; an older folder keeps its reports and the run folders and logs of
its runs off expectation (the evidence of a bug, or of a harness failure),
and goes altogether when it has none.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from harness.campaign.record import read_records
from harness.campaign.spec import RunKey


def prune(results: Path, keep: int, *, dry_run: bool = False,
          log: Callable[[str], None] = print) -> int:
    """Bytes freed (or that would be, with ``dry_run``)."""
    freed = 0
    for campaign in sorted(p for p in (results / "campaigns").glob("*") if p.is_dir()):
        folders = sorted((p for p in campaign.iterdir()
                          if p.is_dir() and (p / "campaign.json").is_file()), reverse=True)
        for folder in folders[keep:]:
            off = [r for r in read_records(folder / "runs.jsonl") if not r.as_expected]
            if not off:
                freed += _remove(folder, dry_run, log)
                continue
            kept = {Path(r.folder) for r in off if r.folder}
            logs = {f"{r.cell}-{RunKey(r.cell, r.seed, r.repeat).label}.log" for r in off}
            for run in sorted(_run_folders(folder)):
                if run.relative_to(folder) not in kept:
                    freed += _remove(run, dry_run, log)
                    if not dry_run:
                        _remove_empty(run.parent, folder)
            for f in sorted((folder / "logs").glob("*.log")):
                if f.name not in logs:
                    freed += _remove(f, dry_run, log)
    return freed


def _run_folders(folder: Path) -> list[Path]:
    """runs/<cell>/<label>/<stamp>/: every run folder, finished or not; never
    through a symlink (each cell has a ``latest`` one into its newest run)."""
    level = [folder / "runs"]
    for _ in range(3):
        level = [p for parent in level for p in parent.glob("*")
                 if p.is_dir() and not p.is_symlink()]
    return level


def _remove_empty(path: Path, stop: Path) -> None:
    """The label and cell folders a removed run leaves empty."""
    while path != stop and not any(path.iterdir()):
        path.rmdir()
        path = path.parent


def _remove(path: Path, dry_run: bool, log: Callable[[str], None]) -> int:
    size = (sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
            if path.is_dir() else path.stat().st_size)
    log(f"{'would remove' if dry_run else 'removed'} {path}")
    if not dry_run:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return size
