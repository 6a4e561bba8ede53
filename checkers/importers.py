"""Histories written by other tools, read into :class:`~checkers.history.Event`.

Formats are told apart by content, not by file name, since Jepsen and
Porcupine name their files ``.edn``, ``.txt`` and ``.log`` alike:

``jsonl``
    Our own format (:func:`checkers.history.read_jsonl`).
``edn``
    Jepsen/Knossos op maps (``{:type :invoke, :f :read, :value nil,
    :process 0}``): one vector or list of maps, or a stream of maps (one or
    several a line, as in Jepsen's ``history.edn`` and Porcupine's kv data).
``jepsen-log``
    Jepsen 0.0.x text logs: ``INFO  jepsen.util - 3\\t:invoke\\t:read\\tnil``.

Every malformed input raises :class:`~checkers.history.HistoryError` naming
the file, the 1-based line and, where it applies, the field; every event
carries its source line so later pairing errors can name it too.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import re
import threading
from typing import Any, Callable, Iterator

import edn_format
from edn_format import EDNDecodeError, ImmutableDict, ImmutableList, Keyword

from checkers.history import (EVENT_TYPES, NEMESIS, Event, History, HistoryError,
                              event_from_dict, freeze, read_jsonl)

FORMATS = ("jsonl", "edn", "jepsen-log")

_FIELDS = frozenset(("index", "type", "process", "f", "key", "value", "time",
                     "node", "error"))
#: Sniffing reads this much of a file: enough to get past a log's preamble.
_HEAD = 1 << 18
#: A form spanning more lines than this is left to a whole-file parse.
_MAX_FORM_LINES = 10_000

# Jepsen >= 0.3 prints ops as records: #jepsen.history.Op{...}.
edn_format.add_tag("jepsen.history.Op", lambda m: m)


# ------------------------------------------------------------------ EDN core

_local = threading.local()


def _edn_parser() -> Callable[[str], list[Any]]:
    """edn_format's own grammar and lexer, built once per thread.

    ``edn_format.loads_all`` rebuilds both on every call, which costs more
    than the parse of a one-line map (3k lines/s instead of 13k/s).  If the
    library's internals ever move, fall back to its public function.
    """
    parse = getattr(_local, "parse", None)
    if parse is None:
        try:
            import ply.lex
            import ply.yacc
            from edn_format import edn_lex, edn_parse

            yacc = ply.yacc.yacc(module=edn_parse, debug=False, write_tables=False,
                                 errorlog=ply.yacc.NullLogger())
            lexer = ply.lex.lex(module=edn_lex, reflags=int(re.UNICODE),
                                errorlog=ply.lex.NullLogger())
            parse = lambda text: list(yacc.parse(text, lexer=lexer))  # noqa: E731
        except Exception:  # pragma: no cover - depends on the library version
            parse = edn_format.loads_all
        _local.parse = parse
    return parse


@functools.lru_cache(maxsize=4096)
def _parse_line(text: str) -> tuple[Any, ...]:
    """Histories repeat lines (and log values) a lot; parsed forms are immutable."""
    return tuple(_edn_parser()(text))


def _plain(v: Any) -> Any:
    """EDN values to plain Python: keywords and symbols to names, vectors and
    lists to lists, maps to dicts (keys frozen so they hash)."""
    t = type(v)
    if t is Keyword:
        return v.name
    if t is ImmutableList or t is tuple:
        return [_plain(x) for x in v]
    if t is ImmutableDict:
        return {freeze(_plain(k)): _plain(x) for k, x in v.dict.items()}
    if t is frozenset:
        return frozenset(freeze(_plain(x)) for x in v)
    if isinstance(v, edn_format.Symbol):
        return v.name
    if isinstance(v, edn_format.MetadataValue):
        return _plain(v.value)
    if isinstance(v, edn_format.Char):
        return str(v)
    return v


def _show(v: Any) -> str:
    return "nil" if v is None else str(v) if isinstance(v, Keyword) else repr(v)


class _EdnError(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message, self.line = message, line


def _edn_error(e: Exception, text: str, start: int) -> _EdnError:
    """A parse failure of ``text`` (which begins at line ``start``), placed
    on the line of the offending token where the library tells us one."""
    arg: Any = e.args[0] if e.args else None
    pos = getattr(arg, "lexpos", None)
    if pos is not None:
        return _EdnError(f"invalid EDN: unexpected {arg.value!r}",
                         start + text.count("\n", 0, pos))
    msg = str(e)
    if msg == "EOF Reached":
        return _EdnError("invalid EDN: unbalanced brackets", start)
    m = re.search(r"lexpos (\d+)", msg)
    if m:
        return _EdnError(f"invalid EDN: {msg.split(' with lexpos')[0].lower()}",
                         start + text.count("\n", 0, int(m.group(1))))
    m = re.search(r"handle tag ImmutableDict\((.*)\)", msg)
    if m:
        return _EdnError(f"invalid EDN: unknown tag #{m.group(1)}", start)
    if "Even number" in msg:
        return _EdnError("invalid EDN: a map needs an even number of forms", start)
    return _EdnError(f"invalid EDN: {msg or type(e).__name__}", start)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _depth(text: str) -> int:
    """Brackets opened minus closed, strings and comments aside.  Only decides
    when a growing multi-line form is worth handing to the parser again."""
    text = _STRING.sub("", text).split(";", 1)[0]
    return (text.count("[") + text.count("{") + text.count("(")
            - text.count("]") - text.count("}") - text.count(")"))


def _unwrap(lines: list[str]) -> tuple[list[str], int | None]:
    """Drop the brackets of a top-level ``[...]`` or ``(...)`` so a Knossos
    file (a vector with one map a line) parses line by line like a stream.
    Returns the lines and the line that opened an unclosed wrapper, if any."""
    content = [i for i, s in enumerate(lines) if s.strip() and not s.lstrip().startswith(";")]
    if not content:
        return lines, None
    first, last = content[0], content[-1]
    opener = lines[first].lstrip()[:1]
    if opener not in ("[", "("):
        return lines, None
    closer = "]" if opener == "[" else ")"
    lines = list(lines)
    lines[first] = lines[first].replace(opener, " ", 1)
    tail = re.sub(r";[^\"]*$", "", lines[last]).rstrip()  # "] ; end"
    if tail.endswith(closer):
        lines[last] = tail[:-1]
        return lines, None
    return lines, first + 1


def _edn_forms(lines: list[str]) -> Iterator[tuple[int, Any]]:
    """Top-level forms with the line each starts on.

    A line is parsed alone when it is complete (the common case: one map a
    line); an incomplete one grows with the following lines until its
    brackets balance.  Raises ``_EdnError`` naming the line.
    """
    parse, parse_line = _edn_parser(), _parse_line
    buf: list[str] = []
    start = depth = 0
    for no, text in enumerate(lines, 1):
        if not buf:
            s = text.strip()
            if not s or s[0] == ";":
                continue
            start = no
        buf.append(text)
        if len(buf) > 1:
            depth += _depth(text)
            if depth > 0 and len(buf) < _MAX_FORM_LINES:
                continue
        chunk = "\n".join(buf)
        try:
            forms = parse_line(chunk) if len(buf) == 1 else parse(chunk)
        except EDNDecodeError as e:
            if str(e) == "EOF Reached" and len(buf) < _MAX_FORM_LINES:
                if len(buf) == 1:
                    depth = _depth(text)
                continue
            raise _edn_error(e, chunk, start) from None
        except Exception as e:
            raise _edn_error(e, chunk, start) from None
        for form in forms:
            yield start, form
        buf = []
    if buf:
        raise _EdnError("invalid EDN: unbalanced brackets, the form that starts "
                        "here is never closed", start)


def _edn_records(text: str, path: str) -> list[tuple[int | None, Any]]:
    """(line, op map) pairs; a whole-file parse if line by line fails."""
    lines = text.split("\n")
    unwrapped, unclosed = _unwrap(lines)
    try:
        if unclosed is not None:
            raise _EdnError("invalid EDN: unbalanced brackets, the "
                            f"{lines[unclosed - 1].lstrip()[0]!r} opened here is "
                            "never closed", unclosed)
        return list(_edn_forms(unwrapped))
    except _EdnError as err:
        try:  # layouts the line reader does not follow, e.g. "] ; end"
            forms = _edn_parser()(text)
        except Exception:
            raise HistoryError(err.message, path=path, line=err.line) from None
    if len(forms) == 1 and isinstance(forms[0], (ImmutableList, tuple)):
        forms = list(forms[0])
    return [(None, f) for f in forms]


def _process(v: Any, path: str, line: int | None) -> int | str:
    if type(v) is Keyword and v.name == NEMESIS:
        return NEMESIS
    if (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, str):
        return v
    raise HistoryError(f"expected an integer, :nemesis or a string, got {_show(v)}",
                       path=path, line=line, field="process")


def _record(m: Any, path: str, line: int | None) -> dict[str, Any]:
    """An op map's fields that Event has, as plain values; others dropped."""
    if not isinstance(m, ImmutableDict):
        raise HistoryError(f"expected an op map {{:type ... :f ...}}, got {_show(_plain(m))}",
                           path=path, line=line)
    rec: dict[str, Any] = {}
    for k, v in m.dict.items():  # not m.items(): hashing a Keyword is slow
        name = k.name if type(k) is Keyword else k
        if name not in _FIELDS:
            continue
        rec[name] = _process(v, path, line) if name == "process" else _plain(v)
    return rec


def _is_pair(v: Any) -> bool:
    return type(v) is list and len(v) == 2


def _independent(recs: list[dict[str, Any]]) -> bool:
    """Whether values are ``jepsen.independent`` ``[key value]`` tuples.

    Every client event's value must be a pair (a failed or indeterminate
    completion may carry anything), and something must rule out a plain cas
    register, whose cas values are pairs too: a read invoke or a write with a
    pair, or a cas whose pair holds a pair.
    """
    evidence = False
    for r in recs:
        if r.get("process") == NEMESIS:
            continue
        if "key" in r:
            return False
        v: Any = r.get("value")
        typ, f = r.get("type"), r.get("f")
        if not _is_pair(v):
            if typ in ("fail", "info"):
                continue
            return False
        if not evidence:
            evidence = ((f == "read" and typ == "invoke") or f == "write"
                        or (f == "cas" and _is_pair(v[1])))
    return evidence


def _events(recs: list[dict[str, Any]], lines: list[int | None], path: str,
            split: bool) -> list[Event]:
    events = []
    for i, (rec, line) in enumerate(zip(recs, lines)):
        if split and rec.get("process") != NEMESIS and _is_pair(rec.get("value")):
            rec["key"], rec["value"] = rec["value"]
        events.append(event_from_dict(rec, index=i, path=path, line=line))
    return events


def read_edn(path: str) -> list[Event]:
    """Jepsen/Knossos op maps; ``[key value]`` values of independent
    histories are split into ``Event.key`` and ``Event.value``."""
    text = _read_text(path)
    pairs = _edn_records(text, path)
    recs = [_record(m, path, line) for line, m in pairs]
    return _events(recs, [line for line, _ in pairs], path, _independent(recs))


# ---------------------------------------------------------------- jepsen log

#: An op line: ``jepsen.util - `` then a process token and a keyword.
_LOG_OP = re.compile(r"\bjepsen\.util - (\S+)\s+:(\S*)(?:\s+(\S+))?(?:\s+(.*?))?\s*$")
#: A well-formed op line, for sniffing.
_LOG_SNIFF = re.compile(r"\bINFO\b.*\bjepsen\.util - (?:-?\d+|:nemesis)\s+"
                        r":(?:invoke|ok|fail|info)\s+:\S+\s+\S")


def read_jepsen_log(path: str) -> list[Event]:
    """Op lines of a Jepsen 0.0.x log; other log lines are skipped.

    Fields are separated by tabs (spaces in some Porcupine files); the value
    is the rest of the line, read as EDN.  A nemesis value that is not EDN is
    kept as text, since it is only shown, never checked.
    """
    text = _read_text(path)
    events: list[Event] = []
    for no, line in enumerate(text.split("\n"), 1):
        m = _LOG_OP.search(line)
        if m is None:
            continue
        proc_s, typ, f, value_s = m.groups()

        def bad(fld: str, msg: str) -> HistoryError:
            return HistoryError(msg, path=path, line=no, field=fld)

        if proc_s == ":nemesis":
            proc: int | str = NEMESIS
        elif re.fullmatch(r"-?\d+", proc_s):
            proc = int(proc_s)
        else:
            raise bad("process", f"expected an integer or :nemesis, got {proc_s!r}")
        if typ not in EVENT_TYPES:
            raise bad("type", f":{typ} is not one of "
                      f"{', '.join(':' + t for t in EVENT_TYPES)}")
        if f is None or not f.startswith(":") or len(f) < 2:
            raise bad("f", f"expected a keyword such as :read, got {f or 'nothing'!r}")
        if value_s is None:
            raise bad("value", "missing")
        try:
            forms = _parse_line(value_s)
            msg = None if len(forms) == 1 else f"expected one value, got {len(forms)}"
        except Exception as e:
            forms, msg = (), _edn_error(e, value_s, no).message
        if msg is None:
            value = _plain(forms[0])
        elif proc == NEMESIS:
            value = value_s
        else:
            raise bad("value", f"{msg} in {value_s!r}")
        events.append(Event(len(events), typ, proc, f[1:], None, value, line=no))
    if not events and text.strip():
        raise HistoryError("no Jepsen op lines (INFO  jepsen.util - <process>\\t"
                           ":<type>\\t:<f>\\t<value>) found", path=path)
    return events


# ------------------------------------------------------------------- entries

def _read_text(path: str) -> str:
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise HistoryError(f"not UTF-8 text (byte {e.start})", path=path,
                           line=raw.count(b"\n", 0, e.start) + 1) from None


def _read_jsonl(path: str) -> list[Event]:
    try:
        return read_jsonl(path)
    except UnicodeDecodeError:
        _read_text(path)  # raises with the line
        raise


_READERS: dict[str, Callable[[str], list[Event]]] = {
    "jsonl": _read_jsonl, "edn": read_edn, "jepsen-log": read_jepsen_log}


def _looks_edn(lines: list[str]) -> bool:
    """The first form is an op map: a map with :type and :f or :process."""
    try:
        for _, form in _edn_forms(_unwrap(lines)[0]):
            if isinstance(form, ImmutableDict):
                keys = {k.name for k in form if type(k) is Keyword}
                return "type" in keys and bool(keys & {"f", "process"})
            return False
    except Exception:
        return False
    return False


def sniff(path: str | os.PathLike[str]) -> str | None:
    """The format of a file by its content; ``None`` if it is no history.

    An empty file is an empty history (a run that never started), in our
    own format.
    """
    with open(path, "rb") as fh:
        raw = fh.read(_HEAD)
    if not raw.strip():
        return "jsonl"
    if b"\0" in raw:
        return None
    lines = raw.decode("utf-8", errors="replace").lstrip("\ufeff").split("\n")
    if len(raw) == _HEAD:
        lines.pop()  # a partial last line
    first = next((s.strip() for s in lines if s.strip()), "")
    if first.startswith("{"):
        try:
            obj = json.loads(first)
        except ValueError:
            pass
        else:
            return "jsonl" if isinstance(obj, dict) and "type" in obj else None
    if first[:1] in ("[", "(", "{", "#", ";") and _looks_edn(lines):
        return "edn"
    if any(_LOG_SNIFF.search(s) for s in lines):
        return "jepsen-log"
    return None


def load(path: str | os.PathLike[str], format: str | None = None) -> History:
    """Read one history, in ``format`` or in the format its content shows."""
    if format is not None and format not in FORMATS:
        raise ValueError(f"unknown history format {format!r}; "
                         f"expected one of: {', '.join(FORMATS)}")
    path = os.fspath(path)
    fmt = format or sniff(path)
    if fmt is None:
        raise HistoryError("not a history in any known format "
                           f"({', '.join(FORMATS)})", path=path)
    return History(events=_READERS[fmt](path), path=path, format=fmt)


def discover(paths: list[str]) -> list[str]:
    """The history files named or found under folders, in order.

    Folders are walked recursively (hidden entries skipped) and keep only
    the files that sniff as a history, sorted; a file named explicitly is
    always kept, so that loading it reports what is wrong with it.
    """
    found: list[str] = []
    for p in map(os.fspath, paths):
        if os.path.isdir(p):
            inner = []
            for root, dirs, files in os.walk(p):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                inner += [os.path.join(root, f) for f in files if not f.startswith(".")]
            found += [f for f in sorted(inner) if _is_history(f)]
        elif os.path.exists(p):
            found.append(p)
        else:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), p)
    return list(dict.fromkeys(found))


def _is_history(path: str) -> bool:
    try:
        return sniff(path) is not None
    except OSError:
        return False
