"""An exact, O(n log n) linearizability check for registers with unique writes.

When every write (and every compare-and-set) of a register puts a value no
other op puts, the order of the values in any linearization is forced: each
value ``v`` is held during one unbroken stretch, which starts with its only
writer and during which its readers take effect.  This is the zone method of
Gibbons and Korach ("Testing shared memories", 1997) for atomic registers
with unique writes, extended here to successful compare-and-set.

**Clusters and chains.**  The *cluster* of ``v`` is its writer (a write, or
the cas that put ``v``; for the initial value ``None`` a virtual writer at
time -infinity) plus the ops that observe ``v``: the reads returning ``v``
and the successful cas from ``v`` (at most one: after it, ``v`` is gone for
good).  That cas is also the writer of the next value, so it links clusters
into *chains*: write ``a``, reads of ``a``, cas ``a->b``, reads of ``b``,
cas ``b->c``, ...  A chain occupies one contiguous block of any
linearization, in that order, and blocks of different chains never
interleave (a value never comes back).

**Indeterminate ops.**  An ``info`` write or cas has taken effect exactly if
its value is observed (read, or consumed by a cas that itself took effect);
then it is an op with ``ret = +inf``.  An unobserved one can always be
dropped: whatever follows it until the next write sees nothing of it.

**The test.**  For each chain, greedy earliest placement (each op at the
latest of the previous op's point and its own call, which must not pass its
return) decides whether it can be laid out at all.  Its *zone* runs from
``l`` = the earliest return to ``r`` = the latest call among its ops: the
block must cover ``[l, r]`` when ``l < r`` (a *forward* zone), and can
shrink to any single point of ``[r, l]`` otherwise (a *backward* zone; every
op of the chain is running then).  The history is linearizable iff every
chain can be laid out, no two forward zones intersect, and no backward zone
lies inside a forward zone.  (Necessity: a block that covers ``[l, r]`` and
another that has an op ending before ``r`` and one starting after ``l``
would have to interleave.  Sufficiency: a feasible layout clamped into its
forward zone is still feasible, forward blocks sit in their disjoint zones,
and every backward zone keeps a point outside all of them.)  Event positions
are distinct integers, so no two endpoints of different ops ever tie (were
they to, the comparisons treat touching intervals as concurrent).

**Witnesses.**  Each failure found has the time at which it became certain
(for example the call of the read that comes too late); the earliest one is
reported, blaming the op whose invocation or return made it certain, with
the ops of the two clusters or chains involved as the window.

Everything is kept in flat lists indexed by writer; the only sort is over
the forward zones.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from typing import Any, Callable

from checkers.history import Operation
from checkers.models import CasRegister, _pair_value
from checkers.result import INVALID, VALID, KeyResult, Witness

ALGORITHM = "unique-register"
INF = math.inf
_NOSRC = object()
#: Build the full linearization of a valid key when it has at most this many
#: ops (unless asked explicitly): it costs a sort.
LINEARIZE_UP_TO = 20_000


class NotApplicable(ValueError):
    """The ops are not a unique-value register history this path is exact for."""


# ----------------------------------------------------------------- scanning

class _Scan:
    """The ops of one key, as flat lists.

    Writer ids index the ``W_*`` lists; id 0 is the virtual writer of the
    initial value ``None``.  ``R_*`` hold the reads that constrain anything.
    """

    __slots__ = ("W_op", "W_val", "W_src", "W_call", "W_ret", "W_ok", "W_cas",
                 "writer", "R_op", "R_val", "NIL", "nil_any", "n_kept")

    def __init__(self, nil_any: bool) -> None:
        self.W_op: list[Operation | None] = [None]
        self.W_val: list[Any] = [None]
        self.W_src: list[Any] = [_NOSRC]
        self.W_call: list[float] = [-INF]
        self.W_ret: list[float] = [-INF]
        self.W_ok = bytearray(b"\x01")
        self.W_cas = bytearray(b"\x00")
        self.writer: dict[Any, int] = {None: 0}
        self.R_op: list[Operation] = []
        self.R_val: list[Any] = []
        #: ok nil reads a nil_read="any" model accepts in any state.
        self.NIL: list[Operation] = []
        self.nil_any = nil_any
        self.n_kept = 0


def _scan(model: Any, ops: list[Operation]) -> _Scan | str:
    """The flat form of ``ops``, or why the fast path is not exact for them."""
    if not hasattr(model, "as_register"):
        return f"model {getattr(model, 'name', model)!r} is not a register"
    nil_any = getattr(model, "nil_read", "unwritten") == "any"
    sc = _Scan(nil_any)
    W_op, W_val, W_src = sc.W_op, sc.W_val, sc.W_src
    W_call, W_ret, W_ok, W_cas = sc.W_call, sc.W_ret, sc.W_ok, sc.W_cas
    writer, R_op, R_val, NIL = sc.writer, sc.R_op, sc.R_val, sc.NIL
    kept = 0

    def add_writer(op: Operation, src: Any, v: Any, is_cas: int) -> str | None:
        if v is None:
            return f"{model.describe_op(op)} (event {op.call}) writes nil, the initial value"
        try:
            if v in writer:
                return f"value {v!r} is written more than once"
        except TypeError:
            return f"value {v!r} cannot be hashed"
        writer[v] = len(W_op)
        W_op.append(op)
        W_val.append(v)
        W_src.append(src)
        W_call.append(op.call)
        W_ret.append(op.ret)
        W_ok.append(op.status == "ok")
        W_cas.append(is_cas)
        return None

    if type(model) is CasRegister:
        # The same decisions as model.keep / model.as_register, inlined.
        kinds: dict[str, str] = getattr(model, "_kinds", None) or dict(model.fs)
        mismatch = model.mismatch
        for op in ops:
            k = kinds.get(op.f) or model.kind(op)
            st = op.status
            if k == "read":
                if st != "ok":
                    continue
                v = op.output
                if v is None and nil_any:
                    NIL.append(op)
                    continue
                R_op.append(op)
                R_val.append(v)
                kept += 1
            elif k == "write":
                if st == "fail":
                    continue
                why = add_writer(op, _NOSRC, op.input, 0)
                if why:
                    return why
                kept += 1
            elif k == "cas":
                src, v = _pair_value(op.input)
                if st == "fail":
                    if mismatch(op):
                        return (f"{model.describe_op(op)} (event {op.call}) failed, "
                                "which this model reads as a compare that found another value")
                    continue
                why = add_writer(op, src, v, 1)
                if why:
                    return why
                kept += 1
            else:
                return f"{op.f!r} is a {k}, not a read, write or cas"
    else:
        for op in ops:
            if not model.keep(op):
                continue
            r = model.as_register(op)
            if r is None:
                return f"{op.f!r} is not a read, write or cas"
            if op.status not in ("ok", "info"):
                return f"{model.describe_op(op)} (event {op.call}) is a kept {op.status} op"
            if r.kind == "read":
                if op.status != "ok":
                    return f"{model.describe_op(op)} (event {op.call}) is a kept indeterminate read"
                if r.expect is None and nil_any:
                    NIL.append(op)
                    continue
                R_op.append(op)
                R_val.append(r.expect)
            else:
                why = add_writer(op, _NOSRC if r.kind == "write" else r.expect,
                                 r.value, int(r.kind == "cas"))
                if why:
                    return why
            kept += 1
    sc.n_kept = kept + len(NIL)
    return sc


def applies(model: Any, ops: list[Operation]) -> bool:
    """Whether :func:`check_key` is exact for these (single-key) ops.

    True when the model is a register (``as_register``), every kept op is a
    read, write or cas, every written value is distinct and not ``None``, and
    no failed cas is kept (a failed cas read as a mismatch is a negative
    constraint this path does not handle).
    """
    return not isinstance(_scan(model, ops), str)


def why_not(model: Any, ops: list[Operation]) -> str | None:
    """Why :func:`applies` is False (one line), or None when it applies."""
    sc = _scan(model, ops)
    return sc if isinstance(sc, str) else None


# ------------------------------------------------------------------ checking

class _Failures:
    """The failures found so far; the earliest-evident one becomes the witness."""

    def __init__(self) -> None:
        self.structural: tuple[float, Callable[[], Witness]] | None = None
        self.ordering: tuple[float, Callable[[], Witness]] | None = None

    def note(self, structural: bool, t: float, build: Callable[[], Witness]) -> None:
        cur = self.structural if structural else self.ordering
        if cur is None or t < cur[0]:
            if structural:
                self.structural = (t, build)
            else:
                self.ordering = (t, build)

    def any(self) -> bool:
        return self.structural is not None or self.ordering is not None

    def witness(self) -> Witness:
        # A structural failure (a value nobody wrote, two cas from one value,
        # a cycle) makes the chains themselves ambiguous; report it first.
        best = self.structural or self.ordering
        assert best is not None
        return best[1]()


def check_key(model: Any, key: Any, ops: list[Operation], *,
              linearization: bool | None = None) -> KeyResult:
    """Check one key's ops; exact when :func:`applies` (else ``NotApplicable``).

    ``linearization``: build the linearization of a valid key (default: when
    it has at most :data:`LINEARIZE_UP_TO` ops).
    """
    t0 = time.perf_counter()
    sc = _scan(model, ops)
    if isinstance(sc, str):
        raise NotApplicable(sc)
    W_op, W_src = sc.W_op, sc.W_src
    W_call, W_ret, W_ok, W_cas = sc.W_call, sc.W_ret, sc.W_ok, sc.W_cas
    R_op, R_val = sc.R_op, sc.R_val
    writer_get = sc.writer.get
    n = len(W_op)
    fails = _Failures()
    wit = _WitnessMaker(model, sc)

    # Reads: per cluster, the earliest return and the latest call.
    rmin = [INF] * n
    rmax = [-INF] * n
    obs = bytearray(n)          # value observed (read, or consumed by a cas that took effect)
    R_w = [0] * len(R_op)
    for i, op in enumerate(R_op):
        try:
            w = writer_get(R_val[i], -1)
        except TypeError:
            w = -1
        R_w[i] = w
        if w < 0:
            fails.note(True, op.ret, lambda op=op: wit.unwritten_read(op))
            continue
        obs[w] = 1
        r = op.ret
        if r < rmin[w]:
            rmin[w] = r
        c = op.call
        if c > rmax[w]:
            rmax[w] = c
    wit.R_w = R_w

    # Cas: where each takes its value from; which indeterminate ones happened.
    cas_ids = [w for w in range(n) if W_cas[w]]
    srcid = [-1] * n
    for c in cas_ids:
        try:
            s = writer_get(W_src[c], -1)
        except TypeError:
            s = -1
        srcid[c] = s
        if W_ok[c]:
            if s < 0:
                fails.note(True, W_ret[c], lambda c=c: wit.unwritten_cas(c))
            else:
                obs[s] = 1
    stack = [c for c in cas_ids if obs[c] and not W_ok[c]]
    while stack:
        c = stack.pop()
        s = srcid[c]
        if s < 0:
            fails.note(True, W_call[c], lambda c=c: wit.unwritten_cas(c))
        elif not obs[s]:
            obs[s] = 1
            if W_cas[s] and not W_ok[s]:
                stack.append(s)
    # An op of the check: ok, or indeterminate and observed.
    inc = bytearray(a | b for a, b in zip(W_ok, obs))
    wit.inc = inc

    cons = [-1] * n             # the cas that consumes each value
    for c in cas_ids:
        if not inc[c]:
            continue
        s = srcid[c]
        if s < 0:
            continue
        d = cons[s]
        if d < 0:
            cons[s] = c
            continue
        first, second = (d, c) if W_call[d] < W_call[c] else (c, d)
        cons[s] = first
        fails.note(True, W_call[second],
                   lambda s=s, a=first, b=second: wit.double_cas(s, a, b))
    wit.cons = cons

    # Chains: greedy layout and zone of each.
    seen = bytearray(n)
    ch_head: list[int] = []
    ch_l: list[float] = []
    ch_r: list[float] = []
    for h in range(n):
        if W_cas[h] or not inc[h]:
            continue
        w = h
        p = -INF
        lo = INF
        hi = -INF
        bad = False
        while w >= 0:
            seen[w] = 1
            if not bad:
                c = W_call[w]
                if c > p:
                    p = c
                elif p > W_ret[w]:
                    bad = True
                    fails.note(False, p, lambda h=h, w=w, p=p: wit.infeasible(h, w, None, p))
                    w = cons[w]
                    continue
                rt = W_ret[w]
                if rt < lo:
                    lo = rt
                if c > hi:
                    hi = c
                rm = rmin[w]
                if rm < p:
                    bad = True
                    fails.note(False, p, lambda h=h, w=w, p=p: wit.infeasible(h, w, "read", p))
                    w = cons[w]
                    continue
                if rm < lo:
                    lo = rm
                rx = rmax[w]
                if rx > p:
                    p = rx
                if rx > hi:
                    hi = rx
            w = cons[w]
        if bad or (h == 0 and hi == -INF):
            continue            # failed already; or the initial value, never read nor replaced
        ch_head.append(h)
        ch_l.append(lo)
        ch_r.append(hi)
    wit.chains = (ch_head, ch_l, ch_r)

    if fails.structural is None:
        for c in cas_ids:
            if inc[c] and not seen[c]:
                fails.note(True, W_call[c], lambda c=c: wit.cycle(c))
                break

    # Zones: forward ones pairwise disjoint; no backward one inside a forward one.
    fwd = sorted((i for i in range(len(ch_head)) if ch_l[i] < ch_r[i]),
                 key=ch_l.__getitem__)
    big = -1                    # the forward zone reaching furthest so far
    overlaps: list[tuple[float, int, int]] = []
    for i in fwd:
        if big >= 0 and ch_l[i] < ch_r[big]:
            overlaps.append((min(ch_r[big], ch_r[i]), big, i))
        if big < 0 or ch_r[i] > ch_r[big]:
            big = i
    fwd_l = [ch_l[i] for i in fwd]
    for i in range(len(ch_head)):
        a, b = ch_r[i], ch_l[i]
        if a < b:
            j = bisect_left(fwd_l, a) - 1
            if j >= 0 and b < ch_r[fwd[j]]:
                fails.note(False, ch_r[fwd[j]], lambda f=fwd[j], g=i: wit.zone(f, g))
    # Two overlapping forward zones: either block would have to sit inside
    # the other.  Which op to blame depends on when the overlap became
    # certain, which takes a look at the chains' ops: only for the overlaps
    # that could be the earliest failure (their lower bound is the earlier
    # of the two last calls).
    if overlaps and fails.structural is None:
        overlaps.sort()
        for n_tried, (lower, a, b) in enumerate(overlaps):
            if fails.ordering is not None and (lower >= fails.ordering[0] or n_tried >= 64):
                break           # (each look costs the length of two chains)
            t, f, g = wit.orient(a, b)
            fails.note(False, t, lambda f=f, g=g: wit.zone(f, g))

    res = KeyResult(key=key, verdict=VALID, ops=sc.n_kept, algorithm=ALGORITHM)
    if fails.any():
        res.verdict = INVALID
        res.witness = fails.witness()
        res.reason = res.witness.explanation
    else:
        if linearization is None:
            linearization = len(ops) <= LINEARIZE_UP_TO
        if linearization:
            res.linearization = wit.linearize(fwd)
    res.elapsed = time.perf_counter() - t0
    return res


# ------------------------------------------------------------------ witnesses

def _call(op: Operation) -> float:
    return op.call


def _elide(states: list[str], most: int = 8) -> list[str]:
    """At most ``most`` states (values of one chain are distinct): the first
    and last few, with a marker for those left out."""
    if len(states) <= most:
        return states
    k = most // 2
    return states[:k] + [f"... ({len(states) - 2 * k + 1} more)"] + states[-(k - 1):]


def _join(items: list[str]) -> str:
    return " and ".join(items) if len(items) <= 2 else ", ".join(items)


def _fmt(v: Any) -> str:
    return "nil" if v is None else repr(v) if isinstance(v, str) else str(v)


class _WitnessMaker:
    """Builds witnesses (and the linearization) from the check's lists; only
    called once the verdict is known, so it may take linear time."""

    def __init__(self, model: Any, sc: _Scan) -> None:
        self.m = model
        self.sc = sc
        self.R_w: list[int] = []
        self.inc = bytearray()
        self.cons: list[int] = []
        self.chains: tuple[list[int], list[float], list[float]] = ([], [], [])
        self._reads: dict[int, list[Operation]] | None = None

    # -- descriptions
    def who(self, op: Operation | None) -> str:
        if op is None:
            return "the initial state (unwritten)"
        span = (f"invoked at event {op.call}, outcome unknown" if op.ret == INF
                else f"events {op.call}-{op.ret}")
        return f"{self.m.describe_op(op)} by process {op.process} ({span})"

    def short(self, op: Operation) -> str:
        return f"{self.m.describe_op(op)} (process {op.process})"

    def st(self, v: Any) -> str:
        return self.m.describe_state(v)

    def wval(self, w: int) -> Any:
        return self.sc.W_val[w]

    def needs(self, op: Operation) -> Any:
        """The value an op needs in the register (read: the value; cas: from)."""
        r = self.m.as_register(op)
        if r is not None and r.kind in ("read", "cas"):
            return r.expect
        return None

    # -- structure
    def orient(self, a: int, b: int) -> tuple[float, int, int]:
        """For overlapping forward zones of chains ``a`` and ``b``: when the
        overlap became certain, and which chain is then the container (whose
        latest-called op cannot be placed) and which the intruder.

        With container C and intruder I, it is certain once C's last op is
        invoked (at ``r_C``; C holds the register from ``l_C`` to there) and
        some op of I has been invoked after ``l_C`` (I's first return, before
        ``r_C``, is known by then).  The chain of the initial value, which
        must come first, is always the container."""
        heads, ls, rs = self.chains
        if ls[b] == -INF:
            a, b = b, a
        t_ab = max(rs[a], self.first_call_after(heads[b], ls[a]))
        if ls[a] == -INF:
            return t_ab, a, b
        t_ba = max(rs[b], self.first_call_after(heads[a], ls[b]))
        # On a tie, blame the op whose invocation made the overlap certain.
        if (t_ab, t_ab != rs[a]) <= (t_ba, t_ba != rs[b]):
            return t_ab, a, b
        return t_ba, b, a

    def first_call_after(self, h: int, t: float) -> float:
        """The earliest call after ``t`` among the ops of chain ``h``."""
        if self._reads is None:
            self._reads = self.reads_of(None)
        best = INF
        for w in self.chain_clusters(h):
            c = self.sc.W_call[w]
            if t < c < best:
                best = c
            for r in self._reads.get(w, ()):
                if t < r.call < best:
                    best = r.call
        return best

    def reads_of(self, ws: set[int] | None) -> dict[int, list[Operation]]:
        """The reads of clusters ``ws`` (all if None), each list by call."""
        if ws is None:
            out: dict[int, list[Operation]] = {}
            for op, w in zip(self.sc.R_op, self.R_w):
                if w >= 0:
                    lst = out.get(w)
                    if lst is None:
                        out[w] = [op]
                    else:
                        lst.append(op)
            for lst in out.values():
                if len(lst) > 1:
                    lst.sort(key=_call)
            return out
        if self._reads is not None:
            return {w: self._reads.get(w, []) for w in ws}
        out = {w: [] for w in ws}
        for op, w in zip(self.sc.R_op, self.R_w):
            if w in out:
                out[w].append(op)
        for lst in out.values():
            lst.sort(key=_call)
        return out

    def chain_clusters(self, h: int) -> list[int]:
        ws = []
        w = h
        while w >= 0:
            ws.append(w)
            w = self.cons[w]
        return ws

    def layout(self, ws: list[int], reads: dict[int, list[Operation]]
               ) -> list[tuple[Operation, int]]:
        """The chain's ops in layout order, with the cluster each belongs to."""
        out: list[tuple[Operation, int]] = []
        for w in ws:
            op = self.sc.W_op[w]
            if op is not None:
                out.append((op, w))
            out.extend((r, w) for r in reads[w])
        return out

    def prefix(self, seq: list[tuple[Operation, int]]) -> tuple[list[Operation], list[str]]:
        return [o for o, _ in seq], [self.st(self.wval(w)) for _, w in seq]

    def candidates(self, op: Operation) -> list[str]:
        """Values the register could plausibly hold while ``op`` runs: the
        latest value written before it began and those written meanwhile."""
        sc = self.sc
        last, last_ret, meanwhile = 0, -INF, []
        for w in range(1, len(sc.W_op)):
            if not self.inc[w]:
                continue
            if sc.W_ret[w] < op.call:
                if sc.W_ret[w] > last_ret:
                    last, last_ret = w, sc.W_ret[w]
            elif sc.W_call[w] < op.ret:
                meanwhile.append(w)
        out: list[str] = []
        for w in [last] + meanwhile:
            s = self.st(self.wval(w))
            if s not in out:
                out.append(s)
            if len(out) >= 10:
                break
        return out

    # -- failures
    def unwritten_read(self, op: Operation) -> Witness:
        v = self.needs(op)
        return Witness(
            failing_op=op, linearized=[], states_after=[], states=self.candidates(op),
            window=[op],
            explanation=f"{self.who(op)} returns {_fmt(v)}, which no operation wrote")

    def unwritten_cas(self, c: int) -> Witness:
        sc = self.sc
        op = sc.W_op[c]
        assert op is not None
        a, b = sc.W_src[c], sc.W_val[c]
        why = f"{self.who(op)} expects {_fmt(a)}, which no operation wrote"
        if sc.W_ok[c]:
            why += ", yet it succeeded"
        else:
            why += f", yet it took effect: {_fmt(b)} is observed"
        return Witness(failing_op=op, linearized=[], states_after=[],
                       states=self.candidates(op), window=[op], explanation=why)

    def double_cas(self, s: int, first: int, second: int) -> Witness:
        sc = self.sc
        c1, c2 = sc.W_op[first], sc.W_op[second]
        assert c1 is not None and c2 is not None
        v = sc.W_val[s]
        reads = self.reads_of({s})[s]
        w_op = sc.W_op[s]
        window = sorted([o for o in (w_op, c1, c2) if o is not None] + reads,
                        key=lambda o: o.call)
        lin = [o for o in (w_op,) if o is not None] + [c1]
        states_after = ([self.st(v)] if w_op is not None else []) + [self.st(sc.W_val[first])]
        took = "succeeded" if sc.W_ok[second] else \
            f"took effect ({_fmt(sc.W_val[second])} is observed)"
        why = (f"{self.who(c2)} expects {_fmt(v)} and {took}, but "
               f"{self.who(c1)} also replaced {_fmt(v)} (with {_fmt(sc.W_val[first])}), "
               f"and {_fmt(v)} is written only once, so at most one cas from it can take effect")
        return Witness(failing_op=c2, linearized=lin, states_after=states_after,
                       states=[self.st(sc.W_val[first])], window=window, explanation=why)

    def cycle(self, c: int) -> Witness:
        sc = self.sc
        ring = [c]
        s = self._src(c)
        while s >= 0 and s not in ring and len(ring) < 1000:
            ring.append(s)
            s = self._src(s)
        op = sc.W_op[c]
        assert op is not None
        src = self._src(c)
        by = self.who(sc.W_op[src]) if src >= 0 else "a cas"
        why = (f"{self.who(op)} expects {_fmt(sc.W_src[c])}, which only {by} writes, "
               "in a cycle of cas that no write starts")
        return Witness(failing_op=op, linearized=[], states_after=[],
                       states=self.candidates(op),
                       window=sorted((sc.W_op[w] for w in ring), key=lambda o: o.call),
                       explanation=why)

    def _src(self, c: int) -> int:
        try:
            return self.sc.writer.get(self.sc.W_src[c], -1) if self.sc.W_cas[c] else -1
        except TypeError:
            return -1

    def infeasible(self, h: int, w: int, what: str | None, p: float) -> Witness:
        """Chain ``h`` cannot be laid out: in cluster ``w`` the writer (``what``
        None) or a read, ``z``, returned before ``p``, the call of an op ``q``
        that the chain puts earlier.  If ``q`` writes (a value ``z`` needs,
        directly or through cas), ``z`` saw a value before it existed; if
        ``q`` reads, it saw a value that ``z`` (or a cas before it) had
        already replaced for good."""
        sc = self.sc
        ws = self.chain_clusters(h)
        k = ws.index(w)
        reads = self.reads_of(set(ws[: k + 1]))
        seq = self.layout(ws[: k + 1], reads)
        if what is None:
            z = sc.W_op[w]
            assert z is not None
        else:
            z = min(reads[w], key=lambda o: o.ret)
        q, qw = next((o, cw) for o, cw in seq if o.call == p)
        pos = {cw: i for i, cw in enumerate(ws)}
        j = pos[qw]
        vz, vq = self.wval(w), self.wval(qw)
        if q is sc.W_op[qw]:
            # z needs a value that only exists once q took effect.
            failing, first = z, max(j - 1, 0)
            part = [(o, cw) for o, cw in seq if pos[cw] >= first]
            lin_seq = [(o, cw) for o, cw in part if pos[cw] < j]
            states = ([self.st(self.wval(ws[j - 1]))] if j > 0 else self.candidates(z))
            if what is not None and qw == w:
                why = (f"{self.who(z)} returns {_fmt(vz)}, but the only write of "
                       f"{_fmt(vz)}, {self.who(q)}, began after the read completed")
            else:
                zrel = (f"returns {_fmt(vz)}" if what is not None else
                        f"replaces {_fmt(self.wval(ws[k - 1]))} with {_fmt(vz)}")
                why = (f"{self.who(z)} {zrel}, which the register can hold only after "
                       f"{self.who(q)} writes {_fmt(vq)} (the values of a cas chain come "
                       f"in order, each once), but that began only after "
                       f"{self.short(z)} completed")
        else:
            # q reads a value that z, or a cas before z, replaced for good.
            failing = q
            part = [(o, cw) for o, cw in seq if pos[cw] >= j]
            lin_seq = []
            for o, cw in part:
                if o is not q and o.call < z.ret:
                    lin_seq.append((o, cw))
                if o is z:
                    break
            states = [self.st(vz)]
            if what is None and k == j + 1:
                zrel = f"replaced {_fmt(vq)} with {_fmt(vz)}"
            elif what is None:
                zrel = f"replaced {_fmt(self.wval(ws[k - 1]))} with {_fmt(vz)}"
            else:
                zrel = f"returned {_fmt(vz)}"
            later = "" if what is None and k == j + 1 else \
                f", which comes after {_fmt(vq)} in a chain of cas,"
            why = (f"{self.who(q)} returns {_fmt(vq)}, but {self.who(z)} {zrel}{later} "
                   f"and completed before the read began, and {_fmt(vq)} is never "
                   "written again")
        lin, after = self.prefix(lin_seq)
        window = sorted((o for o, _ in part), key=lambda o: o.call)
        return Witness(failing_op=failing, linearized=lin, states_after=after,
                       states=states, window=window, explanation=why)

    def zone(self, f: int, g: int) -> Witness:
        """Chain ``f``'s block must cover its forward zone [l, r]; chain ``g``
        has an op that ended before r and one that began after l."""
        heads, ls, rs = self.chains
        fw, gw = self.chain_clusters(heads[f]), self.chain_clusters(heads[g])
        reads = self.reads_of(set(fw) | set(gw))
        fseq, gseq = self.layout(fw, reads), self.layout(gw, reads)
        l_f, r_f = ls[f], rs[f]
        x_i = next(i for i, (o, _) in enumerate(fseq) if o.call == r_f)
        x, xw = fseq[x_i]
        y_i = next((i for i, (o, _) in enumerate(fseq) if o.ret == l_f), None)
        g_ret_i = next(i for i, (o, _) in enumerate(gseq) if o.ret == ls[g])
        g_call_i = next(i for i, (o, _) in enumerate(gseq) if o.call == rs[g])
        gr, grw = gseq[g_ret_i]
        gc, gcw = gseq[g_call_i]
        need = self.needs(x)
        if y_i is None:         # the initial value
            y, yw, held = None, 0, None
            y_clusters = 0
        else:
            y, yw = fseq[y_i]
            held = self.wval(yw)    # the value right after y took effect
            y_clusters = fw.index(yw)
        x_cluster = fw.index(xw)
        lo_c, hi_c = min(y_clusters, x_cluster), max(y_clusters, x_cluster)
        f_ws = set(fw[lo_c: hi_c + 1])
        g_lo, g_hi = sorted((gw.index(grw), gw.index(gcw)))
        g_ws = set(gw[g_lo: g_hi + 1])
        window = sorted([o for o, cw in fseq if cw in f_ws] + [o for o, cw in gseq if cw in g_ws],
                        key=lambda o: o.call)
        lin_seq = [(o, cw) for o, cw in fseq[:x_i] if cw in f_ws]
        lin, after = self.prefix(lin_seq)
        g_vals = _elide([self.st(self.wval(w)) for w in gw[g_lo: g_hi + 1]])
        verb = "returns" if self.m.as_register(x).kind == "read" else "expects"
        if held == need or y is None:
            tail = (f"and {_fmt(need)} is never written again" if y is not None
                    else "and the register never becomes unwritten again")
        else:
            tail = (f"and nothing can come between {_fmt(held)} and {_fmt(need)}, "
                    "which are linked by cas")
        if y is None:
            why = (f"{self.who(x)} {verb} {_fmt(need)}, but {self.who(gr)} "
                   f"completed before it began, {tail}")
        elif gr is gc:
            why = (f"{self.who(x)} {verb} {_fmt(need)}, but {self.who(gr)} ran entirely "
                   f"after {self.who(y)} completed and before {self.short(x)} began, {tail}")
        else:
            why = (f"{self.who(x)} {verb} {_fmt(need)}, but {self.who(gr)} completed "
                   f"before it began, and {self.who(gc)} began after {self.short(y)} "
                   f"completed; they need {_join(g_vals)}, which would have to "
                   f"come in between, {tail}")
        return Witness(failing_op=x, linearized=lin, states_after=after,
                       states=g_vals, window=window, explanation=why)

    # -- linearization of a valid key
    def linearize(self, fwd: list[int]) -> list[Operation]:
        """A linearization of a valid key: forward chains laid out greedily
        and clamped into their zones, each backward chain at one point of its
        zone outside every forward zone; sorted by (point, chain, place)."""
        sc = self.sc
        heads, ls, rs = self.chains
        fwd_l = [ls[i] for i in fwd]
        fwd_r = [rs[i] for i in fwd]
        reads = self.reads_of(None)
        keyed: list[tuple[float, int, int, int, Operation]] = []
        for ci, h in enumerate(heads):
            l, r = ls[ci], rs[ci]
            forward = l < r
            if not forward:     # a point of [r, l] outside every forward zone
                j = bisect_left(fwd_l, r) - 1
                t = fwd_r[j] + 0.5 if j >= 0 and fwd_r[j] > r else r + 0.5
            p = -INF
            for k, w in enumerate(self.chain_clusters(h)):
                op = sc.W_op[w]
                if op is not None:
                    if op.call > p:
                        p = op.call
                    keyed.append((min(max(p, l), r) if forward else t, ci, 2 * k, 0, op))
                pw = p
                for i, rd in enumerate(reads.get(w, ())):
                    q = max(pw, rd.call)
                    if q > p:
                        p = q
                    keyed.append((min(max(q, l), r) if forward else t, ci, 2 * k + 1, i, rd))
        # Nil reads that a nil_read="any" model accepts in any state: the
        # check drops them, a complete linearization has them anywhere in
        # their interval (at call + 1/4, between two integer positions).
        for i, op in enumerate(sc.NIL):
            keyed.append((op.call + 0.25, len(heads) + i, 0, 0, op))
        keyed.sort(key=lambda e: e[:4])
        return [e[4] for e in keyed]
