"""What a leader knows about each follower (etcd's ``tracker.Progress``).

States:

* ``probe``: we do not know where the follower's log matches ours; send one
  AppendEntries at a time (``probe_sent`` pauses until an answer or a
  heartbeat response), backing off using the rejection hints.
* ``replicate``: the follower is known to match up to ``match``; send
  optimistically (``next`` moves ahead of what is acknowledged), with at
  most ``max_inflight`` unacknowledged messages (pipelining).
* ``snapshot``: an InstallSnapshot is on its way; wait for its answer (or
  give up after an election timeout and probe again, which re-sends it).
"""

from __future__ import annotations

from collections import deque

PROBE = "probe"
REPLICATE = "replicate"
SNAPSHOT = "snapshot"


class Progress:
    __slots__ = ("match", "next", "state", "probe_sent", "inflight", "pending_snapshot",
                 "snapshot_elapsed", "last_active", "acked_seq", "ack_sent", "ack_recv",
                 "commit_sent")

    def __init__(self, next_index: int, now_tick: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.probe_sent = False
        self.inflight: deque[int] = deque()  # last index of each unacknowledged append
        self.pending_snapshot = 0
        self.snapshot_elapsed = 0
        self.last_active = now_tick          # tick of the latest response (CheckQuorum)
        self.acked_seq = 0                   # highest echoed seq (ReadIndex)
        self.ack_sent: float | None = None   # send time of latest acked message (lease)
        self.ack_recv: float | None = None   # arrival time of latest ack (lease)
        self.commit_sent = 0                 # commit index carried by the latest append

    def become_probe(self) -> None:
        if self.state == SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = PROBE
        self.probe_sent = False
        self.inflight.clear()
        self.pending_snapshot = 0

    def become_replicate(self) -> None:
        self.state = REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()
        self.pending_snapshot = 0

    def become_snapshot(self, index: int) -> None:
        self.state = SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_elapsed = 0
        self.inflight.clear()

    def paused(self, max_inflight: int) -> bool:
        if self.state == PROBE:
            return self.probe_sent
        if self.state == REPLICATE:
            return len(self.inflight) >= max_inflight
        return True

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to ``index``: True if match moved."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def free_to(self, index: int) -> None:
        q = self.inflight
        while q and q[0] <= index:
            q.popleft()

    def __repr__(self) -> str:
        return (f"Progress(match={self.match}, next={self.next}, state={self.state}, "
                f"inflight={len(self.inflight)})")
