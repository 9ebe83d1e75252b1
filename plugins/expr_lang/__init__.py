"""The Expr language (expr-lang.org) in Python: a lark grammar, a checked compile step, closures to run.

`compile(source)` parses and checks once (cached, bounded LRU); `run(program, env)` evaluates against a
dict of plain JSON-like values. Errors are ExpressionError: compile errors keep VALIDATION_ERROR, runtime
errors carry EXECUTION_ERROR; both name the expression and, when known, the character offset.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from opcode_core.errors import EXECUTION_ERROR, ExpressionError
from opcode_plugins.expr_lang.compiler import Fn, Frame, compile_tree
from opcode_plugins.expr_lang.parser import ParseFailure, parse
from opcode_plugins.expr_lang.values import EvalError

ENGINE = "expr"
CACHE_SIZE = 1024
_NO_VARS: dict[str, Any] = {}

__all__ = ["CACHE_SIZE", "ENGINE", "Program", "compile", "evaluate", "references", "run"]


class Program:
    """A compiled expression: immutable, safe to share between threads and runs."""

    __slots__ = ("_fn", "names", "source")

    def __init__(self, source: str, fn: Fn, names: frozenset[str]) -> None:
        self.source = source
        self._fn = fn
        # Top-level names the expression reads from its environment ("$env" means all of them).
        self.names = names

    def __call__(self, env: Mapping[str, Any]) -> Any:
        """Evaluate against `env`; same as `run(self, env)`."""
        return run(self, env)

    def __repr__(self) -> str:
        return f"<expr program {self.source!r}>"


@functools.lru_cache(maxsize=CACHE_SIZE)
def compile(source: str) -> Program:
    """Parse and check `source` once; raise ExpressionError (VALIDATION_ERROR) at the offending position."""
    if not isinstance(source, str):
        raise ExpressionError(f"expression must be a string, not {type(source).__name__}", expression=str(source),
                              engine=ENGINE)
    try:
        fn, names = compile_tree(parse(source))
    except ParseFailure as exc:
        raise ExpressionError(exc.message, expression=source, engine=ENGINE, position=exc.pos) from None
    except RecursionError:
        raise ExpressionError("expression is nested too deeply", expression=source, engine=ENGINE) from None
    return Program(source, fn, names)


def run(program: Program, env: Mapping[str, Any]) -> Any:
    """Evaluate a compiled program; raise ExpressionError (EXECUTION_ERROR) naming what failed and where."""
    frame = Frame(env if isinstance(env, dict) else dict(env), _NO_VARS)
    try:
        return program._fn(frame)
    except EvalError as exc:
        raise ExpressionError(exc.message, expression=program.source, engine=ENGINE, position=exc.pos,
                              code=EXECUTION_ERROR) from None
    except RecursionError:
        raise ExpressionError("evaluation nested too deeply", expression=program.source, engine=ENGINE,
                              code=EXECUTION_ERROR) from None


def evaluate(source: str, env: Mapping[str, Any] | None = None) -> Any:
    """Compile (cached) and run in one call."""
    return run(compile(source), env or {})


def references(source: str) -> set[str]:
    """The top-level names `source` reads from its environment (let variables and builtins excluded)."""
    return set(compile(source).names)
