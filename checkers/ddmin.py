"""Delta debugging: Zeller and Hildebrandt's ddmin ("Simplifying and
isolating failure-inducing input", TSE 2002).

Given a list that fails a test, ddmin finds a sub-list that still fails and
is *1-minimal*: removing any single item of it makes the test pass.  It
splits the list into ``n`` chunks and tries each chunk alone, then each
complement (the list without one chunk); a failing one becomes the new list,
otherwise the chunks are halved, until they are single items.  When the
failure needs few items, that costs O(k log n) tests of shrinking size,
which is why a shrink first narrows the list to the neighbourhood of the
anomaly.  Order is kept: chunks are contiguous runs of the list, so items
close in the list (ops close in time) tend to stay or go together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")


@dataclass
class DDMin(Generic[T]):
    """One minimisation: the test, and how often it ran (a test of a subset
    already tried is answered from memory, since ddmin revisits some)."""

    fails: Callable[[list[T]], bool]
    tests: int = 0
    _memo: dict[tuple[int, ...], bool] = field(default_factory=dict)

    def minimise(self, items: Sequence[T]) -> list[T]:
        """A 1-minimal failing sub-list of ``items`` (which must fail).

        ddmin presumes that the empty list passes; it is tested first, so
        that a test which fails without any item gets ``[]``."""
        if self._fails(items, []):
            return []
        current = list(range(len(items)))
        n = 2
        while len(current) >= 2:
            chunks = _split(current, n)
            found = next((c for c in chunks if self._fails(items, c)), None)
            if found is not None:
                current, n = found, 2
                continue
            if n > 2:  # with two chunks the complements are the chunks themselves
                found = next((rest for i in range(len(chunks))
                              if self._fails(items, rest := _without(chunks, i))), None)
                if found is not None:
                    current, n = found, max(n - 1, 2)
                    continue
            if n >= len(current):
                break
            n = min(len(current), 2 * n)
        return [items[i] for i in current]

    def _fails(self, items: Sequence[T], idx: list[int]) -> bool:
        key = tuple(idx)
        if key not in self._memo:
            self.tests += 1
            self._memo[key] = self.fails([items[i] for i in idx])
        return self._memo[key]


def _split(xs: list[int], n: int) -> list[list[int]]:
    """``xs`` in ``n`` contiguous chunks of sizes differing by at most one."""
    q, r = divmod(len(xs), n)
    out, start = [], 0
    for i in range(n):
        end = start + q + (i < r)
        out.append(xs[start:end])
        start = end
    return out


def _without(chunks: list[list[int]], i: int) -> list[int]:
    return [x for j, c in enumerate(chunks) if j != i for x in c]
