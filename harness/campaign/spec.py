"""A campaign file: a matrix of test specs, each cell with what it should find.

::

    name = "smoke"                 # default: the file's name without .toml
    description = "one bug per mechanism, and the correct store under the same faults"
    seeds = 2                      # runs per cell: seeds seed .. seed+N-1 (or a list of seeds)
    seed = 1
    repeats = 1                    # runs per cell and seed
    time_limit = 20                # seconds of client traffic per run; a cell may set its own
    jobs = 1                       # runs at once (each is a whole cluster: 1 on 2 cores)
    budget_minutes = 10            # start no run past this; --resume goes on later

    [defaults]                     # settings every cell starts from: faultline run's, as
    nodes = 5                      # --spec files spell them (nemesis_interval, read_path...)

    [[cells]]
    workload = "set"
    nemesis = "partition-leader"   # as --nemesis takes it, comma-separated
    bugs = "unchecked-range-reads" # as --bug takes them, comma-separated; "" for none
    expect = "invalid"             # valid, invalid or any (a measurement); default:
                                   # invalid when the cell plants a bug, else valid
    seeds = 10                     # this table's own seeds (a count from `seed`, or a list)

A list is an axis: a ``[[cells]]`` table with lists stands for every
combination of their values, so ``workload = ["register", "set"]`` with
``bugs = ["", "unchecked-range-reads"]`` is four cells, each expecting what
its bugs imply.  That is why nemesis and bugs are strings: a list of them is
an axis, never one cell's set.

A cell's name is its table's ``name`` (followed by its axis values when the
table has axes), else the test name ``faultline run`` would give it
(workload, faults, store settings, bugs); cells that would share one get the
settings that tell them apart appended.  Every error names the table and the
key and says what is allowed, before any run starts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from harness.spec import SpecError, TestSpec

EXPECTATIONS = ("valid", "invalid", "any")
TOP_KEYS = ("name", "description", "seeds", "seed", "repeats", "time_limit", "jobs",
            "budget_minutes", "defaults", "cells")
#: What the campaign sets for every run itself.
RESERVED = ("seed", "results_dir", "name")
SPEC_KEYS = tuple(f.name for f in fields(TestSpec) if f.name not in RESERVED)
CELL_KEYS = ("name", "expect", "seeds", *SPEC_KEYS)
#: Keys spelled as comma-separated strings, so that a list of them is an axis.
JOINED = ("nemesis", "bugs")
#: The types a key's value may have, from TestSpec's annotations (a float takes an int).
_KINDS: dict[str, tuple[type, ...]] = {
    name: (dict,) if hint.startswith("dict") else
    tuple(k for k in (bool, int, float, str) if k.__name__ in hint)
    + ((int,) if "float" in hint else ())
    for name, hint in ((f.name, str(f.type)) for f in fields(TestSpec))}
_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               dict: "a table"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class CampaignError(ValueError):
    """A campaign file that cannot run, naming the table, the key and what is allowed."""


@dataclass(frozen=True)
class Cell:
    """One configuration of the matrix and what its runs must find."""

    name: str
    #: ``TestSpec`` keyword arguments, without seed, results folder and name
    spec: dict[str, Any]
    expect: str
    #: where it came from, for messages: ``cells[2]``
    origin: str
    #: the seeds it runs (its table's ``seeds``, else the campaign's)
    seeds: tuple[int, ...] = (1,)
    #: how reports name it, where not by ``name`` (a comparison: ``read-path=lease``)
    label: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str) -> Cell:
        """A cell as :meth:`Campaign.to_dict` wrote it (its settings hash is recomputed)."""
        return cls(data["name"], data["spec"], data["expect"], origin, tuple(data["seeds"]),
                   data.get("label", ""))

    def test_spec(self, seed: int, results_dir: str, name: str) -> TestSpec:
        return TestSpec(**self.spec, seed=seed, results_dir=results_dir, name=name)

    @property
    def settings(self) -> str:
        """Hash of what the cell runs and expects: a run recorded under other
        settings (the file edited since) is another experiment."""
        what = json.dumps({"spec": self.spec, "expect": self.expect}, sort_keys=True)
        return hashlib.sha256(what.encode()).hexdigest()[:12]

    def as_expected(self, verdict: str) -> bool:
        """Whether a run's verdict is what the cell expects; a crashed run never is."""
        if self.expect == "any":
            return verdict in ("valid", "invalid", "unknown")
        return verdict == self.expect


@dataclass(frozen=True)
class RunKey:
    """One run of the campaign: a cell, a seed, a repeat."""

    cell: str
    seed: int
    repeat: int = 0

    @property
    def label(self) -> str:
        """The run's folder name under its cell: ``seed-7``, ``seed-7-r1``."""
        return f"seed-{self.seed}" + (f"-r{self.repeat}" if self.repeat else "")


@dataclass(frozen=True)
class Campaign:
    name: str
    description: str
    cells: tuple[Cell, ...]
    seeds: tuple[int, ...]
    repeats: int
    jobs: int
    budget_s: float | None

    def cell(self, name: str) -> Cell:
        return next(c for c in self.cells if c.name == name)

    def plan(self) -> list[RunKey]:
        """Every run, seed by seed across all cells, so a campaign cut short by
        its budget has every cell at the same seeds."""
        seeds = sorted({s for c in self.cells for s in c.seeds})
        return [RunKey(c.name, seed, r) for seed in seeds for r in range(self.repeats)
                for c in self.cells if seed in c.seeds]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Campaign:
        """The campaign a folder's campaign.json holds, so that a reader of the
        folder (faultline serve) summarises its runs without the TOML file;
        KeyError or TypeError where a key is missing or of another type."""
        return cls(data["name"], data["description"],
                   tuple(Cell.from_dict(c, f"cells[{i}]") for i, c in enumerate(data["cells"])),
                   tuple(data["seeds"]), data["repeats"], data["jobs"], data["budget_s"])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "seeds": list(self.seeds), "repeats": self.repeats, "jobs": self.jobs,
                "budget_s": self.budget_s,
                "cells": [{"name": c.name, "expect": c.expect, "settings": c.settings,
                           "seeds": list(c.seeds), "spec": c.spec,
                           **({"label": c.label} if c.label else {})} for c in self.cells]}


def load_campaign(path: str | Path) -> Campaign:
    """The campaign of a TOML file; :class:`CampaignError` for anything wrong."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise CampaignError(f"{path}: {getattr(e, 'strerror', None) or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise CampaignError(f"{path}: not TOML: {e}") from None
    try:
        return parse_campaign(doc, default_name=path.stem)
    except CampaignError as e:
        raise CampaignError(f"{path}: {e}") from None


def parse_campaign(doc: dict[str, Any], default_name: str) -> Campaign:
    for key in doc:
        if key not in TOP_KEYS:
            raise CampaignError(f"unknown key {key!r} (allowed: {', '.join(TOP_KEYS)})")
    name = _text(doc, "name", default_name)
    if not name or _UNSAFE.search(name):
        raise CampaignError(f"key 'name': {name!r} must be letters, digits, '.', '_', '+' "
                            "or '-' (it names the campaign's folder)")
    if isinstance(doc.get("seeds"), list) and "seed" in doc:
        raise CampaignError("key 'seed': not with a list of 'seeds' (it names the first "
                            "of a count)")
    first = doc.get("seed", 1)
    seeds = _seeds("", doc, first)
    repeats, jobs = _count(doc, "repeats", 1), _count(doc, "jobs", 1)
    budget = doc.get("budget_minutes")
    if budget is not None and (_not_number(budget) or budget <= 0):
        raise CampaignError(f"key 'budget_minutes': must be a positive number, got {budget!r}")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise CampaignError("key 'defaults': must be a table, [defaults]")
    defaults, _ = _settings("defaults", defaults, SPEC_KEYS, axes_allowed=False)
    if "time_limit" in doc:
        limit = doc["time_limit"]
        if _not_number(limit) or limit <= 0:
            raise CampaignError(f"key 'time_limit': must be a positive number of seconds, "
                                f"got {limit!r}")
        defaults.setdefault("time_limit", float(limit))
    tables = doc.get("cells")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict)
                                                             for t in tables):
        raise CampaignError("key 'cells': needs at least one [[cells]] table")
    cells = [cell for i, table in enumerate(tables)
             for cell in _expand(f"cells[{i}]", table, defaults,
                                 _seeds(f"cells[{i}], ", table, first) if "seeds" in table
                                 else seeds)]
    return Campaign(name, _text(doc, "description", ""), tuple(_named(cells)), seeds,
                    repeats, jobs, None if budget is None else float(budget) * 60)


def _not_number(v: Any) -> bool:
    return isinstance(v, bool) or not isinstance(v, int | float)


def _text(doc: dict[str, Any], key: str, default: str) -> str:
    value = doc.get(key, default)
    if not isinstance(value, str):
        raise CampaignError(f"key {key!r}: must be a string, got {value!r}")
    return value


def _count(doc: dict[str, Any], key: str, default: int, where: str = "") -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CampaignError(f"{where}key {key!r}: must be a positive integer, got {value!r}")
    return value


def _seeds(where: str, doc: dict[str, Any], first: Any) -> tuple[int, ...]:
    """``seeds``: a count from the first seed, or a list of distinct seeds."""
    seeds = doc.get("seeds", 1)
    if isinstance(first, bool) or not isinstance(first, int):
        raise CampaignError(f"key 'seed': must be an integer, got {first!r}")
    if not isinstance(seeds, list):
        return tuple(range(first, first + _count(doc, "seeds", 1, where)))
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                            for s in seeds) or len(set(seeds)) != len(seeds):
        raise CampaignError(f"{where}key 'seeds': a list must hold distinct integers, got "
                            f"{seeds!r}")
    return tuple(seeds)


def _settings(where: str, table: dict[str, Any], allowed: tuple[str, ...],
              axes_allowed: bool) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A table's keys checked against ``allowed``: its single values and its
    axes, nemesis and bugs turned from comma-separated strings into TestSpec's
    lists (per axis value)."""
    fixed: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    for key, value in table.items():
        if key not in allowed:
            why = ("the campaign sets it for every run" if key in RESERVED
                   else f"allowed: {', '.join(allowed)}")
            raise CampaignError(f"{where}: unknown key {key!r} ({why})")
        if not isinstance(value, list):
            fixed[key] = _joined(where, key, value)
        elif not axes_allowed or key in ("name", "expect"):
            raise CampaignError(f"{where}, key {key!r}: one value, not a list"
                                + ("" if axes_allowed else " (axes go in [[cells]])"))
        elif not value:
            raise CampaignError(f"{where}, key {key!r}: an axis needs at least one value")
        else:
            axes[key] = [_joined(where, key, v) for v in value]
    return fixed, axes


def _joined(where: str, key: str, value: Any) -> Any:
    """One value of a key, of the type TestSpec declares for it."""
    if key not in JOINED:
        kinds = _KINDS.get(key, (str,))
        if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
            raise CampaignError(f"{where}, key {key!r}: must be {_KIND_NAMES[kinds[0]]}, "
                                f"got {value!r}")
        return value
    if not isinstance(value, str):
        raise CampaignError(f"{where}, key {key!r}: a comma-separated string, as "
                            f"--{'bug' if key == 'bugs' else key} takes it, got {value!r} "
                            "(a list is an axis: a list of such strings)")
    return [part.strip() for part in value.split(",") if part.strip()]


def _expand(where: str, table: dict[str, Any], defaults: dict[str, Any],
            seeds: tuple[int, ...]) -> list[Cell]:
    """The cells of one table: the product of its axes, each checked as a TestSpec."""
    table = {k: v for k, v in table.items() if k != "seeds"}
    settings, axes = _settings(where, table, CELL_KEYS, axes_allowed=True)
    expect = settings.pop("expect", None)
    if expect is not None and expect not in EXPECTATIONS:
        raise CampaignError(f"{where}, key 'expect': {expect!r} is not one of "
                            f"{', '.join(EXPECTATIONS)}")
    label = settings.pop("name", None)
    if label is not None and (not isinstance(label, str) or not label):
        raise CampaignError(f"{where}, key 'name': must be a non-empty string")
    cells = []
    for values in itertools.product(*axes.values()):
        point = dict(zip(axes, values))
        spec = {**defaults, **settings, **point}
        try:
            test = TestSpec(**spec)
        except (SpecError, TypeError) as e:
            shown = ", ".join(f"{k}={_show(v)}" for k, v in point.items())
            raise CampaignError(f"{where}{f' ({shown})' if shown else ''}: {e}") from None
        name = (f"{label}-{'-'.join(_show(v, k) for k, v in point.items())}" if label and point
                else label or test.test_name)
        cells.append(Cell(safe_name(name), spec, expect or ("invalid" if test.bugs else "valid"),
                          where, seeds))
    return cells


def _show(value: Any, key: str = "") -> str:
    """An axis value in a cell name: a fault list joined by '+', no bug flags as
    'correct', no faults as 'none'."""
    if isinstance(value, list):
        return "+".join(str(v) for v in value) or ("correct" if key == "bugs" else "none")
    return f"{value:g}" if isinstance(value, float) else str(value)


def safe_name(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("_") or "cell"


def _named(cells: list[Cell]) -> list[Cell]:
    """Cells that would share a name get the settings that tell them apart
    appended; two cells alike in every setting are a mistake in the file."""
    groups: dict[str, list[Cell]] = {}
    for c in cells:
        groups.setdefault(c.name, []).append(c)
    out = []
    for name, group in groups.items():
        if len(group) == 1:
            out.append(group[0])
            continue
        keys = sorted({k for c in group for k in c.spec}
                      - {k for k in group[0].spec
                         if all(c.spec.get(k, ...) == group[0].spec[k] for c in group)})
        if not keys:
            raise CampaignError(f"{group[0].origin} and {group[1].origin}: cell {name!r} "
                                "twice, alike in every setting")
        for c in group:
            suffix = "-".join(f"{k}-{_show(c.spec.get(k, 'default'), k)}" for k in keys)
            out.append(replace(c, name=safe_name(f"{name}-{suffix}")))
    if len({c.name for c in out}) != len(out):
        raise CampaignError("cells with the same name after their settings were appended: "
                            "give their tables a 'name'")
    return out
