"""DynamoDB expressions: ConditionExpression / FilterExpression,
KeyConditionExpression, UpdateExpression and ProjectionExpression.

Parsing is done by a lark LALR(1) parser over DynamoDB's grammar (below),
fed by our own tokenizer so that every character becomes a token (an
unknown one becomes an ERROR token the grammar never accepts).  A syntax
error is therefore always reported at one token, with DynamoDB's context:
``Syntax error; token: "<tok>", near: "<prev tok next>"`` (the source from
the previous token to the next one).

Work is split in two:

* the *syntax* of a text (parse, redundant parentheses, reserved words) does
  not depend on the request, and is cached per (expression kind, text);
* *binding* resolves ``#name`` / ``:value`` placeholders of one request,
  checks functions, operand types and paths, and compiles the expression
  into closures over wire-form items.

Entry points::

    parse_condition(text, names, values, kind="ConditionExpression") -> Condition
    parse_key_condition(text, names, values, key_schema) -> KeyCondition
    parse_update(text, names, values) -> Update
    parse_projection(text, names) -> Projection
    validate_expression_attributes(names, values, expressions_present) -> (names, values)
    check_unused(names, values, *parsed)

Every parsed object carries ``names_used`` / ``values_used`` (the
placeholders it referenced); :func:`check_unused` rejects the request's
placeholders that no expression of the request used, as DynamoDB does.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping, Sequence

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput
from lark.lexer import Lexer

from . import values as V
from .errors import DynamoError, serialization, validation
from .reserved import is_reserved

AV = dict[str, Any]
Item = dict[str, AV]
PathT = tuple[Any, ...]          # resolved document path: str names and int list indexes

MAX_EXPRESSION_BYTES = 4096
MAX_IN_OPERANDS = 100
MAX_NESTING = 100                # parentheses or NOTs (keeps recursion bounded)

CONDITION_FUNCTIONS = {          # name -> number of operands
    "attribute_exists": 1, "attribute_not_exists": 1, "attribute_type": 2,
    "begins_with": 2, "contains": 2, "size": 1,
}
UPDATE_FUNCTIONS = {"if_not_exists": 2, "list_append": 2}
_BOOLEAN_FUNCTIONS = {"attribute_exists", "attribute_not_exists", "attribute_type", "begins_with", "contains"}
ATTRIBUTE_TYPES = ("B", "NULL", "SS", "BOOL", "L", "BS", "N", "NS", "S", "M")

NONEXISTENT_ATTRIBUTE = "The provided expression refers to an attribute that does not exist in the item"
INVALID_UPDATE_PATH = "The document path provided in the update expression is invalid for update"
INCORRECT_DATA_TYPE = "An operand in the update expression has an incorrect data type"


# ---------------------------------------------------------------------------
# Tokens and grammar
# ---------------------------------------------------------------------------

_KEYWORDS = frozenset({"AND", "OR", "NOT", "BETWEEN", "IN", "SET", "REMOVE", "ADD", "DELETE"})
_OPERATORS = {
    "=": "EQ", "<>": "NE", "<": "LT", "<=": "LE", ">": "GT", ">=": "GE", "+": "PLUS", "-": "MINUS",
    "(": "LPAR", ")": "RPAR", "[": "LSQB", "]": "RSQB", ".": "DOT", ",": "COMMA",
}
_TOKEN_RE = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<NAME_REF>\#[A-Za-z0-9_]+)"
    r"|(?P<VALUE_REF>:[A-Za-z0-9_]+)"
    r"|(?P<WORD>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<INDEX>[0-9]+)"
    r"|(?P<OP><>|<=|>=|[=<>+\-(),.\[\]])"
    r"|(?P<ERROR>.)",
    re.S,
)


def _tokenize(text: str) -> list[Token]:
    tokens = []
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind == "ws":
            continue
        value = m.group()
        if kind == "WORD":
            upper = value.upper()
            kind = upper if upper in _KEYWORDS else "NAME"
        elif kind == "OP":
            kind = _OPERATORS[value]
        tokens.append(Token(kind, value, start_pos=m.start(), end_pos=m.end()))  # type: ignore[arg-type]
    return tokens


class _DynamoLexer(Lexer):
    """Hands lark the tokens of :func:`_tokenize`."""

    def __init__(self, lexer_conf: Any) -> None:
        pass

    def lex(self, data: Any) -> Iterable[Token]:  # type: ignore[override]
        text = data if isinstance(data, str) else getattr(data, "text", data)
        return iter(_tokenize(text))


_GRAMMAR = r"""
%declare NAME NAME_REF VALUE_REF INDEX AND OR NOT BETWEEN IN SET REMOVE ADD DELETE
%declare EQ NE LT LE GT GE PLUS MINUS LPAR RPAR LSQB RSQB DOT COMMA ERROR

condition: or_expr
?or_expr: and_expr
        | or_expr OR and_expr                  -> or_
?and_expr: not_expr
         | and_expr AND not_expr               -> and_
?not_expr: primary
         | NOT not_expr                        -> not_
?primary: comparison
        | between
        | in_list
        | call
        | paren
paren: LPAR or_expr RPAR
comparison: operand comparator operand
comparator: EQ | NE | LT | LE | GT | GE
between: operand BETWEEN operand AND operand
in_list: operand IN LPAR operand (COMMA operand)* RPAR
?operand: path
        | value
        | call
value: VALUE_REF
call: NAME LPAR operand (COMMA operand)* RPAR
path: (NAME | NAME_REF) (DOT (NAME | NAME_REF) | LSQB INDEX RSQB)*

update: clause+
clause: SET set_action (COMMA set_action)*     -> set_clause
      | REMOVE path (COMMA path)*              -> remove_clause
      | ADD path value (COMMA path value)*     -> add_clause
      | DELETE path value (COMMA path value)*  -> delete_clause
set_action: path EQ set_value
?set_value: operand
          | operand PLUS operand               -> plus
          | operand MINUS operand              -> minus

projection: path (COMMA path)*
"""

_PARSER = Lark(_GRAMMAR, parser="lalr", lexer=_DynamoLexer, start=["condition", "update", "projection"])


# ---------------------------------------------------------------------------
# Syntax tree (independent of the request's placeholders)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Path:
    elems: tuple[tuple[str, Any], ...]     # ("name", "a") | ("ref", "#a") | ("index", 3)


@dataclass(frozen=True, slots=True)
class _Value:
    name: str


@dataclass(frozen=True, slots=True)
class _Call:
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Compare:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True, slots=True)
class _Between:
    operand: Any
    low: Any
    high: Any


@dataclass(frozen=True, slots=True)
class _In:
    operand: Any
    items: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _And:
    parts: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Or:
    parts: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Not:
    inner: Any


@dataclass(frozen=True, slots=True)
class _Paren:
    inner: Any


@dataclass(frozen=True, slots=True)
class _Arith:
    op: str
    left: Any
    right: Any


@dataclass(frozen=True, slots=True)
class _Clause:
    kind: str                               # SET | REMOVE | ADD | DELETE
    actions: tuple[tuple[Any, ...], ...]     # (path, value-or-None)


@dataclass(frozen=True)
class _Syntax:
    tree: Any
    name_refs: tuple[str, ...]     # placeholders in order of first appearance
    value_refs: tuple[str, ...]


def _convert(node: Any) -> Any:
    """lark tree -> our syntax nodes.  AND/OR chains are flattened without
    recursion (they are left-recursive in the grammar and can be long)."""
    if isinstance(node, Token):
        raise AssertionError(node)
    data = node.data
    if data in ("or_", "and_"):
        parts = []
        cur = node
        while isinstance(cur, Tree) and cur.data == data:
            parts.append(cur.children[2])
            cur = cur.children[0]
        parts.append(cur)
        parts.reverse()
        conv = tuple(_convert(p) for p in parts)
        return _Or(conv) if data == "or_" else _And(conv)
    ch = node.children
    if data == "condition":
        return _convert(ch[0])
    if data == "not_":
        return _Not(_convert(ch[1]))
    if data == "paren":
        return _Paren(_convert(ch[1]))
    if data == "comparison":
        return _Compare(ch[1].children[0].value, _convert(ch[0]), _convert(ch[2]))
    if data == "between":
        return _Between(_convert(ch[0]), _convert(ch[2]), _convert(ch[4]))
    if data == "in_list":
        items = tuple(_convert(c) for c in ch[3:] if isinstance(c, Tree))
        return _In(_convert(ch[0]), items)
    if data == "value":
        return _Value(ch[0].value)
    if data == "call":
        return _Call(ch[0].value, tuple(_convert(c) for c in ch[1:] if isinstance(c, Tree)))
    if data == "path":
        elems: list[tuple[str, Any]] = []
        for tok in ch:
            if tok.type == "NAME":
                elems.append(("name", tok.value))
            elif tok.type == "NAME_REF":
                elems.append(("ref", tok.value))
            elif tok.type == "INDEX":
                elems.append(("index", int(tok.value)))
        return _Path(tuple(elems))
    if data in ("plus", "minus"):
        return _Arith("+" if data == "plus" else "-", _convert(ch[0]), _convert(ch[2]))
    if data == "update":
        return tuple(_convert(c) for c in ch)
    if data == "set_clause":
        acts = tuple((_convert(c.children[0]), _convert(c.children[2])) for c in ch if isinstance(c, Tree))
        return _Clause("SET", acts)
    if data == "remove_clause":
        return _Clause("REMOVE", tuple((_convert(c), None) for c in ch if isinstance(c, Tree)))
    if data in ("add_clause", "delete_clause"):
        subs = [c for c in ch if isinstance(c, Tree)]
        acts = tuple((_convert(subs[i]), _convert(subs[i + 1])) for i in range(0, len(subs), 2))
        return _Clause("ADD" if data == "add_clause" else "DELETE", acts)
    if data == "projection":
        return tuple(_convert(c) for c in ch if isinstance(c, Tree))
    raise AssertionError(f"unexpected node {data}")


def _walk(node: Any) -> Iterable[Any]:
    """Syntax nodes in source order (iterative, pre-order)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, (_And, _Or)):
            kids: Sequence[Any] = n.parts
        elif isinstance(n, (_Not, _Paren)):
            kids = (n.inner,)
        elif isinstance(n, _Compare):
            kids = (n.left, n.right)
        elif isinstance(n, _Between):
            kids = (n.operand, n.low, n.high)
        elif isinstance(n, _In):
            kids = (n.operand,) + n.items
        elif isinstance(n, _Call):
            kids = n.args
        elif isinstance(n, _Arith):
            kids = (n.left, n.right)
        elif isinstance(n, _Clause):
            kids = [x for act in n.actions for x in act if x is not None]
        elif isinstance(n, tuple):
            kids = n
        else:
            kids = ()
        stack.extend(reversed(kids))


def _syntax_error(kind: str, text: str, err: UnexpectedInput) -> DynamoError:
    tokens = _tokenize(text)
    tok = getattr(err, "token", None)
    if tok is None or tok.type == "$END":
        shown = "<EOF>"
        idx = len(tokens)
    else:
        shown = tok.value
        idx = next((i for i, t in enumerate(tokens) if t.start_pos == tok.start_pos), len(tokens))
    start_tok = tokens[idx - 1] if idx > 0 else (tokens[idx] if idx < len(tokens) else None)
    end_tok = tokens[idx + 1] if idx + 1 < len(tokens) else (tokens[idx] if idx < len(tokens) else start_tok)
    near = text[start_tok.start_pos:end_tok.end_pos] if start_tok is not None and end_tok is not None else ""
    return validation(f'Invalid {kind}: Syntax error; token: "{shown}", near: "{near}"')


@dataclass(frozen=True)
class _Failure:
    message: str


@functools.lru_cache(maxsize=4096)
def _syntax_cached(kind: str, start: str, text: str) -> _Syntax | _Failure:
    try:
        return _syntax(kind, start, text)
    except DynamoError as e:
        return _Failure(str(e.message))
    except RecursionError:
        return _Failure(f"Invalid {kind}: The expression has too many nesting levels")


def _syntax(kind: str, start: str, text: str) -> _Syntax:
    if not text.strip():
        raise validation(f"Invalid {kind}: The expression can not be empty;")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_EXPRESSION_BYTES:
        raise validation(f"Invalid {kind}: Expression size has exceeded the maximum allowed size;")
    depth = deepest = nots = 0
    for tok in _tokenize(text):
        if tok.type == "LPAR":
            depth += 1
            deepest = max(deepest, depth)
        elif tok.type == "RPAR":
            depth -= 1
        elif tok.type == "NOT":
            nots += 1
    if deepest > MAX_NESTING or nots > MAX_NESTING:
        raise validation(f"Invalid {kind}: The expression has too many nesting levels")
    try:
        tree = _PARSER.parse(text, start=start)
    except UnexpectedInput as e:
        raise _syntax_error(kind, text, e) from None
    ast = _convert(tree)
    nodes = list(_walk(ast))
    # redundant parentheses: a parenthesised group that is only another group
    for n in nodes:
        if isinstance(n, _Paren) and isinstance(n.inner, _Paren):
            raise validation(f"Invalid {kind}: The expression has redundant parentheses;")
    # reserved words, names and values, in source order
    name_refs: dict[str, None] = {}
    value_refs: dict[str, None] = {}
    for n in nodes:
        if isinstance(n, _Path):
            for k, v in n.elems:
                if k == "name" and is_reserved(v):
                    raise validation(f"Invalid {kind}: Attribute name is a reserved keyword; reserved keyword: {v}")
                if k == "ref":
                    name_refs.setdefault(v)
        elif isinstance(n, _Value):
            value_refs.setdefault(n.name)
    if start == "update":
        seen: set[str] = set()
        for clause in ast:
            if clause.kind in seen:
                raise validation(
                    f'Invalid {kind}: The "{clause.kind}" section can only be used once in an update expression;')
            seen.add(clause.kind)
    return _Syntax(ast, tuple(name_refs), tuple(value_refs))


def _get_syntax(kind: str, start: str, text: Any) -> _Syntax:
    if not isinstance(text, str):
        raise serialization(f"{V._json_kind(text)} cannot be converted to String")
    result = _syntax_cached(kind, start, text)
    if isinstance(result, _Failure):
        raise validation(result.message)
    return result


# ---------------------------------------------------------------------------
# Binding: placeholders, checks, compilation
# ---------------------------------------------------------------------------


def render_path(path: PathT) -> str:
    """A path as DynamoDB prints it in messages: ``[a, b, [2]]``."""
    return "[" + ", ".join(f"[{e}]" if isinstance(e, int) else str(e) for e in path) + "]"


def get_path(item: Mapping[str, AV] | None, path: PathT) -> AV | None:
    """The value at a resolved document path, or None if absent (or a map
    key is applied to a non-map, an index to a non-list)."""
    if not item:
        return None
    cur = item.get(path[0])
    for el in path[1:]:
        if cur is None:
            return None
        if isinstance(el, int):
            lst = cur.get("L")
            if lst is None or el >= len(lst):
                return None
            cur = lst[el]
        else:
            m = cur.get("M")
            if m is None:
                return None
            cur = m.get(el)
    return cur


@dataclass
class _Operand:
    kind: str                       # "path" | "value" | "size" | "call"
    fn: Callable[[Mapping[str, AV]], Any]
    path: PathT | None = None
    const: AV | None = None


def _path_operand(p: PathT) -> _Operand:
    def read(item: Mapping[str, AV]) -> AV | None:
        return get_path(item, p)
    return _Operand("path", read, path=p)


def _const_operand(c: AV) -> _Operand:
    def const(item: Mapping[str, AV]) -> AV | None:
        return c
    return _Operand("value", const, const=c)


class _Binder:
    def __init__(self, kind: str, syntax: _Syntax, names: Mapping[str, Any] | None,
                 values: Mapping[str, Any] | None) -> None:
        self.kind = kind
        names = names or {}
        values = values or {}
        for ref in syntax.name_refs:
            if ref not in names:
                raise self.err(f"An expression attribute name used in the document path is not defined; "
                               f"attribute name: {ref}")
        for ref in syntax.value_refs:
            if ref not in values:
                raise self.err(f"An expression attribute value used in expression is not defined; "
                               f"attribute value: {ref}")
        self.names = names
        self.raw_values = values
        self.values: dict[str, AV] = {}
        for ref in syntax.value_refs:
            self.values[ref] = _checked_value(ref, values[ref])

    def err(self, message: str) -> DynamoError:
        return validation(f"Invalid {self.kind}: {message}")

    def path(self, node: _Path) -> PathT:
        out: list[Any] = []
        for k, v in node.elems:
            if k == "ref":
                name = self.names[v]
                if not isinstance(name, str):
                    raise serialization(f"{V._json_kind(name)} cannot be converted to String")
                out.append(name)
            else:
                out.append(v)
        return tuple(out)


def _checked_value(ref: str, raw: Any) -> AV:
    try:
        return V.validate_value(raw)
    except DynamoError as e:
        if e.type_name == "ValidationException":
            raise validation(f"ExpressionAttributeValues contains invalid value: {e.message} for key {ref}") from None
        raise


# -- condition / filter ---------------------------------------------------------


def _size_of(v: AV | None) -> AV | None:
    if v is None:
        return None
    t = V.value_type(v)
    x = v[t]
    if t == "S":
        n = len(x)
    elif t == "B":
        n = len(V.decode_binary(x))
    elif t in ("SS", "NS", "BS", "L", "M"):
        n = len(x)
    else:
        return None
    return {"N": str(n)}


def _begins_with(a: AV | None, b: AV | None) -> bool:
    if a is None or b is None:
        return False
    if "S" in a and "S" in b:
        return a["S"].startswith(b["S"])
    if "B" in a and "B" in b:
        return V.decode_binary(a["B"]).startswith(V.decode_binary(b["B"]))
    return False


def _contains(a: AV | None, b: AV | None) -> bool:
    if a is None or b is None:
        return False
    ta, tb = V.value_type(a), V.value_type(b)
    if ta == "S":
        return tb == "S" and b["S"] in a["S"]
    if ta == "B":
        return tb == "B" and V.decode_binary(b["B"]) in V.decode_binary(a["B"])
    if ta in V.SET_TYPES:
        if V.SET_ELEMENT_TYPE[ta] != tb:
            return False
        return any(V.values_equal({tb: x}, b) for x in a[ta])
    if ta == "L":
        return any(V.values_equal(x, b) for x in a["L"])
    return False


_ORDER_OPS: dict[str, Callable[[int], bool]] = {
    "<": lambda c: c < 0, "<=": lambda c: c <= 0, ">": lambda c: c > 0, ">=": lambda c: c >= 0,
}


class _ConditionCompiler:
    def __init__(self, b: _Binder) -> None:
        self.b = b

    # operands ---------------------------------------------------------------
    def operand(self, node: Any) -> _Operand:
        b = self.b
        if isinstance(node, _Path):
            return _path_operand(b.path(node))
        if isinstance(node, _Value):
            return _const_operand(b.values[node.name])
        if isinstance(node, _Call):
            if node.name == "size":
                args = self.args(node, 1)
                sp = self.need_path(node.name, args[0])

                def size(item: Mapping[str, AV]) -> AV | None:
                    return _size_of(get_path(item, sp))
                return _Operand("size", size)
            if node.name in CONDITION_FUNCTIONS or node.name in UPDATE_FUNCTIONS:
                raise b.err(f"The function is not allowed to be used this way in an expression; "
                            f"function: {node.name}")
            raise b.err(f"Invalid function name; function: {node.name}")
        raise AssertionError(node)

    def args(self, node: _Call, count: int) -> list[_Operand]:
        if len(node.args) != count:
            raise self.b.err(f"Incorrect number of operands for operator or function; operator or function: "
                             f"{node.name}, number of operands: {len(node.args)}")
        return [self.operand(a) for a in node.args]

    def need_path(self, fname: str, op: _Operand) -> PathT:
        if op.kind != "path" or op.path is None:
            raise self.b.err(f"Operator or function requires a document path; operator or function: {fname}")
        return op.path

    def distinct(self, opname: str, ops: Sequence[_Operand]) -> None:
        first = ops[0]
        if first.kind == "path" and any(o.kind == "path" and o.path == first.path for o in ops[1:]):
            assert first.path is not None
            raise self.b.err(f"The first operand must be distinct from the remaining operands for this operator "
                             f"or function; operator: {opname}, first operand: {render_path(first.path)}")

    def operand_type(self, opname: str, op: _Operand, allowed: Iterable[str]) -> None:
        if op.const is not None:
            t = V.value_type(op.const)
            if t not in allowed:
                raise self.b.err(f"Incorrect operand type for operator or function; operator or function: "
                                 f"{opname}, operand type: {t}")

    # conditions ---------------------------------------------------------------
    def condition(self, node: Any) -> Callable[[Mapping[str, AV]], bool]:
        if isinstance(node, _Paren):
            return self.condition(node.inner)
        if isinstance(node, _And):
            fs = [self.condition(p) for p in node.parts]
            return lambda item: all(f(item) for f in fs)
        if isinstance(node, _Or):
            fs = [self.condition(p) for p in node.parts]
            return lambda item: any(f(item) for f in fs)
        if isinstance(node, _Not):
            f = self.condition(node.inner)
            return lambda item: not f(item)
        if isinstance(node, _Compare):
            return self.compare(node)
        if isinstance(node, _Between):
            return self.between(node)
        if isinstance(node, _In):
            return self.in_list(node)
        if isinstance(node, _Call):
            return self.function(node)
        raise AssertionError(node)

    def compare(self, node: _Compare) -> Callable[[Mapping[str, AV]], bool]:
        l, r = self.operand(node.left), self.operand(node.right)
        op = node.op
        self.distinct(op, [l, r])
        lf, rf = l.fn, r.fn
        if op == "=":
            return lambda item: V.values_equal(lf(item), rf(item))
        if op == "<>":
            return lambda item: not V.values_equal(lf(item), rf(item))
        for o in (l, r):
            self.operand_type(op, o, V.SCALAR_TYPES)
        test = _ORDER_OPS[op]

        def ordered(item: Mapping[str, AV]) -> bool:
            c = V.compare_values(lf(item), rf(item))
            return c is not None and test(c)
        return ordered

    def between(self, node: _Between) -> Callable[[Mapping[str, AV]], bool]:
        x, lo, hi = self.operand(node.operand), self.operand(node.low), self.operand(node.high)
        self.distinct("BETWEEN", [x, lo, hi])
        for o in (x, lo, hi):
            self.operand_type("BETWEEN", o, V.SCALAR_TYPES)
        if lo.const is not None and hi.const is not None:
            _check_between_bounds(self.b.err, lo.const, hi.const)
        xf, lof, hif = x.fn, lo.fn, hi.fn

        def between(item: Mapping[str, AV]) -> bool:
            v = xf(item)
            c1 = V.compare_values(v, lof(item))
            if c1 is None or c1 < 0:
                return False
            c2 = V.compare_values(v, hif(item))
            return c2 is not None and c2 <= 0
        return between

    def in_list(self, node: _In) -> Callable[[Mapping[str, AV]], bool]:
        if len(node.items) > MAX_IN_OPERANDS:
            raise self.b.err(f"The IN operator is provided with too many operands; "
                             f"number of operands: {len(node.items)}")
        x = self.operand(node.operand)
        items = [self.operand(i) for i in node.items]
        self.distinct("IN", [x] + items)
        xf = x.fn
        fs = [i.fn for i in items]

        def in_(item: Mapping[str, AV]) -> bool:
            v = xf(item)
            return v is not None and any(V.values_equal(v, f(item)) for f in fs)
        return in_

    def function(self, node: _Call) -> Callable[[Mapping[str, AV]], bool]:
        name = node.name
        b = self.b
        if name not in _BOOLEAN_FUNCTIONS:
            if name in CONDITION_FUNCTIONS or name in UPDATE_FUNCTIONS:
                raise b.err(f"The function is not allowed to be used this way in an expression; function: {name}")
            raise b.err(f"Invalid function name; function: {name}")
        args = self.args(node, CONDITION_FUNCTIONS[name])
        if name in ("attribute_exists", "attribute_not_exists"):
            p = self.need_path(name, args[0])
            if name == "attribute_exists":
                return lambda item: get_path(item, p) is not None
            return lambda item: get_path(item, p) is None
        if name == "attribute_type":
            p = self.need_path(name, args[0])
            t = args[1]
            if t.kind != "value" or t.const is None:
                raise b.err(f"Incorrect operand type for operator or function; operator or function: "
                            f"attribute_type, operand type: {t.kind.upper()}")
            if "S" not in t.const:
                raise b.err(f"Incorrect operand type for operator or function; operator or function: "
                            f"attribute_type, operand type: {V.value_type(t.const)}")
            want = t.const["S"]
            if want not in ATTRIBUTE_TYPES:
                raise b.err(f"Invalid attribute type name found; type: {want}, valid types: "
                            f"{{ {','.join(ATTRIBUTE_TYPES)} }}")

            def attribute_type(item: Mapping[str, AV]) -> bool:
                v = get_path(item, p)
                return v is not None and V.value_type(v) == want
            return attribute_type
        self.distinct(name, args)
        a, c = args[0].fn, args[1].fn
        if name == "begins_with":
            for o in args:
                self.operand_type(name, o, ("S", "B"))
            return lambda item: _begins_with(a(item), c(item))
        # contains
        return lambda item: _contains(a(item), c(item))


def _check_between_bounds(err: Callable[[str], DynamoError], lo: AV, hi: AV) -> None:
    if V.value_type(lo) != V.value_type(hi):
        raise err(f"The BETWEEN operator requires same data type for lower and upper bounds; "
                  f"lower bound operand: AttributeValue: {V.describe(lo)}, "
                  f"upper bound operand: AttributeValue: {V.describe(hi)}")
    c = V.compare_values(lo, hi)
    if c is not None and c > 0:
        raise err(f"The BETWEEN operator requires upper bound to be greater than or equal to lower bound; "
                  f"lower bound operand: AttributeValue: {V.describe(lo)}, "
                  f"upper bound operand: AttributeValue: {V.describe(hi)}")


@dataclass(frozen=True)
class Condition:
    """A compiled ConditionExpression or FilterExpression."""

    text: str
    names_used: frozenset[str]
    values_used: frozenset[str]
    _fn: Callable[[Mapping[str, AV]], bool] = field(repr=False, compare=False)

    def evaluate(self, item: Mapping[str, AV] | None) -> bool:
        """True if the item (None or {} for an absent item) satisfies it."""
        return bool(self._fn(item or {}))

    __call__ = evaluate


def parse_condition(text: str, names: Mapping[str, Any] | None = None, values: Mapping[str, Any] | None = None,
                    kind: str = "ConditionExpression") -> Condition:
    """Parse and bind a ConditionExpression (``kind="FilterExpression"`` for
    a filter: same grammar, the messages name the parameter)."""
    syntax = _get_syntax(kind, "condition", text)
    b = _Binder(kind, syntax, names, values)
    try:
        fn = _ConditionCompiler(b).condition(syntax.tree)
    except RecursionError:
        raise b.err("The expression has too many nesting levels") from None
    return Condition(text, frozenset(syntax.name_refs), frozenset(syntax.value_refs), fn)


def parse_filter(text: str, names: Mapping[str, Any] | None = None,
                 values: Mapping[str, Any] | None = None) -> Condition:
    return parse_condition(text, names, values, kind="FilterExpression")


# -- key condition ----------------------------------------------------------------


@dataclass(frozen=True)
class KeyCondition:
    """A Query's KeyConditionExpression, resolved against the table's key.

    ``hash_value`` is the partition key value.  The sort key condition (if
    any) is ``sort_op`` ("=", "<", "<=", ">", ">=", "BETWEEN",
    "begins_with") with ``sort_values``, and as a range: ``lower`` /
    ``upper`` bounds (None = unbounded) with their inclusivity, and
    ``prefix`` for begins_with (then ``lower`` is the prefix, inclusive).
    """

    text: str
    hash_name: str
    hash_value: AV
    sort_name: str | None
    sort_op: str | None
    sort_values: tuple[AV, ...]
    names_used: frozenset[str]
    values_used: frozenset[str]

    @property
    def lower(self) -> AV | None:
        op = self.sort_op
        if op in ("=", ">", ">=", "BETWEEN", "begins_with"):
            return self.sort_values[0]
        return None

    @property
    def lower_inclusive(self) -> bool:
        return self.sort_op != ">"

    @property
    def upper(self) -> AV | None:
        op = self.sort_op
        if op in ("=", "<", "<="):
            return self.sort_values[0]
        if op == "BETWEEN":
            return self.sort_values[1]
        return None

    @property
    def upper_inclusive(self) -> bool:
        return self.sort_op != "<"

    @property
    def prefix(self) -> AV | None:
        return self.sort_values[0] if self.sort_op == "begins_with" else None

    def sort_matches(self, sort_value: AV | None) -> bool:
        """Whether an item's sort key value satisfies the sort condition."""
        op = self.sort_op
        if op is None:
            return True
        if sort_value is None:
            return False
        if op == "begins_with":
            return _begins_with(sort_value, self.sort_values[0])
        c = V.compare_values(sort_value, self.sort_values[0])
        if c is None:
            return False
        if op == "=":
            return c == 0
        if op == "BETWEEN":
            c2 = V.compare_values(sort_value, self.sort_values[1])
            return c >= 0 and c2 is not None and c2 <= 0
        return _ORDER_OPS[op](c)

    def matches(self, item: Mapping[str, AV]) -> bool:
        return (V.values_equal(item.get(self.hash_name), self.hash_value)
                and self.sort_matches(item.get(self.sort_name) if self.sort_name else None))

    def encoded_range(self) -> tuple[bytes | None, bool, bytes | None, bool]:
        """The sort condition as a range of :func:`values.encode_key_value`
        bytes: (lower, lower inclusive, upper, upper inclusive), None for
        unbounded.  begins_with becomes [prefix, successor(prefix))."""
        if self.sort_op is None:
            return None, True, None, True
        if self.sort_op == "begins_with":
            p = V.encode_key_value(self.sort_values[0])
            return p, True, V.prefix_successor(p), False
        lo, hi = self.lower, self.upper
        return (V.encode_key_value(lo) if lo is not None else None, self.lower_inclusive,
                V.encode_key_value(hi) if hi is not None else None, self.upper_inclusive)


_FLIP = {"=": "=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def parse_key_condition(text: str, names: Mapping[str, Any] | None, values: Mapping[str, Any] | None,
                        key_schema: V.KeySchema) -> KeyCondition:
    """Parse a KeyConditionExpression: partition key equality, optionally
    AND one sort key condition (= < <= > >= BETWEEN begins_with), with
    DynamoDB's restrictions and messages."""
    kind = "KeyConditionExpression"
    syntax = _get_syntax(kind, "condition", text)
    b = _Binder(kind, syntax, names, values)
    tree = syntax.tree
    for n in _walk(tree):
        if isinstance(n, _Or):
            raise b.err("Invalid operator used in KeyConditionExpression: OR")
        if isinstance(n, _Not):
            raise b.err("Invalid operator used in KeyConditionExpression: NOT")
        if isinstance(n, _In):
            raise b.err("Invalid operator used in KeyConditionExpression: IN")
        if isinstance(n, _Compare) and n.op == "<>":
            raise b.err("Invalid operator used in KeyConditionExpression: <>")
        if isinstance(n, _Call) and n.name != "begins_with":
            if n.name in CONDITION_FUNCTIONS or n.name in UPDATE_FUNCTIONS:
                raise b.err(f"Invalid operator used in KeyConditionExpression: {n.name}")
            raise b.err(f"Invalid function name; function: {n.name}")

    def unwrap(n: Any) -> Any:
        while isinstance(n, _Paren):
            n = n.inner
        return n

    top = unwrap(tree)
    conds = [unwrap(p) for p in top.parts] if isinstance(top, _And) else [top]
    if len(conds) > 2 or any(isinstance(c, _And) for c in conds):
        raise validation("Conditions can be of length 1 or 2 only")

    def key_name(node: Any) -> str:
        p = b.path(node)
        if len(p) != 1:
            raise b.err("KeyConditionExpressions cannot have conditions on nested attributes")
        return p[0]

    parsed: list[tuple[str, str, tuple[AV, ...]]] = []
    for c in conds:
        if isinstance(c, _Compare):
            left, right, op = c.left, c.right, c.op
            for side in (left, right):
                if isinstance(side, _Call):
                    raise b.err(f"Invalid operator used in KeyConditionExpression: {side.name}")
            if isinstance(left, _Path) and isinstance(right, _Path):
                raise validation("Invalid condition in KeyConditionExpression: Multiple attribute names used "
                                 "in one condition")
            if isinstance(left, _Value) and isinstance(right, _Value):
                raise validation("Invalid condition in KeyConditionExpression: No key attribute specified")
            if isinstance(left, _Value):
                left, right, op = right, left, _FLIP[op]
            parsed.append((key_name(left), op, (b.values[right.name],)))
        elif isinstance(c, _Between):
            if isinstance(c.operand, _Call):
                raise b.err(f"Invalid operator used in KeyConditionExpression: {c.operand.name}")
            if not isinstance(c.operand, _Path):
                raise validation("Invalid condition in KeyConditionExpression: No key attribute specified")
            for bound in (c.low, c.high):
                if isinstance(bound, _Path):
                    raise validation("Invalid condition in KeyConditionExpression: Multiple attribute names "
                                     "used in one condition")
                if isinstance(bound, _Call):
                    raise b.err(f"Invalid operator used in KeyConditionExpression: {bound.name}")
            parsed.append((key_name(c.operand), "BETWEEN", (b.values[c.low.name], b.values[c.high.name])))
        elif isinstance(c, _Call):          # begins_with
            if len(c.args) != 2:
                raise b.err(f"Incorrect number of operands for operator or function; operator or function: "
                            f"begins_with, number of operands: {len(c.args)}")
            target, prefix = c.args
            if not isinstance(target, _Path):
                raise b.err("Operator or function requires a document path; operator or function: begins_with")
            if not isinstance(prefix, _Value):
                raise validation("Invalid condition in KeyConditionExpression: Multiple attribute names used "
                                 "in one condition")
            pv = b.values[prefix.name]
            if V.value_type(pv) not in ("S", "B"):
                raise b.err(f"Incorrect operand type for operator or function; operator or function: "
                            f"begins_with, operand type: {V.value_type(pv)}")
            parsed.append((key_name(target), "begins_with", (pv,)))
        else:
            raise AssertionError(c)

    by_name: dict[str, tuple[str, tuple[AV, ...]]] = {}
    for name, op, vals in parsed:
        if name in by_name:
            raise b.err("KeyConditionExpressions must only contain one condition per key")
        by_name[name] = (op, vals)
    hash_name, range_name = key_schema.hash_name, key_schema.range_name
    if hash_name not in by_name:
        raise validation(f"Query condition missed key schema element: {hash_name}")
    if any(n not in key_schema.names for n in by_name):
        if range_name is not None and range_name not in by_name:
            raise validation(f"Query condition missed key schema element: {range_name}")
        raise validation("Query key condition not supported")
    hash_op, hash_vals = by_name[hash_name]
    if hash_op != "=":
        raise validation("Query key condition not supported")
    for name, (op, vals) in by_name.items():
        want = key_schema.type_of(name)
        for v in vals:
            if V.value_type(v) != want:
                raise validation("One or more parameter values were invalid: Condition parameter type does not "
                                 "match schema type")
            if (("S" in v and v["S"] == "") or ("B" in v and v["B"] == "")):
                what = "string" if "S" in v else "binary"
                raise validation("One or more parameter values are not valid. The AttributeValue for a key "
                                 f"attribute cannot contain an empty {what} value. Key: {name}")
        if op == "BETWEEN":
            _check_between_bounds(b.err, vals[0], vals[1])
    sort_op: str | None = None
    sort_vals: tuple[AV, ...] = ()
    if range_name is not None and range_name in by_name:
        sort_op, sort_vals = by_name[range_name]
    return KeyCondition(text, hash_name, hash_vals[0], range_name, sort_op, sort_vals,
                        frozenset(syntax.name_refs), frozenset(syntax.value_refs))


# -- projection ---------------------------------------------------------------------


def _check_overlaps(err: Callable[[str], DynamoError], paths: Sequence[PathT]) -> None:
    for i, p in enumerate(paths):
        for q in paths[:i]:
            n = min(len(p), len(q))
            for k in range(n):
                if p[k] != q[k]:
                    if isinstance(p[k], int) != isinstance(q[k], int):
                        raise err(f"Two document paths conflict with each other; must remove or rewrite one of "
                                  f"these paths; path one: {render_path(q)}, path two: {render_path(p)}")
                    break
            else:
                raise err(f"Two document paths overlap with each other; must remove or rewrite one of these "
                          f"paths; path one: {render_path(q)}, path two: {render_path(p)}")


@dataclass(frozen=True)
class Projection:
    """A compiled ProjectionExpression."""

    text: str
    paths: tuple[PathT, ...]
    names_used: frozenset[str]
    values_used: frozenset[str] = frozenset()

    @property
    def top_level_names(self) -> frozenset[str]:
        return frozenset(p[0] for p in self.paths)

    def apply(self, item: Mapping[str, AV] | None) -> Item:
        """The item cut down to the projected paths (absent ones are
        skipped; projected list elements keep their order, compacted)."""
        if not item:
            return {}
        root: dict[Any, Any] = {}
        for path in self.paths:
            v = get_path(item, path)
            if v is None:
                continue
            node = root
            for el, nxt in zip(path, path[1:]):
                kind = "L" if isinstance(nxt, int) else "M"
                child = node.get(el)
                if child is None:
                    child = node[el] = (kind, {})
                node = child[1]
            node[path[-1]] = ("V", v)
        return {k: _build(v) for k, v in root.items()}


def _build(node: tuple[str, Any]) -> AV:
    kind, payload = node
    if kind == "V":
        return payload
    if kind == "M":
        return {"M": {k: _build(v) for k, v in payload.items()}}
    return {"L": [_build(payload[i]) for i in sorted(payload)]}


def parse_projection(text: str, names: Mapping[str, Any] | None = None) -> Projection:
    kind = "ProjectionExpression"
    syntax = _get_syntax(kind, "projection", text)
    b = _Binder(kind, syntax, names, {})
    paths = tuple(b.path(p) for p in syntax.tree)
    _check_overlaps(b.err, paths)
    return Projection(text, paths, frozenset(syntax.name_refs))


# -- update -----------------------------------------------------------------------------


class _Missing(Exception):
    """An operand path is absent from the item."""


def _human(av: AV) -> str:
    return V.HUMAN_TYPE[V.value_type(av)]


class _UpdateCompiler:
    def __init__(self, b: _Binder) -> None:
        self.b = b

    def operand(self, node: Any) -> _Operand:
        b = self.b
        if isinstance(node, _Path):
            p = b.path(node)

            def read(item: Mapping[str, AV]) -> AV:
                v = get_path(item, p)
                if v is None:
                    raise _Missing()
                return v
            return _Operand("path", read, path=p)
        if isinstance(node, _Value):
            return _const_operand(b.values[node.name])
        if isinstance(node, _Call):
            name = node.name
            if name in CONDITION_FUNCTIONS:
                raise b.err(f"The function is not allowed in an update expression; function: {name}")
            if name not in UPDATE_FUNCTIONS:
                raise b.err(f"Invalid function name; function: {name}")
            if len(node.args) != 2:
                raise b.err(f"Incorrect number of operands for operator or function; operator or function: "
                            f"{name}, number of operands: {len(node.args)}")
            a, c = self.operand(node.args[0]), self.operand(node.args[1])
            af, cf = a.fn, c.fn
            if name == "if_not_exists":
                if a.kind != "path" or a.path is None:
                    raise b.err("Operator or function requires a document path; operator or function: "
                                "if_not_exists")
                p = a.path

                def if_not_exists(item: Mapping[str, AV]) -> AV:
                    v = get_path(item, p)
                    return v if v is not None else cf(item)
                return _Operand("call", if_not_exists)
            for o in (a, c):
                if o.const is not None and "L" not in o.const:
                    raise b.err(f"Incorrect operand type for operator or function; operator or function: "
                                f"list_append, operand type: {V.value_type(o.const)}")

            def list_append(item: Mapping[str, AV]) -> AV:
                x, y = af(item), cf(item)
                if "L" not in x or "L" not in y:
                    raise validation(INCORRECT_DATA_TYPE)
                return {"L": list(x["L"]) + list(y["L"])}
            return _Operand("call", list_append)
        raise AssertionError(node)

    def set_value(self, node: Any) -> Callable[[Mapping[str, AV]], AV]:
        if isinstance(node, _Arith):
            lf, rf = self.operand(node.left).fn, self.operand(node.right).fn
            combine = V.add_numbers if node.op == "+" else V.subtract_numbers

            def arith(item: Mapping[str, AV]) -> AV:
                x, y = lf(item), rf(item)
                if "N" not in x or "N" not in y:
                    raise validation(INCORRECT_DATA_TYPE)
                return {"N": V.format_number(combine(Decimal(x["N"]), Decimal(y["N"])))}
            return arith
        return self.operand(node).fn


@dataclass(frozen=True)
class Update:
    """A compiled UpdateExpression.  :meth:`apply` gives the new item."""

    text: str
    sets: tuple[tuple[PathT, Callable[[Mapping[str, AV]], AV]], ...] = field(repr=False)
    removes: tuple[PathT, ...]
    adds: tuple[tuple[PathT, AV], ...]
    deletes: tuple[tuple[PathT, AV], ...]
    names_used: frozenset[str]
    values_used: frozenset[str]

    @property
    def updated_names(self) -> frozenset[str]:
        """Top-level attributes the update touches (for ReturnValues
        UPDATED_OLD / UPDATED_NEW)."""
        return frozenset(p[0] for p in self.target_paths)

    @property
    def target_paths(self) -> tuple[PathT, ...]:
        return (tuple(p for p, _ in self.sets) + self.removes + tuple(p for p, _ in self.adds)
                + tuple(p for p, _ in self.deletes))

    def check_key_attributes(self, key_names: Iterable[str]) -> None:
        """Reject an update of a primary key attribute, as DynamoDB does."""
        keys = set(key_names)
        for p in self.target_paths:
            if p[0] in keys:
                raise validation(f"One or more parameter values were invalid: Cannot update attribute {p[0]}. "
                                 f"This attribute is part of the key")

    def apply(self, item: Mapping[str, AV] | None) -> Item:
        """The item after the update.  For UpdateItem on an absent item pass
        the request's key as ``item`` (DynamoDB creates the item from it).

        All right-hand sides read the item as it was before the update.  The
        input is not modified; the result shares unmodified sub-values with it.
        """
        old: Mapping[str, AV] = item or {}
        try:
            values = [(p, fn(old)) for p, fn in self.sets]
        except _Missing:
            raise validation(NONEXISTENT_ATTRIBUTE) from None
        new: dict[str, AV] = dict(old)
        for p, v in values:
            _assign(new, p, v)
        for p in sorted(self.removes, key=_path_sort_key, reverse=True):
            _remove(new, p)
        for p, v in self.adds:
            _add(new, p, v)
        for p, v in self.deletes:
            _delete(new, p, v)
        return new


def _path_sort_key(p: PathT) -> tuple[tuple[int, Any], ...]:
    return tuple((0, e) if isinstance(e, int) else (1, e) for e in p)


def _parent(root: dict[str, AV], path: PathT) -> Any:
    """The (copied, so mutable) container holding ``path[-1]``: the item
    dict, a map's dict or a list.  Containers along the path are copied so
    that the old item stays untouched."""
    container: Any = root
    for el, nxt in zip(path, path[1:]):
        if isinstance(el, int):
            if not isinstance(container, list) or el >= len(container):
                raise validation(INVALID_UPDATE_PATH)
        elif not isinstance(container, dict) or el not in container:
            raise validation(INVALID_UPDATE_PATH)
        av = container[el]
        if isinstance(nxt, int):
            if "L" not in av:
                raise validation(INVALID_UPDATE_PATH)
            payload: Any = list(av["L"])
            container[el] = {"L": payload}
        else:
            if "M" not in av:
                raise validation(INVALID_UPDATE_PATH)
            payload = dict(av["M"])
            container[el] = {"M": payload}
        container = payload
    return container


def _assign(root: dict[str, AV], path: PathT, value: AV) -> None:
    parent = _parent(root, path)
    last = path[-1]
    if isinstance(last, int):
        if last < len(parent):
            parent[last] = value
        else:
            parent.append(value)
    else:
        parent[last] = value


def _remove(root: dict[str, AV], path: PathT) -> None:
    if get_path(root, path) is None:
        # nothing to remove; still reject a path through a scalar
        _validate_path_shape(root, path)
        return
    parent = _parent(root, path)
    last = path[-1]
    del parent[last]


def _validate_path_shape(root: Mapping[str, AV], path: PathT) -> None:
    cur: Any = root.get(path[0])
    for nxt in path[1:]:
        if cur is None:
            return
        if isinstance(nxt, int):
            if "L" not in cur:
                raise validation(INVALID_UPDATE_PATH)
            lst = cur["L"]
            cur = lst[nxt] if nxt < len(lst) else None
        else:
            if "M" not in cur:
                raise validation(INVALID_UPDATE_PATH)
            cur = cur["M"].get(nxt)


def _add(root: dict[str, AV], path: PathT, value: AV) -> None:
    cur = get_path(root, path)
    if cur is None:
        _assign(root, path, value)
        return
    t, tv = V.value_type(cur), V.value_type(value)
    if t == "N" and tv == "N":
        _assign(root, path, {"N": V.format_number(V.add_numbers(Decimal(cur["N"]), Decimal(value["N"])))})
        return
    if t in V.SET_TYPES and t == tv:
        _, have = V.set_elements(cur)
        _, extra = V.set_elements(value)
        seen = set(have)
        merged = list(cur[t])
        for raw, key in zip(value[t], extra):
            if key not in seen:
                seen.add(key)
                merged.append(raw)
        _assign(root, path, {t: merged})
        return
    raise validation(INCORRECT_DATA_TYPE)


def _delete(root: dict[str, AV], path: PathT, value: AV) -> None:
    cur = get_path(root, path)
    if cur is None:
        _validate_path_shape(root, path)
        return
    t, tv = V.value_type(cur), V.value_type(value)
    if t != tv:
        raise validation(INCORRECT_DATA_TYPE)
    _, gone = V.set_elements(value)
    gone_set = set(gone)
    _, have = V.set_elements(cur)
    kept = [raw for raw, key in zip(cur[t], have) if key not in gone_set]
    if kept:
        _assign(root, path, {t: kept})
    else:
        parent = _parent(root, path)
        del parent[path[-1]]


def parse_update(text: str, names: Mapping[str, Any] | None = None,
                 values: Mapping[str, Any] | None = None) -> Update:
    """Parse and bind an UpdateExpression (SET with + / -, if_not_exists and
    list_append; REMOVE; ADD for numbers and sets; DELETE for sets)."""
    kind = "UpdateExpression"
    syntax = _get_syntax(kind, "update", text)
    b = _Binder(kind, syntax, names, values)
    comp = _UpdateCompiler(b)
    sets: list[tuple[PathT, Callable[[Mapping[str, AV]], AV]]] = []
    removes: list[PathT] = []
    adds: list[tuple[PathT, AV]] = []
    deletes: list[tuple[PathT, AV]] = []
    order: list[PathT] = []
    for clause in syntax.tree:
        for target, val in clause.actions:
            p = b.path(target)
            order.append(p)
            if clause.kind == "SET":
                sets.append((p, comp.set_value(val)))
            elif clause.kind == "REMOVE":
                removes.append(p)
            else:
                v = b.values[val.name]
                t = V.value_type(v)
                if clause.kind == "ADD" and t != "N" and t not in V.SET_TYPES:
                    raise b.err(f"Incorrect operand type for operator or function; operator: ADD, "
                                f"operand type: {_human(v)}")
                if clause.kind == "DELETE" and t not in V.SET_TYPES:
                    raise b.err(f"Incorrect operand type for operator or function; operator: DELETE, "
                                f"operand type: {_human(v)}")
                (adds if clause.kind == "ADD" else deletes).append((p, v))
    _check_overlaps(b.err, order)
    return Update(text, tuple(sets), tuple(removes), tuple(adds), tuple(deletes),
                  frozenset(syntax.name_refs), frozenset(syntax.value_refs))


# ---------------------------------------------------------------------------
# Request-level checks of ExpressionAttributeNames / ExpressionAttributeValues
# ---------------------------------------------------------------------------

_NAME_KEY_RE = re.compile(r"#[A-Za-z0-9_]+\Z")
_VALUE_KEY_RE = re.compile(r":[A-Za-z0-9_]+\Z")


def validate_expression_attributes(names: Any, values: Any, expressions_present: bool = True
                                   ) -> tuple[dict[str, str] | None, dict[str, AV] | None]:
    """Check a request's ExpressionAttributeNames/Values maps as DynamoDB
    does before looking at the expressions: supplied without any expression,
    empty, keys not of the ``#name`` / ``:value`` form, invalid values.
    Returns them with the values in canonical form."""
    if names is not None:
        if not isinstance(names, dict):
            raise serialization("Expected a map for ExpressionAttributeNames")
        if not expressions_present:
            raise validation("ExpressionAttributeNames can only be specified when using expressions")
        if not names:
            raise validation("ExpressionAttributeNames must not be empty")
        for k, v in names.items():
            if not _NAME_KEY_RE.match(k):
                raise validation(f'ExpressionAttributeNames contains invalid key: Syntax error; key: "{k}"')
            if not isinstance(v, str):
                raise serialization(f"{V._json_kind(v)} cannot be converted to String")
    canon: dict[str, AV] | None = None
    if values is not None:
        if not isinstance(values, dict):
            raise serialization("Expected a map for ExpressionAttributeValues")
        if not expressions_present:
            raise validation("ExpressionAttributeValues can only be specified when using expressions")
        if not values:
            raise validation("ExpressionAttributeValues must not be empty")
        canon = {}
        for k, v in values.items():
            if not _VALUE_KEY_RE.match(k):
                raise validation(f'ExpressionAttributeValues contains invalid key: Syntax error; key: "{k}"')
            canon[k] = _checked_value(k, v)
    return names, canon


def check_unused(names: Mapping[str, Any] | None, values: Mapping[str, Any] | None,
                 *parsed: Any) -> None:
    """Reject placeholders that no expression of the request used (DynamoDB
    checks across all the request's expressions).  ``parsed`` are the
    request's parsed expressions (None entries are skipped)."""
    used_names: set[str] = set()
    used_values: set[str] = set()
    for p in parsed:
        if p is None:
            continue
        used_names |= p.names_used
        used_values |= getattr(p, "values_used", frozenset())
    unused = sorted(set(names or ()) - used_names)
    if unused:
        raise validation(f"Value provided in ExpressionAttributeNames unused in expressions: "
                         f"keys: {{{', '.join(unused)}}}")
    unused = sorted(set(values or ()) - used_values)
    if unused:
        raise validation(f"Value provided in ExpressionAttributeValues unused in expressions: "
                         f"keys: {{{', '.join(unused)}}}")


def cache_info() -> Any:
    """Hit/miss statistics of the syntax cache."""
    return _syntax_cached.cache_info()
