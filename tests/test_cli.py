"""`faultline check` end to end: output, exit codes, errors, HTML; and the command
line itself: help, suggestions, refused settings."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import runner
from harness.cli import EX_DATAERR, EX_USAGE, build_parser, main
from harness.remote import BackendError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "histories"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_shipped_examples(capsys, tmp_path):
    html = tmp_path / "t.html"
    code, out, _ = run(capsys, "check", str(EXAMPLES), "--html", str(html))
    assert code == 1
    lines = out.splitlines()
    assert any("linearizable.jsonl  VALID" in line for line in lines)
    assert any("stale-read.jsonl  INVALID" in line for line in lines)
    # the witness: the stale get served by n1 cannot be placed
    assert "cannot place: [9-10] process 0 on n1: get -> 1 (ok)" in out
    states = next(line for line in out.splitlines() if "could have been in:" in line)
    assert states.split(": ")[1].split(", ") == ["3"]
    assert "the last, update 2->3 by process 1 (events 7-8), completed before it" in out
    assert "2 histories: 1 valid, 1 invalid, 0 unknown" in out
    page = html.read_text()
    assert "get -&gt; 1" in page or "get -> 1" in page


def test_console_entry_point_runs(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "check",
                           str(EXAMPLES / "linearizable.jsonl")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "VALID" in proc.stdout


def test_bad_flag_names_flag_and_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["check", str(EXAMPLES), "--model", "nope"])
    assert exc.value.code == EX_USAGE
    err = capsys.readouterr().err
    assert "--model" in err and "cas-register" in err and "'nope'" in err


def test_malformed_history_is_one_line_naming_file_and_line(capsys, tmp_path):
    bad = tmp_path / "h.jsonl"
    bad.write_text(json.dumps({"type": "invoke", "process": 0, "f": "get"}) + "\n"
                   + json.dumps({"type": "ok", "process": 0}) + "\n")
    code, out, err = run(capsys, "check", str(bad))
    assert code == EX_DATAERR
    assert err.strip() == f"faultline check: {bad}:2: field 'f': missing"


def test_missing_path(capsys, tmp_path):
    code, _, err = run(capsys, "check", str(tmp_path / "nothing.jsonl"))
    assert code == EX_DATAERR and "nothing.jsonl" in err


def test_op_the_model_does_not_know(capsys, tmp_path):
    h = tmp_path / "h.jsonl"
    h.write_text(json.dumps({"type": "invoke", "process": 0, "f": "scan"}) + "\n")
    code, _, err = run(capsys, "check", str(h), "--model", "register")
    assert code == EX_DATAERR and "has no operation 'scan'" in err


def test_budget_exhausted_is_unknown(capsys, tmp_path):
    lines = [{"type": "invoke", "process": p, "f": "write", "value": p} for p in range(16)]
    lines += [{"type": "invoke", "process": 99, "f": "read", "value": None},
              {"type": "ok", "process": 99, "f": "read", "value": 1},
              {"type": "invoke", "process": 99, "f": "read", "value": None},
              {"type": "ok", "process": 99, "f": "read", "value": 0}]
    lines += [{"type": "ok", "process": p, "f": "write", "value": p} for p in range(16)]
    lines += [{"type": "invoke", "process": 99, "f": "cas", "value": [3, 4]},
              {"type": "fail", "process": 99, "f": "cas", "value": [3, 4]}]
    h = tmp_path / "h.jsonl"
    h.write_text("".join(json.dumps(x) + "\n" for x in lines))
    code, out, _ = run(capsys, "check", str(h), "--model", "etcd", "--max-states", "50")
    assert code == 2
    assert "UNKNOWN" in out and "state budget of 50" in out


# ------------------------------------------------------------------ the command line itself


def usage_error(capsys, *argv: str) -> str:
    """stderr of a command line that must be refused with 64, before anything runs."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == EX_USAGE, err
    return err


def _subparser(name: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_every_run_flag_says_its_default():
    actions = [a for a in _subparser("run")._actions if a.option_strings != ["-h", "--help"]]
    assert len(actions) > 20
    for a in actions:
        assert a.help and "(default: " in a.help, a.option_strings


def test_node_help_is_the_nodes_own(capsys):
    with pytest.raises(SystemExit) as e:
        main(["node", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: faultline node") and "--peer" in out
    assert main(["node", "--id"]) == EX_USAGE  # a bad node flag exits 64 too
    assert "node" in build_parser().format_help()


@pytest.mark.parametrize("argv, words", [
    (["run", "--nemsis", "kill"], "unrecognized argument --nemsis; did you mean --nemesis?"),
    (["run", "--nodes-fle=x"], "did you mean --nodes-file?"),
    (["check", "x", "--modle", "etcd"], "did you mean --model?"),
    (["run", "--zzzz"], "unrecognized argument --zzzz"),
    (["run", "--workload", "regster"], "'regster' (choose from register, set, bank); "
                                       "did you mean register?"),
    (["run", "--bug", "long-lese"], "did you mean long-lease?"),
    (["rn"], "invalid choice: 'rn'"),
    (["rn"], "did you mean run?"),
])
def test_misspellings_get_a_suggestion(capsys, argv, words):
    assert words in usage_error(capsys, *argv)


@pytest.mark.parametrize("argv, words", [
    (["--lease-ms", "0"], "--lease-ms: must be positive, got 0"),
    (["--lease-ms", "-5"], "--lease-ms: must be positive"),
    (["--nemesis", "kill,,pause"], "argument --nemesis: empty fault name in 'kill,,pause'"),
    (["--nemesis", "pause,"], "empty fault name"),
    (["--nemesis", "nap"], "argument --nemesis: unknown fault 'nap' (choose from partition-one"),
    (["--nemesis", "partition-leadr"], "did you mean partition-leader?"),
    (["--nodes", "2", "--nemesis", "partition-halves"],
     "--nodes: --nemesis partition-halves needs at least 3 nodes"),
    (["--nodes", "2", "--nemesis", "clock-bump,kill-leader"], "kill-leader needs at least 3"),
    (["--nodes", "1", "--nemesis", "leader-churn"], "leader-churn needs at least 2 nodes"),
    (["--heartbeat-ms", "5000"], "--heartbeat-ms, --election-timeout-ms"),
])
def test_bad_run_settings_name_the_flag_and_what_is_allowed(capsys, argv, words):
    assert words in usage_error(capsys, "run", *argv)


# ------------------------------------------------------------------ a run that crashes


def crashed_run(capsys, monkeypatch, error: Exception) -> str:
    """stderr of ``faultline run`` whose test raised ``error``, which must exit 255."""
    from harness.spec import TestSpec

    def run_test(spec: TestSpec, **kw: object) -> None:
        raise error

    monkeypatch.setattr(runner, "run_test", run_test)
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # keep pytest's SIGTERM
    code, _, err = run(capsys, "run", "--seed", "5")
    assert code == runner.CRASHED, err
    return err


@pytest.mark.parametrize("error, line", [
    (runner.SetupFailed("RuntimeError: node n2 exited with 1"),
     "set up failed: RuntimeError: node n2 exited with 1"),
    (TimeoutError("no leader within 30 s; logs in /r/cluster"),
     "TimeoutError: no leader within 30 s; logs in /r/cluster"),
    (ConnectionRefusedError(111, "Connection refused"),
     "ConnectionRefusedError: [Errno 111] Connection refused"),
    (BackendError("docker backend: the engine is not answering"),
     "docker backend: the engine is not answering"),
])
def test_a_run_the_machine_or_the_nodes_fail_says_why_in_one_line(capsys, monkeypatch,
                                                                   error, line):
    err = crashed_run(capsys, monkeypatch, error)
    assert err == f"faultline run: {line} (seed 5)\n"


@pytest.mark.parametrize("error", [KeyError("groups"), RuntimeError("a pool runs once"),
                                   TimeoutError()])
def test_a_run_the_harness_crashes_keeps_its_traceback(capsys, monkeypatch, error):
    err = crashed_run(capsys, monkeypatch, error)
    assert err.startswith("Traceback (most recent call last):") and "in run_test" in err
    assert err.splitlines()[-1] == (f"faultline run: the test crashed: "
                                    f"{type(error).__name__}: {error} (seed 5)")


# ------------------------------------------------------------------ per-fault timings, staleness


@pytest.mark.parametrize("argv, words", [
    (["--nemesis", "partition-leader:x"],
     "argument --nemesis: partition-leader:x: window must be a number of seconds > 0"),
    (["--nemesis", "clock-bump:12/3,kill:2/0"],
     "argument --nemesis: kill:2/0: quiet must be a number of seconds > 0"),
    (["--nemesis", "partition-leadr:12/3"], "unknown fault 'partition-leadr'; did you mean "
                                            "partition-leader?"),
    (["--nemesis", "kill,pause:2/1,kill:3"], "--nemesis: kill is listed twice"),
    (["--nodes", "2", "--nemesis", "kill-leader:12/3"], "kill-leader needs at least 3 nodes"),
    (["--max-staleness", "-1"], "argument --max-staleness: must be >= 0, got '-1'"),
    (["--max-staleness", "soon"], "argument --max-staleness: expected milliseconds, got 'soon'"),
])
def test_bad_fault_timings_and_staleness_name_the_flag(capsys, argv, words):
    assert words in usage_error(capsys, "run", *argv)


def test_fault_entries_and_the_bound_reach_the_spec_as_typed(capsys, monkeypatch):
    from harness.spec import TestSpec

    seen: list[TestSpec] = []

    def run_test(spec: TestSpec, **kw: object) -> None:
        seen.append(spec)
        raise runner.SetupFailed("not here")

    monkeypatch.setattr(runner, "run_test", run_test)
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # keep pytest's SIGTERM
    run(capsys, "run", "--nemesis", "partition-leader:12/3, leader-churn",
        "--max-staleness", "250")
    [spec] = seen
    assert (spec.nemesis, spec.max_staleness_ms) == (["partition-leader:12/3", "leader-churn"],
                                                     250.0)
    assert "Δ-atomicity" in _subparser("run").format_help()
    assert "Δ-atomicity" in _subparser("analyse").format_help()


def test_analyse_refuses_a_bad_staleness_bound(capsys, tmp_path):
    assert "argument --max-staleness: must be >= 0" in usage_error(
        capsys, "analyse", str(tmp_path), "--max-staleness", "-3")


class _NoFailpointsBackend:
    """A started cluster whose store has no failpoints, and nothing else."""

    node_ids = ["n1", "n2", "n3"]

    def start(self) -> None: ...

    def failpoint_settings(self, node: str) -> None:
        return None

    def close(self) -> None: ...

    def log_files(self) -> list[Path]:
        return []


def test_a_fault_the_system_cannot_take_fails_the_set_up_before_any_client(
        capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "make_backend", lambda *a: _NoFailpointsBackend())

    def no_clients(*a: object, **kw: object) -> None:
        raise AssertionError("clients started")

    monkeypatch.setattr(runner, "ClientPool", no_clients)
    monkeypatch.setattr(signal, "signal", lambda *a: None)  # keep pytest's SIGTERM
    code, out, err = run(capsys, "run", "--seed", "5", "--nodes", "3", "--nemesis",
                         "partition-one,disk-slow:3/1", "--results-dir", str(tmp_path))
    assert code == runner.CRASHED, err
    assert err.startswith("faultline run: set up failed: UnsupportedFault: --nemesis "
                          "disk-slow: the system under test has no failpoints")
    [kept] = (tmp_path / "set-partition-one-disk-slow").iterdir()
    assert kept.name.endswith("-setup-failed")


def _saved_run(directory: Path, max_staleness_ms: float | None) -> Path:
    """A saved register run: a put acknowledged at 20 ms, then a get at 30 ms on
    another node that misses it (a read 10 ms stale)."""
    directory.mkdir()
    (directory / "test.json").write_text(json.dumps(
        {"spec": {"workload": "register", "max_staleness_ms": max_staleness_ms},
         "seed": 1, "t0_ns": 0}))
    ms = 1_000_000
    events = [("invoke", 0, "put", 1, 10, "n1"), ("ok", 0, "put", 1, 20, "n1"),
              ("invoke", 1, "get", None, 30, "n3"), ("ok", 1, "get", None, 40, "n3")]
    (directory / "history.jsonl").write_text("".join(
        json.dumps({"index": i, "type": t, "process": p, "f": f, "key": "k0", "value": v,
                    "time": at * ms, "node": node}) + "\n"
        for i, (t, p, f, v, at, node) in enumerate(events)))
    return directory


@pytest.mark.parametrize("saved, flag, verdict", [
    (None, [], "INVALID"),
    (None, ["--max-staleness", "50"], "VALID"),   # 10 ms stale, within the bound
    (50.0, [], "VALID"),                          # the saved run's bound
    (50.0, ["--max-staleness", "5"], "INVALID"),  # the flag wins
])
def test_analyse_judges_a_saved_run_by_the_staleness_bound(capsys, tmp_path, saved, flag,
                                                            verdict):
    directory = _saved_run(tmp_path / "run", saved)
    code, out, _ = run(capsys, "analyse", str(directory), *flag)
    assert f"verdict: {verdict}\n" in out and code == (0 if verdict == "VALID" else 1)
    # the run's own settings stay as it ran
    assert json.loads((directory / "test.json").read_text())["spec"]["max_staleness_ms"] == saved


def test_claimed_folders_are_never_shared(tmp_path, monkeypatch):
    import os
    import threading

    from harness.folders import claim_folder

    base = tmp_path / "a" / "run"  # parents made as needed
    first, second, third = (claim_folder(base) for _ in range(3))
    assert [first.name, second.name, third.name] == ["run", "run-2", "run-3"]
    assert all(p.is_dir() for p in (first, second, third))
    assert claim_folder(tmp_path / "c", first=1).name == "c"
    assert claim_folder(tmp_path / "c", first=1).name == "c-1"

    # a rival makes the folder between any look and the claim: claimed, not shared
    real_mkdir = os.mkdir
    rivals: list[Path] = []

    def rival_first(path, *a, **kw):  # noqa: ANN001, ANN002, ANN003
        if not rivals:
            real_mkdir(path)
            rivals.append(Path(path))
        return real_mkdir(path, *a, **kw)

    monkeypatch.setattr(os, "mkdir", rival_first)
    got = claim_folder(tmp_path / "b")
    monkeypatch.setattr(os, "mkdir", real_mkdir)
    assert rivals == [tmp_path / "b"] and got == tmp_path / "b-2"

    # concurrent claims, released together: each gets its own folder
    start, claimed = threading.Barrier(8), []

    def claim() -> None:
        start.wait()
        claimed.append(claim_folder(tmp_path / "many"))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(claimed)) == 8 and all(p.is_dir() for p in claimed)


def test_runs_in_one_second_get_their_own_numbered_folders(tmp_path, monkeypatch):
    from datetime import datetime

    from harness.spec import TestSpec

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):  # noqa: ANN001, ANN206
            return cls(2026, 12, 7, 14, 42, 16)

    monkeypatch.setattr(runner, "datetime", Frozen)
    spec = TestSpec(results_dir=str(tmp_path))
    folders = [runner.results_dir(spec) for _ in range(3)]
    assert [p.name for p in folders] == ["20261207T144216", "20261207T144216-2",
                                         "20261207T144216-3"]
    assert all(p.is_dir() and p.parent.name == spec.test_name for p in folders)
