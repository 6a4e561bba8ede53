"""The replicated state machine of the DynamoDB API: deterministic apply of
write commands.

Every replica calls :func:`apply_command` for each committed Raft entry, in
log order, with the same ``commit_ts`` (a packed HLC timestamp,
:mod:`system.hlc`).  It reads nothing but the store and the command (no wall
clock, no randomness, no iteration over hash-ordered sets), so every replica
computes the same result and ends with the same store state: the same
``MVCCStore.snapshot()`` bytes.

**Atomicity and isolation.**  Conditions, update expressions and the
transaction checks are evaluated *at apply time* against the latest version
of each item, and every command applies its writes in one
``MVCCStore.apply_writes`` batch at one commit timestamp.  Commands apply one
at a time in log order, so every write is atomic, and TransactWriteItems is
serializable in log order: its "optimistic conflict check" (elastickv aborts
a transaction when a key it read has a commit newer than its start
timestamp) is trivially passed, because nothing can commit between the check
and the write.  This is how this store implements "atomic with conflict
checks"; a transaction is never aborted for a conflict, only cancelled by a
failed condition or an item error (``TransactionCanceledException``).

**Commit timestamps.**  ``commit_ts`` must be strictly increasing in log
order.  If it is not (a clock anomaly or a node bug), the command is applied
at ``store.last_commit_ts + 1`` instead -- identically on every replica, as
that depends only on the replicated state -- so versions stay ordered by log
order.  The timestamp actually used is ``store.last_commit_ts`` after the
call whenever the command wrote anything.

**Results** are plain (msgpack-able) dicts.  Success: ``{}`` or
``{"Attributes": {...}}`` (per ReturnValues); create_table:
``{"created_ts": ts}``; delete_table: ``{"schema", "created_ts",
"item_count"}``.  An error is data, never an exception:
``{"error": DynamoError.to_body(), "status": http_status}`` (see
:func:`error_result` and :func:`result_error`).

**Commands** (built and validated by :mod:`system.dynamo.service` on the node
that received the request; keys and items are canonical wire-form values)::

    {"op": "create_table", "table": name, "schema": {"KeySchema": [...],
        "AttributeDefinitions": [...], "BillingMode": "PROVISIONED" |
        "PAY_PER_REQUEST", "ProvisionedThroughput": {...} | None,
        "TableId": uuid-string}}
    {"op": "delete_table", "table": name}
    {"op": "put", "table": name, "item": item,
        ["cond": text, "names": {...}, "values": {...},
         "rv": "NONE" | "ALL_OLD", "rvcf": "NONE" | "ALL_OLD"]}
    {"op": "update", "table": name, "key": key,
        ["update": text, "cond": text, "names": {...}, "values": {...},
         "rv": "NONE" | "ALL_OLD" | "UPDATED_OLD" | "ALL_NEW" | "UPDATED_NEW",
         "rvcf": ...]}
    {"op": "delete", "table": name, "key": key, ["cond", "names", "values", "rv", "rvcf"]}
    {"op": "batch_write", "writes": [{"table": name, "put": item}
                                     | {"table": name, "delete": key}, ...]}
    {"op": "transact_write", "items": [{"kind": "put" | "update" | "delete" | "check",
        "table": name, "item": item (put) | "key": key (others),
        ["update": text, "cond": text, "names", "values", "rvcf"]}, ...],
        ["token": ClientRequestToken]}

Bracketed members are optional (absent or None).

**Groups.**  In a sharded store (:mod:`system.routing`) the catalogue lives
in the default group, and an item command for another group carries
``"tables": {name: schema}``, the schema of each table it writes (with its
``TableId``): the group's store creates a table the first time it sees it,
and empties it when the ``TableId`` differs (the table was deleted and made
again), so each group's state depends on its own log only.

**ClientRequestToken idempotency.**  A transact_write with a token records
``token -> {"fp": sha256 of the canonical items, "ts": commit ts, "result":
result}`` in an internal MVCC table (:data:`TOKEN_TABLE`, a name no DynamoDB
table can have; it travels in ``MVCCStore.snapshot()`` like any table, so a
restarted or lagging node agrees).  Within :data:`TOKEN_TTL_MS` (10 minutes
of commit-timestamp physical time, ``ts >> 16`` ms) a request with the same
token and the same items gets the first result back without being applied
again -- whatever that result was, success or cancellation ("multiple
identical calls have the same effect as one single call"); the same token
with different items gets IdempotentParameterMismatchException.  Expired
tokens are purged, at most once a minute of commit time, by the next
transaction that carries a token.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Callable, Mapping

from ..hlc import MAX_TS, physical
from ..mvcc import MVCCStore
from . import expressions as E
from . import values as V
from .errors import (CONDITIONAL_REQUEST_FAILED, DynamoError, cancellation_reason,
                     conditional_check_failed, internal_server_error, resource_not_found, table_in_use, table_not_found, transaction_canceled,
                     validation)

__all__ = [
    "apply_command", "error_result", "result_error", "key_schema", "encode_key",
    "is_internal_table", "TOKEN_TABLE", "TOKEN_TTL_MS", "idempotent_parameter_mismatch",
    "adopt_table", "table_id",
]

log = logging.getLogger(__name__)

#: internal table of ClientRequestTokens; "\x00" is outside DynamoDB's table
#: name alphabet, so no request can name it.
TOKEN_TABLE = "\x00client-request-tokens"
TOKEN_TTL_MS = 10 * 60 * 1000
TOKEN_PURGE_INTERVAL_MS = 60 * 1000
_META_PK = b""           # the purge bookkeeping row (tokens are 1..36 chars)

#: read the newest version of a key (apply time sees everything applied)
LATEST = MAX_TS

IDEMPOTENT_MISMATCH = ("The request uses the same client token as a previous, but non-identical "
                       "request. Do not reuse a client token with different requests, unless the "
                       "requests are identical.")


def idempotent_parameter_mismatch() -> DynamoError:
    return DynamoError("IdempotentParameterMismatchException", IDEMPOTENT_MISMATCH, 400)


def is_internal_table(name: str) -> bool:
    """Tables of the store's own bookkeeping, hidden from the API."""
    return name.startswith("\x00")


# -- results ---------------------------------------------------------------------


def error_result(e: DynamoError) -> dict[str, Any]:
    """An error as result data."""
    return {"error": e.to_body(), "status": e.status}


def result_error(result: Mapping[str, Any]) -> DynamoError | None:
    """The DynamoError of an error result (None for a success), rebuilt so
    that ``to_body()`` gives back exactly the body that was recorded."""
    body = result.get("error")
    if body is None:
        return None
    full = str(body.get("__type", "InternalServerError"))
    ns, sep, name = full.rpartition("#")
    message = body.get("message", body.get("Message"))
    extra = {k: v for k, v in body.items() if k not in ("__type", "message", "Message")}
    status = result.get("status", 500)
    return DynamoError(name, message, int(status) if isinstance(status, int) else 500, extra,
                       namespace=ns + sep)


# -- keys ---------------------------------------------------------------------------


def key_schema(schema: Mapping[str, Any]) -> V.KeySchema:
    """The KeySchema of a table's stored schema dict."""
    return V.KeySchema.from_api(schema["KeySchema"], schema["AttributeDefinitions"])


def encode_key(key: Mapping[str, Any], schema: V.KeySchema) -> tuple[bytes, bytes]:
    """MVCC ``(pk, sk)`` bytes of a (validated) key; ``sk = b""`` without a range key."""
    pk = V.encode_key_value(key[schema.hash_name])
    sk = V.encode_key_value(key[schema.range_name]) if schema.range_name is not None else b""
    return pk, sk


def _user_table(store: MVCCStore, name: Any) -> V.KeySchema:
    if not isinstance(name, str) or is_internal_table(name) or not store.has_table(name):
        raise resource_not_found()
    return key_schema(store.describe(name)["schema"])


def table_id(schema: Any) -> Any:
    return schema.get("TableId") if isinstance(schema, Mapping) else None


def adopt_table(store: MVCCStore, name: str, schema: Mapping[str, Any], ts: int) -> None:
    """A non-default group's copy of a catalogue table: made on first use,
    made again (empty) when the catalogue's table is a newer one."""
    if store.has_table(name):
        if table_id(store.describe(name)["schema"]) == table_id(schema):
            return
        store.delete_table(name, ts)
    key_schema(schema)
    store.create_table(name, dict(schema), ts)


# -- the apply entry point ------------------------------------------------------------


def apply_command(store: MVCCStore, commit_ts: int, command: Mapping[str, Any]) -> dict[str, Any]:
    """Apply one committed write command; return its result (never raises
    for a bad command: an unexpected exception becomes an InternalServerError
    result and leaves the store unchanged)."""
    try:
        if isinstance(commit_ts, bool) or not isinstance(commit_ts, int) or commit_ts < 0:
            raise internal_server_error(f"bad commit timestamp {commit_ts!r}")
        ts = commit_ts if commit_ts > store.last_commit_ts else store.last_commit_ts + 1
        if not isinstance(command, Mapping):
            raise internal_server_error("malformed command")
        handler = _HANDLERS.get(command.get("op"))  # type: ignore[arg-type]
        if handler is None:
            raise internal_server_error(f"unknown command {command.get('op')!r}")
        for name, schema in (command.get("tables") or {}).items():
            adopt_table(store, name, schema, ts)
        return handler(store, ts, command)
    except DynamoError as e:
        return error_result(e)
    except Exception as e:  # noqa: BLE001 - the apply loop must survive anything
        log.exception("apply of %r failed", command.get("op") if isinstance(command, Mapping) else command)
        return error_result(internal_server_error(f"apply failed: {type(e).__name__}"))


def _attributes(item: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"Attributes": dict(item)} if item else {}


def _condition(c: Mapping[str, Any]) -> E.Condition | None:
    text = c.get("cond")
    if text is None:
        return None
    return E.parse_condition(text, c.get("names"), c.get("values"))


def _update(c: Mapping[str, Any], schema: V.KeySchema) -> E.Update | None:
    text = c.get("update")
    if text is None:
        return None
    upd = E.parse_update(text, c.get("names"), c.get("values"))
    upd.check_key_attributes(schema.names)
    return upd


def _failed_condition(old: Mapping[str, Any] | None, c: Mapping[str, Any]) -> DynamoError:
    return conditional_check_failed(dict(old) if old and c.get("rvcf") == "ALL_OLD" else None)


def _updated_item(upd: E.Update | None, old: Mapping[str, Any] | None, key: Mapping[str, Any]) -> dict[str, Any]:
    base = old if old is not None else key
    new = upd.apply(base) if upd is not None else dict(base)
    V.check_item_size(new, update=True)
    return new


# -- catalogue -------------------------------------------------------------------------


def _create_table(store: MVCCStore, ts: int, c: Mapping[str, Any]) -> dict[str, Any]:
    name, schema = c["table"], c["schema"]
    if not isinstance(name, str) or is_internal_table(name):
        raise validation("Invalid table name")
    key_schema(schema)  # a schema later reads can use
    if store.has_table(name):
        raise table_in_use(name)
    store.create_table(name, schema, ts)
    return {"created_ts": ts}


def _delete_table(store: MVCCStore, ts: int, c: Mapping[str, Any]) -> dict[str, Any]:
    name = c["table"]
    if not isinstance(name, str) or is_internal_table(name) or not store.has_table(name):
        raise table_not_found(str(name))
    desc = store.delete_table(name, ts)
    return {"schema": desc["schema"], "created_ts": desc["created_ts"], "item_count": desc["item_count"]}


# -- single-item writes ---------------------------------------------------------------------


def _put(store: MVCCStore, ts: int, c: Mapping[str, Any]) -> dict[str, Any]:
    table = c["table"]
    schema = _user_table(store, table)
    item = c["item"]
    pk, sk = encode_key(V.extract_key(item, schema), schema)
    old = store.get(table, pk, sk, LATEST)
    cond = _condition(c)
    if cond is not None and not cond.evaluate(old):
        raise _failed_condition(old, c)
    store.apply_writes(ts, [(table, pk, sk, item)])
    return _attributes(old) if c.get("rv") == "ALL_OLD" else {}


def _update_item(store: MVCCStore, ts: int, c: Mapping[str, Any]) -> dict[str, Any]:
    table = c["table"]
    schema = _user_table(store, table)
    key = V.validate_key(c["key"], schema)
    upd = _update(c, schema)
    cond = _condition(c)
    pk, sk = encode_key(key, schema)
    old = store.get(table, pk, sk, LATEST)
    if cond is not None and not cond.evaluate(old):
        raise _failed_condition(old, c)
    new = _updated_item(upd, old, key)
    store.apply_writes(ts, [(table, pk, sk, new)])
    rv = c.get("rv") or "NONE"
    if rv == "ALL_OLD":
        return _attributes(old)
    if rv == "ALL_NEW":
        return _attributes(new)
    if rv in ("UPDATED_OLD", "UPDATED_NEW"):
        if upd is None:
            return {}
        # target_paths is a tuple in expression order: deterministic attribute order
        proj = E.Projection("", upd.target_paths, frozenset())
        return _attributes(proj.apply(old if rv == "UPDATED_OLD" else new))
    return {}


def _delete(store: MVCCStore, ts: int, c: Mapping[str, Any]) -> dict[str, Any]:
    table = c["table"]
    schema = _user_table(store, table)
    key = V.validate_key(c["key"], schema)
    cond = _condition(c)
    pk, sk = encode_key(key, schema)
    old = store.get(table, pk, sk, LATEST)
    if cond is not None and not cond.evaluate(old):
        raise _failed_condition(old, c)
    if old is not None:
        store.apply_writes(ts, [(table, pk, sk, None)])
    return _attributes(old) if c.get("rv") == "ALL_OLD" else {}


# -- batch --------------------------------------------------------------------------------------


def _batch_write(store: MVCCStore, ts: int, c: Mapping[str, Any]) -> dict[str, Any]:
    """All puts and deletes at one commit timestamp (DynamoDB does not
    promise a BatchWriteItem is atomic; here it is)."""
    writes = []
    for w in c["writes"]:
        table = w["table"]
        schema = _user_table(store, table)
        if w.get("put") is not None:
            item = w["put"]
            pk, sk = encode_key(V.extract_key(item, schema), schema)
            writes.append((table, pk, sk, item))
        else:
            pk, sk = encode_key(V.validate_key(w["delete"], schema), schema)
            if store.get(table, pk, sk, LATEST) is not None:
                writes.append((table, pk, sk, None))
    if writes:
        store.apply_writes(ts, writes)
    return {}


# -- transactions ----------------------------------------------------------------------------------


def fingerprint(items: Any) -> str:
    """A digest of a transaction's (canonical) items: what "the same request"
    means for a ClientRequestToken."""
    text = json.dumps(items, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _plan_transaction(store: MVCCStore, items: list[Any]) -> list[tuple[str, bytes, bytes, Any]]:
    """Check every item against the latest state; the writes if all pass,
    else raise TransactionCanceledException with one reason per item in
    request order."""
    reasons: list[dict[str, Any]] = []
    writes: list[tuple[str, bytes, bytes, Any]] = []
    seen: set[tuple[str, bytes, bytes]] = set()
    failed = False
    for it in items:
        kind = it["kind"]
        table = it["table"]
        schema = _user_table(store, table)
        if kind == "put":
            key = V.extract_key(it["item"], schema)
        elif kind in ("update", "delete", "check"):
            key = V.validate_key(it["key"], schema)
        else:
            raise internal_server_error(f"unknown transaction item kind {kind!r}")
        pk, sk = encode_key(key, schema)
        if (table, pk, sk) in seen:
            raise validation("Transaction request cannot include multiple operations on one item")
        seen.add((table, pk, sk))
        upd = _update(it, schema) if kind == "update" else None
        cond = _condition(it)
        old = store.get(table, pk, sk, LATEST)
        if cond is not None and not cond.evaluate(old):
            item = dict(old) if old and it.get("rvcf") == "ALL_OLD" else None
            reasons.append(cancellation_reason("ConditionalCheckFailed", CONDITIONAL_REQUEST_FAILED, item))
            failed = True
            continue
        try:
            if kind == "put":
                writes.append((table, pk, sk, it["item"]))
            elif kind == "update":
                writes.append((table, pk, sk, _updated_item(upd, old, key)))
            elif kind == "delete" and old is not None:
                writes.append((table, pk, sk, None))
        except DynamoError as e:
            if e.type_name != "ValidationException":
                raise
            reasons.append(cancellation_reason("ValidationError", e.message))
            failed = True
            continue
        reasons.append(cancellation_reason())
    if failed:
        raise transaction_canceled(reasons)
    return writes


def _token_writes(store: MVCCStore, ts: int) -> list[tuple[str, bytes, bytes, Any]]:
    """Deletions of expired tokens, at most once a minute of commit time."""
    now_ms = physical(ts)
    meta = store.get(TOKEN_TABLE, _META_PK, b"", LATEST)
    if meta is not None and now_ms - int(meta["purged_ms"]) < TOKEN_PURGE_INTERVAL_MS:
        return []
    writes: list[tuple[str, bytes, bytes, Any]] = []
    for pk, sk, entry in store.iter_table(TOKEN_TABLE, LATEST):
        if pk != _META_PK and now_ms - physical(int(entry["ts"])) >= TOKEN_TTL_MS:
            writes.append((TOKEN_TABLE, pk, sk, None))
    writes.append((TOKEN_TABLE, _META_PK, b"", {"purged_ms": now_ms}))
    return writes


def _transact_write(store: MVCCStore, ts: int, c: Mapping[str, Any]) -> dict[str, Any]:
    items = c["items"]
    token = c.get("token")
    fp = None
    if token is not None:
        if not isinstance(token, str) or not token:
            raise validation("Invalid ClientRequestToken")
        fp = fingerprint(items)
        if store.has_table(TOKEN_TABLE):
            entry = store.get(TOKEN_TABLE, token.encode("utf-8"), b"", LATEST)
            if entry is not None and physical(ts) - physical(int(entry["ts"])) < TOKEN_TTL_MS:
                if entry["fp"] != fp:
                    raise idempotent_parameter_mismatch()
                return dict(entry["result"])
    result: dict[str, Any]
    try:
        writes = _plan_transaction(store, items)
        result = {}
    except DynamoError as e:
        if token is None or e.status >= 500:
            raise
        writes, result = [], error_result(e)
    if token is not None:
        if not store.has_table(TOKEN_TABLE):
            store.create_table(TOKEN_TABLE, {"internal": "client request tokens"}, ts)
        writes = writes + _token_writes(store, ts)
        writes.append((TOKEN_TABLE, token.encode("utf-8"), b"", {"fp": fp, "ts": ts, "result": result}))
    if writes:
        store.apply_writes(ts, writes)
    return result


_HANDLERS: dict[str, Callable[[MVCCStore, int, Mapping[str, Any]], dict[str, Any]]] = {
    "create_table": _create_table,
    "delete_table": _delete_table,
    "put": _put,
    "update": _update_item,
    "delete": _delete,
    "batch_write": _batch_write,
    "transact_write": _transact_write,
}
