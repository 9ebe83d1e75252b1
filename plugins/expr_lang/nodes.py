"""The syntax tree the parser builds; every node keeps the character offset of its token."""

from __future__ import annotations

from typing import Any


class Node:
    """Base of every syntax node: `pos` is the 0-based character offset in the source."""

    __slots__ = ("grouped", "pos")

    def __init__(self, pos: int) -> None:
        self.pos = pos
        # Set when the node was written inside parentheses: it then ends an optional chain
        # and may be mixed with other operators after `??`.
        self.grouped = False


class Literal(Node):
    """A constant: number, string, bool or nil."""

    __slots__ = ("value",)

    def __init__(self, value: Any, pos: int) -> None:
        super().__init__(pos)
        self.value = value


class Name(Node):
    """A variable: a `let` binding or a top-level name of the environment."""

    __slots__ = ("name",)

    def __init__(self, name: str, pos: int) -> None:
        super().__init__(pos)
        self.name = name


class Pointer(Node):
    """`#` (the current element), `#index` or `#acc` inside a predicate."""

    __slots__ = ("name",)

    def __init__(self, name: str, pos: int) -> None:
        super().__init__(pos)
        self.name = name


class Member(Node):
    """`obj.name`, `obj[key]`, or their optional forms `obj?.name`, `obj?.[key]`."""

    __slots__ = ("key", "obj", "optional")

    def __init__(self, obj: Node, key: Node, optional: bool, pos: int) -> None:
        super().__init__(pos)
        self.obj, self.key, self.optional = obj, key, optional


class Slice(Node):
    """`obj[lo:hi]` with either bound optional."""

    __slots__ = ("hi", "lo", "obj")

    def __init__(self, obj: Node, lo: Node | None, hi: Node | None, pos: int) -> None:
        super().__init__(pos)
        self.obj, self.lo, self.hi = obj, lo, hi


class Call(Node):
    """A builtin function call, `f(a, b)` or the pipe form `a | f(b)`."""

    __slots__ = ("args", "name")

    def __init__(self, name: str, args: list[Node], pos: int) -> None:
        super().__init__(pos)
        self.name, self.args = name, args


class Closure(Node):
    """A predicate `{ body }` given to filter, map, all and the other predicate builtins."""

    __slots__ = ("body",)

    def __init__(self, body: Node, pos: int) -> None:
        super().__init__(pos)
        self.body = body


class Unary(Node):
    """`not x`, `!x`, `-x`, `+x`."""

    __slots__ = ("op", "operand")

    def __init__(self, op: str, operand: Node, pos: int) -> None:
        super().__init__(pos)
        self.op, self.operand = op, operand


class Binary(Node):
    """A binary operator; `negate` marks the `not in` / `not contains` … forms."""

    __slots__ = ("left", "negate", "op", "right")

    def __init__(self, op: str, left: Node, right: Node, pos: int, negate: bool = False) -> None:
        super().__init__(pos)
        self.op, self.left, self.right, self.negate = op, left, right, negate


class Compare(Node):
    """A chain of `<`, `>`, `<=`, `>=`: `a < b < c` means `a < b and b < c`, each operand read once."""

    __slots__ = ("first", "rest")

    def __init__(self, first: Node, rest: list[tuple[str, Node, int]], pos: int) -> None:
        super().__init__(pos)
        self.first, self.rest = first, rest


class Conditional(Node):
    """`cond ? a : b`, `cond ?: b` and `if cond { a } else { b }`."""

    __slots__ = ("cond", "no", "yes")

    def __init__(self, cond: Node, yes: Node | None, no: Node, pos: int) -> None:
        super().__init__(pos)
        # yes is None for `cond ?: b`, which yields cond itself when it is true.
        self.cond, self.yes, self.no = cond, yes, no


class Let(Node):
    """`let name = value; body`."""

    __slots__ = ("body", "name", "value")

    def __init__(self, name: str, value: Node, body: Node, pos: int) -> None:
        super().__init__(pos)
        self.name, self.value, self.body = name, value, body


class Sequence(Node):
    """`a; b; c`: every expression runs, the last one is the result."""

    __slots__ = ("items",)

    def __init__(self, items: list[Node], pos: int) -> None:
        super().__init__(pos)
        self.items = items


class ArrayLit(Node):
    """`[a, b, c]`."""

    __slots__ = ("items",)

    def __init__(self, items: list[Node], pos: int) -> None:
        super().__init__(pos)
        self.items = items


class MapLit(Node):
    """`{key: value, …}`; keys are string literals or parenthesised expressions."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[Node, Node]], pos: int) -> None:
        super().__init__(pos)
        self.pairs = pairs
