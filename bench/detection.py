"""Detection benchmark: prints figures, asserts nothing.

    python bench/detection.py [--pairings a,b] [--runs 20] [--seed 100] [--time-limit S]
                              [--keep DIR] [--keep-folders] [--merge] [--markdown]

Runs each pairing of bench/pairings.toml (a workload and the faults that
expose one bug flag) on seeds seed..seed+N-1, each seed with the flag on
("broken") then off ("correct"), each run a real `faultline run` in a fresh
process. Every finished run appends one JSON line to DIR/runs.jsonl (default
bench/detection_runs/); a run already there under the pairing's current
settings is skipped, so the same command re-run after an interruption goes on
where it stopped, and the runs.jsonl of several sessions concatenate into one
table. Crashed runs are recorded but not done: the next invocation retries
them. The table (after running, or alone with --merge) gives per pairing the
detection rate and its 95% Wilson lower bound, the median time from the start
of a run to its first anomalous op, the false alarms of the correct side (any
verdict but VALID) and the crashed runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.campaign.confidence import wilson_lower  # noqa: E402
from runs import ROOT, one_run  # noqa: E402
from system.config import BUGS  # noqa: E402

HERE = Path(__file__).resolve().parent
PAIRINGS_FILE = HERE / "pairings.toml"
KEEP = HERE / "detection_runs"
SIDES = ("broken", "correct")
KEYS = ("flag", "workload", "nemesis", "broken", "correct", "flags", "time_limit", "why")
REQUIRED = ("workload", "nemesis", "time_limit", "why")
#: one_run sets these for every run; a pairing setting them would be overridden
RESERVED = ("--workload", "--nemesis", "--time-limit", "--seed", "--results-dir", "--name")


class PairingError(ValueError):
    """A pairings file that cannot be used, naming the pairing and the key."""


@dataclass(frozen=True)
class Pairing:
    """One row of the table: the faults that expose ``flag`` in ``workload``,
    the flags of each side and of both."""

    name: str
    flag: str | None
    workload: str
    nemesis: str
    broken: tuple[str, ...]
    correct: tuple[str, ...]
    flags: tuple[str, ...]
    time_limit: float
    why: str

    def side_flags(self, side: str) -> list[str]:
        return [*getattr(self, side), *self.flags]

    @property
    def settings(self) -> str:
        """Hash of what the runs do (not the name, not `why`): runs recorded
        under other settings are another experiment and do not count."""
        what = {k: v for k, v in asdict(self).items() if k not in ("name", "why")}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def _bad(name: str, key: str, problem: str) -> PairingError:
    return PairingError(f"pairing [{name}], key {key!r}: {problem}")


def _text(name: str, table: dict[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise _bad(name, key, "must be a non-empty string")
    return value


def _args(name: str, table: dict[str, Any], key: str) -> tuple[str, ...] | None:
    """A list of `faultline run` flags, its bug flags known, none that one_run sets."""
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise _bad(name, key, "must be a list of strings")
    for bug in (b for a, b in zip(value, value[1:]) if a == "--bug"):
        if bug not in BUGS:
            raise _bad(name, key, f"unknown bug flag {bug!r}")
    for arg in value:
        if arg.split("=")[0] in RESERVED:
            raise _bad(name, key, f"{arg} is set by the bench for every run")
    return tuple(value)


def _pairing(name: str, table: Any) -> Pairing:
    if not isinstance(table, dict):
        raise PairingError(f"pairing {name!r}: must be a table, [{name}]")
    for key in table:
        if key not in KEYS:
            raise _bad(name, key, f"unknown key (known: {', '.join(KEYS)})")
    for key in REQUIRED:
        if key not in table:
            raise _bad(name, key, "missing")
    flag = _text(name, table, "flag")
    if flag is not None and flag not in BUGS:
        raise _bad(name, "flag", f"unknown bug flag {flag!r} (known: {', '.join(BUGS)})")
    limit = table["time_limit"]
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit <= 0:
        raise _bad(name, "time_limit", "must be a positive number of seconds")
    broken = _args(name, table, "broken")
    broken = broken if broken is not None else ("--bug", flag) if flag else ()
    correct = _args(name, table, "correct") or ()
    if broken == correct:
        raise _bad(name, "correct", "both sides would run the same flags")
    return Pairing(name, flag, _text(name, table, "workload"), _text(name, table, "nemesis"),
                   broken, correct, _args(name, table, "flags") or (), float(limit),
                   _text(name, table, "why"))


def parse_pairings(text: str) -> dict[str, Pairing]:
    """Every pairing of a pairings.toml text, in file order; PairingError at the
    first thing wrong, so a typo fails before hours of runs, not during them."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PairingError(str(e)) from e
    return {name: _pairing(name, table) for name, table in doc.items()}


@dataclass
class Run:
    """One line of runs.jsonl: how a run ended and what it ran."""

    pairing: str
    side: str
    seed: int
    settings: str
    verdict: str
    first_anomaly_s: float | None
    wall_s: float
    staleness_max_ms: float | None
    commit: str
    workload: str
    nemesis: str
    flags: list[str]
    time_limit: float
    finished_at: str

    @property
    def key(self) -> tuple[str, str, int, str]:
        return self.pairing, self.side, self.seed, self.settings


def read_runs(path: Path) -> list[Run]:
    """The runs of a runs.jsonl, none if it is absent; a line that is not a
    run (one torn by a kill mid-write) is reported and skipped."""
    if not path.exists():
        return []
    runs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            runs.append(Run(**{f.name: record[f.name] for f in fields(Run)}))
        except (ValueError, TypeError, KeyError):
            print(f"{path}:{number}: not a run, skipped", file=sys.stderr)
    return runs


def append_run(path: Path, run: Run) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(asdict(run)) + "\n")


def todo(pairings: list[Pairing], seeds: range, runs: list[Run]) -> list[tuple[Pairing, int, str]]:
    """The runs still to do, per pairing, per seed, broken then correct (so a
    bench stopped halfway has comparable halves); a crashed run is not done."""
    done = {r.key for r in runs if r.verdict != "crashed"}
    return [(p, seed, side) for p in pairings for seed in seeds for side in SIDES
            if (p.name, side, seed, p.settings) not in done]


@dataclass(frozen=True)
class Row:
    """A pairing's figures over its runs under its current settings."""

    pairing: Pairing
    detected: int
    broken_runs: int
    firsts: tuple[float, ...]
    alarms: int
    correct_runs: int
    #: attempts that crashed; the next invocation retries them, so they leave no hole
    crashed: int

    def cells(self, markdown: bool) -> list[str]:
        p = self.pairing
        flag = p.flag or "-"
        return [p.name, f"`{flag}`" if markdown and p.flag else flag,
                f"{p.workload}, {p.nemesis}", f"{self.detected}/{self.broken_runs}",
                f"{wilson_lower(self.detected, self.broken_runs):.1%}" if self.broken_runs
                else "-",
                f"{statistics.median(self.firsts):.1f} s" if self.firsts else "-",
                f"{self.alarms}/{self.correct_runs}", str(self.crashed)]


def summarise(pairing: Pairing, runs: list[Run]) -> Row:
    """The pairing's row: one run per (side, seed) under its current settings,
    the first recorded if sessions repeated one."""
    current = [r for r in runs if r.pairing == pairing.name and r.settings == pairing.settings]
    finished: dict[tuple[str, int], Run] = {}
    for r in current:
        if r.verdict != "crashed":
            finished.setdefault((r.side, r.seed), r)
    broken = [r for r in finished.values() if r.side == "broken"]
    correct = [r for r in finished.values() if r.side == "correct"]
    found = [r for r in broken if r.verdict == "invalid"]
    return Row(pairing, len(found), len(broken),
               tuple(r.first_anomaly_s for r in found if r.first_anomaly_s is not None),
               sum(r.verdict != "valid" for r in correct), len(correct),
               sum(r.verdict == "crashed" for r in current))


def ignored_note(pairing: Pairing, runs: list[Run]) -> str | None:
    """How many runs of the pairing its row leaves out, recorded under other
    settings; with the time limits they ran, as --time-limit can count them."""
    other = [r for r in runs if r.pairing == pairing.name and r.settings != pairing.settings]
    if not other:
        return None
    note = f"{pairing.name}: {len(other)} runs under other settings ignored"
    if limits := sorted({r.time_limit for r in other} - {pairing.time_limit}):
        note += (f" (time limit {', '.join(f'{t:g}' for t in limits)} s among them: "
                 "add --time-limit to count those)")
    return note


HEADER = ["pairing", "flag", "workload, faults", "detected", "95% lower bound",
          "median first anomaly", "false alarms", "crashed"]


def format_table(rows: list[Row], markdown: bool) -> str:
    """The table as plain columns or as Markdown for the README."""
    lines = [HEADER, *(row.cells(markdown) for row in rows)]
    if markdown:
        return "\n".join(["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER),
                          *("| " + " | ".join(cells) + " |" for cells in lines[1:])])
    widths = [max(len(cells[i]) for cells in lines) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
                     for cells in lines)


def head_commit() -> str:
    """The commit the runs test, so merged runs say which code they ran."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                         capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def run_all(plan: list[tuple[Pairing, int, str]], runs_file: Path, folders: Path | None) -> None:
    """Every planned run, each recorded in runs_file the moment it ends."""
    commit = head_commit()
    for i, (p, seed, side) in enumerate(plan, 1):
        print(f"[{i}/{len(plan)}] {p.name} {side} seed {seed}:", end=" ", flush=True)
        flags = p.side_flags(side)
        with tempfile.TemporaryDirectory() as scratch:
            where = folders / p.name / side if folders else Path(scratch)
            out = one_run(p.workload, p.nemesis, flags, seed, p.time_limit, where)
        append_run(runs_file, Run(
            p.name, side, seed, p.settings, out.verdict, out.first_anomaly_s, round(out.wall_s, 1),
            out.staleness_max_ms, commit, p.workload, p.nemesis, flags,
            p.time_limit, datetime.now(timezone.utc).isoformat(timespec="seconds")))
        first = f"{out.first_anomaly_s:.1f} s" if out.first_anomaly_s is not None else "-"
        print(f"{out.verdict.upper()}, first anomaly {first}, {out.wall_s:.0f} s", flush=True)
        if out.verdict == "crashed":
            print(f"    {out.tail}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairings", help="comma-separated pairing names (default: all)")
    ap.add_argument("--runs", type=int, default=20, help="seeds per pairing (default: 20)")
    ap.add_argument("--seed", type=int, default=100, help="first seed; run i uses seed + i")
    ap.add_argument("--time-limit", type=float,
                    help="seconds of client traffic of every run (default: each pairing's)")
    ap.add_argument("--keep", metavar="DIR", type=Path, default=KEEP,
                    help=f"where runs.jsonl is (default: {KEEP.relative_to(ROOT)})")
    ap.add_argument("--keep-folders", action="store_true",
                    help="keep every run's results folder under DIR/results/PAIRING/SIDE")
    ap.add_argument("--merge", action="store_true", help="print the table of runs.jsonl, run "
                    "nothing")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--pairings-file", type=Path, default=PAIRINGS_FILE, metavar="TOML")
    args = ap.parse_args()
    try:
        pairings = parse_pairings(args.pairings_file.read_text())
    except (OSError, PairingError) as e:
        ap.error(f"{args.pairings_file}: {e}")
    names = args.pairings.split(",") if args.pairings else list(pairings)
    if unknown := [n for n in names if n not in pairings]:
        ap.error(f"unknown pairing {', '.join(unknown)} (known: {', '.join(pairings)})")
    chosen = [pairings[n] if args.time_limit is None
              else replace(pairings[n], time_limit=args.time_limit) for n in names]
    runs_file = args.keep / "runs.jsonl"
    runs = read_runs(runs_file)
    if not args.merge:
        plan = todo(chosen, range(args.seed, args.seed + args.runs), runs)
        print(f"seeds {args.seed}..{args.seed + args.runs - 1}: {len(plan)} runs to do, "
              f"{len(chosen) * args.runs * 2 - len(plan)} already in {runs_file}", flush=True)
        try:
            run_all(plan, runs_file, args.keep / "results" if args.keep_folders else None)
        except KeyboardInterrupt:
            print("\ninterrupted: the same command goes on where this stopped", file=sys.stderr)
            return 130
        runs = read_runs(runs_file)
    rows = [summarise(p, runs) for p in chosen]
    print(format_table(rows, args.markdown))
    for note in filter(None, (ignored_note(p, runs) for p in chosen)):
        print(note, file=sys.stderr)
    if strays := sum(r.pairing not in pairings for r in runs):
        print(f"{strays} runs of pairings not in {args.pairings_file.name} ignored",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
