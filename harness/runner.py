"""One fault test, start to finish: the phases of ``faultline run``.

set up the cluster (on the backend the spec names: harness/backends.py),
refuse faults the system cannot take, tables -> clients and nemesis (a
schedule per fault timing: nemesis/nemesis.py) until the client pool's
deadline (the time limit) -> heal (every fault removed) -> quiet period ->
final reads -> each node's status (nodes.json: its lease counters) -> check
-> report -> tear down.  Whatever happens (Ctrl-C, a crashed node, a checker
that raises), the teardown heals every fault, keeps the history written so
far and stops every process the run started.

One clock: the test starts when the clients are let go (``t0``, monotonic
ns, kept in test.json as ``t0_ns``), and every time a run shows, from the
progress lines to schedule.jsonl, results.json, summary.txt, the plots and
timeline.html, is seconds since then.  ``results/latest`` moves to a run
only once it has started; a run whose set up failed is renamed
``STAMP-setup-failed`` and keeps only why (``setup-failed.txt``, node logs).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, TextIO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from checkers.history import NEMESIS, HistoryWriter
from checkers.result import EXIT_CODES
from checkers.stats import fault_label
from harness.analysis import analyse, write_results
from harness.backends import RunBackend, make_backend, wait_for_leader
from harness.clients import ClientPool
from harness.folders import claim_folder
from harness.spec import TestSpec
from nemesis.faults import check_support
from nemesis.nemesis import FaultSchedule, describe
from nemesis.replay import Player, Replay

log = logging.getLogger("runner")

CRASHED = 255


class SetupFailed(Exception):
    """The test never started (no cluster, no leader, no table); the run
    folder, renamed ``STAMP-setup-failed``, keeps why and its traceback."""
#: Without a terminal (CI, a pipe), a status line this often.
PLAIN_PERIOD_S = 5.0
#: ops/s on the status line is over about this long.
RATE_WINDOW_S = 3.0


@dataclass
class RunResult:
    verdict: str
    directory: Path
    seed: int
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.verdict, CRASHED)


class _Schedule:
    """schedule.jsonl: every fault event on the run's clock as it happens, and
    the faults active now (for the status line)."""

    def __init__(self, path: Path, t0: int) -> None:
        self._fh = open(path, "a", encoding="utf-8")
        self._lock = threading.Lock()
        self.t0 = t0
        #: fault -> what it hit (``partition-leader n3``)
        self._active: dict[str, str] = {}

    def record(self, f: str, value: dict[str, Any], now: int) -> float:
        """Write one fault event; its time in seconds since the test started."""
        at = (now - self.t0) / 1e9
        kind, _, fault = f.partition("-")
        with self._lock:
            self._fh.write(json.dumps({"at_s": round(at, 6), "f": f, "value": value}) + "\n")
            self._fh.flush()
            if kind == "start" and "error" not in value:
                self._active[fault] = fault_label(fault, value)
            elif kind == "stop":
                self._active.pop(fault, None)
        return at

    def in_effect(self) -> list[str]:
        """The faults active now, what each hit."""
        with self._lock:
            return list(self._active.values())

    def close(self) -> None:
        self._fh.close()


class _Progress:
    """What a person watches while the test runs: a line for each phase and
    each fault as it starts and stops, and the status every few seconds.  On
    a terminal the status is one live line that rich redraws below the
    others; elsewhere (CI, a pipe) it is a plain line every ``period``."""

    def __init__(self, out: TextIO, live: bool, period: float = PLAIN_PERIOD_S) -> None:
        self.out, self.period = out, period
        self.console = Console(file=out, force_terminal=True, highlight=False,
                               soft_wrap=True) if live else None
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._live: Live | None = None
        self._thread: threading.Thread | None = None
        self._status: Callable[[], str] | None = None

    def line(self, text: str) -> None:
        with self._lock:
            if self.console is not None:
                self.console.print(text, markup=False)
            else:
                print(text, file=self.out, flush=True)

    def start(self, status: Callable[[], str]) -> None:
        self._status = status
        if self.console is not None:
            self._live = Live(get_renderable=lambda: Text(status(), no_wrap=True,
                                                          overflow="ellipsis"),
                              console=self.console, refresh_per_second=2, transient=True)
            self._live.start()
        else:
            self._thread = threading.Thread(target=self._plain, args=(status,), name="status",
                                            daemon=True)
            self._thread.start()

    def _plain(self, status: Callable[[], str]) -> None:
        while not self._halt.wait(self.period):
            self.line(status())

    def stop(self) -> None:
        """Stop the status and leave its last state as a plain line."""
        self._halt.set()
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._status is not None:
            self.line(self._status())
            self._status = None


class _Status:
    """The status line: where the run is on its clock, ops/s, outcomes, the
    nodes that answer, the faults active."""

    def __init__(self, pool: ClientPool, schedule: _Schedule, limit: float) -> None:
        self.pool, self.schedule, self.limit = pool, schedule, limit
        self._samples: deque[tuple[int, int]] = deque([(schedule.t0, 0)])

    def __call__(self) -> str:
        now = time.monotonic_ns()
        c = self.pool.counts()
        done = c["ok"] + c["fail"] + c["info"]
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S * 1e9:
            self._samples.popleft()
        t_then, done_then = self._samples[0]
        rate = (done - done_then) / ((now - t_then) / 1e9) if now > t_then else 0.0
        answering = self.pool.answering()
        silent = [n for n, _ in self.pool.endpoints if n not in answering]
        nodes = " ".join(answering) or "none"
        if silent:
            nodes += f" (not {' '.join(silent)})"
        return (f"{(now - self.schedule.t0) / 1e9:5.1f}/{self.limit:g} s  {rate:5.0f} ops/s  "
                f"ok {c['ok']:,} fail {c['fail']:,} info {c['info']:,}  answering {nodes}  "
                f"faults: {', '.join(self.schedule.in_effect()) or 'none'}")


def results_dir(spec: TestSpec) -> Path:
    """The run's new folder, ``RESULTS/<test>/<stamp>`` (``<stamp>-2``... for a
    second run in the same second), made here: see claim_folder."""
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    return claim_folder(Path(spec.results_dir) / spec.test_name / stamp)


def run_test(spec: TestSpec, *, out: TextIO = sys.stdout, live: bool | None = None,
             replay: Replay | None = None) -> RunResult:
    """Run the test; with ``replay``, its faults are a saved run's schedule played
    again (nemesis/replay.py) instead of the seed's."""
    seed = spec.resolve_seed()
    directory = results_dir(spec)
    progress = _Progress(out, live if live is not None else (
        out.isatty() and not os.environ.get("CI")))
    progress.line(f"faultline run: {spec.test_name}, seed {seed}, results in {directory}")
    meta: dict[str, Any] = {"spec": spec.to_dict(), "seed": seed,
                            "node_config": spec.node_config(),
                            "python": sys.version.split()[0],
                            "started": datetime.now().isoformat()}
    if replay is not None:
        meta["replay"] = {"of": replay.source, "targets": replay.targets}
    (directory / "test.json").write_text(json.dumps(meta, indent=2))
    backend = make_backend(spec, directory / "cluster", seed)
    history = HistoryWriter(directory / "history.jsonl")
    pool: ClientPool | None = None
    nemesis: FaultSchedule | Player | None = None
    schedule: _Schedule | None = None
    failed_setup: str | None = None
    verdict: str = "unknown"
    results: dict[str, Any] = {}
    try:
        try:
            progress.line(f"setting up {spec.nodes} nodes ({spec.backend})")
            backend.start()
            links = getattr(backend, "link_mode", None)
            if links in ("netem", "proxy"):
                progress.line(f"delay and loss through "
                              f"{'tc netem' if links == 'netem' else 'proxies'}")
            check_support(backend, spec.fault_names)  # a fault it cannot take: no test
            pool = ClientPool(spec.workload, spec.workload_options, backend.endpoints(),
                              concurrency=spec.concurrency, rate=spec.rate, seed=seed,
                              timeout=spec.client_timeout, on_event=history.append)
            pool.setup()
            pool.start(time_limit=spec.time_limit)
        except BaseException as e:
            why = ("interrupted" if isinstance(e, KeyboardInterrupt)
                   else f"{type(e).__name__}: {e}")
            progress.line(f"set up failed, the test did not start: {why}")
            failed_setup = f"{why}\n\n" + "".join(traceback.format_exception(e)).rstrip()
            if not isinstance(e, Exception):  # Ctrl-C, SIGTERM: torn down as ever
                raise
            raise SetupFailed(why) from e
        assert pool.started_at is not None
        t0 = pool.started_at
        schedule = _Schedule(directory / "schedule.jsonl", t0)
        meta["t0_ns"] = t0
        (directory / "test.json").write_text(json.dumps(meta, indent=2))
        _point_latest(directory)
        on_fault = _fault_sink(pool, schedule, progress)
        if replay is None:
            nemesis = FaultSchedule(backend, spec.nemesis, seed, on_fault,
                                    window=spec.nemesis_interval, quiet=spec.nemesis_quiet)
        else:
            nemesis = Player(backend, replay.steps, on_fault, seed=seed, entries=spec.nemesis,
                             window=spec.nemesis_interval, quiet=spec.nemesis_quiet,
                             targets=replay.targets, t0=t0)
        progress.line(f"{0:+6.1f} s  {spec.concurrency} clients on {spec.nodes} nodes "
                      f"for {spec.time_limit:g} s")
        for group in nemesis.groups:
            progress.line(f"{0:+6.1f} s  faults {group}")
        nemesis.start(until_ns=pool.deadline_ns)
        progress.start(_Status(pool, schedule, spec.time_limit))
        pool.wait()
        ended = time.monotonic_ns()
        progress.stop()
        _say(progress, t0, _end_of_clients(pool.deadline_ns, ended))
        nemesis.stop()
        backend.heal_all()
        on_fault("heal", {"nodes": backend.node_ids})
        pool.stop()  # the workers' processes exit
        time.sleep(spec.quiet_period)
        wait_for_leader(backend, timeout=30)
        _say(progress, t0, "final reads")
        pool.run_final()
        history.close()
        (directory / "nodes.json").write_text(json.dumps(backend.node_statuses(), indent=2))
        _say(progress, t0, "checking")
        verdict, results = analyse(spec, directory)
    finally:
        # heal first, so that clients stuck on a cut-off or paused node finish
        progress.stop()
        if nemesis:
            nemesis.stop()
        if pool:
            pool.close()
        try:
            backend.close()
        finally:
            history.close()
            if schedule:
                schedule.close()
            _copy_logs(backend, directory)
            if failed_setup is not None:
                kept = _mark_setup_failed(directory, failed_setup)
                progress.line(f"why, and the node logs: {kept}")
    write_results(directory, verdict, seed, results)
    return RunResult(verdict, directory, seed, results)


def _fault_sink(pool: ClientPool, schedule: _Schedule,
                progress: _Progress) -> Callable[[str, dict[str, Any]], None]:
    """Where the nemesis reports a fault event: the history (through the pool,
    in time order with the clients' events), schedule.jsonl, and a line for
    the person watching (``+12.4 s  start partition-leader: isolate n3``)."""
    def record(f: str, value: dict[str, Any]) -> None:
        now = time.monotonic_ns()
        at = schedule.record(f, value, now)
        pool.record("info", NEMESIS, f, value=value, time=now)
        kind, _, fault = f.partition("-")
        what = (f"{kind} {fault}: {describe(fault, value)}" if fault
                else f"{f}: every fault removed")
        progress.line(f"{at:+6.1f} s  {what}")
    return record


def _say(progress: _Progress, t0: int, what: str) -> None:
    progress.line(f"{(time.monotonic_ns() - t0) / 1e9:+6.1f} s  {what}")


def _end_of_clients(deadline: int | None, ended: int) -> str:
    """How the main phase ended: at the pool's deadline, or early (a client
    worker died), which the person watching must know."""
    if deadline is not None and ended < deadline - 1e9:
        return (f"clients stopped {(deadline - ended) / 1e9:.1f} s before the time limit "
                "(a client worker exited); healing")
    return "time limit reached; healing"


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


def _mark_setup_failed(directory: Path, why: str) -> Path:
    """A run that never started leaves nothing that looks like a result: its
    empty history goes, ``setup-failed.txt`` says why, and the folder is
    renamed ``STAMP-setup-failed`` (test.json and the node logs stay)."""
    (directory / "history.jsonl").unlink(missing_ok=True)
    (directory / "setup-failed.txt").write_text(why + "\n")
    failed = directory.with_name(f"{directory.name}-setup-failed")
    try:
        directory.rename(failed)
    except OSError as e:
        log.warning("could not rename %s: %s", directory, e)
        return directory
    return failed
