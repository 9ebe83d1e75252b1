"""Turns a syntax tree into nested Python closures, checking what can be checked before running."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable
from typing import Any

from opcode_plugins.expr_lang import nodes as n
from opcode_plugins.expr_lang.builtins import FUNCTIONS
from opcode_plugins.expr_lang.parser import ParseFailure
from opcode_plugins.expr_lang.predicates import PREDICATES
from opcode_plugins.expr_lang.values import (
    EvalError,
    arithmetic,
    compare,
    contains,
    equal,
    fetch,
    make_range,
    negate,
    slice_of,
    truth,
    type_name,
)


class Frame:
    """What one evaluation sees: the environment, `let` variables, and the predicate's element."""

    __slots__ = ("acc", "env", "index", "item", "vars")

    def __init__(self, env: dict[str, Any], variables: dict[str, Any], item: Any = None, index: Any = None,
                 acc: Any = None) -> None:
        self.env, self.vars, self.item, self.index, self.acc = env, variables, item, index, acc


Fn = Callable[[Frame], Any]
_ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "**"})
_STRING_OPS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda a, b: b in a,
    "startsWith": str.startswith,
    "endsWith": str.endswith,
}
_KNOWN = sorted({*FUNCTIONS, *PREDICATES})


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _matcher(pattern: Any, pos: int) -> re.Pattern[str]:
    if not isinstance(pattern, str):
        raise EvalError(f"matches needs a string pattern, got {type_name(pattern)}", pos)
    try:
        return _regex(pattern)
    except re.error as exc:
        raise EvalError(f"invalid regular expression {pattern!r}: {exc}", pos) from None


class Compiler:
    """One compilation: tracks `let` scopes, predicate nesting and the free names the source reads."""

    def __init__(self) -> None:
        self.free: set[str] = set()
        self.scopes: list[str] = []
        # One entry per enclosing predicate: True when it is reduce's, where #acc exists.
        self.predicates: list[bool] = []

    def compile(self, node: n.Node) -> Fn:
        """Compile one node (and its children) to a closure over a Frame."""
        method: Callable[[Any], Fn] = getattr(self, f"_{type(node).__name__}")
        return method(node)

    def _Literal(self, node: n.Literal) -> Fn:
        value = node.value
        return lambda f: value

    def _Name(self, node: n.Name) -> Fn:
        name, pos = node.name, node.pos
        if name in self.scopes:
            return lambda f: f.vars[name]
        self.free.add(name)
        if name == "$env":
            return lambda f: f.env

        def lookup(f: Frame) -> Any:
            try:
                return f.env[name]
            except KeyError:
                raise EvalError(f"unknown name {name}", pos) from None

        return lookup

    def _Pointer(self, node: n.Pointer) -> Fn:
        if not self.predicates:
            what = f"#{node.name}" if node.name else "# and .field"
            raise ParseFailure(f"{what} can only be used inside a predicate such as filter(xs, {{# > 1}})", node.pos)
        if node.name == "":
            return lambda f: f.item
        if node.name == "index":
            return lambda f: f.index
        if node.name == "acc":
            if not self.predicates[-1]:
                raise ParseFailure("#acc can only be used inside the predicate of reduce()", node.pos)
            return lambda f: f.acc
        raise ParseFailure(f"unknown pointer #{node.name} (use #, #index or #acc)", node.pos)

    def _chain(self, node: n.Node) -> tuple[Fn, list[tuple[Any, ...]]]:
        ops: list[tuple[Any, ...]] = []
        while isinstance(node, n.Member | n.Slice) and not (ops and node.grouped):
            if isinstance(node, n.Member):
                key = node.key.value if isinstance(node.key, n.Literal) else None
                ops.append((False, key, None if isinstance(node.key, n.Literal) else self.compile(node.key),
                            node.optional, node.pos))
            else:
                lo = self.compile(node.lo) if node.lo else None
                hi = self.compile(node.hi) if node.hi else None
                ops.append((True, lo, hi, False, node.pos))
            node = node.obj
        ops.reverse()
        return self.compile(node), ops

    def _member_chain(self, node: n.Node) -> Fn:
        # A chain a?.b.c[0] is evaluated in one loop so that `?.` on nil ends the whole chain with nil.
        base, ops = self._chain(node)

        def run(f: Frame) -> Any:
            value = base(f)
            for is_slice, a, b, optional, pos in ops:
                if value is None and optional:
                    return None
                if is_slice:
                    value = slice_of(value, a(f) if a else None, b(f) if b else None, pos)
                elif b is None and type(value) is dict:
                    value = value.get(a)
                else:
                    value = fetch(value, a if b is None else b(f), pos)
            return value

        return run

    _Member = _member_chain
    _Slice = _member_chain

    def _Call(self, node: n.Call) -> Fn:
        name, pos, count = node.name, node.pos, len(node.args)
        if name in PREDICATES:
            return self._predicate_call(node)
        if name not in FUNCTIONS:
            close = difflib.get_close_matches(name, _KNOWN, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ParseFailure(f"unknown function {name}{hint}", pos)
        impl, least, most = FUNCTIONS[name]
        self._check_arity(name, count, least, most, pos)
        args = [self.compile(a) for a in node.args]

        def call(f: Frame) -> Any:
            values = [a(f) for a in args]
            try:
                return impl(*values)
            except EvalError as exc:
                exc.pos = pos if exc.pos is None else exc.pos
                raise
            except (TypeError, ValueError, OverflowError, IndexError) as exc:
                raise EvalError(f"{name}(): {exc}", pos) from None

        return call

    @staticmethod
    def _check_arity(name: str, count: int, least: int, most: int, pos: int) -> None:
        if not least <= count <= most:
            expected = str(least) if least == most else f"{least} to {most}"
            raise ParseFailure(f"invalid number of arguments for {name} (expected {expected}, got {count})", pos)

    def _predicate_call(self, node: n.Call) -> Fn:
        name, pos = node.name, node.pos
        impl, least, most = PREDICATES[name]
        self._check_arity(name, len(node.args), least, most, pos)
        collection = self.compile(node.args[0])
        extra = [self.compile(a) for a in node.args[2:]]
        body = None
        if len(node.args) > 1:
            given = node.args[1]
            self.predicates.append(name == "reduce")
            try:
                body = self.compile(given.body if isinstance(given, n.Closure) else given)
            finally:
                self.predicates.pop()

        def call(f: Frame) -> Any:
            items = collection(f)
            more = [e(f) for e in extra]
            # One frame per call, moved along the elements: closures never keep a frame, and a nested
            # predicate gets its own.
            frame = Frame(f.env, f.vars)

            def pred(item: Any, index: int) -> Any:
                frame.item, frame.index = item, index
                return body(frame)  # type: ignore[misc]

            def step(item: Any, index: int, acc: Any) -> Any:
                frame.item, frame.index, frame.acc = item, index, acc
                return body(frame)  # type: ignore[misc]

            try:
                if body is None:
                    return impl(items, None)
                return impl(items, step if name == "reduce" else pred, *more)
            except EvalError as exc:
                exc.pos = pos if exc.pos is None else exc.pos
                raise

        return call

    def _Closure(self, node: n.Closure) -> Fn:
        raise ParseFailure("a predicate {…} can only be an argument of filter, map, all, any and the other "
                           "predicate builtins", node.pos)

    def _Unary(self, node: n.Unary) -> Fn:
        operand, op, pos = self.compile(node.operand), node.op, node.pos
        if op == "not":
            return lambda f: not truth(operand(f), "not", pos)
        return lambda f: negate(operand(f), op, pos)

    def _Binary(self, node: n.Binary) -> Fn:
        op, pos = node.op, node.pos
        left, right = self.compile(node.left), self.compile(node.right)
        if op == "and":
            return lambda f: truth(left(f), "and", pos) and truth(right(f), "and", pos)
        if op == "or":
            return lambda f: truth(left(f), "or", pos) or truth(right(f), "or", pos)
        if op == "??":
            def coalesce(f: Frame) -> Any:
                value = left(f)
                return right(f) if value is None else value

            return coalesce
        test = self._test(op, node, left, right)
        if test is not None:
            return (lambda f: not test(f)) if node.negate else test
        if op in _ARITHMETIC:
            return lambda f: arithmetic(op, left(f), right(f), pos)
        if op == "..":
            return lambda f: make_range(left(f), right(f), pos)
        return lambda f: compare(op, left(f), right(f), pos)

    def _test(self, op: str, node: n.Binary, left: Fn, right: Fn) -> Fn | None:
        pos = node.pos
        if op == "==":
            return lambda f: equal(left(f), right(f))
        if op == "!=":
            return lambda f: not equal(left(f), right(f))
        if op == "in":
            return lambda f: contains(right(f), left(f), pos)
        if op == "matches":
            fixed = node.right.value if isinstance(node.right, n.Literal) else None
            if isinstance(fixed, str):
                try:
                    _regex(fixed)
                except re.error as exc:
                    raise ParseFailure(f"invalid regular expression {fixed!r}: {exc}", node.right.pos) from None
            return lambda f: _matcher(right(f), pos).search(_operand(left(f), op, pos)) is not None
        if op in _STRING_OPS:
            check = _STRING_OPS[op]
            return lambda f: check(_operand(left(f), op, pos), _operand(right(f), op, pos))
        return None

    def _Compare(self, node: n.Compare) -> Fn:
        first = self.compile(node.first)
        rest = [(op, self.compile(operand), pos) for op, operand, pos in node.rest]

        def chain(f: Frame) -> bool:
            left = first(f)
            for op, operand, pos in rest:
                right = operand(f)
                if not compare(op, left, right, pos):
                    return False
                left = right
            return True

        return chain

    def _Conditional(self, node: n.Conditional) -> Fn:
        cond, no, pos = self.compile(node.cond), self.compile(node.no), node.pos
        if node.yes is None:
            def elvis(f: Frame) -> Any:
                value = cond(f)
                return value if truth(value, "?:", pos) else no(f)

            return elvis
        yes = self.compile(node.yes)
        return lambda f: yes(f) if truth(cond(f), "the condition", pos) else no(f)

    def _Let(self, node: n.Let) -> Fn:
        name, value = node.name, self.compile(node.value)
        self.scopes.append(name)
        try:
            body = self.compile(node.body)
        finally:
            self.scopes.pop()
        return lambda f: body(Frame(f.env, {**f.vars, name: value(f)}, f.item, f.index, f.acc))

    def _Sequence(self, node: n.Sequence) -> Fn:
        *first, last = [self.compile(item) for item in node.items]

        def sequence(f: Frame) -> Any:
            for item in first:
                item(f)
            return last(f)

        return sequence

    def _ArrayLit(self, node: n.ArrayLit) -> Fn:
        items = [self.compile(item) for item in node.items]
        return lambda f: [item(f) for item in items]

    def _MapLit(self, node: n.MapLit) -> Fn:
        pairs = [(self.compile(k), self.compile(v), k.pos) for k, v in node.pairs]

        def build(f: Frame) -> dict[Any, Any]:
            out: dict[Any, Any] = {}
            for key, value, pos in pairs:
                k = key(f)
                if isinstance(k, list | dict):
                    raise EvalError(f"cannot use {type_name(k)} as a map key", pos)
                out[k] = value(f)
            return out

        return build


def _operand(value: Any, op: str, pos: int) -> str:
    if not isinstance(value, str):
        raise EvalError(f"{op} needs strings, got {type_name(value)}", pos)
    return value


def compile_tree(tree: n.Node) -> tuple[Fn, frozenset[str]]:
    """Compile a syntax tree; return the closure and the top-level names it reads."""
    compiler = Compiler()
    return compiler.compile(tree), frozenset(compiler.free)
