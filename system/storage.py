"""Durable Raft state of one node: hard state, log entries and the latest
snapshot, in a data directory.

Files
-----
``wal``       the write-ahead log: an 8-byte header, then records, each
              ``[u32 length][u32 crc32 of payload][payload]`` (big-endian),
              the payload a msgpack array:

              * ``[1, index, term, data]``   a log entry
              * ``[2, term, vote, commit]``  the hard state (the last wins)
              * ``[3, index, term]``         base: the log is empty here and
                                             continues at ``index + 1``
                                             (written by compaction and by
                                             :meth:`RaftStorage.install_snapshot`)

``snapshot``  the latest snapshot: a header and one record
              ``[index, term, data]``, replaced atomically.

The log file is preallocated in chunks (``prealloc_bytes``, 4 MiB): records
are written into zeroed space, so an fdatasync need not also commit a new
file size each time (measured on ext4 here: ~8,000 syncs/s of one entry
against ~5,800 when appending to a growing file).  Zeros after the last
record are the unused part, not damage.

The log is append-only.  Overwriting a conflicting suffix (a follower taking
the leader's entries) appends the new entries; replay applies the same rule
as :meth:`RaftStorage.append` -- an entry whose index is at or below the last
one first truncates the log from that index -- so nothing is ever rewritten
in place and a crash can only tear the *last* record.  On load, a record
whose length prefix runs past the end of the file, whose length is zero or
absurd, whose CRC does not match or whose payload does not decode is a torn
write: it and everything after it are discarded (the file is truncated
there, so no stale bytes lie beyond the end) and everything before it is
kept.

:meth:`RaftStorage.compact` writes the retained entries (and the hard state)
into ``wal.tmp``, fsyncs it and renames it over ``wal``; the directory is
fsynced before the next :meth:`RaftStorage.sync` returns, since appends made
to the new file would otherwise be lost with a rename that did not survive a
crash.  Snapshots are written the same way (``snapshot.tmp``, fsync, rename,
directory fsync) at once, being rare and large.

Batching: :meth:`append` and :meth:`set_hard_state` only add records to an
in-memory buffer; :meth:`sync` writes the buffer and fsyncs once (fdatasync).
The driver calls it once per Raft Ready batch, before sending the messages
that acknowledge those entries or that vote.

``fsync=False`` reproduces the ``ack-before-fsync`` bug class: :meth:`sync`
then returns at once without making anything durable -- records stay in this
process's memory until the buffer exceeds ``lazy_flush_bytes`` or the driver
calls :meth:`flush` (e.g. from a timer once a second), and even then they are
only handed to the OS, never fsynced.  The node acknowledges entries and
votes that a ``kill -9`` (or a power loss) erases, so a majority killed at
once loses acknowledged writes and a restarted node may vote twice in a term.

Failpoints (:mod:`system.failpoints`, set through the node's admin
endpoint): every fsync and fdatasync -- of the log, of a snapshot, of the
directory -- first calls ``faults.before_fsync()``, which sleeps (a slow
disk) or blocks on an Event (a stalled one).  The node makes every storage
call that can fsync from an executor thread, so a stall parks that thread
and the node's Raft loop, never the event loop that serves the endpoint.

:meth:`RaftStorage.lose_unsynced` is the power loss of the ``crash:
lose-unsynced`` failpoint.  The storage tracks the log's durable length: the
end of the records at the last fdatasync, the length found on load, and the
whole file once a rewrite is renamed over the log (compaction, a new log).
The loss drops the in-memory buffer and cuts the file back to that length.
With ``fsync=True`` it takes nothing :meth:`sync` has returned for, so
nothing the node acknowledged; with ``fsync=False`` it takes every record
this process wrote since it started or last compacted -- acknowledged
entries, terms and votes.  What it does not simulate:

* directory entries not yet fsynced: a file renamed into place (the log after
  compaction, a snapshot) counts as durable whole at once -- even with
  ``fsync=False``, where it was never fsynced.  A real power loss may bring
  back the file it replaced: harmless with ``fsync=True`` (the old log holds
  every synced record, and the directory is fsynced before the next
  :meth:`sync` returns, so before anything written to the new log is
  acknowledged).  A never-fsynced file may come back empty, which ext4's
  ``auto_da_alloc`` (a flush of a file replaced by rename) prevents in
  practice.  A half-written ``snapshot.tmp`` or ``wal.tmp`` is removed on
  load, as after a real crash.
* the kernel's writeback: without fsync, dirty pages still reach the disk
  within about 30 s; here a byte this process never fsynced is lost however
  old it is, while bytes an earlier incarnation left unsynced count as
  durable (the length found on load).
* torn or reordered writes inside the lost tail: the cut is clean at the
  durable length (replay's torn-record rule covers the torn case anyway).

Why hand-written and not a library: LMDB, RocksDB or LevelDB bindings are
native wheels the node image would have to carry, and none of the Python
Raft packages exposes its journal as a library; the one candidate left is
the standard library's sqlite3 (WAL mode, synchronous=FULL, one transaction
per batch).  Measured on this machine (2 vCPUs, ext4, shared and noisy; best
of three): batches of 1 entry, this log ~8,000 syncs/s, sqlite3 ~7,000
commits/s; batches of 64, ~200-250k entries/s for both; CPU alone (no
fsync) ~770k entries/s against ~720k.  Speed does not decide, so these do:
``ack-before-fsync`` must lose acknowledged entries on ``kill -9``, which
needs records held in this process (sqlite hands every commit to the OS);
the crash behaviour is ours to test byte by byte; the fsync points are
exact (one fdatasync per Ready, a directory fsync only after a rename); and
compaction gives the space back at once.  What Raft needs -- an append-only
file, CRC-framed records, explicit fsync points and suffix truncation on
replay -- is a few hundred lines.

Thread-safety: appends and reads may come from the event loop while
:meth:`sync` runs in an executor thread; buffer swaps and file I/O are
serialised by locks and the order of records is kept.  :meth:`status` and
:meth:`lose_unsynced` take no lock an fsync may hold.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

import msgpack

from system.failpoints import Failpoints

log = logging.getLogger("storage")

__all__ = ["RaftStorage", "HardState", "Entry", "Snapshot", "StorageError", "PowerLoss",
           "WAL_NAME", "SNAPSHOT_NAME"]

WAL_NAME = "wal"
SNAPSHOT_NAME = "snapshot"
WAL_MAGIC = b"FLWAL\x00\x01\n"
SNAP_MAGIC = b"FLSNP\x00\x01\n"
_HEAD = struct.Struct(">II")
#: a record longer than this is taken for garbage (a torn length prefix)
MAX_RECORD = 1 << 30
#: the log file grows by this much at a time (zeros after the last record)
PREALLOC_BYTES = 4 << 20

_ENTRY, _HARD, _BASE = 1, 2, 3


class HardState(NamedTuple):
    term: int = 0
    vote: Any = None     # the node voted for in ``term``, or None
    commit: int = 0


class Entry(NamedTuple):
    index: int
    term: int
    data: bytes = b""


class Snapshot(NamedTuple):
    index: int
    term: int
    data: bytes = b""


class StorageError(Exception):
    """Unusable storage: a corrupt snapshot file, a misuse of the API."""


def _frame(payload: bytes) -> bytes:
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


_datasync = getattr(os, "fdatasync", os.fsync)


def _parse(buf: bytes | memoryview, pos: int) -> tuple[Any, int] | None:
    """The record at ``pos`` and the offset after it, or None if torn."""
    end = len(buf)
    if end - pos < _HEAD.size:
        return None
    length, crc = _HEAD.unpack_from(buf, pos)
    start = pos + _HEAD.size
    if length == 0 or length > MAX_RECORD or start + length > end:
        return None
    payload = bytes(buf[start:start + length])
    if zlib.crc32(payload) != crc:
        return None
    try:
        rec = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:
        return None
    if not isinstance(rec, list) or not rec:
        return None
    return rec, start + length


@dataclass
class _Stats:
    appended: int = 0
    syncs: int = 0
    fsyncs: int = 0
    bytes_written: int = 0
    compactions: int = 0
    torn_bytes_discarded: int = 0


@dataclass(frozen=True)
class PowerLoss:
    """What :meth:`RaftStorage.lose_unsynced` dropped, in bytes of the log."""

    buffered_bytes: int     # records still in this process's memory
    unsynced_bytes: int     # handed to the OS, never fsynced
    durable_bytes: int      # the log file's length after the loss


class RaftStorage:
    """The durable state of one Raft node in directory ``path``.

    Call :meth:`load` once first.  Indexes are Raft indexes (1-based); the
    log holds entries ``first_index() .. last_index()``, possibly none."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True,
                 lazy_flush_bytes: int = 1 << 20,
                 prealloc_bytes: int = PREALLOC_BYTES,
                 faults: Failpoints | None = None) -> None:
        self.dir = os.fspath(path)
        self.fsync = fsync
        self.faults = faults if faults is not None else Failpoints()
        self.lazy_flush_bytes = lazy_flush_bytes
        self.prealloc_bytes = prealloc_bytes
        self._wal_path = os.path.join(self.dir, WAL_NAME)
        self._snap_path = os.path.join(self.dir, SNAPSHOT_NAME)
        self._lock = threading.RLock()     # state and buffer
        self._io = threading.RLock()       # file writes, fsyncs, renames; taken first
        self._swap = threading.Lock()      # the log's rename with _durable; no fsync inside
        self._fd: int | None = None
        self._buf = bytearray()
        self._written = 0                  # end of the records in the file
        self._allocated = 0                # file size, preallocation included
        self._end = 0                      # _written + bytes not yet written
        self._durable = 0                  # length of the log file as last fsynced
        self._file_dirty = False           # written, not yet fsynced
        self._dir_dirty = False            # created/renamed, dir not yet fsynced
        self._hs = HardState()
        self._snap_meta: tuple[int, int] = (0, 0)
        self._first = 1
        self._terms: list[int] = []
        self._offsets: list[int] = []
        self.stats = _Stats()

    # ------------------------------------------------------------------ load

    def load(self) -> tuple[HardState, Snapshot | None, list[Entry]]:
        """Open the directory (creating it if new) and recover: the last hard
        state, the latest snapshot (or None) and the log entries after
        replay, a torn tail discarded."""
        with self._io, self._lock:
            if self._fd is not None:
                raise StorageError("load() called twice")
            new_dir = not os.path.isdir(self.dir)
            os.makedirs(self.dir, exist_ok=True)
            if new_dir:
                self._fsync_dir(os.path.dirname(os.path.abspath(self.dir)))
            for name in (WAL_NAME + ".tmp", SNAPSHOT_NAME + ".tmp"):
                try:
                    os.unlink(os.path.join(self.dir, name))
                except FileNotFoundError:
                    pass
            snap = self._read_snapshot()
            if not os.path.exists(self._wal_path):
                self._create_wal()
            entries = self._replay()
            if snap is not None:
                self._snap_meta = (snap.index, snap.term)
                entries = self._reconcile(entries, snap)
            self._first = entries[0].index if entries else (
                snap.index + 1 if snap is not None else self._first)
            return self._hs, snap, entries

    def _create_wal(self) -> None:
        self._replace_wal(WAL_MAGIC)
        if self.fsync:
            self._fsync_dir(self.dir)

    def _replace_wal(self, data: bytes | bytearray) -> None:
        """Write ``data`` to a temporary file, fsync it, rename it over the log
        (which then counts as durable whole: see the module docstring)."""
        tmp = self._wal_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if self.fsync:
                self._fsync(f.fileno())
        with self._swap:
            os.replace(tmp, self._wal_path)
            self._durable = len(data)

    def _fsync(self, fd: int, data_only: bool = False) -> None:
        """Every fsync of the storage goes through here, after its failpoints."""
        self.faults.before_fsync()
        (_datasync if data_only else os.fsync)(fd)

    def _fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    def _read_snapshot(self) -> Snapshot | None:
        try:
            with open(self._snap_path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        parsed = _parse(raw, len(SNAP_MAGIC)) if raw.startswith(SNAP_MAGIC) else None
        if parsed is None:
            # Written to a temporary file and renamed: a bad one is corruption,
            # not a torn write, and the log before it may be compacted away.
            raise StorageError(f"{self._snap_path}: corrupt snapshot file")
        rec = parsed[0]
        return Snapshot(rec[0], rec[1], rec[2])

    def _replay(self) -> list[Entry]:
        with open(self._wal_path, "rb") as f:
            raw = f.read()
        if not raw.startswith(WAL_MAGIC):
            raise StorageError(f"{self._wal_path}: not a write-ahead log of this format")
        pos = len(WAL_MAGIC)
        entries: list[Entry] = []
        offsets: list[int] = []
        first = 1
        hs = HardState()
        view = memoryview(raw)
        while True:
            parsed = _parse(view, pos)
            if parsed is None:
                break
            rec, nxt = parsed
            kind = rec[0]
            if kind == _ENTRY:
                e = Entry(rec[1], rec[2], rec[3])
                last = first + len(entries) - 1
                if e.index <= last:
                    cut = max(e.index - first, 0)
                    del entries[cut:], offsets[cut:]
                    if not entries:
                        first = e.index
                elif e.index != last + 1:
                    if entries:
                        log.warning("%s: gap in the log at %d after %d; dropping the "
                                    "log before it", self._wal_path, e.index, last)
                    entries, offsets, first = [], [], e.index
                entries.append(e)
                offsets.append(pos)
            elif kind == _HARD:
                hs = HardState(rec[1], rec[2], rec[3])
            elif kind == _BASE:
                entries, offsets, first = [], [], rec[1] + 1
            pos = nxt
        self._fd = os.open(self._wal_path, os.O_RDWR)
        if pos < len(raw):
            # Zeros after the last record are preallocated space, not damage.
            torn = len(raw) - pos if view[pos:].tobytes().strip(b"\0") else 0
            if torn:
                self.stats.torn_bytes_discarded += torn
                log.warning("%s: discarding %d bytes of a torn or corrupt record at "
                            "offset %d", self._wal_path, torn, pos)
            # Cut it off either way: nothing stale may lie beyond the end that
            # later writes could line up with (it is preallocated again lazily).
            os.ftruncate(self._fd, pos)
            if torn and self.fsync:
                self._fsync(self._fd)
        view.release()
        # What a previous incarnation wrote counts as durable: only this
        # process's own writes are known to be unsynced.
        self._written = self._allocated = self._end = self._durable = pos
        self._hs = hs
        self._first = first
        self._terms = [e.term for e in entries]
        self._offsets = offsets
        return entries

    def _reconcile(self, entries: list[Entry], snap: Snapshot) -> list[Entry]:
        """Keep the log only where it agrees with the snapshot: it must reach
        the snapshot's index with the snapshot's term there (or start right
        after it).  Otherwise (a crash between saving a received snapshot and
        recording the log's reset) it is dropped."""
        if not entries:
            return entries
        first, last = entries[0].index, entries[-1].index
        ok = (first == snap.index + 1
              or (first <= snap.index <= last
                  and entries[snap.index - first].term == snap.term))
        if ok:
            return entries
        log.warning("%s: log %d..%d disagrees with the snapshot at %d (term %d); "
                    "dropping it", self._wal_path, first, last, snap.index, snap.term)
        self._terms, self._offsets = [], []
        # Record it, or entries appended later would be replayed after the
        # stale ones and dropped with them on the next load.
        self._add_base(snap.index, snap.term)
        self.sync()
        return []

    def _add_base(self, index: int, term: int) -> None:
        rec = _frame(msgpack.packb([_BASE, index, term], use_bin_type=True))
        self._buf += rec
        self._end += len(rec)
        self._first = index + 1
        self._terms, self._offsets = [], []

    # ----------------------------------------------------------------- state

    @property
    def hard_state(self) -> HardState:
        return self._hs

    @property
    def snapshot_meta(self) -> tuple[int, int]:
        """``(index, term)`` of the latest snapshot, ``(0, 0)`` if none."""
        return self._snap_meta

    def first_index(self) -> int:
        """Index of the first entry held (last_index() + 1 if none)."""
        return self._first

    def last_index(self) -> int:
        """Index of the last entry, or of the snapshot / base if none."""
        with self._lock:
            return self._first + len(self._terms) - 1

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; for the index just below the log,
        the snapshot's term if it is the snapshot's index; else None."""
        with self._lock:
            i = index - self._first
            if 0 <= i < len(self._terms):
                return self._terms[i]
            if index == self._snap_meta[0]:
                return self._snap_meta[1]
            return None

    # ---------------------------------------------------------------- writes

    def _need_open(self) -> None:
        if self._fd is None:
            raise StorageError("storage is not loaded (call load() first) or is closed")

    def append(self, entries: Iterable[Any]) -> None:
        """Append entries (objects with ``index``, ``term``, ``data``; indexes
        consecutive).  If the first index is at or below the last one, the
        log is truncated from it first (a follower overwriting a conflicting
        suffix).  Entries at or below the snapshot's index are skipped
        (already covered).  A gap after the last index is an error.
        Durable after the next :meth:`sync`."""
        entries = list(entries)
        if not entries:
            return
        with self._lock:
            self._need_open()
            snap_index = self._snap_meta[0]
            entries = [e for e in entries if e.index > snap_index]
            if not entries:
                return
            for a, b in zip(entries, entries[1:]):
                if b.index != a.index + 1:
                    raise ValueError(f"entries not consecutive: {a.index} then {b.index}")
            head = entries[0].index
            last = self._first + len(self._terms) - 1
            if head > last + 1:
                raise ValueError(f"gap: appending {head} after last index {last}")
            if head < self._first:
                raise ValueError(f"appending {head} below the first index {self._first} "
                                 "of a compacted log")
            cut = head - self._first
            del self._terms[cut:], self._offsets[cut:]
            for e in entries:
                data = e.data
                rec = _frame(msgpack.packb([_ENTRY, e.index, e.term, data], use_bin_type=True))
                self._offsets.append(self._end)
                self._terms.append(e.term)
                self._buf += rec
                self._end += len(rec)
            self.stats.appended += len(entries)

    def set_hard_state(self, hs: Any) -> None:
        """Record the hard state (``term``, ``vote``, ``commit``); a repeat of
        the current one writes nothing.  Durable after the next :meth:`sync`."""
        hs = HardState(hs.term, hs.vote, hs.commit) if not isinstance(hs, HardState) else hs
        with self._lock:
            self._need_open()
            if hs == self._hs:
                return
            rec = _frame(msgpack.packb([_HARD, hs.term, hs.vote, hs.commit], use_bin_type=True))
            self._buf += rec
            self._end += len(rec)
            self._hs = hs

    def _write_out(self) -> None:
        """Hand the buffer to the OS (caller holds ``_io``)."""
        with self._lock:
            if not self._buf:
                return
            data, self._buf = self._buf, bytearray()
            fd = self._fd
        assert fd is not None
        need = self._written + len(data)
        if need > self._allocated and self.prealloc_bytes > 0:
            # Writing into preallocated blocks spares fdatasync a size change
            # per sync (measured: about 25% more syncs/s on ext4).
            size = need + self.prealloc_bytes
            try:
                os.posix_fallocate(fd, self._allocated, size - self._allocated)
                self._allocated = size
            except OSError:  # a filesystem without fallocate
                self.prealloc_bytes = 0
        view = memoryview(data)
        pos = self._written
        while view:
            n = os.pwrite(fd, view, pos)
            view = view[n:]
            pos += n
        self._written = pos
        self._allocated = max(self._allocated, pos)
        self.stats.bytes_written += len(data)
        self._file_dirty = True

    def sync(self) -> None:
        """Make everything appended so far durable: write the buffer, fsync
        the log once, and the directory if a file was created or renamed.
        With ``fsync=False`` (bug ``ack-before-fsync``) it does nothing but
        hand a buffer larger than ``lazy_flush_bytes`` to the OS."""
        with self._io:
            self._need_open()
            self.stats.syncs += 1
            if not self.fsync:
                if len(self._buf) >= self.lazy_flush_bytes:
                    self._write_out()
                return
            self._write_out()
            if self._file_dirty:
                self._fsync(self._fd, data_only=True)  # type: ignore[arg-type]
                self._durable = self._written
                self._file_dirty = False
                self.stats.fsyncs += 1
            if self._dir_dirty:
                self._fsync_dir(self.dir)
                self._dir_dirty = False

    def flush(self) -> None:
        """Hand buffered records to the OS without fsync (for the lazy flush
        timer of ``fsync=False``; :meth:`sync` does this and more)."""
        with self._io:
            self._need_open()
            self._write_out()

    # -------------------------------------------------------------- reading

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries ``lo <= index < hi`` read back from the log file."""
        with self._io, self._lock:
            self._need_open()
            self._write_out()
            first = self._first
            lo = max(lo, first)
            hi = min(hi, first + len(self._terms))
            if lo >= hi:
                return []
            offs = self._offsets[lo - first:hi - first]
            out = []
            with open(self._wal_path, "rb") as f:
                start = offs[0]
                f.seek(start)
                raw = f.read(self._written - start)
            for off in offs:
                parsed = _parse(raw, off - start)
                if parsed is None:
                    raise StorageError(f"{self._wal_path}: unreadable entry at offset {off}")
                rec = parsed[0]
                out.append(Entry(rec[1], rec[2], rec[3]))
            return out

    def load_snapshot(self) -> Snapshot | None:
        """The latest snapshot, read back from its file."""
        with self._io:
            return self._read_snapshot()

    # ------------------------------------------------------ snapshot, compaction

    def save_snapshot(self, snap: Any) -> None:
        """Persist a snapshot (``index``, ``term``, ``data``) atomically and
        durably before returning (temporary file, fsync, rename, directory
        fsync).  The log is untouched: :meth:`compact` it afterwards, or use
        :meth:`install_snapshot` for one received from the leader."""
        snap = Snapshot(snap.index, snap.term, snap.data)
        with self._io:
            self._need_open()
            if snap.index < self._snap_meta[0]:
                raise ValueError(f"snapshot at {snap.index} is older than the saved one "
                                 f"at {self._snap_meta[0]}")
            tmp = self._snap_path + ".tmp"
            body = _frame(msgpack.packb([snap.index, snap.term, snap.data], use_bin_type=True))
            with open(tmp, "wb") as f:
                f.write(SNAP_MAGIC)
                f.write(body)
                f.flush()
                if self.fsync:
                    self._fsync(f.fileno())
            os.replace(tmp, self._snap_path)
            if self.fsync:
                self._fsync_dir(self.dir)
            with self._lock:
                self._snap_meta = (snap.index, snap.term)

    def install_snapshot(self, snap: Any) -> None:
        """A snapshot received from the leader replaces the whole log: save it,
        then record that the log is empty up to its index (durable at the next
        :meth:`sync`; a crash in between is reconciled on load)."""
        self.save_snapshot(snap)
        with self._lock:
            self._add_base(snap.index, snap.term)

    def compact(self, upto_index: int) -> None:
        """Drop entries ``<= upto_index`` (which the saved snapshot must
        cover) by rewriting the retained ones into a new log file that
        atomically replaces the old.  The rename is made durable by the next
        :meth:`sync` (appends after it are synced with it).  Appends wait
        while it runs."""
        with self._io, self._lock:
            self._need_open()
            if upto_index > self._snap_meta[0]:
                raise ValueError(f"compact({upto_index}) beyond the snapshot at "
                                 f"{self._snap_meta[0]}")
            if upto_index < self._first:
                return
            self._write_out()
            keep_from = upto_index + 1 - self._first
            offs = self._offsets[keep_from:]
            terms = self._terms[keep_from:]
            base_term = self.term(upto_index) or 0
            hs = self._hs
            with open(self._wal_path, "rb") as f:
                raw = f.read(self._written)
            out = bytearray(WAL_MAGIC)
            out += _frame(msgpack.packb([_HARD, hs.term, hs.vote, hs.commit],
                                        use_bin_type=True))
            out += _frame(msgpack.packb([_BASE, upto_index, base_term], use_bin_type=True))
            new_offsets = []
            for off in offs:
                length, _ = _HEAD.unpack_from(raw, off)
                new_offsets.append(len(out))
                out += raw[off:off + _HEAD.size + length]
            self._replace_wal(out)
            os.close(self._fd)  # type: ignore[arg-type]
            self._fd = os.open(self._wal_path, os.O_RDWR)
            self._written = self._allocated = self._end = len(out)  # _durable: at the rename
            self._first = upto_index + 1
            self._terms = terms
            self._offsets = new_offsets
            self._file_dirty = False
            self._dir_dirty = True
            self.stats.compactions += 1

    # ----------------------------------------------------------------- misc

    def close(self) -> None:
        """Write out what is buffered (a clean shutdown; no fsync unless
        ``fsync``) and close the log."""
        with self._io:
            if self._fd is None:
                return
            if self.fsync:
                self.sync()
            else:
                self._write_out()
            os.close(self._fd)
            self._fd = None

    def abandon(self) -> None:
        """Close without writing the buffer, as a ``kill -9`` would (tests)."""
        with self._io, self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._buf = bytearray()

    def lose_unsynced(self) -> PowerLoss:
        """Power loss (the ``crash: lose-unsynced`` failpoint): drop the
        buffered records and cut the log file back to its length as last
        fsynced.  The caller exits at once (the node), or abandons this
        object (:meth:`abandon`) and reopens the directory (tests).

        Takes no lock an fsync may hold: a stalled :meth:`sync` holds
        ``_io`` and a stalled :meth:`compact` ``_lock`` too, and a power loss
        does not wait for the disk.  ``_swap`` keeps a compaction's rename
        and its durable length together.  A sync finishing meanwhile can
        only leave records past the cut that it had not yet acknowledged:
        replay keeps or discards them, as after a real power loss."""
        self._need_open()
        with self._swap:
            buffered = len(self._buf)
            self._buf = bytearray()
            durable = self._durable
            os.truncate(self._wal_path, durable)
        return PowerLoss(buffered, max(0, self._written - durable), durable)
    def __enter__(self) -> "RaftStorage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def status(self) -> dict[str, Any]:
        """Counters for the admin endpoint, read without the locks: a stalled
        fsync in :meth:`compact` holds ``_lock``, and the endpoint that lifts
        the stall must still answer."""
        first = self._first
        return {"first_index": first,
                "last_index": first + len(self._terms) - 1,
                "snapshot_index": self._snap_meta[0],
                "snapshot_term": self._snap_meta[1],
                "hard_state": self._hs._asdict(),
                "wal_bytes": self._end, "buffered_bytes": len(self._buf),
                "durable_wal_bytes": self._durable,
                "wal_file_bytes": self._allocated,
                "fsync": self.fsync, **self.stats.__dict__}
