"""Expr's predicate builtins (filter, map, all, …): each takes the array and a callable predicate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opcode_plugins.expr_lang.builtins import order_is_desc, sort_values
from opcode_plugins.expr_lang.values import EvalError, arithmetic, truth, type_name

Predicate = Callable[[Any, int], Any]


def _each(items: Any, fn: str) -> list[Any]:
    if not isinstance(items, list | tuple):
        raise EvalError(f"{fn}() cannot iterate over {type_name(items)}: it needs an array")
    return list(items)


def _test(pred: Predicate, item: Any, index: int, fn: str) -> bool:
    return truth(pred(item, index), f"the predicate of {fn}()")


def _find(items: Any, pred: Predicate, fn: str, last: bool, want_index: bool) -> Any:
    array = _each(items, fn)
    order = range(len(array) - 1, -1, -1) if last else range(len(array))
    for i in order:
        if _test(pred, array[i], i, fn):
            return i if want_index else array[i]
    return -1 if want_index else None


def _count(items: Any, pred: Predicate | None) -> int:
    array = _each(items, "count")
    if pred is None:
        return sum(1 for i, item in enumerate(array) if truth(item, "count() without a predicate"))
    return sum(1 for i, item in enumerate(array) if _test(pred, item, i, "count"))


def _sum(items: Any, pred: Predicate | None) -> Any:
    total: Any = 0
    for i, item in enumerate(_each(items, "sum")):
        total = arithmetic("+", total, item if pred is None else pred(item, i))
    return total


def _group_by(items: Any, pred: Predicate) -> dict[Any, list[Any]]:
    groups: dict[Any, list[Any]] = {}
    for i, item in enumerate(_each(items, "groupBy")):
        key = pred(item, i)
        if isinstance(key, list | dict):
            raise EvalError(f"cannot use {type_name(key)} as a key for groupBy")
        groups.setdefault(key, []).append(item)
    return groups


def _sort_by(items: Any, pred: Predicate, order: Any = "asc") -> list[Any]:
    array = _each(items, "sortBy")
    keys = [pred(item, i) for i, item in enumerate(array)]
    return [array[i] for i in sort_values(keys, order_is_desc(order, "sortBy"))]


def reduce(items: Any, step: Callable[[Any, int, Any], Any], *initial: Any) -> Any:
    """`reduce(array, predicate[, initial])` with `#acc` the accumulator; no initial starts from the first."""
    array = _each(items, "reduce")
    if initial:
        acc, start = initial[0], 0
    elif array:
        acc, start = array[0], 1
    else:
        return None
    for i in range(start, len(array)):
        acc = step(array[i], i, acc)
    return acc


def _all(items: Any, pred: Predicate) -> bool:
    return all(_test(pred, item, i, "all") for i, item in enumerate(_each(items, "all")))


def _any(items: Any, pred: Predicate) -> bool:
    return any(_test(pred, item, i, "any") for i, item in enumerate(_each(items, "any")))


def _none(items: Any, pred: Predicate) -> bool:
    return not any(_test(pred, item, i, "none") for i, item in enumerate(_each(items, "none")))


def _one(items: Any, pred: Predicate) -> bool:
    return sum(1 for i, item in enumerate(_each(items, "one")) if _test(pred, item, i, "one")) == 1


def _filter(items: Any, pred: Predicate) -> list[Any]:
    return [item for i, item in enumerate(_each(items, "filter")) if _test(pred, item, i, "filter")]


def _map_items(items: Any, pred: Predicate) -> list[Any]:
    return [pred(item, i) for i, item in enumerate(_each(items, "map"))]


# name → (implementation, min args, max args); argument 1 is always the predicate. reduce is separate
# because its predicate also sees #acc.
PREDICATES: dict[str, tuple[Callable[..., Any], int, int]] = {
    "all": (_all, 2, 2),
    "any": (_any, 2, 2),
    "none": (_none, 2, 2),
    "one": (_one, 2, 2),
    "filter": (_filter, 2, 2),
    "map": (_map_items, 2, 2),
    "find": (lambda a, p: _find(a, p, "find", last=False, want_index=False), 2, 2),
    "findIndex": (lambda a, p: _find(a, p, "findIndex", last=False, want_index=True), 2, 2),
    "findLast": (lambda a, p: _find(a, p, "findLast", last=True, want_index=False), 2, 2),
    "findLastIndex": (lambda a, p: _find(a, p, "findLastIndex", last=True, want_index=True), 2, 2),
    "count": (_count, 1, 2),
    "sum": (_sum, 1, 2),
    "groupBy": (_group_by, 2, 2),
    "sortBy": (_sort_by, 2, 3),
    "reduce": (reduce, 2, 3),
}
