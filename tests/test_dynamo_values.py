"""system.dynamo.values and system.dynamo.errors: wire AttributeValues,
numbers, equality/ordering, item size, keys and the order-preserving key
encoding."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from system.dynamo import errors as E
from system.dynamo import values as V
from system.dynamo.errors import DynamoError


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def raises(fn, *args, type_name="ValidationException", **kw) -> str:
    with pytest.raises(DynamoError) as ei:
        fn(*args, **kw)
    assert ei.value.type_name == type_name, ei.value
    return ei.value.message


# -- errors -------------------------------------------------------------------------


def test_error_bodies_have_dynamodb_shape_and_botocore_parses_the_code():
    v = E.validation("bad")
    assert v.status == 400
    assert v.to_body() == {"__type": "com.amazon.coral.validate#ValidationException", "message": "bad"}
    assert json.loads(v.to_json()) == v.to_body()
    ccf = E.conditional_check_failed()
    assert ccf.to_body() == {"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
                             "message": "The conditional request failed"}
    old = {"pk": {"S": "a"}}
    assert E.conditional_check_failed(old).to_body()["Item"] == old
    assert E.internal_server_error().status == 500 and E.internal_server_error().retryable
    assert E.service_unavailable().status == 503
    assert E.resource_not_found().message == "Requested resource not found"
    assert E.serialization("x").full_type == "com.amazon.coral.service#SerializationException"
    assert E.unknown_operation().to_body() == {"__type": "com.amazon.coral.service#UnknownOperationException"}
    # botocore's JSON error parser takes the code after '#'
    for err in (v, ccf, E.resource_in_use("x"), E.internal_server_error()):
        assert err.to_body()["__type"].rsplit("#", 1)[1] == err.type_name


def test_transaction_canceled_lists_reasons_in_request_order():
    reasons = [E.cancellation_reason(), E.cancellation_reason("ConditionalCheckFailed",
                                                              E.CONDITIONAL_REQUEST_FAILED)]
    err = E.transaction_canceled(reasons)
    body = err.to_body()
    assert body["__type"].endswith("#TransactionCanceledException")
    assert body["Message"] == ("Transaction cancelled, please refer cancellation reasons for specific reasons "
                               "[None, ConditionalCheckFailed]")
    assert body["CancellationReasons"] == [{"Code": "None"}, {"Code": "ConditionalCheckFailed",
                                                              "Message": "The conditional request failed"}]


# -- shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize("av", [
    {"S": "x"}, {"S": ""}, {"N": "12.5"}, {"B": b64(b"\x00\x01")}, {"B": ""}, {"BOOL": False},
    {"NULL": True}, {"M": {}}, {"L": []}, {"SS": ["a", "b", ""]}, {"NS": ["1", "2"]},
    {"BS": [b64(b"a"), b64(b"b")]}, {"M": {"a": {"L": [{"N": "1"}, {"M": {"b": {"S": "c"}}}]}}},
])
def test_valid_values_round_trip(av):
    assert V.validate_value(av) == av


def test_wrong_shapes():
    assert raises(V.validate_value, {}) == ("Supplied AttributeValue is empty, must contain exactly one of the "
                                            "supported datatypes")
    assert raises(V.validate_value, {"S": None}).startswith("Supplied AttributeValue is empty")
    assert raises(V.validate_value, {"S": "a", "N": "1"}) == (
        "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported "
        "datatypes")
    assert raises(V.validate_value, {"N": 5}, type_name="SerializationException") == \
        "NUMBER_VALUE cannot be converted to String"
    raises(V.validate_value, {"S": {"x": 1}}, type_name="SerializationException")
    raises(V.validate_value, {"BOOL": "yes"}, type_name="SerializationException")
    raises(V.validate_value, {"SS": "a"}, type_name="SerializationException")
    raises(V.validate_value, "x", type_name="SerializationException")
    raises(V.validate_value, {"B": "not base64!"}, type_name="SerializationException")
    raises(V.validate_item, [], type_name="SerializationException")


def test_null_false_is_stored_as_null_true():
    assert V.validate_value({"NULL": False}) == {"NULL": True}


def test_empty_sets_and_duplicates():
    assert raises(V.validate_value, {"SS": []}) == \
        "One or more parameter values were invalid: An string set  may not be empty"
    assert raises(V.validate_value, {"NS": []}) == \
        "One or more parameter values were invalid: An number set  may not be empty"
    assert raises(V.validate_value, {"BS": []}) == \
        "One or more parameter values were invalid: An binary set  may not be empty"
    assert raises(V.validate_value, {"SS": ["a", "a"]}) == \
        "One or more parameter values were invalid: Input collection [a, a] contains duplicates."
    # numerically equal numbers are duplicates; so are equal bytes
    assert "contains duplicates" in raises(V.validate_value, {"NS": ["1", "1.0"]})
    assert "contains duplicates" in raises(V.validate_value, {"BS": [b64(b"x"), b64(b"x")]})
    # nested values are checked too
    assert "may not be empty" in raises(V.validate_item, {"a": {"M": {"b": {"L": [{"NS": []}]}}}})


def test_nesting_limit():
    av: dict = {"S": "x"}
    for _ in range(32):
        av = {"L": [av]}
    V.validate_value(av)
    assert raises(V.validate_value, {"L": [av]}) == "Nesting Levels have exceeded supported limits"


# -- numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize("text,canonical", [
    ("1.0", "1"), ("3.1400", "3.14"), ("00042", "42"), ("1.5E2", "150"), ("1e2", "100"), ("-0", "0"),
    ("0.000", "0"), ("+7", "7"), (".5", "0.5"), ("5.", "5"), ("-1.50", "-1.5"),
    ("1E125", "1" + "0" * 125), ("1E-130", "0." + "0" * 129 + "1"),
    ("12345678901234567890123456789012345678", "12345678901234567890123456789012345678"),
    ("9.9999999999999999999999999999999999999E+125", "99999999999999999999999999999999999999" + "0" * 88),
    ("0.00000000000000000000000000000000000001", "0.00000000000000000000000000000000000001"),
])
def test_number_canonical_form(text, canonical):
    assert V.canonical_number(text) == canonical
    assert V.validate_value({"N": text}) == {"N": canonical}


@pytest.mark.parametrize("text", ["abc", "", " 1", "1 ", "1e", "NaN", "Infinity", "0x10", "1_000", "--1",
                                  "1.2.3", "\u0663"])
def test_invalid_number_strings(text):
    assert raises(V.parse_number, text) == f"The parameter cannot be converted to a numeric value: {text}"


def test_number_limits():
    assert raises(V.parse_number, "123456789012345678901234567890123456789") == V.NUMBER_PRECISION
    assert raises(V.parse_number, "1E+126") == V.NUMBER_OVERFLOW
    assert raises(V.parse_number, "-1E+126") == V.NUMBER_OVERFLOW
    assert raises(V.parse_number, "1E-131") == V.NUMBER_UNDERFLOW
    assert raises(V.parse_number, "1E+999999999999999999999") == V.NUMBER_OVERFLOW
    assert raises(V.parse_number, "1E-999999999999999999999") == V.NUMBER_UNDERFLOW
    # trailing and leading zeros are not significant
    V.parse_number("1" + "0" * 60)
    V.parse_number("0.000" + "1" * 38)
    assert raises(V.add_numbers, Decimal("9.9E125"), Decimal("9.9E125")) == V.NUMBER_OVERFLOW
    assert raises(V.add_numbers, Decimal("1E30"), Decimal("1E-30")) == V.NUMBER_PRECISION


def test_number_helper():
    assert V.number(5) == {"N": "5"}
    assert V.number("2.50") == {"N": "2.5"}
    assert V.number(Decimal("-0.0")) == {"N": "0"}


# -- equality and ordering ---------------------------------------------------------------


def test_equality_semantics():
    eq = V.values_equal
    assert eq({"N": "1.0"}, {"N": "1"})
    assert not eq({"N": "1"}, {"S": "1"})
    assert eq({"SS": ["a", "b"]}, {"SS": ["b", "a"]})
    assert not eq({"SS": ["a", "b"]}, {"SS": ["a"]})
    assert eq({"NS": ["1", "2.0"]}, {"NS": ["2", "1.00"]})
    assert eq({"BS": [b64(b"a"), b64(b"b")]}, {"BS": [b64(b"b"), b64(b"a")]})
    assert eq({"L": [{"N": "1"}, {"S": "x"}]}, {"L": [{"N": "1.0"}, {"S": "x"}]})
    assert not eq({"L": [{"N": "1"}, {"S": "x"}]}, {"L": [{"S": "x"}, {"N": "1"}]})
    assert eq({"M": {"a": {"N": "1"}, "b": {"NULL": True}}}, {"M": {"b": {"NULL": True}, "a": {"N": "1.0"}}})
    assert not eq({"M": {"a": {"N": "1"}}}, {"M": {"a": {"N": "1"}, "b": {"N": "1"}}})
    assert not eq(None, {"S": "x"}) and not eq(None, None)
    assert eq({"BOOL": True}, {"BOOL": True}) and not eq({"BOOL": True}, {"BOOL": False})


def test_ordering_semantics():
    cmp = V.compare_values
    assert cmp({"N": "9"}, {"N": "10"}) == -1          # numerically, not as text
    assert cmp({"N": "-1"}, {"N": "-0.5"}) == -1
    assert cmp({"N": "2.0"}, {"N": "2"}) == 0
    assert cmp({"S": "Z"}, {"S": "a"}) == -1           # by UTF-8 bytes: 'Z' < 'a'
    assert cmp({"S": "\u00e9"}, {"S": "z"}) == 1        # é (C3 A9) > z (7A)
    assert cmp({"S": "\U0001F600"}, {"S": "\uffff"}) == 1
    assert cmp({"B": b64(b"\x01")}, {"B": b64(b"\x00\xff")}) == 1
    assert cmp({"N": "1"}, {"S": "1"}) is None
    assert cmp({"SS": ["a"]}, {"SS": ["a"]}) is None
    assert cmp(None, {"N": "1"}) is None


# -- sizes -----------------------------------------------------------------------------------

# measured against DynamoDB (eu-west-2) by an accept/reject pair at the 400 KB limit
MEASURED_NUMBER_SIZES = [
    ("0", 1), ("1", 2), ("12", 2), ("123", 3), ("1234", 3), ("12345678901234567890123456789012345678", 20),
    ("0042", 2), ("100", 2), ("1010", 3), ("0.0000001", 2), ("1E125", 2), ("1E-100", 2), ("1.5", 3),
    ("15", 2), ("1.2", 3), ("1.200", 3), ("1.234", 4), ("3.14159", 5), ("123456", 4), ("100.5", 4),
    ("0.15", 2), ("-42", 3), ("-0", 1),
]


@pytest.mark.parametrize("text,size", MEASURED_NUMBER_SIZES)
def test_number_size_matches_dynamodb(text, size):
    assert V.number_size(Decimal(text)) == size
    assert V.value_size({"N": V.canonical_number(text)}) == size


def test_value_and_item_sizes():
    assert V.value_size({"S": "héllo"}) == 6
    assert V.value_size({"B": b64(b"12345")}) == 5
    assert V.value_size({"BOOL": True}) == 1 and V.value_size({"NULL": True}) == 1
    assert V.value_size({"SS": ["ab", "c"]}) == 3
    assert V.value_size({"NS": ["1", "123"]}) == 5
    assert V.value_size({"L": []}) == 3 and V.value_size({"M": {}}) == 3
    assert V.value_size({"L": [{"S": "ab"}, {"N": "1"}]}) == 3 + (1 + 2) + (1 + 2)
    assert V.value_size({"M": {"ab": {"S": "xyz"}}}) == 3 + 1 + 2 + 3
    assert V.item_size({"pk": {"S": "abc"}, "n": {"N": "12"}}) == 2 + 3 + 1 + 2


def test_item_size_limit_is_409600_bytes_inclusive():
    base = {"pk": {"S": "k"}}
    pad = V.MAX_ITEM_SIZE - V.item_size(base) - len("p")
    at_limit = {**base, "p": {"S": "x" * pad}}
    assert V.check_item_size(at_limit) == 409600
    over = {**base, "p": {"S": "x" * (pad + 1)}}
    assert raises(V.check_item_size, over) == "Item size has exceeded the maximum allowed size"
    assert raises(V.check_item_size, over, update=True) == \
        "Item size to update has exceeded the maximum allowed size"
    # attribute names count
    names = {f"{'n' * 5000}{i}": {"S": "x"} for i in range(82)}
    assert raises(V.check_item_size, names) == V.ITEM_TOO_LARGE


# -- keys ---------------------------------------------------------------------------------------

HASH = V.KeySchema("pk", "S")
COMPOSITE = V.KeySchema("pk", "S", "sk", "N")


def test_key_schema_from_api():
    ks = V.KeySchema.from_api([{"AttributeName": "pk", "KeyType": "HASH"},
                               {"AttributeName": "sk", "KeyType": "RANGE"}],
                              [{"AttributeName": "pk", "AttributeType": "S"},
                               {"AttributeName": "sk", "AttributeType": "N"}])
    assert ks == COMPOSITE and ks.names == ("pk", "sk") and ks.type_of("sk") == "N"
    assert V.KeySchema.from_api(*ks.to_api()) == ks


def test_extract_key_from_item():
    item = {"pk": {"S": "a"}, "sk": {"N": "1"}, "x": {"S": "y"}}
    assert V.extract_key(item, COMPOSITE) == {"pk": {"S": "a"}, "sk": {"N": "1"}}
    assert V.extract_key(item, HASH) == {"pk": {"S": "a"}}
    assert raises(V.extract_key, {"pk": {"S": "a"}}, COMPOSITE) == \
        "One or more parameter values were invalid: Missing the key sk in the item"
    assert raises(V.extract_key, {"pk": {"N": "1"}}, HASH) == \
        "One or more parameter values were invalid: Type mismatch for key pk expected: S actual: N"
    assert raises(V.extract_key, {"pk": {"S": ""}}, HASH) == (
        "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an "
        "empty string value. Key: pk")
    assert raises(V.extract_key, {"pk": {"B": ""}}, V.KeySchema("pk", "B")) == (
        "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an "
        "empty binary value. Key: pk")
    V.extract_key({"pk": {"S": "a" * 2048}}, HASH)
    assert "Size of hashkey has exceeded" in raises(V.extract_key, {"pk": {"S": "a" * 2049}}, HASH)
    assert "Aggregated size of all range keys" in raises(
        V.extract_key, {"pk": {"S": "a"}, "sk": {"S": "b" * 1025}}, V.KeySchema("pk", "S", "sk", "S"))


def test_validate_request_key():
    assert V.validate_key({"pk": {"S": "a"}, "sk": {"N": "01.0"}}, COMPOSITE) == \
        {"pk": {"S": "a"}, "sk": {"N": "1"}}
    msg = "The provided key element does not match the schema"
    assert raises(V.validate_key, {"pk": {"S": "a"}}, COMPOSITE) == msg
    assert raises(V.validate_key, {"pk": {"S": "a"}, "sk": {"N": "1"}, "x": {"S": "b"}}, COMPOSITE) == msg
    assert raises(V.validate_key, {"pk": {"N": "1"}}, HASH) == msg


# -- order-preserving key encoding -----------------------------------------------------------------


def test_number_encoding_examples():
    ordered = ["-9.9999999999999999999999999999999999999E+125", "-1E10", "-100", "-10", "-9.5", "-1",
               "-0.5", "-1E-130", "0", "1E-130", "0.5", "1", "1.05", "9.5", "10", "100", "1E10",
               "9.9999999999999999999999999999999999999E+125"]
    enc = [V.encode_key_value({"N": V.canonical_number(x)}) for x in ordered]
    assert enc == sorted(enc) and len(set(enc)) == len(enc)
    assert V.encode_key_value({"N": "1.0"}) == V.encode_key_value({"N": "1"}) == V.encode_number(Decimal("1E0"))


def test_string_and_binary_encoding_keep_prefixes():
    assert V.encode_key_value({"S": "ab"}) < V.encode_key_value({"S": "abc"}) < V.encode_key_value({"S": "b"})
    assert V.encode_key_value({"S": "abc"}).startswith(V.encode_key_value({"S": "ab"}))
    assert V.encode_key_value({"B": b64(b"\x00\x01")}) == b"\x00\x01"
    assert V.prefix_successor(b"ab") == b"ac"
    assert V.prefix_successor(b"a\xff\xff") == b"b"
    assert V.prefix_successor(b"\xff") is None and V.prefix_successor(b"") is None


def test_key_tuple_encoding_orders_like_tuples():
    parts = [(b"t", b"a"), (b"t", b"a\x00"), (b"t", b"ab"), (b"t\x00", b""), (b"u", b"")]
    enc = [V.encode_key_tuple(p) for p in parts]
    assert enc == sorted(enc)


_digits = st.integers(min_value=0, max_value=10**38 - 1)
_numbers = st.builds(lambda sign, m, e: Decimal(f"{sign * m}E{e}"),
                     st.sampled_from([1, -1]), _digits, st.integers(min_value=-130, max_value=88)).filter(
    lambda d: d == 0 or -130 <= d.adjusted() <= 125)


@settings(max_examples=300, deadline=None)
@given(_numbers, _numbers)
def test_number_encoding_preserves_numeric_order(a, b):
    ea, eb = V.encode_number(a), V.encode_number(b)
    assert (ea < eb) == (a < b)
    assert (ea == eb) == (a == b)
    assert V.encode_key_value(V.number(a)) == ea


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text())
def test_string_encoding_preserves_order(a, b):
    sa, sb = {"S": a}, {"S": b}
    ea, eb = V.encode_key_value(sa), V.encode_key_value(sb)
    c = V.compare_values(sa, sb)
    assert (ea < eb) == (c == -1) and (ea == eb) == (c == 0)
    assert (ea < eb) == (a.encode("utf-8", "surrogatepass") < b.encode("utf-8", "surrogatepass"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=4), st.binary(max_size=4)), min_size=2, max_size=6))
def test_key_tuple_encoding_property(tuples):
    assert sorted(tuples) == sorted(tuples, key=lambda t: V.encode_key_tuple(t))
