"""The JSONL history: reading, validation that names the place, writing, pairing."""

from __future__ import annotations

import json

import pytest

from checkers.history import (NEVER, Event, HistoryError, HistoryWriter, pair,
                              read_jsonl, write_jsonl)


def write_lines(path, *lines: str) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def rec(**kw) -> str:
    return json.dumps({"type": "invoke", "process": 0, "f": "get", **kw})


def test_round_trip(tmp_path):
    events = [Event(0, "invoke", 1, "put", "k", 5, 10, "n1"),
              Event(1, "ok", 1, "put", "k", 5, 20, "n1"),
              Event(2, "info", "nemesis", "start-partition", None, ["n1"], 30)]
    write_jsonl(tmp_path / "h.jsonl", events)
    assert read_jsonl(tmp_path / "h.jsonl") == events


@pytest.mark.parametrize("line, field, words", [
    ('{"type": "invoke", "f": "get"}', "process", "missing"),
    (rec(type="done"), "type", "'done' is not one of"),
    (rec(process=1.5), "process", "expected an integer or a string"),
    (rec(f=""), "f", "non-empty"),
    (rec(time="soon"), "time", "integer nanoseconds"),
    (rec(colour="red"), "colour", "unknown field"),
    (rec(index="3"), "index", "expected an integer"),
])
def test_bad_record_names_line_and_field(tmp_path, line, field, words):
    path = write_lines(tmp_path / "h.jsonl", rec(), line)
    with pytest.raises(HistoryError) as err:
        read_jsonl(path)
    assert err.value.line == 2 and err.value.field == field
    assert str(err.value).startswith(f"{path}:2: field {field!r}: ")
    assert words in str(err.value)


def test_truncated_last_line_is_named(tmp_path):
    path = write_lines(tmp_path / "h.jsonl", rec(), rec(), '{"type": "ok", "proc')
    with pytest.raises(HistoryError, match=r"h.jsonl:3: invalid JSON"):
        read_jsonl(path)


def test_not_an_object(tmp_path):
    path = write_lines(tmp_path / "h.jsonl", "[1, 2]")
    with pytest.raises(HistoryError, match="expected a JSON object, got list"):
        read_jsonl(path)


def test_writer_flushes_every_line(tmp_path):
    path = tmp_path / "h.jsonl"
    w = HistoryWriter(path)
    w.append("invoke", 0, "get", key="k")
    # readable before close: a crash after this point loses nothing written
    assert [e.f for e in read_jsonl(path)] == ["get"]
    w.append("ok", 0, "get", key="k", value=3)
    assert [e.index for e in read_jsonl(path)] == [0, 1]
    w.close()


def test_pairing_and_indeterminate_ops():
    evs = [Event(0, "invoke", 0, "put", "k", 1), Event(1, "invoke", 1, "get", "k"),
           Event(2, "info", "nemesis", "kill", None, ["n1"]),
           Event(3, "ok", 1, "get", "k", 1), Event(4, "info", 0, "put", "k", 1),
           Event(5, "invoke", 2, "put", "k", 2)]
    ops = pair(evs)
    assert [(o.process, o.status, o.call, o.ret) for o in ops] == [
        (0, "info", 0, NEVER), (1, "ok", 1, 3), (2, "info", 5, NEVER)]
    assert ops[1].output == 1 and ops[1].input is None


def test_pairing_errors_name_the_line():
    with pytest.raises(HistoryError, match=r"^h:2: field 'process': ok of 'get' by "
                       "process 4 without a pending invoke"):
        pair([Event(0, "invoke", 1, "get", line=1), Event(1, "ok", 4, "get", line=2)],
             path="h")
    with pytest.raises(HistoryError, match="invokes 'put' while its 'get'"):
        pair([Event(0, "invoke", 1, "get"), Event(1, "invoke", 1, "put")])
    with pytest.raises(HistoryError, match="does not match its invoke"):
        pair([Event(0, "invoke", 1, "get"), Event(1, "ok", 1, "put")])
