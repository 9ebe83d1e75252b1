"""The Expr grammar (lark, LALR) and the transformer that turns a parse into `nodes`.

Precedence, loosest first, as expr-lang's parser defines it: `;` sequences and `let`, `if {} else {}`,
ternary `?:`, pipe `|`, `or ||`, `and &&`, comparisons and `in matches contains startsWith endsWith`
(with `not` forms), `..`, `+ -`, prefix `not !`, `* / %`, prefix `- +`, `** ^` (right-assoc), `??`,
then postfix `.`, `?.`, `[]`, `[:]` and calls.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NoReturn

from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from opcode_plugins.expr_lang import nodes as n

GRAMMAR = r"""
?start: body

body: _item (_SEMI _item)* _SEMI?
_item: let_decl | expr
let_decl: LET NAME _ASSIGN expr

?expr: ternary | if_expr
if_expr: IF expr _LBRACE body _RBRACE ELSE (_LBRACE body _RBRACE | if_expr)

?ternary: pipe
        | pipe QMARK expr _COLON expr   -> ternary
        | pipe QMARK _COLON expr        -> elvis

?pipe: or_expr
     | pipe PIPE NAME _LPAR [args] _RPAR   -> pipe_call

?or_expr: and_expr | or_expr (OR | OR_SYM) and_expr       -> binary
?and_expr: cmp_expr | and_expr (AND | AND_SYM) cmp_expr   -> binary
?cmp_expr: range_expr (cmp_op range_expr)*
cmp_op: CMP | _word_op | NOT _word_op
_word_op: IN | MATCHES | CONTAINS | STARTS_WITH | ENDS_WITH
?range_expr: add_expr | range_expr RANGE add_expr       -> binary
?add_expr: not_expr | add_expr ADD_OP not_expr           -> binary
?not_expr: mul_expr | (NOT | BANG) not_expr              -> unary
?mul_expr: neg_expr | mul_expr MUL_OP neg_expr           -> binary
?neg_expr: pow_expr | ADD_OP neg_expr                    -> unary
?pow_expr: coalesce | coalesce POW neg_expr              -> binary
?coalesce: postfix | coalesce COALESCE postfix           -> binary

?postfix: primary
        | postfix DOT member_name                        -> member
        | postfix QDOT member_name                       -> opt_member
        | postfix LSQB expr _RSQB                        -> index
        | postfix QDOT _LSQB expr _RSQB                  -> opt_index
        | postfix LSQB [expr] _COLON [expr] _RSQB        -> slice
        | postfix DOT member_name _LPAR [args] _RPAR     -> method

?primary: INT                       -> int_lit
        | FLOAT                     -> float_lit
        | STRING                    -> str_lit
        | RAW_STRING                -> raw_lit
        | TRUE                      -> true_lit
        | FALSE                     -> false_lit
        | NIL                       -> nil_lit
        | NAME                      -> name
        | NAME _LPAR [args] _RPAR   -> call
        | _LPAR body _RPAR          -> group
        | LSQB [args] _RSQB         -> array
        | LBRACE [pairs] _RBRACE    -> map_lit
        | LBRACE body _RBRACE       -> closure
        | POINTER                   -> pointer
        | DOT member_name           -> pointer_member

args: expr (_COMMA expr)* _COMMA?
pairs: pair (_COMMA pair)* _COMMA?
pair: map_key _COLON expr
map_key: NAME | TRUE | FALSE | NIL | STRING | RAW_STRING | INT | FLOAT | _LPAR body _RPAR
member_name: NAME | TRUE | FALSE | NIL | IN | NOT | AND | OR | MATCHES | CONTAINS | STARTS_WITH
           | ENDS_WITH | LET | IF | ELSE

// Keywords are regexes with a word boundary so that `order` or `notes` stay names.
LET.2: /let\b/
IF.2: /if\b/
ELSE.2: /else\b/
OR.2: /or\b/
AND.2: /and\b/
NOT.2: /not\b/
IN.2: /in\b/
MATCHES.2: /matches\b/
CONTAINS.2: /contains\b/
STARTS_WITH.2: /startsWith\b/
ENDS_WITH.2: /endsWith\b/
TRUE.2: /true\b/
FALSE.2: /false\b/
NIL.2: /nil\b/

// `1..3` is a range, so a float's dot may not be followed by another dot.
FLOAT.2: /(?:\d[\d_]*\.(?!\.)[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?|\d[\d_]*[eE][+-]?\d[\d_]*/
INT.2: /0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|\d[\d_]*/
STRING: /"(?:[^"\\]|\\.)*"/s | /'(?:[^'\\]|\\.)*'/s
RAW_STRING: /`[^`]*`/
POINTER: /#(?:(?!\d)[\w$]+)?/
NAME: /(?!\d)[\w$]+/

CMP: "==" | "!=" | "<=" | ">=" | "<" | ">"
OR_SYM: "||"
AND_SYM: "&&"
BANG: "!"
COALESCE: "??"
QDOT: "?."
QMARK: "?"
RANGE: ".."
DOT: "."
PIPE: "|"
POW: "**" | "^"
ADD_OP: "+" | "-"
MUL_OP: "*" | "/" | "%"
LSQB: "["
LBRACE: "{"
_LSQB: "["
_RSQB: "]"
_LPAR: "("
_RPAR: ")"
_LBRACE: "{"
_RBRACE: "}"
_COMMA: ","
_COLON: ":"
_SEMI: ";"
_ASSIGN: "="

%ignore /\s+/
%ignore /\/\/[^\n]*/
%ignore /\/\*(?:.|\n)*?\*\//
"""

_OPERATOR_ALIASES = {"||": "or", "&&": "and", "!": "not", "^": "**"}
_RELATIONAL = frozenset({"<", ">", "<=", ">="})
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\", "'": "'",
            '"': '"'}
_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([0-7]{3})|(.))", re.S)
_MAX_INT = 2**63 - 1
# Readable names for the terminals a syntax error may say it expected.
_DISPLAY = {"_RPAR": "')'", "_RSQB": "']'", "_RBRACE": "'}'", "_COMMA": "','", "_COLON": "':'", "_LPAR": "'('",
            "_SEMI": "';'", "_ASSIGN": "'='", "NAME": "a name", "_LBRACE": "'{'", "ELSE": "'else'"}


class ParseFailure(Exception):
    """A syntax error with the character offset where it was found."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message, self.pos = message, pos


class _LetDecl:
    __slots__ = ("name", "pos", "value")

    def __init__(self, name: str, value: n.Node, pos: int) -> None:
        self.name, self.value, self.pos = name, value, pos


def _unescape(body: str, pos: int) -> str:
    def one(match: re.Match[str]) -> str:
        hex2, hex4, hex8, octal, char = match.groups()
        if hex2 or hex4 or hex8:
            return chr(int(hex2 or hex4 or hex8, 16))
        if octal:
            return chr(int(octal, 8))
        if char in _ESCAPES:
            return _ESCAPES[char]
        raise ParseFailure(f"invalid escape sequence \\{char} in string", pos + match.start())

    return _ESCAPE.sub(one, body) if "\\" in body else body


def _op(token: Token) -> str:
    return _OPERATOR_ALIASES.get(str(token), str(token))


def _check_coalesce_mix(left: n.Node, op: str, pos: int) -> None:
    # expr-lang refuses `a ?? b + c` rather than guess which operator was meant.
    if isinstance(left, n.Binary) and left.op == "??" and not left.grouped and op != "??":
        raise ParseFailure(f"operator ({op}) and coalesce expressions (??) cannot be mixed; "
                           "wrap either in parentheses", pos)


class _ToNodes(Transformer):
    """Builds `nodes` while lark parses (used as LALR's inline transformer, so no tree is kept)."""

    def body(self, items: list[Any]) -> n.Node:
        tail: n.Node | None = None
        for item in reversed(items):
            if isinstance(item, _LetDecl):
                if tail is None:
                    raise ParseFailure("a let declaration must be followed by an expression", item.pos)
                tail = n.Let(item.name, item.value, tail, item.pos)
            elif tail is None:
                tail = item
            else:
                rest = tail.items if isinstance(tail, n.Sequence) else [tail]
                tail = n.Sequence([item, *rest], item.pos)
        assert tail is not None
        return tail

    def let_decl(self, c: list[Any]) -> _LetDecl:
        return _LetDecl(str(c[1]), c[2], c[0].start_pos)

    def if_expr(self, c: list[Any]) -> n.Node:
        return n.Conditional(c[1], c[2], c[4], c[0].start_pos)

    def ternary(self, c: list[Any]) -> n.Node:
        return n.Conditional(c[0], c[2], c[3], c[1].start_pos)

    def elvis(self, c: list[Any]) -> n.Node:
        return n.Conditional(c[0], None, c[2], c[1].start_pos)

    def pipe_call(self, c: list[Any]) -> n.Node:
        _check_coalesce_mix(c[0], "|", c[1].start_pos)
        return n.Call(str(c[2]), [c[0], *(c[3] or [])], c[2].start_pos)

    def binary(self, c: list[Any]) -> n.Node:
        left, token, right = c
        op = _op(token)
        _check_coalesce_mix(left, op, token.start_pos)
        return n.Binary(op, left, right, token.start_pos)

    def cmp_op(self, c: list[Token]) -> tuple[str, bool, int]:
        return str(c[-1]), len(c) == 2, c[0].start_pos

    def cmp_expr(self, c: list[Any]) -> n.Node:
        left, i = c[0], 1
        while i < len(c):
            op, negate, pos = c[i]
            _check_coalesce_mix(left, op, pos)
            if op in _RELATIONAL:
                # A run of <, >, <=, >= chains: `1 < x < 3` is `1 < x and x < 3`.
                rest = [(op, c[i + 1], pos)]
                i += 2
                while i < len(c) and c[i][0] in _RELATIONAL:
                    rest.append((c[i][0], c[i + 1], c[i][2]))
                    i += 2
                left = n.Compare(left, rest, pos) if len(rest) > 1 else n.Binary(op, left, rest[0][1], pos)
                continue
            left = n.Binary(op, left, c[i + 1], pos, negate=negate)
            i += 2
        return left

    def unary(self, c: list[Any]) -> n.Node:
        return n.Unary(_op(c[0]), c[1], c[0].start_pos)

    def member(self, c: list[Any]) -> n.Node:
        return n.Member(c[0], n.Literal(str(c[2]), c[2].start_pos), False, c[1].start_pos)

    def opt_member(self, c: list[Any]) -> n.Node:
        return n.Member(c[0], n.Literal(str(c[2]), c[2].start_pos), True, c[1].start_pos)

    def index(self, c: list[Any]) -> n.Node:
        return n.Member(c[0], c[2], False, c[1].start_pos)

    def opt_index(self, c: list[Any]) -> n.Node:
        return n.Member(c[0], c[2], True, c[1].start_pos)

    def slice(self, c: list[Any]) -> n.Node:
        return n.Slice(c[0], c[2], c[3], c[1].start_pos)

    def method(self, c: list[Any]) -> NoReturn:
        raise ParseFailure(f"unknown method {c[2]}(): values have no methods, use a builtin function such as "
                           f"{c[2]}(value)", c[2].start_pos)

    def int_lit(self, c: list[Token]) -> n.Node:
        text = c[0].replace("_", "")
        value = int(text, 0) if text[:2].lower() in ("0x", "0o", "0b") else int(text, 10)
        if value > _MAX_INT:
            raise ParseFailure("integer literal is too large", c[0].start_pos)
        return n.Literal(value, c[0].start_pos)

    def float_lit(self, c: list[Token]) -> n.Node:
        return n.Literal(float(c[0].replace("_", "")), c[0].start_pos)

    def str_lit(self, c: list[Token]) -> n.Node:
        return n.Literal(_unescape(c[0][1:-1], c[0].start_pos + 1), c[0].start_pos)

    def raw_lit(self, c: list[Token]) -> n.Node:
        return n.Literal(c[0][1:-1], c[0].start_pos)

    def true_lit(self, c: list[Token]) -> n.Node:
        return n.Literal(True, c[0].start_pos)

    def false_lit(self, c: list[Token]) -> n.Node:
        return n.Literal(False, c[0].start_pos)

    def nil_lit(self, c: list[Token]) -> n.Node:
        return n.Literal(None, c[0].start_pos)

    def name(self, c: list[Token]) -> n.Node:
        return n.Name(str(c[0]), c[0].start_pos)

    def call(self, c: list[Any]) -> n.Node:
        return n.Call(str(c[0]), c[1] or [], c[0].start_pos)

    def group(self, c: list[Any]) -> n.Node:
        c[0].grouped = True
        return c[0]

    def array(self, c: list[Any]) -> n.Node:
        return n.ArrayLit(c[1] or [], c[0].start_pos)

    def map_lit(self, c: list[Any]) -> n.Node:
        return n.MapLit(c[1] or [], c[0].start_pos)

    def closure(self, c: list[Any]) -> n.Node:
        return n.Closure(c[1], c[0].start_pos)

    def pointer(self, c: list[Token]) -> n.Node:
        return n.Pointer(c[0][1:], c[0].start_pos)

    def pointer_member(self, c: list[Any]) -> n.Node:
        pos = c[0].start_pos
        return n.Member(n.Pointer("", pos), n.Literal(str(c[1]), c[1].start_pos), False, pos)

    def args(self, c: list[n.Node]) -> list[n.Node]:
        return c

    def pairs(self, c: list[tuple[n.Node, n.Node]]) -> list[tuple[n.Node, n.Node]]:
        return c

    def pair(self, c: list[Any]) -> tuple[n.Node, n.Node]:
        return c[0], c[1]

    def map_key(self, c: list[Any]) -> n.Node:
        key = c[0]
        if not isinstance(key, Token):
            return key
        if key.type == "STRING":
            return self.str_lit([key])
        if key.type == "RAW_STRING":
            return self.raw_lit([key])
        # Bare names and numbers are keys spelled as written, as in expr-lang: {a: 1, 2: 3}.
        return n.Literal(str(key), key.start_pos)

    def member_name(self, c: list[Token]) -> Token:
        return c[0]


@functools.cache
def _lark() -> Lark:
    # Built on first use: the LALR tables take a moment, and importing the plugin should not.
    return Lark(GRAMMAR, parser="lalr", lexer="contextual", transformer=_ToNodes(), maybe_placeholders=True)


def _describe(error: UnexpectedInput, source: str) -> tuple[str, int]:
    if isinstance(error, UnexpectedCharacters):
        return f"unexpected character {source[error.pos_in_stream]!r}", error.pos_in_stream
    if isinstance(error, UnexpectedEOF) or (isinstance(error, UnexpectedToken) and error.token.type == "$END"):
        return "unexpected end of expression", len(source)
    if isinstance(error, UnexpectedToken):
        token = error.token
        message = f"unexpected token {str(token)!r}"
        wanted = sorted(_DISPLAY[t] for t in error.expected if t in _DISPLAY)
        if wanted and len(wanted) == len(error.expected):
            message += f" (expected {' or '.join(wanted)})"
        return message, token.start_pos if token.start_pos is not None else len(source)
    return str(error), getattr(error, "pos_in_stream", None) or 0


def parse(source: str) -> n.Node:
    """Parse Expr source into a syntax tree; raise ParseFailure with the offset of the first error."""
    if not source.strip():
        raise ParseFailure("empty expression", 0)
    try:
        return _lark().parse(source)
    except UnexpectedInput as exc:
        message, pos = _describe(exc, source)
        raise ParseFailure(message, pos) from None
