"""The `condition` step type: a CEL expression picks a branch of nested steps."""

from __future__ import annotations

from typing import Any

from opcode_core import StepTypeSpec, hookimpl
from opcode_core.engine.definition import StepDef
from opcode_core.engine.expressions import branch_key

_STEPS = {"type": "array", "items": {"type": "object"}}

CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "expression": {"type": "string", "minLength": 1, "description": "CEL; its value picks the branch."},
        "branches": {"type": "object", "additionalProperties": _STEPS,
                     "description": "Branch key (the expression's value as text: true/false for booleans) "
                     "to a list of steps."},
        "default": {**_STEPS, "description": "Steps to run when no branch key matches."},
    },
    "required": ["expression"],
    "additionalProperties": False,
}


def nested(config: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """Each branch's steps, under its key; the default branch under `default`."""
    out = [(key, steps) for key, steps in (config.get("branches") or {}).items()]
    if config.get("default"):
        out.append(("default", config["default"]))
    return out


def expressions(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The expression to compile at define time, with its config path."""
    return [("expression", config["expression"])] if isinstance(config.get("expression"), str) else []


async def run_condition(step: StepDef, ctx: Any) -> dict[str, Any]:
    """Evaluate, record `condition_evaluated`, run the chosen branch; `{branch, output}`."""
    config = step.config
    value = ctx.evaluate(config["expression"])
    key = branch_key(value)
    await ctx.emit("condition_evaluated", {"expression": config["expression"], "result": key})
    branches = config.get("branches") or {}
    if key in branches:
        steps = branches[key]
    elif config.get("default"):
        key, steps = "default", config["default"]
    else:
        return {"branch": key, "skipped": True}
    return {"branch": key, "output": await ctx.run_steps(steps, key)}


@hookimpl
def opcode_register_step_types() -> list[StepTypeSpec]:
    """Provide the `condition` step type."""
    return [StepTypeSpec(
        name="condition",
        description="Evaluate `config.expression` (CEL) and run `config.branches[value]`, else `config.default`.",
        config_schema=CONFIG_SCHEMA,
        run=run_condition,
        nested_steps=nested,
        expressions=expressions,
    )]
