"""`faultline check` end to end: output, exit codes, errors, HTML."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import EX_DATAERR, EX_USAGE, main

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
