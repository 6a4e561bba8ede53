"""Raft log records and peer messages, with a compact wire form.

Every message is a small dataclass. ``msg.to_wire()`` gives a plain list
(ints, floats, strings, bools, bytes, ``None`` and nested lists) that
msgpack (or any similar codec) can carry; ``message_from_wire(obj)`` turns
it back into the dataclass. The first element of the list is a type code,
then ``term, src, dst``, then the fields of the type in declaration order.

Fields shared by the leader's messages and their responses:

* ``seq``: a number the leader gives every AppendEntries, Heartbeat and
  InstallSnapshot it sends, increasing for the life of the node; the
  response echoes it. ReadIndex uses it to know that a quorum answered a
  message sent *after* a read was registered.
* ``ts``: the leader's ``now()`` when it created the message; the response
  echoes it, so the leader learns, per follower, the send time of the latest
  acknowledged message (the "sent" lease anchor) without keeping a table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Union


def _b(x: Any) -> bytes:
    """bytes from the wire; refuses ints (``bytes(10**9)`` would allocate)."""
    if isinstance(x, bytes):
        return x
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    raise TypeError(f"expected bytes, got {type(x).__name__}")


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data == b""`` is the leader's no-op (appended on
    election); the state machine skips it. Proposals must not be empty."""

    index: int
    term: int
    data: bytes = b""

    def to_wire(self) -> list:
        return [self.index, self.term, self.data]

    @classmethod
    def from_wire(cls, obj: list) -> "Entry":
        return cls(int(obj[0]), int(obj[1]), _b(obj[2]))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine snapshot covering every entry up to ``index``
    (``term`` is the term of the entry at ``index``). ``data`` is opaque to
    Raft; ``peers`` records the (static) membership for completeness."""

    index: int
    term: int
    data: bytes = b""
    peers: tuple[str, ...] = ()

    def to_wire(self) -> list:
        return [self.index, self.term, self.data, list(self.peers)]

    @classmethod
    def from_wire(cls, obj: list) -> "Snapshot":
        return cls(int(obj[0]), int(obj[1]), _b(obj[2]), tuple(str(p) for p in obj[3]))


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable besides the log: current term, the vote cast in
    it, and the commit index (commit may lag on disk without harm)."""

    term: int = 0
    vote: str | None = None
    commit: int = 0

    def to_wire(self) -> list:
        return [self.term, self.vote, self.commit]

    @classmethod
    def from_wire(cls, obj: list) -> "HardState":
        return cls(int(obj[0]), None if obj[1] is None else str(obj[1]), int(obj[2]))


# --------------------------------------------------------------------------
# Messages


@dataclass(slots=True)
class Message:
    """Common header: the sender's term, the sender and the receiver."""

    term: int
    src: str
    dst: str

    CODE: ClassVar[int] = 0

    def to_wire(self) -> list:
        return [self.CODE, self.term, self.src, self.dst, *self._body()]

    def _body(self) -> list:  # pragma: no cover - overridden
        return []

    @classmethod
    def from_wire(cls, obj: list) -> "AnyMessage":
        """Decode any message (``Message.from_wire``) or, called on a
        subclass, one of that type only."""
        msg = message_from_wire(obj)
        if cls is not Message and not isinstance(msg, cls):
            raise ValueError(f"expected {cls.__name__}, got {type(msg).__name__}")
        return msg


@dataclass(slots=True)
class VoteRequest(Message):
    """RequestVote, or a PreVote when ``pre`` (then ``term`` is the term the
    pre-candidate *would* campaign in; its own term is unchanged). ``force``
    is set by a transfer target (after TimeoutNow): voters grant it even
    while they have a live leader (leader stickiness is bypassed)."""

    last_index: int = 0
    last_term: int = 0
    pre: bool = False
    force: bool = False

    CODE: ClassVar[int] = 1

    def _body(self) -> list:
        return [self.last_index, self.last_term, int(self.pre) | (int(self.force) << 1)]

    @classmethod
    def _from(cls, h: tuple[int, str, str], b: list) -> "VoteRequest":
        flags = int(b[2])
        return cls(*h, int(b[0]), int(b[1]), bool(flags & 1), bool(flags & 2))


@dataclass(slots=True)
class VoteResponse(Message):
    """Answer to a VoteRequest. A granted pre-vote carries the requested
    term, so that it does not look stale to the pre-candidate."""

    granted: bool = False
    pre: bool = False

    CODE: ClassVar[int] = 2

    def _body(self) -> list:
        return [self.granted, self.pre]

    @classmethod
    def _from(cls, h: tuple[int, str, str], b: list) -> "VoteResponse":
        return cls(*h, bool(b[0]), bool(b[1]))


@dataclass(slots=True)
class AppendEntries(Message):
    """Entries ``prev_index+1 ..`` following (prev_index, prev_term), and the
    leader's commit index. On the wire, entry indexes are implied."""

    prev_index: int = 0
    prev_term: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    seq: int = 0
    ts: float = 0.0

    CODE: ClassVar[int] = 3

    def _body(self) -> list:
        flat: list = []
        for e in self.entries:
            flat.append(e.term)
            flat.append(e.data)
        return [self.prev_index, self.prev_term, self.commit, self.seq, self.ts, flat]

    @classmethod
    def _from(cls, h: tuple[int, str, str], b: list) -> "AppendEntries":
        prev = int(b[0])
        flat = b[5]
        ents = [Entry(prev + 1 + k, int(flat[2 * k]), _b(flat[2 * k + 1]))
                for k in range(len(flat) // 2)]
        return cls(*h, prev, int(b[1]), ents, int(b[2]), int(b[3]), float(b[4]))


@dataclass(slots=True)
class AppendResponse(Message):
    """Answer to AppendEntries and InstallSnapshot.

    On success, ``index`` is the highest index known to match the leader's
    log. On rejection, ``index`` echoes the rejected ``prev_index`` and the
    hint allows skipping a whole term at a time: ``hint_term`` is the
    follower's term at ``prev_index`` (``None`` when its log is shorter)
    and ``hint_index`` the first index the follower holds with that term
    (or its last index + 1 when ``hint_term`` is ``None``)."""

    success: bool = True
    index: int = 0
    hint_index: int = 0
    hint_term: int | None = None
    seq: int = 0
    ts: float = 0.0

    CODE: ClassVar[int] = 4

    def _body(self) -> list:
        return [self.success, self.index, self.hint_index, self.hint_term, self.seq, self.ts]

    @classmethod
    def _from(cls, h: tuple[int, str, str], b: list) -> "AppendResponse":
        return cls(*h, bool(b[0]), int(b[1]), int(b[2]),
                   None if b[3] is None else int(b[3]), int(b[4]), float(b[5]))


@dataclass(slots=True)
class Heartbeat(Message):
    """Leader liveness; ``commit`` is min(follower's match, leader commit)
    so a follower never learns a commit index past what it holds."""

    commit: int = 0
    seq: int = 0
    ts: float = 0.0

    CODE: ClassVar[int] = 5

    def _body(self) -> list:
        return [self.commit, self.seq, self.ts]

    @classmethod
    def _from(cls, h: tuple[int, str, str], b: list) -> "Heartbeat":
        return cls(*h, int(b[0]), int(b[1]), float(b[2]))


@dataclass(slots=True)
class HeartbeatResponse(Message):
    seq: int = 0
    ts: float = 0.0

    CODE: ClassVar[int] = 6

    def _body(self) -> list:
        return [self.seq, self.ts]

    @classmethod
    def _from(cls, h: tuple[int, str, str], b: list) -> "HeartbeatResponse":
        return cls(*h, int(b[0]), float(b[1]))


@dataclass(slots=True)
class InstallSnapshot(Message):
    """The whole snapshot in one message; answered by an AppendResponse."""

    snapshot: Snapshot = field(default_factory=lambda: Snapshot(0, 0))
    seq: int = 0
    ts: float = 0.0

    CODE: ClassVar[int] = 7

    def _body(self) -> list:
        return [self.snapshot.to_wire(), self.seq, self.ts]

    @classmethod
    def _from(cls, h: tuple[int, str, str], b: list) -> "InstallSnapshot":
        return cls(*h, Snapshot.from_wire(b[0]), int(b[1]), float(b[2]))


@dataclass(slots=True)
class TimeoutNow(Message):
    """Leadership transfer: the receiver campaigns at once (no PreVote)."""

    CODE: ClassVar[int] = 8

    def _body(self) -> list:
        return []

    @classmethod
    def _from(cls, h: tuple[int, str, str], b: list) -> "TimeoutNow":
        return cls(*h)


AnyMessage = Union[VoteRequest, VoteResponse, AppendEntries, AppendResponse,
                   Heartbeat, HeartbeatResponse, InstallSnapshot, TimeoutNow]

_BY_CODE: dict[int, Any] = {cls.CODE: cls for cls in (
    VoteRequest, VoteResponse, AppendEntries, AppendResponse,
    Heartbeat, HeartbeatResponse, InstallSnapshot, TimeoutNow)}


def message_from_wire(obj: list) -> AnyMessage:
    """Inverse of ``Message.to_wire``. Raises ``ValueError`` on a malformed
    or unknown message (a peer must never crash the node)."""
    try:
        cls = _BY_CODE[int(obj[0])]
        term, src, dst = int(obj[1]), str(obj[2]), str(obj[3])
        return cls._from((term, src, dst), list(obj[4:]))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed raft message: {exc!r}") from None
