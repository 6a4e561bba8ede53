"""Play a saved run's fault schedule again: the same faults at the same offsets.

A seed alone replays a run only roughly: its fault choices follow whoever
leads when each window opens, and that depends on timing, so a replay may cut
off another node in its fifth window than the original did.  The schedule a
run recorded (schedule.jsonl: every start with its targets, every stop, on the
run's clock) is the fault schedule as data, and this plays it back on a fresh
cluster through each fault's applier (:class:`nemesis.faults.FaultKind`):

- ``recorded``: the same nodes as the original, whoever leads now;
- ``role``: a fault aimed at the leader is aimed at whoever leads when it
  starts (:func:`nemesis.faults.retarget`), the other nodes swapped to match.

A start that failed in the original run (its value an ``error``) is skipped;
the nemesis records no stop for it, so a stop closes the fault it follows.  Faults that act while active (clock strobe, leader churn)
act between the steps as they did in the run.  The player has the interface
of :class:`nemesis.nemesis.FaultSchedule`, so the runner plays either.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemesis.faults import FAULT_KINDS, Active, Backend, recorded_leader, retarget
from nemesis.nemesis import Record, fault_groups, group_rng

log = logging.getLogger("nemesis")

TARGETS = ("recorded", "role")


class ScheduleError(ValueError):
    """A schedule.jsonl that cannot be played, naming the line."""


@dataclass(frozen=True)
class Step:
    """One recorded fault event: at ``at_s`` (seconds since the run's start) the
    fault ``fault`` starts with ``targets`` or stops."""

    at_s: float
    start: bool
    fault: str
    targets: dict[str, Any]


def load_schedule(path: Path) -> list[Step]:
    """The playable steps of a schedule.jsonl, in time order: every start that
    took effect and its stop; the final heal is the runner's own."""
    steps: list[Step] = []
    open_: set[str] = set()  # a failed start has no stop: a stop closes an open fault
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            at, f, value = float(event["at_s"]), str(event["f"]), event.get("value") or {}
        except (ValueError, KeyError, TypeError) as e:
            raise ScheduleError(f"{path}:{number}: not a schedule event ({e})") from None
        kind, _, fault = f.partition("-")
        if kind not in ("start", "stop") or not fault:
            continue  # "heal": every fault removed at the end, which the runner does
        if fault not in FAULT_KINDS:
            raise ScheduleError(f"{path}:{number}: unknown fault {fault!r}")
        if kind == "start":
            if "error" in value:
                continue
            open_.add(fault)
        elif fault in open_:
            open_.discard(fault)
        else:
            continue
        steps.append(Step(at, kind == "start", fault, value))
    return sorted(steps, key=lambda s: s.at_s)


@dataclass(frozen=True)
class Replay:
    """What a run replays: the steps of a saved schedule, how to target them,
    and where they came from (for the replay's test.json)."""

    steps: list[Step]
    targets: str
    source: str


class Player:
    """The recorded steps, played on ``backend`` at their offsets from ``t0``
    (monotonic ns, the replay's own start), on one thread."""

    def __init__(self, backend: Backend, steps: list[Step], record: Record, *, seed: int,
                 entries: list[str], window: float, quiet: float, targets: str,
                 t0: int) -> None:
        if targets not in TARGETS:
            raise ValueError(f"--targets: {targets!r} is not one of {', '.join(TARGETS)}")
        self.backend, self.steps, self.record = backend, steps, record
        self.targets, self.t0 = targets, t0
        # leader-churn draws its live moves from its group's rng, as in the run
        groups = fault_groups(entries, window, quiet)
        rngs = [group_rng(seed, i) for i in range(len(groups))]
        self._rng = {f: rngs[i] for i, g in enumerate(groups) for f in g.faults}
        self.groups = [f"replaying {sum(s.start for s in steps)} fault windows at their "
                       f"recorded times, targets {targets}"]
        self.active: dict[str, Active] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, until_ns: int | None = None) -> None:
        """Play from now; no fault starts at or after ``until_ns``."""
        self._thread = threading.Thread(target=self._run, args=(until_ns,),
                                        name="nemesis replay", daemon=True)
        self._thread.start()

    def _run(self, until_ns: int | None) -> None:
        for step in self.steps:
            due = self.t0 + int(step.at_s * 1e9)
            if step.start and until_ns is not None and due >= until_ns:
                return
            if not self._wait_until(due):
                return
            with self._lock:
                if step.start:
                    self._start(step)
                elif step.fault in self.active:
                    self._undo(self.active.pop(step.fault))

    def _wait_until(self, due: int) -> bool:
        """Tick the active faults that act while active until ``due``; False
        once stopped."""
        while (left := (due - time.monotonic_ns()) / 1e9) > 0:
            ticking = [a for a in self.active.values() if a.tick is not None]
            period = min([a.period for a in ticking], default=left)
            if self._stop.wait(min(period, left)):
                return False
            if ticking and period <= left:
                with self._lock:
                    for a in ticking:
                        if a.fault in self.active:
                            try:
                                out = a.tick()  # type: ignore[misc]
                            except Exception as e:  # noqa: BLE001 - recorded, not fatal
                                out = {"error": str(e)}
                            if out:
                                a.extra.setdefault("ticks", []).append(out)
        return not self._stop.is_set()

    def _start(self, step: Step) -> None:
        targets = step.targets
        if self.targets == "role":
            now = self.backend.leader_term(targets.get("raft_group", 0))
            targets = retarget(targets, recorded_leader(targets), now[0] if now else None)
            if now is not None:
                targets = _with_term(targets, now[1])
        kind = FAULT_KINDS[step.fault]
        try:
            act = kind.apply(self.backend, targets,
                             self._rng.get(step.fault) or random.Random(step.fault))
        except Exception as e:  # noqa: BLE001 - a fault that fails is recorded, not fatal
            log.warning("could not start %s: %s", step.fault, e)
            self.record(f"start-{step.fault}", {"error": str(e)})
            return
        self.active[step.fault] = act
        self.record(f"start-{step.fault}", act.targets)

    def _undo(self, act: Active) -> None:
        try:
            act.undo()
            self.record(f"stop-{act.fault}", {**act.targets, **act.extra})
        except Exception as e:  # noqa: BLE001
            log.warning("could not stop %s: %s", act.fault, e)
            self.record(f"stop-{act.fault}", {"error": str(e)})

    def stop(self) -> None:
        """Stop playing and undo every active fault, the last started first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            for name in reversed(list(self.active)):
                self._undo(self.active.pop(name))


def _with_term(targets: dict[str, Any], term: int) -> dict[str, Any]:
    """The current leader's term where the record had the old one's."""
    out = {k: term if k == "term" else v for k, v in targets.items()}
    if isinstance(out.get("first"), dict):
        out["first"] = {**out["first"], "term": term}
    return out
