"""Verdicts and witnesses, shared by every checker and every renderer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from checkers.history import Operation

VALID, INVALID, UNKNOWN = "valid", "invalid", "unknown"
#: Jepsen's exit codes for a verdict.
EXIT_CODES = {VALID: 0, INVALID: 1, UNKNOWN: 2}


def combine(verdicts: Iterable[str]) -> str:
    """Invalid beats unknown beats valid (an empty set is valid)."""
    vs = set(verdicts)
    if INVALID in vs:
        return INVALID
    if UNKNOWN in vs:
        return UNKNOWN
    return VALID


@dataclass
class Witness:
    """Why one key's history is not linearizable, in terms a person can check.

    ``linearized`` is the longest linearizable prefix the search found, in
    linearization order, with ``states_after`` the model state after each of
    its ops; ``failing_op`` is the op that cannot be placed next;
    ``states`` are the states the model could have been in when it had to
    take effect; ``window`` is the smallest set of ops (in call order) that
    shows the contradiction: the failing op and the ops it overlaps, back to
    the last op whose effect the states reflect.
    """

    failing_op: Operation
    linearized: list[Operation]
    states_after: list[str]
    states: list[str]
    window: list[Operation]
    explanation: str


@dataclass
class KeyResult:
    """The verdict for one independent part of a history (one key)."""

    key: Any
    verdict: str
    ops: int
    algorithm: str
    reason: str | None = None
    witness: Witness | None = None
    linearization: list[Operation] | None = None
    explored: int = 0
    elapsed: float = 0.0


@dataclass
class CheckResult:
    """The verdict for a whole history."""

    verdict: str
    model: str
    ops: int
    elapsed: float
    keys: list[KeyResult] = field(default_factory=list)
    path: str | None = None
    reason: str | None = None

    @property
    def failures(self) -> list[KeyResult]:
        return [k for k in self.keys if k.verdict != VALID]
