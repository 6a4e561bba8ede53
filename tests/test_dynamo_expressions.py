"""system.dynamo.expressions: condition/filter, key condition, update and
projection expressions, with DynamoDB's validation messages."""

from __future__ import annotations

import base64

import pytest

from system.dynamo import expressions as X
from system.dynamo import values as V
from system.dynamo.errors import DynamoError


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def err(fn, *args, **kw) -> str:
    with pytest.raises(DynamoError) as ei:
        fn(*args, **kw)
    assert ei.value.type_name == "ValidationException", ei.value
    assert ei.value.status == 400
    return ei.value.message


ITEM = {
    "pk": {"S": "user#1"},
    "n": {"N": "10"},
    "s": {"S": "hello world"},
    "b": {"B": b64(b"\x01\x02\x03")},
    "flag": {"BOOL": True},
    "nothing": {"NULL": True},
    "ss": {"SS": ["red", "green"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": [b64(b"x"), b64(b"yz")]},
    "l": {"L": [{"S": "zero"}, {"N": "1"}, {"M": {"deep": {"S": "x"}}}]},
    "m": {"M": {"a": {"M": {"b": {"M": {"c": {"N": "3"}}}}}, "name": {"S": "inner"}}},
    "a.b": {"S": "dotted"},
}


def cond(text: str, values: dict | None = None, names: dict | None = None, item=ITEM) -> bool:
    return X.parse_condition(text, names, values).evaluate(item)


N = lambda x: {"N": str(x)}  # noqa: E731
S = lambda x: {"S": x}  # noqa: E731


# ---------------------------------------------------------------------------
# Conditions: comparators, missing attributes, types
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("text,value,expected", [
    ("n = :v", N(10), True), ("n = :v", N("10.0"), True), ("n <> :v", N(10), False),
    ("n < :v", N(11), True), ("n < :v", N(10), False), ("n <= :v", N(10), True),
    ("n > :v", N(9.5), True), ("n >= :v", N(10), True), ("n > :v", N(100), False),
    ("s = :v", S("hello world"), True), ("s < :v", S("hello x"), True), ("s > :v", S("Hello"), True),
    ("b < :v", {"B": b64(b"\x01\x03")}, True), ("b = :v", {"B": b64(b"\x01\x02\x03")}, True),
    ("n = :v", S("10"), False),          # different types are never equal
    ("n <> :v", S("10"), True),
    ("n < :v", S("99"), False),          # and never ordered
    ("flag = :v", {"BOOL": True}, True),
    ("nothing = :v", {"NULL": True}, True),
    ("ss = :v", {"SS": ["green", "red"]}, True),
    ("ns = :v", {"NS": ["2.50", "1.0"]}, True),
    ("l = :v", {"L": [S("zero"), N(1), {"M": {"deep": S("x")}}]}, True),
    ("m.#n = :v", S("inner"), True),
])
def test_comparisons(text, value, expected):
    names = {"#n": "name"} if "#n" in text else None
    assert cond(text, {":v": value}, names) is expected


def test_missing_attributes():
    v = {":v": N(1)}
    assert cond("absent = :v", v) is False
    assert cond("absent <> :v", v) is True
    assert cond("absent < :v", v) is False
    assert cond("absent >= :v", v) is False
    assert cond("absent BETWEEN :v AND :w", {":v": N(1), ":w": N(2)}) is False
    assert cond("absent IN (:v)", v) is False
    assert cond("NOT absent = :v", v) is True
    # an absent item is an empty item
    c = X.parse_condition("attribute_not_exists(pk)")
    assert c.evaluate(None) and c.evaluate({}) and not c.evaluate(ITEM)


def test_comparing_two_paths():
    item = {"a": N(1), "b": N(2), "c": N("1.0")}
    assert cond("a < b", item=item) and cond("a = c", item=item) and not cond("a = b", item=item)


def test_between_and_in():
    v = {":lo": N(5), ":hi": N(10)}
    assert cond("n BETWEEN :lo AND :hi", v)
    assert cond("n BETWEEN :hi AND :hi", {":hi": N(10)})
    assert not cond("n BETWEEN :lo AND :hi", {":lo": N(1), ":hi": N(9)})
    assert cond("s BETWEEN :a AND :b", {":a": S("h"), ":b": S("i")})
    assert not cond("s BETWEEN :a AND :b", {":a": N(1), ":b": N(2)})    # type mismatch: false
    # BETWEEN's AND binds to BETWEEN, then the logical AND follows
    assert cond("n BETWEEN :lo AND :hi AND s = :s", {**v, ":s": S("hello world")})
    assert not cond("n BETWEEN :lo AND :hi AND s = :s", {**v, ":s": S("nope")})
    assert cond("n IN (:a, :b, :c)", {":a": N(1), ":b": N("10.00"), ":c": S("x")})
    assert not cond("n IN (:a)", {":a": S("10")})
    assert cond("ss IN (:a)", {":a": {"SS": ["green", "red"]}})


def test_keywords_are_case_insensitive():
    v = {":a": N(10), ":b": S("nope")}
    assert cond("n = :a or s = :b", v)
    assert not cond("n = :a and s = :b", v)
    assert cond("not s = :b", v)
    assert cond("n between :a and :a", v)
    assert cond("n in (:a)", v)


# ---------------------------------------------------------------------------
# Precedence and parentheses
# ---------------------------------------------------------------------------


def test_and_binds_tighter_than_or():
    t, f = {":t": N(10)}, {}
    v = {":t": N(10), ":f": N(0)}
    # true OR (false AND false) -> true ; (true OR false) AND false would be false
    assert cond("n = :t OR n = :f AND n = :f", v)
    # (false AND false) OR true -> true
    assert cond("n = :f AND n = :f OR n = :t", v)
    # explicit parentheses change it
    assert not cond("(n = :t OR n = :f) AND n = :f", v)
    del t, f


def test_not_binds_tighter_than_and():
    v = {":t": N(10), ":f": N(0)}
    # (NOT false) AND true -> true
    assert cond("NOT n = :f AND n = :t", v)
    # (NOT true) AND ... -> false; NOT (true AND false) would be true
    assert not cond("NOT n = :t AND n = :f", v)
    assert cond("NOT (n = :t AND n = :f)", v)
    assert cond("NOT NOT n = :t", v)
    # NOT over OR: (NOT true) OR true -> true
    assert cond("NOT n = :t OR n = :t", v)


def test_long_chains_and_nesting():
    text = " AND ".join(f"n = :v" for _ in range(300))
    assert cond(text, {":v": N(10)})
    text = " OR ".join(f"n = :v{i}" for i in range(50))
    assert cond(text, {f":v{i}": N(i - 30) for i in range(50)})
    nested = "n = :v"
    for _ in range(20):
        nested = f"(n = :v AND {nested})"
    assert cond(nested, {":v": N(10)})


def test_parentheses_rules():
    v = {":t": N(10)}
    assert cond("(n = :t)", v)
    assert cond("(n = :t) AND (n = :t)", v)
    assert cond("(n = :t AND (n = :t))", v)
    assert cond("((n = :t) AND (n = :t))", v)
    redundant = "Invalid ConditionExpression: The expression has redundant parentheses;"
    assert err(X.parse_condition, "((n = :t))", None, v) == redundant
    assert err(X.parse_condition, "((attribute_not_exists(pk)))") == redundant
    assert err(X.parse_condition, "((n = :t)) AND (n = :t)", None, v) == redundant


# ---------------------------------------------------------------------------
# Document paths
# ---------------------------------------------------------------------------


def test_nested_paths_and_list_indexes():
    assert cond("m.a.b.c = :v", {":v": N(3)})
    assert cond("l[0] = :v", {":v": S("zero")})
    assert cond("l[2].deep = :v", {":v": S("x")})
    assert cond("attribute_exists(l[1])")
    assert cond("attribute_not_exists(l[3])")
    assert cond("attribute_not_exists(m.a.x)")
    assert cond("attribute_not_exists(s.x)")        # a map key on a string: absent
    assert cond("attribute_not_exists(m[0])")       # an index on a map: absent
    assert cond("m . a . b . c = :v", {":v": N(3)})  # blanks between elements


def test_attribute_name_placeholders():
    assert cond("#ab = :v", {":v": S("dotted")}, {"#ab": "a.b"})     # a literal name with a dot
    assert not cond("a.b = :v", {":v": S("dotted")})                  # a path into map a
    assert cond("#m.#a.#b.c = :v", {":v": N(3)}, {"#m": "m", "#a": "a", "#b": "b"})
    assert cond("#status = :v", {":v": N(1)}, {"#status": "status"}, item={"status": N(1)})


# ---------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------


def test_attribute_exists_and_type():
    assert cond("attribute_exists(pk) AND attribute_not_exists(zzz)")
    for path, typ in [("s", "S"), ("n", "N"), ("b", "B"), ("flag", "BOOL"), ("nothing", "NULL"),
                      ("ss", "SS"), ("ns", "NS"), ("bs", "BS"), ("l", "L"), ("m", "M")]:
        assert cond(f"attribute_type({path}, :t)", {":t": S(typ)}), (path, typ)
        assert not cond(f"attribute_type({path}, :t)", {":t": S("S" if typ != "S" else "N")})
    assert not cond("attribute_type(zzz, :t)", {":t": S("S")})


def test_begins_with():
    assert cond("begins_with(s, :p)", {":p": S("hello")})
    assert not cond("begins_with(s, :p)", {":p": S("world")})
    assert cond("begins_with(b, :p)", {":p": {"B": b64(b"\x01\x02")}})
    assert not cond("begins_with(n, :p)", {":p": S("1")})
    assert not cond("begins_with(zzz, :p)", {":p": S("")})
    assert cond("begins_with(m.#n, :p)", {":p": S("inn")}, {"#n": "name"})


def test_contains():
    assert cond("contains(s, :v)", {":v": S("lo wo")})
    assert not cond("contains(s, :v)", {":v": S("xyz")})
    assert cond("contains(ss, :v)", {":v": S("red")})
    assert not cond("contains(ss, :v)", {":v": S("blue")})
    assert cond("contains(ns, :v)", {":v": N("2.50")})
    assert not cond("contains(ns, :v)", {":v": S("1")})
    assert cond("contains(bs, :v)", {":v": {"B": b64(b"yz")}})
    assert cond("contains(l, :v)", {":v": N("1.0")})
    assert cond("contains(l, :v)", {":v": {"M": {"deep": S("x")}}})
    assert not cond("contains(l, :v)", {":v": S("one")})
    assert cond("contains(b, :v)", {":v": {"B": b64(b"\x02\x03")}})
    assert not cond("contains(n, :v)", {":v": N(1)})
    assert cond("NOT contains(zzz, :v)", {":v": S("x")})


def test_size():
    assert cond("size(s) = :v", {":v": N(11)})
    assert cond("size(b) = :v", {":v": N(3)})
    assert cond("size(ss) = :v AND size(ns) = :v AND size(bs) = :v", {":v": N(2)})
    assert cond("size(l) = :v", {":v": N(3)})
    assert cond("size(m) = :v", {":v": N(2)})
    assert cond("size(l[2]) = :v", {":v": N(1)})
    assert cond("size(s) BETWEEN :a AND :b", {":a": N(1), ":b": N(20)})
    assert cond("size(s) > size(ss)")
    assert not cond("size(n) = :v", {":v": N(2)})       # no size for a number
    assert not cond("size(zzz) > :v", {":v": N(-1)})
    assert cond("size(zzz) <> :v", {":v": N(0)})


# ---------------------------------------------------------------------------
# Condition errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("text,token,near", [
    ("a-b", "-", "a-b"),
    ("tenantAgent:abc123-", ":abc123", "tenantAgent:abc123-"),
    ("()", ")", "()"),
    ("a = ", "<EOF>", "="),
    ("a", "<EOF>", "a"),
    ("a = :v :w", ":w", ":v :w"),
    ("a == :v", "=", "== :v"),
    ("a = 5", "5", "= 5"),
    ("size() = :v", ")", "() ="),
    ("a = :v AND", "<EOF>", "AND"),
    ("a IN :v", ":v", "IN :v"),
    ("a = :v ! b", "!", ":v ! b"),
    ("SET a = :v", "SET", "SET a"),
])
def test_syntax_errors_report_token_and_context(text, token, near):
    msg = err(X.parse_condition, text, None, {":v": N(1), ":w": N(2)})
    assert msg == f'Invalid ConditionExpression: Syntax error; token: "{token}", near: "{near}"'


def test_filter_messages_name_the_filter():
    assert err(X.parse_filter, "a-b").startswith("Invalid FilterExpression: Syntax error")
    assert err(X.parse_filter, "#absent = :v", None, {":v": N(1)}) == (
        "Invalid FilterExpression: An expression attribute name used in the document path is not defined; "
        "attribute name: #absent")


def test_empty_and_oversized_expressions():
    assert err(X.parse_condition, "") == "Invalid ConditionExpression: The expression can not be empty;"
    assert err(X.parse_condition, "   ") == "Invalid ConditionExpression: The expression can not be empty;"
    big = " AND ".join(["attribute_exists(a)"] * 200)
    assert err(X.parse_condition, big) == \
        "Invalid ConditionExpression: Expression size has exceeded the maximum allowed size;"
    deep = "NOT " * 150 + "attribute_exists(a)"
    assert "too many nesting levels" in err(X.parse_condition, deep)


def test_reserved_words():
    msg = "Invalid ConditionExpression: Attribute name is a reserved keyword; reserved keyword: {}"
    assert err(X.parse_condition, "status = :v", None, {":v": N(1)}) == msg.format("status")
    assert err(X.parse_condition, "a.Name = :v", None, {":v": N(1)}) == msg.format("Name")
    assert err(X.parse_condition, "attribute_exists(COUNT)") == msg.format("COUNT")
    assert err(X.parse_condition, "size = :v", None, {":v": N(1)}) == msg.format("size")
    # ... but a reserved word is fine as a function name, and through a placeholder
    assert cond("size(s) = :v", {":v": N(11)})
    assert cond("#s = :v", {":v": N(1)}, {"#s": "status"}, item={"status": N(1)})
    # words that are not reserved
    assert cond("contains = :v", {":v": N(1)}, item={"contains": N(1)})


def test_undefined_placeholders():
    assert err(X.parse_condition, "#a = :v", {}, {":v": N(1)}) == (
        "Invalid ConditionExpression: An expression attribute name used in the document path is not defined; "
        "attribute name: #a")
    assert err(X.parse_condition, "a = :v", None, None) == (
        "Invalid ConditionExpression: An expression attribute value used in expression is not defined; "
        "attribute value: :v")
    assert err(X.parse_condition, "a = :v OR b = :w", None, {":v": N(1)}).endswith("attribute value: :w")


def test_invalid_expression_attribute_value_is_reported_with_its_key():
    assert err(X.parse_condition, "a = :v", None, {":v": {"SS": []}}) == (
        "ExpressionAttributeValues contains invalid value: One or more parameter values were invalid: "
        "An string set  may not be empty for key :v")
    assert err(X.parse_condition, "a = :v", None, {":v": {"N": "x"}}) == (
        "ExpressionAttributeValues contains invalid value: The parameter cannot be converted to a numeric "
        "value: x for key :v")


def test_function_errors():
    pre = "Invalid ConditionExpression: "
    assert err(X.parse_condition, "foo(a)") == pre + "Invalid function name; function: foo"
    assert err(X.parse_condition, "foo(a) = :v", None, {":v": N(1)}) == pre + "Invalid function name; function: foo"
    assert err(X.parse_condition, "attribute_exists(a, b)") == (
        pre + "Incorrect number of operands for operator or function; operator or function: attribute_exists, "
        "number of operands: 2")
    assert err(X.parse_condition, "begins_with(a)") == (
        pre + "Incorrect number of operands for operator or function; operator or function: begins_with, "
        "number of operands: 1")
    assert err(X.parse_condition, "attribute_exists(:v)", None, {":v": S("a")}) == (
        pre + "Operator or function requires a document path; operator or function: attribute_exists")
    assert err(X.parse_condition, "size(:v) = :v", None, {":v": S("a")}) == (
        pre + "Operator or function requires a document path; operator or function: size")
    assert err(X.parse_condition, "size(a)") == (
        pre + "The function is not allowed to be used this way in an expression; function: size")
    assert err(X.parse_condition, "attribute_exists(a) = :v", None, {":v": N(1)}) == (
        pre + "The function is not allowed to be used this way in an expression; function: attribute_exists")
    assert err(X.parse_condition, "if_not_exists(a, :v) = :v", None, {":v": N(1)}) == (
        pre + "The function is not allowed to be used this way in an expression; function: if_not_exists")
    assert err(X.parse_condition, "attribute_type(a, :t)", None, {":t": S("X")}) == (
        pre + "Invalid attribute type name found; type: X, valid types: { B,NULL,SS,BOOL,L,BS,N,NS,S,M }")
    assert err(X.parse_condition, "attribute_type(a, :t)", None, {":t": N(1)}) == (
        pre + "Incorrect operand type for operator or function; operator or function: attribute_type, "
        "operand type: N")
    assert err(X.parse_condition, "begins_with(a, :n)", None, {":n": N(5)}) == (
        pre + "Incorrect operand type for operator or function; operator or function: begins_with, "
        "operand type: N")
    assert err(X.parse_condition, "a < :m", None, {":m": {"M": {}}}) == (
        pre + "Incorrect operand type for operator or function; operator or function: <, operand type: M")


def test_operands_must_be_distinct():
    pre = ("Invalid ConditionExpression: The first operand must be distinct from the remaining operands for this "
           "operator or function; ")
    assert err(X.parse_condition, "contains(#a, #a)", {"#a": "data"}) == \
        pre + "operator: contains, first operand: [data]"
    assert err(X.parse_condition, "a.b = a.b") == pre + "operator: =, first operand: [a, b]"
    assert err(X.parse_condition, "#x = a", {"#x": "a"}) == pre + "operator: =, first operand: [a]"
    assert err(X.parse_condition, "a BETWEEN :v AND a", None, {":v": N(1)}) == \
        pre + "operator: BETWEEN, first operand: [a]"


def test_between_bounds_are_checked():
    assert err(X.parse_condition, "a BETWEEN :hi AND :lo", None, {":lo": N(1), ":hi": N(5)}) == (
        "Invalid ConditionExpression: The BETWEEN operator requires upper bound to be greater than or equal to "
        "lower bound; lower bound operand: AttributeValue: {N:5}, upper bound operand: AttributeValue: {N:1}")
    assert "requires same data type" in err(X.parse_condition, "a BETWEEN :a AND :b", None,
                                            {":a": N(1), ":b": S("x")})


def test_in_operand_limit():
    values = {f":v{i}": N(i) for i in range(101)}
    text = "a IN (" + ", ".join(values) + ")"
    assert "too many operands; number of operands: 101" in err(X.parse_condition, text, None, values)


# ---------------------------------------------------------------------------
# Placeholder use across a request; caching
# ---------------------------------------------------------------------------


def test_check_unused_across_expressions():
    names = {"#a": "a", "#b": "b"}
    values = {":x": N(1), ":y": N(2)}
    c = X.parse_condition("#a = :x", names, values)
    u = X.parse_update("SET #b = :y", names, values)
    X.check_unused(names, values, c, u)
    assert err(X.check_unused, names, values, c) == \
        "Value provided in ExpressionAttributeNames unused in expressions: keys: {#b}"
    assert err(X.check_unused, {"#a": "a"}, values, c) == \
        "Value provided in ExpressionAttributeValues unused in expressions: keys: {:y}"
    assert err(X.check_unused, {"#a": "a", "#z": "z", "#y": "y"}, None, c) == \
        "Value provided in ExpressionAttributeNames unused in expressions: keys: {#y, #z}"
    p = X.parse_projection("#a", {"#a": "a"})
    X.check_unused({"#a": "a"}, None, p, None)


def test_validate_expression_attributes():
    names, values = X.validate_expression_attributes({"#a": "a"}, {":v": {"N": "01.50"}})
    assert names == {"#a": "a"} and values == {":v": {"N": "1.5"}}
    assert err(X.validate_expression_attributes, {"#a": "a"}, None, False) == \
        "ExpressionAttributeNames can only be specified when using expressions"
    assert err(X.validate_expression_attributes, None, {":v": N(1)}, False) == \
        "ExpressionAttributeValues can only be specified when using expressions"
    assert err(X.validate_expression_attributes, {}, None) == "ExpressionAttributeNames must not be empty"
    assert err(X.validate_expression_attributes, None, {}) == "ExpressionAttributeValues must not be empty"
    assert err(X.validate_expression_attributes, {"s": "status"}, None) == \
        'ExpressionAttributeNames contains invalid key: Syntax error; key: "s"'
    assert err(X.validate_expression_attributes, None, {"v": N(1)}) == \
        'ExpressionAttributeValues contains invalid key: Syntax error; key: "v"'
    assert err(X.validate_expression_attributes, None, {":v": {"NS": []}}) == (
        "ExpressionAttributeValues contains invalid value: One or more parameter values were invalid: "
        "An number set  may not be empty for key :v")


def test_parsed_syntax_is_cached():
    text = "attribute_exists(cached_attr_xyz) AND #q = :q"
    first = X._get_syntax("ConditionExpression", "condition", text)
    hits = X.cache_info().hits
    for _ in range(5):
        c = X.parse_condition(text, {"#q": "q"}, {":q": N(1)})
    assert X._get_syntax("ConditionExpression", "condition", text) is first
    assert X.cache_info().hits >= hits + 5
    assert c.evaluate({"cached_attr_xyz": S("x"), "q": N(1)})
    # binding is per request: the same text with other values
    assert not X.parse_condition(text, {"#q": "q"}, {":q": N(2)}).evaluate({"cached_attr_xyz": S("x"), "q": N(1)})
    # errors are cached too and raised afresh each time
    for _ in range(2):
        assert "Syntax error" in err(X.parse_condition, "a = = b")


def test_non_string_expression_is_a_serialization_error():
    with pytest.raises(DynamoError) as ei:
        X.parse_condition(5)  # type: ignore[arg-type]
    assert ei.value.type_name == "SerializationException"


# ---------------------------------------------------------------------------
# Key conditions
# ---------------------------------------------------------------------------

COMPOSITE = V.KeySchema("pk", "S", "sk", "S")
NUMERIC = V.KeySchema("pk", "S", "sk", "N")
HASH_ONLY = V.KeySchema("pk", "S")


def kc(text, values, names=None, schema=COMPOSITE):
    return X.parse_key_condition(text, names, values, schema)


def test_key_condition_hash_only():
    k = kc("pk = :p", {":p": S("u1")})
    assert (k.hash_name, k.hash_value, k.sort_op) == ("pk", S("u1"), None)
    assert k.encoded_range() == (None, True, None, True)
    assert k.matches({"pk": S("u1"), "sk": S("x")}) and not k.matches({"pk": S("u2")})


@pytest.mark.parametrize("text,op,lower,lower_inc,upper,upper_inc", [
    ("pk = :p AND sk = :a", "=", "b", True, "b", True),
    ("pk = :p AND sk < :a", "<", None, True, "b", False),
    ("pk = :p AND sk <= :a", "<=", None, True, "b", True),
    ("pk = :p AND sk > :a", ">", "b", False, None, True),
    ("pk = :p AND sk >= :a", ">=", "b", True, None, True),
    ("pk = :p AND sk BETWEEN :a AND :c", "BETWEEN", "b", True, "d", True),
    ("sk > :a AND pk = :p", ">", "b", False, None, True),          # hash condition second
    (":a < sk AND pk = :p", ">", "b", False, None, True),          # value on the left: flipped
    (":a >= #k AND #h = :p", "<=", None, True, "b", True),
    ("(pk = :p) AND (sk = :a)", "=", "b", True, "b", True),
    ("(pk = :p AND sk = :a)", "=", "b", True, "b", True),
    ("(pk = :p AND (sk = :a))", "=", "b", True, "b", True),
])
def test_key_condition_sort_ranges(text, op, lower, lower_inc, upper, upper_inc):
    k = kc(text, {":p": S("u1"), ":a": S("b"), ":c": S("d")}, {"#k": "sk", "#h": "pk"} if "#" in text else None)
    assert k.hash_value == S("u1") and k.sort_name == "sk" and k.sort_op == op
    assert (k.lower["S"] if k.lower else None, k.lower_inclusive) == (lower, lower_inc)
    assert (k.upper["S"] if k.upper else None, k.upper_inclusive) == (upper, upper_inc)
    for sk in ["a", "b", "bb", "c", "d", "e"]:
        expected = ((lower is None or sk > lower or (lower_inc and sk == lower))
                    and (upper is None or sk < upper or (upper_inc and sk == upper)))
        assert k.sort_matches(S(sk)) is expected, sk


def test_key_condition_begins_with_gives_prefix_range():
    k = kc("pk = :p AND begins_with(sk, :pre)", {":p": S("u1"), ":pre": S("ord#")})
    assert k.sort_op == "begins_with" and k.prefix == S("ord#")
    assert k.encoded_range() == (b"ord#", True, b"ord$", False)
    assert k.sort_matches(S("ord#1")) and not k.sort_matches(S("orc")) and not k.sort_matches(None)
    kb = kc("pk = :p AND begins_with(sk, :pre)", {":p": S("u"), ":pre": {"B": b64(b"\x01\xff")}},
            schema=V.KeySchema("pk", "S", "sk", "B"))
    assert kb.encoded_range() == (b"\x01\xff", True, b"\x02", False)


def test_key_condition_numeric_sort_key_range_is_encoded():
    k = kc("pk = :p AND sk BETWEEN :a AND :b", {":p": S("u"), ":a": N(-5), ":b": N("1E3")}, schema=NUMERIC)
    lo, lo_inc, hi, hi_inc = k.encoded_range()
    assert lo == V.encode_key_value(N(-5)) and hi == V.encode_key_value(N(1000)) and lo_inc and hi_inc
    for x in ["-5", "0", "999.99", "1000"]:
        assert lo <= V.encode_key_value({"N": V.canonical_number(x)}) <= hi
        assert k.sort_matches({"N": x})
    assert not k.sort_matches(N(1001))


def test_key_condition_errors():
    p = {":p": S("u1"), ":a": S("b"), ":c": S("a"), ":n": N(1)}
    pre = "Invalid KeyConditionExpression: "
    assert err(kc, "sk = :a", p) == "Query condition missed key schema element: pk"
    assert err(kc, "attr1 = :a", p) == "Query condition missed key schema element: pk"
    assert err(kc, "pk = :p AND attr1 = :a", p) == "Query condition missed key schema element: sk"
    assert err(kc, "pk = :p AND attr1 = :a", p, schema=HASH_ONLY) == "Query key condition not supported"
    assert err(kc, "pk > :p", p) == "Query key condition not supported"
    assert err(kc, "begins_with(pk, :p)", p) == "Query key condition not supported"
    assert err(kc, "pk = :p OR sk = :a", p) == pre + "Invalid operator used in KeyConditionExpression: OR"
    assert err(kc, "pk = :p AND NOT sk = :a", p) == pre + "Invalid operator used in KeyConditionExpression: NOT"
    assert err(kc, "pk = :p AND sk IN (:a)", p) == pre + "Invalid operator used in KeyConditionExpression: IN"
    assert err(kc, "pk = :p AND sk <> :a", p) == pre + "Invalid operator used in KeyConditionExpression: <>"
    assert err(kc, "pk = :p AND attribute_exists(sk)", p) == \
        pre + "Invalid operator used in KeyConditionExpression: attribute_exists"
    assert err(kc, "pk = :p AND size(sk) = :n", p) == pre + "Invalid operator used in KeyConditionExpression: size"
    assert err(kc, "pk = :p AND foo(sk)", p) == pre + "Invalid function name; function: foo"
    assert err(kc, "pk = :p AND sk = :a AND sk = :c", p) == "Conditions can be of length 1 or 2 only"
    assert err(kc, "pk = :p AND pk = :p", p) == pre + "KeyConditionExpressions must only contain one condition per key"
    assert err(kc, "#pk = :p AND #sk.foo = :a", p, {"#pk": "pk", "#sk": "sk"}) == \
        pre + "KeyConditionExpressions cannot have conditions on nested attributes"
    assert err(kc, "pk = :p AND sk[0] = :a", p) == \
        pre + "KeyConditionExpressions cannot have conditions on nested attributes"
    assert err(kc, "pk = sk", p) == \
        "Invalid condition in KeyConditionExpression: Multiple attribute names used in one condition"
    assert err(kc, ":p = :a", p) == "Invalid condition in KeyConditionExpression: No key attribute specified"
    assert err(kc, "pk = :n", p) == \
        "One or more parameter values were invalid: Condition parameter type does not match schema type"
    assert err(kc, "pk = :p AND sk > :n", p) == \
        "One or more parameter values were invalid: Condition parameter type does not match schema type"
    assert err(kc, "pk = :p AND begins_with(sk, :n)", p, schema=NUMERIC) == (
        pre + "Incorrect operand type for operator or function; operator or function: begins_with, "
        "operand type: N")
    assert err(kc, "pk = :e", {":e": S("")}) == (
        "One or more parameter values are not valid. The AttributeValue for a key attribute cannot contain an "
        "empty string value. Key: pk")
    assert err(kc, "pk = :p AND sk BETWEEN :a AND :c", p) == (
        pre + "The BETWEEN operator requires upper bound to be greater than or equal to lower bound; "
        "lower bound operand: AttributeValue: {S:b}, upper bound operand: AttributeValue: {S:a}")
    assert err(kc, "", p) == pre + "The expression can not be empty;"
    assert err(kc, "((pk = :p)) AND ((sk = :a))", p) == pre + "The expression has redundant parentheses;"
    assert err(kc, "pk = :p AND sk = :zz", p) == (
        pre + "An expression attribute value used in expression is not defined; attribute value: :zz")
    assert err(kc, "pk = :p AND begins_with(sk)", p) == (
        pre + "Incorrect number of operands for operator or function; operator or function: begins_with, "
        "number of operands: 1")


# ---------------------------------------------------------------------------
# Updates
# ---------------------------------------------------------------------------


def upd(text, item=None, values=None, names=None):
    return X.parse_update(text, names, values).apply(item)


def test_set_plain_nested_and_list_index():
    item = {"pk": S("k"), "m": {"M": {"x": N(1)}}, "l": {"L": [S("a"), S("b")]}}
    out = upd("SET a = :v, m.y = :v, m.x = :w, l[0] = :w, l[5] = :v", item, {":v": S("new"), ":w": N(2)})
    assert out["a"] == S("new")
    assert out["m"] == {"M": {"x": N(2), "y": S("new")}}
    assert out["l"] == {"L": [N(2), S("b"), S("new")]}       # beyond the end: appended
    assert item == {"pk": S("k"), "m": {"M": {"x": N(1)}}, "l": {"L": [S("a"), S("b")]}}  # input untouched


def test_set_with_placeholders_and_literal_dotted_names():
    out = upd("SET #a = :v, #m.#k = :v", {"m": {"M": {}}}, {":v": N(1)}, {"#a": "a.b", "#m": "m", "#k": "c.d"})
    assert out == {"m": {"M": {"c.d": N(1)}}, "a.b": N(1)}


def test_set_arithmetic():
    item = {"n": N(10), "m": {"M": {"c": N("1.5")}}}
    assert upd("SET n = n + :one", item, {":one": N(1)})["n"] == N(11)
    assert upd("SET n = n - :x", item, {":x": N("10.5")})["n"] == N("-0.5")
    assert upd("SET m.c = m.c + m.c", item)["m"] == {"M": {"c": N(3)}}
    assert upd("SET z = :a + :b", {}, {":a": N("0.1"), ":b": N("0.2")})["z"] == N("0.3")
    assert upd("SET z = :a-:b", {}, {":a": N(1), ":b": N(3)})["z"] == N(-2)


def test_set_reads_the_item_before_the_update():
    out = upd("SET a = b, b = a", {"a": N(1), "b": N(2)})
    assert out == {"a": N(2), "b": N(1)}


def test_if_not_exists_and_list_append():
    v = {":zero": N(0), ":one": N(1), ":l": {"L": [S("x")]}, ":e": {"L": []}}
    assert upd("SET c = if_not_exists(c, :zero) + :one", {}, v)["c"] == N(1)
    assert upd("SET c = if_not_exists(c, :zero) + :one", {"c": N(5)}, v)["c"] == N(6)
    assert upd("SET l = list_append(l, :l)", {"l": {"L": [S("a")]}}, v)["l"] == {"L": [S("a"), S("x")]}
    assert upd("SET l = list_append(:l, l)", {"l": {"L": [S("a")]}}, v)["l"] == {"L": [S("x"), S("a")]}
    assert upd("SET l = list_append(if_not_exists(l, :e), :l)", {}, v)["l"] == {"L": [S("x")]}
    assert upd("SET m.c = if_not_exists(m.c, :one)", {"m": {"M": {}}}, v)["m"] == {"M": {"c": N(1)}}


def test_remove():
    item = {"a": N(1), "m": {"M": {"x": N(1), "y": N(2)}}, "l": {"L": [S("a"), S("b"), S("c"), S("d")]}}
    out = upd("REMOVE a, m.x, zzz, m.zzz", item)
    assert out == {"m": {"M": {"y": N(2)}}, "l": item["l"]}
    # list indexes refer to the list before the update
    assert upd("REMOVE l[1], l[2]", item)["l"] == {"L": [S("a"), S("d")]}
    assert upd("REMOVE l[2], l[0]", item)["l"] == {"L": [S("b"), S("d")]}
    assert upd("REMOVE l[9]", item)["l"] == item["l"]
    assert err(upd, "REMOVE a.b", item) == X.INVALID_UPDATE_PATH


def test_add_numbers_and_sets():
    item = {"n": N(5), "ss": {"SS": ["a", "b"]}, "ns": {"NS": ["1"]}}
    assert upd("ADD n :v", item, {":v": N(-7)})["n"] == N(-2)
    assert upd("ADD newn :v", item, {":v": N(3)})["newn"] == N(3)
    assert upd("ADD ss :v", item, {":v": {"SS": ["b", "c"]}})["ss"] == {"SS": ["a", "b", "c"]}
    assert upd("ADD ns :v", item, {":v": {"NS": ["1.0", "2"]}})["ns"] == {"NS": ["1", "2"]}
    assert upd("ADD news :v", item, {":v": {"SS": ["z"]}})["news"] == {"SS": ["z"]}
    assert upd("ADD n :a, ss :b", item, {":a": N(1), ":b": {"SS": ["q"]}})["n"] == N(6)
    assert err(upd, "ADD ss :v", item, {":v": N(1)}) == X.INCORRECT_DATA_TYPE
    assert err(upd, "ADD n :v", item, {":v": {"NS": ["1"]}}) == X.INCORRECT_DATA_TYPE
    assert err(upd, "ADD ss :v", item, {":v": {"NS": ["1"]}}) == X.INCORRECT_DATA_TYPE


def test_delete_from_sets():
    item = {"ss": {"SS": ["a", "b", "c"]}, "ns": {"NS": ["1", "2"]}}
    assert upd("DELETE ss :v", item, {":v": {"SS": ["b", "zz"]}})["ss"] == {"SS": ["a", "c"]}
    assert "ns" not in upd("DELETE ns :v", item, {":v": {"NS": ["1.0", "2"]}})      # emptied: removed
    assert upd("DELETE absent :v", item, {":v": {"SS": ["a"]}}) == item
    assert err(upd, "DELETE ss :v", item, {":v": {"NS": ["1"]}}) == X.INCORRECT_DATA_TYPE


def test_all_clauses_together_in_any_order():
    item = {"a": N(1), "b": S("x"), "c": {"SS": ["p", "q"]}, "d": N(1)}
    u = X.parse_update("REMOVE b DELETE c :c ADD d :one SET a = a + :one, e = :one", None,
                       {":one": N(1), ":c": {"SS": ["p"]}})
    assert u.updated_names == {"a", "b", "c", "d", "e"}
    out = u.apply(item)
    assert out == {"a": N(2), "c": {"SS": ["q"]}, "d": N(2), "e": N(1)}


def test_update_operand_type_errors():
    pre = "Invalid UpdateExpression: "
    assert err(upd, "SET a = a + :s", {"a": N(1)}, {":s": S("x")}) == X.INCORRECT_DATA_TYPE
    assert err(upd, "SET a = a + :n", {"a": S("x")}, {":n": N(1)}) == X.INCORRECT_DATA_TYPE
    assert err(upd, "SET l = list_append(l, :l)", {"l": S("x")}, {":l": {"L": []}}) == X.INCORRECT_DATA_TYPE
    assert err(upd, "SET l = list_append(l, :m)", {}, {":m": {"M": {}}}) == (
        pre + "Incorrect operand type for operator or function; operator or function: list_append, "
        "operand type: M")
    assert err(upd, "ADD a :s", {}, {":s": S("x")}) == \
        pre + "Incorrect operand type for operator or function; operator: ADD, operand type: STRING"
    assert err(upd, "DELETE a :n", {}, {":n": N(1)}) == \
        pre + "Incorrect operand type for operator or function; operator: DELETE, operand type: NUMBER"
    assert err(upd, "SET a = :a + :b", {}, {":a": N("9.9E125"), ":b": N("9.9E125")}) == V.NUMBER_OVERFLOW


def test_update_reference_and_path_errors():
    assert err(upd, "SET a = b", {}) == X.NONEXISTENT_ATTRIBUTE
    assert err(upd, "SET a = b + :one", {}, {":one": N(1)}) == X.NONEXISTENT_ATTRIBUTE
    assert err(upd, "SET l = list_append(l, :l)", {}, {":l": {"L": []}}) == X.NONEXISTENT_ATTRIBUTE
    assert err(upd, "SET a.b.c = :v", {"x": N(1)}, {":v": N(1)}) == X.INVALID_UPDATE_PATH
    assert err(upd, "SET a.b = :v", {"a": S("s")}, {":v": N(1)}) == X.INVALID_UPDATE_PATH
    assert err(upd, "SET a[0] = :v", {"a": {"M": {}}}, {":v": N(1)}) == X.INVALID_UPDATE_PATH
    assert err(upd, "SET a[0] = :v", {}, {":v": N(1)}) == X.INVALID_UPDATE_PATH
    assert err(upd, "ADD a.b :v", {}, {":v": N(1)}) == X.INVALID_UPDATE_PATH


def test_update_expression_structure_errors():
    pre = "Invalid UpdateExpression: "
    v = {":v": N(1), ":w": N(2)}
    assert err(X.parse_update, "SET a = :v SET b = :w", None, v) == \
        pre + 'The "SET" section can only be used once in an update expression;'
    assert err(X.parse_update, "ADD x :v, y :w SET a = :v ADD z :v", None, v) == \
        pre + 'The "ADD" section can only be used once in an update expression;'
    overlap = pre + "Two document paths overlap with each other; must remove or rewrite one of these paths; "
    assert err(X.parse_update, "SET a = :v, a.b = :w", None, v) == overlap + "path one: [a], path two: [a, b]"
    assert err(X.parse_update, "SET #v = :v, #v = :w", {"#v": "val"}, v) == \
        overlap + "path one: [val], path two: [val]"
    assert err(X.parse_update, "SET a.b = :v REMOVE a", None, v) == overlap + "path one: [a, b], path two: [a]"
    assert err(X.parse_update, "SET l[1] = :v REMOVE l[1].x", None, v) == \
        overlap + "path one: [l, [1]], path two: [l, [1], x]"
    assert err(X.parse_update, "SET a.b = :v, a[0] = :w", None, v) == (
        pre + "Two document paths conflict with each other; must remove or rewrite one of these paths; "
        "path one: [a, b], path two: [a, [0]]")
    X.parse_update("SET a.b = :v, a.c = :w, l[0] = :v, l[1] = :w", None, v)   # siblings are fine
    assert err(X.parse_update, "SET a = size(b)", None, v) == \
        pre + "The function is not allowed in an update expression; function: size"
    assert err(X.parse_update, "SET a = foo(b)", None, v) == pre + "Invalid function name; function: foo"
    assert err(X.parse_update, "SET a = if_not_exists(:v, :w)", None, v) == \
        pre + "Operator or function requires a document path; operator or function: if_not_exists"
    assert err(X.parse_update, "SET a = list_append(:v)", None, v) == (
        pre + "Incorrect number of operands for operator or function; operator or function: list_append, "
        "number of operands: 1")
    assert err(X.parse_update, "SET status = :v", None, v) == \
        pre + "Attribute name is a reserved keyword; reserved keyword: status"
    assert err(X.parse_update, "SET a = :v", None, None) == (
        pre + "An expression attribute value used in expression is not defined; attribute value: :v")
    assert err(X.parse_update, "", None, None) == pre + "The expression can not be empty;"
    assert err(X.parse_update, "SET a = :v,", None, v) == pre + 'Syntax error; token: "<EOF>", near: ","'
    assert err(X.parse_update, "SET a = :v + :w + :v", None, v) == \
        pre + 'Syntax error; token: "+", near: ":w + :v"'
    assert err(X.parse_update, "ADD a b", None, v) == pre + 'Syntax error; token: "b", near: "a b"'
    assert err(X.parse_update, "SET path = VALUE 1", None, v) == pre + 'Syntax error; token: "1", near: "VALUE 1"'
    assert err(X.parse_update, "a = :v", None, v) == pre + 'Syntax error; token: "a", near: "a ="'


def test_update_of_key_attributes_is_rejected():
    u = X.parse_update("SET #k = :v, attr1 = :v", {"#k": "pk"}, {":v": S("x")})
    assert err(u.check_key_attributes, ["pk", "sk"]) == (
        "One or more parameter values were invalid: Cannot update attribute pk. This attribute is part of the key")
    X.parse_update("SET attr1 = :v", None, {":v": S("x")}).check_key_attributes(["pk"])
    assert "Cannot update attribute sk" in err(X.parse_update("REMOVE sk").check_key_attributes, ["pk", "sk"])


def test_update_result_shares_nothing_mutable_with_input():
    item = {"m": {"M": {"l": {"L": [N(1)]}}}}
    out = upd("SET m.l[1] = :v, m.n = :v", item, {":v": N(2)})
    assert out["m"] == {"M": {"l": {"L": [N(1), N(2)]}, "n": N(2)}}
    assert item == {"m": {"M": {"l": {"L": [N(1)]}}}}


# ---------------------------------------------------------------------------
# Projections
# ---------------------------------------------------------------------------


def test_projection():
    p = X.parse_projection("pk, m.a.b, l[2].deep, l[0], #n, zzz", {"#n": "a.b"})
    assert p.paths == (("pk",), ("m", "a", "b"), ("l", 2, "deep"), ("l", 0), ("a.b",), ("zzz",))
    assert p.apply(ITEM) == {
        "pk": ITEM["pk"],
        "m": {"M": {"a": {"M": {"b": {"M": {"c": N(3)}}}}}},
        "l": {"L": [S("zero"), {"M": {"deep": S("x")}}]},       # compacted, in list order
        "a.b": S("dotted"),
    }
    assert p.top_level_names == {"pk", "m", "l", "a.b", "zzz"}
    assert p.apply(None) == {}
    assert p.names_used == {"#n"}


def test_projection_errors():
    pre = "Invalid ProjectionExpression: "
    assert err(X.parse_projection, "!!! INVALID !!!") == pre + 'Syntax error; token: "!", near: "!!"'
    assert err(X.parse_projection, "pk, status") == pre + "Attribute name is a reserved keyword; reserved keyword: status"
    assert err(X.parse_projection, "a, a") == (
        pre + "Two document paths overlap with each other; must remove or rewrite one of these paths; "
        "path one: [a], path two: [a]")
    assert err(X.parse_projection, "a.b, a") == (
        pre + "Two document paths overlap with each other; must remove or rewrite one of these paths; "
        "path one: [a, b], path two: [a]")
    assert "conflict" in err(X.parse_projection, "a[0], a.b")
    assert err(X.parse_projection, "#x") == (
        pre + "An expression attribute name used in the document path is not defined; attribute name: #x")
    assert err(X.parse_projection, "a, :v") == pre + 'Syntax error; token: ":v", near: ", :v"'
    assert err(X.parse_projection, "a,") == pre + 'Syntax error; token: "<EOF>", near: ","'


def test_fuzz_inputs_never_raise_anything_but_dynamo_errors():
    import random
    rng = random.Random(7)
    alphabet = list("ab#:().,[]=<>+- 019") + ["AND ", "OR ", "NOT ", "SET ", "REMOVE ", "ADD ", "DELETE ",
                                                "BETWEEN ", "IN ", "size", "contains", "begins_with"]
    names = {"#a": "a", "#b": "b"}
    values = {":a": N(1), ":b": S("x"), ":0": {"L": []}}
    item = {"a": N(1), "b": {"L": [N(1)]}}
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
        for fn in (lambda t: X.parse_condition(t, names, values).evaluate(item),
                   lambda t: X.parse_update(t, names, values).apply(item),
                   lambda t: X.parse_projection(t, names).apply(item),
                   lambda t: X.parse_key_condition(t, names, values, COMPOSITE)):
            try:
                fn(text)
            except DynamoError as e:
                assert e.type_name == "ValidationException", (text, e)
