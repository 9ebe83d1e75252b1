"""Expr semantics over plain Python values: types, equality, ordering, arithmetic, member access."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from opcode_core.engine.expressions import go_float_text

# Ranges and repeated strings larger than this stop the expression (expr-lang's memory budget).
MEMORY_BUDGET = 1_000_000


class EvalError(Exception):
    """A runtime error inside an expression, with the offset of the operation that failed."""

    def __init__(self, message: str, pos: int | None = None) -> None:
        super().__init__(message)
        self.message, self.pos = message, pos


def type_name(value: Any) -> str:
    """The Expr type name of a value, as `type()` returns it."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


def is_number(value: Any) -> bool:
    """True for int and float, never for bool (a Python int subclass that Expr keeps apart)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    """True for int but not bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def equal(a: Any, b: Any) -> bool:
    """Deep equality: 1 == 1.0, arrays element by element, maps key by key, nil only equals nil."""
    if is_number(a) and is_number(b):
        return a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal(v, b[k]) for k, v in a.items())
    if type(a) is not type(b):
        return False
    return bool(a == b)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {"<": operator.lt, ">": operator.gt, "<=": operator.le,
                                                 ">=": operator.ge}
_NUMBER_TYPES = (int, float)
_FAST: dict[str, Callable[[Any, Any], Any]] = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def compare(op: str, a: Any, b: Any, pos: int | None = None) -> bool:
    """`<`, `>`, `<=`, `>=` between two numbers or two strings."""
    ta, tb = type(a), type(b)
    # Exact types first: the isinstance checks below only matter for subclasses.
    fast = (ta in _NUMBER_TYPES and tb in _NUMBER_TYPES) or (ta is str and tb is str)
    if not fast and not ((is_number(a) and is_number(b)) or (isinstance(a, str) and isinstance(b, str))):
        raise EvalError(f"invalid operation: {type_name(a)} {op} {type_name(b)}", pos)
    return _ORDER[op](a, b)


def less(a: Any, b: Any) -> bool:
    """The ordering sort and sortBy use."""
    return compare("<", a, b)


def arithmetic(op: str, a: Any, b: Any, pos: int | None = None) -> Any:
    """`+ - * / % **`: int with int stays int except `/` (always float) and `**` (always float)."""
    if op in _FAST and type(a) in _NUMBER_TYPES and type(b) in _NUMBER_TYPES:
        return _FAST[op](a, b)
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return a + b
    if not (is_number(a) and is_number(b)):
        hint = "; join arrays with concat()" if op == "+" and isinstance(a, list) and isinstance(b, list) else ""
        raise EvalError(f"invalid operation: {type_name(a)} {op} {type_name(b)}{hint}", pos)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0:
            raise EvalError("division by zero", pos)
        return a / b
    if op == "%":
        if not (is_int(a) and is_int(b)):
            raise EvalError(f"invalid operation: {type_name(a)} % {type_name(b)} (modulo needs integers)", pos)
        if b == 0:
            raise EvalError("integer divide by zero", pos)
        # Go's % keeps the dividend's sign (-7 % 3 == -1); Python's follows the divisor.
        return int(math.fmod(a, b)) if abs(a) < 2**53 and abs(b) < 2**53 else a - b * int(a / b)
    try:
        result = math.pow(float(a), float(b))
    except (OverflowError, ValueError) as exc:
        raise EvalError(f"invalid operation: {a} ** {b} ({exc})", pos) from None
    return result


def negate(value: Any, op: str, pos: int | None = None) -> Any:
    """Unary `-` and `+` on a number."""
    if not is_number(value):
        raise EvalError(f"invalid operation: {op}{type_name(value)}", pos)
    return -value if op == "-" else value


def truth(value: Any, what: str, pos: int | None = None) -> bool:
    """A bool operand; anything else (nil included) is an error, as in expr-lang."""
    if value is True or value is False:
        return value
    raise EvalError(f"{what} needs a bool, got {type_name(value)}", pos)


def to_index(key: Any, pos: int | None = None) -> int:
    """An array index: ints, and floats truncated toward zero as Go's int() does."""
    if is_int(key):
        return key
    if isinstance(key, float) and math.isfinite(key):
        return int(key)
    raise EvalError(f"array index must be a number, got {type_name(key)}", pos)


def fetch(obj: Any, key: Any, pos: int | None = None) -> Any:
    """`obj.key` / `obj[key]`: a missing map key is nil; a bad array index or a nil object is an error."""
    if isinstance(obj, dict):
        try:
            return obj.get(key)
        except TypeError:
            raise EvalError(f"cannot use {type_name(key)} as a map key", pos) from None
    if isinstance(obj, list | tuple | str):
        if isinstance(key, str):
            raise EvalError(f"cannot fetch {key} from {type_name(obj)}", pos)
        index = to_index(key, pos)
        size = len(obj)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise EvalError(f"index out of range: {index} (array length is {size})", pos)
        return obj[index]
    hint = " (use ?. to allow nil)" if obj is None else ""
    raise EvalError(f"cannot fetch {key} from {type_name(obj)}{hint}", pos)


def slice_of(obj: Any, lo: Any, hi: Any, pos: int | None = None) -> Any:
    """`obj[lo:hi]` on an array or string; negative bounds count from the end, bounds are clamped."""
    if not isinstance(obj, list | tuple | str):
        raise EvalError(f"cannot slice {type_name(obj)}", pos)
    size = len(obj)
    a = 0 if lo is None else to_index(lo, pos)
    b = size if hi is None else to_index(hi, pos)
    a = max(a + size if a < 0 else a, 0)
    b = min(max(b + size if b < 0 else b, 0), size)
    result = obj[min(a, b):b]
    return list(result) if isinstance(result, tuple) else result


def contains(container: Any, item: Any, pos: int | None = None) -> bool:
    """The `in` operator: an element of an array (deep equality) or a key of a map; nil holds nothing."""
    if container is None:
        return False
    if isinstance(container, list | tuple):
        return any(equal(x, item) for x in container)
    if isinstance(container, dict):
        try:
            return item in container
        except TypeError:
            return False
    hint = "; for substrings use `contains`" if isinstance(container, str) else ""
    raise EvalError(f'operator "in" not defined on {type_name(container)}{hint}', pos)


def make_range(a: Any, b: Any, pos: int | None = None) -> list[int]:
    """`a..b`, both ends included."""
    if not (is_int(a) and is_int(b)):
        raise EvalError(f"invalid operation: {type_name(a)}..{type_name(b)} (a range needs integers)", pos)
    if b - a + 1 > MEMORY_BUDGET:
        raise EvalError("memory budget exceeded: range too large", pos)
    return list(range(a, b + 1))


def go_string(value: Any) -> str:
    """`string(v)`: Go's %v rendering, so `string(1.0)` is "1" and `string([1, "a"])` is "[1 a]"."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float_text(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_string(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{go_string(k)}:{go_string(value[k])}" for k in sorted(value, key=str)) + "]"
    return str(value)
