"""The Expr language (expr-lang.org): the `expr` expression engine and the `expr.eval` action."""

from __future__ import annotations

import json
import math
from typing import Any

from opcode_core import ActionContext, ActionError, ActionSpec, ExpressionEngineSpec, hookimpl
from opcode_core.errors import EXECUTION_ERROR, ExpressionError

JSON = dict[str, Any]

# The names every expr.eval expression can read, besides `data`; filled from the run's scope.
SCOPE_NAMES = ("steps", "inputs", "workflow", "context")

EVAL_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "expression": {
            "type": "string",
            "minLength": 1,
            "description": "An Expr expression, e.g. `filter(steps['fetch'].body.items, {.score >= "
            "inputs.threshold})`. It reads `steps.<id>` (that step's output), `inputs`, `workflow`, `context` "
            "and `data`.",
        },
        "data": {"description": "Any JSON value, available to the expression as `data` (nil when not given)."},
    },
    "required": ["expression"],
    "additionalProperties": False,
}

OUTPUT_SCHEMA: JSON = {
    "type": "object",
    "properties": {"result": {"description": "The expression's value."}},
    "required": ["result"],
}


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return json.dumps(key)
    from opcode_plugins.expr_lang.values import go_string

    return go_string(key)


def to_json_value(value: Any) -> Any:
    """A result as plain JSON: map keys become strings (groupBy may key by number or bool), no NaN/Inf."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a JSON number")
        return value
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {_key(k): to_json_value(v) for k, v in value.items()}
    raise ValueError(f"a {type(value).__name__} is not a JSON value")


def compile_expression(source: str) -> Any:
    """Compile Expr source once (cached); ExpressionError on a syntax or check error."""
    # Imported here so that loading the plugin does not import lark (SPEC: light plugin imports).
    from opcode_plugins import expr_lang

    return expr_lang.compile(source)


def evaluate_expression(program: Any, activation: JSON) -> Any:
    """Run a compiled program against an activation of JSON-like values; JSON-like result."""
    from opcode_plugins import expr_lang

    result = expr_lang.run(program, activation)
    try:
        return to_json_value(result)
    except ValueError as exc:
        raise ExpressionError(str(exc), expression=program.source, engine="expr",
                              code=EXECUTION_ERROR) from None


def expression_references(source: str) -> set[str]:
    """Top-level names an expression reads ("$env" when it reads the whole environment)."""
    from opcode_plugins import expr_lang

    return expr_lang.references(source)


async def _scope(ctx: ActionContext) -> JSON:
    scope = getattr(ctx.runtime, "scope", None)
    if scope is not None:
        return dict(await scope())
    # A runtime without scope() still offers the run's context.
    return {"context": await ctx.runtime.get_context()}


async def eval_expression(params: JSON, ctx: ActionContext) -> JSON:
    """Evaluate `expression` against the run's scope and `data`; output `{result}`."""
    source = params["expression"]
    try:
        program = compile_expression(source)
        env: JSON = {name: {} for name in SCOPE_NAMES}
        env.update(await _scope(ctx))
        env["data"] = params.get("data")
        result = evaluate_expression(program, env)
    except ExpressionError as exc:
        raise ActionError(exc.message, code=exc.code, details=exc.details) from None
    return {"result": result}


@hookimpl
def opcode_register_expression_engines(settings: Any) -> list[ExpressionEngineSpec]:
    """Provide the `expr` expression engine."""
    return [
        ExpressionEngineSpec(
            name="expr",
            description="Expr (expr-lang.org): closures filter/map/count/any/all/sum/min/max with `#` and "
            "`.field`, `??`, `?.`, ternary, `let`, pipes `|`, string functions and operators, ranges, slices.",
            compile=compile_expression,
            evaluate=evaluate_expression,
            references=expression_references,
        )
    ]


@hookimpl
def opcode_register_actions(settings: Any) -> list[ActionSpec]:
    """Provide expr.eval."""
    return [
        ActionSpec(
            "expr.eval",
            "Evaluate an Expr (expr-lang.org) expression against the run's scope — `steps.<id>` (the step's "
            "output, e.g. `steps['fetch'].body.count`), `inputs`, `workflow`, `context` — and the optional "
            "`data` param; output `{result}`. Closures: `filter(xs, {.score > 3})`, `map`, `count`, `any`, "
            "`all`, `sum`, `min`, `max`, `len`, `#`; also `??`, `?.`, ternary, `let x = …; …`, pipes "
            "`xs | map(.name) | join(',')`, `contains`/`startsWith`/`matches`, `in`, ranges `1..3`, slices.",
            EVAL_SCHEMA,
            eval_expression,
            output_schema=OUTPUT_SCHEMA,
        )
    ]
