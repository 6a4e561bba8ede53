"""Client pools against a real 3-node cluster: complete, ordered, checkable histories."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest
from conftest import module_cluster

from checkers.check import check_history
from checkers.history import History, HistoryWriter, pair, read_jsonl
from harness.clients import ClientPool, make_client, node_index, process_rng
from harness.cluster import ROOT, free_ports, is_alive
from harness.workloads import StaleTableError, make_workload

cluster_test = pytest.mark.cluster

CONCURRENCY, WORKERS, SECONDS = 6, 2, 3.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = module_cluster(tmp_path_factory, seed=11)
    yield c
    c.stop()


def endpoints(cluster):
    return [(n.id, n.endpoint) for n in cluster.nodes]


def assert_complete(events, concurrency=CONCURRENCY, nodes=None, final_from=None):
    """Every invoke has exactly one completion, by the same process, and
    the events are in time order; main-phase processes stick to their node."""
    open_: dict = {}
    for i, ev in enumerate(events):
        if ev.type == "invoke":
            assert ev.process not in open_, f"event {i}: process {ev.process} invokes twice"
            open_[ev.process] = ev
        else:
            inv = open_.pop(ev.process)
            assert (inv.f, inv.key, inv.node) == (ev.f, ev.key, ev.node)
        if nodes and (final_from is None or i < final_from):
            assert ev.node == nodes[node_index(ev.process, concurrency, len(nodes))], ev
    assert not open_, f"invokes without completion: {open_}"
    times = [ev.time for ev in events]
    assert all(isinstance(t, int) for t in times) and times == sorted(times)
    pair(events)  # the checkers' own pairing agrees


def fresh_table(name):
    """A table of its own for each run: the cluster outlives the tests."""
    return f"{name}_{next(TABLES)}"


TABLES = itertools.count()


def run(cluster, tmp_path, name, options=None, seconds=SECONDS, seed=5, rate=0):
    path = tmp_path / f"{name}.jsonl"
    options = {"table": fresh_table(name), **(options or {})}
    with HistoryWriter(path) as w:
        pool = ClientPool(name, options, endpoints(cluster), CONCURRENCY, rate=rate,
                          seed=seed, timeouts={"connect": 1.0, "read": 2.0},
                          on_event=w.append, workers=WORKERS)
        with pool:
            pool.setup()
            pool.start(time_limit=seconds)
            assert len(multiprocessing.active_children()) == WORKERS
            deadline = time.monotonic() + seconds  # the pool's own time limit
            while not path.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            written_midway = len(path.read_text().splitlines())
            live = pool.counts()
            assert pool.wait(seconds + 10)
        n_main = len(read_jsonl(path))
        final = pool.run_final()
    assert multiprocessing.active_children() == []
    assert written_midway > 0 and live["invoke"] > 0  # written as the test runs
    events = read_jsonl(path)
    assert len(events) == n_main + len(final)
    assert [e["f"] for e in final if e["type"] == "ok"] == [op.f for op in
                                                             pool.workload.final_ops()]
    assert_complete(events, nodes=[n.id for n in cluster.nodes], final_from=n_main)
    by_f = Counter((e.f, e.type) for e in events[:n_main])
    for f in pool.workload.fs:
        assert by_f[(f, "ok")] > 0, (f, by_f)
    counts = pool.counts()
    assert counts["invoke"] == counts["ok"] + counts["fail"] + counts["info"] == len(events) // 2
    secs = (events[n_main - 1].time - events[0].time) / 1e9
    if rate:  # the limit holds; how close a busy machine gets to it is not asserted
        assert 0 < n_main / 2 / secs <= 1.1 * rate
    print(f"\n{name}: {n_main // 2} ops in {secs:.1f} s = {n_main / 2 / secs:.0f} ops/s "
          f"with {CONCURRENCY} processes on {WORKERS} workers; {dict(by_f)}")
    return pool, events, events[n_main:]


@cluster_test
def test_register(cluster, tmp_path):
    pool, events, final = run(cluster, tmp_path, "register", {"keys": 4, "ops_per_key": 60})
    keys = {e.key for e in events}
    assert len(keys) > 4  # keys retired and fresh ones took their place
    per_key = Counter(e.key for e in events if e.type == "invoke")
    assert max(per_key.values()) <= 60 + len(final)
    assert all(isinstance(e.value, int) for e in events if e.type == "ok" and e.f == "put")
    written = [e.value for e in events if e.type == "invoke" and e.f == "put"] + \
        [e.value[1] for e in events if e.type == "invoke" and e.f == "update"]
    assert len(written) == len(set(written))
    res = check_history(History(events, model="dynamo-item"))
    assert res.verdict == "valid", res
    # the table now holds this run's data: another run on it would be checked wrongly
    with pytest.raises(StaleTableError):
        make_workload("register", {"table": pool.workload.table}).setup(
            make_client(cluster.nodes[0].endpoint))


@cluster_test
def test_set(cluster, tmp_path):
    pool, events, final = run(cluster, tmp_path, "set")
    added = {e.value for e in events if e.type == "ok" and e.f == "add"}
    attempted = {e.value for e in events if e.type == "invoke" and e.f == "add"}
    finals = [e.value for e in final if e.type == "ok"]
    assert len(finals) == 2
    for read in finals:
        assert added <= set(read) <= attempted and read == sorted(read)
    for e in events:
        if e.type == "ok" and e.f.startswith("read"):
            assert set(e.value) <= attempted
    # the same seed gives each process the same op sequence
    for p in range(CONCURRENCY):
        mine = [(e.f, e.value) for e in events if e.type == "invoke" and e.process == p]
        w, rng = make_workload("set"), process_rng(5, p)
        assert mine == [(op.f, op.value) for op in (w.next_op(rng, p) for _ in mine)]


@cluster_test
def test_bank(cluster, tmp_path):
    pool, events, final = run(cluster, tmp_path, "bank", rate=200)
    reads = [e.value for e in events if e.type == "ok" and e.f.startswith("read")]
    assert reads
    for r in reads:
        assert set(r) == {f"a{i}" for i in range(5)}
        assert sum(r.values()) == 500 and min(r.values()) >= 0, r
    assert any(r != {f"a{i}": 100 for i in range(5)} for r in reads)


@cluster_test
def test_stop_while_a_node_is_paused(cluster, tmp_path):
    """In-flight ops on a SIGSTOPped node: with the default grace they time
    out (info, from the workers); with a short grace the parent completes
    them as info.  Either way stop() returns in time and no child remains."""
    victim = cluster.nodes[2]
    nodes = [n.id for n in cluster.nodes]
    for grace, read_timeout in ((None, 1.0), (0.3, 5.0)):
        path = tmp_path / f"paused-{grace}.jsonl"
        with HistoryWriter(path) as w:
            pool = ClientPool("register", {"table": fresh_table("paused")}, endpoints(cluster),
                              CONCURRENCY, rate=300,
                              seed=9, timeouts={"connect": 0.5, "read": read_timeout},
                              on_event=w.append, workers=WORKERS)
            try:
                pool.setup()
                pool.start()
                time.sleep(0.5)
                os.kill(victim.pid, signal.SIGSTOP)
                time.sleep(0.4)
                stuck = pool.in_flight()
                t0 = time.monotonic()
                pool.stop(grace)
                took = time.monotonic() - t0
            finally:
                os.kill(victim.pid, signal.SIGCONT)
                pool.close()
        assert multiprocessing.active_children() == []
        events = read_jsonl(path)
        assert_complete(events, nodes=nodes)
        on_victim = [e for e in events if e.type == "info" and e.node == victim.id]
        assert stuck >= 1 and on_victim, (stuck, Counter(e.type for e in events))
        if grace is None:  # bounded by the read timeout, with room for a busy machine
            assert took < 0.5 + read_timeout + 3.0
            assert all("ReadTimeoutError" in e.error for e in on_victim)
        else:  # the grace, not the (longer) read timeout, bounds it
            assert took < read_timeout
            assert any("still in flight" in e.error for e in on_victim)
        assert check_history(History(events, model="dynamo-item")).verdict == "valid"
        cluster.wait_for_leader(10)


@cluster_test
def test_ctrl_c_leaves_no_worker_behind(tmp_path):
    """SIGINT to the whole process group (a terminal's Ctrl-C): the workers
    ignore it, the parent's KeyboardInterrupt stops them, none survives."""
    port = free_ports(1)[0]  # nobody listens: every op fails fast
    script = textwrap.dedent(f"""
        import sys, time
        from harness.clients import ClientPool
        if __name__ == "__main__":
            pool = ClientPool("set", {{}}, [("n1", "http://127.0.0.1:{port}")], 4, rate=100,
                              workers=2)
            with pool:
                pool.start()
                print(" ".join(str(p.pid) for p in pool._procs), flush=True)
                time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(is_alive(p) for p in pids), proc.stderr.read()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(15)
        deadline = time.monotonic() + 5
        while any(is_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(is_alive(p) for p in pids)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_merge_releases_events_in_time_order_once_every_worker_is_past_them():
    """No processes: feed the parent's receiving side by hand."""
    got = []
    pool = ClientPool("register", {}, [("n1", "http://127.0.0.1:1")], 2,
                      on_event=lambda typ, p, f, **kw: got.append((kw["time"], typ, p)))
    pool._watermarks = {0: 0, 1: 0}
    pool._receiver = object()  # as if receiving
    pool._handle(0, ("ev", "invoke", 0, "get", "k0", None, "n1", None, 100))
    pool._handle(1, ("hb", 50))
    pool._release()
    assert got == []  # worker 1 may still send something stamped 51..99
    pool._handle(1, ("ev", "invoke", 1, "put", "k0", 7, "n1", None, 90))
    pool._release()
    assert got == [(90, "invoke", 1)]
    pool.record("info", "nemesis", "start-partition", value=["n1"], time=95)
    pool._handle(1, ("ev", "ok", 1, "put", "k0", 7, "n1", None, 130))
    pool._handle(0, ("ev", "ok", 0, "get", "k0", 7, "n1", None, 140))
    pool._release()
    assert got == [(90, "invoke", 1), (95, "info", "nemesis"), (100, "invoke", 0),
                   (130, "ok", 1)]  # both workers are past 130, not yet past 140
    pool._handle(0, ("ev", "invoke", 0, "update", "k0", [7, 8], "n1", None, 150))
    pool._receiver = None
    pool.stop()  # the open update is completed as info, after everything else
    assert [g[1:] for g in got[4:]] == [("ok", 0), ("invoke", 0), ("info", 0)]
    assert got == sorted(got, key=lambda g: g[0])
    assert pool.counts() == {"invoke": 3, "ok": 2, "fail": 0, "info": 1}


def test_a_failing_sink_is_reported_by_stop():
    def sink(*a, **kw):
        raise OSError("disk full")

    pool = ClientPool("set", {}, [("n1", "http://127.0.0.1:1")], 1, on_event=sink)
    pool.record("invoke", "nemesis", "kill")
    with pytest.raises(RuntimeError, match="disk full"):
        pool.stop()
