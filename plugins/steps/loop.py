"""The `loop` step type: for_each over a list, or while / until a CEL condition, bounded by max_iter."""

from __future__ import annotations

from typing import Any

from opcode_core import StepTypeSpec, hookimpl
from opcode_core.engine.definition import StepDef
from opcode_core.engine.expressions import is_json_array_literal, split_engine
from opcode_core.errors import EXECUTION_ERROR, VALIDATION_ERROR, OpcodeError

# while/until without max_iter would spin forever on a condition that never changes.
DEFAULT_MAX_ITER = 1000

CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "mode": {"enum": ["for_each", "while", "until"], "default": "for_each"},
        "over": {"type": ["string", "array"],
                 "description": "for_each: a CEL expression, a JSON array (literal or as text), or `jq: <program>`."},
        "condition": {"type": "string", "description": "while / until: CEL, checked before (while) or after "
                      "(until) each iteration; `iter.index` is the iteration."},
        "body": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        "max_iter": {"type": "integer", "minimum": 0,
                     "description": f"Safety bound (0 or absent: none for for_each, {DEFAULT_MAX_ITER} otherwise)."},
    },
    "required": ["body"],
    "allOf": [
        {"if": {"properties": {"mode": {"enum": ["while", "until"]}}, "required": ["mode"]},
         "then": {"required": ["condition"]}, "else": {"required": ["over"]}},
    ],
    "additionalProperties": False,
}


def nested(config: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """The body, validated once (its ids repeat per iteration as `iter_<i>`)."""
    return [("body", config["body"])] if isinstance(config.get("body"), list) else []


def expressions(config: dict[str, Any]) -> list[tuple[str, str]]:
    """Expressions to compile at define time."""
    out = []
    over = config.get("over")
    if isinstance(over, str) and is_json_array_literal(over) is None:
        out.append(("over", over))
    if isinstance(config.get("condition"), str):
        out.append(("condition", config["condition"]))
    return out


async def run_loop(step: StepDef, ctx: Any) -> dict[str, Any]:
    """Run the body per item or while the condition holds; `{iterations, results}`."""
    config = step.config
    mode = config.get("mode") or "for_each"
    limit = config.get("max_iter") or (None if mode == "for_each" else DEFAULT_MAX_ITER)
    results: list[Any] = []
    if mode == "for_each":
        items = _items(ctx, config["over"])
        for index, item in enumerate(items):
            if limit is not None and index >= limit:
                break
            results.append(await _iteration(ctx, config, index, {"item": item, "index": index}))
    else:
        index = 0
        while limit is None or index < limit:
            loop_vars = {"item": None, "index": index}
            iteration_scope = ctx.nested_scope(f"iter_{index}", loop_vars)
            if mode == "while" and not _holds(ctx, config["condition"], iteration_scope):
                break
            results.append(await _iteration(ctx, config, index, loop_vars))
            if mode == "until" and _holds(ctx, config["condition"], iteration_scope):
                break
            index += 1
    await ctx.emit("loop_completed", {"iterations": len(results)})
    return {"iterations": len(results), "results": results}


async def _iteration(ctx: Any, config: dict[str, Any], index: int, loop_vars: dict[str, Any]) -> Any:
    await ctx.emit("loop_iter_started", {"iteration": index, "item": loop_vars["item"]})
    output = await ctx.run_steps(config["body"], f"iter_{index}", loop=loop_vars)
    await ctx.emit("loop_iter_completed", {"iteration": index})
    return output


def _items(ctx: Any, over: Any) -> list[Any]:
    if isinstance(over, list):
        return over
    literal = is_json_array_literal(over)
    if literal is not None:
        return literal
    engine, _ = split_engine(over, "cel")
    value = ctx.evaluate(over)
    if not isinstance(value, list):
        raise OpcodeError(EXECUTION_ERROR, f"loop over {over!r} gave {type(value).__name__}, not a list",
                          step_id=ctx.step_id, details={"engine": engine})
    return value


def _holds(ctx: Any, condition: str, scope: Any) -> bool:
    value = ctx.evaluate(condition, scope=scope)
    if not isinstance(value, bool):
        raise OpcodeError(VALIDATION_ERROR, f"loop condition {condition!r} gave {value!r}, not a boolean",
                          step_id=ctx.step_id)
    return value


@hookimpl
def opcode_register_step_types() -> list[StepTypeSpec]:
    """Provide the `loop` step type."""
    return [StepTypeSpec(
        name="loop",
        description="Run `config.body` for each item of `over`, or while / until `condition`; "
        "`${{loop.item}}`, `${{loop.index}}` (CEL: `iter.item`, `iter.index`).",
        config_schema=CONFIG_SCHEMA,
        run=run_loop,
        nested_steps=nested,
        expressions=expressions,
    )]
