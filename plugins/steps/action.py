"""The `action` step type: run the named action with interpolated params."""

from __future__ import annotations

from typing import Any

from opcode_core import StepTypeSpec, hookimpl
from opcode_core.engine.definition import StepDef
from opcode_core.specs import StepContext


async def run_action_step(step: StepDef, ctx: StepContext) -> dict[str, Any]:
    """Interpolate the step's params, then validate and execute its action."""
    params = ctx.interpolate(step.params)
    return await ctx.run_action(step.action or "", params)


@hookimpl
def opcode_register_step_types() -> list[StepTypeSpec]:
    """Provide the `action` step type, which every other feature builds on."""
    return [
        StepTypeSpec(
            name="action",
            description="Run one action with `params`, interpolated against the run's scope.",
            config_schema={"type": "object"},
            run=run_action_step,
            requires_action=True,
            essential=True,
        )
    ]
