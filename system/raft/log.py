"""The in-memory Raft log: entries after an offset, the latest snapshot, and
what has been handed to the driver for persisting and applying.

Indexes start at 1. ``offset`` is the index of the last entry no longer held
in memory (its term is kept as ``offset_term``); ``entries[k]`` has index
``offset + 1 + k``. The latest snapshot covers an index >= ``offset``: the
log may keep a margin of entries behind the snapshot so that a follower that
lags a little gets entries instead of the whole snapshot.

Bookkeeping for ``Ready``:

* ``stable``: entries up to here are durable (or superseded by a snapshot
  waiting to be persisted); entries after it go into the next Ready.
* ``applying``: committed entries up to here have been handed to the driver
  to apply; ``applied`` (<= ``applying``) is how far it has applied them.
* ``pending_snapshot``: a snapshot received from the leader, to be persisted
  (and the state machine restored from it) in the next Ready.
* ``truncate_from``: set when a conflicting suffix was cut off below what
  the driver has already been given; the next Ready tells it to drop its
  durable entries from that index on.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from .messages import Entry, Snapshot


def _term_of(e: Entry) -> int:
    return e.term


class LogError(RuntimeError):
    """A Raft invariant would be broken (e.g. truncating a committed entry)."""


class RaftLog:
    __slots__ = ("offset", "offset_term", "entries", "snapshot", "committed",
                 "applied", "applying", "stable", "handed", "pending_snapshot", "truncate_from")

    def __init__(self, snapshot: Snapshot | None = None,
                 entries: list[Entry] | None = None,
                 committed: int = 0, applied: int | None = None) -> None:
        snap_index = snapshot.index if snapshot else 0
        snap_term = snapshot.term if snapshot else 0
        ents = list(entries or [])
        for a, b in zip(ents, ents[1:]):
            if b.index != a.index + 1 or b.term < a.term:
                raise ValueError(f"recovered log is not contiguous at {a.index}->{b.index}")
        if ents and ents[0].index <= snap_index:
            # A margin of entries retained behind the snapshot: the first one
            # becomes the boundary (its term is all we need of it).
            if ents[-1].index < snap_index:
                ents = []  # entirely covered by the snapshot
            else:
                at = ents[snap_index - ents[0].index]
                if at.term != snap_term:
                    raise ValueError("recovered log disagrees with the snapshot at "
                                     f"index {snap_index}: term {at.term} != {snap_term}")
        if ents and ents[0].index <= snap_index:
            self.offset, self.offset_term = ents[0].index, ents[0].term
            self.entries = ents[1:]
        else:
            if ents and ents[0].index != snap_index + 1:
                raise ValueError(f"recovered log starts at {ents[0].index}, "
                                 f"after snapshot {snap_index}: gap")
            self.offset, self.offset_term = snap_index, snap_term
            self.entries = ents
        self.snapshot = snapshot
        last = self.last_index()
        # A commit index on disk may lag (it is written without fsync), never
        # lead the durable log; the snapshot is committed by definition.
        self.committed = min(max(committed, snap_index), last)
        self.applied = snap_index if applied is None else max(min(applied, self.committed), snap_index)
        self.applying = self.applied
        self.stable = last
        self.handed: int | None = None     # last entry index of an outstanding Ready
        self.pending_snapshot: Snapshot | None = None
        self.truncate_from: int | None = None

    # -- queries ------------------------------------------------------------

    def first_index(self) -> int:
        return self.offset + 1

    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.offset_term

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; ``None`` if compacted away or
        beyond the end (index 0 has term 0)."""
        off = self.offset
        if index > off:
            k = index - off - 1
            return self.entries[k].term if k < len(self.entries) else None
        if index == off:
            return self.offset_term
        snap = self.snapshot
        if snap is not None and index == snap.index:
            return snap.term
        return None

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def entry(self, index: int) -> Entry:
        return self.entries[index - self.offset - 1]

    def slice(self, lo: int, hi: int, max_count: int | None = None,
              max_bytes: int | None = None) -> list[Entry]:
        """Entries with ``lo <= index < hi`` (``lo > offset``), at most
        ``max_count`` of them and, beyond the first, at most ``max_bytes`` of
        payload."""
        if lo <= self.offset:
            raise LogError(f"slice from {lo} but entries up to {self.offset} are compacted")
        hi = min(hi, self.last_index() + 1)
        if max_count is not None:
            hi = min(hi, lo + max_count)
        out = self.entries[lo - self.offset - 1: hi - self.offset - 1]
        if max_bytes is not None and len(out) > 1:
            size = 0
            for k, e in enumerate(out):
                size += len(e.data) + 16
                if size > max_bytes and k > 0:
                    return out[:k]
        return out

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a candidate log ending at (last_index, last_term) at least as
        up to date as ours (Raft §5.4.1)?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def first_index_of_term_at(self, index: int) -> int:
        """The first index, going back from ``index``, whose entry has the
        same term as ``index``'s (not below the first held entry)."""
        t = self.term(index)
        if t is None or index <= self.offset + 1:
            return index
        # Terms never decrease along the log: binary search.
        k = bisect_left(self.entries, t, 0, index - self.offset - 1, key=_term_of)
        return self.offset + 1 + k

    def last_index_of_term(self, term: int, at_most: int) -> int | None:
        """The highest index <= ``at_most`` whose entry has ``term``."""
        hi = min(at_most, self.last_index()) - self.offset
        if hi < 0:
            return None
        k = bisect_right(self.entries, term, 0, hi, key=_term_of)
        if k > 0:
            return self.offset + k if self.entries[k - 1].term == term else None
        return self.offset if self.offset_term == term else None

    # -- changes ------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        if entries and entries[0].index != self.last_index() + 1:
            raise LogError(f"append at {entries[0].index} after {self.last_index()}")
        self.entries.extend(entries)

    def truncate_after(self, index: int) -> None:
        """Drop every entry after ``index`` (a follower's conflicting suffix)."""
        if index < self.committed:
            raise LogError(f"truncating after {index} would lose committed entry {self.committed}")
        if index >= self.last_index():
            return
        first_dropped = index + 1
        written = max(self.stable, self.handed or 0)
        if first_dropped <= written:
            self.truncate_from = (first_dropped if self.truncate_from is None
                                  else min(self.truncate_from, first_dropped))
        del self.entries[index - self.offset:]
        if self.stable > index:
            self.stable = index
        if self.handed is not None and self.handed > index:
            self.handed = index

    def maybe_append(self, prev_index: int, prev_term: int, commit: int,
                     entries: list[Entry]) -> int | None:
        """A follower's handling of AppendEntries: ``None`` if the log does
        not hold (prev_index, prev_term); else the last index the message
        covers, after appending what is new and cutting what conflicts."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for k, e in enumerate(entries):
            t = self.term(e.index)
            if t != e.term:
                if t is not None:
                    self.truncate_after(e.index - 1)
                self.append(entries[k:])
                break
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            if index > self.last_index():
                raise LogError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index
            return True
        return False

    def restore(self, snap: Snapshot) -> None:
        """Replace the whole log with a snapshot received from the leader."""
        self.offset, self.offset_term = snap.index, snap.term
        self.entries = []
        self.snapshot = snap
        self.committed = snap.index
        self.stable = snap.index
        self.handed = None
        self.pending_snapshot = snap
        self.truncate_from = None

    def compact(self, snap: Snapshot, margin: int) -> None:
        """Record a snapshot taken by the state machine and forget entries up
        to ``snap.index - margin`` (never entries not yet durable)."""
        new_offset = min(max(self.offset, snap.index - margin), self.stable)
        if new_offset > self.offset:
            t = self.term(new_offset)
            del self.entries[: new_offset - self.offset]
            self.offset, self.offset_term = new_offset, t  # type: ignore[assignment]
        self.snapshot = snap
