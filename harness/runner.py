"""One fault test, start to finish: the phases of ``faultline run``.

set up the cluster (on the backend the spec names: harness/backends.py) and
tables -> clients and nemesis until the time limit ->
heal (every fault removed) -> quiet period -> final reads -> check -> report
-> tear down.  Whatever happens (Ctrl-C, a crashed node, a checker that
raises), the teardown heals every fault, keeps the history written so far
and stops every process the run started.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from checkers.history import NEMESIS, HistoryWriter
from checkers.result import EXIT_CODES
from harness.analysis import analyse, write_results
from harness.clients import ClientPool
from harness.backends import RunBackend, make_backend, wait_for_leader
from harness.spec import TestSpec
from nemesis.nemesis import Nemesis

log = logging.getLogger("runner")

CRASHED = 255


@dataclass
class RunResult:
    verdict: str
    directory: Path
    seed: int
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.verdict, CRASHED)


class _Recorder:
    """The history and the fault schedule, written as the test runs."""

    def __init__(self, directory: Path, t0: int) -> None:
        self.history = HistoryWriter(directory / "history.jsonl")
        self._schedule = open(directory / "schedule.jsonl", "a", encoding="utf-8")
        self._lock = threading.Lock()
        self.t0 = t0
        self.active: dict[str, Any] = {}

    def event(self, type: str, process: Any, f: str, **kw: Any) -> None:
        with self._lock:
            self.history.append(type, process, f, **kw)

    def nemesis(self, f: str, value: dict[str, Any]) -> None:
        now = time.monotonic_ns()
        with self._lock:
            self.history.append("info", NEMESIS, f, value=value, time=now)
            self._schedule.write(json.dumps({"time": now, "elapsed_s": (now - self.t0) / 1e9,
                                             "f": f, "value": value}) + "\n")
            self._schedule.flush()
            kind, _, fault = f.partition("-")
            if kind == "start":
                self.active[fault] = value
            elif kind == "stop":
                self.active.pop(fault, None)

    def close(self) -> None:
        self.history.close()
        self._schedule.close()


def results_dir(spec: TestSpec) -> Path:
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    base = Path(spec.results_dir) / spec.test_name
    d = base / stamp
    n = 1
    while d.exists():  # two runs in one second
        n += 1
        d = base / f"{stamp}-{n}"
    d.mkdir(parents=True)
    return d


def run_test(spec: TestSpec, *, out: TextIO = sys.stdout, live: bool | None = None) -> RunResult:
    seed = spec.resolve_seed()
    directory = results_dir(spec)
    print(f"faultline run: {spec.test_name}, seed {seed}, results in {directory}", file=out)
    (directory / "test.json").write_text(json.dumps(
        {"spec": spec.to_dict(), "seed": seed, "node_config": spec.node_config(),
         "python": sys.version.split()[0], "started": datetime.now().isoformat()}, indent=2))
    _point_latest(directory)
    backend = make_backend(spec, directory / "cluster", seed)
    recorder = _Recorder(directory, time.monotonic_ns())
    pool: ClientPool | None = None
    nemesis: Nemesis | None = None
    status: _Status | None = None
    verdict, results = "unknown", {}
    try:
        print(f"setting up {spec.nodes} nodes ({spec.backend})", file=out)
        backend.start()
        links = getattr(backend, "link_mode", None)
        if links in ("netem", "proxy"):
            print(f"delay and loss through {'tc netem' if links == 'netem' else 'proxies'}",
                  file=out)
        pool = ClientPool(spec.workload, spec.workload_options, backend.endpoints(),
                          concurrency=spec.concurrency, rate=spec.rate, seed=seed,
                          timeout=spec.client_timeout, on_event=recorder.event)
        pool.setup()
        nemesis = Nemesis(backend, spec.nemesis, spec.nemesis_interval,
                          random.Random(seed), recorder.nemesis, quiet=spec.nemesis_quiet)
        status = _Status(pool, recorder, spec.time_limit, out, live)
        pool.start()
        nemesis.start()
        status.start()
        time.sleep(spec.time_limit)
        pool.stop()
        status.stop()
        print("healing", file=out)
        nemesis.stop()
        backend.heal_all()
        recorder.nemesis("heal", {"nodes": backend.node_ids})
        time.sleep(spec.quiet_period)
        wait_for_leader(backend, timeout=30)
        pool.run_final()
        recorder.close()
        print("checking", file=out)
        verdict, results = analyse(spec, directory)
    finally:
        # heal first, so that clients stuck on a cut-off or paused node finish
        if status:
            status.stop()
        if nemesis:
            nemesis.stop()
        if pool:
            pool.close()
        try:
            backend.close()
        finally:
            recorder.close()
            _copy_logs(backend, directory)
    write_results(directory, verdict, seed, results)
    return RunResult(verdict, directory, seed, results)


def _point_latest(directory: Path) -> None:
    latest = directory.parents[1] / "latest"
    tmp = latest.with_name(f".latest-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(directory.resolve())
        tmp.replace(latest)
    except OSError as e:
        log.warning("could not point %s at the run: %s", latest, e)


def _copy_logs(backend: RunBackend, directory: Path) -> None:
    logs = directory / "logs"
    logs.mkdir(exist_ok=True)
    for f in backend.log_files():
        if f.exists():
            shutil.copy2(f, logs / f.name)


class _Status(threading.Thread):
    """A live status line on a terminal (elapsed, ops/s, ok/fail/info, faults)."""

    def __init__(self, pool: ClientPool, recorder: _Recorder, limit: float, out: TextIO,
                 live: bool | None) -> None:
        super().__init__(name="status", daemon=True)
        self.pool, self.recorder, self.limit, self.out = pool, recorder, limit, out
        self.live = live if live is not None else (
            out.isatty() and not os.environ.get("CI"))
        self._halt = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        last = 0
        while self.live and not self._halt.wait(1.0):
            c = self.pool.counts()
            done = c.get("ok", 0) + c.get("fail", 0) + c.get("info", 0)
            faults = ",".join(self.recorder.active) or "none"
            self.out.write(f"\r{time.monotonic() - t0:5.1f}/{self.limit:g} s  "
                           f"{done - last:5d} ops/s  ok {c.get('ok', 0)} fail "
                           f"{c.get('fail', 0)} info {c.get('info', 0)}  faults: {faults}   ")
            self.out.flush()
            last = done

    def stop(self) -> None:
        if not self._halt.is_set():
            self._halt.set()
            if self.live:
                self.out.write("\n")
