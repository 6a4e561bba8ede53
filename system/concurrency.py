"""One concurrency helper shared by the node and its DynamoDB service."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable


async def all_or_first_error(calls: list[Awaitable[Any]]) -> list[Any]:
    """Await every call concurrently and return their results in order; the
    first error is raised at once and cancels the calls still running (a
    request waits on the slowest of its checks, fails with the first)."""
    if len(calls) == 1:
        return [await calls[0]]
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            t.cancel()
