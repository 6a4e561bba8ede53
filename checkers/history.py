"""The history: the contract between the harness and the checkers.

A history is a sequence of :class:`Event` records, one JSON object per line in
``history.jsonl`` (see DESIGN.md).  Checkers work on :class:`Operation`
records: an invoke paired with its completion.  Nothing here knows where a
history came from, so histories written by other tools (converted by
:mod:`checkers.importers`) are checked the same way.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import IO, Any, Iterable, Iterator, Sequence

EVENT_TYPES = ("invoke", "ok", "fail", "info")
COMPLETION_TYPES = ("ok", "fail", "info")
NEMESIS = "nemesis"

#: ``Operation.ret`` of an op that never completed (``info``): it may take
#: effect at any time after its invocation.
NEVER = math.inf

_REQUIRED = ("type", "process", "f")
_OPTIONAL = ("index", "key", "value", "time", "node", "error")


class HistoryError(ValueError):
    """A history that cannot be read, with the place of the first bad record.

    ``str(err)`` is one line: ``PATH:LINE: field 'F': what is wrong``.
    """

    def __init__(self, message: str, *, path: str | None = None,
                 line: int | None = None, field: str | None = None) -> None:
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = ":".join(str(p) for p in (path, line) if p is not None)
        what = f"field {field!r}: {message}" if field else message
        super().__init__(f"{where}: {what}" if where else what)


@dataclass(slots=True)
class Event:
    """One history record: an invocation or a completion of an operation."""

    index: int
    type: str
    process: int | str
    f: str
    key: Any = None
    value: Any = None
    time: int | None = None
    node: str | None = None
    error: Any = None
    #: Where the record stood in its file (1-based), for error messages.
    line: int | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "type": self.type,
                             "process": self.process, "f": self.f}
        for name in ("key", "value", "time", "node", "error"):
            v = getattr(self, name)
            if v is not None or name == "value":
                d[name] = v
        return d


_ALLOWED = frozenset(_REQUIRED + _OPTIONAL)
_TYPES = frozenset(EVENT_TYPES)
#: One string object per distinct type, f and node: a million events share them.
_INTERNED: dict[str, str] = {}


def event_from_dict(obj: Any, *, index: int, path: str | None = None,
                    line: int | None = None) -> Event:
    """Validate one decoded record; ``HistoryError`` names the bad field."""
    if type(obj) is not dict:
        raise HistoryError(f"expected a JSON object, got {type(obj).__name__}",
                           path=path, line=line)
    if not obj.keys() <= _ALLOWED or not obj.keys() >= _REQUIRED_SET:
        _bad_fields(obj, path, line)
    typ, proc, f = obj["type"], obj["process"], obj["f"]
    if typ not in _TYPES:
        raise HistoryError(f"{typ!r} is not one of {', '.join(EVENT_TYPES)}",
                           path=path, line=line, field="type")
    if type(proc) is not int and type(proc) is not str:
        raise HistoryError(f"expected an integer or a string, got {proc!r}",
                           path=path, line=line, field="process")
    if type(f) is not str or not f:
        raise HistoryError(f"expected a non-empty string, got {f!r}",
                           path=path, line=line, field="f")
    idx = obj.get("index", index)
    if type(idx) is not int:
        raise HistoryError(f"expected an integer, got {idx!r}",
                           path=path, line=line, field="index")
    tm = obj.get("time")
    if tm is not None and type(tm) is not int:
        raise HistoryError(f"expected integer nanoseconds, got {tm!r}",
                           path=path, line=line, field="time")
    node = obj.get("node")
    if node is not None:
        if type(node) is not str:
            raise HistoryError(f"expected a string, got {node!r}",
                               path=path, line=line, field="node")
        node = _INTERNED.setdefault(node, node)
    key = obj.get("key")
    if type(key) is list:
        key = freeze(key)
    interned = _INTERNED
    return Event(idx, interned.setdefault(typ, typ), proc, interned.setdefault(f, f),
                 key, obj.get("value"), tm, node, obj.get("error"), line)


_REQUIRED_SET = frozenset(_REQUIRED)


def _bad_fields(obj: dict[str, Any], path: str | None, line: int | None) -> None:
    for name in _REQUIRED:
        if name not in obj:
            raise HistoryError("missing", path=path, line=line, field=name)
    raise HistoryError("unknown field", path=path, line=line,
                       field=sorted(set(obj) - _ALLOWED)[0])


def freeze(value: Any) -> Any:
    """Lists to tuples, recursively, so that values can be hashed."""
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


# --------------------------------------------------------------------- JSONL

def read_jsonl(path: str | os.PathLike[str]) -> list[Event]:
    """Read a ``history.jsonl``; the first bad record raises ``HistoryError``.

    A truncated last line (a harness that crashed mid-write) is an error too:
    it names the line, and the records before it are intact on disk.
    """
    with open(path, encoding="utf-8") as fh:
        return list(iter_jsonl(fh, path=str(path)))


def iter_jsonl(fh: IO[str], *, path: str | None = None) -> Iterator[Event]:
    """Events of a JSONL stream, validated one by one, read lazily.

    The common case (one well-formed record a line) goes through the C JSON
    scanner and a validation of the fields whose types matter, about 3 us a
    record; anything unusual goes through the careful path that names what
    is wrong.
    """
    scan = json.JSONDecoder().scan_once
    allowed, types, interned = _ALLOWED, _TYPES, _INTERNED
    n = 0
    for lineno, text in enumerate(fh, 1):
        try:
            obj, end = scan(text, 0)
        except (StopIteration, json.JSONDecodeError):
            if not text.strip():
                continue
            obj, end = _decode_slowly(text, path, lineno)
        if end < len(text) and not text[end:].isspace():
            _decode_slowly(text, path, lineno)
        if (type(obj) is dict and obj.keys() <= allowed and len(obj) >= 3
                and obj.get("type") in types and type(obj.get("f")) is str
                and type(obj.get("process")) in (int, str) and obj["f"]
                and type(obj.get("index", n)) is int
                and type(obj.get("time", 0)) is int
                and type(obj.get("node", "")) is str):
            key = obj.get("key")
            if type(key) is str:
                key = interned.setdefault(key, key)
            elif type(key) is list:
                key = freeze(key)
            node = obj.get("node")
            if node is not None:
                node = interned.setdefault(node, node)
            typ, f = obj["type"], obj["f"]
            yield Event(obj.get("index", n), interned.setdefault(typ, typ), obj["process"],
                        interned.setdefault(f, f), key, obj.get("value"), obj.get("time"),
                        node, obj.get("error"), lineno)
        else:
            yield event_from_dict(obj, index=n, path=path, line=lineno)
        n += 1


def _decode_slowly(text: str, path: str | None, lineno: int) -> tuple[Any, int]:
    try:
        return json.loads(text), len(text)
    except json.JSONDecodeError as e:
        raise HistoryError(f"invalid JSON ({e.msg} at column {e.colno})",
                           path=path, line=lineno) from None


class HistoryWriter:
    """Appends events to a JSONL file, flushing every line.

    A crash of the writer loses at most the line being written.  Indexes are
    assigned in order; use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self._fh = open(path, "a", encoding="utf-8")
        self._fsync = fsync
        self._next = 0

    def append(self, type: str, process: int | str, f: str, *, key: Any = None,
               value: Any = None, time: int | None = None,
               node: str | None = None, error: Any = None) -> Event:
        ev = Event(self._next, type, process, f, key, value, time, node, error)
        self.write(ev)
        return ev

    def write(self, ev: Event) -> None:
        if ev.type not in EVENT_TYPES:
            raise ValueError(f"event type {ev.type!r} is not one of {EVENT_TYPES}")
        self._fh.write(json.dumps(ev.to_dict(), separators=(",", ":")) + "\n")
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())
        self._next = ev.index + 1

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "HistoryWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl(path: str | os.PathLike[str], events: Iterable[Event]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for ev in events:
            fh.write(json.dumps(ev.to_dict(), separators=(",", ":")) + "\n")


# ------------------------------------------------------------------- pairing

#: The word in a completion's ``error`` by which a store says it evaluated a
#: condition and found it false: DynamoDB's ConditionalCheckFailedException,
#: and the ConditionalCheckFailed reason of a cancelled transaction.
CONDITION_FAILED = "ConditionalCheckFailed"


def condition_failed(error: Any) -> bool:
    """Whether a ``fail`` completion says something about the state.

    Only the store's own word that a condition was false does: a refused
    connection, a request never sent or a validation error says the op did
    not happen and nothing more (it must not be read as "the condition
    found another value").
    """
    return isinstance(error, str) and CONDITION_FAILED in error


@dataclass(slots=True)
class Operation:
    """An invocation paired with its completion.

    ``call`` and ``ret`` are positions in the event sequence (the real-time
    order the checkers use); ``ret`` is :data:`NEVER` for an op whose outcome
    is unknown (``info``, or no completion at all).  ``input`` is the invoke's
    value, ``output`` the completion's.
    """

    id: int
    process: int | str
    f: str
    key: Any
    input: Any
    output: Any
    status: str
    call: int
    ret: float
    call_time: int | None = None
    ret_time: int | None = None
    node: str | None = None
    error: Any = None

    @property
    def value(self) -> Any:
        """The op's value as Jepsen prints it: the completion's when known."""
        return self.output if self.status == "ok" else self.input


def pair(events: Sequence[Event], *, path: str | None = None) -> list[Operation]:
    """Pair invocations with completions, per process, in history order.

    Nemesis events are skipped.  A completion with no pending invocation of
    its process, or an invocation while one is pending, is a
    ``HistoryError``; invocations still pending at the end become ``info``.
    The key of an op is the invoke's (or, failing that, the completion's).
    """
    ops: list[Operation] = []
    pending: dict[int | str, Operation] = {}
    for pos, ev in enumerate(events):
        if ev.process == NEMESIS:
            continue
        if ev.type == "invoke":
            if ev.process in pending:
                raise HistoryError(
                    f"process {ev.process!r} invokes {ev.f!r} while its "
                    f"{pending[ev.process].f!r} (event {pending[ev.process].call}) "
                    "has not completed", path=path, line=_line(ev, pos), field="process")
            op = Operation(len(ops), ev.process, ev.f, ev.key, ev.value, None,
                           "info", pos, NEVER, ev.time, None, ev.node)
            ops.append(op)
            pending[ev.process] = op
            continue
        op = pending.pop(ev.process, None)
        if op is None:
            raise HistoryError(f"{ev.type} of {ev.f!r} by process {ev.process!r} "
                               "without a pending invoke", path=path,
                               line=_line(ev, pos), field="process")
        if ev.f != op.f:
            raise HistoryError(f"completion f {ev.f!r} does not match its invoke's "
                               f"{op.f!r}", path=path, line=_line(ev, pos), field="f")
        op.status = ev.type
        op.output = ev.value
        op.error = ev.error
        if op.key is None:
            op.key = ev.key
        if ev.type != "info":
            op.ret = pos
            op.ret_time = ev.time
        if ev.node and not op.node:
            op.node = ev.node
    return ops


def _line(ev: Event, pos: int) -> int:
    """The 1-based line of an event in its file (one per line if unknown)."""
    return ev.line if ev.line is not None else pos + 1


@dataclass
class History:
    """A loaded history: its events, where it came from and how to read it.

    ``model`` is the model its format implies (``None``: let the checker
    choose), since tools disagree on what a failed cas or a nil read mean
    (see :mod:`checkers.models`).
    """

    events: list[Event]
    path: str | None = None
    format: str = "jsonl"
    model: str | None = None

    def operations(self) -> list[Operation]:
        return pair(self.events, path=self.path)

    def nemesis_events(self) -> list[Event]:
        return [e for e in self.events if e.process == NEMESIS]
