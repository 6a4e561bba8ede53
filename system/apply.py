"""The apply stage: applies committed entries apart from the Raft driver.

elastickv (like etcd, whose server applies in a goroutine of its own) runs
its FSM apply apart from the Raft loop: the loop hands the committed entries
of each Ready over and goes on confirming ReadIndex reads and sending
heartbeats while a backlog -- a new leader's inherited tail, a follower
catching up, a restart's replay -- is still being applied.  So here: the
driver :meth:`ApplyStage.submit`\\ s each Ready's snapshot and committed
entries, and :meth:`ApplyStage.run` applies them in order, at most
``batch`` entries at a time, reporting its progress to the Raft core
(:meth:`~system.raft.core.RaftNode.applied_to`) and to the read path after
each chunk and yielding to the event loop between chunks.

What waits on ``applied`` therefore sees the lag a real store has: a write
is answered once its entry is applied (its proposal's future is resolved
here), a ReadIndex read waits until ``applied`` reaches its index
(:meth:`~system.reads.ReadPath.applied_changed`), a lease read needs
``applied >= commit``, and a snapshot is taken only of what is applied.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from system.raft.core import NotLeader, RaftNode
from system.raft.messages import Entry, Snapshot

log = logging.getLogger("node")

Result = dict[str, Any]


class ApplyStage:
    """The state machine's side of the Ready loop, fed by the driver.

    ``execute`` applies one entry with data to the state machine and returns
    the answer for its proposer; ``restore`` replaces the state machine with
    a snapshot's data; ``progressed`` is called after each chunk, once the core
    knows the new applied index; ``delay_ms`` says how many milliseconds each
    entry takes to apply on top (the ``apply_delay_ms`` failpoint).
    """

    def __init__(self, raft: RaftNode, execute: Callable[[Entry], Result],
                 restore: Callable[[bytes], None], progressed: Callable[[], None],
                 batch: int, delay_ms: Callable[[], float] = lambda: 0.0) -> None:
        self.raft = raft
        self._execute, self._restore, self._progressed = execute, restore, progressed
        self.batch = batch
        self._delay_ms = delay_ms
        self._queue: asyncio.Queue[Snapshot | list[Entry]] = asyncio.Queue()
        #: proposals awaiting their entry: index -> (term, future)
        self._pending: dict[int, tuple[int, asyncio.Future[Result]]] = {}

    def submit(self, snapshot: Snapshot | None, entries: list[Entry]) -> None:
        """Queue a Ready's snapshot (first) and committed entries, in Ready order."""
        if snapshot is not None:
            self._queue.put_nowait(snapshot)
        if entries:
            self._queue.put_nowait(entries)

    def expect(self, index: int, term: int) -> asyncio.Future[Result]:
        """The future answer of the proposal at (``index``, ``term``): set
        once that entry is applied, failed if another entry takes the index."""
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending[index] = (term, fut)
        return fut

    async def run(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, Snapshot):
                self._install(item)
                continue
            for lo in range(0, len(item), self.batch):
                chunk = item[lo:lo + self.batch]
                delay = self._delay_ms()
                if delay > 0:  # a slow state machine: the driver runs meanwhile
                    await asyncio.sleep(delay * len(chunk) / 1000.0)
                for e in chunk:
                    self._apply(e)
                self.raft.applied_to(chunk[-1].index)
                self._progressed()
                await asyncio.sleep(0)  # let the driver run between chunks

    def _install(self, snap: Snapshot) -> None:
        self._restore(snap.data)
        log.info("installed snapshot at index %d", snap.index)
        # proposals the snapshot covers: whether they made it is unknown here
        for index in [i for i in self._pending if i <= snap.index]:
            self._fail(self._pending.pop(index)[1], "covered by a snapshot")
        self.raft.applied_to(snap.index)
        self._progressed()

    def _apply(self, e: Entry) -> None:
        result = self._execute(e) if e.data else None  # b"": the leader's no-op
        waiter = self._pending.pop(e.index, None)
        if waiter is None:
            return
        term, fut = waiter
        if result is None or term != e.term:
            self._fail(fut, "proposal overwritten")
        elif not fut.done():  # a write that timed out cancelled its future
            fut.set_result(result)

    def _fail(self, fut: asyncio.Future[Result], reason: str) -> None:
        if not fut.done():
            fut.set_exception(NotLeader(self.raft.lead, reason))
