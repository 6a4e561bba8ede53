"""Importers: every format by content, real data, and errors that name the line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import shared_data_dir

from checkers import importers
from checkers.history import Event, HistoryError, pair
from checkers.importers import FORMATS, discover, load, sniff
from checkers.models import CasRegister

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = shared_data_dir()
PORCUPINE = SHARED / "porcupine" if SHARED else None
NO_SHARED = "../shared/data is absent: no reference histories to read"


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def brief(events: list[Event]) -> list[tuple]:
    return [(e.index, e.type, e.process, e.f, e.key, e.value, e.line) for e in events]


def linearizable(events: list[Event], model=CasRegister()) -> dict:
    """Per key, whether some order of the ops obeys real time and the model:
    a brute-force search, fine for the few ops of a hand-written fixture, so
    the fixtures' comments are checked against the semantics they claim."""
    verdicts = {}
    for key in {op.key for op in pair(events)}:
        ops = [o for o in pair(events) if o.key == key and model.keep(o)]

        def search(state, left) -> bool:
            if all(o.status == "info" for o in left):
                return True  # an indeterminate op may never take effect
            first_ret = min(o.ret for o in left)
            for o in left:
                if o.call < first_ret:
                    ok, nxt = model.step(state, o)
                    if ok and search(nxt, [x for x in left if x is not o]):
                        return True
            return False

        verdicts[key] = search(model.init(), ops)
    return verdicts


# ----------------------------------------------------------------------- jsonl

def test_jsonl_by_content(tmp_path):
    path = write(tmp_path, "h.edn",  # the name says nothing
                 '{"index": 0, "type": "invoke", "process": 3, "f": "read", "key": "k", "value": null}\n'
                 '{"index": 1, "type": "ok", "process": 3, "f": "read", "key": "k", "value": 4}\n')
    h = load(path)
    assert (h.format, h.path, h.model) == ("jsonl", path, None)
    assert brief(h.events) == [(0, "invoke", 3, "read", "k", None, 1),
                               (1, "ok", 3, "read", "k", 4, 2)]


def test_empty_file_is_an_empty_history(tmp_path):
    path = write(tmp_path, "empty.log", "")
    assert sniff(path) == "jsonl"
    h = load(path)
    assert (h.format, h.events) == ("jsonl", [])


# ------------------------------------------------------------------------- edn

def test_edn_stream_keeps_fields_and_converts_values(tmp_path):
    path = write(tmp_path, "history.txt", "\n".join([
        "; a comment line",
        '{:index 7, :time 100, :type :invoke, :process 0, :f :cas, :value [1 2], :node "n1"}',
        "{:index 8, :time 200, :type :info, :process 0, :f :cas, :value [1 2], "
        ":error {:cause :timeout, :at [1 2]}, :extra #{1}}",
        '{:type :invoke, :process :nemesis, :f :start, :value ["n1" :n2]}',
        "{:type :invoke, :process 5, :f :read, :value nil} {:type :ok, :process 5, :f :read, :value 2}",
        '{:type :invoke, :process "worker-1", :f :write, :value true}',
        "",
    ]))
    h = load(path)
    assert h.format == "edn"
    assert brief(h.events) == [
        (7, "invoke", 0, "cas", None, [1, 2], 2),
        (8, "info", 0, "cas", None, [1, 2], 3),
        (2, "invoke", "nemesis", "start", None, ["n1", "n2"], 4),  # index defaults to position
        (3, "invoke", 5, "read", None, None, 5),
        (4, "ok", 5, "read", None, 2, 5),  # two maps on one line
        (5, "invoke", "worker-1", "write", None, True, 6),
    ]
    assert (h.events[0].time, h.events[0].node) == (100, "n1")
    assert h.events[1].error == {"cause": "timeout", "at": [1, 2]}


def test_edn_knossos_vector_with_comments_and_multiline_map(tmp_path):
    path = write(tmp_path, "k.edn",
                 "[{:process 0, :type :invoke, :f :read, :value nil}\n"
                 " ; a comment inside the vector\n"
                 " {:process 0,\n"
                 "  :type :ok, :f :read, :value 3}\n"
                 " {:process 1  :type :invoke, :f :write, :value 4}] ; end\n")
    assert brief(load(path).events) == [(0, "invoke", 0, "read", None, None, 1),
                                        (1, "ok", 0, "read", None, 3, 3),
                                        (2, "invoke", 1, "write", None, 4, 5)]


def test_edn_list_and_jepsen_op_records(tmp_path):
    listed = write(tmp_path, "l.edn", "({:process 0, :type :invoke, :f :read})")
    records = write(tmp_path, "r.edn",
                    "#jepsen.history.Op{:index 0, :time 0, :type :invoke, :process 0, "
                    ":f :read, :value nil}\n")
    assert [e.f for e in load(listed).events] == ["read"]
    assert brief(load(records).events) == [(0, "invoke", 0, "read", None, None, 1)]


def test_independent_tuples_are_split_into_keys():
    h = load(str(FIXTURES / "independent.edn"))
    assert h.format == "edn"
    client = [e for e in h.events if e.process != "nemesis"]
    assert [(e.key, e.value) for e in client[:4]] == [(1, 5), (1, 5), (2, 6), (2, 6)]
    cas = [e for e in client if e.f == "cas"]
    assert [(e.key, e.value) for e in cas] == [(1, [5, 7]), (1, [5, 7]), (1, [0, 1]), (1, [0, 1])]
    info = next(e for e in client if e.type == "info")
    assert (info.key, info.value, info.error) == (None, "timed-out", ["timeout", 500])
    assert [e.value for e in h.nemesis_events()] == ["majority", None]
    assert h.events[3].node == "n2" and h.events[8].error == "mismatch"
    ops = {(o.process, o.f, o.key): o for o in h.operations()}
    assert ops[(5, "write", 2)].status == "info"  # key from the invoke
    assert ops[(3, "read", 2)].output == 5


@pytest.mark.parametrize("lines, first", [
    # plain cas register: read invokes are nil, cas values are scalar pairs
    (["{:process 0, :type :invoke, :f :read, :value nil}",
      "{:process 0, :type :ok, :f :read, :value [1 2]}"], (None, None)),
    (["{:process 0, :type :invoke, :f :cas, :value [1 2]}",
      "{:process 0, :type :ok, :f :cas, :value [1 2]}"], (None, [1, 2])),
    # independent: a cas of a pair, a write of a pair, a read invoke of [k nil]
    (["{:process 0, :type :invoke, :f :cas, :value [1 [2 3]]}",
      "{:process 0, :type :fail, :f :cas, :value :no-such-key}"], (1, [2, 3])),
    (["{:process 0, :type :invoke, :f :write, :value [1 2]}",
      "{:process 0, :type :ok, :f :write, :value [1 2]}"], (1, 2)),
    (['{:process 0, :type :invoke, :f :read, :value ["a" nil]}',
      '{:process 0, :type :info, :f :read, :value nil}'], ("a", None)),
    (["{:process 0, :type :invoke, :f :write, :value [1 2]}",
      "{:process 0, :type :ok, :f :write, :value 3}"], (None, [1, 2])),  # ok, not a pair
    # kv histories name their key: values stay whole
    (['{:process 0, :type :invoke, :f :put, :key "k", :value [1 2]}'], ("k", [1, 2])),
])
def test_independent_detection(tmp_path, lines, first):
    events = load(write(tmp_path, "h.edn", "\n".join(lines))).events
    assert (events[0].key, events[0].value) == first


def test_kv_history_keys(tmp_path):
    path = write(tmp_path, "c01.txt",
                 '{:process 9, :type :invoke, :f :append, :key "0", :value "x 9 0 y"}\n'
                 '{:process 9, :type :ok, :f :append, :key "0", :value "x 9 0 y"}\n')
    assert brief(load(path).events) == [(0, "invoke", 9, "append", "0", "x 9 0 y", 1),
                                        (1, "ok", 9, "append", "0", "x 9 0 y", 2)]


def test_fixtures_are_what_their_comments_say():
    assert linearizable(load(str(FIXTURES / "cas-register-valid.edn")).events) == {None: True}
    assert linearizable(load(str(FIXTURES / "cas-register-invalid.edn")).events) == {None: False}
    assert linearizable(load(str(FIXTURES / "independent.edn")).events) == {1: True, 2: False}
    for f in FIXTURES.glob("*.edn"):
        assert f.read_text().startswith("; ")


def test_round_trip_edn_to_operations():
    h = load(str(FIXTURES / "cas-register-valid.edn"))
    got = [(o.process, o.f, o.key, o.input, o.output, o.status, o.call, o.ret)
           for o in h.operations()]
    assert got == [
        (0, "write", None, 1, 1, "ok", 0, 1),
        (1, "cas", None, [1, 2], [1, 2], "ok", 2, 4),
        (2, "read", None, None, 2, "ok", 3, 5),
        (0, "cas", None, [1, 3], [1, 3], "fail", 6, 7),
        (1, "write", None, 4, 4, "info", 8, math.inf),
        (5, "read", None, None, 4, "ok", 10, 11),
    ]
    assert [e.line for e in h.events] == [6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18]


# ------------------------------------------------------------------ jepsen-log

def test_jepsen_log_lines(tmp_path):
    path = write(tmp_path, "x.edn", "\n".join([
        "INFO  jepsen.core - Running test",
        "INFO  jepsen.util - 3\t:invoke\t:read\tnil",
        "INFO  jepsen.util - 1   :invoke :cas    [1 2]",  # spaces, as in etcd_100..102
        "INFO  jepsen.util - 3\t:fail\t:read\t:timed-out",
        "INFO  jepsen.util - 1\t:info\t:cas\t:timed-out",
        "INFO  jepsen.util - :nemesis\t:info\t:start\tCut off {:n1 #{:n2}",
        "INFO  jepsen.util - 12\t:ok\t:write\t-4",
        "",
    ]))
    h = load(path)
    assert h.format == "jepsen-log"
    assert brief(h.events) == [
        (0, "invoke", 3, "read", None, None, 2),
        (1, "invoke", 1, "cas", None, [1, 2], 3),
        (2, "fail", 3, "read", None, "timed-out", 4),
        (3, "info", 1, "cas", None, "timed-out", 5),
        (4, "info", "nemesis", "start", None, "Cut off {:n1 #{:n2}", 6),  # kept as text
        (5, "ok", 12, "write", None, -4, 7),
    ]


# ----------------------------------------------------------------- real data

def _porcupine_files() -> list:
    if PORCUPINE is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=NO_SHARED))]
    files = sorted(p for p in (PORCUPINE / "test_data").rglob("*") if p.is_file())
    return [pytest.param(p, id=str(p.relative_to(PORCUPINE))) for p in files]


@pytest.mark.parametrize("path", _porcupine_files())
def test_porcupine_files_by_content(path):
    fmt = sniff(path)
    if path.name == "README.md":
        assert fmt is None
        return
    expected = {"jepsen": "jepsen-log", "kv": "edn"}[path.parent.name]
    if path.stat().st_size == 0:  # etcd_095.log: a run that never started
        expected = "jsonl"
    h = load(path)
    assert (fmt, h.format) == (expected, expected)
    lines = [s for s in path.read_text().split("\n") if s.strip()]
    assert len(h.events) == len(lines)  # one op a line, noise-free files
    assert [e.line for e in h.events] == list(range(1, len(lines) + 1))
    ops = pair(h.events, path=str(path))
    assert sum(1 for e in h.events if e.type == "invoke") == len(ops)
    if expected == "jepsen-log":
        assert {e.f for e in h.events} <= {"read", "write", "cas"}
        assert all(e.value == "timed-out" for e in h.events if e.type == "info")
        assert all(isinstance(o.input, list) and len(o.input) == 2
                   for o in ops if o.f == "cas")
    if expected == "edn":
        assert all(isinstance(e.key, str) for e in h.events)


def test_discover_porcupine_folder(shared_data):
    root = shared_data / "porcupine"
    found = discover([str(root)])
    assert len(found) == 109
    assert found == sorted(found)
    assert sum(f.endswith(".log") for f in found) == 103
    assert sum("/kv/" in f for f in found) == 6
    names = {Path(f).name for f in found}
    assert not names & {"LICENSE.md", "README.md", "verdicts.tsv"}
    assert str(root / "test_data/jepsen/etcd_095.log") in found
    # a file named explicitly is kept, whatever it holds
    assert discover([str(root / "verdicts.tsv")]) == [str(root / "verdicts.tsv")]


# ---------------------------------------------------------------- discovery

def test_discover_skips_non_histories(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    write(tmp_path, "README.md", "# Histories\n\nSee `INFO  jepsen.util - <process>`.\n")
    write(tmp_path, "verdicts.tsv", "a.edn\tlinearizable\n")
    write(tmp_path, "results.edn", "{:valid? false, :errors [{:type :ok, :f :read}]}\n")
    (tmp_path / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    b = write(tmp_path / "sub", "b.log", "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n")
    a = write(tmp_path / "sub" / "deeper", "a.txt", "{:process 0, :type :invoke, :f :read}\n")
    c = write(tmp_path, "c.jsonl", '{"type": "invoke", "process": 0, "f": "read"}\n')
    assert discover([str(tmp_path)]) == sorted([a, b, c])
    readme = str(tmp_path / "README.md")
    assert discover([readme, str(tmp_path / "sub")]) == [readme, b, a]
    with pytest.raises(HistoryError, match="README.md: not a history"):
        load(readme)


def test_discover_missing_path(tmp_path):
    missing = str(tmp_path / "nope.edn")
    with pytest.raises(FileNotFoundError, match="nope.edn"):
        discover([missing])


# -------------------------------------------------------------------- errors

def test_unknown_format_names_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError, match="jsonl, edn, jepsen-log"):
        load(write(tmp_path, "h", ""), format="knossos")
    assert FORMATS == ("jsonl", "edn", "jepsen-log")


def test_forced_format(tmp_path):
    path = write(tmp_path, "h.edn", "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n")
    assert load(path, format="jepsen-log").format == "jepsen-log"
    with pytest.raises(HistoryError) as e:
        load(path, format="edn")
    assert e.value.line == 1


GOOD = "{:process 0, :type :invoke, :f :read, :value nil}\n"


@pytest.mark.parametrize("text, line, field, words", [
    (GOOD + "{:process 0, :type :ok, :f :read, :value [1 2}\n", 2, None, "unexpected '}'"),
    (GOOD + "{:process 0, :type :ok, :f :read, :value 1}}\n", 2, None, "unexpected '}'"),
    (GOOD + GOOD + "{:process 0, :type :ok,\n :f :read, :value 1\n" + GOOD, 3, None,
     "never closed"),
    ("[" + GOOD + " " + GOOD, 1, None, "'[' opened here is never closed"),
    (GOOD + "{:process 0, :type :ok, :f :read :value}\n", 2, None, "even number"),
    (GOOD + '{:process 0, :type :ok, :f :read, :value "abc}\n', 2, None, "illegal character"),
    (GOOD + "{:process 0, :type :ok, :f :read, :value #object[1]}\n", 2, None, "unknown tag"),
    (GOOD + "\n; c\n{:process 0, :f :read, :value 1}\n", 4, "type", "missing"),
    (GOOD + "{:process 0, :type :done, :f :read}\n", 2, "type", "'done' is not one of"),
    (GOOD + "{:process :client, :type :ok, :f :read}\n", 2, "process", ":client"),
    (GOOD + "{:process 1.5, :type :ok, :f :read}\n", 2, "process", "1.5"),
    (GOOD + "{:process nil, :type :ok, :f :read}\n", 2, "process", "nil"),
    (GOOD + "{:type :ok, :f :read}\n", 2, "process", "missing"),
    (GOOD + "{:process 0, :type :ok, :f :read, :time 1.5}\n", 2, "time", "integer"),
    (GOOD + GOOD + "42\n", 3, None, "expected an op map"),
])
def test_malformed_edn(tmp_path, text, line, field, words):
    path = write(tmp_path, "bad.edn", text)
    with pytest.raises(HistoryError) as e:
        load(path, format="edn")
    assert (e.value.path, e.value.line, e.value.field) == (path, line, field)
    assert words in str(e.value) and str(e.value).startswith(f"{path}:{line}: ")


LOG = "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n"


@pytest.mark.parametrize("bad, field, words", [
    ("INFO  jepsen.util - 0\t:okk\t:read\t1", "type", ":okk is not one of"),
    ("INFO  jepsen.util - 0\t:ok\t:read", "value", "missing"),
    ("INFO  jepsen.util - 0\t:ok", "f", "expected a keyword"),
    ("INFO  jepsen.util - 0\t:ok\tread\t1", "f", "expected a keyword"),
    ("INFO  jepsen.util - x1\t:ok\t:read\t1", "process", "'x1'"),
    ("INFO  jepsen.util - 0\t:ok\t:cas\t[1 2", "value", "unbalanced"),
    ("INFO  jepsen.util - 0\t:ok\t:cas\t1 2", "value", "one value"),
])
def test_malformed_jepsen_log(tmp_path, bad, field, words):
    path = write(tmp_path, "bad.log", "INFO  jepsen.core - noise\n" + LOG + bad + "\n" + LOG)
    assert sniff(path) == "jepsen-log"
    with pytest.raises(HistoryError) as e:
        load(path)
    assert (e.value.line, e.value.field) == (3, field)
    assert words in str(e.value)


def test_log_without_op_lines(tmp_path):
    with pytest.raises(HistoryError, match="no Jepsen op lines"):
        load(write(tmp_path, "a.log", "INFO  jepsen.core - nothing ran\n"), format="jepsen-log")


def test_malformed_jsonl(tmp_path):
    path = write(tmp_path, "h.jsonl", '{"type": "invoke", "process": 0, "f": "read"}\n\n'
                                      '{"type": "ok", "process": 0, "f": "read"\n')
    with pytest.raises(HistoryError) as e:
        load(path)
    assert e.value.line == 3


def test_not_utf8_names_the_line(tmp_path):
    p = tmp_path / "h.edn"
    p.write_bytes(GOOD.encode() + b'{:process 0, :type :ok, :f :read, :value "\xff"}\n')
    with pytest.raises(HistoryError) as e:
        load(str(p))
    assert e.value.line == 2


def test_pairing_errors_name_the_source_line(tmp_path):
    path = write(tmp_path, "h.edn", "; header\n" + GOOD + "\n" + GOOD)
    with pytest.raises(HistoryError) as e:
        load(path).operations()
    assert e.value.line == 4


def test_parser_matches_edn_format():
    """The per-thread parser is edn_format's grammar, built once."""
    import edn_format
    text = '{:a [1 2.5 "s" nil true] :b #{:x} :c (1 2) :d {"k" \\c}}\n{:e 1}'
    assert importers._edn_parser()(text) == edn_format.loads_all(text)
