"""system.dynamo.service and system.dynamo.commands, driven through a real
in-process backend: a real MVCCStore and a ``propose`` that round-trips the
command through msgpack (as Raft would) and applies it at once with an
increasing HLC commit timestamp.  Also: boto3/botocore serialise requests
to and parse responses from the service, unmodified."""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Collection

import msgpack
import pytest

from system import hlc
from system.dynamo import commands as C
from system.dynamo.commands import TOKEN_TABLE, apply_command
from system.dynamo.errors import DynamoError, internal_server_error
from system.dynamo.service import DynamoService
from system.config import Shards
from system.mvcc import MVCCStore
from system.routing import Router

REPO = Path(__file__).resolve().parents[1]
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


# ---------------------------------------------------------------------------
# The in-process backend
# ---------------------------------------------------------------------------


class LocalBackend:
    """An in-process 'cluster': each group's state machine applied here."""

    def __init__(self, bugs: tuple[str, ...] = (), groups: int = 1) -> None:
        self.stores = [MVCCStore() for _ in range(groups)]
        self.router = Router(Shards(groups=groups))
        self.bugs = set(bugs)
        self.events: list[tuple[Any, ...]] = []
        self.commands: list[tuple[int, dict[str, Any]]] = []
        self.ms = T0_MS
        self.fresh_error: BaseException | None = None
        self.during_fresh: Any = None     # async callable run inside ensure_fresh

    @property
    def store(self) -> MVCCStore:
        return self.stores[0]

    catalogue = store

    @property
    def group_count(self) -> int:
        return len(self.stores)

    def group_of(self, table: str, pk: bytes) -> int:
        return self.router.group_of(table, pk)

    def store_of(self, group: int) -> MVCCStore:
        return self.stores[group]

    async def ensure_fresh(self, family: str, groups: Collection[int]) -> None:
        self.events.append(("ensure_fresh", family) if self.group_count == 1
                           else ("ensure_fresh", family, tuple(groups)))
        await asyncio.sleep(0)
        if self.during_fresh is not None:
            hook, self.during_fresh = self.during_fresh, None
            await hook()
        if self.fresh_error is not None:
            raise self.fresh_error

    def read_ts(self, group: int) -> int:
        self.events.append(("read_ts",))
        return self.stores[group].last_commit_ts

    def has_bug(self, name: str) -> bool:
        return name in self.bugs

    def next_ts(self) -> int:
        self.ms += 1
        return hlc.pack(self.ms, 0)

    async def propose(self, command: dict[str, Any], group: int = 0) -> dict[str, Any]:
        self.events.append(("propose", command["op"]) if self.group_count == 1
                           else ("propose", command["op"], group))
        wire = msgpack.packb(command, use_bin_type=True)
        replicated = msgpack.unpackb(wire, raw=False)
        ts = self.next_ts()
        self.commands.append((ts, replicated))
        result = apply_command(self.stores[group], ts, replicated)
        msgpack.packb(result, use_bin_type=True)  # results are msgpack-able too
        return result


_LOOP = asyncio.new_event_loop()


class Client:
    """Synchronous calls into a DynamoService over its own backend."""

    def __init__(self, bugs: tuple[str, ...] = (), groups: int = 1) -> None:
        self.backend = LocalBackend(bugs, groups)
        self.service = DynamoService(self.backend)

    def raw(self, target: Any, body: Any) -> tuple[int, dict[str, Any]]:
        status, resp = _LOOP.run_until_complete(self.service.handle(target, body))
        json.dumps(resp)  # every answer is JSON-serialisable
        return status, resp

    def call(self, op: str, **req: Any) -> tuple[int, dict[str, Any]]:
        return self.raw("DynamoDB_20120810." + op, json.dumps(req).encode())

    def ok(self, op: str, **req: Any) -> dict[str, Any]:
        status, resp = self.call(op, **req)
        assert status == 200, (op, status, resp)
        return resp

    def err(self, op: str, code: str = "ValidationException", status: int = 400, **req: Any) -> str:
        got_status, resp = self.call(op, **req)
        assert got_status == status and resp["__type"].endswith("#" + code), (op, got_status, resp)
        return resp.get("message", resp.get("Message", ""))

    # shorthands
    def table(self, name: str = "tab", range_key: str | None = "sk", range_type: str = "S",
              hash_type: str = "S") -> None:
        ks = [{"AttributeName": "pk", "KeyType": "HASH"}]
        ad = [{"AttributeName": "pk", "AttributeType": hash_type}]
        if range_key:
            ks.append({"AttributeName": range_key, "KeyType": "RANGE"})
            ad.append({"AttributeName": range_key, "AttributeType": range_type})
        self.ok("CreateTable", TableName=name, KeySchema=ks, AttributeDefinitions=ad,
                BillingMode="PAY_PER_REQUEST")

    def put(self, table: str, item: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return self.ok("PutItem", TableName=table, Item=item, **kw)

    def get(self, table: str, key: dict[str, Any], **kw: Any) -> dict[str, Any] | None:
        return self.ok("GetItem", TableName=table, Key=key, **kw).get("Item")


def S(x: str) -> dict[str, str]:
    return {"S": x}


def N(x: Any) -> dict[str, str]:
    return {"N": str(x)}


def k(pk: str, sk: Any = None) -> dict[str, Any]:
    key = {"pk": S(pk)}
    if sk is not None:
        key["sk"] = S(sk) if isinstance(sk, str) else N(sk)
    return key


@pytest.fixture
def c() -> Client:
    cl = Client()
    cl.table("tab")
    return cl


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------


def test_table_lifecycle_and_list_paging():
    cl = Client()
    resp = cl.ok("CreateTable", TableName="users", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                 AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
                 ProvisionedThroughput={"ReadCapacityUnits": 5, "WriteCapacityUnits": 3})
    d = resp["TableDescription"]
    assert d["TableName"] == "users" and d["TableStatus"] == "ACTIVE"
    assert d["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert d["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "N"}]
    assert d["ProvisionedThroughput"]["ReadCapacityUnits"] == 5
    assert d["TableArn"].endswith(":table/users") and d["ItemCount"] == 0
    assert abs(d["CreationDateTime"] - (T0_MS + 1) / 1000) < 1e-6
    msg = cl.err("CreateTable", "ResourceInUseException", TableName="users",
                 KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                 AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
                 BillingMode="PAY_PER_REQUEST")
    assert msg == "Table already exists: users"
    for name in ("aaa", "bbb", "ccc", "ddd"):
        cl.table(name)
    cl.put("aaa", {"pk": S("x"), "sk": S("y")})
    desc = cl.ok("DescribeTable", TableName="aaa")["Table"]
    assert desc["ItemCount"] == 1 and desc["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert desc["KeySchema"][1] == {"AttributeName": "sk", "KeyType": "RANGE"}
    assert cl.ok("ListTables") == {"TableNames": ["aaa", "bbb", "ccc", "ddd", "users"]}
    p1 = cl.ok("ListTables", Limit=2)
    assert p1 == {"TableNames": ["aaa", "bbb"], "LastEvaluatedTableName": "bbb"}
    p2 = cl.ok("ListTables", Limit=2, ExclusiveStartTableName="bbb")
    assert p2 == {"TableNames": ["ccc", "ddd"], "LastEvaluatedTableName": "ddd"}
    assert cl.ok("ListTables", Limit=2, ExclusiveStartTableName="ddd") == {"TableNames": ["users"]}
    gone = cl.ok("DeleteTable", TableName="aaa")["TableDescription"]
    assert gone["TableStatus"] == "DELETING" and gone["ItemCount"] == 1
    assert cl.err("DescribeTable", "ResourceNotFoundException", TableName="aaa") == \
        "Requested resource not found: Table: aaa not found"
    cl.err("DeleteTable", "ResourceNotFoundException", TableName="aaa")
    cl.err("GetItem", "ResourceNotFoundException", TableName="aaa", Key=k("x", "y"))
    # a table of the same name starts empty
    cl.table("aaa")
    assert cl.get("aaa", k("x", "y")) is None


@pytest.mark.parametrize("req, fragment", [
    ({"KeySchema": [{"AttributeName": "a", "KeyType": "RANGE"}],
      "AttributeDefinitions": [{"AttributeName": "a", "AttributeType": "S"}]},
     "The first KeySchemaElement is not a HASH key type"),
    ({"KeySchema": [{"AttributeName": "a", "KeyType": "HASH"}, {"AttributeName": "b", "KeyType": "HASH"}],
      "AttributeDefinitions": [{"AttributeName": "a", "AttributeType": "S"},
                               {"AttributeName": "b", "AttributeType": "S"}]},
     "The second KeySchemaElement is not a RANGE key type"),
    ({"KeySchema": [{"AttributeName": "a", "KeyType": "HASH"}, {"AttributeName": "a", "KeyType": "RANGE"}],
      "AttributeDefinitions": [{"AttributeName": "a", "AttributeType": "S"}]},
     "have the same name"),
    ({"KeySchema": [{"AttributeName": "a", "KeyType": "HASH"}],
      "AttributeDefinitions": [{"AttributeName": "b", "AttributeType": "S"}]},
     "Some index key attributes are not defined in AttributeDefinitions"),
    ({"KeySchema": [{"AttributeName": "a", "KeyType": "HASH"}],
      "AttributeDefinitions": [{"AttributeName": "a", "AttributeType": "S"},
                               {"AttributeName": "b", "AttributeType": "S"}]},
     "Number of attributes in KeySchema does not exactly match"),
    ({"KeySchema": [{"AttributeName": "a", "KeyType": "HASH"}],
      "AttributeDefinitions": [{"AttributeName": "a", "AttributeType": "X"}]},
     "Member must satisfy enum value set: [B, N, S]"),
    ({"KeySchema": [], "AttributeDefinitions": []}, "Member must have length greater than or equal to 1"),
    ({"AttributeDefinitions": []}, "Value null at 'keySchema'"),
])
def test_create_table_validation(req, fragment):
    cl = Client()
    msg = cl.err("CreateTable", TableName="tbl", BillingMode="PAY_PER_REQUEST", **req)
    assert fragment in msg
    assert cl.backend.commands == []


def test_create_table_names_and_billing():
    cl = Client()
    ks = [{"AttributeName": "a", "KeyType": "HASH"}]
    ad = [{"AttributeName": "a", "AttributeType": "S"}]
    assert "length greater than or equal to 3" in cl.err("CreateTable", TableName="ab", KeySchema=ks,
                                                        AttributeDefinitions=ad, BillingMode="PAY_PER_REQUEST")
    assert "regular expression pattern" in cl.err("CreateTable", TableName="a b c", KeySchema=ks,
                                                  AttributeDefinitions=ad, BillingMode="PAY_PER_REQUEST")
    assert "must both be specified when BillingMode is PROVISIONED" in cl.err(
        "CreateTable", TableName="abc", KeySchema=ks, AttributeDefinitions=ad)
    assert "can be specified when BillingMode is PAY_PER_REQUEST" in cl.err(
        "CreateTable", TableName="abc", KeySchema=ks, AttributeDefinitions=ad, BillingMode="PAY_PER_REQUEST",
        ProvisionedThroughput={"ReadCapacityUnits": 1, "WriteCapacityUnits": 1})
    assert "not supported" in cl.err("CreateTable", TableName="abc", KeySchema=ks, AttributeDefinitions=ad,
                                     BillingMode="PAY_PER_REQUEST", GlobalSecondaryIndexes=[{}])


# ---------------------------------------------------------------------------
# Single-item operations
# ---------------------------------------------------------------------------

ALL_TYPES = {
    "pk": S("a"), "sk": S("b"),
    "s": S("text"), "n": N("1.50"), "b": {"B": base64.b64encode(b"\x00\xff").decode()},
    "t": {"BOOL": True}, "z": {"NULL": True},
    "ss": {"SS": ["x", "y"]}, "ns": {"NS": ["1", "2E1"]}, "bs": {"BS": [base64.b64encode(b"q").decode()]},
    "l": {"L": [S("e"), N(2), {"M": {"deep": N("-0")}}]},
    "m": {"M": {"inner": {"L": []}, "name": S("x")}},
}


def test_put_get_all_types_and_projection(c):
    assert c.put("tab", ALL_TYPES) == {}
    got = c.get("tab", k("a", "b"))
    want = copy.deepcopy(ALL_TYPES)
    want["n"] = N("1.5")
    want["ns"] = {"NS": ["1", "20"]}
    want["l"]["L"][2]["M"]["deep"] = N("0")
    assert got == want
    assert c.get("tab", k("a", "b"), ProjectionExpression="s, #m.#n, l[2]",
                 ExpressionAttributeNames={"#m": "m", "#n": "name"}) == \
        {"s": S("text"), "m": {"M": {"name": S("x")}}, "l": {"L": [{"M": {"deep": N(0)}}]}}
    assert c.get("tab", k("a", "b"), AttributesToGet=["s", "t"], ConsistentRead=True) == \
        {"s": S("text"), "t": {"BOOL": True}}
    assert c.get("tab", k("a", "zzz")) is None
    assert c.ok("GetItem", TableName="tab", Key=k("a", "zzz")) == {}


def test_put_item_validation(c):
    assert "Missing the key sk" in c.err("PutItem", TableName="tab", Item={"pk": S("a")})
    assert "Type mismatch for key" in c.err("PutItem", TableName="tab", Item={"pk": S("a"), "sk": N(1)})
    assert "ReturnValues can only be ALL_OLD or NONE" in c.err(
        "PutItem", TableName="tab", Item=k("a", "b"), ReturnValues="ALL_NEW")
    assert "Item size has exceeded" in c.err("PutItem", TableName="tab",
                                             Item={**k("a", "b"), "big": S("x" * 409_600)})
    c.put("tab", {**k("a", "b"), "big": S("x" * (409_600 - 9))})  # exactly 400 KB fits
    assert "unused in expressions" in c.err("PutItem", TableName="tab", Item=k("a", "b"),
                                            ConditionExpression="attribute_exists(pk)",
                                            ExpressionAttributeValues={":x": N(1)})
    assert "Syntax error" in c.err("PutItem", TableName="tab", Item=k("a", "b"), ConditionExpression="a = = b")
    c.err("PutItem", "ResourceNotFoundException", TableName="nope", Item=k("a", "b"))


def test_put_conditions_and_return_values(c):
    item = {**k("a", "b"), "v": N(1)}
    assert c.put("tab", item, ConditionExpression="attribute_not_exists(pk)") == {}
    _, resp = c.call("PutItem", TableName="tab", Item={**k("a", "b"), "v": N(2)},
                     ConditionExpression="attribute_not_exists(pk)")
    assert resp == {"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
                    "message": "The conditional request failed"}
    _, resp = c.call("PutItem", TableName="tab", Item={**k("a", "b"), "v": N(2)},
                     ConditionExpression="v = :x", ExpressionAttributeValues={":x": N(5)},
                     ReturnValuesOnConditionCheckFailure="ALL_OLD")
    assert resp["Item"] == item
    assert c.get("tab", k("a", "b")) == item
    resp = c.put("tab", {**k("a", "b"), "v": N(3)}, ConditionExpression="v = :x",
                 ExpressionAttributeValues={":x": N(1)}, ReturnValues="ALL_OLD")
    assert resp == {"Attributes": item}
    assert c.put("tab", {**k("new", "b")}, ReturnValues="ALL_OLD") == {}


def test_update_return_values_each_kind(c):
    base = {**k("a", "b"), "x": N(1), "y": S("keep"), "m": {"M": {"p": N(1), "q": N(2)}}}

    def update(rv: str) -> dict[str, Any]:
        c.put("tab", base)
        return c.ok("UpdateItem", TableName="tab", Key=k("a", "b"), ReturnValues=rv,
                    UpdateExpression="SET x = x + :one, m.p = :ten, z = :s REMOVE y",
                    ExpressionAttributeValues={":one": N(1), ":ten": N(10), ":s": S("new")})

    new = {**k("a", "b"), "x": N(2), "m": {"M": {"p": N(10), "q": N(2)}}, "z": S("new")}
    assert update("NONE") == {}
    assert update("ALL_OLD") == {"Attributes": base}
    assert update("ALL_NEW") == {"Attributes": new}
    assert update("UPDATED_OLD") == {"Attributes": {"x": N(1), "m": {"M": {"p": N(1)}}, "y": S("keep")}}
    assert update("UPDATED_NEW") == {"Attributes": {"x": N(2), "m": {"M": {"p": N(10)}}, "z": S("new")}}
    assert c.get("tab", k("a", "b")) == new


def test_update_expression_features_and_apply_time_errors(c):
    # update of an absent item creates it from the key
    r = c.ok("UpdateItem", TableName="tab", Key=k("u", "1"), ReturnValues="ALL_NEW",
             UpdateExpression="SET n = if_not_exists(n, :zero) + :one, l = list_append(if_not_exists(l, :e), :l) "
                              "ADD c :one, s :ss",
             ExpressionAttributeValues={":zero": N(0), ":one": N(1), ":e": {"L": []}, ":l": {"L": [S("a")]},
                                        ":ss": {"SS": ["p", "q"]}})
    assert r["Attributes"] == {**k("u", "1"), "n": N(1), "l": {"L": [S("a")]}, "c": N(1), "s": {"SS": ["p", "q"]}}
    c.ok("UpdateItem", TableName="tab", Key=k("u", "1"), UpdateExpression="DELETE s :p",
         ExpressionAttributeValues={":p": {"SS": ["p"]}})
    assert c.get("tab", k("u", "1"))["s"] == {"SS": ["q"]}
    # UpdateItem without an UpdateExpression creates the bare key
    c.ok("UpdateItem", TableName="tab", Key=k("bare", "1"))
    assert c.get("tab", k("bare", "1")) == k("bare", "1")
    # errors found only at apply time leave the item unchanged
    c.put("tab", {**k("e", "1"), "n": N(5), "s": S("str")})
    before = c.get("tab", k("e", "1"))
    assert c.err("UpdateItem", TableName="tab", Key=k("e", "1"), UpdateExpression="ADD s :one",
                 ExpressionAttributeValues={":one": N(1)}) == \
        "An operand in the update expression has an incorrect data type"
    assert c.err("UpdateItem", TableName="tab", Key=k("e", "1"), UpdateExpression="SET n = s + :one",
                 ExpressionAttributeValues={":one": N(1)}) == \
        "An operand in the update expression has an incorrect data type"
    assert "refers to an attribute that does not exist" in c.err(
        "UpdateItem", TableName="tab", Key=k("e", "1"), UpdateExpression="SET n = absent + :one",
        ExpressionAttributeValues={":one": N(1)})
    c.put("tab", {**k("big", "1"), "a": S("x" * 300_000)})
    assert c.err("UpdateItem", TableName="tab", Key=k("big", "1"), UpdateExpression="SET b = a") == \
        "Item size to update has exceeded the maximum allowed size"
    assert c.get("tab", k("e", "1")) == before
    assert "Cannot update attribute sk" in c.err("UpdateItem", TableName="tab", Key=k("e", "1"),
                                                 UpdateExpression="SET sk = :v", ExpressionAttributeValues={":v": S("x")})
    assert "can only be specified when using expressions" in c.err(
        "UpdateItem", TableName="tab", Key=k("e", "1"), ExpressionAttributeValues={":v": S("x")})
    assert "The provided key element does not match the schema" in c.err(
        "UpdateItem", TableName="tab", Key={"pk": S("e")}, UpdateExpression="SET a = :v",
        ExpressionAttributeValues={":v": S("x")})


def test_update_and_delete_conditions(c):
    c.put("tab", {**k("a", "b"), "v": N(1)})
    r = c.call("UpdateItem", TableName="tab", Key=k("a", "b"), UpdateExpression="SET v = :two",
               ConditionExpression="v = :zero", ExpressionAttributeValues={":two": N(2), ":zero": N(0)},
               ReturnValuesOnConditionCheckFailure="ALL_OLD")
    assert r[0] == 400 and r[1]["__type"].endswith("#ConditionalCheckFailedException")
    assert r[1]["Item"] == {**k("a", "b"), "v": N(1)}
    c.ok("UpdateItem", TableName="tab", Key=k("a", "b"), UpdateExpression="SET v = :two",
         ConditionExpression="v = :one", ExpressionAttributeValues={":two": N(2), ":one": N(1)})
    # condition on an absent item: attribute_exists fails, with no Item even for ALL_OLD
    r = c.call("UpdateItem", TableName="tab", Key=k("zz", "b"), UpdateExpression="SET v = :two",
               ConditionExpression="attribute_exists(pk)", ExpressionAttributeValues={":two": N(2)},
               ReturnValuesOnConditionCheckFailure="ALL_OLD")
    assert r[0] == 400 and "Item" not in r[1]
    assert c.get("tab", k("zz", "b")) is None
    # DeleteItem
    r = c.call("DeleteItem", TableName="tab", Key=k("a", "b"), ConditionExpression="v = :one",
               ExpressionAttributeValues={":one": N(1)})
    assert r[1]["__type"].endswith("#ConditionalCheckFailedException")
    assert c.ok("DeleteItem", TableName="tab", Key=k("a", "b"), ConditionExpression="v = :two",
                ExpressionAttributeValues={":two": N(2)}, ReturnValues="ALL_OLD") == \
        {"Attributes": {**k("a", "b"), "v": N(2)}}
    assert c.get("tab", k("a", "b")) is None
    assert c.ok("DeleteItem", TableName="tab", Key=k("a", "b"), ReturnValues="ALL_OLD") == {}
    assert "ReturnValues can only be ALL_OLD or NONE" in c.err("DeleteItem", TableName="tab", Key=k("a", "b"),
                                                               ReturnValues="UPDATED_NEW")


# ---------------------------------------------------------------------------
# Query and Scan
# ---------------------------------------------------------------------------


def _query_all(c: Client, **req: Any) -> tuple[list[dict[str, Any]], int]:
    items, pages, esk = [], 0, None
    while True:
        if esk is not None:
            req["ExclusiveStartKey"] = esk
        r = c.ok("Query", TableName=req.pop("TableName", "qry"), **req)
        req["TableName"] = "qry"
        pages += 1
        items += r["Items"]
        esk = r.get("LastEvaluatedKey")
        if esk is None:
            return items, pages
        assert pages < 100


@pytest.fixture
def qc() -> Client:
    cl = Client()
    cl.table("qry", range_type="N")
    for pk in ("p", "other"):
        for i in range(-5, 15):
            cl.put("qry", {"pk": S(pk), "sk": N(i), "even": {"BOOL": i % 2 == 0}, "v": S(f"{pk}{i}")})
    cl.table("str", range_type="S")
    for word in ("apple", "apricot", "banana", "app", "b", "ap", "a"):
        cl.put("str", {"pk": S("w"), "sk": S(word)})
    return cl


def test_query_key_conditions(qc):
    def sks(**req: Any) -> list[int]:
        r = qc.ok("Query", TableName="qry", **req)
        return [int(i["sk"]["N"]) for i in r["Items"]]

    vals = {":p": S("p")}
    assert sks(KeyConditionExpression="pk = :p", ExpressionAttributeValues=vals) == list(range(-5, 15))
    assert sks(KeyConditionExpression="pk = :p AND sk BETWEEN :lo AND :hi",
               ExpressionAttributeValues={**vals, ":lo": N(-2), ":hi": N(3)}) == [-2, -1, 0, 1, 2, 3]
    assert sks(KeyConditionExpression="pk = :p AND sk < :x", ExpressionAttributeValues={**vals, ":x": N(-3)}) \
        == [-5, -4]
    assert sks(KeyConditionExpression="pk = :p AND sk <= :x", ExpressionAttributeValues={**vals, ":x": N(-3)}) \
        == [-5, -4, -3]
    assert sks(KeyConditionExpression="pk = :p AND sk > :x", ExpressionAttributeValues={**vals, ":x": N(12)}) \
        == [13, 14]
    assert sks(KeyConditionExpression=":x <= sk AND pk = :p", ExpressionAttributeValues={**vals, ":x": N(12)}) \
        == [12, 13, 14]
    assert sks(KeyConditionExpression="pk = :p AND sk = :x", ExpressionAttributeValues={**vals, ":x": N("7.0")}) \
        == [7]
    assert sks(KeyConditionExpression="pk = :p AND sk >= :x", ExpressionAttributeValues={**vals, ":x": N(12)},
               ScanIndexForward=False) == [14, 13, 12]
    r = qc.ok("Query", TableName="str", KeyConditionExpression="pk = :w AND begins_with(sk, :ap)",
              ExpressionAttributeValues={":w": S("w"), ":ap": S("ap")})
    assert [i["sk"]["S"] for i in r["Items"]] == ["ap", "app", "apple", "apricot"]
    r = qc.ok("Query", TableName="str", KeyConditionExpression="#k = :w AND begins_with(#s, :ap)",
              ExpressionAttributeNames={"#k": "pk", "#s": "sk"}, ScanIndexForward=False,
              ExpressionAttributeValues={":w": S("w"), ":ap": S("ap")})
    assert [i["sk"]["S"] for i in r["Items"]] == ["apricot", "apple", "app", "ap"]
    r = qc.ok("Query", TableName="qry", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": S("none")})
    assert r == {"Items": [], "Count": 0, "ScannedCount": 0}


def test_query_paging_limit_esk_filter_select(qc):
    vals = {":p": S("p"), ":lo": N(-3), ":hi": N(10)}
    kce = "pk = :p AND sk BETWEEN :lo AND :hi"
    items, pages = _query_all(qc, KeyConditionExpression=kce, ExpressionAttributeValues=vals, Limit=3)
    assert [int(i["sk"]["N"]) for i in items] == list(range(-3, 11))
    assert pages == 5  # 14 items, 3 per page: the 5th page is short and has no LastEvaluatedKey
    items, pages = _query_all(qc, KeyConditionExpression=kce, ExpressionAttributeValues=vals, Limit=7,
                              ScanIndexForward=False)
    assert [int(i["sk"]["N"]) for i in items] == list(range(10, -4, -1))
    assert pages == 3  # Limit reached on page 2 exactly at the end: a third, empty page
    # Limit counts evaluated items; LastEvaluatedKey is the last evaluated, even if filtered out
    r = qc.ok("Query", TableName="qry", KeyConditionExpression=kce, Limit=4, FilterExpression="even = :t",
              ExpressionAttributeValues={**vals, ":t": {"BOOL": True}})
    assert [int(i["sk"]["N"]) for i in r["Items"]] == [-2, 0]
    assert r["Count"] == 2 and r["ScannedCount"] == 4
    assert r["LastEvaluatedKey"] == {"pk": S("p"), "sk": N(0)}
    r = qc.ok("Query", TableName="qry", KeyConditionExpression=kce, Limit=3, FilterExpression="even = :t",
              ExpressionAttributeValues={**vals, ":t": {"BOOL": True}}, ExclusiveStartKey={"pk": S("p"), "sk": N(0)})
    assert r["LastEvaluatedKey"] == {"pk": S("p"), "sk": N(3)} and r["Count"] == 1
    # Select COUNT and projection
    r = qc.ok("Query", TableName="qry", KeyConditionExpression=kce, ExpressionAttributeValues=vals, Select="COUNT")
    assert r == {"Count": 14, "ScannedCount": 14}
    r = qc.ok("Query", TableName="qry", KeyConditionExpression="pk = :p AND sk = :x", ProjectionExpression="v",
              ExpressionAttributeValues={":p": S("p"), ":x": N(1)})
    assert r["Items"] == [{"v": S("p1")}]
    # bad start keys
    assert "does not match the range key predicate" in qc.err(
        "Query", TableName="qry", KeyConditionExpression=kce, ExpressionAttributeValues=vals,
        ExclusiveStartKey={"pk": S("p"), "sk": N(50)})
    assert "The provided starting key is invalid" in qc.err(
        "Query", TableName="qry", KeyConditionExpression=kce, ExpressionAttributeValues=vals,
        ExclusiveStartKey={"pk": S("other"), "sk": N(1)})
    assert "The provided starting key is invalid" in qc.err(
        "Query", TableName="qry", KeyConditionExpression=kce, ExpressionAttributeValues=vals,
        ExclusiveStartKey={"pk": S("p")})
    assert "Query condition missed key schema element: pk" in qc.err(
        "Query", TableName="qry", KeyConditionExpression="sk = :x", ExpressionAttributeValues={":x": N(1)})
    assert "KeyConditionExpression parameter must be specified" in qc.err("Query", TableName="qry")
    assert "does not have the specified index" in qc.err(
        "Query", TableName="qry", IndexName="gsi", KeyConditionExpression="pk = :p", ExpressionAttributeValues=vals)
    assert "Cannot specify" in qc.err("Query", TableName="qry", KeyConditionExpression="pk = :p",
                                      ExpressionAttributeValues={":p": S("p")}, Select="COUNT",
                                      ProjectionExpression="v")


def test_query_stops_at_one_megabyte():
    cl = Client()
    cl.table("big")
    for i in range(4):
        cl.put("big", {"pk": S("p"), "sk": S(f"{i}"), "blob": S("x" * 380_000)})
    r = cl.ok("Query", TableName="big", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": S("p")},
              Select="COUNT")
    assert r["ScannedCount"] == 3 and r["LastEvaluatedKey"] == {"pk": S("p"), "sk": S("2")}
    r = cl.ok("Query", TableName="big", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": S("p")},
              Select="COUNT", ExclusiveStartKey=r["LastEvaluatedKey"])
    assert r == {"Count": 1, "ScannedCount": 1}
    r = cl.ok("Scan", TableName="big", Select="COUNT")
    assert r["ScannedCount"] == 3 and "LastEvaluatedKey" in r


def test_table_without_range_key_query_and_scan():
    cl = Client()
    cl.table("hsh", range_key=None, hash_type="N")
    for i in range(10):
        cl.put("hsh", {"pk": N(i), "v": N(i * i)})
    r = cl.ok("Query", TableName="hsh", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": N(3)})
    assert r["Items"] == [{"pk": N(3), "v": N(9)}]
    r = cl.ok("Query", TableName="hsh", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": N(3)},
              ExclusiveStartKey={"pk": N(3)})
    assert r["Items"] == []
    seen = []
    esk = None
    while True:
        req = {"TableName": "hsh", "Limit": 4}
        if esk:
            req["ExclusiveStartKey"] = esk
        r = cl.ok("Scan", **req)
        seen += [int(i["pk"]["N"]) for i in r["Items"]]
        esk = r.get("LastEvaluatedKey")
        if not esk:
            break
    assert seen == list(range(10))  # the order-preserving number encoding orders the scan


def test_scan_paging_filter_and_segments(qc):
    everything = qc.ok("Scan", TableName="qry")
    assert everything["Count"] == 40
    keys = [(i["pk"]["S"], int(i["sk"]["N"])) for i in everything["Items"]]
    assert keys == sorted(keys, key=lambda x: (x[0].encode(), x[1]))
    got, esk, pages = [], None, 0
    while True:
        req: dict[str, Any] = {"TableName": "qry", "Limit": 7, "FilterExpression": "even = :t",
                               "ExpressionAttributeValues": {":t": {"BOOL": True}},
                               "ProjectionExpression": "pk, sk"}
        if esk:
            req["ExclusiveStartKey"] = esk
        r = qc.ok("Scan", **req)
        pages += 1
        got += r["Items"]
        esk = r.get("LastEvaluatedKey")
        if not esk:
            break
    assert pages == 6 and len(got) == 20 and all(set(i) == {"pk", "sk"} for i in got)
    segs = []
    for seg in range(3):
        r = qc.ok("Scan", TableName="qry", Segment=seg, TotalSegments=3)
        segs.append({(i["pk"]["S"], i["sk"]["N"]) for i in r["Items"]})
    assert sum(len(s) for s in segs) == 40 and len(set().union(*segs)) == 40
    assert "Segment parameter is zero-based" in qc.err("Scan", TableName="qry", Segment=3, TotalSegments=3)
    assert "TotalSegments parameter is required" in qc.err("Scan", TableName="qry", Segment=0)
    some = next(iter(segs[1]))
    assert "does not map to the provided segment" in qc.err(
        "Scan", TableName="qry", Segment=0, TotalSegments=3, ExclusiveStartKey={"pk": S(some[0]), "sk": N(some[1])})
    assert qc.ok("Scan", TableName="qry", Select="COUNT", FilterExpression="v = :x",
                 ExpressionAttributeValues={":x": S("p3")}) == {"Count": 1, "ScannedCount": 40}


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------


def test_batch_write_and_get(c):
    c.table("other", range_key=None)
    puts = [{"PutRequest": {"Item": {**k("b", f"{i:02d}"), "v": N(i)}}} for i in range(20)]
    puts_other = [{"PutRequest": {"Item": {"pk": S(f"o{i}")}}} for i in range(5)]
    assert c.ok("BatchWriteItem", RequestItems={"tab": puts, "other": puts_other}) == {"UnprocessedItems": {}}
    assert len(c.backend.commands) == 3  # two CreateTable, one batch (one Raft entry)
    assert "Too many items requested for the BatchWriteItem call" in c.err(
        "BatchWriteItem", RequestItems={"tab": puts, "other": puts_other + [{"DeleteRequest": {"Key": {"pk": S("x")}}}]})
    assert "contains duplicates" in c.err("BatchWriteItem", RequestItems={
        "tab": [puts[0], {"DeleteRequest": {"Key": k("b", "00")}}]})
    assert "exactly one of PutRequest or DeleteRequest" in c.err("BatchWriteItem", RequestItems={"tab": [{}]})
    c.err("BatchWriteItem", "ResourceNotFoundException", RequestItems={"nope": puts[:1]})
    keys = [k("b", f"{i:02d}") for i in range(20)] + [k("b", "missing")]
    r = c.ok("BatchGetItem", RequestItems={"tab": {"Keys": keys, "ProjectionExpression": "v"},
                                           "other": {"Keys": [{"pk": S("o1")}, {"pk": S("o9")}]}})
    assert r["UnprocessedKeys"] == {}
    assert sorted(int(i["v"]["N"]) for i in r["Responses"]["tab"]) == list(range(20))
    assert r["Responses"]["other"] == [{"pk": S("o1")}]
    deletes = [{"DeleteRequest": {"Key": k("b", f"{i:02d}")}} for i in range(10)]
    c.ok("BatchWriteItem", RequestItems={"tab": deletes})
    r = c.ok("BatchGetItem", RequestItems={"tab": {"Keys": keys}})
    assert len(r["Responses"]["tab"]) == 10
    many = [k("b", f"{i:03d}") for i in range(101)]
    assert "Too many items requested for the BatchGetItem call" in c.err(
        "BatchGetItem", RequestItems={"tab": {"Keys": many[:60]}, "other": {"Keys": [{"pk": S(f"{i}")} for i in range(41)]}})
    assert "contains duplicates" in c.err("BatchGetItem", RequestItems={"tab": {"Keys": [k("a", "b"), k("a", "b")]}})
    assert len(c.ok("BatchGetItem", RequestItems={"tab": {"Keys": many[:100]}})["Responses"]["tab"]) == 0


# ---------------------------------------------------------------------------
# Transactions
# ---------------------------------------------------------------------------


def _tx_put(pk: str, sk: str, **extra: Any) -> dict[str, Any]:
    return {"Put": {"TableName": "tab", "Item": {**k(pk, sk), **extra}}}


def test_transact_write_atomic_and_cancellation_reasons(c):
    c.put("tab", {**k("acct", "a"), "bal": N(10)})
    c.put("tab", {**k("acct", "b"), "bal": N(0)})
    status, resp = c.call("TransactWriteItems", TransactItems=[
        _tx_put("new", "1"),
        _tx_put("new", "2"),
        {"ConditionCheck": {"TableName": "tab", "Key": k("acct", "a"), "ConditionExpression": "bal > :x",
                            "ExpressionAttributeValues": {":x": N(100)},
                            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
        {"Update": {"TableName": "tab", "Key": k("acct", "b"), "UpdateExpression": "SET bal = bal + :x",
                    "ConditionExpression": "bal > :y", "ExpressionAttributeValues": {":x": N(5), ":y": N(3)}}},
        {"Delete": {"TableName": "tab", "Key": k("acct", "zz")}},
    ])
    assert status == 400
    assert resp["__type"] == "com.amazonaws.dynamodb.v20120810#TransactionCanceledException"
    assert resp["Message"] == ("Transaction cancelled, please refer cancellation reasons for specific reasons "
                               "[None, None, ConditionalCheckFailed, ConditionalCheckFailed, None]")
    assert resp["CancellationReasons"] == [
        {"Code": "None"}, {"Code": "None"},
        {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed",
         "Item": {**k("acct", "a"), "bal": N(10)}},
        {"Code": "ConditionalCheckFailed", "Message": "The conditional request failed"},
        {"Code": "None"},
    ]
    assert c.get("tab", k("new", "1")) is None and c.get("tab", k("new", "2")) is None
    assert c.get("tab", k("acct", "b")) == {**k("acct", "b"), "bal": N(0)}
    # a transfer that succeeds, all at one commit timestamp
    assert c.ok("TransactWriteItems", TransactItems=[
        {"Update": {"TableName": "tab", "Key": k("acct", "a"), "UpdateExpression": "SET bal = bal - :x",
                    "ConditionExpression": "bal >= :x", "ExpressionAttributeValues": {":x": N(4)}}},
        {"Update": {"TableName": "tab", "Key": k("acct", "b"), "UpdateExpression": "SET bal = bal + :x",
                    "ExpressionAttributeValues": {":x": N(4)}}},
        _tx_put("new", "3"),
        {"Delete": {"TableName": "tab", "Key": k("zz", "1")}},
    ]) == {}
    store = c.backend.store
    versions = [store.versions("tab", *C.encode_key(key, C.key_schema(store.describe("tab")["schema"])))[-1][0]
                for key in (k("acct", "a"), k("acct", "b"), k("new", "3"))]
    assert len(set(versions)) == 1
    assert c.get("tab", k("acct", "a"))["bal"] == N(6) and c.get("tab", k("acct", "b"))["bal"] == N(4)
    # an item error discovered at apply time cancels with a ValidationError reason
    status, resp = c.call("TransactWriteItems", TransactItems=[
        _tx_put("new", "4"),
        {"Update": {"TableName": "tab", "Key": k("acct", "a"), "UpdateExpression": "ADD bal :s",
                    "ExpressionAttributeValues": {":s": {"SS": ["x"]}}}},
    ])
    assert resp["CancellationReasons"] == [
        {"Code": "None"},
        {"Code": "ValidationError", "Message": "An operand in the update expression has an incorrect data type"}]
    assert c.get("tab", k("new", "4")) is None


def test_transact_write_validation(c):
    assert c.err("TransactWriteItems", TransactItems=[
        _tx_put("a", "1"), {"Delete": {"TableName": "tab", "Key": k("a", "1")}}]) == \
        "Transaction request cannot include multiple operations on one item"
    assert "length less than or equal to 100" in c.err(
        "TransactWriteItems", TransactItems=[_tx_put("a", str(i)) for i in range(101)])
    assert c.ok("TransactWriteItems", TransactItems=[_tx_put("a", str(i)) for i in range(100)]) == {}
    assert "length greater than or equal to 1" in c.err("TransactWriteItems", TransactItems=[])
    assert "only contain one of" in c.err("TransactWriteItems", TransactItems=[
        {"Put": {"TableName": "tab", "Item": k("x", "1")}, "Delete": {"TableName": "tab", "Key": k("x", "1")}}])
    assert "Value null at 'transactItems.1.member.conditionCheck.conditionExpression'" in c.err(
        "TransactWriteItems", TransactItems=[{"ConditionCheck": {"TableName": "tab", "Key": k("x", "1")}}])
    assert "Value null at 'transactItems.1.member.update.updateExpression'" in c.err(
        "TransactWriteItems", TransactItems=[{"Update": {"TableName": "tab", "Key": k("x", "1")}}])
    c.err("TransactWriteItems", "ResourceNotFoundException",
          TransactItems=[{"Put": {"TableName": "nope", "Item": k("x", "1")}}])
    assert "length less than or equal to 36" in c.err("TransactWriteItems", TransactItems=[_tx_put("x", "1")],
                                                      ClientRequestToken="x" * 37)


def test_client_request_token_idempotency(c):
    counter = [{"Update": {"TableName": "tab", "Key": k("ctr", "1"), "UpdateExpression": "ADD n :one",
                           "ExpressionAttributeValues": {":one": N(1)}}}]
    assert c.ok("TransactWriteItems", TransactItems=counter, ClientRequestToken="tok-1") == {}
    assert c.ok("TransactWriteItems", TransactItems=counter, ClientRequestToken="tok-1") == {}
    assert c.get("tab", k("ctr", "1"))["n"] == N(1)  # the replay did not apply again
    # numbers are canonical: "1.0" is the same request
    counter_same = copy.deepcopy(counter)
    counter_same[0]["Update"]["ExpressionAttributeValues"][":one"] = N("1.0")
    assert c.ok("TransactWriteItems", TransactItems=counter_same, ClientRequestToken="tok-1") == {}
    other = copy.deepcopy(counter)
    other[0]["Update"]["ExpressionAttributeValues"][":one"] = N(2)
    assert "same client token" in c.err("TransactWriteItems", "IdempotentParameterMismatchException",
                                        TransactItems=other, ClientRequestToken="tok-1")
    assert c.get("tab", k("ctr", "1"))["n"] == N(1)
    # without a token, every call applies
    c.ok("TransactWriteItems", TransactItems=counter)
    assert c.get("tab", k("ctr", "1"))["n"] == N(2)
    # a cancelled transaction replays as cancelled, even once its condition would pass
    guarded = [{"Put": {"TableName": "tab", "Item": k("g", "1"), "ConditionExpression": "attribute_exists(pk)"}}]
    st1, r1 = c.call("TransactWriteItems", TransactItems=guarded, ClientRequestToken="tok-2")
    c.put("tab", k("g", "1"))
    st2, r2 = c.call("TransactWriteItems", TransactItems=guarded, ClientRequestToken="tok-2")
    assert st1 == st2 == 400 and r1 == r2 and r1["__type"].endswith("#TransactionCanceledException")
    # the token table travels in the store snapshot: a restored replica agrees
    restored = Client()
    restored.backend.store.restore(c.backend.store.snapshot())
    restored.backend.ms = c.backend.ms
    assert restored.ok("TransactWriteItems", TransactItems=counter, ClientRequestToken="tok-1") == {}
    assert restored.get("tab", k("ctr", "1"))["n"] == N(2)
    # ... and stays hidden from the API
    assert "\x00" not in "".join(c.ok("ListTables")["TableNames"])
    # after 10 minutes of commit time the token is new again
    c.backend.ms += C.TOKEN_TTL_MS + 1
    assert c.ok("TransactWriteItems", TransactItems=counter, ClientRequestToken="tok-1") == {}
    assert c.get("tab", k("ctr", "1"))["n"] == N(3)
    # and expired tokens are purged (tok-2 is gone, tok-1 was re-recorded)
    left = [pk for pk, _, _ in c.backend.store.scan_table(TOKEN_TABLE, c.backend.store.last_commit_ts)]
    assert left == [b"", b"tok-1"]


def test_transact_get_items_reads_one_timestamp(c):
    for i in range(5):
        c.put("tab", {**k("g", str(i)), "v": N(i)})
    store = c.backend.store
    seen_ts: list[int] = []
    real_get = store.get

    def spy(table, pk, sk, read_ts):
        if read_ts != hlc.MAX_TS:  # apply_command reads the latest version
            seen_ts.append(read_ts)
        return real_get(table, pk, sk, read_ts)

    store.get = spy  # type: ignore[method-assign]
    try:
        # a write lands during the freshness check: it is visible, to every item alike
        async def write_during_check():
            await c.service.handle("DynamoDB_20120810.PutItem",
                                   json.dumps({"TableName": "tab", "Item": {**k("g", "0"), "v": N(100)}}).encode())
        c.backend.during_fresh = write_during_check
        r = c.ok("TransactGetItems", TransactItems=[
            {"Get": {"TableName": "tab", "Key": k("g", str(i)), "ProjectionExpression": "v"}} for i in range(5)
        ] + [{"Get": {"TableName": "tab", "Key": k("g", "missing")}}])
    finally:
        del store.get
    assert r["Responses"] == [{"Item": {"v": N(100)}}] + [{"Item": {"v": N(i)}} for i in range(1, 5)] + [{}]
    assert len(seen_ts) == 6 and len(set(seen_ts)) == 1 and seen_ts[0] == store.last_commit_ts
    assert c.err("TransactGetItems", TransactItems=[
        {"Get": {"TableName": "tab", "Key": k("g", "1")}}, {"Get": {"TableName": "tab", "Key": k("g", "1")}}]) == \
        "Transaction request cannot include multiple operations on one item"
    assert "Value null at 'transactItems.1.member.get'" in c.err("TransactGetItems", TransactItems=[{}])


# ---------------------------------------------------------------------------
# Read timestamps and freshness checks
# ---------------------------------------------------------------------------

READS = [
    ("GetItem", "get_item", {"TableName": "tab", "Key": k("a", "1")}),
    ("Query", "query", {"TableName": "tab", "KeyConditionExpression": "pk = :p",
                        "ExpressionAttributeValues": {":p": S("a")}}),
    ("Scan", "scan", {"TableName": "tab"}),
    ("TransactGetItems", "transact_get_items", {"TransactItems": [{"Get": {"TableName": "tab", "Key": k("a", "1")}}]}),
    ("BatchGetItem", "batch_get_item", {"RequestItems": {"tab": {"Keys": [k("a", "1")]}}}),
]


@pytest.mark.parametrize("op, family, req", READS)
def test_read_ts_is_taken_after_the_freshness_check(op, family, req):
    cl = Client()
    cl.table("tab")
    cl.put("tab", {**k("a", "1"), "v": N(1)})
    cl.backend.events.clear()

    async def write_during_check():
        await cl.service.handle("DynamoDB_20120810.PutItem",
                                json.dumps({"TableName": "tab", "Item": {**k("a", "1"), "v": N(2)}}).encode())
    cl.backend.during_fresh = write_during_check
    r = cl.ok(op, **req)
    assert cl.backend.events == [("ensure_fresh", family), ("propose", "put"), ("read_ts",)]
    assert N(2) in _values_of(r)  # the write acknowledged during the check is seen


@pytest.mark.parametrize("op, family, req", READS)
def test_read_ts_before_check_bug_reads_the_old_snapshot(op, family, req):
    cl = Client(bugs=("read-ts-before-check",))
    cl.table("tab")
    cl.put("tab", {**k("a", "1"), "v": N(1)})
    cl.backend.events.clear()

    async def write_during_check():
        await cl.service.handle("DynamoDB_20120810.PutItem",
                                json.dumps({"TableName": "tab", "Item": {**k("a", "1"), "v": N(2)}}).encode())
    cl.backend.during_fresh = write_during_check
    r = cl.ok(op, **req)
    assert cl.backend.events == [("read_ts",), ("ensure_fresh", family), ("propose", "put")]
    assert N(1) in _values_of(r) and N(2) not in _values_of(r)  # the stale read of the bug class


def _values_of(resp: Any) -> list[Any]:
    out = []
    if isinstance(resp, dict):
        if set(resp) == {"N"}:
            return [resp]
        for v in resp.values():
            out += _values_of(v)
    elif isinstance(resp, list):
        for v in resp:
            out += _values_of(v)
    return out


BAD_READS = [
    ("GetItem", {"TableName": "nope", "Key": k("a", "1")}, "ResourceNotFoundException"),
    ("GetItem", {"TableName": "tab", "Key": {"pk": S("a")}}, "ValidationException"),
    ("GetItem", {"TableName": "tab", "Key": k("a", "1"), "ProjectionExpression": "#x"}, "ValidationException"),
    ("Query", {"TableName": "tab", "KeyConditionExpression": "pk = :p"}, "ValidationException"),
    ("Query", {"TableName": "tab", "KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": N(1)}},
     "ValidationException"),
    ("Query", {"TableName": "tab", "KeyConditionExpression": "pk = :p", "Limit": 0,
               "ExpressionAttributeValues": {":p": S("a")}}, "ValidationException"),
    ("Scan", {"TableName": "tab", "FilterExpression": "a >"}, "ValidationException"),
    ("Scan", {"TableName": "tab", "ExclusiveStartKey": {"pk": S("a")}}, "ValidationException"),
    ("Scan", {"TableName": "tab", "Limit": "3"}, "SerializationException"),
    ("TransactGetItems", {"TransactItems": [{"Get": {"TableName": "nope", "Key": k("a", "1")}}]},
     "ResourceNotFoundException"),
    ("BatchGetItem", {"RequestItems": {"tab": {"Keys": []}}}, "ValidationException"),
]


@pytest.mark.parametrize("op, req, code", BAD_READS)
def test_validation_errors_are_answered_before_the_freshness_check(op, req, code):
    cl = Client()
    cl.table("tab")
    cl.backend.events.clear()
    cl.backend.fresh_error = internal_server_error("lease check timed out")
    cl.err(op, code, **req)
    assert cl.backend.events == []  # no freshness check, no read timestamp: a 4xx never turns into a 500


@pytest.mark.parametrize("op, family, req", READS)
def test_failed_freshness_check_is_a_500(op, family, req):
    cl = Client()
    cl.table("tab")
    cl.backend.fresh_error = internal_server_error("lease check timed out")
    assert cl.err(op, "InternalServerError", status=500, **req) == "lease check timed out"
    cl.backend.fresh_error = asyncio.TimeoutError()
    cl.err(op, "InternalServerError", status=500, **req)


@pytest.mark.parametrize("op, family, req", READS)
def test_table_deleted_during_the_freshness_check(op, family, req):
    cl = Client()
    cl.table("tab")

    async def drop():
        await cl.service.handle("DynamoDB_20120810.DeleteTable", b'{"TableName": "tab"}')
    cl.backend.during_fresh = drop
    cl.err(op, "ResourceNotFoundException", **req)


def test_write_errors_from_propose():
    cl = Client()
    cl.table("tab")

    async def not_leader(command, group=0):
        raise DynamoError("ServiceUnavailable", "not the leader", 503)
    cl.backend.propose = not_leader  # type: ignore[method-assign]
    cl.err("PutItem", "ServiceUnavailable", status=503, TableName="tab", Item=k("a", "1"))

    async def broken(command, group=0):
        raise RuntimeError("boom")
    cl.backend.propose = broken  # type: ignore[method-assign]
    cl.err("PutItem", "InternalServerError", status=500, TableName="tab", Item=k("a", "1"))


# ---------------------------------------------------------------------------
# Protocol-level errors
# ---------------------------------------------------------------------------


def test_protocol_errors(c):
    assert c.raw("DynamoDB_20120810.GetItem", b"{not json")[1]["__type"] == \
        "com.amazon.coral.service#SerializationException"
    assert c.raw("DynamoDB_20120810.GetItem", b"[]")[1]["__type"].endswith("#SerializationException")
    assert c.raw("DynamoDB_20120810.GetItem", b"\xff\xfe\x00")[0] == 400
    assert c.raw("DynamoDB_20120810.Frobnicate", b"{}") == \
        (400, {"__type": "com.amazon.coral.service#UnknownOperationException"})
    assert c.raw(None, b"{}")[1]["__type"].endswith("#UnknownOperationException")
    assert c.raw("DynamoDB_20120810.ListTables", b"")[0] == 200
    assert c.raw("DynamoDB_20120810.Scan", b'{"TableName": "tab", "Limit": NaN}')[1]["__type"].endswith(
        "#SerializationException")
    st, r = c.raw("DynamoDB_20120810.PutItem", b'{"TableName": "tab", "Item": {"pk": {"S": "\\ud800"}, '
                                              b'"sk": {"S": "x"}}}')
    assert st == 400 and r["__type"].endswith("#SerializationException")
    # a surrogate pair is a real character
    st, r = c.raw("DynamoDB_20120810.PutItem", b'{"TableName": "tab", "Item": {"pk": {"S": "\\ud83d\\ude00"}, '
                                              b'"sk": {"S": "x"}}}')
    assert st == 200
    assert c.get("tab", {"pk": S("\U0001F600"), "sk": S("x")}) is not None
    assert c.err("GetItem", TableName="tab") == \
        "1 validation error detected: Value null at 'key' failed to satisfy constraint: Member must not be null"
    assert c.err("GetItem", "SerializationException", TableName=5, Key=k("a", "b")) == \
        "NUMBER_VALUE cannot be converted to String"
    assert c.err("GetItem", "SerializationException", TableName="tab", Key=[]) == \
        "Start of list found where not expected"
    assert "enum value set" in c.err("PutItem", TableName="tab", Item=k("a", "b"), ReturnValues="SOME")
    assert "legacy parameter Expected" in c.err("PutItem", TableName="tab", Item=k("a", "b"),
                                                Expected={"pk": {"Exists": False}})


# ---------------------------------------------------------------------------
# apply_command: determinism and robustness
# ---------------------------------------------------------------------------


def _rich_session() -> Client:
    cl = Client()
    cl.table("tab")
    cl.table("hsh", range_key=None, hash_type="N")
    rnd = random.Random(7)
    for i in range(60):
        pk, sk = f"p{rnd.randrange(5)}", f"s{rnd.randrange(8)}"
        choice = rnd.randrange(7)
        if choice == 0:
            cl.call("PutItem", TableName="tab", Item={**k(pk, sk), "v": N(i), "tags": {"SS": ["a", "b", f"t{i}"]},
                                                      "m": {"M": {"x": N(i), "y": {"L": [S("q")]}}}})
        elif choice == 1:
            cl.call("UpdateItem", TableName="tab", Key=k(pk, sk), ReturnValues="UPDATED_NEW",
                    UpdateExpression="ADD n :one, tags :t SET m = if_not_exists(m, :m) REMOVE gone",
                    ConditionExpression="attribute_not_exists(v) OR v < :lim",
                    ExpressionAttributeValues={":one": N(1), ":t": {"SS": [f"u{i}", "z"]},
                                               ":m": {"M": {"fresh": {"BOOL": True}}}, ":lim": N(40)})
        elif choice == 2:
            cl.call("DeleteItem", TableName="tab", Key=k(pk, sk), ReturnValues="ALL_OLD",
                    ConditionExpression="attribute_exists(n)")
        elif choice == 3:
            cl.call("BatchWriteItem", RequestItems={
                "hsh": [{"PutRequest": {"Item": {"pk": N(rnd.randrange(10)), "v": N(i)}}}],
                "tab": [{"DeleteRequest": {"Key": k(pk, sk)}}]})
        elif choice == 4:
            cl.call("TransactWriteItems", ClientRequestToken=f"tok{rnd.randrange(4)}", TransactItems=[
                {"Update": {"TableName": "tab", "Key": k(pk, sk), "UpdateExpression": "ADD n :one",
                            "ExpressionAttributeValues": {":one": N(1)}}},
                {"ConditionCheck": {"TableName": "hsh", "Key": {"pk": N(1)},
                                    "ConditionExpression": "attribute_exists(pk)",
                                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}])
        elif choice == 5:
            cl.call("TransactWriteItems", TransactItems=[
                {"Put": {"TableName": "tab", "Item": {**k(pk, sk), "v": N(i)}}},
                {"Delete": {"TableName": "hsh", "Key": {"pk": N(rnd.randrange(10))}}}])
        else:
            cl.backend.ms += 61_000 * rnd.randrange(3)
    cl.call("DeleteTable", TableName="hsh")
    return cl


def test_apply_command_is_deterministic():
    cl = _rich_session()
    cmds = cl.backend.commands
    assert len(cmds) > 50
    results = []
    snaps = []
    for _ in range(2):
        store = MVCCStore()
        results.append([apply_command(store, ts, copy.deepcopy(cmd)) for ts, cmd in cmds])
        snaps.append(store.snapshot())
    assert results[0] == results[1]
    assert snaps[0] == snaps[1] == cl.backend.store.snapshot()
    assert any("error" in r for r in results[0]) and any("error" not in r for r in results[0])


def test_apply_command_is_independent_of_hash_seed(tmp_path):
    cmds = _rich_session().backend.commands
    path = tmp_path / "cmds.msgpack"
    path.write_bytes(msgpack.packb(cmds, use_bin_type=True))
    script = (
        "import sys, hashlib, msgpack\n"
        "from system.mvcc import MVCCStore\n"
        "from system.dynamo.commands import apply_command\n"
        "cmds = msgpack.unpackb(open(sys.argv[1], 'rb').read(), raw=False)\n"
        "s = MVCCStore()\n"
        "rs = [apply_command(s, ts, c) for ts, c in cmds]\n"
        "print(hashlib.sha256(s.snapshot() + msgpack.packb(rs)).hexdigest())\n"
    )
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run([sys.executable, "-c", script, str(path)], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=60, check=True)
        digests.add(out.stdout.strip())
    store = MVCCStore()
    rs = [apply_command(store, ts, c) for ts, c in msgpack.unpackb(path.read_bytes(), raw=False)]
    digests.add(hashlib.sha256(store.snapshot() + msgpack.packb(rs)).hexdigest())
    assert len(digests) == 1


def test_apply_command_survives_garbage_and_clamps_timestamps():
    store = MVCCStore()
    ts = hlc.pack(T0_MS)
    schema = {"KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
              "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}]}
    assert apply_command(store, ts, {"op": "create_table", "table": "t", "schema": schema}) == {"created_ts": ts}
    before = store.snapshot()
    for bad in (None, [], {}, {"op": "nope"}, {"op": "put"}, {"op": "put", "table": "t", "item": 5},
                {"op": "put", "table": "t", "item": {"x": S("no key")}},
                {"op": "update", "table": "t", "key": {"pk": S("a")}, "update": "SET = nonsense"},
                {"op": "transact_write", "items": [{"kind": "zap", "table": "t", "key": {"pk": S("a")}}]},
                {"op": "transact_write", "items": None, "token": "x"},
                {"op": "batch_write", "writes": [{"table": "t", "put": {"pk": S("a")}}, {"table": "zz"}]},
                {"op": "create_table", "table": "u", "schema": {}},
                {"op": "delete_table", "table": C.TOKEN_TABLE}):
        r = apply_command(store, ts + 100, bad)
        assert "error" in r and r["status"] in (400, 500), (bad, r)
        assert C.result_error(r).to_body() == r["error"]
    assert apply_command(store, "soon", {"op": "delete_table", "table": "t"})["status"] == 500
    assert store.snapshot() == before
    # a commit timestamp that does not advance is moved just past the last one
    put = {"op": "put", "table": "t", "item": {"pk": S("a"), "v": N(1)}}
    assert apply_command(store, ts, put) == {}
    assert store.last_commit_ts == ts + 1
    put2 = {"op": "put", "table": "t", "item": {"pk": S("a"), "v": N(2)}, "rv": "ALL_OLD"}
    assert apply_command(store, ts - 5, put2) == {"Attributes": {"pk": S("a"), "v": N(1)}}
    assert store.last_commit_ts == ts + 2
    assert store.get("t", b"a", b"", hlc.MAX_TS) == {"pk": S("a"), "v": N(2)}


# ---------------------------------------------------------------------------
# Fuzz: randomly broken requests
# ---------------------------------------------------------------------------

GOOD = {
    "PutItem": {"TableName": "fzz", "Item": {"pk": S("a"), "sk": N(1), "v": {"L": [S("x"), {"M": {"n": N(2)}}]}},
                "ConditionExpression": "attribute_not_exists(#v) OR #v <> :x", "ExpressionAttributeNames": {"#v": "v"},
                "ExpressionAttributeValues": {":x": S("y")}, "ReturnValues": "ALL_OLD"},
    "GetItem": {"TableName": "fzz", "Key": {"pk": S("a"), "sk": N(1)}, "ProjectionExpression": "v[1].n",
                "ConsistentRead": True},
    "UpdateItem": {"TableName": "fzz", "Key": {"pk": S("a"), "sk": N(1)},
                   "UpdateExpression": "SET c = if_not_exists(c, :z) + :one ADD s :ss",
                   "ConditionExpression": "size(v) < :ten", "ReturnValues": "UPDATED_NEW",
                   "ExpressionAttributeValues": {":z": N(0), ":one": N(1), ":ss": {"SS": ["q"]}, ":ten": N(10)}},
    "DeleteItem": {"TableName": "fzz", "Key": {"pk": S("b"), "sk": N(2)}, "ConditionExpression": "attribute_exists(pk)"},
    "Query": {"TableName": "fzz", "KeyConditionExpression": "pk = :p AND sk BETWEEN :a AND :b",
              "FilterExpression": "contains(s, :q)", "ExpressionAttributeValues": {":p": S("a"), ":a": N(0),
                                                                                   ":b": N(9), ":q": S("q")},
              "Limit": 5, "ScanIndexForward": False, "ExclusiveStartKey": {"pk": S("a"), "sk": N(5)}},
    "Scan": {"TableName": "fzz", "Limit": 3, "Segment": 0, "TotalSegments": 2, "FilterExpression": "c > :z",
             "ExpressionAttributeValues": {":z": N(0)}, "ProjectionExpression": "pk, sk"},
    "BatchGetItem": {"RequestItems": {"fzz": {"Keys": [{"pk": S("a"), "sk": N(1)}], "ProjectionExpression": "pk"}}},
    "BatchWriteItem": {"RequestItems": {"fzz": [{"PutRequest": {"Item": {"pk": S("c"), "sk": N(3)}}},
                                              {"DeleteRequest": {"Key": {"pk": S("d"), "sk": N(4)}}}]}},
    "TransactWriteItems": {"ClientRequestToken": "t1", "TransactItems": [
        {"Put": {"TableName": "fzz", "Item": {"pk": S("e"), "sk": N(5)}}},
        {"Update": {"TableName": "fzz", "Key": {"pk": S("a"), "sk": N(1)}, "UpdateExpression": "REMOVE c"}},
        {"ConditionCheck": {"TableName": "fzz", "Key": {"pk": S("a"), "sk": N(2)},
                            "ConditionExpression": "attribute_not_exists(pk)"}}]},
    "TransactGetItems": {"TransactItems": [{"Get": {"TableName": "fzz", "Key": {"pk": S("a"), "sk": N(1)}}}]},
    "DescribeTable": {"TableName": "fzz"},
    "ListTables": {"Limit": 5, "ExclusiveStartTableName": "abc"},
    "CreateTable": {"TableName": "ggg", "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                    "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "B"}],
                    "BillingMode": "PAY_PER_REQUEST"},
}

JUNK: list[Any] = [None, 0, -1, 1.5, 10**40, True, False, "", "x", "#", ":", "\x00", "é" * 3, "a" * 5000,
                   [], [1], {}, {"S": "x"}, {"N": "1e400"}, {"N": "abc"}, {"B": "!!"}, {"SS": []}, {"SS": ["a", "a"]},
                   {"L": [{"L": [{"L": [{}]}]}]}, {"M": {"": {"S": ""}}}, {"NULL": False}, {"BOOL": "yes"},
                   {"S": "x", "N": "1"}, [[[[[]]]]], "SET", "attribute_exists(", "a = :", "#a.#b[", "pk = :p OR",
                   "(((((((a)))))))", ")", "size(size(a))", "begins_with(a)", "ALL_NEW", "COUNT"]


def _mutate(rnd: random.Random, value: Any, depth: int = 0) -> Any:
    """One random structural change somewhere inside ``value``."""
    if isinstance(value, dict) and value and rnd.random() < 0.8:
        key = rnd.choice(list(value))
        out = dict(value)
        roll = rnd.random()
        if roll < 0.1:
            del out[key]
        elif roll < 0.17:
            out[rnd.choice(["Extra", "#n", ":v", "", "S", "N", "L"])] = rnd.choice(JUNK)
        elif roll < 0.35 or depth > 6:
            out[key] = copy.deepcopy(rnd.choice(JUNK))
        else:
            out[key] = _mutate(rnd, value[key], depth + 1)
        return out
    if isinstance(value, list) and value and rnd.random() < 0.8:
        out = list(value)
        i = rnd.randrange(len(out))
        roll = rnd.random()
        if roll < 0.15:
            del out[i]
        elif roll < 0.25:
            out = out * rnd.choice([2, 30, 120])
        elif roll < 0.45:
            out[i] = copy.deepcopy(rnd.choice(JUNK))
        else:
            out[i] = _mutate(rnd, out[i], depth + 1)
        return out
    if isinstance(value, str) and value and rnd.random() < 0.5:
        i = rnd.randrange(len(value) + 1)
        return value[:i] + rnd.choice(["(", ")", " AND ", ",", "#", ":", "[0]", ".", "\ufffd", "\x00", ""]) + value[i:]
    return copy.deepcopy(rnd.choice(JUNK))


def test_fuzz_broken_requests_then_a_good_one():
    cl = Client()
    cl.table("fzz", range_type="N")
    cl.put("fzz", {"pk": S("a"), "sk": N(1), "v": {"L": [S("x")]}})
    rnd = random.Random(12345)
    ops = sorted(GOOD)
    statuses: dict[int, int] = {}
    for i in range(3000):
        roll = rnd.random()
        op = rnd.choice(ops)
        target = "DynamoDB_20120810." + op
        if roll < 0.05:
            body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(40)))
        elif roll < 0.1:
            body = json.dumps(GOOD[op]).encode()[: rnd.randrange(60)]
        elif roll < 0.13:
            target = rnd.choice([None, "", "DynamoDB_20120810.", "DynamoDB_20120810.getitem",
                                 "DynamoDB_20120811.GetItem", op])
            body = b"{}"
        elif roll < 0.16:
            body = (b"[" * 5000) + (b"]" * 5000)
        else:
            req = GOOD[op]
            for _ in range(rnd.choice([1, 1, 1, 2, 3])):
                req = _mutate(rnd, req)
            body = json.dumps(req).encode() if isinstance(req, dict) else json.dumps(req).encode()
        status, resp = cl.raw(target, body)
        statuses[status] = statuses.get(status, 0) + 1
        assert isinstance(resp, dict)
        if status != 200:
            assert 400 <= status < 600 and "#" in resp["__type"], (op, body[:300], status, resp)
            assert status != 500, (op, body[:500], resp)  # no input may reach an unexpected exception
    assert statuses.get(400, 0) > 2000
    # the service still answers good requests correctly
    cl.ok("PutItem", TableName="fzz", Item={"pk": S("after"), "sk": N(1), "v": S("fine")})
    assert cl.get("fzz", {"pk": S("after"), "sk": N(1)}) == {"pk": S("after"), "sk": N(1), "v": S("fine")}
    for op in ops:
        if op not in ("CreateTable",):
            assert cl.call(op, **GOOD[op])[0] in (200, 400), op


# ---------------------------------------------------------------------------
# boto3 / botocore: the shapes boto3 sends and reads
# ---------------------------------------------------------------------------

botocore = pytest.importorskip("botocore")


class _Raw:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **kw: Any):
        yield self.data


@pytest.fixture(scope="module")
def boto():
    """A boto3 client and resource whose HTTP sends are answered in-process
    by a DynamoService (botocore's serializer, signer and parser all run)."""
    import boto3
    from botocore.awsrequest import AWSResponse
    from botocore.config import Config

    cl = Client()
    sent: list[tuple[str, dict[str, Any]]] = []

    def before_send(request, **kw):
        target = request.headers["X-Amz-Target"]
        target = target.decode() if isinstance(target, bytes) else target
        body = request.body if isinstance(request.body, bytes) else (request.body or "").encode()
        sent.append((target, json.loads(body)))
        status, resp = cl.raw(target, body)
        data = json.dumps(resp).encode()
        return AWSResponse(request.url, status, {"Content-Type": "application/x-amz-json-1.0",
                                                 "x-amzn-RequestId": "req-1"}, _Raw(data))

    session = boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    cfg = Config(retries={"total_max_attempts": 1})
    client = session.client("dynamodb", endpoint_url="http://127.0.0.1:9", config=cfg)
    resource = session.resource("dynamodb", endpoint_url="http://127.0.0.1:9", config=cfg)
    for cli in (client, resource.meta.client):
        cli.meta.events.register("before-send.dynamodb", before_send)
    return client, resource, cl, sent


def test_botocore_serialised_requests_are_accepted(boto):
    client, _, cl, sent = boto
    model = client.meta.service_model
    serializer = client._serializer
    requests = {
        "CreateTable": {"TableName": "ser", "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                                                          {"AttributeName": "sk", "KeyType": "RANGE"}],
                        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                                 {"AttributeName": "sk", "AttributeType": "B"}],
                        "ProvisionedThroughput": {"ReadCapacityUnits": 1, "WriteCapacityUnits": 1}},
        "PutItem": {"TableName": "ser", "Item": {"pk": {"S": "a"}, "sk": {"B": b"\x00\x01"}, "bs": {"BS": [b"x"]},
                                                 "n": {"N": "1.50"}, "t": {"BOOL": False}}},
        "GetItem": {"TableName": "ser", "Key": {"pk": {"S": "a"}, "sk": {"B": b"\x00\x01"}}, "ConsistentRead": True},
        "Query": {"TableName": "ser", "KeyConditionExpression": "pk = :p AND begins_with(sk, :b)",
                  "ExpressionAttributeValues": {":p": {"S": "a"}, ":b": {"B": b"\x00"}}, "Limit": 10},
    }
    for op, params in requests.items():
        req = serializer.serialize_to_request(params, model.operation_model(op))
        assert req["headers"]["X-Amz-Target"] == "DynamoDB_20120810." + op
        assert req["headers"]["Content-Type"] == "application/x-amz-json-1.0"
        status, resp = cl.raw(req["headers"]["X-Amz-Target"], req["body"])
        assert status == 200, (op, resp)
    assert resp["Items"][0]["sk"] == {"B": "AAE="} and resp["Items"][0]["n"] == {"N": "1.5"}


def test_boto3_client_round_trip_and_errors(boto):
    from botocore.exceptions import ClientError
    client, _, _, _ = boto
    d = client.create_table(TableName="bt3", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                                       {"AttributeName": "sk", "KeyType": "RANGE"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                                  {"AttributeName": "sk", "AttributeType": "N"}],
                            BillingMode="PAY_PER_REQUEST")["TableDescription"]
    assert d["TableStatus"] == "ACTIVE" and d["CreationDateTime"].year >= 2026
    assert client.describe_table(TableName="bt3")["Table"]["KeySchema"][1]["KeyType"] == "RANGE"
    client.get_waiter("table_exists").wait(TableName="bt3")
    for i in range(7):
        client.put_item(TableName="bt3", Item={"pk": {"S": "p"}, "sk": {"N": str(i)}, "v": {"B": bytes([i])}})
    assert client.get_item(TableName="bt3", Key={"pk": {"S": "p"}, "sk": {"N": "3"}})["Item"]["v"] == {"B": b"\x03"}
    pages = list(client.get_paginator("query").paginate(
        TableName="bt3", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p"}},
        PaginationConfig={"PageSize": 3}))
    assert [len(p["Items"]) for p in pages] == [3, 3, 1]
    assert sum(p["Count"] for p in client.get_paginator("scan").paginate(
        TableName="bt3", PaginationConfig={"PageSize": 2})) == 7
    with pytest.raises(ClientError) as ei:
        client.put_item(TableName="bt3", Item={"pk": {"S": "p"}, "sk": {"N": "1"}},
                        ConditionExpression="attribute_not_exists(pk)", ReturnValuesOnConditionCheckFailure="ALL_OLD")
    e = ei.value
    assert e.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert e.response["Error"]["Message"] == "The conditional request failed"
    assert e.response["Item"]["sk"] == {"N": "1"}
    assert isinstance(e, client.exceptions.ConditionalCheckFailedException)
    with pytest.raises(client.exceptions.TransactionCanceledException) as ti:
        client.transact_write_items(TransactItems=[
            {"Put": {"TableName": "bt3", "Item": {"pk": {"S": "new"}, "sk": {"N": "1"}}}},
            {"ConditionCheck": {"TableName": "bt3", "Key": {"pk": {"S": "p"}, "sk": {"N": "2"}},
                                "ConditionExpression": "attribute_not_exists(pk)",
                                "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}}])
    reasons = ti.value.response["CancellationReasons"]
    assert reasons[0] == {"Code": "None"}
    assert reasons[1]["Code"] == "ConditionalCheckFailed" and reasons[1]["Item"]["v"] == {"B": b"\x02"}
    assert "ConditionalCheckFailed" in ti.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_table(TableName="missing")
    with pytest.raises(client.exceptions.ResourceInUseException):
        client.create_table(TableName="bt3", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
    with pytest.raises(ClientError) as ve:
        client.update_item(TableName="bt3", Key={"pk": {"S": "p"}, "sk": {"N": "1"}}, UpdateExpression="SET = x")
    assert ve.value.response["Error"]["Code"] == "ValidationException"
    assert ve.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    client.transact_write_items(ClientRequestToken="boto-token", TransactItems=[
        {"Update": {"TableName": "bt3", "Key": {"pk": {"S": "p"}, "sk": {"N": "1"}},
                    "UpdateExpression": "ADD c :one", "ExpressionAttributeValues": {":one": {"N": "1"}}}}])
    with pytest.raises(client.exceptions.IdempotentParameterMismatchException):
        client.transact_write_items(ClientRequestToken="boto-token", TransactItems=[
            {"Update": {"TableName": "bt3", "Key": {"pk": {"S": "p"}, "sk": {"N": "1"}},
                        "UpdateExpression": "ADD c :two", "ExpressionAttributeValues": {":two": {"N": "2"}}}}])
    r = client.transact_get_items(TransactItems=[{"Get": {"TableName": "bt3", "Key": {"pk": {"S": "p"},
                                                                                      "sk": {"N": "1"}}}},
                                                 {"Get": {"TableName": "bt3", "Key": {"pk": {"S": "x"},
                                                                                      "sk": {"N": "1"}}}}])
    assert r["Responses"][0]["Item"]["c"] == {"N": "1"} and r["Responses"][1] == {}
    r = client.batch_get_item(RequestItems={"bt3": {"Keys": [{"pk": {"S": "p"}, "sk": {"N": str(i)}}
                                                            for i in range(3)]}})
    assert len(r["Responses"]["bt3"]) == 3 and r["UnprocessedKeys"] == {}
    assert client.batch_write_item(RequestItems={"bt3": [{"DeleteRequest": {"Key": {"pk": {"S": "p"},
                                                                                   "sk": {"N": "6"}}}}]}
                                   )["UnprocessedItems"] == {}
    assert "bt3" in client.list_tables()["TableNames"]
    assert client.delete_table(TableName="bt3")["TableDescription"]["TableStatus"] == "DELETING"


def test_boto3_resource_with_condition_builders(boto):
    from boto3.dynamodb.conditions import Attr, Key
    from decimal import Decimal
    _, resource, _, sent = boto
    table = resource.create_table(TableName="res", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                                              {"AttributeName": "sk", "KeyType": "RANGE"}],
                                  AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                                        {"AttributeName": "sk", "AttributeType": "S"}],
                                  BillingMode="PAY_PER_REQUEST")
    with table.batch_writer() as bw:
        for i in range(30):
            bw.put_item(Item={"pk": "set", "sk": f"item-{i:03d}", "n": i, "tags": {"a", "b"},
                              "doc": {"x": [1, "two", None, True]}})
    r = table.query(KeyConditionExpression=Key("pk").eq("set") & Key("sk").between("item-005", "item-009"),
                    FilterExpression=Attr("n").gt(6), ScanIndexForward=False)
    assert [i["sk"] for i in r["Items"]] == ["item-009", "item-008", "item-007"]
    assert r["Items"][0]["doc"] == {"x": [Decimal(1), "two", None, True]} and r["Items"][0]["tags"] == {"a", "b"}
    assert sent[-1][1]["ExpressionAttributeNames"]  # boto3's builder sends #n0-style names
    r = table.query(KeyConditionExpression=Key("pk").eq("set") & Key("sk").begins_with("item-01"))
    assert r["Count"] == 10
    table.update_item(Key={"pk": "set", "sk": "item-000"}, UpdateExpression="SET n = n + :d",
                      ConditionExpression=Attr("n").eq(0), ExpressionAttributeValues={":d": Decimal("0.5")})
    assert table.get_item(Key={"pk": "set", "sk": "item-000"})["Item"]["n"] == Decimal("0.5")
    r = table.scan(FilterExpression=Attr("n").lt(3) & Attr("tags").contains("a"), ProjectionExpression="sk")
    assert sorted(i["sk"] for i in r["Items"]) == ["item-000", "item-001", "item-002"]


# -- several Raft groups -------------------------------------------------------------


def _route(c: Client, op: str, **req: Any) -> int | None:
    home, decoded = c.service.route(op, json.dumps(req).encode())
    assert decoded == req
    return home


def test_items_of_a_sharded_store_live_in_their_groups_and_read_back_whole():
    """Four groups: each partition's items land in the store of the group
    the router names, every read touches exactly the groups it needs, and
    the answers are those of one group holding everything."""
    c, one = Client(groups=4), Client()
    for cl in (c, one):
        cl.table()
        for p in range(24):
            for q in range(2):
                cl.put("tab", {**k(f"p{p:02}", str(q)), "v": N(p * 10 + q)})
    by_group = [{pk for pk, _, _ in st.scan_table("tab", st.last_commit_ts)}
                if st.has_table("tab") else set() for st in c.backend.stores]
    assert all(by_group), "24 partitions over 4 groups leave none empty"
    for g, pks in enumerate(by_group):
        assert all(c.backend.group_of("tab", pk) == g for pk in pks)
    assert sum(map(len, by_group)) == 24
    scan = {"TableName": "tab"}
    assert c.ok("Scan", **scan) == one.ok("Scan", **scan)          # merged in key order
    c.backend.events.clear()
    assert c.get("tab", k("p07", "1"))["v"] == N(71)
    g7 = c.backend.group_of("tab", b"p07")
    assert c.backend.events[0] == ("ensure_fresh", "get_item", (g7,))
    q = {"TableName": "tab", "KeyConditionExpression": "pk = :p",
         "ExpressionAttributeValues": {":p": S("p07")}}
    assert c.ok("Query", **q) == one.ok("Query", **q)
    assert _route(c, "Query", **q) == g7 == _route(c, "GetItem", TableName="tab", Key=k("p07", "1"))
    keys = [k(f"p{p:02}", "0") for p in range(0, 24, 3)]
    tg = {"TransactItems": [{"Get": {"TableName": "tab", "Key": key}} for key in keys]}
    c.backend.events.clear()
    assert c.ok("TransactGetItems", **tg) == one.ok("TransactGetItems", **tg)
    wanted = {c.backend.group_of("tab", key["pk"]["S"].encode()) for key in keys}
    # one check per group touched, then each group's read timestamp
    assert c.backend.events == [("ensure_fresh", "transact_get_items", tuple(sorted(wanted))),
                                *[("read_ts",)] * len(wanted)] and len(wanted) > 1
    assert _route(c, "TransactGetItems", **tg) is None             # several groups: served here
    assert _route(c, "Scan", **scan) is None
    assert _route(c, "DescribeTable", TableName="tab") == 0
    assert c.ok("DescribeTable", TableName="tab")["Table"]["ItemCount"] == 48


def test_a_batch_over_groups_is_one_command_per_group_and_a_transaction_keeps_to_one():
    c = Client(groups=4)
    c.table()
    items = [{**k(f"b{i}", "0"), "v": N(i)} for i in range(12)]
    c.backend.events.clear()
    c.ok("BatchWriteItem", RequestItems={"tab": [{"PutRequest": {"Item": it}} for it in items]})
    groups = {c.backend.group_of("tab", f"b{i}".encode()) for i in range(12)}
    assert sorted(e[2] for e in c.backend.events) == sorted(groups) and len(groups) > 1
    assert all(c.get("tab", k(f"b{i}", "0"))["v"] == N(i) for i in range(12))
    # one group: a transaction as ever; two groups: refused, naming them
    same = [i for i in range(12) if c.backend.group_of("tab", f"b{i}".encode())
            == c.backend.group_of("tab", b"b0")]
    other = next(i for i in range(12) if i not in same)
    upd = lambda i: {"Update": {"TableName": "tab", "Key": k(f"b{i}", "0"),  # noqa: E731
                                "UpdateExpression": "SET v = :x",
                                "ExpressionAttributeValues": {":x": N(-1)}}}
    c.ok("TransactWriteItems", TransactItems=[upd(i) for i in same])
    assert all(c.get("tab", k(f"b{i}", "0"))["v"] == N(-1) for i in same)
    msg = c.err("TransactWriteItems", TransactItems=[upd(same[0]), upd(other)])
    assert "several Raft groups" in msg
    assert c.get("tab", k(f"b{other}", "0"))["v"] == N(other)


def test_a_table_made_again_starts_empty_in_every_group():
    """A group keeps the items of a deleted table until it sees a write to
    the new table of that name; reads never show them."""
    c = Client(groups=3)
    c.table()
    for i in range(9):
        c.put("tab", {**k(f"d{i}", "0"), "v": N(i)})
    c.ok("DeleteTable", TableName="tab")
    c.table()
    assert c.ok("Scan", TableName="tab")["Items"] == []
    assert c.get("tab", k("d4", "0")) is None
    c.put("tab", {**k("d4", "0"), "v": N(99)})
    assert c.ok("Scan", TableName="tab")["Items"] == [{**k("d4", "0"), "v": N(99)}]
    assert c.ok("DescribeTable", TableName="tab")["Table"]["ItemCount"] == 1
