"""The `cel` expression engine (Common Expression Language): conditions, guards, while/until, for_each `over`.

Two implementations stand behind the one engine, chosen with `plugins.settings.cel.implementation`:

- `common-expression-language` (the default): the Rust `cel` crate behind PyO3. Measured with
  `python benchmarks/expressions.py` (times include opcode's own name check and the conversion of the
  activation), it compiles in ~0.1-0.2 ms against cel-python's ~0.4-1 ms, evaluates a guard on a step's
  output in ~20-40 µs against ~0.4-0.6 ms, `exists()` over 1,000 items in 16 ms against 380 ms, and
  a for_each `over` path of 5,000 items in 130 ms against 360 ms. Its weak spot: comprehensions that
  build a list grow quadratically (`filter` over 5,000 items: 7 s against cel-python's 2 s; `map`
  1.5 s against 2.3 s; they cross over near 1,000-3,000 items). Guards and branch expressions run on
  every step over small data, so they decide; a `map`/`filter` over thousands of items belongs in a
  jq transform (~50 ms for 5,000 items).
- `cel-python` (`celpy`): pure Python, linear but slow everywhere, with a strict int/double split. To
  keep expressions portable between the two, numbers are prepared for it: integral JSON floats
  (`200.0`) become ints when the activation is built (so they come back as ints), and `==`, `!=`,
  `<`, `<=`, `>`, `>=` compare int with double by value (`score > 2.5` with an int score), as cel-go
  and the Rust implementation do. Arithmetic stays strict in both (`n / 2.0` with an int `n` is an
  error; write `double(n) / 2.0`).

Both see the same variables as the original: `steps` (a step's output by id: `steps['run-tests'].exit_code`),
`inputs`, `workflow`, `context` and `iter` (`iter.item`, `iter.index` in loops); a name the caller leaves
out is an empty map. Both are checked the same way at compile time (unknown functions and undeclared
names are VALIDATION_ERRORs, as cel-go's checker makes them), and results come back as JSON-like values:
bytes as UTF-8 text (base64 when not UTF-8), timestamps as RFC 3339 text, durations as `"1.5s"`, map
keys as text.
"""

from __future__ import annotations

import ast
import base64
import importlib.machinery
import importlib.util
import operator
import os
import re
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from opcode_core import ExpressionEngineSpec, ExpressionError, hookimpl
from opcode_core.errors import EXECUTION_ERROR, ConfigError

ENGINE = "cel"
SCOPE_NAMES = ("steps", "inputs", "workflow", "context", "iter")
IMPLEMENTATIONS = ("common-expression-language", "cel-python")
DEFAULT_IMPLEMENTATION = "common-expression-language"
_MODULES = {"common-expression-language": "cel", "cel-python": "celpy"}

MACROS = frozenset({"has", "all", "exists", "exists_one", "map", "filter"})
# The Rust implementation's list-building comprehensions grow quadratically: past this many items one
# `map`/`filter` takes seconds (filter over 5,000 items: ~7 s), so it fails clearly and points to jq.
LIST_BUILDING_CAP = 2_000
_LIST_BUILDING = re.compile(r"\.\s*(map|filter)\s*\(")
# The CEL standard definitions both implementations share; anything else fails at define time.
FUNCTIONS = MACROS | frozenset({
    "size", "contains", "startsWith", "endsWith", "matches", "int", "uint", "double", "string", "bytes", "bool",
    "dyn", "type", "duration", "timestamp", "getFullYear", "getMonth", "getDate", "getDayOfMonth",
    "getDayOfWeek", "getDayOfYear", "getHours", "getMinutes", "getSeconds", "getMilliseconds",
})
TYPE_NAMES = frozenset({"int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "dyn"})

# --- Lexical analysis, shared by both implementations (neither exposes a checked AST with names). ---

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
    | (?P<string>
        (?:[rR][bB]?|[bB][rR])(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"[^"\n]*"|'[^'\n]*')
      | [bB]?(?:\"\"\"(?:\\[\s\S]|[^\\])*?\"\"\"|'''(?:\\[\s\S]|[^\\])*?'''
               |"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'))
    | (?P<number>0[xX][0-9a-fA-F]+[uU]?|\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*|`[^`]*`)
    | (?P<punct>==|!=|<=|>=|&&|\|\||\.\?|\[\?|[\s\S])
    """,
    re.VERBOSE,
)
_LITERAL_WORDS = frozenset({"true", "false", "null"})


@dataclass(frozen=True)
class Token:
    """One lexical token: kind (string, number, ident, literal, punct), its text and offset."""

    kind: str
    text: str
    pos: int


def tokenize(source: str) -> list[Token]:
    """The tokens of a CEL source, without whitespace and comments."""
    tokens = []
    for match in _TOKEN.finditer(source):
        kind = match.lastgroup or "punct"
        if kind == "space":
            continue
        text = match.group()
        if kind == "ident" and (text in _LITERAL_WORDS or text == "in"):
            kind = "literal" if text != "in" else "punct"
        tokens.append(Token(kind, text, match.start()))
    return tokens


@dataclass(frozen=True)
class Analysis:
    """What an expression reads (`names`, `references`) and the first name it may not use."""

    names: tuple[str, ...]
    references: frozenset[str]
    problem: tuple[str, int] | None


def _ends_operand(token: Token) -> bool:
    return token.kind in ("ident", "string", "number", "literal") or token.text in (")", "]", "}")


def string_value(literal: str) -> str | None:
    """The text of a CEL string literal, or None for bytes and literals Python cannot read the same way."""
    prefix = re.match(r"[rRbB]*", literal).group()  # type: ignore[union-attr]
    if "b" in prefix.lower():
        return None
    body = literal[len(prefix):]
    quote = body[:3] if body[:3] in ('"""', "'''") else body[0]
    text = body[len(quote):-len(quote)]
    if "r" in prefix.lower() or "\\" not in text:
        return text
    try:  # CEL's escapes are a subset of Python's, apart from \` and \? (rare in step ids)
        value = ast.literal_eval(quote + text + quote)
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def _step_references(tokens: list[Token], i: int) -> set[str]:
    """`steps['id']`, `steps.id` (and the `[?`/`.?` forms) read one step; any other use reads them all."""
    after = tokens[i + 1:i + 4]
    if len(after) >= 3 and after[0].text in ("[", "[?") and after[1].kind == "string" and after[2].text == "]":
        key = string_value(after[1].text)
        return {"steps", f"steps:{key}" if key is not None else "steps:*"}
    field = len(after) >= 2 and after[0].text in (".", ".?") and after[1].kind == "ident"
    if field and (len(after) < 3 or after[2].text != "("):  # `steps.size()` is a method on all of them
        return {"steps", f"steps:{after[1].text.strip('`')}"}
    return {"steps", "steps:*"}


@lru_cache(maxsize=4096)
def analyse(source: str) -> Analysis:
    """Walk the tokens once: top-level names, step ids, macro variables, unknown functions and names."""
    tokens = tokenize(source)
    refs: set[str] = set()
    bound: set[str] = set()
    free: list[Token] = []
    problem: tuple[str, int] | None = None
    for i, token in enumerate(tokens):
        if token.kind != "ident":
            continue
        # A name after `.` that follows an operand is a field or method, not a variable (`.x` alone is).
        selected = i >= 2 and tokens[i - 1].text in (".", ".?") and _ends_operand(tokens[i - 2])
        if i + 1 < len(tokens) and tokens[i + 1].text == "(":
            if token.text not in FUNCTIONS and problem is None:
                problem = (f"unknown function {token.text!r}", token.pos)
            if selected and token.text in MACROS and i + 3 < len(tokens) and tokens[i + 3].text == ",":
                bound.add(tokens[i + 2].text)
            continue
        if selected:
            continue
        free.append(token)
        if token.text == "steps":
            refs |= _step_references(tokens, i)
    names = []
    for token in free:
        if token.text in SCOPE_NAMES:
            if token.text not in names:
                names.append(token.text)
            refs.add(token.text)
        elif token.text not in bound and token.text not in TYPE_NAMES and problem is None:
            problem = (f"undeclared reference to {token.text!r} (known: {', '.join(SCOPE_NAMES)})", token.pos)
    return Analysis(tuple(names), frozenset(refs), problem)


def references(source: str) -> set[str]:
    """Top-level names read (`steps`, `inputs`, ...), plus `steps:<id>` per step read (`steps:*` when unsure)."""
    return set(analyse(source).references)


# --- Results back to JSON-like values. ---

_CEL_TYPE_NAMES = {
    "BoolType": "bool", "IntType": "int", "UintType": "uint", "DoubleType": "double", "StringType": "string",
    "BytesType": "bytes", "ListType": "list", "MapType": "map", "NullType": "null_type", "TypeType": "type",
    "TimestampType": "google.protobuf.Timestamp", "DurationType": "google.protobuf.Duration",
}


def plain(value: Any) -> Any:
    """A CEL result (either implementation's types) as bool, int, float, str, list, dict or None."""
    if value is None or isinstance(value, bool):
        return value
    kind = type(value).__name__
    if kind == "BoolType":  # cel-python's bool is an int subclass, so it must be caught before int
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return datetime.isoformat(moment.astimezone(UTC)).replace("+00:00", "Z")
    if isinstance(value, timedelta):
        seconds = Decimal(value.days * 86400 + value.seconds) + Decimal(value.microseconds) / 1_000_000
        return format(seconds.normalize(), "f") + "s"
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {_key_text(key): plain(item) for key, item in value.items()}
    if isinstance(value, type):
        return _CEL_TYPE_NAMES.get(value.__name__, value.__name__)
    if kind == "OptionalValue":
        return plain(value.value()) if value.has_value() else None
    if isinstance(value, Exception):  # cel-python keeps errors as values inside lists and maps
        raise value
    return str(value)


def _key_text(key: Any) -> str:
    key = plain(key)
    if isinstance(key, bool):
        return "true" if key else "false"
    return key if isinstance(key, str) else str(key)


# --- The two implementations. ---


@dataclass(frozen=True)
class Compiled:
    """A compiled CEL program with the scope names it reads, and its flattened twin when it has one."""

    source: str
    program: Any
    names: tuple[str, ...]
    # The same expression with every scope path it reads (`steps['id'].field`, `inputs.env`) replaced by a
    # variable of its own: only the values read cross into the engine, where the Rust binding converts each map
    # of the activation (~10 µs apiece, 40 µs for a guard on one step's output). None when not flattened.
    flat: Flat | None = None
    list_building: bool = False


@dataclass(frozen=True)
class Flat:
    """A flattened program: `paths` are (variable, scope name, keys); `names` are scope names it still reads whole."""

    program: Any
    paths: tuple[tuple[str, str, tuple[str, ...]], ...]
    names: tuple[str, ...]


_FLAT_VARIABLE = "opcode__p"


def flatten(source: str) -> tuple[str, list[tuple[str, str, tuple[str, ...]]]] | None:
    """`source` with each scope path of field and string-key selections read from a variable, or None.

    A path stops before a method call (`.size()`), an optional selection (`.?`, `[?`), or an index that is not a
    string literal. Nothing is flattened in an expression that uses `has()` (which needs the selection itself),
    binds a scope name as a macro variable, or already uses the variables' prefix.
    """
    if _FLAT_VARIABLE in source:
        return None
    tokens = tokenize(source)
    texts = [t.text for t in tokens]
    if any(text == "has" and texts[i + 1:i + 2] == ["("] for i, text in enumerate(texts)):
        return None
    bound = {texts[i + 2] for i in range(len(texts) - 3) if texts[i] in MACROS and texts[i + 1] == "("
             and texts[i + 3] == ","}
    if bound & set(SCOPE_NAMES):
        return None
    spans: list[tuple[int, int, str, tuple[str, ...]]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        selected = i >= 2 and texts[i - 1] in (".", ".?") and _ends_operand(tokens[i - 2])
        if token.kind != "ident" or token.text not in SCOPE_NAMES or selected or texts[i + 1:i + 2] == ["("]:
            i += 1
            continue
        keys: list[str] = []
        j = i + 1
        while j + 1 < len(tokens):
            nxt = tokens[j + 1]
            if texts[j] == "." and nxt.kind == "ident" and not nxt.text.startswith("`") and texts[j + 2:j + 3] != ["("]:
                keys.append(nxt.text)
                j += 2
            elif texts[j] == "[" and nxt.kind == "string" and texts[j + 2:j + 3] == ["]"]:
                key = string_value(nxt.text)
                if key is None:
                    break
                keys.append(key)
                j += 3
            else:
                break
        if keys:
            last = tokens[j - 1]
            spans.append((token.pos, last.pos + len(last.text), token.text, tuple(keys)))
        i = j
    if not spans:
        return None
    variables: dict[tuple[str, tuple[str, ...]], str] = {}
    out = source
    for start, end, root, keys in reversed(spans):
        name = variables.setdefault((root, keys), f"{_FLAT_VARIABLE}{len(variables)}")
        out = out[:start] + name + out[end:]
    return out, [(name, root, keys) for (root, keys), name in variables.items()]


def _offset(source: str, line: int | None, column: int | None) -> int | None:
    """A 1-based line and column as a 0-based offset into the source."""
    if not line or column is None:
        return None
    lines = source.split("\n")
    offset = sum(len(text) + 1 for text in lines[:line - 1]) + max(column - 1, 0)
    return min(offset, len(source))


def _load_rust_module() -> Any:
    """The `cel.cel` extension module, loaded without `cel/__init__`, which imports its CLI (~0.7 s)."""
    loaded = sys.modules.get("cel.cel")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("cel")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder, suffix in ((f, s) for f in folders for s in importlib.machinery.EXTENSION_SUFFIXES):
        path = os.path.join(folder, "cel" + suffix)
        if not os.path.exists(path):
            continue
        loader = importlib.machinery.ExtensionFileLoader("cel.cel", path)
        module_spec = importlib.util.spec_from_loader("cel.cel", loader, origin=path)
        if module_spec is None:
            break
        module = importlib.util.module_from_spec(module_spec)
        loader.exec_module(module)
        # Registered so that a later `import cel` reuses it: a PyO3 module initialises once per process.
        sys.modules["cel.cel"] = module
        return module
    import cel  # the documented way, when the layout is not the one we know

    return cel


class RustCel:
    """common-expression-language: the Rust `cel` crate."""

    name = "common-expression-language"

    def __init__(self) -> None:
        self._module: Any = None

    def parse(self, source: str) -> Any:
        """Compile with the Rust parser; a syntax error raises ExpressionError with its position."""
        if self._module is None:
            self._module = _load_rust_module()
        try:
            return self._module.compile(source)
        except Exception as exc:
            text = str(exc)
            found = re.search(r"<input>:(\d+):(\d+): ([^\n]*)", text)
            if found:
                message, position = found.group(3), _offset(source, int(found.group(1)), int(found.group(2)))
            else:
                message, position = text.split("\n")[0], None
            raise ExpressionError(message, expression=source, engine=ENGINE, position=position) from None

    def run(self, program: Any, values: dict[str, Any], source: str) -> Any:
        """Execute with plain Python values; the result as JSON-like values."""
        try:
            return plain(program.execute(values))
        except KeyError as exc:
            message = f"no such key: {exc.args[0]!r}" if exc.args else "no such key"
        except Exception as exc:
            message = " ".join(str(exc).split()) or type(exc).__name__
        raise ExpressionError(message, expression=source, engine=ENGINE, code=EXECUTION_ERROR)


class PyCel:
    """cel-python (`celpy`), with numbers prepared so mixed int/double comparisons work."""

    name = "cel-python"

    def __init__(self) -> None:
        self._env: Any = None
        self._functions: dict[str, Any] = {}
        # celpy's parser is a process-wide singleton that keeps the text being parsed on the instance.
        self._lock = threading.Lock()

    def _environment(self) -> Any:
        if self._env is None:
            import celpy

            limit = sys.getrecursionlimit()
            self._env = celpy.Environment()
            sys.setrecursionlimit(max(limit, sys.getrecursionlimit()))  # celpy lowers a higher limit to 2500
            self._functions = _mixed_number_relations()
        return self._env

    def parse(self, source: str) -> Any:
        """Parse with celpy's Lark grammar; a syntax error raises ExpressionError with its position."""
        from celpy import CELParseError

        with self._lock:
            env = self._environment()
            try:
                tree = env.compile(source)
            except CELParseError as exc:
                raise ExpressionError(_parse_message(exc), expression=source, engine=ENGINE,
                                      position=_offset(source, exc.line, exc.column)) from None
            return env.program(tree, functions=self._functions)

    def run(self, runner: Any, values: dict[str, Any], source: str) -> Any:
        """Evaluate with values converted to celpy types (integral floats as ints)."""
        from celpy import CELEvalError

        try:
            result = runner.evaluate({name: to_celpy(value) for name, value in values.items()})
            if isinstance(result, CELEvalError):
                raise result
            return plain(result)
        except CELEvalError as exc:
            message = _eval_message(str(exc.args[0]) if exc.args else "evaluation failed")
            position = _offset(source, exc.line, exc.column)
        except Exception as exc:
            message, position = f"{type(exc).__name__}: {exc}", None
        raise ExpressionError(message, expression=source, engine=ENGINE, position=position, code=EXECUTION_ERROR)


def _parse_message(exc: Exception) -> str:
    cause = exc.__context__
    token = getattr(cause, "token", None)
    if token is not None:
        if token.type == "$END":
            return "syntax error: unexpected end of expression"
        return f"syntax error: unexpected {str(token)!r}"
    char = getattr(cause, "char", None)
    if char is not None:
        return f"syntax error: unexpected character {char!r}"
    return "syntax error: " + str(exc.args[0] if exc.args else exc).strip().split("\n")[0]


_OPERATORS = {
    "relation_lt": "<", "relation_le": "<=", "relation_gt": ">", "relation_ge": ">=", "relation_eq": "==",
    "relation_ne": "!=", "relation_in": "in", "addition_add": "+", "addition_sub": "-",
    "multiplication_mul": "*", "multiplication_div": "/", "multiplication_mod": "%", "unary_not": "!",
    "unary_neg": "-",
}


def _eval_message(text: str) -> str:
    """celpy's evaluation message in CEL's words, without Python class reprs or the whole activation."""
    text = text.split(" (in activation", 1)[0]
    text = re.sub(r"Token\('RULE', '(\w+)'\)", lambda m: repr(_OPERATORS.get(m.group(1), m.group(1))), text)
    text = re.sub(r"<class 'celpy\.celtypes\.(\w+)'>", lambda m: _CEL_TYPE_NAMES.get(m.group(1), m.group(1)), text)
    return text.replace("'(", "(").replace(")'", ")")


def to_celpy(value: Any) -> Any:
    """A JSON-like value as celpy types; integral floats become ints (see the module docstring)."""
    from celpy import celtypes

    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value) if -(2**63) <= value < 2**63 else celtypes.DoubleType(value)
    if isinstance(value, float):
        if value.is_integer() and -(2**63) <= value < 2**63:
            return celtypes.IntType(int(value))
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, bytes):
        return celtypes.BytesType(value)
    if isinstance(value, list | tuple):
        return celtypes.ListType([to_celpy(item) for item in value])
    if isinstance(value, dict):
        return celtypes.MapType({to_celpy(key): to_celpy(item) for key, item in value.items()})
    from celpy.adapter import json_to_cel

    return json_to_cel(value)


def _mixed_number_relations() -> dict[str, Any]:
    """`==`, `!=` and ordering that compare int with double by value, and unlike types as unequal."""

    from celpy import celtypes
    from celpy.evaluation import base_functions

    numbers = (celtypes.IntType, celtypes.UintType, celtypes.DoubleType)

    def relation(name: str, op: Any) -> Any:
        base = base_functions[name]

        def compare(a: Any, b: Any) -> Any:
            if type(a) is not type(b) and isinstance(a, numbers) and isinstance(b, numbers):
                return celtypes.BoolType(op(_number(a), _number(b)))
            try:
                return base(a, b)
            except TypeError:
                if name in ("_==_", "_!=_"):  # heterogeneous equality is false, as in cel-go
                    return celtypes.BoolType(name == "_!=_")
                raise

        return compare

    ops = {"_==_": operator.eq, "_!=_": operator.ne, "_<_": operator.lt, "_<=_": operator.le,
           "_>_": operator.gt, "_>=_": operator.ge}
    return {name: relation(name, op) for name, op in ops.items()}


def _number(value: Any) -> int | float:
    return float(value) if isinstance(value, float) else int(value)


# --- The engine. ---


def _largest_list(value: Any, depth: int = 0) -> int:
    """The length of the longest list anywhere in a JSON-like value (bounded depth)."""
    if depth > 32:
        return 0
    if isinstance(value, list):
        return max([len(value), *(_largest_list(v, depth + 1) for v in value if isinstance(v, dict | list))])
    if isinstance(value, dict):
        return max((_largest_list(v, depth + 1) for v in value.values()), default=0)
    return 0


def _flat_values(flat: Flat, activation: dict[str, Any]) -> dict[str, Any] | None:
    """The flattened program's variables read from the activation; None when a path does not resolve."""
    values: dict[str, Any] = {}
    for name in flat.names:
        values[name] = {} if activation.get(name) is None else activation[name]
    for variable, root, keys in flat.paths:
        value = activation.get(root)
        for key in keys:
            if type(value) is not dict or key not in value:
                return None
            value = value[key]
        values[variable] = value
    return values


def make_engine(implementation: str = DEFAULT_IMPLEMENTATION, cap: int = LIST_BUILDING_CAP) -> ExpressionEngineSpec:
    """The `cel` engine spec backed by the named implementation."""
    if implementation not in IMPLEMENTATIONS:
        raise ConfigError(f"unknown CEL implementation {implementation!r} (known: {', '.join(IMPLEMENTATIONS)})")
    backend: RustCel | PyCel = RustCel() if implementation == "common-expression-language" else PyCel()
    rust = isinstance(backend, RustCel)

    def compile_cel(source: str) -> Compiled:
        program = backend.parse(source)
        found = analyse(source)
        if found.problem is not None:
            message, position = found.problem
            raise ExpressionError(message, expression=source, engine=ENGINE, position=position)
        # The list cap looks at the whole values read, so list-building expressions keep the plain program.
        list_building = isinstance(backend, RustCel) and _LIST_BUILDING.search(source) is not None
        flattened = None if list_building else flatten(source)
        flat = None
        if flattened is not None:
            try:
                flat = Flat(backend.parse(flattened[0]), tuple(flattened[1]), analyse(flattened[0]).names)
            except ExpressionError:
                flat = None  # a rewrite the parser refuses: evaluate the expression as written
        return Compiled(source, program, found.names, flat, list_building)

    def evaluate_cel(compiled: Compiled, activation: dict[str, Any]) -> Any:
        flat = compiled.flat
        if flat is not None:
            values = _flat_values(flat, activation)
            if values is not None:
                try:
                    if rust:  # straight to the binding: this is the guard's hot path
                        return plain(flat.program.execute(values))
                    return backend.run(flat.program, values, compiled.source)
                except Exception:
                    pass  # rare: the program as written reports it, with positions in the source as written
            # A path that does not resolve (a missing key, a null on the way): the program as written gives the
            # same error (or the same result, e.g. `false && steps['missing'].x`).
        # Only the names the expression reads are converted; a missing one is an empty map, as upstream.
        values = {name: {} if activation.get(name) is None else activation[name] for name in compiled.names}
        if compiled.list_building:
            largest = _largest_list(values)
            if largest > cap:
                raise ExpressionError(
                    f"map/filter over a list of {largest} items (more than {cap}) would take too long with "
                    "this CEL implementation, whose list-building comprehensions grow quadratically; transform "
                    "large lists with jq (`jq: ... | map(...)`), or raise plugins.settings.cel.list_cap",
                    expression=compiled.source, engine=ENGINE, code=EXECUTION_ERROR)
        return backend.run(compiled.program, values, compiled.source)

    return ExpressionEngineSpec(
        name=ENGINE,
        description=f"Common Expression Language ({implementation}): `steps['id']` is a step's output; also "
        "`inputs`, `workflow`, `context`, and `iter.item` / `iter.index` inside loops.",
        compile=compile_cel,
        evaluate=evaluate_cel,
        references=references,
    )


def configured_implementation(settings: Any) -> str:
    """The implementation named in `plugins.settings.cel.implementation`, checked and installed."""
    chosen = DEFAULT_IMPLEMENTATION
    if settings is not None:
        chosen = settings.plugin_config(ENGINE).get("implementation") or DEFAULT_IMPLEMENTATION
    if chosen not in IMPLEMENTATIONS:
        raise ConfigError(f"plugins.settings.cel.implementation must be one of {', '.join(IMPLEMENTATIONS)}, "
                          f"not {chosen!r}")
    if importlib.util.find_spec(_MODULES[chosen]) is None:
        raise ConfigError(f"CEL implementation {chosen!r} is not installed (pip install {chosen})")
    return chosen


@hookimpl
def opcode_register_expression_engines(settings: Any) -> list[ExpressionEngineSpec]:
    """Provide the `cel` engine with the configured implementation."""
    config = settings.plugin_config(ENGINE) if settings is not None else {}
    return [make_engine(configured_implementation(settings), int(config.get("list_cap") or LIST_BUILDING_CAP))]
