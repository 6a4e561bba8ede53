"""The DynamoDB JSON 1.0 operations, between the node's HTTP front and its
replicated state machine.

``DynamoService(backend).handle(target, body)`` answers one request: the
``X-Amz-Target`` header (``DynamoDB_20120810.<Op>``) and the raw body, giving
``(HTTP status, JSON body dict)``.  It never raises for anything a client can
send: malformed input gets DynamoDB's error (SerializationException,
UnknownOperationException, ValidationException, ResourceNotFoundException,
...), and an unexpected exception is logged and answered as a 500
InternalServerError.

Operations: CreateTable, DescribeTable, DeleteTable, ListTables, PutItem,
GetItem, UpdateItem, DeleteItem, Query, Scan, BatchGetItem, BatchWriteItem,
TransactWriteItems, TransactGetItems.  Not supported (ValidationException):
secondary indexes (IndexName, GSI/LSI in CreateTable) and the legacy
parameters (Expected, KeyConditions, QueryFilter, ScanFilter,
AttributeUpdates, ConditionalOperator); AttributesToGet is supported.

**Groups.**  The store may be sharded into Raft groups
(:mod:`system.routing`): every item belongs to the group of its (table,
partition key), the catalogue to the default group 0.  GetItem, Query and the
single-item writes touch one group; Scan touches every group; the batches
and transactions touch the groups of their keys.

**Reads** (GetItem, Query, Scan, BatchGetItem, TransactGetItems) first
validate the whole request against the node's applied state (so a 4xx never
turns into a 500), then ``await backend.ensure_fresh(family, groups)`` (one
check per group touched, concurrently), *then* take ``ts =
backend.read_ts(group)`` of every group and read each group's MVCC snapshot
at its ``ts`` with no ``await`` in between, so a read sees every write
committed before its freshness checks completed.  The bug flag
``read-ts-before-check`` samples the timestamps before the checks instead
(a read that waited on ReadIndex then reads the snapshot of before the
wait).  TransactGetItems and BatchGetItem read all their items of one group
at one ``ts``.  ConsistentRead is accepted and changes nothing: every read
takes the path its family is configured for.

**Writes** are validated here, on the node that received the request, built
into a command (formats in :mod:`system.dynamo.commands`) and handed to
``await backend.propose(command)``, which replicates it and returns
``apply_command``'s result once applied; an error result becomes the
DynamoDB error response.  A BatchWriteItem over several groups proposes one
command per group (a batch is not atomic in DynamoDB either); a
TransactWriteItems must keep to one group for now.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
import zlib
from dataclasses import dataclass
import heapq
from typing import Any, Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Protocol

from ..concurrency import all_or_first_error
from ..mvcc import MVCCStore, NoSuchTable, SnapshotTooOld
from . import expressions as E
from . import values as V
from .commands import encode_key, is_internal_table, key_schema, result_error, table_id
from .errors import (DynamoError, internal_server_error, resource_not_found, serialization,
                     table_in_use, table_not_found, unknown_operation, validation)

__all__ = ["Backend", "DynamoService", "TARGET_PREFIX", "READ_FAMILIES", "BUG_READ_TS_BEFORE_CHECK"]

log = logging.getLogger(__name__)

TARGET_PREFIX = "DynamoDB_20120810."
READ_FAMILIES = ("get_item", "query", "scan", "transact_get_items", "batch_get_item")
BUG_READ_TS_BEFORE_CHECK = "read-ts-before-check"

PAGE_BYTES = 1024 * 1024            # Query/Scan stop after 1 MB of evaluated items
MAX_BATCH_GET = 100
MAX_BATCH_WRITE = 25
MAX_TRANSACT_ITEMS = 100
MAX_LIST_TABLES = 100
MAX_TOTAL_SEGMENTS = 1_000_000


class Backend(Protocol):
    """What the node gives the service.

    ``catalogue``
        the default group's applied MVCCStore, which holds the tables.
    ``group_count``, ``group_of(table, pk)``, ``store_of(group)``
        how many groups there are, which owns a partition (its key's stored
        bytes), and a group's applied MVCCStore on this node (read here,
        never written: writes go through ``propose``).
    ``ensure_fresh(family, groups)``
        the freshness check of a read family (``get_item``, ``query``,
        ``scan``, ``transact_get_items``, ``batch_get_item``) for each group
        a read touches: lease fast path, ReadIndex round, or nothing, as the
        node's configuration (and bug flags such as
        ``unchecked-range-reads``) decide.  Returns once a read at
        ``read_ts(group)`` is fresh; raises DynamoError (500
        InternalServerError) when a check fails or times out.  Any other
        exception is also answered as a 500.
    ``read_ts(group)``
        the timestamp to read a group's snapshot at: its last applied commit
        timestamp on this node (after the check).
    ``has_bug(name)``
        whether a bug flag is on (the service reads ``read-ts-before-check``).
    ``propose(command, group)``
        replicate a write command through the group's Raft log and return
        ``apply_command``'s result once applied on that group's leader;
        raises DynamoError when it cannot (not the leader and not forwarded,
        timeout: 5xx, so clients treat the outcome as unknown).
    """

    catalogue: MVCCStore
    group_count: int

    def group_of(self, table: str, pk: bytes) -> int: ...

    def store_of(self, group: int) -> MVCCStore: ...

    async def ensure_fresh(self, family: str, groups: Collection[int]) -> None: ...

    def read_ts(self, group: int) -> int: ...

    def has_bug(self, name: str) -> bool: ...

    async def propose(self, command: dict[str, Any], group: int = 0) -> dict[str, Any]: ...


# ---------------------------------------------------------------------------
# Request fields
# ---------------------------------------------------------------------------

_TABLE_NAME_RE = re.compile(r"[a-zA-Z0-9_.-]+\Z")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _kind(v: Any) -> str:
    return V._json_kind(v)


def _show(v: Any) -> str:
    if isinstance(v, str):
        return v
    try:
        return json.dumps(v, separators=(",", ":"))[:200]
    except (TypeError, ValueError):
        return str(v)[:200]


def _constraint(value: Any, path: str, constraint: str) -> DynamoError:
    shown = "null" if value is None else f"'{_show(value)}'"
    return validation(f"1 validation error detected: Value {shown} at '{path}' failed to satisfy "
                      f"constraint: {constraint}")


def _not_expected(v: Any, target: str) -> DynamoError:
    if isinstance(v, dict):
        return serialization("Start of structure or map found where not expected.")
    if isinstance(v, list):
        return serialization("Start of list found where not expected")
    return serialization(f"{_kind(v)} cannot be converted to {target}")


class _Req:
    """Typed access to a request structure, with DynamoDB's errors.  JSON
    null counts as absent."""

    __slots__ = ("d", "prefix")

    def __init__(self, d: dict[str, Any], prefix: str = "") -> None:
        self.d = d
        self.prefix = prefix

    def path(self, name: str) -> str:
        member = name[:1].lower() + name[1:]
        return f"{self.prefix}.{member}" if self.prefix else member

    def has(self, name: str) -> bool:
        return self.d.get(name) is not None

    def raw(self, name: str) -> Any:
        return self.d.get(name)

    def str_(self, name: str, *, required: bool = False, min_len: int | None = None,
            max_len: int | None = None) -> str | None:
        v = self.d.get(name)
        if v is None:
            if required:
                raise _constraint(None, self.path(name), "Member must not be null")
            return None
        if not isinstance(v, str):
            raise _not_expected(v, "String")
        if min_len is not None and len(v) < min_len:
            raise _constraint(v, self.path(name), f"Member must have length greater than or equal to {min_len}")
        if max_len is not None and len(v) > max_len:
            raise _constraint(v, self.path(name), f"Member must have length less than or equal to {max_len}")
        return v

    def bool_(self, name: str, default: bool) -> bool:
        v = self.d.get(name)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise _not_expected(v, "Boolean")
        return v

    def int_(self, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
        v = self.d.get(name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            raise _not_expected(v, "Integer")
        if minimum is not None and v < minimum:
            raise _constraint(v, self.path(name), f"Member must have value greater than or equal to {minimum}")
        if maximum is not None and v > maximum:
            raise _constraint(v, self.path(name), f"Member must have value less than or equal to {maximum}")
        return v

    def map_(self, name: str, *, required: bool = False) -> dict[str, Any] | None:
        v = self.d.get(name)
        if v is None:
            if required:
                raise _constraint(None, self.path(name), "Member must not be null")
            return None
        if not isinstance(v, dict):
            if isinstance(v, list):
                raise serialization("Start of list found where not expected")
            raise serialization("Unexpected value type in payload")
        return v

    def list_(self, name: str, *, required: bool = False, min_len: int | None = None,
             max_len: int | None = None) -> list[Any] | None:
        v = self.d.get(name)
        if v is None:
            if required:
                raise _constraint(None, self.path(name), "Member must not be null")
            return None
        if not isinstance(v, list):
            if isinstance(v, dict):
                raise serialization("Start of structure or map found where not expected.")
            raise serialization("Unexpected value type in payload")
        if min_len is not None and len(v) < min_len:
            raise _constraint(v, self.path(name), f"Member must have length greater than or equal to {min_len}")
        if max_len is not None and len(v) > max_len:
            raise _constraint(v, self.path(name), f"Member must have length less than or equal to {max_len}")
        return v

    def enum_(self, name: str, allowed: tuple[str, ...], default: str | None = None) -> str | None:
        v = self.str_(name)
        if v is None:
            return default
        if v not in allowed:
            raise _constraint(v, self.path(name), f"Member must satisfy enum value set: [{', '.join(allowed)}]")
        return v

    def sub(self, name: str, *, required: bool = False) -> "_Req | None":
        m = self.map_(name, required=required)
        return None if m is None else _Req(m, self.path(name))

    def member(self, v: Any, index: int, list_name: str) -> "_Req":
        """The ``index``-th (0-based) structure of a list member."""
        if not isinstance(v, dict):
            raise _not_expected(v, "Structure")
        return _Req(v, f"{self.path(list_name)}.{index + 1}.member")

    def table_name(self, name: str = "TableName") -> str:
        v = self.str_(name, required=True)
        assert v is not None
        return _check_table_name(v, self.path(name))

    def no_legacy(self, *names: str) -> None:
        for n in names:
            if self.has(n):
                raise validation(f"The legacy parameter {n} is not supported by this store; "
                                 f"use the expression parameters instead")


def _check_table_name(v: str, path: str = "tableName") -> str:
    if len(v) < 3:
        raise _constraint(v, path, "Member must have length greater than or equal to 3")
    if len(v) > 255:
        raise _constraint(v, path, "Member must have length less than or equal to 255")
    if not _TABLE_NAME_RE.match(v):
        raise _constraint(v, path, "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+")
    return v


def _decode(body: bytes | bytearray | str | None) -> dict[str, Any]:
    if body is None:
        return {}
    if isinstance(body, str):
        try:
            body = body.encode("utf-8")
        except UnicodeEncodeError:
            raise serialization("Request body is not valid UTF-8") from None
    if not body.strip():
        return {}
    try:
        req = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise serialization("The request body is not valid JSON") from None
    if not isinstance(req, dict):
        raise _not_expected(req, "Structure")
    if _SURROGATE_ESCAPE.search(body):
        # a lone UTF-16 surrogate is no text: it cannot be stored or replicated
        try:
            json.dumps(req, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise serialization("Invalid UTF-8 in request: unpaired surrogate") from None
        except RecursionError:
            raise serialization("The request body is nested too deeply") from None
    return req


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Table:
    name: str
    doc: dict[str, Any]         # the stored schema (KeySchema, AttributeDefinitions, ...)
    key: V.KeySchema
    created_ts: int


class DynamoService:
    """The DynamoDB API of one node (see the module docstring)."""

    def __init__(self, backend: Backend, *, region: str = "us-east-1",
                 account_id: str = "000000000000") -> None:
        self.backend = backend
        self.region = region
        self.account_id = account_id
        self._tables: dict[str, _Table] = {}
        self._ops: dict[str, Callable[[_Req], Awaitable[dict[str, Any]]]] = {
            "CreateTable": self._create_table,
            "DescribeTable": self._describe_table,
            "DeleteTable": self._delete_table,
            "ListTables": self._list_tables,
            "PutItem": self._put_item,
            "GetItem": self._get_item,
            "UpdateItem": self._update_item,
            "DeleteItem": self._delete_item,
            "Query": self._query,
            "Scan": self._scan,
            "BatchGetItem": self._batch_get_item,
            "BatchWriteItem": self._batch_write_item,
            "TransactWriteItems": self._transact_write_items,
            "TransactGetItems": self._transact_get_items,
        }

    @property
    def operations(self) -> tuple[str, ...]:
        return tuple(self._ops)

    async def handle(self, target: str | None, body: bytes | str | None,
                     request: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        """Answer one request: ``(HTTP status, JSON body)``; ``request``, if
        given, is ``body`` decoded already (:meth:`route`).  Never raises
        (except for the task being cancelled)."""
        op_name = "?"
        try:
            if not isinstance(target, str) or not target.startswith(TARGET_PREFIX):
                raise unknown_operation()
            op_name = target[len(TARGET_PREFIX):]
            op = self._ops.get(op_name)
            if op is None:
                raise unknown_operation()
            req = request if request is not None else _decode(body)
            if self.backend.group_count > 1:
                await self._know_tables(req)
            return 200, await op(_Req(req))
        except DynamoError as e:
            if e.status >= 500:
                log.info("%s answered %s: %s", op_name, e.type_name, e.message)
            return e.status, e.to_body()
        except Exception:  # noqa: BLE001 - bad input must never crash the node
            log.exception("unexpected error in %s", op_name)
            ise = internal_server_error()
            return ise.status, ise.to_body()

    # -- routing -------------------------------------------------------------------

    async def _know_tables(self, req: dict[str, Any]) -> None:
        """With several groups a request is served by its group's leader,
        whose replica of the catalogue (the default group's) may lag: a table
        it does not know yet is looked up again after a freshness check of
        the default group, so a table just made is found.  Only on a miss."""
        named: list[Any] = [req.get("TableName")]
        if isinstance(req.get("RequestItems"), dict):
            named += list(req["RequestItems"])
        for t in req.get("TransactItems") or []:
            if isinstance(t, dict):
                named += [sub.get("TableName") for sub in t.values() if isinstance(sub, dict)]
        catalogue = self.backend.catalogue
        if any(isinstance(n, str) and not catalogue.has_table(n) for n in named):
            with contextlib.suppress(DynamoError):
                await self.backend.ensure_fresh("get_item", [0])

    def route(self, op: str, body: bytes | str | None) -> tuple[int | None, dict[str, Any] | None]:
        """The group whose leader should serve this request, and the request
        decoded (for :meth:`handle`, so it is decoded once; None if it does
        not decode).  The group: that of its keys, or the default group for
        the catalogue and for a request this node cannot route (it is
        answered there, with its error); None when it touches several groups
        (served where it arrived, each group checked by its own leader)."""
        try:
            req = _decode(body)
        except DynamoError:
            return 0, None
        try:
            groups = self._groups_of(op, req)
        except (DynamoError, LookupError, TypeError, ValueError, AttributeError):
            return 0, req
        return (groups.pop() if len(groups) == 1 else None), req

    def _groups_of(self, op: str, req: dict[str, Any]) -> set[int]:
        def key_group(name: Any, key: Any) -> int:
            info = self._table(name)
            if not isinstance(key, dict):
                raise TypeError("not a key")
            key = V.validate_key({n: key[n] for n in info.key.names}, info.key)
            return self._group(info, encode_key(key, info.key)[0])

        if op in ("GetItem", "UpdateItem", "DeleteItem"):
            return {key_group(req["TableName"], req["Key"])}
        if op == "PutItem":
            return {key_group(req["TableName"], req["Item"])}
        if op == "Query":
            info = self._table(req["TableName"])
            names, values = self._expression_attributes(_Req(req), True)
            kc = E.parse_key_condition(req["KeyConditionExpression"], names, values, info.key)
            return {self._group(info, V.encode_key_value(kc.hash_value))}
        if op == "Scan":
            return set(range(self.backend.group_count))
        if op == "BatchGetItem":
            return {key_group(name, k) for name, spec in req["RequestItems"].items()
                    for k in spec["Keys"]}
        if op == "BatchWriteItem":
            return {key_group(name, w["PutRequest"]["Item"] if "PutRequest" in w
                              else w["DeleteRequest"]["Key"])
                    for name, ws in req["RequestItems"].items() for w in ws}
        if op in ("TransactWriteItems", "TransactGetItems"):
            out = set()
            for t in req["TransactItems"]:
                (_, sub), = t.items()
                out.add(key_group(sub["TableName"], sub["Item"] if "Item" in sub else sub["Key"]))
            return out
        return {0}

    # -- helpers -------------------------------------------------------------------

    def _table(self, name: str) -> _Table:
        if is_internal_table(name):
            raise resource_not_found()
        try:
            desc = self.backend.catalogue.describe(name)
        except NoSuchTable:
            raise resource_not_found() from None
        info = self._tables.get(name)
        if info is None or info.created_ts != desc["created_ts"]:
            doc = desc["schema"]
            info = _Table(name, doc, key_schema(doc), desc["created_ts"])
            self._tables[name] = info
        return info

    async def _read_ts(self, family: str, groups: Iterable[int]) -> dict[int, int]:
        """The freshness checks and the read timestamp of each group, in that
        order (or the reverse with the ``read-ts-before-check`` bug flag)."""
        b = self.backend
        gs = sorted(set(groups))
        if b.has_bug(BUG_READ_TS_BEFORE_CHECK):
            ts = {g: b.read_ts(g) for g in gs}
            await self._ensure_fresh(family, gs)
            return ts
        await self._ensure_fresh(family, gs)
        return {g: b.read_ts(g) for g in gs}

    def _group(self, info: _Table, pk: bytes) -> int:
        return self.backend.group_of(info.name, pk)

    def _store(self, group: int, info: _Table) -> MVCCStore | None:
        """The group's store if it holds this incarnation of the table (a
        group that never saw a write to it, or only to an older table of
        the same name, holds none of its items)."""
        store = self.backend.store_of(group)
        if group == 0:
            return store
        if not store.has_table(info.name) or \
                table_id(store.describe(info.name)["schema"]) != table_id(info.doc):
            return None
        return store

    def _get(self, group: int, info: _Table, pk: bytes, sk: bytes, ts: int) -> Any:
        store = self._store(group, info)
        return None if store is None else store.get(info.name, pk, sk, ts)

    def _for_group(self, group: int, command: dict[str, Any],
                   infos: Iterable[_Table]) -> dict[str, Any]:
        """A command for ``group``, carrying the schemas a non-default group
        needs to adopt the tables it writes (see :mod:`.commands`)."""
        if group != 0:
            command["tables"] = {i.name: i.doc for i in infos}
        return command

    async def _ensure_fresh(self, family: str, groups: Collection[int]) -> None:
        try:
            await self.backend.ensure_fresh(family, groups)
        except DynamoError:
            raise
        except Exception as e:  # noqa: BLE001
            log.warning("freshness check of %s failed: %r", family, e)
            raise internal_server_error(f"read freshness check failed: {type(e).__name__}") from None

    async def _propose(self, command: dict[str, Any], group: int = 0) -> dict[str, Any]:
        try:
            result = await self.backend.propose(command, group)
        except DynamoError:
            raise
        except Exception as e:  # noqa: BLE001
            log.warning("propose of %s failed: %r", command.get("op"), e)
            raise internal_server_error(f"write failed: {type(e).__name__}") from None
        if not isinstance(result, dict):
            raise internal_server_error("malformed write result")
        err = result_error(result)
        if err is not None:
            raise err
        return result

    @staticmethod
    def _return_consumed(r: _Req, metrics: bool = False) -> None:
        r.enum_("ReturnConsumedCapacity", ("INDEXES", "TOTAL", "NONE"))
        if metrics:
            r.enum_("ReturnItemCollectionMetrics", ("SIZE", "NONE"))

    @staticmethod
    def _expression_attributes(r: _Req, present: bool, values_allowed: bool = True
                               ) -> tuple[dict[str, str] | None, dict[str, Any] | None]:
        raw_values = r.raw("ExpressionAttributeValues") if values_allowed else None
        return E.validate_expression_attributes(r.raw("ExpressionAttributeNames"), raw_values, present)

    @staticmethod
    def _projection(r: _Req, names: Mapping[str, Any] | None) -> E.Projection | None:
        text = r.str_("ProjectionExpression")
        attrs = r.list_("AttributesToGet", min_len=1)
        if text is not None and attrs is not None:
            raise validation("Can not use both expression and non-expression parameters in the same request: "
                             "Non-expression parameters: {AttributesToGet} Expression parameters: "
                             "{ProjectionExpression}")
        if text is not None:
            return E.parse_projection(text, names)
        if attrs is not None:
            seen: dict[str, None] = {}
            for a in attrs:
                if not isinstance(a, str):
                    raise _not_expected(a, "String")
                if a in seen:
                    raise validation(f"One or more parameter values were invalid: Duplicate value in "
                                     f"attribute name: {a}")
                seen[a] = None
            return E.Projection("", tuple((a,) for a in seen), frozenset())
        return None

    @staticmethod
    def _key(r: _Req, info: _Table, name: str = "Key") -> dict[str, Any]:
        raw = r.map_(name, required=True)
        return V.validate_key(raw, info.key)

    @staticmethod
    @contextlib.contextmanager
    def _reading() -> Iterator[None]:
        try:
            yield
        except NoSuchTable:
            raise resource_not_found() from None
        except SnapshotTooOld as e:
            raise internal_server_error(f"read timestamp too old: {e}") from None

    def _description(self, name: str, doc: Mapping[str, Any], created_ts: int, item_count: int,
                     status: str = "ACTIVE") -> dict[str, Any]:
        created = (created_ts >> 16) / 1000.0
        pt = doc.get("ProvisionedThroughput") or {}
        desc: dict[str, Any] = {
            "AttributeDefinitions": [dict(a) for a in doc["AttributeDefinitions"]],
            "TableName": name,
            "KeySchema": [dict(k) for k in doc["KeySchema"]],
            "TableStatus": status,
            "CreationDateTime": created,
            "ProvisionedThroughput": {
                "NumberOfDecreasesToday": 0,
                "ReadCapacityUnits": int(pt.get("ReadCapacityUnits", 0)),
                "WriteCapacityUnits": int(pt.get("WriteCapacityUnits", 0)),
            },
            "TableSizeBytes": 0,
            "ItemCount": int(item_count),
            "TableArn": f"arn:aws:dynamodb:{self.region}:{self.account_id}:table/{name}",
            "DeletionProtectionEnabled": False,
        }
        if doc.get("TableId"):
            desc["TableId"] = doc["TableId"]
        if doc.get("BillingMode") == "PAY_PER_REQUEST":
            desc["BillingModeSummary"] = {"BillingMode": "PAY_PER_REQUEST",
                                          "LastUpdateToPayPerRequestDateTime": created}
        return desc

    # -- catalogue -----------------------------------------------------------------

    async def _create_table(self, r: _Req) -> dict[str, Any]:
        name = r.table_name()
        for unsupported in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if r.has(unsupported):
                r.list_(unsupported)
                raise validation(f"{unsupported} are not supported by this store")
        ks_raw = r.list_("KeySchema", required=True, min_len=1, max_len=2)
        ad_raw = r.list_("AttributeDefinitions", required=True)
        assert ks_raw is not None and ad_raw is not None
        key_elems: list[tuple[str, str]] = []
        for i, k in enumerate(ks_raw):
            m = r.member(k, i, "KeySchema")
            an = m.str_("AttributeName", required=True, min_len=1, max_len=255)
            kt = m.enum_("KeyType", ("HASH", "RANGE"))
            if kt is None:
                raise _constraint(None, m.path("KeyType"), "Member must not be null")
            assert an is not None
            key_elems.append((an, kt))
        if key_elems[0][1] != "HASH":
            raise validation("Invalid KeySchema: The first KeySchemaElement is not a HASH key type")
        if len(key_elems) == 2:
            if key_elems[1][1] != "RANGE":
                raise validation("Invalid KeySchema: The second KeySchemaElement is not a RANGE key type")
            if key_elems[0][0] == key_elems[1][0]:
                raise validation("Both the Hash Key and the Range Key element in the KeySchema have the same name")
        defs: dict[str, str] = {}
        for i, a in enumerate(ad_raw):
            m = r.member(a, i, "AttributeDefinitions")
            an = m.str_("AttributeName", required=True, min_len=1, max_len=255)
            at = m.enum_("AttributeType", ("B", "N", "S"))
            if at is None:
                raise _constraint(None, m.path("AttributeType"), "Member must not be null")
            assert an is not None
            if an in defs:
                raise validation("Cannot have two attributes with the same name")
            defs[an] = at
        key_names = [k for k, _ in key_elems]
        missing = [k for k in key_names if k not in defs]
        if missing:
            raise validation("One or more parameter values were invalid: Some index key attributes are not "
                             f"defined in AttributeDefinitions. Keys: [{', '.join(missing)}], "
                             f"AttributeDefinitions: [{', '.join(defs)}]")
        if len(defs) != len(key_names):
            raise validation("One or more parameter values were invalid: Number of attributes in KeySchema does "
                             "not exactly match number of attributes defined in AttributeDefinitions")
        billing = r.enum_("BillingMode", ("PROVISIONED", "PAY_PER_REQUEST"), "PROVISIONED")
        pt_req = r.sub("ProvisionedThroughput")
        pt = None
        if pt_req is not None:
            rcu = pt_req.int_("ReadCapacityUnits", minimum=1)
            wcu = pt_req.int_("WriteCapacityUnits", minimum=1)
            if rcu is None or wcu is None:
                missing_name = "ReadCapacityUnits" if rcu is None else "WriteCapacityUnits"
                raise _constraint(None, pt_req.path(missing_name), "Member must not be null")
            pt = {"ReadCapacityUnits": rcu, "WriteCapacityUnits": wcu}
        if billing == "PROVISIONED" and pt is None:
            raise validation("One or more parameter values were invalid: ReadCapacityUnits and "
                             "WriteCapacityUnits must both be specified when BillingMode is PROVISIONED")
        if billing == "PAY_PER_REQUEST" and pt is not None:
            raise validation("One or more parameter values were invalid: Neither ReadCapacityUnits nor "
                             "WriteCapacityUnits can be specified when BillingMode is PAY_PER_REQUEST")
        for opt in ("StreamSpecification", "SSESpecification", "OnDemandThroughput", "WarmThroughput"):
            r.map_(opt)
        r.list_("Tags")
        r.bool_("DeletionProtectionEnabled", False)
        if self.backend.catalogue.has_table(name):
            raise table_in_use(name)
        doc = {
            "KeySchema": [{"AttributeName": n, "KeyType": t} for n, t in key_elems],
            "AttributeDefinitions": [{"AttributeName": n, "AttributeType": defs[n]} for n in key_names],
            "BillingMode": billing,
            "ProvisionedThroughput": pt,
            "TableId": str(uuid.uuid4()),
        }
        result = await self._propose({"op": "create_table", "table": name, "schema": doc})
        return {"TableDescription": self._description(name, doc, int(result["created_ts"]), 0)}

    async def _describe_table(self, r: _Req) -> dict[str, Any]:
        name = r.table_name()
        store = self.backend.catalogue
        if is_internal_table(name) or not store.has_table(name):
            raise table_not_found(name)
        d = store.describe(name)
        info = self._table(name)
        count = d["item_count"] + sum(
            s.describe(name)["item_count"] for g in range(1, self.backend.group_count)
            if (s := self._store(g, info)) is not None)
        return {"Table": self._description(name, d["schema"], d["created_ts"], count)}

    async def _delete_table(self, r: _Req) -> dict[str, Any]:
        name = r.table_name()
        if is_internal_table(name) or not self.backend.catalogue.has_table(name):
            raise table_not_found(name)
        result = await self._propose({"op": "delete_table", "table": name})
        self._tables.pop(name, None)
        return {"TableDescription": self._description(name, result["schema"], int(result["created_ts"]),
                                                      int(result["item_count"]), status="DELETING")}

    async def _list_tables(self, r: _Req) -> dict[str, Any]:
        start = r.str_("ExclusiveStartTableName", min_len=3, max_len=255)
        limit = r.int_("Limit", minimum=1, maximum=MAX_LIST_TABLES) or MAX_LIST_TABLES
        names = [n for n in self.backend.catalogue.list_tables() if not is_internal_table(n)]
        if start is not None:
            names = [n for n in names if n > start]
        out: dict[str, Any] = {"TableNames": names[:limit]}
        if len(names) > limit:
            out["LastEvaluatedTableName"] = names[limit - 1]
        return out

    # -- single-item writes -------------------------------------------------------------

    async def _put_item(self, r: _Req) -> dict[str, Any]:
        name = r.table_name()
        r.no_legacy("Expected", "ConditionalOperator")
        raw_item = r.map_("Item", required=True)
        info = self._table(name)
        item = V.validate_item(raw_item)
        key = V.extract_key(item, info.key)
        V.check_item_size(item)
        return await self._conditional_write(r, info, key, {"op": "put", "table": name, "item": item})

    async def _conditional_write(self, r: _Req, info: _Table, key: Mapping[str, Any],
                                 cmd: dict[str, Any]) -> dict[str, Any]:
        """PutItem and DeleteItem after their own fields: ReturnValues (ALL_OLD
        or NONE), the optional ConditionExpression, then the proposal."""
        rv = r.enum_("ReturnValues", ("NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"), "NONE")
        if rv not in ("NONE", "ALL_OLD"):
            raise validation("ReturnValues can only be ALL_OLD or NONE")
        rvcf = r.enum_("ReturnValuesOnConditionCheckFailure", ("ALL_OLD", "NONE"), "NONE")
        self._return_consumed(r, metrics=True)
        cond_text = r.str_("ConditionExpression")
        names, values = self._expression_attributes(r, cond_text is not None)
        cond = E.parse_condition(cond_text, names, values) if cond_text is not None else None
        E.check_unused(names, values, cond)
        _put_optional(cmd, cond=cond_text, names=names, values=values,
                      rv=None if rv == "NONE" else rv, rvcf=None if rvcf == "NONE" else rvcf)
        return await self._write_item(info, key, cmd)

    async def _write_item(self, info: _Table, key: Mapping[str, Any],
                          cmd: dict[str, Any]) -> dict[str, Any]:
        group = self._group(info, encode_key(key, info.key)[0])
        return _attributes_only(await self._propose(self._for_group(group, cmd, [info]), group))

    async def _update_item(self, r: _Req) -> dict[str, Any]:
        name = r.table_name()
        r.no_legacy("Expected", "ConditionalOperator", "AttributeUpdates")
        info = self._table(name)
        key = self._key(r, info)
        rv = r.enum_("ReturnValues", ("NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW"), "NONE")
        rvcf = r.enum_("ReturnValuesOnConditionCheckFailure", ("ALL_OLD", "NONE"), "NONE")
        self._return_consumed(r, metrics=True)
        upd_text = r.str_("UpdateExpression")
        cond_text = r.str_("ConditionExpression")
        names, values = self._expression_attributes(r, upd_text is not None or cond_text is not None)
        upd = E.parse_update(upd_text, names, values) if upd_text is not None else None
        cond = E.parse_condition(cond_text, names, values) if cond_text is not None else None
        E.check_unused(names, values, upd, cond)
        if upd is not None:
            upd.check_key_attributes(info.key.names)
        cmd: dict[str, Any] = {"op": "update", "table": name, "key": key}
        _put_optional(cmd, update=upd_text, cond=cond_text, names=names, values=values,
                      rv=None if rv == "NONE" else rv, rvcf=None if rvcf == "NONE" else rvcf)
        return await self._write_item(info, key, cmd)

    async def _delete_item(self, r: _Req) -> dict[str, Any]:
        name = r.table_name()
        r.no_legacy("Expected", "ConditionalOperator")
        info = self._table(name)
        key = self._key(r, info)
        return await self._conditional_write(r, info, key, {"op": "delete", "table": name, "key": key})

    # -- single-item read ---------------------------------------------------------------

    async def _get_item(self, r: _Req) -> dict[str, Any]:
        name = r.table_name()
        info = self._table(name)
        key = self._key(r, info)
        r.bool_("ConsistentRead", False)
        self._return_consumed(r)
        names, _ = self._expression_attributes(r, r.has("ProjectionExpression"), values_allowed=False)
        proj = self._projection(r, names)
        E.check_unused(names, None, proj)
        pk, sk = encode_key(key, info.key)
        group = self._group(info, pk)
        ts = await self._read_ts("get_item", [group])
        with self._reading():
            item = self._get(group, info, pk, sk, ts[group])
        if item is None:
            return {}
        return {"Item": proj.apply(item) if proj is not None else item}

    # -- Query and Scan -----------------------------------------------------------------

    @staticmethod
    def _select(r: _Req, proj: E.Projection | None, what: str) -> bool:
        """Validate Select; True when only the count is wanted."""
        select = r.enum_("Select", ("ALL_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES", "SPECIFIC_ATTRIBUTES", "COUNT"))
        if select == "ALL_PROJECTED_ATTRIBUTES":
            raise validation(f"ALL_PROJECTED_ATTRIBUTES can be used only when {what} using an IndexName")
        if select == "SPECIFIC_ATTRIBUTES" and proj is None:
            raise validation("Must specify the AttributesToGet or ProjectionExpression when choosing to get "
                             "SPECIFIC_ATTRIBUTES")
        if select == "ALL_ATTRIBUTES" and proj is not None:
            raise validation("Cannot specify the AttributesToGet or ProjectionExpression when choosing to get "
                             "ALL_ATTRIBUTES")
        if select == "COUNT" and proj is not None:
            raise validation("Cannot specify the AttributesToGet or ProjectionExpression when choosing to get "
                             "only the Count")
        return select == "COUNT"

    @staticmethod
    def _page(items: Iterable[dict[str, Any]], info: _Table, limit: int | None, filt: E.Condition | None,
              proj: E.Projection | None, count_only: bool) -> dict[str, Any]:
        """One Query/Scan page: stop after ``limit`` evaluated items or once
        1 MB has been evaluated; LastEvaluatedKey is the key of the last
        item evaluated (even if the filter dropped it)."""
        out: list[dict[str, Any]] = []
        count = scanned = size = 0
        last: dict[str, Any] | None = None
        lek: dict[str, Any] | None = None
        for item in items:
            if size >= PAGE_BYTES and last is not None:
                lek = V.key_of(last, info.key)
                break
            scanned += 1
            size += V.item_size(item)
            last = item
            if filt is None or filt.evaluate(item):
                count += 1
                if not count_only:
                    out.append(proj.apply(item) if proj is not None else item)
            if limit is not None and scanned >= limit:
                lek = V.key_of(item, info.key)
                break
        resp: dict[str, Any] = {} if count_only else {"Items": out}
        resp["Count"] = count
        resp["ScannedCount"] = scanned
        if lek is not None:
            resp["LastEvaluatedKey"] = lek
        return resp

    def _start_key(self, r: _Req, info: _Table) -> dict[str, Any] | None:
        raw = r.map_("ExclusiveStartKey")
        if raw is None:
            return None
        try:
            return V.validate_key(raw, info.key)
        except DynamoError as e:
            if e.type_name != "ValidationException":
                raise
            raise validation(f"The provided starting key is invalid: {e.message}") from None

    async def _query(self, r: _Req) -> dict[str, Any]:
        name = r.table_name()
        r.no_legacy("KeyConditions", "QueryFilter", "ConditionalOperator")
        index = r.str_("IndexName")
        info = self._table(name)
        if index is not None:
            raise validation(f"The table does not have the specified index: {index}")
        kce = r.str_("KeyConditionExpression")
        if kce is None:
            raise validation("Either the KeyConditions or KeyConditionExpression parameter must be specified "
                             "in the request.")
        filt_text = r.str_("FilterExpression")
        names, values = self._expression_attributes(r, True)
        kc = E.parse_key_condition(kce, names, values, info.key)
        filt = E.parse_filter(filt_text, names, values) if filt_text is not None else None
        proj = self._projection(r, names)
        E.check_unused(names, values, kc, filt, proj)
        count_only = self._select(r, proj, "Querying")
        limit = r.int_("Limit", minimum=1)
        forward = r.bool_("ScanIndexForward", True)
        r.bool_("ConsistentRead", False)
        self._return_consumed(r)
        esk = self._start_key(r, info)
        schema = info.key
        start_after: bytes | None = None
        if esk is not None:
            if not V.values_equal(esk[schema.hash_name], kc.hash_value):
                raise validation("The provided starting key is invalid: The provided key element does not "
                                 "match the schema")
            if schema.range_name is not None:
                if not kc.sort_matches(esk[schema.range_name]):
                    raise validation("The provided starting key does not match the range key predicate")
                start_after = V.encode_key_value(esk[schema.range_name])
            else:
                start_after = b""
        pk = V.encode_key_value(kc.hash_value)
        lo, lo_inc, hi, hi_inc = kc.encoded_range()
        group = self._group(info, pk)
        ts = await self._read_ts("query", [group])
        with self._reading():
            store = self._store(group, info)
            rows = iter(()) if store is None else store.iter_partition(
                name, pk, ts[group], lo=lo, hi=hi, lo_inclusive=lo_inc, hi_inclusive=hi_inc,
                reverse=not forward, start_after=start_after)
            return self._page((item for _, item in rows), info, limit, filt, proj, count_only)

    async def _scan(self, r: _Req) -> dict[str, Any]:
        name = r.table_name()
        r.no_legacy("ScanFilter", "ConditionalOperator")
        index = r.str_("IndexName")
        info = self._table(name)
        if index is not None:
            raise validation(f"The table does not have the specified index: {index}")
        filt_text = r.str_("FilterExpression")
        names, values = self._expression_attributes(r, filt_text is not None or r.has("ProjectionExpression"))
        filt = E.parse_filter(filt_text, names, values) if filt_text is not None else None
        proj = self._projection(r, names)
        E.check_unused(names, values, filt, proj)
        count_only = self._select(r, proj, "Scanning")
        limit = r.int_("Limit", minimum=1)
        r.bool_("ConsistentRead", False)
        self._return_consumed(r)
        total = r.int_("TotalSegments", minimum=1, maximum=MAX_TOTAL_SEGMENTS)
        segment = r.int_("Segment", minimum=0, maximum=MAX_TOTAL_SEGMENTS - 1)
        if segment is not None and total is None:
            raise validation("The TotalSegments parameter is required but was not present in the request when "
                             "Segment parameter is present")
        if total is not None and segment is None:
            raise validation("The Segment parameter is required but was not present in the request when "
                             "parameter TotalSegments is present")
        if total is not None and segment is not None and segment >= total:
            raise validation(f"The Segment parameter is zero-based and must be less than parameter "
                             f"TotalSegments: Segment: {segment} is not less than TotalSegments: {total}")
        esk = self._start_key(r, info)
        start_after = encode_key(esk, info.key) if esk is not None else None
        if start_after is not None and total is not None and _segment_of(start_after[0], total) != segment:
            raise validation("The provided Exclusive start key does not map to the provided segment")
        groups = range(self.backend.group_count)
        ts = await self._read_ts("scan", groups)
        with self._reading():
            # Every group's rows of the table, merged in (pk, sk) order.
            parts = [store.iter_table(name, ts[g], start_after) for g in groups
                     if (store := self._store(g, info)) is not None]
            rows = parts[0] if len(parts) == 1 else heapq.merge(*parts, key=_row_key)
            if total is None:
                items: Iterable[dict[str, Any]] = (item for _, _, item in rows)
            else:
                items = (item for pk, _, item in rows if _segment_of(pk, total) == segment)
            return self._page(items, info, limit, filt, proj, count_only)

    # -- batches ------------------------------------------------------------------------

    async def _batch_get_item(self, r: _Req) -> dict[str, Any]:
        request_items = r.map_("RequestItems", required=True)
        assert request_items is not None
        if not request_items:
            raise _constraint(request_items, "requestItems", "Member must have length greater than or equal to 1")
        self._return_consumed(r)
        plan: list[tuple[_Table, list[tuple[bytes, bytes]], E.Projection | None]] = []
        total = 0
        seen: set[tuple[str, bytes, bytes]] = set()
        for name, spec in request_items.items():
            _check_table_name(name, "requestItems.key")
            if not isinstance(spec, dict):
                raise _not_expected(spec, "Structure")
            s = _Req(spec, f"requestItems.{name}.member")
            keys = s.list_("Keys", required=True, min_len=1, max_len=MAX_BATCH_GET)
            assert keys is not None
            total += len(keys)
            if total > MAX_BATCH_GET:
                raise validation("Too many items requested for the BatchGetItem call")
            info = self._table(name)
            s.bool_("ConsistentRead", False)
            names, _ = self._expression_attributes(s, s.has("ProjectionExpression"), values_allowed=False)
            proj = self._projection(s, names)
            E.check_unused(names, None, proj)
            encoded = []
            for k in keys:
                key = V.validate_key(k, info.key)
                pk, sk = encode_key(key, info.key)
                if (name, pk, sk) in seen:
                    raise validation("Provided list of item keys contains duplicates")
                seen.add((name, pk, sk))
                encoded.append((pk, sk))
            plan.append((info, encoded, proj))
        ts = await self._read_ts("batch_get_item", (self._group(info, pk) for info, encoded, _ in plan
                                                    for pk, _ in encoded))
        responses: dict[str, list[dict[str, Any]]] = {}
        with self._reading():
            for info, encoded, proj in plan:
                found = responses.setdefault(info.name, [])
                for pk, sk in encoded:
                    group = self._group(info, pk)
                    item = self._get(group, info, pk, sk, ts[group])
                    if item is not None:
                        found.append(proj.apply(item) if proj is not None else item)
        return {"Responses": responses, "UnprocessedKeys": {}}

    async def _batch_write_item(self, r: _Req) -> dict[str, Any]:
        request_items = r.map_("RequestItems", required=True)
        assert request_items is not None
        if not request_items:
            raise _constraint(request_items, "requestItems", "Member must have length greater than or equal to 1")
        self._return_consumed(r, metrics=True)
        writes: list[dict[str, Any]] = []
        by_group: dict[int, list[dict[str, Any]]] = {}
        infos: dict[str, _Table] = {}
        seen: set[tuple[str, bytes, bytes]] = set()
        for name, reqs in request_items.items():
            _check_table_name(name, "requestItems.key")
            if not isinstance(reqs, list):
                raise _not_expected(reqs, "List")
            if not 1 <= len(reqs) <= MAX_BATCH_WRITE:
                raise _constraint(reqs, "requestItems", "Map value must satisfy constraint: [Member must have "
                                  "length less than or equal to 25, Member must have length greater than or "
                                  "equal to 1]")
            if len(writes) + len(reqs) > MAX_BATCH_WRITE:
                raise validation("Too many items requested for the BatchWriteItem call")
            info = infos[name] = self._table(name)
            for i, w in enumerate(reqs):
                if not isinstance(w, dict):
                    raise _not_expected(w, "Structure")
                wr = _Req(w, f"requestItems.{name}.member.{i + 1}.member")
                put = wr.sub("PutRequest")
                delete = wr.sub("DeleteRequest")
                if (put is None) == (delete is None):
                    raise validation("Supplied WriteRequest must contain exactly one of PutRequest or "
                                     "DeleteRequest")
                if put is not None:
                    raw = put.map_("Item", required=True)
                    item = V.validate_item(raw)
                    key = V.extract_key(item, info.key)
                    V.check_item_size(item)
                    entry: dict[str, Any] = {"table": name, "put": item}
                else:
                    assert delete is not None
                    key = V.validate_key(delete.map_("Key", required=True), info.key)
                    entry = {"table": name, "delete": key}
                pk, sk = encode_key(key, info.key)
                if (name, pk, sk) in seen:
                    raise validation("Provided list of item keys contains duplicates")
                seen.add((name, pk, sk))
                writes.append(entry)
                by_group.setdefault(self._group(info, pk), []).append(entry)
        # One command per group, proposed concurrently: a batch is not atomic.
        await all_or_first_error([self._propose(self._for_group(
            g, {"op": "batch_write", "writes": ws}, [infos[w["table"]] for w in ws]), g)
            for g, ws in sorted(by_group.items())])
        return {"UnprocessedItems": {}}

    # -- transactions ---------------------------------------------------------------------

    async def _transact_write_items(self, r: _Req) -> dict[str, Any]:
        raw_items = r.list_("TransactItems", required=True, min_len=1, max_len=MAX_TRANSACT_ITEMS)
        assert raw_items is not None
        self._return_consumed(r, metrics=True)
        token = r.str_("ClientRequestToken", min_len=1, max_len=36)
        items: list[dict[str, Any]] = []
        infos: dict[str, _Table] = {}
        groups: set[int] = set()
        seen: set[tuple[str, bytes, bytes]] = set()
        for i, raw in enumerate(raw_items):
            m = r.member(raw, i, "TransactItems")
            present = [k for k in ("ConditionCheck", "Put", "Delete", "Update") if m.has(k)]
            if len(present) != 1:
                raise validation("TransactItems can only contain one of Check, Put, Update or Delete")
            op = present[0]
            s = m.sub(op)
            assert s is not None
            name = s.table_name()
            info = infos[name] = self._table(name)
            entry: dict[str, Any]
            if op == "Put":
                item = V.validate_item(s.map_("Item", required=True))
                key = V.extract_key(item, info.key)
                V.check_item_size(item)
                entry = {"kind": "put", "table": name, "item": item}
            else:
                key = self._key(s, info)
                entry = {"kind": {"ConditionCheck": "check", "Delete": "delete", "Update": "update"}[op],
                         "table": name, "key": key}
            upd_text = s.str_("UpdateExpression", required=op == "Update") if op == "Update" else None
            cond_text = s.str_("ConditionExpression", required=op == "ConditionCheck")
            rvcf = s.enum_("ReturnValuesOnConditionCheckFailure", ("ALL_OLD", "NONE"), "NONE")
            names, values = self._expression_attributes(s, upd_text is not None or cond_text is not None)
            upd = E.parse_update(upd_text, names, values) if upd_text is not None else None
            cond = E.parse_condition(cond_text, names, values) if cond_text is not None else None
            E.check_unused(names, values, upd, cond)
            if upd is not None:
                upd.check_key_attributes(info.key.names)
            pk, sk = encode_key(key, info.key)
            if (name, pk, sk) in seen:
                raise validation("Transaction request cannot include multiple operations on one item")
            seen.add((name, pk, sk))
            groups.add(self._group(info, pk))
            _put_optional(entry, update=upd_text, cond=cond_text, names=names, values=values,
                          rvcf=None if rvcf == "NONE" else rvcf)
            items.append(entry)
        if len(groups) > 1:
            raise validation(f"This store cannot yet run a transaction over several Raft groups "
                             f"(these items are in groups {sorted(groups)})")
        group = groups.pop()
        cmd: dict[str, Any] = {"op": "transact_write", "items": items}
        if token is not None:
            cmd["token"] = token
        await self._propose(self._for_group(group, cmd, infos.values()), group)
        return {}

    async def _transact_get_items(self, r: _Req) -> dict[str, Any]:
        raw_items = r.list_("TransactItems", required=True, min_len=1, max_len=MAX_TRANSACT_ITEMS)
        assert raw_items is not None
        self._return_consumed(r)
        plan: list[tuple[_Table, int, bytes, bytes, E.Projection | None]] = []
        seen: set[tuple[str, bytes, bytes]] = set()
        for i, raw in enumerate(raw_items):
            m = r.member(raw, i, "TransactItems")
            g = m.sub("Get", required=True)
            assert g is not None
            name = g.table_name()
            info = self._table(name)
            key = self._key(g, info)
            names, _ = self._expression_attributes(g, g.has("ProjectionExpression"), values_allowed=False)
            text = g.str_("ProjectionExpression")
            proj = E.parse_projection(text, names) if text is not None else None
            E.check_unused(names, None, proj)
            pk, sk = encode_key(key, info.key)
            if (name, pk, sk) in seen:
                raise validation("Transaction request cannot include multiple operations on one item")
            seen.add((name, pk, sk))
            plan.append((info, self._group(info, pk), pk, sk, proj))
        ts = await self._read_ts("transact_get_items", (group for _, group, *_ in plan))
        responses: list[dict[str, Any]] = []
        with self._reading():
            for info, group, pk, sk, proj in plan:
                item = self._get(group, info, pk, sk, ts[group])
                if item is None:
                    responses.append({})
                else:
                    responses.append({"Item": proj.apply(item) if proj is not None else item})
        return {"Responses": responses}


def _segment_of(pk: bytes, total: int) -> int:
    """The parallel-scan segment of a partition: its hash's share of the
    32-bit hash space (so segments are contiguous hash ranges, as in DynamoDB)."""
    return (zlib.crc32(pk) * total) >> 32


def _row_key(row: tuple[bytes, bytes, Any]) -> tuple[bytes, bytes]:
    return row[0], row[1]


def _put_optional(cmd: dict[str, Any], **fields: Any) -> None:
    for k, v in fields.items():
        if v is not None:
            cmd[k] = v


def _attributes_only(result: Mapping[str, Any]) -> dict[str, Any]:
    attrs = result.get("Attributes")
    return {"Attributes": attrs} if attrs else {}
