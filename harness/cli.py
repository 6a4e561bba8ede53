"""The ``faultline`` command.

Exit codes follow Jepsen: 0 valid, 1 invalid, 2 unknown.  Input that cannot
be read exits 65 (EX_DATAERR) with one line naming the file and line; a bad
command line exits 64 (EX_USAGE) naming the flag and its allowed values.
"""

from __future__ import annotations

import argparse
import difflib
import os
import signal
import sys
import traceback
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Sequence

from checkers import importers
from checkers.check import check_histories
from checkers.history import History, HistoryError, Operation
from checkers.models import MODELS, get_model
from checkers.report import key_lines, summary_line
from checkers.result import EXIT_CODES, INVALID, UNKNOWN, VALID, CheckResult, combine
from checkers.wgl import Budget
from harness.spec import (BACKENDS, BUG_FLAGS, LEASE_ANCHORS, LEASE_CLOCKS, LEASE_MARGIN_MS,
                          READ_PATHS, STORE_DEFAULTS, WORKLOADS, TestSpec)
from nemesis.faults import FAULTS
from nemesis.nemesis import parse_fault

EXIT = EXIT_CODES
EX_USAGE, EX_DATAERR = 64, 65


class _Parser(argparse.ArgumentParser):
    """argparse with faultline's exit code for a bad command line (argparse's own
    2 would read as "unknown") and a "did you mean" for a misspelled flag or choice."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201
        # a subcommand's parser sees its unknown flags here, with its own flags at hand
        ns, extras = super().parse_known_args(args, namespace)
        flags = [a.split("=", 1)[0] for a in extras if a.startswith("-") and a != "-"]
        if flags:
            known = [o for action in self._actions for o in action.option_strings]
            self.error(f"unrecognized argument {flags[0]}{_did_you_mean(flags[0], known)}")
        return ns, extras

    def _check_value(self, action: argparse.Action, value: object) -> None:
        # argparse's own check of a value against ``choices``, worded with a suggestion
        if action.choices is not None and value not in action.choices:
            allowed = [str(c) for c in action.choices]
            raise argparse.ArgumentError(
                action, f"invalid choice: {value!r} (choose from {', '.join(allowed)})"
                f"{_did_you_mean(str(value), allowed)}")


def _did_you_mean(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return v


def _count(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


FAULT_NAMES = tuple(FAULTS)


def _milliseconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected milliseconds, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return v


def _nemeses(text: str) -> list[str]:
    """The ``NAME[:WINDOW[/QUIET]]`` entries as typed (the spec keeps them so),
    each checked here for a message with a suggestion."""
    entries = [n.strip() for n in text.split(",")]
    if "" in entries:
        raise argparse.ArgumentTypeError(
            f"empty fault name in {text!r}: names go between single commas, "
            f"from {', '.join(FAULT_NAMES)}")
    for entry in entries:
        try:
            name = parse_fault(entry).name
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if name not in FAULT_NAMES:
            raise argparse.ArgumentTypeError(
                f"unknown fault {name!r}{_did_you_mean(name, FAULT_NAMES)} (choose from "
                f"{', '.join(FAULT_NAMES)})")
    return entries


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="faultline", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_check(sub)
    _add_run(sub)
    an = sub.add_parser("analyse", help="re-check a saved run's results folder offline")
    an.add_argument("dir", metavar="DIR", help="a results folder (e.g. results/latest), or a "
                    "bundle of one (faultline export), unpacked beside it first")
    _add_max_staleness(an, "the run's, from its test.json")
    an.set_defaults(func=cmd_analyse)
    ex = sub.add_parser("export", help="pack a run's evidence into one bug-report bundle",
                        description="Write a run folder's test, schedule, history, results, "
                        "witness, plots, node logs and configurations, with the faultline "
                        "version and git commit and a checksum per file, as one .tar.gz; "
                        "check and analyse take the bundle as they take the folder.")
    ex.add_argument("dir", metavar="RUN_DIR", help="a results folder (e.g. results/latest)")
    ex.add_argument("-o", "--output", metavar="FILE",
                    help="the bundle (default: <test>-<stamp>.tar.gz here)")
    ex.set_defaults(func=cmd_export)
    _add_cluster(sub)
    _add_docker(sub)
    _add_serve(sub)
    _add_campaign(sub)
    _add_compare(sub)
    _add_replay(sub)
    _add_shrink(sub)
    # listed for --help only: main() hands everything after `node` to the node's own parser
    sub.add_parser("node", add_help=False,
                   help="run one store node in the foreground (faultline node --help)")
    return p


def _add_check(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("check", help="check saved histories for linearizability",
                       description="Check histories (files, or every history under "
                       "a folder) and print a verdict per history and per key.")
    c.add_argument("paths", nargs="+", metavar="PATH")
    c.add_argument("--model", choices=sorted(MODELS),
                   help="the sequential model (default: implied by the format and ops)")
    c.add_argument("--format", choices=importers.FORMATS,
                   help="the history format (default: detected from the content)")
    c.add_argument("--time-limit", type=_positive, metavar="S",
                   help="seconds per key before the verdict is unknown (default: none)")
    c.add_argument("--max-states", type=_count, default=Budget().max_states, metavar="N",
                   help="configurations the search may remember per key "
                   "(default: %(default)s)")
    c.add_argument("--jobs", type=_count, metavar="N",
                   help="worker processes (default: one per core)")
    c.add_argument("--html", metavar="OUT",
                   help="write an HTML timeline of the results (default: none)")
    c.add_argument("--workload", choices=("set", "bank"),
                   help="judge with this workload's checker (default options) instead of "
                   "linearizability: for set and bank histories (default: none)")
    c.set_defaults(func=cmd_check)


def _add_shrink(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("shrink", help="shrink a failing history to a small one that fails "
                       "the same way",
                       description="Remove whole ops from a failing history (delta "
                       "debugging, with its checker as the test) until what is left still "
                       "shows the same anomaly, and no other, and no smaller part does; "
                       "write it as a history file with its witness as HTML beside it, and "
                       "print the witness. Exit 1 when shrunk, 0 when the history is valid "
                       "(nothing to shrink), 2 when no sub-history keeps the anomaly the same "
                       "way (nothing written).")
    s.add_argument("path", metavar="RUN_DIR|HISTORY",
                   help="a results folder (its history, judged by its workload's checker "
                   "with the run's settings) or a history file (judged as faultline check "
                   "judges it)")
    s.add_argument("--workload", choices=WORKLOADS,
                   help="the checker: register (linearizability), set or bank, a history "
                   "file's with the workload's default options (default: the run's; "
                   "register for a history file)")
    s.add_argument("--model", choices=sorted(MODELS),
                   help="a register history file's model (default: implied by its format "
                   "and ops)")
    s.add_argument("-o", "--output", metavar="PATH",
                   help="the shrunk history, its timeline beside it as .html (default: "
                   "shrunk.jsonl in RUN_DIR, or beside HISTORY)")
    s.set_defaults(func=cmd_shrink)


def _add_run(sub: argparse._SubParsersAction) -> None:
    """Every flag defaults to None, meaning "not given": the spec file's value,
    else the spec's default, which the help text names."""
    r = sub.add_parser("run", help="run a fault test: cluster, clients, nemesis, check, report",
                       description="Start a cluster, drive DynamoDB traffic through it while "
                       "a nemesis injects faults, heal, check the history and store a "
                       "results folder.")
    _run_options(r)
    r.set_defaults(func=cmd_run)


def _run_options(r: argparse.ArgumentParser) -> None:
    """The flags of a test spec, for `run` and for `compare`; each defaults to
    None, meaning "not given"."""
    d = TestSpec()
    store = STORE_DEFAULTS
    r.add_argument("--spec", metavar="FILE",
                   help="the test as a TOML file, or a run's test.json (the same test again, "
                   "its seed included); flags given too override it (default: none)")
    r.add_argument("--workload", choices=WORKLOADS,
                   help=f"what the clients do (default: {d.workload})")
    r.add_argument("--nodes", type=_count, metavar="N",
                   help=f"store nodes; faults that leave a majority serving (partitions, "
                   f"kill, pause, their -leader and -majority forms) need 3 or more "
                   f"(default: {d.nodes})")
    r.add_argument("--groups", type=_count, metavar="N",
                   help=f"Raft groups of the reference store, each owning a hash range "
                   f"of the partition keys, with a leader and a lease of its own; group 0 "
                   f"also holds the tables (default: {d.groups}, unsharded)")
    r.add_argument("--nemesis", type=_nemeses, metavar="F[:W[/Q]],...",
                   help=f"faults, comma-separated, from {', '.join(FAULT_NAMES)}; each may "
                   "carry its own timing, NAME:W[/Q]: W-second fault windows, Q seconds "
                   "apart (else --nemesis-interval, --nemesis-quiet), e.g. "
                   "partition-leader:12/3,clock-bump:12/3,leader-churn:2/1. Faults with "
                   "the same timing start together in listed order and stop together; "
                   "each timing runs on its own schedule (default: none)")
    r.add_argument("--nemesis-interval", type=_positive, metavar="S",
                   help=f"seconds each fault window lasts, for faults without their own "
                   f"(default: {d.nemesis_interval:g})")
    r.add_argument("--nemesis-quiet", type=_positive, metavar="S",
                   help=f"seconds between fault windows, for faults without their own "
                   f"(default: {d.nemesis_quiet:g})")
    r.add_argument("--time-limit", type=_positive, metavar="S",
                   help=f"seconds of client traffic (default: {d.time_limit:g})")
    r.add_argument("--concurrency", type=_count, metavar="N",
                   help=f"client processes, bound to the nodes round-robin "
                   f"(default: {d.concurrency})")
    r.add_argument("--rate", type=float, metavar="OPS",
                   help=f"total ops/s, 0 for as fast as they go (default: {d.rate:g})")
    r.add_argument("--seed", type=int, metavar="N",
                   help="seed of the op and fault schedules (default: a random one, printed)")
    r.add_argument("--read-path", choices=READ_PATHS,
                   help=f"read path of every read family (default: the store's, "
                   f"{store['read_path']})")
    r.add_argument("--lease-ms", type=int, metavar="MS",
                   help=f"lease duration, positive (default: the store's, election timeout "
                   f"- {LEASE_MARGIN_MS})")
    r.add_argument("--lease-clock", choices=LEASE_CLOCKS,
                   help=f"the clock leases are measured on (default: the store's, "
                   f"{store['lease_clock']})")
    r.add_argument("--lease-anchor", choices=LEASE_ANCHORS,
                   help=f"a lease starts when its heartbeat was sent or when it was "
                   f"answered (default: the store's, {store['lease_anchor']})")
    r.add_argument("--drift-bound", type=float, metavar="F",
                   help=f"assumed clock drift in [0, 1): leases are shortened by it "
                   f"(default: the store's, {store['drift_bound']:g})")
    r.add_argument("--bug", action="append", choices=BUG_FLAGS, dest="bugs", metavar="FLAG",
                   help=f"switch on a bug flag of the reference store, repeat for more: "
                   f"{', '.join(BUG_FLAGS)} (default: none)")
    r.add_argument("--backend", choices=BACKENDS,
                   help=f"where the nodes run (default: {d.backend})")
    r.add_argument("--nodes-file", metavar="FILE",
                   help="ssh backend: the nodes (host, port, user, key per node), TOML or "
                   "JSON (default: none; required with --backend ssh)")
    r.add_argument("--known-hosts", metavar="FILE",
                   help="ssh backend: host keys to check against (default: "
                   "~/.ssh/known_hosts)")
    r.add_argument("--insecure-host-keys", action="store_true", default=None,
                   help="ssh backend: accept any host key, unchecked, with a warning "
                   "(default: off)")
    r.add_argument("--results-dir", metavar="DIR",
                   help=f"where run folders go (default: {d.results_dir})")
    r.add_argument("--name",
                   help="test name, the run folders' parent (default: workload, faults, "
                   "and the store settings and bug flags that differ from the store's "
                   "defaults, e.g. register-partition-leader-read_index)")
    r.add_argument("--election-timeout-ms", type=int, metavar="MS",
                   help=f"Raft election timeout (default: {d.election_timeout_ms})")
    r.add_argument("--heartbeat-ms", type=int, metavar="MS",
                   help=f"Raft heartbeat interval, below the election timeout "
                   f"(default: {d.heartbeat_ms})")
    r.add_argument("--quiet-period", type=float, metavar="S",
                   help=f"seconds between healing and the final reads "
                   f"(default: {d.quiet_period:g})")
    r.add_argument("--client-timeout", type=_positive, metavar="S",
                   help=f"a client's read timeout; past it the op is info "
                   f"(default: {d.client_timeout:g})")
    _add_max_staleness(r, "none: every stale read is an anomaly")


def _add_max_staleness(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--max-staleness", type=_milliseconds, metavar="MS",
                   dest="max_staleness_ms",
                   help="judge reads by bounded staleness: a read that missed writes "
                   "acknowledged at most MS before it began is not an anomaly (register: "
                   "Δ-atomicity; set: stale reads within the bound) "
                   f"(default: {default})")


def _add_cluster(sub: argparse._SubParsersAction) -> None:
    cl = sub.add_parser("cluster", help="start, inspect and stop local store clusters")
    csub = cl.add_subparsers(dest="action", required=True, parser_class=_Parser)
    up = csub.add_parser("up", help="start N local nodes in the background")
    up.add_argument("--nodes", type=_count, default=3, metavar="N",
                    help="nodes (default: %(default)s)")
    up.add_argument("--groups", type=_count, default=1, metavar="N",
                    help="Raft groups, each owning a hash range of the partition keys "
                    "(default: %(default)s, unsharded)")
    up.add_argument("--dir", required=True, help="cluster directory (cluster.json, logs, data)")
    up.add_argument("--config", metavar="TOML",
                    help="node configuration file (default: the store's defaults)")
    up.add_argument("--bug", action="append", default=[], choices=BUG_FLAGS, metavar="FLAG",
                    help=f"switch on a bug flag of the reference store, repeat for more: "
                    f"{', '.join(BUG_FLAGS)} (default: none)")
    up.add_argument("--seed", type=int, help="seed for the nodes' election timers "
                    "(default: random)")
    up.set_defaults(func=cmd_cluster_up)
    for name, func, helptext in (("status", cmd_cluster_status, "show each node's status"),
                                 ("down", cmd_cluster_down, "stop the cluster's nodes")):
        sp = csub.add_parser(name, help=helptext)
        sp.add_argument("--dir", required=True, help="cluster directory")
        sp.set_defaults(func=func)


def _add_docker(sub: argparse._SubParsersAction) -> None:
    dk = sub.add_parser("docker", help="the docker backend: node image, leftovers",
                        description="Build the node image of the docker backend (needs a "
                        "Docker engine; where no registry answers, also debootstrap), or "
                        "remove what docker runs left behind.")
    dsub = dk.add_subparsers(dest="action", required=True, parser_class=_Parser)
    db = dsub.add_parser("build", help="build the node image, or reuse it if its inputs "
                         "are unchanged; prints the tag and the time of each step")
    db.add_argument("--base", metavar="IMAGE",
                    help="base image, pulled if the engine lacks it (default: "
                    "python:3.11-slim, from the engine or pulled, else a debootstrapped "
                    "Debian)")
    db.add_argument("--rebuild", action="store_true",
                    help="make the wheelhouse and the image again even if unchanged")
    db.set_defaults(func=cmd_docker_build)
    dc = dsub.add_parser("cleanup", help="remove the containers and networks of docker "
                         "runs (those labelled faultline.run)")
    dc.set_defaults(func=cmd_docker_cleanup)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port, 0 to 65535, got {text!r}")
    return int(text)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="browse the results folder in a web browser",
                       description="Serve a local web page over the results folder: runs "
                       "listed newest first and filtered, each with its summary, witness, "
                       "plots, timeline, schedule and node logs, and as one archive.")
    s.add_argument("--results-dir", default="results", metavar="DIR",
                   help="the results folder (default: %(default)s)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but loopback shows the results "
                   "to the network (default: %(default)s)")
    s.add_argument("--port", type=_port, default=8080, metavar="N",
                   help="port, 0 for any free one (default: %(default)s)")
    s.set_defaults(func=cmd_serve)


def _add_campaign(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("campaign", help="run a matrix of fault tests, each cell with what it "
                       "should find; summary.csv, junit.xml and report.html",
                       description="Run every cell of a campaign file at every seed, each an "
                       "ordinary faultline run, and report each cell against its expectation "
                       "(valid, invalid or any) with a 95%% Wilson interval. Exit 0 when "
                       "every run met it, 1 when one did not, 2 when the budget left runs "
                       "for --resume, 130 when interrupted.")
    c.add_argument("file", metavar="FILE.toml", help="the campaign (campaigns/*.toml)")
    c.add_argument("--resume", nargs="?", const="latest", metavar="DIR",
                   help="continue a campaign folder: its unfinished and crashed runs "
                   "(default DIR: the campaign's newest folder)")
    c.add_argument("--results-dir", default="results", metavar="DIR",
                   help="where results/campaigns/<name>/<stamp>/ goes (default: %(default)s)")
    c.add_argument("--jobs", type=_count, metavar="N",
                   help="runs at once, each a whole cluster (default: the file's, else 1)")
    c.add_argument("--budget-minutes", type=_positive, metavar="M",
                   help="start no run past this (default: the file's, else none)")
    c.add_argument("--dry-run", action="store_true",
                   help="list the cells and the runs, run nothing")
    c.set_defaults(func=cmd_campaign)
    p = sub.add_parser("prune", help="delete old campaign runs, keeping the newest and "
                       "every unexpected one")
    p.add_argument("--results-dir", default="results", metavar="DIR",
                   help="the results folder (default: %(default)s)")
    p.add_argument("--keep", type=_count, default=7, metavar="N",
                   help="campaign folders kept whole, per campaign, newest first "
                   "(default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    p.set_defaults(func=cmd_prune)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser(
        "compare", help="run configurations side by side on the same seeds and faults",
        description="Run the same test under each configuration, on the same seeds (so the "
        "same workload and fault schedule), and print one table and write one figure side "
        "by side: anomalies, stale reads, latency, throughput, lease hit rate, and how long "
        "reads and writes went unanswered in a fault window. Every run flag sets what all "
        "configurations share.")
    c.add_argument("--vary", action="append", default=[], metavar="FLAG=V1,V2",
                   help="a run flag and its values, one configuration each, e.g. "
                   "read-path=lease,read_index,local; faults of one value joined by '+' "
                   "(nemesis=partition-leader,partition-leader+clock-drift), no bug flag "
                   "as 'none' (bug=none,long-lease); repeat for every combination")
    c.add_argument("--config", action="append", default=[], metavar="TOML",
                   help="a configuration as a spec file (faultline run --spec), over the "
                   "flags given; repeat for more")
    c.add_argument("--seeds", type=_count, default=1, metavar="N",
                   help="runs per configuration: seeds --seed .. --seed+N-1 (default: "
                   "%(default)s)")
    c.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    c.add_argument("--figure", metavar="PNG",
                   help="also write the figure here (it is always in the results folder)")
    _run_options(c)
    c.set_defaults(func=cmd_compare)


def _varied(flag_values: str) -> tuple[str, list[tuple[str, Any]]]:
    """``--vary FLAG=V1,V2``: each value checked and typed as the run flag takes it."""
    from harness.compare import field_of

    flag, sep, values = flag_values.partition("=")
    flag = flag.strip().removeprefix("--")
    probe = _Parser(prog=f"faultline compare --vary {flag}", exit_on_error=False)
    _run_options(probe)
    known = sorted(o[2:] for a in probe._actions for o in a.option_strings
                   if o.startswith("--") and o not in ("--help", "--spec", "--seed", "--name",
                                                      "--results-dir"))
    if not sep or not values or flag not in known:
        raise argparse.ArgumentTypeError(
            f"--vary {flag_values!r}: expected FLAG=V1,V2 with FLAG one of {', '.join(known)}"
            + (_did_you_mean(flag, known) if sep else ""))
    out = []
    for text in values.split(","):
        if flag == "bug":
            argv = [a for b in text.split("+") if b != "none" for a in ("--bug", b)]
        else:
            argv = [f"--{flag}", text.replace("+", ",") if flag == "nemesis" else text]
        try:
            value = getattr(probe.parse_args(argv), field_of(flag))
        except argparse.ArgumentError as e:
            raise argparse.ArgumentTypeError(f"--vary {flag}={text}: {e}") from None
        out.append((text, value if value is not None else []))
    return flag, out


def cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.campaign.command import INTERRUPTED, execute
    from harness.campaign.runner import new_folder
    from harness.compare import (comparison_campaign, configurations, format_comparison,
                                 plot_comparison, sides)
    from harness.spec import SpecError, read_spec_file

    try:
        varies = [_varied(v) for v in args.vary]
    except argparse.ArgumentTypeError as e:
        print(f"faultline compare: {e}", file=sys.stderr)
        return EX_USAGE
    base = _given(args)
    try:
        if args.spec:
            base = {**read_spec_file(args.spec), **base}
        files = [(Path(path).stem, read_spec_file(path)) for path in args.config]
        configs = configurations(base, varies, files)
        for c in configs:
            TestSpec(**c.spec)
    except (SpecError, TypeError) as e:
        print(f"faultline compare: {e}", file=sys.stderr)
        return EX_USAGE
    if len(configs) < 2:
        print("faultline compare: needs two configurations or more: give --vary "
              "FLAG=V1,V2 or --config twice", file=sys.stderr)
        return EX_USAGE
    first = args.seed if args.seed is not None else TestSpec().resolve_seed()
    seeds = tuple(range(first, first + args.seeds))
    keys = "+".join(dict.fromkeys(flag for flag, _ in varies)) or "configs"
    try:
        campaign = comparison_campaign(f"compare-{keys}", configs, seeds,
                                       "faultline compare " + " ".join(sys.argv[2:]))
    except ValueError as e:
        print(f"faultline compare: {e}", file=sys.stderr)
        return EX_USAGE
    folder = new_folder(Path(args.results_dir or TestSpec().results_dir), campaign)
    print(f"seeds {seeds[0]}..{seeds[-1]}, {len(configs)} configurations", flush=True)
    ended = execute(campaign, folder, campaign.description + "\n", jobs=1, budget_s=None,
                    out=sys.stdout, live=None, resumed=False)
    rows = sides(campaign, ended.records)
    figure = folder / "compare.png"
    plot_comparison(rows, figure, f"{campaign.description} (seeds {seeds[0]}..{seeds[-1]})")
    table = format_comparison(rows, args.markdown)
    (folder / "compare.txt").write_text(format_comparison(rows) + "\n")
    print(table)
    if args.figure:
        import shutil
        shutil.copyfile(figure, args.figure)
    print(f"{ended.state}; figure {args.figure or figure}; runs in {folder}")
    if ended.interrupted:
        return INTERRUPTED
    return 1 if any(r.verdict == "crashed" for r in ended.records) else 0


def _add_replay(sub: argparse._SubParsersAction) -> None:
    from nemesis.replay import TARGETS

    r = sub.add_parser(
        "replay", help="run a saved test again with its recorded fault schedule",
        description="Start a fresh cluster with a saved run's configuration and seed, play "
        "its recorded faults (schedule.jsonl) at the same offsets, and say whether the "
        "original anomaly came back: the same kind, on the same kind of op, in the same "
        "fault window. Exit 0 when a replay reproduced it, 1 when none did.")
    r.add_argument("dir", metavar="RUN_DIR|BUNDLE",
                   help="a results folder, or a bundle of one (faultline export)")
    r.add_argument("--targets", choices=TARGETS, default="recorded",
                   help="recorded: the same nodes; role: a fault aimed at the leader is "
                   "aimed at whoever leads when it starts (default: %(default)s)")
    r.add_argument("--max", type=_count, default=1, metavar="N",
                   help="replays to run (default: %(default)s)")
    r.add_argument("--until-reproduced", action="store_true",
                   help="stop at the first replay that reproduces the anomaly")
    r.add_argument("--results-dir", metavar="DIR",
                   help="where the replays go, as <test>-replay/<stamp> (default: the run's)")
    r.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    import tempfile
    from dataclasses import replace

    from harness.analysis import saved_spec
    from harness.bundle import BundleError, is_bundle, open_bundle
    from harness.reproduce import compare, signatures
    from harness.runner import CRASHED, SetupFailed, run_test
    from nemesis.replay import Replay, ScheduleError, load_schedule

    with tempfile.TemporaryDirectory(prefix="faultline-replay-") as scratch:
        try:
            run = (open_bundle(Path(args.dir), Path(scratch)) if is_bundle(args.dir)
                   else Path(args.dir).resolve())
            spec = saved_spec(run)
            steps = load_schedule(run / "schedule.jsonl")
            original = signatures(run)
        except (BundleError, ScheduleError, OSError, ValueError, KeyError, TypeError,
                HistoryError) as e:
            print(f"faultline replay: {args.dir}: {e}", file=sys.stderr)
            return EX_DATAERR
        if not original:
            print(f"faultline replay: {args.dir}: the run found no anomaly: nothing to "
                  "reproduce", file=sys.stderr)
            return EX_DATAERR
    from harness.campaign.spec import safe_name

    # a bundle's own results folder is another machine's: replays go to ours
    home = spec.results_dir if not is_bundle(args.dir) else TestSpec().results_dir
    spec = replace(spec, results_dir=args.results_dir or home,
                   name=f"{safe_name(spec.test_name)}-replay")
    print(f"replaying {args.dir} (seed {spec.seed}, {sum(s.start for s in steps)} fault "
          f"windows, targets {args.targets}); it found: "
          + "; ".join(sorted(map(str, original))), flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    found, ran = 0, 0
    for attempt in range(1, args.max + 1):
        try:
            result = run_test(replace(spec), replay=Replay(steps, args.targets, str(args.dir)))
        except KeyboardInterrupt:
            print("faultline replay: interrupted; faults healed, nodes stopped",
                  file=sys.stderr)
            return CRASHED
        except (SetupFailed, OSError) as e:
            print(f"replay {attempt}: set up failed or crashed: {e}", flush=True)
            continue
        ran += 1
        match = compare(original, signatures(result.directory))
        found += match.reproduced
        print(f"replay {attempt}/{args.max}: {result.verdict.upper()}, {match.text} "
              f"({result.directory})", flush=True)
        if match.reproduced and args.until_reproduced:
            break
    print(f"reproduced in {found} of {ran} replays")
    return 0 if found else 1


def cmd_campaign(args: argparse.Namespace) -> int:
    from harness.campaign.command import campaign_main

    return campaign_main(args.file, args.results_dir, args.resume, args.jobs,
                         args.budget_minutes, args.dry_run)


def cmd_prune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.campaign.prune import prune

    results = Path(args.results_dir)
    if not results.is_dir():
        print(f"faultline prune: --results-dir: no such folder: {results}", file=sys.stderr)
        return EX_DATAERR
    freed = prune(results, args.keep, dry_run=args.dry_run, log=print)
    print(f"{'would free' if args.dry_run else 'freed'} {freed / 2**20:.1f} MiB")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.serve import serve
    from harness.serve.app import is_loopback

    results = Path(args.results_dir)
    if not results.is_dir():
        print(f"faultline serve: --results-dir: no such folder: {results} (faultline run "
              "stores runs there; name another with --results-dir)", file=sys.stderr)
        return EX_DATAERR
    if not is_loopback(args.host):
        print(f"faultline serve: warning: --host {args.host} is not loopback: the results "
              "become visible to the network, unauthenticated", file=sys.stderr)

    def ready(url: str) -> None:
        print(f"serving {results.resolve()} at {url} (Ctrl-C stops)", flush=True)

    try:
        serve(results, args.host, args.port, ready)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    except OSError as e:
        print(f"faultline serve: cannot listen on {args.host}:{args.port}: "
              f"{e.strerror or e}", file=sys.stderr)
        return 1
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from harness.spec import SpecError, load_spec

    given = _given(args)
    try:
        spec = load_spec(args.spec, **given) if args.spec else TestSpec(**given)
    except SpecError as e:
        print(f"faultline run: {e}", file=sys.stderr)
        return EX_USAGE
    from harness.runner import CRASHED, SetupFailed, run_test  # after the spec: a bad one is refused at once

    # SIGTERM (a CI timeout, `kill`) tears down like Ctrl-C: heal, keep, stop
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_test(spec)
    except KeyboardInterrupt:
        print(f"faultline run: interrupted (seed {spec.seed}); faults healed, nodes "
              "stopped, history kept", file=sys.stderr)
        return CRASHED
    except SetupFailed as e:  # the run folder has said why and kept the traceback
        print(f"faultline run: set up failed: {e} (seed {spec.seed})", file=sys.stderr)
        return CRASHED
    except Exception as e:  # noqa: BLE001 - the test itself crashed: say why, exit 255
        print(f"faultline run: {_why_it_crashed(e)} (seed {spec.seed})", file=sys.stderr)
        return CRASHED
    print((result.directory / "summary.txt").read_text(), end="")
    print(f"verdict: {result.verdict.upper()}  (seed {result.seed}; results in "
          f"{result.directory})")
    return result.exit_code


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The spec fields given on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(TestSpec)
            if getattr(args, f.name, None) is not None}


def _why_it_crashed(e: Exception) -> str:
    """Why a run crashed after it started, in one line.  What the machine,
    the network or the nodes did to it (a :class:`BackendError`: an
    unreachable host; an ``OSError`` that says what: no leader within 30 s
    after healing) is its message alone.  Anything else is the harness's own
    bug, and its traceback is printed."""
    from harness.remote import BackendError

    if isinstance(e, BackendError):
        return str(e)
    if isinstance(e, OSError) and str(e):
        return f"{type(e).__name__}: {e}"
    traceback.print_exception(e)
    return f"the test crashed: {type(e).__name__}: {e}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.bundle import BundleError, export

    run = Path(args.dir).resolve()
    out = Path(args.output or f"{run.parent.name}-{run.name}.tar.gz")
    try:
        files = export(run, out)
    except (BundleError, OSError) as e:
        print(f"faultline export: {e}", file=sys.stderr)
        return EX_DATAERR
    print(f"{out}: {len(files)} files of {run}, {out.stat().st_size / 2**20:.1f} MiB")
    return 0


def cmd_analyse(args: argparse.Namespace) -> int:
    """Check a saved run again: the same checkers, plots and timeline, no cluster."""
    from dataclasses import replace
    from pathlib import Path

    from harness.analysis import analyse, saved_spec, write_results
    from harness.bundle import BundleError, is_bundle, open_bundle
    from harness.folders import claim_folder

    directory = Path(args.dir).resolve()
    if is_bundle(directory):
        # beside any earlier unpack of it (bug-2, bug-3...), never into it
        into = claim_folder(directory.parent / directory.name.split(".")[0])
        try:
            directory = open_bundle(directory, into)
        except BundleError as e:
            print(f"faultline analyse: {e}", file=sys.stderr)
            try:
                into.rmdir()  # claimed but left empty: an unreadable bundle
            except OSError:
                pass
            return EX_DATAERR
        print(f"unpacked into {directory}")
    try:
        spec = saved_spec(directory)
        if args.max_staleness_ms is not None:  # the flag overrides the run's
            spec = replace(spec, max_staleness_ms=args.max_staleness_ms)
        verdict, results = analyse(spec, directory)
        write_results(directory, verdict, spec.seed, results)
    except (OSError, ValueError, KeyError, HistoryError) as e:
        print(f"faultline analyse: {directory}: {e}", file=sys.stderr)
        return EX_DATAERR
    print((directory / "summary.txt").read_text(), end="")
    print(f"verdict: {verdict.upper()}")
    return EXIT[verdict]


def cmd_cluster_up(args: argparse.Namespace) -> int:
    import tomllib

    from harness.cluster import LocalCluster

    config: dict = {}
    if args.config:
        try:
            with open(args.config, "rb") as fh:
                config = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as e:
            print(f"faultline cluster up: --config: {e}", file=sys.stderr)
            return EX_DATAERR
    if args.bug:
        config["bugs"] = sorted(set(config.get("bugs", [])) | set(args.bug))
    if args.groups > 1:
        config["shards"] = {**config.get("shards", {}), "groups": args.groups}
    cluster = LocalCluster(args.dir, args.nodes, config)
    try:
        cluster.start(seed=args.seed)
    except (RuntimeError, TimeoutError) as e:
        print(f"faultline cluster up: {e}", file=sys.stderr)
        return 1
    for n in cluster.nodes:
        print(f"{n.id}  api http://{n.api}  admin http://{n.admin}  pid {n.pid}")
    print(f"leader {cluster.leader()}; cluster.json in {cluster.dir}")
    return 0


def _cluster_info(args: argparse.Namespace):  # noqa: ANN202 - ClusterInfo | None
    from harness.cluster import ClusterInfo

    try:
        return ClusterInfo.load(args.dir)
    except FileNotFoundError as e:
        print(f"faultline cluster {args.action}: {e}", file=sys.stderr)
        return None


def cmd_cluster_status(args: argparse.Namespace) -> int:
    from harness.admin import statuses

    info = _cluster_info(args)
    if info is None:
        return EX_DATAERR
    found = statuses(info.nodes, timeout=2.0)
    for n in info.nodes:
        st = found[n.id]
        if st is None:
            print(f"{n.id}  down (pid {n.pid})")
            continue
        groups = st.get("groups") or [st]
        for g in groups:
            lease = g["lease"]
            where = f"group {g['group']}  " if len(groups) > 1 else ""
            print(f"{n.id}  {where}{g['role']:<13} term {g['term']:<4} leader {g['leader']}  "
                  f"commit {g['commit']} applied {g['applied']}  lease "
                  f"{'valid' if lease['valid'] else '-'} hits {lease['hits']} "
                  f"misses {lease['misses']}")
    return 0


def cmd_cluster_down(args: argparse.Namespace) -> int:
    from harness.cluster import stop_pids

    info = _cluster_info(args)
    if info is None:
        return EX_DATAERR
    stop_pids([n.pid for n in info.nodes if n.pid])
    for n in info.nodes:
        n.pid = None
    info.save()
    print(f"stopped {len(info.nodes)} nodes of {info.dir}")
    return 0


def cmd_docker_build(args: argparse.Namespace) -> int:
    from harness.docker_image import DockerImageError, ensure_image

    try:
        tag = ensure_image(args.base, rebuild=args.rebuild, log=print)
    except DockerImageError as e:
        print(f"faultline docker build: {e}", file=sys.stderr)
        return 1
    print(tag)
    return 0


def cmd_docker_cleanup(args: argparse.Namespace) -> int:
    try:
        from harness.docker_backend import cleanup
    except ImportError as e:
        print(f"faultline docker cleanup: the docker backend is missing: {e}", file=sys.stderr)
        return 1
    try:
        removed = cleanup()
    except Exception as e:  # noqa: BLE001 - engine not answering, API errors: say which
        print(f"faultline docker cleanup: {e}", file=sys.stderr)
        return 1
    for name in removed:
        print(f"removed {name}")
    print(f"{len(removed)} removed" if removed else "nothing to remove")
    return 0


def cmd_node(argv: list[str]) -> int:
    """The store node, every flag its own; a bad one exits 64 like faultline's."""
    from system.node import main as node_main

    try:
        return node_main(argv)
    except SystemExit as e:
        if e.code == 2:  # argparse's exit code for a bad command line
            return EX_USAGE
        raise


def cmd_check(args: argparse.Namespace) -> int:
    import tempfile

    from harness.bundle import BundleError, is_bundle, open_bundle

    with tempfile.TemporaryDirectory(prefix="faultline-check-") as scratch:
        shown: dict[str, str] = {}  # a bundle is checked as its history, named after it
        try:
            for i, p in enumerate(args.paths):
                if is_bundle(p):
                    history = str(open_bundle(Path(p), Path(scratch) / str(i)) / "history.jsonl")
                    shown[history] = f"{p}:history.jsonl"
            paths = importers.discover([next((h for h, b in shown.items()
                                              if b.startswith(f"{p}:")), p)
                                        for p in args.paths])
            histories = [importers.load(p, args.format) for p in paths]
            for h in histories:
                h.path = shown.get(str(h.path), h.path)
        except (HistoryError, BundleError, FileNotFoundError, IsADirectoryError,
                UnicodeDecodeError) as e:
            print(f"faultline check: {e}", file=sys.stderr)
            return EX_DATAERR
    return _check(args, histories)


def _check(args: argparse.Namespace, histories: list[History]) -> int:
    if not histories:
        print(f"faultline check: no history found under {' '.join(args.paths)}",
              file=sys.stderr)
        return EX_DATAERR
    if args.workload:
        return _check_workload(args.workload, histories)
    budget = Budget(time_limit=args.time_limit, max_states=args.max_states)
    try:
        results = check_histories(histories, model=args.model, budget=budget,
                                  jobs=args.jobs)
    except (HistoryError, ValueError) as e:
        print(f"faultline check: {e}", file=sys.stderr)
        return EX_DATAERR
    for r in results:
        model = get_model(r.model)
        print(summary_line(r, r.path or "-"))
        for line in key_lines(r, model.describe_op):
            print(line)
    verdict = combine(r.verdict for r in results)
    if len(results) > 1:
        counts = {v: sum(r.verdict == v for r in results) for v in (VALID, INVALID, UNKNOWN)}
        print(f"{len(results)} histories: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    if args.html:
        from checkers.timeline import write_html
        write_html(args.html, results, title="faultline check",
                   describe=_describer(results))
        print(f"timeline: {args.html}")
    return EXIT[verdict]


def _check_workload(workload: str, histories: list[History]) -> int:
    """Each history judged by ``workload``'s checker: its summary lines."""
    from harness.shrink_source import workload_check

    verdicts = []
    for h in histories:
        ops = h.operations()
        outcome = workload_check(workload, h)(ops, h.path)
        verdicts.append(outcome.verdict)
        print(f"{h.path or '-'}  {outcome.verdict.upper()}  {len(ops)} ops  "
              f"(workload {workload})")
        for line in outcome.summary:
            print(line)
    return EXIT[combine(verdicts)]


def _describer(results: Sequence[CheckResult]) -> Callable[[Operation], str]:
    """Describe each witness op with the model of its own history."""
    by_op: dict[int, Callable[[Operation], str]] = {}
    for r in results:
        describe = get_model(r.model).describe_op
        for k in r.failures:
            if k.witness:
                w = k.witness
                for op in (*w.window, *w.linearized, w.failing_op):
                    by_op[id(op)] = describe
    return lambda op: by_op.get(id(op), lambda o: f"{o.f} {o.value!r}")(op)


def cmd_shrink(args: argparse.Namespace) -> int:
    """Shrink a failing history; 1 when shrunk (the result fails as the
    history did), the verdict's code when there is nothing to shrink."""
    import time

    from checkers.shrink import ShrinkError, shrink
    from harness.shrink_source import open_source, write_shrunk

    started = time.perf_counter()
    try:
        source = open_source(args.path, args.workload, args.model)
        try:
            result = shrink(source.ops, source.judge(), source.rules)
        except ShrinkError as e:
            print(f"faultline shrink: {source.path}: {e}", file=sys.stderr)
            return EXIT[UNKNOWN]
        if result.target is None:
            print(f"{source.path}: {result.verdict.upper()} ({result.before:,} ops): "
                  "nothing to shrink")
            return EXIT[result.verdict]
        out = Path(args.output) if args.output else source.out
        outcome = write_shrunk(source, result, out)
    except (OSError, ValueError, KeyError) as e:
        print(f"faultline shrink: {e}", file=sys.stderr)
        return EX_DATAERR
    print("\n".join(outcome.summary))
    print(f"timeline: {out.with_suffix('.html')}")
    print(f"check it: {source.check_command(out, result.ops)}")
    print(f"shrunk {source.path}: {result.before:,} -> {len(result.ops):,} ops in "
          f"{time.perf_counter() - started:.2f} s: {result.target.kind}")
    return EXIT[outcome.verdict]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["node"]:  # the node's flags, --help included, are the node's to parse
        return cmd_node(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`| head`): stop, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
