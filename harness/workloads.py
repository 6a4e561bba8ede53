"""Workloads: what the clients do to the store, and how each outcome is named.

A workload turns a random stream into DynamoDB calls (``next_op``), executes
one (``invoke``), names its outcome the way the checkers read it, and
carries its checker (``check``: the paired ops in, a :class:`CheckOutcome` out;
the register and set checks also measure how stale each stale read was and
take a bound on it, ``max_staleness_ms``: :mod:`checkers.staleness`):

- ``ok``: it happened and here is what it returned;
- ``fail``: it certainly did not take effect;
- ``info``: unknown (it may take effect at any time after its invocation).

Three workloads, one protocol (:class:`Workload`):

``register`` (linearizability per key, model ``dynamo-item``)
    keys ``k0``..``k{K-1}`` in K slots; a slot's key retires after
    ``ops_per_key`` ops and the next key of the slot (``k{slot + K*gen}``)
    takes its place, as Jepsen's independent generator does.  ``get``:
    GetItem(ConsistentRead) -> the integer or ``None`` (no item); ``put``:
    PutItem of a value no other op writes; ``update``: UpdateItem
    ``SET v = :new`` if ``v = :old`` (``attribute_not_exists(v)`` when
    ``old`` is ``None``), value ``[old, new]``, where ``old`` is what the
    process last saw of that key; ConditionalCheckFailed -> ``fail``.
``set`` (:mod:`checkers.set_checker`)
    one partition key ``"s"``: ``add`` puts item ``{pk: "s", sk: N}`` (value
    N, unique), ``read-query`` and ``read-scan`` read every item by Query and
    by Scan (paging through LastEvaluatedKey): value = sorted list of N.
``bank`` (:mod:`checkers.bank`)
    accounts ``a0``..``a{A-1}`` seeded with ``initial`` each; ``transfer``
    (``{"from", "to", "amount"}``) is one TransactWriteItems (debit with
    ``b >= :x``, credit); ``read-txn`` (TransactGetItems) and ``read-scan``
    (Scan) return ``{account: balance}`` (an absent account is left out).

Written values are ``process * 10**9 + n`` (n counts the process's ops from
1), unique across the whole run since a process id is never reused.

Error mapping lives in one table (:func:`classify`); see its docstring.

This module speaks only DynamoDB through a boto3 client: it knows nothing of
the reference store.  The checkers are imported when a check runs, so the
client worker processes never load them.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from botocore.exceptions import (BotoCoreError, ClientError, ConnectTimeoutError,
                                 EndpointConnectionError)

if TYPE_CHECKING:
    from checkers.history import Operation
    from checkers.report import Anomaly
    from checkers.result import CheckResult

OK, FAIL, INFO = "ok", "fail", "info"
#: Values a process writes: process * VALUE_BASE + its op counter.
VALUE_BASE = 10**9


@dataclass(frozen=True, slots=True)
class Op:
    """One operation to perform: plain data, picklable, JSON-able."""

    f: str
    key: Any = None
    value: Any = None


@dataclass(slots=True)
class Completion:
    """How an op ended: ``type`` ok|fail|info, its value, and why (if not ok)."""

    type: str
    value: Any = None
    error: str | None = None


@dataclass
class CheckOutcome:
    """What a workload's checker found, in the shapes a run's report needs."""

    verdict: str
    #: this checker's part of results.json, e.g. ``{"set": {...}, "staleness": {...}}``
    results: dict[str, Any]
    #: summary.txt's lines
    summary: list[str]
    #: every anomaly, in time order (plots and the timeline place them)
    anomalies: list[Anomaly]
    #: timeline.html's histories: the whole history's op count, the witnesses
    timeline: list[CheckResult]
    #: how the timeline labels an op
    describe: Callable[[Operation], str]


class Workload(Protocol):
    """What :class:`harness.clients.ClientPool` and a run's analysis need of
    a workload.  ``fs`` are the ops it issues in the main phase."""

    name: str
    fs: tuple[str, ...]

    def setup(self, client: Any) -> None: ...

    def next_op(self, rng: random.Random, process: int) -> Op: ...

    def invoke(self, client: Any, op: Op) -> Completion: ...

    def observe(self, process: int, op: Op, done: Completion) -> None:
        """Learn from a completion (the register's values seen)."""

    def forget(self, process: int) -> None:
        """A process retired: drop what it knew."""

    def final_ops(self) -> list[Op]: ...

    def check(self, ops: list[Operation], t0: int | None, path: str | None = None, *,
              max_staleness_ms: float | None = None) -> CheckOutcome:
        """Check a run's ops, paired once by the caller for every checker;
        ``t0`` (monotonic ns) is the origin of the seconds it reports, ``path``
        the history file the timeline names; ``max_staleness_ms`` a bound
        under which a stale read is no anomaly (:mod:`checkers.staleness`)."""


# ------------------------------------------------------------- error mapping

#: Error codes that prove a write did not take effect (DynamoDB rejects the
#: whole request before doing anything).
WRITE_FAIL_CODES = frozenset({
    "ConditionalCheckFailedException",
    "ValidationException",
    "ResourceNotFoundException",
    "TransactionConflictException",
    "SerializationException",
    "UnknownOperationException",
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ItemCollectionSizeLimitExceededException",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "MissingAuthenticationTokenException",
})
#: CancellationReasons codes under which a cancelled transaction is a ``fail``.
TXN_FAIL_REASONS = frozenset({"None", "ConditionalCheckFailed"})
#: Transport errors raised before a single byte of the request was sent.
NOT_SENT = (EndpointConnectionError, ConnectTimeoutError)


def error_text(exc: BaseException) -> str:
    """One line naming an error: ``Code: message`` or ``ExcClass: message``."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code", "?")
        msg = err.get("Message") or ""
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        reasons = cancellation_codes(exc)
        extra = f" [{', '.join(reasons)}]" if reasons and reasons[0] != "?" else ""
        text = f"{code}: {msg}" if msg else code
        return f"{text}{extra}" + (f" (HTTP {status})" if status and status >= 500 else "")
    return f"{type(exc).__name__}: {exc}"


def cancellation_codes(exc: ClientError) -> list[str]:
    reasons = exc.response.get("CancellationReasons")
    if reasons is None:
        return []
    return [str((r or {}).get("Code", "None")) for r in reasons] or ["?"]


def classify(exc: BaseException, *, read: bool) -> tuple[str, str]:
    """The completion type (``fail`` or ``info``) of an op that raised ``exc``.

    ============================================  ========  ========
    error                                          read      write
    ============================================  ========  ========
    HTTP 5xx (InternalServerError,                 info      info
    ServiceUnavailable, any 500/503)
    read timeout, connection closed or reset,      info      info
    any other transport error
    could not connect (refused, DNS, connect       fail      fail
    timeout): the request was never sent
    4xx in :data:`WRITE_FAIL_CODES`                fail      fail
    TransactionCanceledException, every reason     fail      fail
    in :data:`TXN_FAIL_REASONS`
    TransactionCanceledException, another reason   fail      info
    any other 4xx                                  fail      info
    anything else (a bug, a garbled response)      info      info
    ============================================  ========  ========

    A read has no effect, so any 4xx answer is simply a failed read; a
    timeout or a 5xx is ``info`` (the checkers drop indeterminate reads).
    A write is ``fail`` only when the error proves it did not happen.
    Connection failures before the request left this host are ``fail``
    (Jepsen maps ConnectException the same way): the op cannot have
    happened, and calling it ``info`` would retire the process and flood a
    killed node's history with indeterminate writes.
    """
    text = error_text(exc)
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 400
        code = exc.response.get("Error", {}).get("Code", "")
        if status >= 500 or code in ("InternalServerError", "ServiceUnavailable",
                                     "InternalFailure"):
            return INFO, text
        if read:
            return FAIL, text
        if code in WRITE_FAIL_CODES:
            return FAIL, text
        if code == "TransactionCanceledException":
            reasons = cancellation_codes(exc)
            if reasons and all(r in TXN_FAIL_REASONS for r in reasons):
                return FAIL, text
        return INFO, text
    if isinstance(exc, NOT_SENT):
        return FAIL, text
    return INFO, text


#: ``guarded``'s default: a missing table is an error like any other.
_NO_ANSWER = object()


def guarded(read: bool, op: Op, call: Callable[[], Completion],
            gone: Any = _NO_ANSWER) -> Completion:
    """Run ``call``; an exception becomes the completion :func:`classify` says.

    ``gone``: what a read observed when the store answers that its table does
    not exist (``ResourceNotFoundException``).  The setup created the table
    and no test deletes it, so the store is saying it lost the table and all
    it held: the read is ``ok`` with ``gone`` (the empty set, an unwritten
    item), the store's words kept as its note, and the checkers judge the
    loss like any other."""
    try:
        return call()
    except (ClientError, BotoCoreError, OSError) as e:
        if (read and gone is not _NO_ANSWER and isinstance(e, ClientError)
                and e.response.get("Error", {}).get("Code") == "ResourceNotFoundException"):
            return Completion(OK, gone, f"{error_text(e)} (read as the table's loss)")
        typ, text = classify(e, read=read)
        return Completion(typ, op.value, text)
    except Exception as e:  # noqa: BLE001 - a bug must not kill the client
        return Completion(INFO, op.value, f"{type(e).__name__}: {e}")


# ------------------------------------------------------------------- helpers

def create_table(client: Any, table: str, hash_key: str, range_key: str | None = None,
                 range_type: str = "N", timeout: float = 30.0) -> None:
    """CreateTable (pay per request) unless it exists; wait until ACTIVE."""
    schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
    attrs = [{"AttributeName": hash_key, "AttributeType": "S"}]
    if range_key:
        schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
        attrs.append({"AttributeName": range_key, "AttributeType": range_type})
    try:
        client.create_table(TableName=table, KeySchema=schema, AttributeDefinitions=attrs,
                            BillingMode="PAY_PER_REQUEST")
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") != "ResourceInUseException":
            raise
    deadline = time.monotonic() + timeout
    while True:
        status = client.describe_table(TableName=table)["Table"].get("TableStatus", "ACTIVE")
        if status == "ACTIVE" or time.monotonic() > deadline:
            return
        time.sleep(0.1)


class StaleTableError(RuntimeError):
    """The workload's table holds data from an earlier run: checking a history
    against it would report anomalies that never happened."""


def require_fresh(client: Any, table: str, ok: Callable[[dict[str, Any]], bool] = lambda item: False
                  ) -> None:
    """Raise :class:`StaleTableError` unless every item of ``table`` is ``ok``."""
    for item in _paged(client.scan, TableName=table, ConsistentRead=True, Limit=100):
        if not ok(item):
            raise StaleTableError(
                f"table {table} already holds data (e.g. {item}), from an earlier run? "
                "Use a fresh cluster or another table (workload option `table`).")


def group_router(table: str, groups: int) -> Callable[[str], int]:
    """The Raft group of the reference store that owns a string partition
    key of ``table`` (the store's own router, with the run's ``groups``)."""
    from system.config import Shards
    from system.dynamo.values import encode_key_value
    from system.routing import Router

    router = Router(Shards(groups=groups))
    return lambda pk: router.group_of(table, encode_key_value({"S": pk}))


def _pick(rng: random.Random, mix: Sequence[tuple[str, float]]) -> str:
    """An f drawn with the mix's weights (always exactly one rng draw)."""
    total = sum(w for _, w in mix)
    r = rng.random() * total
    for f, w in mix:
        if r < w:
            return f
        r -= w
    return mix[-1][0]


def _mix(given: dict[str, float] | None, default: dict[str, float]) -> tuple[tuple[str, float], ...]:
    mix = dict(default if given is None else given)
    unknown = set(mix) - set(default)
    if unknown:
        raise ValueError(f"unknown ops in mix: {', '.join(sorted(unknown))} "
                         f"(this workload has {', '.join(default)})")
    if any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
        raise ValueError(f"a mix needs non-negative weights summing above 0, got {mix}")
    return tuple((f, float(w)) for f, w in mix.items() if w > 0)


def _paged(call: Callable[..., dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    """Every item of a Query or Scan, following LastEvaluatedKey."""
    items: list[dict[str, Any]] = []
    while True:
        page = call(**kw)
        items.extend(page.get("Items", ()))
        last = page.get("LastEvaluatedKey")
        if not last:
            return items
        kw["ExclusiveStartKey"] = last


class _Counters:
    """Per-process op counters, for values unique across the run."""

    def __init__(self) -> None:
        self._n: dict[int, int] = {}

    def unique(self, process: int) -> int:
        n = self._n.get(process, 0) + 1
        self._n[process] = n
        if n >= VALUE_BASE:
            raise OverflowError(f"process {process} ran out of unique values")
        return process * VALUE_BASE + n


class KeyRing:
    """K slots of keys; a slot's key retires after ``per_key`` ops.

    Slot ``s`` holds ``k{s}``, then ``k{s+K}``, ``k{s+2K}``, ...  The counts
    live in ``counts`` (a list, or a shared ``multiprocessing.Array`` of K
    integers so that every worker process moves to the next key together:
    a process bound to a slow or cut-off node must read the keys the others
    are writing, or it could show nothing).  Which slot an op takes comes
    from the op's rng; which generation of the slot's key it gets depends
    on how many ops all processes have issued on the slot before it.
    """

    def __init__(self, k: int, per_key: int, counts: Any = None, prefix: str = "k") -> None:
        if k < 1 or per_key < 1:
            raise ValueError("keys and ops_per_key must be positive")
        self.k, self.per_key, self.prefix = k, per_key, prefix
        self.counts = counts if counts is not None else [0] * k
        lock = getattr(self.counts, "get_lock", None)
        self._lock = lock() if lock else threading.Lock()

    def name(self, slot: int, gen: int) -> str:
        return f"{self.prefix}{slot + self.k * gen}"

    def take(self, slot: int) -> str:
        """The key for one more op on ``slot``."""
        with self._lock:
            n = self.counts[slot]
            self.counts[slot] = n + 1
        return self.name(slot, n // self.per_key)

    def current(self) -> list[str]:
        """The key each slot holds now."""
        with self._lock:
            counts = list(self.counts[:])
        return [self.name(s, c // self.per_key) for s, c in enumerate(counts)]


# ------------------------------------------------------------------ register

@dataclass
class RegisterWorkload:
    """Per-key get/put/conditional update of one integer attribute ``v``."""

    keys: int = 8
    ops_per_key: int = 100
    mix: dict[str, float] | None = None
    table: str = "faultline_register"
    #: A shared ``multiprocessing.Array("q", keys)`` (see :class:`KeyRing`).
    key_counts: Any = None
    #: the store's Raft groups, to report the anomalies of each
    groups: int = 1

    name = "register"
    fs = ("get", "put", "update")
    #: Read-heavy for the same reason as the set workload's mix.
    DEFAULT_MIX = {"get": 0.7, "put": 0.15, "update": 0.15}
    #: The read family (the store's ``reads`` config) each read op uses.
    READ_FAMILIES = {"get": "get_item"}

    def __post_init__(self) -> None:
        self._mix = _mix(self.mix, self.DEFAULT_MIX)
        self.ring = KeyRing(self.keys, self.ops_per_key, self.key_counts)
        self._values = _Counters()
        #: (process, key) -> the value the process last saw there.
        self._seen: dict[int, dict[str, Any]] = {}

    @staticmethod
    def shared_state(ctx: Any, options: dict[str, Any]) -> dict[str, Any]:
        """Options to add so that workers share the key rotation."""
        return {"key_counts": ctx.Array("q", int(options.get("keys", 8)))}

    def setup(self, client: Any) -> None:
        create_table(client, self.table, "pk")
        require_fresh(client, self.table)

    def next_op(self, rng: random.Random, process: int) -> Op:
        slot = rng.randrange(self.keys)
        f = _pick(rng, self._mix)
        key = self.ring.take(slot)
        if f == "get":
            return Op("get", key, None)
        value = self._values.unique(process)
        if f == "put":
            return Op("put", key, value)
        return Op("update", key, [self._seen.get(process, {}).get(key), value])

    def observe(self, process: int, op: Op, done: Completion) -> None:
        if done.type != OK:
            return
        seen = self._seen.setdefault(process, {})
        if op.f == "get":
            seen[op.key] = done.value
        elif op.f == "put":
            seen[op.key] = op.value
        elif op.f == "update":
            seen[op.key] = op.value[1]
        if len(seen) > 4 * self.keys:  # retired keys: forget the oldest
            for k in list(seen)[:len(seen) - 2 * self.keys]:
                del seen[k]

    def forget(self, process: int) -> None:
        self._seen.pop(process, None)

    def invoke(self, client: Any, op: Op) -> Completion:
        key = {"pk": {"S": str(op.key)}}
        if op.f == "get":
            def get() -> Completion:
                item = client.get_item(TableName=self.table, Key=key,
                                       ConsistentRead=True).get("Item")
                v = item.get("v") if item else None
                return Completion(OK, int(v["N"]) if v else None)
            return guarded(True, op, get, gone=None)
        if op.f == "put":
            def put() -> Completion:
                client.put_item(TableName=self.table,
                                Item={**key, "v": {"N": str(op.value)}})
                return Completion(OK, op.value)
            return guarded(False, op, put)
        if op.f == "update":
            old, new = op.value

            def update() -> Completion:
                values = {":new": {"N": str(new)}}
                if old is None:
                    cond = "attribute_not_exists(v)"
                else:
                    cond = "v = :old"
                    values[":old"] = {"N": str(old)}
                client.update_item(TableName=self.table, Key=key,
                                   UpdateExpression="SET v = :new", ConditionExpression=cond,
                                   ExpressionAttributeValues=values)
                return Completion(OK, [old, new])
            return guarded(False, op, update)
        raise ValueError(f"register has no op {op.f!r}")

    def final_ops(self) -> list[Op]:
        return [Op("get", k, None) for k in self.ring.current()]

    def check(self, ops: list[Operation], t0: int | None, path: str | None = None, *,
              max_staleness_ms: float | None = None) -> CheckOutcome:
        """Linearizability of every key against the ``dynamo-item`` model (under
        a bound, Δ-atomicity: every read checked as if invoked that much
        earlier), and how stale each stale read was.  Under a bound the
        timeline shows the history as checked; anomalies stay on the ops given."""
        from checkers.check import check_ops
        from checkers.models import get_model
        from checkers.report import Anomaly, in_time_order, key_lines
        from checkers.result import INVALID, UNKNOWN
        from checkers.staleness import (StalenessReport, register_staleness, shift_reads,
                                        verdict_text)

        model = get_model("dynamo-item")

        def is_read(op: Operation) -> bool:
            return op.f in self.READ_FAMILIES
        checked = ops if max_staleness_ms is None else shift_reads(ops, max_staleness_ms, is_read)
        res = check_ops(checked, "dynamo-item", path=path)
        given = {op.id: op for op in ops}
        witnesses = [k.witness for k in res.keys if k.witness is not None]
        anomalies = in_time_order(Anomaly("not linearizable", given[w.failing_op.id],
                                          w.explanation) for w in witnesses)
        staleness = StalenessReport.of(
            register_staleness(ops, model), [op for op in ops if is_read(op) and op.status == OK],
            max_staleness_ms=max_staleness_ms, families=self.READ_FAMILIES, t0=t0)
        results = {"linearizable": {
            "verdict": res.verdict, "keys": len(res.keys),
            "invalid_keys": [str(k.key) for k in res.keys if k.verdict == INVALID],
            "unknown_keys": {str(k.key): k.reason for k in res.keys if k.verdict == UNKNOWN},
            "witnesses": [w.explanation for w in witnesses]},
            "staleness": staleness.to_dict()}
        summary = [f"linearizability: {verdict_text(res.verdict, max_staleness_ms)} "
                   f"over {len(res.keys)} keys", *staleness.lines(),
                   *key_lines(res, model.describe_op)]
        if self.groups > 1:
            route = group_router(self.table, self.groups)
            by_group = {str(g): {"keys": 0, "invalid_keys": 0} for g in range(self.groups)}
            for k in res.keys:
                counts = by_group[str(route(str(k.key)))]
                counts["keys"] += 1
                counts["invalid_keys"] += k.verdict == INVALID
            results["by_group"] = by_group
            summary.append("  by Raft group: " + "; ".join(
                f"group {g}: {c['invalid_keys']} of {c['keys']} keys not linearizable"
                for g, c in by_group.items()))
        return CheckOutcome(res.verdict, results, summary, anomalies, [res],
                            model.describe_op)


# ----------------------------------------------------------------------- set

@dataclass
class SetWorkload:
    """Unique inserts, read by Query and by Scan.  With ``partitions > 1``
    element N goes to partition ``s<N mod partitions>`` (so a sharded store
    spreads them over its groups); a read-query then queries each partition
    in turn and returns their union, a read-scan scans them all.  ``groups``:
    the store's Raft groups, to report the anomalies of each."""

    mix: dict[str, float] | None = None
    table: str = "faultline_set"
    partition: str = "s"
    partitions: int = 1
    groups: int = 1

    name = "set"
    fs = ("add", "read-query", "read-scan")
    #: Read-heavy: a worker bound to a cut-off leader blocks a client timeout
    #: on every add, so its reads (what can show staleness) come between them.
    DEFAULT_MIX = {"add": 0.25, "read-query": 0.375, "read-scan": 0.375}
    #: The read family (the store's ``reads`` config) each read op uses.
    READ_FAMILIES = {"read-query": "query", "read-scan": "scan"}

    def __post_init__(self) -> None:
        self._mix = _mix(self.mix, self.DEFAULT_MIX)
        self._values = _Counters()
        if self.partitions < 1:
            raise ValueError(f"partitions: must be at least 1, got {self.partitions}")
        self._names = ([self.partition] if self.partitions == 1 else
                       self._spread() if self.groups > 1 else
                       [f"{self.partition}{i}" for i in range(self.partitions)])

    def _spread(self) -> list[str]:
        """Partition names that the reference store's router deals out evenly
        over its groups (the first names that land in each, in turn)."""
        group_of = self._router()
        want = -(-self.partitions // self.groups)
        taken: dict[int, list[str]] = {g: [] for g in range(self.groups)}
        i = 0
        while sum(map(len, taken.values())) < want * self.groups:
            name = f"{self.partition}{i}"
            g = group_of(name)
            if len(taken[g]) < want:
                taken[g].append(name)
            i += 1
        return [n for names in zip(*taken.values()) for n in names][:self.partitions]

    def _router(self) -> Callable[[str], int]:
        return group_router(self.table, self.groups)

    def partition_of(self, element: int) -> str:
        return self._names[element % self.partitions]

    def setup(self, client: Any) -> None:
        create_table(client, self.table, "pk", "sk", "N")
        require_fresh(client, self.table)

    def next_op(self, rng: random.Random, process: int) -> Op:
        f = _pick(rng, self._mix)
        if f == "add":
            return Op("add", None, self._values.unique(process))
        return Op(f, None, None)

    def observe(self, process: int, op: Op, done: Completion) -> None:
        pass

    def forget(self, process: int) -> None:
        pass

    def _ints(self, items: list[dict[str, Any]]) -> list[int]:
        ours = set(self._names)
        return sorted(int(it["sk"]["N"]) for it in items
                      if it.get("pk", {}).get("S", self.partition) in ours)

    def invoke(self, client: Any, op: Op) -> Completion:
        if op.f == "add":
            def add() -> Completion:
                client.put_item(TableName=self.table, Item={
                    "pk": {"S": self.partition_of(op.value)}, "sk": {"N": str(op.value)}})
                return Completion(OK, op.value)
            return guarded(False, op, add)
        if op.f == "read-query":
            def query() -> Completion:
                items = [it for p in self._names for it in _paged(
                    client.query, TableName=self.table, ConsistentRead=True,
                    KeyConditionExpression="pk = :p",
                    ExpressionAttributeValues={":p": {"S": p}},
                    ProjectionExpression="pk, sk")]
                return Completion(OK, self._ints(items))
            return guarded(True, op, query, gone=[])
        if op.f == "read-scan":
            def scan() -> Completion:
                items = _paged(client.scan, TableName=self.table, ConsistentRead=True,
                               ProjectionExpression="pk, sk")
                return Completion(OK, self._ints(items))
            return guarded(True, op, scan, gone=[])
        raise ValueError(f"set has no op {op.f!r}")

    def final_ops(self) -> list[Op]:
        return [Op("read-query"), Op("read-scan")]

    def check(self, ops: list[Operation], t0: int | None, path: str | None = None, *,
              max_staleness_ms: float | None = None) -> CheckOutcome:
        """Stale reads (and how stale), lost elements, phantoms, duplicates
        (the set checker); a read at most ``max_staleness_ms`` stale is no anomaly."""
        from checkers.set_checker import check_set, describe_op

        res = check_set(ops, t0=t0, max_staleness_ms=max_staleness_ms,
                        families=self.READ_FAMILIES)
        results = {"set": res.to_dict(), "staleness": res.staleness.to_dict()}
        summary = res.describe().splitlines()
        if self.groups > 1:
            results["by_group"] = self.by_group(res)
            summary.append("  by Raft group: " + "; ".join(
                f"group {g}: {c['stale_elements']} elements missed by stale reads, "
                f"{c['lost']} lost" for g, c in results["by_group"].items()))
        return CheckOutcome(res.verdict, results, summary, res.anomalies(),
                            [res.page(len(ops), path)], describe_op)

    def by_group(self, res: Any) -> dict[str, dict[str, int]]:
        """The anomalous elements of each Raft group of the reference store:
        which group owns an element's partition (its router, same config)."""
        route = self._router()
        group_of = {p: route(p) for p in self._names}
        out = {str(g): {"stale_elements": 0, "lost": 0} for g in range(self.groups)}
        for what, elements in (("stale_elements", res.stale_elements), ("lost", res.lost)):
            for e in elements:
                if isinstance(e, int):
                    out[str(group_of[self.partition_of(e)])][what] += 1
        return out


# ---------------------------------------------------------------------- bank

@dataclass
class BankWorkload:
    """Transfers between accounts in transactions; snapshot reads of all."""

    accounts: int = 5
    initial: int = 100
    max_transfer: int = 5
    mix: dict[str, float] | None = None
    table: str = "faultline_bank"

    name = "bank"
    fs = ("transfer", "read-txn", "read-scan")
    DEFAULT_MIX = {"transfer": 0.5, "read-txn": 0.25, "read-scan": 0.25}

    def __post_init__(self) -> None:
        if self.accounts < 2:
            raise ValueError("a bank needs at least 2 accounts")
        self._mix = _mix(self.mix, self.DEFAULT_MIX)
        self.names = [f"a{i}" for i in range(self.accounts)]

    @property
    def total(self) -> int:
        return self.accounts * self.initial

    def setup(self, client: Any) -> None:
        create_table(client, self.table, "pk")
        for acct in self.names:
            try:
                client.put_item(TableName=self.table,
                                Item={"pk": {"S": acct}, "b": {"N": str(self.initial)}},
                                ConditionExpression="attribute_not_exists(pk)")
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
        # Seeded by this run (a retried setup) or an earlier one (balances moved)?
        require_fresh(client, self.table, lambda item: item.get("b") == {"N": str(self.initial)}
                      and item.get("pk", {}).get("S") in self.names)

    def next_op(self, rng: random.Random, process: int) -> Op:
        f = _pick(rng, self._mix)
        a = rng.randrange(self.accounts)
        b = (a + 1 + rng.randrange(self.accounts - 1)) % self.accounts
        amount = rng.randint(1, self.max_transfer)
        if f == "transfer":
            return Op("transfer", None, {"from": self.names[a], "to": self.names[b],
                                         "amount": amount})
        return Op(f, None, None)

    def observe(self, process: int, op: Op, done: Completion) -> None:
        pass

    def forget(self, process: int) -> None:
        pass

    def _balances(self, items: Sequence[dict[str, Any] | None]) -> dict[str, int]:
        wanted = set(self.names)
        out = {it["pk"]["S"]: int(it["b"]["N"]) for it in items
               if it and it.get("pk", {}).get("S") in wanted and "b" in it}
        return dict(sorted(out.items(), key=lambda kv: int(kv[0][1:])))

    def invoke(self, client: Any, op: Op) -> Completion:
        if op.f == "transfer":
            v = op.value

            def transfer() -> Completion:
                x = {":x": {"N": str(v["amount"])}}
                client.transact_write_items(TransactItems=[
                    {"Update": {"TableName": self.table, "Key": {"pk": {"S": v["from"]}},
                                "UpdateExpression": "SET b = b - :x",
                                "ConditionExpression": "b >= :x",
                                "ExpressionAttributeValues": x}},
                    {"Update": {"TableName": self.table, "Key": {"pk": {"S": v["to"]}},
                                "UpdateExpression": "SET b = b + :x",
                                "ExpressionAttributeValues": x}}])
                return Completion(OK, v)
            return guarded(False, op, transfer)
        if op.f == "read-txn":
            def read_txn() -> Completion:
                out = client.transact_get_items(TransactItems=[
                    {"Get": {"TableName": self.table, "Key": {"pk": {"S": a}}}}
                    for a in self.names])
                return Completion(OK, self._balances([r.get("Item") for r in
                                                      out.get("Responses", ())]))
            return guarded(True, op, read_txn)
        if op.f == "read-scan":
            def scan() -> Completion:
                return Completion(OK, self._balances(_paged(
                    client.scan, TableName=self.table, ConsistentRead=True)))
            return guarded(True, op, scan)
        raise ValueError(f"bank has no op {op.f!r}")

    def final_ops(self) -> list[Op]:
        return [Op("read-txn"), Op("read-scan")]

    def check(self, ops: list[Operation], t0: int | None, path: str | None = None, *,
              max_staleness_ms: float | None = None) -> CheckOutcome:
        """A constant total and no negative balance in every read (the bank
        checker); these invariants involve no staleness, so a bound changes nothing."""
        from checkers.bank import check_bank, describe_op

        res = check_bank(ops, total=self.total, accounts=self.names, t0=t0)
        return CheckOutcome(res.verdict, {"bank": res.to_dict()}, res.describe().splitlines(),
                            res.anomalies(), [res.page(len(ops), path)], describe_op)


WORKLOADS: dict[str, type] = {
    "register": RegisterWorkload,
    "set": SetWorkload,
    "bank": BankWorkload,
}


def make_workload(name: str, options: dict[str, Any] | None = None) -> Any:
    """A workload by name; ``options`` are its dataclass fields."""
    try:
        cls = WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose one of "
                         f"{', '.join(WORKLOADS)}") from None
    try:
        return cls(**(options or {}))
    except TypeError as e:
        raise ValueError(f"bad options for workload {name}: {e}") from None



def shared_state(name: str, ctx: Any, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Extra options (shared-memory objects) a workload's worker processes share."""
    fn = getattr(WORKLOADS.get(name), "shared_state", None)
    return fn(ctx, dict(options or {})) if fn else {}
