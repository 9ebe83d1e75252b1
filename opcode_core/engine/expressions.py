"""Expressions in definitions: pick the engine, compile once behind an LRU cache, evaluate (SPEC §6).

The engines themselves are plugins (`opcode_register_expression_engines`); this module never names one
except as the default prefix-less language, which the caller chooses.
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from decimal import Decimal
from typing import Any

from opcode_core.errors import EXECUTION_ERROR, ExpressionError, OpcodeError
from opcode_core.specs import ExpressionEngineSpec

# What an engine that cannot analyse its expressions is assumed to read: the whole scope.
ALL_REFERENCES = frozenset({"steps:*", "inputs", "workflow", "context", "iter"})

Activation = Callable[[AbstractSet[str]], dict[str, Any]] | Mapping[str, Any]

# `jq: .x`, `cel: a`: a name glued to its colon, so CEL's `a ? b : c` and map literals never match.
_PREFIX = re.compile(r"\s*([A-Za-z][A-Za-z0-9_-]*):(.*)", re.DOTALL)


@functools.lru_cache(maxsize=4096)
def split_engine(source: str, default: str = "cel") -> tuple[str, str]:
    """Split `"jq: .x"` into `("jq", ".x")`; without a prefix the whole source is in the default engine."""
    match = _PREFIX.fullmatch(source)
    if match is None:
        return default, source
    return match.group(1), match.group(2).strip()


def is_json_array_literal(source: str) -> list[Any] | None:
    """The list a for_each `over` spells as a JSON array (`["a", "b"]`), or None when it is an expression."""
    text = source.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def branch_key(value: Any) -> str:
    """A condition's result as a branch key: `true`/`false`, strings as is, numbers as Go prints them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float_text(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def go_float_text(value: float) -> str:
    """A float as Go's `%g` writes it: shortest digits, exponent form below 1e-4 and from 1e6 (`1e+06`)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    # repr gives the shortest digits that read back to the same float, as Go's strconv does.
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    exponent = int(exponent)  # finite here, so never the 'n'/'F' markers
    text = "".join(map(str, digits))
    point = len(text) + exponent  # where the decimal point sits relative to the digits
    exp = point - 1
    prefix = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{text}"
    if point >= len(text):
        return f"{prefix}{text}{'0' * (point - len(text))}"
    return f"{prefix}{text[:point]}.{text[point:]}"


class _LRU:
    """A small thread-safe least-recently-used map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Any:
        with self._lock:
            try:
                self._items.move_to_end(key)
            except KeyError:
                return _MISSING
            return self._items[key]

    def put(self, key: tuple[str, str], value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


_MISSING = object()


class ExpressionEvaluator:
    """The registered expression engines behind one compile cache, keyed by (engine, source)."""

    def __init__(self, engines: Mapping[str, ExpressionEngineSpec], cache_size: int = 4096) -> None:
        self.engines = engines
        self._compiled = _LRU(cache_size)
        self._references = _LRU(cache_size)
        # What evaluate() needs, found with one lock-free lookup: (engine spec, compiled form, references). Emptied
        # when full; entries come back from the two caches above, so this never compiles anything again.
        self._prepared: dict[tuple[str, str], tuple[ExpressionEngineSpec, Any, frozenset[str]]] = {}
        self._cache_size = cache_size

    def engine(self, name: str) -> ExpressionEngineSpec:
        """The engine called `name`; an unknown name is a VALIDATION_ERROR listing the known ones."""
        spec = self.engines.get(name)
        if spec is None:
            known = ", ".join(sorted(self.engines)) or "none"
            raise ExpressionError(f"unknown expression engine {name!r} (known: {known})",
                                  expression="", engine=name)
        return spec

    def compile(self, engine: str, source: str) -> Any:
        """The compiled form of `source`, compiled at most once while it stays in the cache."""
        key = (engine, source)
        compiled = self._compiled.get(key)
        if compiled is not _MISSING:
            return compiled
        spec = self.engine(engine)
        if not source.strip():
            raise ExpressionError("the expression is empty", expression=source, engine=engine)
        try:
            compiled = spec.compile(source)
        except OpcodeError:
            raise
        except Exception as exc:  # a third-party engine that raised something else still names the expression
            raise ExpressionError(f"{type(exc).__name__}: {exc}", expression=source, engine=engine) from exc
        self._compiled.put(key, compiled)
        return compiled

    def references(self, engine: str, source: str) -> set[str]:
        """The scope names `source` reads (`steps`, `steps:<id>`, `steps:*`, `inputs`, ...)."""
        key = (engine, source)
        refs = self._references.get(key)
        if refs is _MISSING:
            spec = self.engine(engine)
            refs = frozenset(spec.references(source)) if spec.references else ALL_REFERENCES
            self._references.put(key, refs)
        return set(refs)

    def evaluate(self, engine: str, source: str, activation: Activation) -> Any:
        """Evaluate `source`; a callable activation is given the references and builds only those parts."""
        prepared = self._prepared.get((engine, source))
        if prepared is None:
            compiled = self.compile(engine, source)
            prepared = (self.engine(engine), compiled, frozenset(self.references(engine, source)))
            if len(self._prepared) >= self._cache_size:
                self._prepared.clear()
            self._prepared[(engine, source)] = prepared
        spec, compiled, refs = prepared
        # A callable builds a fresh dict; a mapping given as is is copied, so that no engine can change it.
        values = activation(refs) if callable(activation) else dict(activation)
        try:
            return spec.evaluate(compiled, values)
        except OpcodeError:
            raise
        except Exception as exc:
            raise ExpressionError(f"{type(exc).__name__}: {exc}", expression=source, engine=engine,
                                  code=EXECUTION_ERROR) from exc

