"""What a handful of runs supports: the 95% Wilson score interval of a rate.

"8 of 8 runs found the bug" is not "it is always found": the Wilson interval
says what so few runs support (8/8 -> at least 67.6%), and
:func:`runs_needed` says how many all-successful runs a claim such as "at
least 95%, at 95% confidence" takes (73).  Wilson rather than the normal
approximation because the rates that matter sit at 0 and 1, where the normal
interval collapses to a point.
"""

from __future__ import annotations

import math

#: z of a two-sided 95% interval
Z95 = 1.96


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials,
    (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n) with p = k/n;
    (0, 1) when n is 0: no runs support nothing."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def wilson_lower(k: int, n: int, z: float = Z95) -> float:
    """The interval's lower end: what the runs support at least (20/20 -> 0.839)."""
    return wilson_interval(k, n, z)[0]


def runs_needed(rate: float, z: float = Z95) -> int:
    """How many runs, all successful, put the Wilson lower bound at ``rate`` or
    above: with k = n the bound is n / (n + z²), so n >= z²·rate / (1 - rate)."""
    if not 0 <= rate < 1:
        raise ValueError(f"need a rate in [0, 1), got {rate}")
    n = max(1, math.ceil(z * z * rate / (1 - rate)))
    while wilson_lower(n, n, z) < rate:  # float rounding at the boundary
        n += 1
    return n


def rate_text(k: int, n: int) -> str:
    """A rate as a person should read it: ``8/8 (>= 68%)``, ``0/5 (<= 43%)``,
    ``3/5 (23-88%)``; the bound a claim can rest on, not k/n alone."""
    if n == 0:
        return "0/0"
    low, high = wilson_interval(k, n)
    if k == n:
        return f"{k}/{n} (>= {low:.0%})"
    if k == 0:
        return f"{k}/{n} (<= {high:.0%})"
    return f"{k}/{n} ({low * 100:.0f}-{high:.0%})"
