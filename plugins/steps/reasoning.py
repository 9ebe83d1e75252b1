"""The `reasoning` step type: suspend the run until an agent or a human makes a decision."""

from __future__ import annotations

from typing import Any

from opcode_core import StepTypeSpec, hookimpl
from opcode_core.engine.definition import StepDef
from opcode_core.engine.durations import DURATION_PATTERN, parse_duration
from opcode_core.errors import OpcodeError

CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "prompt_context": {"description": "What the decider should consider (text or any JSON)."},
        "options": {"type": "array", "items": {
            "type": "object",
            "properties": {"id": {"type": "string", "minLength": 1}, "description": {"type": "string"}},
            "required": ["id"],
        }, "description": "The choices; empty means any choice is accepted (free-form)."},
        "data_inject": {"type": "object", "additionalProperties": {"type": "string"},
                        "description": "Names to scope paths (`steps.fetch.output`, `inputs.env`, "
                        "`steps['id'].field`), resolved into the decision's context."},
        "timeout": {"type": ["string", "number"], "pattern": DURATION_PATTERN},
        "fallback": {"type": "string", "description": "The choice made when the timeout passes."},
        "target_agent": {"type": "string", "description": "Only this agent may decide (empty: anyone)."},
    },
    "additionalProperties": False,
}


def inject(ctx: Any, mapping: dict[str, str]) -> dict[str, Any]:
    """Resolve each `data_inject` path as an interpolation reference, else as CEL; unresolvable ones are None."""
    data: dict[str, Any] = {}
    for name, path in mapping.items():
        try:
            data[name] = ctx.interpolate(path if "${{" in path else "${{" + path + "}}")
            continue
        except OpcodeError:
            pass
        try:
            data[name] = ctx.evaluate(path)
        except OpcodeError:
            data[name] = None
    return data


async def run_reasoning(step: StepDef, ctx: Any) -> dict[str, Any]:
    """The resolution `{choice, reasoning, data, resolved_by}`."""
    config = step.config
    timeout = config.get("timeout")
    return await ctx.request_decision(
        prompt=ctx.interpolate(config.get("prompt_context")),
        data=inject(ctx, config.get("data_inject") or {}),
        options=config.get("options") or [],
        timeout=parse_duration(timeout) if timeout not in (None, "") else None,
        fallback=config.get("fallback") or None,
        target_agent=config.get("target_agent") or None,
    )


@hookimpl
def opcode_register_step_types() -> list[StepTypeSpec]:
    """Provide the `reasoning` step type."""
    return [StepTypeSpec(
        name="reasoning",
        description="Create a pending decision and suspend the run until `opcode.signal` decides it "
        "(or its timeout picks the fallback).",
        config_schema=CONFIG_SCHEMA,
        run=run_reasoning,
    )]
