"""Expr's builtin functions over Python values; predicate builtins (filter, map, …) take a callable."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
from collections.abc import Callable
from typing import Any

from opcode_plugins.expr_lang.values import (
    MEMORY_BUDGET,
    EvalError,
    equal,
    go_string,
    is_int,
    is_number,
    less,
    to_index,
    type_name,
)

_INT_TEXT = re.compile(r"[+-]?\d+")


def _string(value: Any, fn: str) -> str:
    if not isinstance(value, str):
        raise EvalError(f"{fn}() needs a string, got {type_name(value)}")
    return value


def _array(value: Any, fn: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise EvalError(f"{fn}() needs an array, got {type_name(value)}")
    return list(value)


def _map(value: Any, fn: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise EvalError(f"{fn}() needs a map, got {type_name(value)}")
    return value


def _integer(value: Any, fn: str) -> int:
    if not is_int(value):
        raise EvalError(f"{fn}() needs an integer, got {type_name(value)}")
    return value


def _number(value: Any, fn: str) -> int | float:
    if not is_number(value):
        raise EvalError(f"invalid argument for {fn} (type {type_name(value)})")
    return value


def _len(value: Any) -> int:
    if isinstance(value, list | tuple | dict | str):
        return len(value)
    raise EvalError(f"invalid argument for len (type {type_name(value)})")


def _int(value: Any) -> int:
    if is_number(value):
        if isinstance(value, float) and not math.isfinite(value):
            raise EvalError(f"invalid operation: int({go_string(value)})")
        return int(value)
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)
    raise EvalError(f"invalid operation: int({value if isinstance(value, str) else type_name(value)})")


def _float(value: Any) -> float:
    if is_number(value):
        return float(value)
    # Python's float() also takes spaces and digit underscores, Go's ParseFloat does not.
    if isinstance(value, str) and value == value.strip() and "_" not in value:
        try:
            return float(value)
        except ValueError:
            pass
    raise EvalError(f"invalid operation: float({value if isinstance(value, str) else type_name(value)})")


def _round(value: Any) -> float:
    # Go rounds half away from zero; Python's round() rounds half to even.
    number = float(_number(value, "round"))
    return math.copysign(math.floor(abs(number) + 0.5), number)


def _split(s: Any, sep: Any, n: Any = -1, *, after: bool = False) -> list[str]:
    fn = "splitAfter" if after else "split"
    text, sep, n = _string(s, fn), _string(sep, fn), _integer(n, fn)
    if n == 0:
        return []
    if sep == "":
        parts = list(text)
        if 0 < n < len(parts):
            parts = [*parts[: n - 1], "".join(parts[n - 1:])]
        return parts
    parts = text.split(sep, n - 1 if n > 0 else -1)
    if after:
        parts = [p + sep for p in parts[:-1]] + parts[-1:]
    return parts


def _replace(s: Any, old: Any, new: Any, n: Any = -1) -> str:
    return _string(s, "replace").replace(_string(old, "replace"), _string(new, "replace"), _integer(n, "replace"))


def _repeat(s: Any, n: Any) -> str:
    text, count = _string(s, "repeat"), _integer(n, "repeat")
    if count < 0:
        raise EvalError(f"invalid argument for repeat (expected positive integer, got {count})")
    if len(text) * count > MEMORY_BUDGET:
        raise EvalError("memory budget exceeded")
    return text * count


def _join(items: Any, glue: Any = "") -> str:
    parts = _array(items, "join")
    for part in parts:
        _string(part, "join")
    return _string(glue, "join").join(parts)


def _numbers(args: tuple[Any, ...], fn: str) -> list[int | float]:
    out: list[int | float] = []
    for arg in args:
        if isinstance(arg, list | tuple):
            out.extend(_numbers(tuple(arg), fn))
        else:
            out.append(_number(arg, fn))
    return out


def _min_max(fn: str, pick: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        if len(args) == 1 and not isinstance(args[0], list | tuple):
            return args[0]
        values = _numbers(args, fn)
        return pick(values) if values else None

    return run


def _mean(*args: Any) -> float:
    values = _numbers(args, "mean")
    return sum(values) / len(values) if values else 0.0


def _median(*args: Any) -> float:
    values = sorted(_numbers(args, "median"))
    if not values:
        return 0.0
    middle = len(values) // 2
    return float(values[middle]) if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def _go_json_ready(value: Any) -> Any:
    # Go writes float64(2) as 2, so integral floats print without ".0".
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, list | tuple):
        return [_go_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _go_json_ready(v) for k, v in value.items()}
    return value


def _to_json(value: Any) -> str:
    try:
        text = json.dumps(_go_json_ready(value), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise EvalError(f"toJSON: {exc}") from None
    # Go's encoder escapes HTML-significant characters; they only occur inside strings here.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _from_json(text: Any) -> Any:
    try:
        return json.loads(_string(text, "fromJSON"))
    except json.JSONDecodeError as exc:
        raise EvalError(f"fromJSON: {exc}") from None


def _from_base64(text: Any) -> str:
    try:
        return base64.b64decode(_string(text, "fromBase64"), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise EvalError(f"fromBase64: {exc}") from None


def _get(obj: Any, key: Any) -> Any:
    if isinstance(obj, dict):
        try:
            return obj.get(key)
        except TypeError:
            return None
    if isinstance(obj, list | tuple | str):
        index = to_index(key)
        if index < 0:
            index += len(obj)
        return obj[index] if 0 <= index < len(obj) else None
    return None


def _take(items: Any, n: Any) -> list[Any]:
    count = _integer(n, "take")
    return _array(items, "take")[: max(count, 0)]


def _from_pairs(pairs: Any) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for pair in _array(pairs, "fromPairs"):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise EvalError(f"invalid pair {go_string(pair)}")
        try:
            out[pair[0]] = pair[1]
        except TypeError:
            raise EvalError(f"cannot use {type_name(pair[0])} as a map key") from None
    return out


def _uniq(items: Any) -> list[Any]:
    out: list[Any] = []
    for item in _array(items, "uniq"):
        if not any(equal(item, seen) for seen in out):
            out.append(item)
    return out


def _concat(*arrays: Any) -> list[Any]:
    return [item for array in arrays for item in _array(array, "concat")]


def _flatten(items: Any) -> list[Any]:
    out: list[Any] = []
    for item in _array(items, "flatten"):
        out.extend(_flatten(item) if isinstance(item, list | tuple) else [item])
    return out


def order_is_desc(order: Any, fn: str) -> bool:
    """Whether a sort order argument asks for descending; only "asc" and "desc" are allowed."""
    if order not in ("asc", "desc"):
        raise EvalError(f"{fn}() order must be \"asc\" or \"desc\", got {go_string(order)}")
    return order == "desc"


def sort_values(values: list[Any], desc: bool) -> list[int]:
    """Indexes of values in sorted order (stable), using Expr ordering."""
    def cmp(i: int, j: int) -> int:
        a, b = values[i], values[j]
        return -1 if less(a, b) else (1 if less(b, a) else 0)

    return sorted(range(len(values)), key=functools.cmp_to_key(cmp), reverse=desc)


def _sort(items: Any, order: Any = "asc") -> list[Any]:
    array = _array(items, "sort")
    return [array[i] for i in sort_values(array, order_is_desc(order, "sort"))]


def _int64(value: int) -> int:
    value &= 2**64 - 1
    return value - 2**64 if value >= 2**63 else value


def _bits(fn: str, op: Callable[[int, int], int]) -> Callable[[Any, Any], int]:
    return lambda a, b: _int64(op(_integer(a, fn), _integer(b, fn)))


FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "len": (_len, 1, 1),
    "type": (type_name, 1, 1),
    "abs": (lambda x: abs(_number(x, "abs")), 1, 1),
    "ceil": (lambda x: float(math.ceil(_number(x, "ceil"))), 1, 1),
    "floor": (lambda x: float(math.floor(_number(x, "floor"))), 1, 1),
    "round": (_round, 1, 1),
    "int": (_int, 1, 1),
    "float": (_float, 1, 1),
    "string": (go_string, 1, 1),
    "trim": (lambda s, chars=None: _string(s, "trim").strip(None if chars is None else _string(chars, "trim")), 1, 2),
    "trimPrefix": (lambda s, p=" ": _string(s, "trimPrefix").removeprefix(_string(p, "trimPrefix")), 1, 2),
    "trimSuffix": (lambda s, p=" ": _string(s, "trimSuffix").removesuffix(_string(p, "trimSuffix")), 1, 2),
    "upper": (lambda s: _string(s, "upper").upper(), 1, 1),
    "lower": (lambda s: _string(s, "lower").lower(), 1, 1),
    "split": (_split, 2, 3),
    "splitAfter": (functools.partial(_split, after=True), 2, 3),
    "replace": (_replace, 3, 4),
    "repeat": (_repeat, 2, 2),
    "join": (_join, 1, 2),
    "indexOf": (lambda s, sub: _string(s, "indexOf").find(_string(sub, "indexOf")), 2, 2),
    "lastIndexOf": (lambda s, sub: _string(s, "lastIndexOf").rfind(_string(sub, "lastIndexOf")), 2, 2),
    "hasPrefix": (lambda s, p: _string(s, "hasPrefix").startswith(_string(p, "hasPrefix")), 2, 2),
    "hasSuffix": (lambda s, p: _string(s, "hasSuffix").endswith(_string(p, "hasSuffix")), 2, 2),
    "max": (_min_max("max", max), 1, 256),
    "min": (_min_max("min", min), 1, 256),
    "mean": (_mean, 1, 256),
    "median": (_median, 1, 256),
    "toJSON": (_to_json, 1, 1),
    "fromJSON": (_from_json, 1, 1),
    "toBase64": (lambda s: base64.b64encode(_string(s, "toBase64").encode()).decode(), 1, 1),
    "fromBase64": (_from_base64, 1, 1),
    "first": (lambda a: a[0] if isinstance(a, list | tuple) and a else None, 1, 1),
    "last": (lambda a: a[-1] if isinstance(a, list | tuple) and a else None, 1, 1),
    "get": (_get, 2, 2),
    "take": (_take, 2, 2),
    "keys": (lambda m: list(_map(m, "keys")), 1, 1),
    "values": (lambda m: list(_map(m, "values").values()), 1, 1),
    "toPairs": (lambda m: [[k, v] for k, v in _map(m, "toPairs").items()], 1, 1),
    "fromPairs": (_from_pairs, 1, 1),
    "reverse": (lambda a: _array(a, "reverse")[::-1], 1, 1),
    "uniq": (_uniq, 1, 1),
    "concat": (_concat, 1, 256),
    "flatten": (_flatten, 1, 1),
    "sort": (_sort, 1, 2),
    "bitand": (_bits("bitand", lambda a, b: a & b), 2, 2),
    "bitor": (_bits("bitor", lambda a, b: a | b), 2, 2),
    "bitxor": (_bits("bitxor", lambda a, b: a ^ b), 2, 2),
    "bitnand": (_bits("bitnand", lambda a, b: a & ~b), 2, 2),
    "bitnot": (lambda a: _int64(~_integer(a, "bitnot")), 1, 1),
    "bitshl": (_bits("bitshl", lambda a, b: a << min(b, 64)), 2, 2),
    "bitshr": (_bits("bitshr", lambda a, b: a >> b), 2, 2),
    "bitushr": (_bits("bitushr", lambda a, b: (a & (2**64 - 1)) >> b), 2, 2),
}
