"""DynamoDB AttributeValues in their JSON wire form.

Values stay in wire form throughout the store (``{"S": "x"}``, ``{"N": "12.5"}``,
``{"B": "<base64>"}``, ``{"BOOL": true}``, ``{"NULL": true}``, ``{"M": {...}}``,
``{"L": [...]}``, ``{"SS": [...]}``, ``{"NS": [...]}``, ``{"BS": [...]}``); an
item is a ``dict`` of attribute name to value.  :func:`validate_value` and
:func:`validate_item` check a value from a request and return its canonical
form (numbers normalised as DynamoDB returns them: ``"1.0"`` -> ``"1"``,
``"1.5E2"`` -> ``"150"``, ``"-0"`` -> ``"0"``; binary re-encoded as standard
base64), so that stored values compare by plain equality of their parts.

Treat values as immutable: the update code shares unmodified sub-values
between an old item and the new one.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterable, Mapping

from .errors import DynamoError, serialization, validation

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]

TYPES = ("S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS")
SCALAR_TYPES = frozenset({"S", "N", "B"})
SET_TYPES = frozenset({"SS", "NS", "BS"})
KEY_TYPES = frozenset({"S", "N", "B"})
SET_ELEMENT_TYPE = {"SS": "S", "NS": "N", "BS": "B"}

HUMAN_TYPE = {
    "S": "STRING", "N": "NUMBER", "B": "BINARY", "BOOL": "BOOLEAN", "NULL": "NULL",
    "M": "MAP", "L": "LIST", "SS": "STRING SET", "NS": "NUMBER SET", "BS": "BINARY SET",
}
_SET_WORD = {"SS": "string", "NS": "number", "BS": "binary"}

MAX_ITEM_SIZE = 400 * 1024          # 409,600 bytes: an item of exactly this size is accepted
MAX_HASH_KEY_SIZE = 2048
MAX_RANGE_KEY_SIZE = 1024
MAX_NESTING_DEPTH = 32
MAX_NUMBER_DIGITS = 38
MAX_NUMBER_EXPONENT = 125           # largest magnitude: 9.9999999999999999999999999999999999999E+125
MIN_NUMBER_EXPONENT = -130          # smallest magnitude: 1E-130

ITEM_TOO_LARGE = "Item size has exceeded the maximum allowed size"
UPDATE_ITEM_TOO_LARGE = "Item size to update has exceeded the maximum allowed size"
NUMBER_OVERFLOW = "Number overflow. Attempting to store a number with magnitude larger than supported range"
NUMBER_UNDERFLOW = "Number underflow. Attempting to store a number with magnitude smaller than supported range"
NUMBER_PRECISION = "Attempting to store more than 38 significant digits in a Number"

# Arithmetic context: wide enough that no result of two valid numbers is
# rounded, so the 38-digit check sees the exact result.
_CTX = decimal.Context(prec=400, Emax=999_999, Emin=-999_999, traps=[decimal.InvalidOperation])
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")


# -- numbers ------------------------------------------------------------------


def parse_number(text: Any) -> Decimal:
    """A DynamoDB number string as an exact Decimal, checked against
    DynamoDB's limits (38 significant digits, magnitude 1E-130 to
    9.99...E+125); raises ValidationException (SerializationException for a
    JSON non-string)."""
    if not isinstance(text, str):
        raise _not_a_string(text, "String")
    if not _NUMBER_RE.match(text):
        raise validation(f"The parameter cannot be converted to a numeric value: {text}")
    try:
        d = Decimal(text)
    except decimal.InvalidOperation:
        # Only an exponent too large for the decimal module gets here.
        exp = text.lower().rsplit("e", 1)[1]
        raise validation(NUMBER_UNDERFLOW if exp.startswith("-") else NUMBER_OVERFLOW) from None
    check_number(d)
    return d


def check_number(d: Decimal) -> None:
    """Raise if ``d`` is outside what DynamoDB can store."""
    if not d.is_finite():
        raise validation(f"The parameter cannot be converted to a numeric value: {d}")
    if not d:
        return
    sig = _significant_digits(d)
    adjusted = d.adjusted()
    if adjusted > MAX_NUMBER_EXPONENT:
        raise validation(NUMBER_OVERFLOW)
    if adjusted < MIN_NUMBER_EXPONENT:
        raise validation(NUMBER_UNDERFLOW)
    if sig > MAX_NUMBER_DIGITS:
        raise validation(NUMBER_PRECISION)


def _significant_digits(d: Decimal) -> int:
    digits = d.as_tuple().digits
    n = len(digits)
    while n > 1 and digits[n - 1] == 0:
        n -= 1
    return n


def format_number(d: Decimal) -> str:
    """The canonical text of a number: plain notation, no exponent, no
    leading or trailing zeros, ``"0"`` for any zero."""
    if not d:
        return "0"
    return format(d.normalize(_CTX), "f")


def canonical_number(text: str) -> str:
    return format_number(parse_number(text))


def number_value(av: AttributeValue) -> Decimal:
    """The Decimal of an ``{"N": ...}`` value (assumed already validated)."""
    return Decimal(av["N"])


def number_size(d: Decimal) -> int:
    """Bytes a number counts for in the item size.

    1 + ceil(integer significant digits / 2) + ceil(fraction significant
    digits / 2), + 1 if negative; 1 for zero.  Measured against DynamoDB
    (the developer guide's "1 byte per two significant digits + 1" is only
    approximate: ``3.14159`` counts 5, ``123456`` counts 4).
    """
    if not d:
        return 1
    t = d.as_tuple()
    digits = list(t.digits)
    exp = int(t.exponent)
    while len(digits) > 1 and digits[-1] == 0:   # normalise trailing zeros
        digits.pop()
        exp += 1
    n = len(digits)
    if exp >= 0:
        int_sig, frac_sig = n, 0
    elif n + exp > 0:                 # digits straddle the decimal point
        int_sig, frac_sig = n + exp, -exp
    else:                             # a pure fraction
        int_sig, frac_sig = 0, n
    return 1 + (int_sig + 1) // 2 + (frac_sig + 1) // 2 + (1 if t.sign else 0)


def add_numbers(a: Decimal, b: Decimal) -> Decimal:
    r = _CTX.add(a, b)
    check_number(r)
    return r


def subtract_numbers(a: Decimal, b: Decimal) -> Decimal:
    r = _CTX.subtract(a, b)
    check_number(r)
    return r


def number(d: Decimal | int | str) -> AttributeValue:
    """``{"N": ...}`` for a Decimal, int or number string (canonical)."""
    if isinstance(d, str):
        return {"N": canonical_number(d)}
    d = Decimal(d)
    check_number(d)
    return {"N": format_number(d)}


# -- binary -------------------------------------------------------------------


def decode_binary(text: Any) -> bytes:
    if isinstance(text, (bytes, bytearray)):
        return bytes(text)
    if not isinstance(text, str):
        raise _not_a_string(text, "Blob")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise serialization(f"Base64 encoded value is not valid: {text[:64]}") from None


def encode_binary(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def binary_value(av: AttributeValue) -> bytes:
    return base64.b64decode(av["B"])


# -- validation ----------------------------------------------------------------


def _json_kind(v: Any) -> str:
    if v is True:
        return "TRUE_VALUE"
    if v is False:
        return "FALSE_VALUE"
    if isinstance(v, (int, float)):
        return "NUMBER_VALUE"
    if isinstance(v, str):
        return "STRING_VALUE"
    if isinstance(v, dict):
        return "START_OBJECT"
    if isinstance(v, list):
        return "START_ARRAY"
    return "VALUE"


def _not_a_string(v: Any, target: str) -> DynamoError:
    if isinstance(v, dict):
        return serialization("Start of structure or map found where not expected.")
    if isinstance(v, list):
        return serialization("Start of list found where not expected")
    return serialization(f"{_json_kind(v)} cannot be converted to {target}")


def validate_value(av: Any, *, _depth: int = 0) -> AttributeValue:
    """Check one wire AttributeValue; return its canonical form.

    Raises DynamoError (ValidationException with DynamoDB's messages, or
    SerializationException where the JSON has the wrong shape).  Members set
    to JSON null count as absent, as in DynamoDB.
    """
    if not isinstance(av, dict):
        if isinstance(av, list):
            raise serialization("Start of list found where not expected")
        raise serialization(f"Unexpected value type in payload: {_json_kind(av)}")
    if _depth > MAX_NESTING_DEPTH:
        raise validation("Nesting Levels have exceeded supported limits")
    present = [k for k in TYPES if av.get(k) is not None]
    if not present:
        raise validation("Supplied AttributeValue is empty, must contain exactly one of the supported datatypes")
    if len(present) > 1:
        raise validation(
            "Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes")
    t = present[0]
    v = av[t]
    if t == "S":
        if not isinstance(v, str):
            raise _not_a_string(v, "String")
        return {"S": v}
    if t == "N":
        return {"N": format_number(parse_number(v))}
    if t == "B":
        return {"B": encode_binary(decode_binary(v))}
    if t == "BOOL":
        if not isinstance(v, bool):
            raise serialization(f"{_json_kind(v)} cannot be converted to Boolean")
        return {"BOOL": v}
    if t == "NULL":
        if not isinstance(v, bool):
            raise serialization(f"{_json_kind(v)} cannot be converted to Boolean")
        # DynamoDB now accepts {"NULL": false} and stores it as {"NULL": true}.
        return {"NULL": True}
    if t == "M":
        if not isinstance(v, dict):
            raise serialization("Expected a map for M")
        return {"M": {_check_name(k): validate_value(x, _depth=_depth + 1) for k, x in v.items()}}
    if t == "L":
        if not isinstance(v, list):
            raise serialization("Expected a list for L")
        return {"L": [validate_value(x, _depth=_depth + 1) for x in v]}
    # sets
    if not isinstance(v, list):
        raise serialization(f"Expected a list for {t}")
    if not v:
        raise validation(f"One or more parameter values were invalid: An {_SET_WORD[t]} set  may not be empty")
    if t == "SS":
        out = []
        for x in v:
            if not isinstance(x, str):
                raise _not_a_string(x, "String")
            out.append(x)
        keys: list[Any] = out
    elif t == "NS":
        out = [format_number(parse_number(x)) for x in v]
        keys = out
    else:
        raw = [decode_binary(x) for x in v]
        out = [encode_binary(b) for b in raw]
        keys = raw
    if len(set(keys)) != len(keys):
        shown = ", ".join(str(x) for x in v)
        raise validation(f"One or more parameter values were invalid: Input collection [{shown}] contains duplicates.")
    return {t: out}


def _check_name(name: Any) -> str:
    if not isinstance(name, str):
        raise serialization("Map keys must be strings")
    return name


def validate_item(item: Any) -> Item:
    """Check every attribute of an item; return the canonical item."""
    if not isinstance(item, dict):
        raise serialization("Expected a map of attribute names to AttributeValues")
    return {_check_name(k): validate_value(v) for k, v in item.items()}


def value_type(av: AttributeValue) -> str:
    """The type tag of a (valid) value: "S", "N", ..."""
    for t in av:
        return t
    raise validation("Supplied AttributeValue is empty, must contain exactly one of the supported datatypes")


def describe(av: AttributeValue) -> str:
    """A value as DynamoDB prints it in messages: ``{N:5}``, ``{S:abc}``."""
    t = value_type(av)
    v = av[t]
    if t in ("SS", "NS", "BS", "L"):
        return "{%s:[%s]}" % (t, ",".join(describe(x) if t == "L" else str(x) for x in v))
    if t == "M":
        return "{M:{%s}}" % ",".join(f"{k}={describe(x)}" for k, x in v.items())
    if t in ("BOOL", "NULL"):
        return "{%s:%s}" % (t, "true" if v else "false")
    return "{%s:%s}" % (t, v)


# -- equality and ordering ------------------------------------------------------


def values_equal(a: AttributeValue | None, b: AttributeValue | None) -> bool:
    """DynamoDB equality: same type and same value; numbers numerically,
    sets unordered, maps and lists deeply.  ``None`` (absent) equals nothing."""
    if a is None or b is None:
        return False
    ta, tb = value_type(a), value_type(b)
    if ta != tb:
        return False
    va, vb = a[ta], b[tb]
    if ta == "S" or ta == "BOOL" or ta == "NULL":
        return va == vb
    if ta == "N":
        return va == vb or Decimal(va) == Decimal(vb)
    if ta == "B":
        return va == vb or decode_binary(va) == decode_binary(vb)
    if ta == "SS":
        return len(va) == len(vb) and set(va) == set(vb)
    if ta == "NS":
        return len(va) == len(vb) and {Decimal(x) for x in va} == {Decimal(x) for x in vb}
    if ta == "BS":
        return len(va) == len(vb) and {decode_binary(x) for x in va} == {decode_binary(x) for x in vb}
    if ta == "L":
        return len(va) == len(vb) and all(values_equal(x, y) for x, y in zip(va, vb))
    if ta == "M":
        return va.keys() == vb.keys() and all(values_equal(va[k], vb[k]) for k in va)
    return False


def compare_values(a: AttributeValue | None, b: AttributeValue | None) -> int | None:
    """-1, 0 or 1 for two values DynamoDB can order (both N, both S or both
    B); None otherwise.  Numbers compare numerically, strings by their UTF-8
    bytes (which is code-point order), binary by bytes."""
    if a is None or b is None:
        return None
    ta, tb = value_type(a), value_type(b)
    if ta != tb:
        return None
    x: Any
    y: Any
    if ta == "N":
        x, y = Decimal(a["N"]), Decimal(b["N"])
    elif ta == "S":
        x, y = a["S"], b["S"]
    elif ta == "B":
        x, y = decode_binary(a["B"]), decode_binary(b["B"])
    else:
        return None
    return (x > y) - (x < y)


def set_elements(av: AttributeValue) -> tuple[str, list[Any]]:
    """(set type, comparable elements) of a set value."""
    t = value_type(av)
    v = av[t]
    if t == "SS":
        return t, list(v)
    if t == "NS":
        return t, [Decimal(x) for x in v]
    if t == "BS":
        return t, [decode_binary(x) for x in v]
    raise ValueError(f"not a set: {t}")


# -- sizes --------------------------------------------------------------------


def value_size(av: AttributeValue) -> int:
    """Bytes a value counts for in DynamoDB's item size (without its name).

    S: UTF-8 bytes; N: see :func:`number_size`; B: raw bytes; BOOL/NULL: 1;
    sets: the sum of their elements; L and M: 3 bytes + 1 byte per element +
    the elements (for M each element includes its key's UTF-8 bytes).
    """
    t = value_type(av)
    v = av[t]
    if t == "S":
        return len(v.encode("utf-8", "surrogatepass"))
    if t == "N":
        return number_size(Decimal(v))
    if t == "B":
        return len(decode_binary(v))
    if t in ("BOOL", "NULL"):
        return 1
    if t == "SS":
        return sum(len(x.encode("utf-8", "surrogatepass")) for x in v)
    if t == "NS":
        return sum(number_size(Decimal(x)) for x in v)
    if t == "BS":
        return sum(len(decode_binary(x)) for x in v)
    if t == "L":
        return 3 + sum(1 + value_size(x) for x in v)
    if t == "M":
        return 3 + sum(1 + len(k.encode("utf-8", "surrogatepass")) + value_size(x) for k, x in v.items())
    raise validation("Supplied AttributeValue is empty, must contain exactly one of the supported datatypes")


def item_size(item: Mapping[str, AttributeValue]) -> int:
    """An item's size: each attribute's name (UTF-8 bytes) plus its value."""
    return sum(len(k.encode("utf-8", "surrogatepass")) + value_size(v) for k, v in item.items())


def check_item_size(item: Mapping[str, AttributeValue], *, update: bool = False) -> int:
    """Raise ValidationException if the item is over 400 KB (409,600 bytes is
    still accepted); ``update=True`` gives UpdateItem's wording.  Returns the size."""
    size = item_size(item)
    if size > MAX_ITEM_SIZE:
        raise validation(UPDATE_ITEM_TOO_LARGE if update else ITEM_TOO_LARGE)
    return size


# -- keys ---------------------------------------------------------------------


@dataclass(frozen=True)
class KeySchema:
    """A table's primary key: hash key name and type, optional range key."""

    hash_name: str
    hash_type: str = "S"
    range_name: str | None = None
    range_type: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.hash_name,) if self.range_name is None else (self.hash_name, self.range_name)

    def type_of(self, name: str) -> str | None:
        if name == self.hash_name:
            return self.hash_type
        if name == self.range_name:
            return self.range_type
        return None

    @classmethod
    def from_api(cls, key_schema: Iterable[Mapping[str, str]],
                 attribute_definitions: Iterable[Mapping[str, str]]) -> "KeySchema":
        """From CreateTable's KeySchema and AttributeDefinitions lists (assumed
        already checked by the CreateTable handler)."""
        types = {d["AttributeName"]: d["AttributeType"] for d in attribute_definitions}
        hash_name = range_name = None
        for k in key_schema:
            if k["KeyType"] == "HASH":
                hash_name = k["AttributeName"]
            elif k["KeyType"] == "RANGE":
                range_name = k["AttributeName"]
        if hash_name is None:
            raise validation("No Hash Key specified in schema.  All Dynamo DB tables must have exactly one hash key")
        return cls(hash_name, types.get(hash_name, "S"), range_name,
                   types.get(range_name) if range_name is not None else None)

    def to_api(self) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        ks = [{"AttributeName": self.hash_name, "KeyType": "HASH"}]
        ad = [{"AttributeName": self.hash_name, "AttributeType": self.hash_type}]
        if self.range_name is not None:
            ks.append({"AttributeName": self.range_name, "KeyType": "RANGE"})
            ad.append({"AttributeName": self.range_name, "AttributeType": str(self.range_type)})
        return ks, ad


def _check_key_value(name: str, expected: str, av: AttributeValue, *, is_range: bool) -> None:
    t = value_type(av)
    if t != expected:
        raise validation(f"One or more parameter values were invalid: Type mismatch for key {name} "
                         f"expected: {expected} actual: {t}")
    if t == "S" and av["S"] == "":
        raise validation("One or more parameter values are not valid. The AttributeValue for a key attribute "
                         f"cannot contain an empty string value. Key: {name}")
    if t == "B" and av["B"] == "":
        raise validation("One or more parameter values are not valid. The AttributeValue for a key attribute "
                         f"cannot contain an empty binary value. Key: {name}")
    size = value_size(av)
    if not is_range and size > MAX_HASH_KEY_SIZE:
        raise validation("One or more parameter values were invalid: Size of hashkey has exceeded the maximum "
                         f"size limit of{MAX_HASH_KEY_SIZE} bytes")
    if is_range and size > MAX_RANGE_KEY_SIZE:
        raise validation("One or more parameter values were invalid: Aggregated size of all range keys has "
                         f"exceeded the size limit of {MAX_RANGE_KEY_SIZE} bytes")


def extract_key(item: Mapping[str, AttributeValue], schema: KeySchema) -> Item:
    """The primary key of an item being written (PutItem, a Put in a
    transaction, BatchWriteItem): checks the key attributes are present, of
    the schema's type, not empty and within the key size limits."""
    key: Item = {}
    for name, typ, is_range in ((schema.hash_name, schema.hash_type, False),
                                (schema.range_name, schema.range_type, True)):
        if name is None:
            continue
        av = item.get(name)
        if av is None:
            raise validation(f"One or more parameter values were invalid: Missing the key {name} in the item")
        _check_key_value(name, str(typ), av, is_range=is_range)
        key[name] = av
    return key


def validate_key(key: Any, schema: KeySchema) -> Item:
    """A request's ``Key`` (GetItem, UpdateItem, DeleteItem, ...): exactly the
    schema's key attributes, with the right types.  Returns the canonical key."""
    if not isinstance(key, dict):
        raise serialization("Expected a map of attribute names to AttributeValues")
    if set(key) != set(schema.names):
        raise validation("The provided key element does not match the schema")
    canon = {k: validate_value(v) for k, v in key.items()}
    for name, typ, is_range in ((schema.hash_name, schema.hash_type, False),
                                (schema.range_name, schema.range_type, True)):
        if name is None:
            continue
        if value_type(canon[name]) != typ:
            raise validation("The provided key element does not match the schema")
        _check_key_value(name, str(typ), canon[name], is_range=is_range)
    return canon


def key_of(item: Mapping[str, AttributeValue], schema: KeySchema) -> Item:
    """The key attributes of a stored item (no checks)."""
    return {n: item[n] for n in schema.names if n in item}


# -- order-preserving key encoding -----------------------------------------------

_NEG, _ZERO, _POS = 0x01, 0x02, 0x03


def encode_number(d: Decimal) -> bytes:
    """Bytes whose lexicographic order is the numeric order of DynamoDB
    numbers (|d| in [1E-130, 1E126), up to 38 significant digits, or zero).

    Layout: a sign byte (negative < zero < positive); for non-zero numbers
    the decimal exponent ``e`` of ``0.d1d2d3... x 10^e`` biased by 130 into
    one byte (covers e in [-129, 126]); then the digits in base-100 pairs,
    each byte 1..100, closed by 0x00.  A negative number has exponent and
    digit bytes inverted and is closed by 0xFF, so a larger magnitude sorts
    lower.  Equal numbers (``1``, ``1.0``, ``1E0``) encode equally.
    """
    if not d:
        return bytes([_ZERO])
    t = d.as_tuple()
    digits = list(t.digits)
    while digits and digits[-1] == 0:
        digits.pop()
    e = d.adjusted() + 1
    if not (-129 <= e <= 126):
        raise validation(NUMBER_OVERFLOW if e > 0 else NUMBER_UNDERFLOW)
    if len(digits) % 2:
        digits.append(0)
    pairs = [digits[i] * 10 + digits[i + 1] + 1 for i in range(0, len(digits), 2)]
    if t.sign:
        return bytes([_NEG, 255 - (e + 129)] + [255 - p for p in pairs] + [0xFF])
    return bytes([_POS, e + 129] + pairs + [0x00])


def encode_key_value(av: AttributeValue) -> bytes:
    """Order-preserving bytes of a key value (S, N or B), for sorting sort
    keys in storage: numbers numerically, strings by UTF-8 bytes, binary by
    bytes.  Strings and binary encode as themselves, so a ``begins_with``
    prefix encodes to a byte prefix.  Values of different types are not
    tagged apart (a key attribute has one type per table)."""
    t = value_type(av)
    if t == "S":
        return av["S"].encode("utf-8", "surrogatepass")
    if t == "N":
        return encode_number(Decimal(av["N"]))
    if t == "B":
        return decode_binary(av["B"])
    raise validation(f"Key values must be of type S, N or B, not {t}")


def encode_key_tuple(parts: Iterable[bytes]) -> bytes:
    """Join byte strings into one whose order is the tuple order of the parts
    (each part is escaped, 0x00 -> 0x00 0xFF, and closed by 0x00 0x01), e.g.
    ``encode_key_tuple([table, encode_key_value(pk), encode_key_value(sk)])``."""
    out = bytearray()
    for p in parts:
        out += p.replace(b"\x00", b"\x00\xff")
        out += b"\x00\x01"
    return bytes(out)


def prefix_successor(prefix: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with
    ``prefix`` (None if there is none: the prefix is empty or all 0xFF)."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)
