"""Backend benchmark: the same `faultline run` on each backend; prints wall times.

    python bench/backends.py [--backends local,docker,ssh] [--time-limit 60] [--nodes 5]
                             [--workload set] [--nemesis partition-leader] [--seeds 1,2,3]
                             [--bug unchecked-range-reads]

Each run is a real `faultline run` in a fresh process (so the docker runs
include making the containers and the ssh runs connecting and shipping the
source).  The ssh backend runs against sshd in containers of the node image
that this script starts (a fresh ed25519 key and known_hosts) and removes at
the end.  Prints one line per run (backend, seed, verdict, wall time, the time
before the clients started) and the median wall time per backend.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sshd_hosts(n: int, work: Path, stack: ExitStack) -> Path:
    """``n`` containers running sshd; the spec TOML that points the ssh backend at them."""
    from harness.docker_backend import ContainerSet, docker_client
    from harness.docker_image import ensure_image

    image = ensure_image(log=lambda line: None)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(work / "id_ed25519")], check=True)
    hosts = ContainerSet(docker_client(), f"bench-{os.getpid()}", image,
                         [f"h{i + 1}" for i in range(n)])
    stack.callback(hosts.remove)
    hosts.create()
    known = hosts.enable_sshd((work / "id_ed25519.pub").read_text())
    (work / "known_hosts").write_text("\n".join(known) + "\n")
    (work / "nodes.toml").write_text(
        f'user = "root"\nkey = "{work / "id_ed25519"}"\n'
        + "".join(f'[[nodes]]\nhost = "{ip}"\n' for ip in hosts.addresses.values()))
    spec = work / "ssh.toml"
    spec.write_text(f'backend = "ssh"\nnodes_file = "{work / "nodes.toml"}"\n'
                    f'known_hosts = "{work / "known_hosts"}"\n')
    return spec


def one_run(backend: str, args: argparse.Namespace, seed: int, results: Path,
            ssh_spec: Path | None) -> tuple[str, float, float | None]:
    cmd = [sys.executable, "-m", "harness.cli", "run", "--workload", args.workload,
           "--nemesis", args.nemesis, "--time-limit", str(args.time_limit),
           "--nodes", str(args.nodes), "--seed", str(seed), "--results-dir", str(results)]
    cmd += ["--spec", str(ssh_spec)] if backend == "ssh" else ["--backend", backend]
    for bug in args.bug:
        cmd += ["--bug", bug]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=args.time_limit + 600, env={**os.environ, "CI": "1"})
    wall = time.monotonic() - t0
    try:
        run = (results / "latest").resolve()
        verdict = json.loads((run / "results.json").read_text())["verdict"]
        with open(run / "history.jsonl") as fh:  # times are CLOCK_MONOTONIC, as ours
            first = next(json.loads(line) for line in fh if '"invoke"' in line)
        setup = first["time"] / 1e9 - t0
    except (OSError, ValueError, KeyError, StopIteration):
        tail = "\n    ".join(proc.stderr.strip().splitlines()[-6:])
        print(f"  {backend} seed {seed}: exit {proc.returncode}\n    {tail}", file=sys.stderr)
        return "crashed", wall, None
    return verdict, wall, setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="local,docker,ssh")
    ap.add_argument("--time-limit", type=float, default=60)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--workload", default="set")
    ap.add_argument("--nemesis", default="partition-leader")
    ap.add_argument("--seeds", default="1", help="comma-separated; one run per seed and backend")
    ap.add_argument("--bug", action="append", default=[])
    args = ap.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    walls: dict[str, list[float]] = {b: [] for b in backends}
    verdicts: dict[str, list[str]] = {b: [] for b in backends}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        work = Path(tmp)
        ssh_spec = sshd_hosts(args.nodes, work, stack) if "ssh" in backends else None
        print(f"{args.workload} / {args.nemesis} / {args.nodes} nodes / "
              f"{args.time_limit:g} s{' / ' + ','.join(args.bug) if args.bug else ''}")
        for seed in seeds:
            for backend in backends:
                verdict, wall, setup = one_run(backend, args, seed,
                                               work / backend / str(seed), ssh_spec)
                walls[backend].append(wall)
                verdicts[backend].append(verdict)
                before = f"{setup:5.1f} s" if setup is not None else "    -"
                print(f"  {backend:<7} seed {seed:<6} {verdict:<8} wall {wall:6.1f} s  "
                      f"(before the clients {before}, beyond the time limit "
                      f"{wall - args.time_limit:5.1f} s)", flush=True)
    for backend in backends:
        v = verdicts[backend]
        print(f"{backend:<7} median wall {statistics.median(walls[backend]):6.1f} s over "
              f"{len(v)} run(s); invalid {v.count('invalid')}, valid {v.count('valid')}, "
              f"other {len(v) - v.count('invalid') - v.count('valid')}")


if __name__ == "__main__":
    main()
