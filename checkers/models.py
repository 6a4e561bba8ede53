"""Sequential specifications for the linearizability checkers.

A model is as small as Porcupine's: ``init`` gives the initial state,
``step`` says whether an op is legal in a state and what state follows,
``partition`` splits a history into independent parts (one per key), and
``describe_*`` render ops and states for witnesses.  ``keep`` says which ops
constrain anything at all (a failed or indeterminate read does not), and
``readonly`` which ops never change the state (the search commits to those
greedily).
States must be hashable: the search memoises on them.

Tools disagree on two words: Porcupine reads a failed ``cas`` as a compare
that found another value and a ``nil`` read as "never written"; Knossos drops
failed ops and accepts a ``nil`` read in any state.  Both conventions are
models here, so each tool's histories get that tool's verdicts.  DynamoDB
says why an op failed, so the harness's own model reads a failure as a
mismatch only when the store said the condition was false.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Literal, NamedTuple, Protocol

from checkers.history import Operation, condition_failed

State = Hashable


class Model(Protocol):
    name: str

    def init(self) -> State: ...

    def step(self, state: State, op: Operation) -> tuple[bool, State]: ...

    def keep(self, op: Operation) -> bool: ...

    def readonly(self, op: Operation) -> bool: ...

    def partition(self, ops: list[Operation]) -> dict[Any, list[Operation]]: ...

    def describe_op(self, op: Operation) -> str: ...

    def describe_state(self, state: State) -> str: ...


class RegisterOp(NamedTuple):
    """An op seen as a register op, for the unique-value fast path.

    ``kind`` is read, write or cas; ``expect`` is the value a read returned or
    a cas compared against; ``value`` the value a write or cas put.
    """

    kind: Literal["read", "write", "cas"]
    expect: Any
    value: Any


def by_key(ops: list[Operation]) -> dict[Any, list[Operation]]:
    parts: dict[Any, list[Operation]] = defaultdict(list)
    for op in ops:
        parts[op.key].append(op)
    return dict(parts)


def _fmt(v: Any) -> str:
    return "nil" if v is None else repr(v) if isinstance(v, str) else str(v)


def _pair_value(v: Any) -> tuple[Any, Any]:
    if not isinstance(v, (list, tuple)) or len(v) != 2:
        raise ValueError(f"a cas value must be [from to], got {v!r}")
    return v[0], v[1]


@dataclass(frozen=True)
class CasRegister:
    """A register with read, write and compare-and-set (``cas [from to]``).

    ``failed_cas``: ``"drop"`` (Knossos, Jepsen) treats a failed cas as an op
    that never happened; ``"mismatch"`` (Porcupine) as a compare that found
    another value; ``"condition"`` (DynamoDB) as a compare that found another
    value only when the store said so (the op's ``error`` names
    ConditionalCheckFailed: :func:`checkers.history.condition_failed`), and
    as an op that never happened otherwise (a refused connection, a
    validation error: they say nothing about the value).
    ``nil_read``: ``"unwritten"`` makes a nil read mean "never written";
    ``"any"`` (Knossos) accepts it in any state.  With ``cas=False`` it is a
    plain read/write register.  ``fs`` maps op names to read/write/cas/delete.
    """

    name: str = "cas-register"
    failed_cas: Literal["drop", "mismatch", "condition"] = "drop"
    nil_read: Literal["unwritten", "any"] = "any"
    fs: tuple[tuple[str, str], ...] = (("read", "read"), ("write", "write"),
                                       ("cas", "cas"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "_kinds", dict(self.fs))

    def kind(self, op: Operation) -> str:
        try:
            return self._kinds[op.f]  # type: ignore[attr-defined]
        except KeyError:
            raise ValueError(f"model {self.name} has no operation {op.f!r} (it knows "
                             f"{', '.join(f for f, _ in self.fs)})") from None

    def readonly(self, op: Operation) -> bool:
        """Whether the op can never change the state (lets the search commit
        to it greedily: see :mod:`checkers.wgl`)."""
        return self.kind(op) == "read" or op.status == "fail"

    def mismatch(self, op: Operation) -> bool:
        """Whether a failed cas proves its compare found another value."""
        return self.failed_cas == "mismatch" or (
            self.failed_cas == "condition" and condition_failed(op.error))

    def init(self) -> State:
        return None

    def keep(self, op: Operation) -> bool:
        kind = self.kind(op)
        if kind == "cas":
            _pair_value(op.input)
        if op.status == "fail":
            return kind == "cas" and self.mismatch(op)
        if op.status == "info":
            return kind != "read"
        return True

    def step(self, state: State, op: Operation) -> tuple[bool, State]:
        kind = self._kinds[op.f]  # type: ignore[attr-defined]
        if kind == "read":
            v = op.output
            if v is None and self.nil_read == "any":
                return True, state
            return v == state, state
        if kind == "write":
            return True, op.input
        if kind == "delete":
            return True, None
        old, new = op.input
        if op.status == "ok":
            return state == old, new
        if op.status == "fail":
            return state != old, state
        return True, new if state == old else state

    def as_register(self, op: Operation) -> RegisterOp | None:
        """The op as a read/write/cas; ``None`` if it is not one (a delete)."""
        kind = self.kind(op)
        if kind == "read":
            return RegisterOp("read", op.output, None)
        if kind == "write":
            return RegisterOp("write", None, op.input)
        if kind == "cas":
            old, new = _pair_value(op.input)
            return RegisterOp("cas", old, new)
        return None

    def partition(self, ops: list[Operation]) -> dict[Any, list[Operation]]:
        return by_key(ops)

    def describe_op(self, op: Operation) -> str:
        kind = self.kind(op)
        if kind == "read":
            return f"{op.f} -> {_fmt(op.output) if op.status == 'ok' else '?'}"
        if kind == "cas":
            old, new = _pair_value(op.input)
            return f"{op.f} {_fmt(old)}->{_fmt(new)}" + (
                " (failed)" if op.status == "fail" else "")
        if kind == "delete":
            return op.f
        return f"{op.f} {_fmt(op.input)}"

    def describe_state(self, state: State) -> str:
        return "unwritten" if state is None else _fmt(state)


@dataclass(frozen=True)
class KeyValue:
    """Porcupine's key-value store: get, put and append on string values."""

    name: str = "kv"

    def init(self) -> State:
        return ""

    def readonly(self, op: Operation) -> bool:
        return op.f == "get"

    def keep(self, op: Operation) -> bool:
        if op.f not in ("get", "put", "append"):
            raise ValueError(f"model kv has no operation {op.f!r} (it knows get, put, append)")
        if op.status == "fail":
            return False
        return not (op.status == "info" and op.f == "get")

    def step(self, state: State, op: Operation) -> tuple[bool, State]:
        if op.f == "get":
            return (op.output or "") == state, state
        if op.f == "put":
            return True, op.input or ""
        return True, state + (op.input or "")

    def partition(self, ops: list[Operation]) -> dict[Any, list[Operation]]:
        return by_key(ops)

    def describe_op(self, op: Operation) -> str:
        if op.f == "get":
            return f"get -> {op.output!r}" if op.status == "ok" else "get -> ?"
        return f"{op.f} {op.input!r}"

    def describe_state(self, state: State) -> str:
        return repr(state)


#: The harness's register workload on one DynamoDB item: GetItem returns the
#: value or nil (no item), PutItem writes, UpdateItem with a
#: ConditionExpression on the current value is a cas (``[expected new]``,
#: expected nil meaning attribute_not_exists) whose ConditionalCheckFailed
#: proves the value differed (any other failure proves only that it did not
#: happen), DeleteItem removes the item.
DYNAMO_ITEM = CasRegister(
    name="dynamo-item", failed_cas="condition", nil_read="unwritten",
    fs=(("get", "read"), ("put", "write"), ("update", "cas"), ("delete", "delete")))

MODELS: dict[str, Callable[[], Model]] = {
    "register": lambda: CasRegister(name="register", nil_read="unwritten",
                                    fs=(("read", "read"), ("write", "write"))),
    "cas-register": lambda: CasRegister(),
    "etcd": lambda: CasRegister(name="etcd", failed_cas="mismatch", nil_read="unwritten"),
    "kv": lambda: KeyValue(),
    "dynamo-item": lambda: DYNAMO_ITEM,
}


def get_model(name: str) -> Model:
    try:
        return MODELS[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of "
                         f"{', '.join(MODELS)}") from None


def infer_model(fs: set[str], fmt: str) -> str:
    """The model a history's format and operation names imply.

    Jepsen text logs come from Porcupine's etcd data, so they get Porcupine's
    conventions; EDN histories get Knossos's; our own JSONL gets ours.
    """
    if fmt == "jepsen-log":
        return "etcd"
    if "append" in fs or (fs <= {"get", "put"} and fmt != "jsonl"):
        return "kv"
    if fs & {"get", "put", "update", "delete"}:
        return "dynamo-item"
    if fs <= {"read", "write"} and fmt == "jsonl":
        return "register"
    return "cas-register"
