"""The ``faultline`` command.

Exit codes follow Jepsen: 0 valid, 1 invalid, 2 unknown.  Input that cannot
be read exits 65 (EX_DATAERR) with one line naming the file and line; a bad
command line exits 64 (EX_USAGE) naming the flag and its allowed values.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Callable, Sequence

from checkers import importers
from checkers.check import check_histories
from checkers.history import HistoryError, Operation
from checkers.models import MODELS, get_model
from checkers.report import key_lines, summary_line
from checkers.result import EXIT_CODES, INVALID, UNKNOWN, VALID, CheckResult, combine
from checkers.wgl import Budget
from harness.spec import BACKENDS, BUG_FLAGS, READ_PATHS, WORKLOADS
from nemesis.faults import FAULTS

EXIT = EXIT_CODES
EX_USAGE, EX_DATAERR = 64, 65


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on a bad flag, which would read as "unknown"."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


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


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="faultline", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    c = sub.add_parser("check", help="check saved histories for linearizability",
                       description="Check histories (files, or every history under "
                       "a folder) and print a verdict per history and per key.")
    c.add_argument("paths", nargs="+", metavar="PATH")
    c.add_argument("--model", choices=sorted(MODELS),
                   help="the sequential model (default: implied by the format and ops)")
    c.add_argument("--format", choices=importers.FORMATS,
                   help="the history format (default: detected from the content)")
    c.add_argument("--time-limit", type=_positive, metavar="S",
                   help="seconds per key before the verdict is unknown")
    c.add_argument("--max-states", type=_count, default=Budget().max_states, metavar="N",
                   help="configurations the search may remember per key "
                   "(default %(default)s)")
    c.add_argument("--jobs", type=_count, metavar="N",
                   help="worker processes (default: one per core)")
    c.add_argument("--html", metavar="OUT", help="write an HTML timeline of the results")
    c.set_defaults(func=cmd_check)

    r = sub.add_parser("run", help="run a fault test: cluster, clients, nemesis, check, report",
                       description="Start a cluster, drive DynamoDB traffic through it while "
                       "a nemesis injects faults, heal, check the history and store a "
                       "results folder.")
    r.add_argument("--spec", metavar="TOML", help="the test as a TOML file (flags override it)")
    r.add_argument("--workload", choices=WORKLOADS)
    r.add_argument("--nodes", type=_count)
    r.add_argument("--nemesis", type=_nemeses, metavar="F1,F2",
                   help=f"faults, comma-separated: {', '.join(FAULT_NAMES)}")
    r.add_argument("--nemesis-interval", type=_positive, metavar="S",
                   help="seconds each fault window lasts (default 4)")
    r.add_argument("--nemesis-quiet", type=_positive, metavar="S",
                   help="seconds between fault windows (default 2)")
    r.add_argument("--time-limit", type=_positive, metavar="S")
    r.add_argument("--concurrency", type=_count)
    r.add_argument("--rate", type=float, help="total ops/s (0 = as fast as possible)")
    r.add_argument("--seed", type=int)
    r.add_argument("--read-path", choices=READ_PATHS, help="read path of every read family")
    r.add_argument("--lease-ms", type=int, help="lease duration (default election - 300 ms)")
    r.add_argument("--lease-clock", choices=("monotonic", "wall"))
    r.add_argument("--lease-anchor", choices=("sent", "received"))
    r.add_argument("--drift-bound", type=float)
    r.add_argument("--bug", action="append", choices=BUG_FLAGS, dest="bugs",
                   help="switch on a bug flag of the reference store (repeat)")
    r.add_argument("--backend", choices=BACKENDS)
    r.add_argument("--nodes-file", metavar="FILE",
                   help="ssh backend: the nodes (host, port, user, key per node), TOML or JSON")
    r.add_argument("--known-hosts", metavar="FILE",
                   help="ssh backend: host keys to check against (default ~/.ssh/known_hosts)")
    r.add_argument("--insecure-host-keys", action="store_true", default=None,
                   help="ssh backend: accept any host key, unchecked (prints a warning)")
    r.add_argument("--results-dir", metavar="DIR")
    r.add_argument("--name", help="test name (default: workload-nemesis-bugs)")
    r.add_argument("--election-timeout-ms", type=int)
    r.add_argument("--heartbeat-ms", type=int)
    r.add_argument("--quiet-period", type=float, metavar="S")
    r.add_argument("--client-timeout", type=_positive, metavar="S",
                   help="a client's read timeout; past it the op is info (default 0.5)")
    r.set_defaults(func=cmd_run)

    an = sub.add_parser("analyse", help="re-check a saved run's results folder offline")
    an.add_argument("dir", metavar="DIR", help="a results folder (e.g. results/latest)")
    an.set_defaults(func=cmd_analyse)

    cl = sub.add_parser("cluster", help="start, inspect and stop local store clusters")
    csub = cl.add_subparsers(dest="action", required=True, parser_class=_Parser)
    up = csub.add_parser("up", help="start N local nodes in the background")
    up.add_argument("--nodes", type=_count, default=3, metavar="N")
    up.add_argument("--dir", required=True, help="cluster directory (cluster.json, logs, data)")
    up.add_argument("--config", metavar="TOML", help="node configuration file")
    up.add_argument("--bug", action="append", default=[], choices=BUG_FLAGS,
                    help="switch on a bug flag of the reference store (repeat)")
    up.add_argument("--seed", type=int, help="seed for the nodes' election timers")
    up.set_defaults(func=cmd_cluster_up)
    for name, func, helptext in (("status", cmd_cluster_status, "show each node's status"),
                                 ("down", cmd_cluster_down, "stop the cluster's nodes")):
        sp = csub.add_parser(name, help=helptext)
        sp.add_argument("--dir", required=True)
        sp.set_defaults(func=func)

    dk = sub.add_parser("docker", help="the docker backend: node image, leftovers",
                        description="Build the node image of the docker backend offline "
                        "(no registry needed), or remove what docker runs left behind.")
    dsub = dk.add_subparsers(dest="action", required=True, parser_class=_Parser)
    db = dsub.add_parser("build", help="build the node image, or reuse it if its inputs "
                         "are unchanged; prints the tag and the time of each step")
    db.add_argument("--base", metavar="IMAGE",
                    help="base image the engine already has (never pulled; default "
                    "python:3.11-slim when present, else a debootstrapped Debian)")
    db.add_argument("--rebuild", action="store_true",
                    help="make the wheelhouse and the image again even if unchanged")
    db.set_defaults(func=cmd_docker_build)
    dc = dsub.add_parser("cleanup", help="remove the containers and networks of docker "
                         "runs (those labelled faultline.run)")
    dc.set_defaults(func=cmd_docker_cleanup)

    nd = sub.add_parser("node", help="run one store node in the foreground",
                        add_help=False)
    nd.add_argument("args", nargs=argparse.REMAINDER)
    nd.set_defaults(func=cmd_node)
    return p


FAULT_NAMES = tuple(FAULTS)


def _nemeses(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in FAULT_NAMES:
            raise argparse.ArgumentTypeError(
                f"unknown fault {n!r}; choose from {', '.join(FAULT_NAMES)}")
    return names


_RUN_FIELDS = ("workload", "nodes", "nemesis", "nemesis_interval", "nemesis_quiet",
               "time_limit", "concurrency", "rate", "seed", "read_path", "lease_ms",
               "lease_clock", "lease_anchor", "drift_bound", "bugs", "backend", "results_dir", "name",
               "election_timeout_ms", "heartbeat_ms", "quiet_period", "client_timeout",
               "nodes_file", "known_hosts", "insecure_host_keys")


def cmd_run(args: argparse.Namespace) -> int:
    from harness.remote import BackendError
    from harness.runner import CRASHED, run_test
    from harness.spec import SpecError, TestSpec, load_spec

    given = {k: getattr(args, k) for k in _RUN_FIELDS if getattr(args, k) is not None}
    try:
        spec = load_spec(args.spec, **given) if args.spec else TestSpec(**given)
    except SpecError as e:
        print(f"faultline run: {e}", file=sys.stderr)
        return EX_USAGE
    # SIGTERM (a CI timeout, `kill`) tears down like Ctrl-C: heal, keep, stop
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_test(spec)
    except KeyboardInterrupt:
        print(f"faultline run: interrupted (seed {spec.seed}); faults healed, nodes "
              "stopped, history kept", file=sys.stderr)
        return CRASHED
    except BackendError as e:  # no engine, an unreachable host, a bad nodes file
        print(f"faultline run: {e} (seed {spec.seed})", file=sys.stderr)
        return CRASHED
    except Exception as e:  # noqa: BLE001 - the test itself crashed: say so, exit 255
        import traceback

        traceback.print_exc()
        print(f"faultline run: the test crashed: {e} (seed {spec.seed})", file=sys.stderr)
        return CRASHED
    print((result.directory / "summary.txt").read_text(), end="")
    print(f"verdict: {result.verdict.upper()}  (seed {result.seed}; results in "
          f"{result.directory})")
    return result.exit_code


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_analyse(args: argparse.Namespace) -> int:
    """Check a saved run again: the same checkers, plots and timeline, no cluster."""
    from pathlib import Path

    from harness.analysis import analyse, saved_spec, write_results

    directory = Path(args.dir).resolve()
    try:
        spec = saved_spec(directory)
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
    from harness.cluster import admin_get

    info = _cluster_info(args)
    if info is None:
        return EX_DATAERR
    for n in info.nodes:
        try:
            st = admin_get(n)
        except (OSError, ValueError):
            print(f"{n.id}  down (pid {n.pid})")
            continue
        lease = st["lease"]
        print(f"{n.id}  {st['role']:<13} term {st['term']:<4} leader {st['leader']}  "
              f"commit {st['commit']} applied {st['applied']}  lease "
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


def cmd_node(args: argparse.Namespace) -> int:
    from system.node import main as node_main

    return node_main(args.args)


def cmd_check(args: argparse.Namespace) -> int:
    try:
        paths = importers.discover(args.paths)
        histories = [importers.load(p, args.format) for p in paths]
    except (HistoryError, FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as e:
        print(f"faultline check: {e}", file=sys.stderr)
        return EX_DATAERR
    if not histories:
        print(f"faultline check: no history found under {' '.join(args.paths)}",
              file=sys.stderr)
        return EX_DATAERR
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
