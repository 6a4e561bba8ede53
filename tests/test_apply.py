"""The apply stage's ``apply_delay_ms`` failpoint: a slow state machine that
leaves the event loop, and so the Raft driver, running."""

from __future__ import annotations

import asyncio
import time

from system.apply import ApplyStage
from system.raft import LEADER, RaftConfig, RaftNode


def test_a_slow_state_machine_lags_its_log_while_the_loop_keeps_running():
    r = RaftNode(RaftConfig(id="n1", peers=["n1"], async_apply=True))
    r.campaign()
    assert r.role == LEADER
    delay = {"ms": 30.0}
    applied_at: list[tuple[int, float]] = []
    stage = ApplyStage(r, lambda e: {"index": e.index}, lambda data: None,
                       lambda: applied_at.append((r.applied, time.monotonic())), batch=2,
                       delay_ms=lambda: delay["ms"])

    async def scenario() -> int:
        applier = asyncio.ensure_future(stage.run())
        for k in range(3):
            r.propose(b"w%d" % k)      # a quorum of one: committed at once
        rd = r.ready()
        stage.submit(rd.snapshot, rd.committed_entries)   # the no-op and w0..w2
        r.advance(rd)
        ticks = 0
        t0 = time.monotonic()
        while r.applied < 4:
            ticks += 1                 # the driver's share of the loop
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - t0
        delay["ms"] = 0.0              # cleared: the next entry applies at once
        r.propose(b"w3")
        rd = r.ready()
        stage.submit(rd.snapshot, rd.committed_entries)
        r.advance(rd)
        t1 = time.monotonic()
        while r.applied < 5:
            await asyncio.sleep(0)
        assert time.monotonic() - t1 < 0.03
        applier.cancel()
        assert elapsed >= 4 * 0.030    # two chunks of two entries, 30 ms each
        return ticks

    ticks = asyncio.run(scenario())
    assert [a for a, _ in applied_at] == [2, 4, 5]
    assert ticks >= 10                 # the loop ran on while each chunk waited
