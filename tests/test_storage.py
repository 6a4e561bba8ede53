"""Durable Raft storage: recovery from torn writes, truncation, compaction,
snapshots, batching of fsyncs, and the ack-before-fsync mode."""

from __future__ import annotations

import os
import shutil
import threading

import pytest

import system.storage as storage_mod
from system.storage import (SNAPSHOT_NAME, WAL_NAME, Entry, HardState, RaftStorage,
                            Snapshot, StorageError)


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, b"e%d-t%d" % (i, term)) for i in range(lo, hi + 1)]


def opened(path, **kw) -> tuple[RaftStorage, tuple]:
    s = RaftStorage(path, **kw)
    return s, s.load()


def reload(path, **kw):
    s = RaftStorage(path, **kw)
    out = s.load()
    s.close()
    return out


def test_fresh_directory(tmp_path):
    d = tmp_path / "node" / "data"
    s, (hs, snap, entries) = opened(d)
    assert hs == HardState() and snap is None and entries == []
    assert s.first_index() == 1 and s.last_index() == 0
    assert sorted(os.listdir(d)) == [WAL_NAME]
    with pytest.raises(StorageError):
        s.load()
    s.close()


def test_round_trip(tmp_path):
    s, _ = opened(tmp_path)
    s.append(ents(1, 5))
    s.set_hard_state(HardState(1, "n2", 3))
    s.sync()
    s.append(ents(6, 6, term=2))
    s.set_hard_state(HardState(2, None, 5))
    s.sync()
    assert s.term(6) == 2 and s.term(7) is None and s.last_index() == 6
    assert s.entries(2, 5) == ents(2, 4)
    assert s.entries(0, 100) == ents(1, 5) + ents(6, 6, 2)
    s.close()
    hs, snap, entries = reload(tmp_path)
    assert hs == HardState(2, None, 5) and snap is None
    assert entries == ents(1, 5) + ents(6, 6, 2)


def test_unsynced_records_are_lost_like_after_kill(tmp_path):
    s, _ = opened(tmp_path)
    s.append(ents(1, 3))
    s.sync()
    s.append(ents(4, 5))
    s.set_hard_state(HardState(9, "x", 4))
    s.abandon()  # kill -9 before sync(): nothing of the batch was written
    hs, _, entries = reload(tmp_path)
    assert entries == ents(1, 3) and hs == HardState()


def test_repeated_hard_state_writes_nothing(tmp_path):
    s, _ = opened(tmp_path)
    s.set_hard_state(HardState(1, "a", 0))
    s.sync()
    size, written = s.status()["wal_bytes"], s.stats.bytes_written
    s.set_hard_state(HardState(1, "a", 0))
    s.sync()
    assert s.status()["wal_bytes"] == size and s.stats.bytes_written == written
    s.close()


# --------------------------------------------------------- torn writes


def _write_then_tear(tmp_path, last_record):
    """A log with some records, then one more; returns the path, the size
    before the last record and the full size."""
    src = tmp_path / "src"
    s, _ = opened(src)
    s.append(ents(1, 4))
    s.set_hard_state(HardState(3, "n1", 2))
    s.append(ents(5, 5, term=3))
    s.sync()
    before = s.status()["wal_bytes"]
    last_record(s)
    s.sync()
    full = s.status()["wal_bytes"]
    s.close()
    return src, before, full


@pytest.mark.parametrize("kind", ["entry", "hard_state", "overwrite"])
def test_torn_last_record_at_every_offset(tmp_path, kind):
    last = {
        "entry": lambda s: s.append([Entry(6, 3, b"x" * 40)]),
        "hard_state": lambda s: s.set_hard_state(HardState(4, "n3", 5)),
        "overwrite": lambda s: s.append([Entry(3, 4, b"conflict")]),
    }[kind]
    src, before, full = _write_then_tear(tmp_path, last)
    assert full > before
    earlier = (HardState(3, "n1", 2), ents(1, 4) + ents(5, 5, 3))
    with open(src / WAL_NAME, "rb") as f:
        raw = f.read()
    assert raw[full:].strip(b"\0") == b""  # preallocated space after the records
    d = tmp_path / "torn"
    for cut in range(before, full):
        # a file cut short, and one whose preallocated zeros follow the tear
        zeros = 0 if cut % 2 else 4096
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        with open(d / WAL_NAME, "wb") as f:
            f.write(raw[:cut] + b"\0" * zeros)
        # (fsync only at the ends of the range: it is slow and changes nothing here)
        s = RaftStorage(d, prealloc_bytes=4096, fsync=cut in (before, full - 1))
        hs, snap, entries = s.load()
        assert (hs, entries) == earlier, cut
        assert os.path.getsize(d / WAL_NAME) == before  # the torn tail is cut off
        # bytes of a torn record count as damage; zeros alone do not
        torn = cut - before + zeros if raw[before:cut].strip(b"\0") else 0
        assert s.stats.torn_bytes_discarded == torn
        # and the log goes on cleanly after it
        s.append([Entry(6, 3, b"after")])
        s.sync()
        s.close()
        hs2, _, entries2 = reload(d)
        assert entries2 == earlier[1] + [Entry(6, 3, b"after")] and hs2 == earlier[0]
    # the whole record is kept
    hs, _, entries = reload(src)
    if kind == "entry":
        assert entries[-1] == Entry(6, 3, b"x" * 40)
    elif kind == "hard_state":
        assert hs == HardState(4, "n3", 5)
    else:
        assert entries == ents(1, 2) + [Entry(3, 4, b"conflict")]


def test_corrupt_byte_and_zero_fill_are_discarded(tmp_path):
    src, before, full = _write_then_tear(tmp_path, lambda s: s.append([Entry(6, 3, b"y" * 20)]))
    raw = bytearray((src / WAL_NAME).read_bytes())[:full]
    flipped = bytearray(raw)
    flipped[full - 3] ^= 0xFF  # a bit rot in the payload: CRC mismatch
    (src / WAL_NAME).write_bytes(bytes(flipped))
    _, _, entries = reload(src)
    assert entries == ents(1, 4) + ents(5, 5, 3)
    # a crash that left the file extended with zeros
    (src / WAL_NAME).write_bytes(bytes(raw) + b"\x00" * 4096)
    _, _, entries = reload(src)
    assert entries[-1] == Entry(6, 3, b"y" * 20)
    assert os.path.getsize(src / WAL_NAME) == full


def test_preallocation_is_not_damage(tmp_path):
    s, _ = opened(tmp_path, prealloc_bytes=1 << 16)
    s.append(ents(1, 3))
    s.sync()
    st = s.status()
    assert st["wal_file_bytes"] > st["wal_bytes"]
    assert os.path.getsize(tmp_path / WAL_NAME) == st["wal_file_bytes"]
    s.abandon()
    s, (_, _, entries) = opened(tmp_path, prealloc_bytes=1 << 16)
    assert entries == ents(1, 3) and s.stats.torn_bytes_discarded == 0
    s.append(ents(4, 4))
    s.sync()
    s.close()
    assert reload(tmp_path, prealloc_bytes=0)[2] == ents(1, 4)


def test_not_a_wal_is_refused(tmp_path):
    (tmp_path / WAL_NAME).write_bytes(b"something else entirely")
    with pytest.raises(StorageError):
        RaftStorage(tmp_path).load()


# ---------------------------------------------------- suffix truncation


def test_conflicting_suffix_is_replaced(tmp_path):
    s, _ = opened(tmp_path)
    s.append(ents(1, 10, term=1))
    s.sync()
    s.append(ents(6, 7, term=2))  # a new leader's entries from 6 on
    assert s.last_index() == 7 and s.term(6) == 2 and s.term(5) == 1
    s.sync()
    s.append(ents(8, 9, term=2))
    s.append(ents(7, 7, term=3))  # and again, within one batch
    s.sync()
    expect = ents(1, 5, 1) + ents(6, 6, 2) + ents(7, 7, 3)
    assert s.entries(1, 100) == expect
    s.close()
    _, _, entries = reload(tmp_path)
    assert entries == expect


def test_append_checks(tmp_path):
    s, _ = opened(tmp_path)
    s.append(ents(1, 3))
    with pytest.raises(ValueError):
        s.append(ents(5, 6))  # a gap
    with pytest.raises(ValueError):
        s.append([Entry(4, 1, b""), Entry(6, 1, b"")])  # not consecutive
    s.append([])
    assert s.last_index() == 3
    s.close()
    with pytest.raises(StorageError):
        s.append(ents(4, 4))


# ----------------------------------------------- snapshots and compaction


def test_snapshot_and_compaction(tmp_path):
    s, _ = opened(tmp_path)
    s.append(ents(1, 100, term=2))
    s.set_hard_state(HardState(2, "n1", 90))
    s.sync()
    size_before = s.status()["wal_bytes"]
    with pytest.raises(ValueError):
        s.compact(10)  # no snapshot covers it yet
    s.save_snapshot(Snapshot(80, 2, b"state@80"))
    assert (tmp_path / SNAPSHOT_NAME).exists()
    s.compact(80)
    assert s.first_index() == 81 and s.last_index() == 100
    assert s.term(80) == 2 and s.term(79) is None
    assert os.path.getsize(tmp_path / WAL_NAME) < size_before / 3  # no preallocation yet
    assert s.entries(1, 200) == ents(81, 100, 2)
    s.append(ents(101, 102, term=3))
    s.sync()
    s.close()

    s, (hs, snap, entries) = opened(tmp_path)
    assert hs == HardState(2, "n1", 90)
    assert snap == Snapshot(80, 2, b"state@80")
    assert entries == ents(81, 100, 2) + ents(101, 102, 3)
    assert s.first_index() == 81 and s.snapshot_meta == (80, 2)
    # compact again, keeping no entry at all, then go on
    s.save_snapshot(Snapshot(102, 3, b"state@102"))
    s.compact(102)
    assert s.first_index() == 103 and s.last_index() == 102 and s.term(102) == 3
    s.append(ents(103, 103, term=3))
    s.sync()
    s.close()
    _, snap, entries = reload(tmp_path)
    assert snap.index == 102 and entries == ents(103, 103, 3)
    assert not (tmp_path / (WAL_NAME + ".tmp")).exists()


def test_compaction_may_keep_entries_below_the_snapshot(tmp_path):
    s, _ = opened(tmp_path)
    s.append(ents(1, 50))
    s.sync()
    s.save_snapshot(Snapshot(40, 1, b"s"))
    s.compact(30)  # keep 31..50 for slow followers
    s.close()
    _, snap, entries = reload(tmp_path)
    assert entries == ents(31, 50) and snap.index == 40


def test_appends_below_the_snapshot_are_skipped(tmp_path):
    s, _ = opened(tmp_path)
    s.append(ents(1, 10))
    s.save_snapshot(Snapshot(10, 1, b"s"))
    s.compact(10)
    s.append(ents(8, 12))  # 8..10 are covered by the snapshot
    assert s.first_index() == 11 and s.last_index() == 12
    s.close()
    assert reload(tmp_path)[2] == ents(11, 12)


def test_older_snapshot_is_refused(tmp_path):
    s, _ = opened(tmp_path)
    s.save_snapshot(Snapshot(10, 1, b"a"))
    with pytest.raises(ValueError):
        s.save_snapshot(Snapshot(9, 1, b"b"))
    assert s.load_snapshot() == Snapshot(10, 1, b"a")
    s.close()


def test_install_snapshot_replaces_the_log(tmp_path):
    s, _ = opened(tmp_path)
    s.append(ents(1, 20, term=1))
    s.sync()
    s.install_snapshot(Snapshot(50, 4, b"leader-state"))
    assert s.first_index() == 51 and s.last_index() == 50 and s.term(50) == 4
    assert s.entries(1, 100) == []
    s.append(ents(51, 52, term=4))
    s.sync()
    s.close()
    _, snap, entries = reload(tmp_path)
    assert snap == Snapshot(50, 4, b"leader-state") and entries == ents(51, 52, 4)


def test_crash_between_snapshot_and_log_reset_is_reconciled(tmp_path):
    # A follower's stale log 1..20 (term 1) and a received snapshot at 15 of
    # term 3 saved, but the crash came before the log reset was synced.
    s, _ = opened(tmp_path)
    s.append(ents(1, 20, term=1))
    s.sync()
    s.save_snapshot(Snapshot(15, 3, b"snap"))
    s.abandon()
    s, (_, snap, entries) = opened(tmp_path)
    assert snap.index == 15 and entries == []  # disagrees at 15: dropped
    assert s.first_index() == 16
    s.append(ents(16, 17, term=3))
    s.sync()
    s.close()
    # the drop was recorded: the new entries survive the next load
    assert reload(tmp_path)[2] == ents(16, 17, 3)


def test_log_agreeing_with_the_snapshot_is_kept(tmp_path):
    s, _ = opened(tmp_path)
    s.append(ents(1, 20, term=2))
    s.sync()
    s.save_snapshot(Snapshot(15, 2, b"snap"))
    s.close()
    assert reload(tmp_path)[2] == ents(1, 20, 2)


def test_corrupt_snapshot_file_is_an_error(tmp_path):
    s, _ = opened(tmp_path)
    s.save_snapshot(Snapshot(3, 1, b"abc" * 100))
    s.close()
    raw = bytearray((tmp_path / SNAPSHOT_NAME).read_bytes())
    raw[-5] ^= 1
    (tmp_path / SNAPSHOT_NAME).write_bytes(bytes(raw))
    with pytest.raises(StorageError):
        RaftStorage(tmp_path).load()


def test_leftover_temporary_files_are_removed(tmp_path):
    s, _ = opened(tmp_path)
    s.append(ents(1, 2))
    s.close()
    (tmp_path / (WAL_NAME + ".tmp")).write_bytes(b"half a compaction")
    (tmp_path / (SNAPSHOT_NAME + ".tmp")).write_bytes(b"half a snapshot")
    assert reload(tmp_path)[2] == ents(1, 2)
    assert sorted(os.listdir(tmp_path)) == [WAL_NAME]


# ------------------------------------------------------- fsync batching


def test_one_fsync_per_sync_batch(tmp_path, monkeypatch):
    calls = []
    real = storage_mod._datasync
    monkeypatch.setattr(storage_mod, "_datasync", lambda fd: (calls.append(fd), real(fd)))
    dirs = []
    real_dir = RaftStorage._fsync_dir
    monkeypatch.setattr(RaftStorage, "_fsync_dir",
                        lambda self, p: (dirs.append(p), real_dir(self, p)))
    s, _ = opened(tmp_path)
    dirs.clear()
    for batch in range(3):
        s.append(ents(batch * 64 + 1, batch * 64 + 64))
        s.set_hard_state(HardState(1, "n1", batch * 64))
        s.sync()
    assert len(calls) == 3 and dirs == []
    s.sync()  # nothing new: no fsync
    assert len(calls) == 3
    s.save_snapshot(Snapshot(64, 1, b"s"))
    assert len(dirs) == 1  # the snapshot's rename, at once
    s.compact(64)
    s.append(ents(193, 193))
    s.sync()  # the log file and the rename of the compacted log
    assert len(calls) == 4 and len(dirs) == 2
    s.close()


def test_ack_before_fsync_mode_loses_acknowledged_records(tmp_path, monkeypatch):
    monkeypatch.setattr(storage_mod, "_datasync", lambda fd: pytest.fail("fsync called"))
    s, _ = opened(tmp_path, fsync=False, lazy_flush_bytes=1 << 20)
    s.append(ents(1, 10))
    s.set_hard_state(HardState(5, "n1", 10))
    s.sync()  # "durable" as far as the node believes
    assert os.path.getsize(tmp_path / WAL_NAME) == 8  # nothing reached the file
    s.abandon()  # kill -9
    hs, _, entries = reload(tmp_path, fsync=False)
    assert entries == [] and hs == HardState()  # acknowledged entries and vote lost

    s, _ = opened(tmp_path, fsync=False, lazy_flush_bytes=150)
    s.append(ents(1, 10))
    s.sync()  # 190 bytes, over the threshold: handed to the OS (still no fsync)
    s.append(ents(11, 11))
    s.sync()
    s.abandon()
    assert reload(tmp_path)[2] == ents(1, 10)

    s, _ = opened(tmp_path, fsync=False)
    s.append(ents(11, 12))
    s.flush()  # the driver's lazy flush timer
    s.abandon()
    assert reload(tmp_path)[2] == ents(1, 12)


def test_sync_from_another_thread_keeps_order(tmp_path):
    s, _ = opened(tmp_path)
    stop = threading.Event()

    def syncer():
        while not stop.is_set():
            s.sync()

    th = threading.Thread(target=syncer)
    th.start()
    try:
        for i in range(1, 401):
            s.append([Entry(i, 1, b"%d" % i)])
            if i % 50 == 0:
                s.append([Entry(i - 10, 2, b"r%d" % i)])  # truncate and rewrite
                for j in range(i - 9, i + 1):
                    s.append([Entry(j, 2, b"r%d" % j)])
    finally:
        stop.set()
        th.join()
    s.sync()
    mine = s.entries(1, 1000)
    s.close()
    assert reload(tmp_path)[2] == mine and len(mine) == 400
