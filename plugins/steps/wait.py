"""The `wait` step type: sleep for a duration, or suspend until a named signal arrives."""

from __future__ import annotations

from typing import Any

from opcode_core import StepTypeSpec, hookimpl
from opcode_core.engine.definition import StepDef
from opcode_core.engine.durations import DURATION_PATTERN, parse_duration

CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "duration": {"type": ["string", "number"], "pattern": DURATION_PATTERN,
                     "description": "How long to wait (Go duration, e.g. 5s, 1h30m)."},
        "signal": {"type": "string", "minLength": 1,
                   "description": "Wait for a signal: one whose step_id is this step, or whose signal_type or "
                   "payload.signal equals this name."},
    },
    "oneOf": [{"required": ["duration"]}, {"required": ["signal"]}],
    "additionalProperties": False,
}


async def run_wait(step: StepDef, ctx: Any) -> dict[str, Any]:
    """`{waited: ms}` after a duration, or `{signal, payload}` once signalled."""
    config = step.config
    if "duration" in config:
        seconds = parse_duration(config["duration"])
        # The deadline is recorded, so a run revived after a restart waits only for what is left.
        until = ctx.deadline(seconds)
        await ctx.emit("wait_started", {"duration": config["duration"], "until": until})
        await ctx.sleep_until(until)
        waited = int(seconds * 1000)
        await ctx.emit("wait_completed", {"waited": waited})
        return {"waited": waited}
    await ctx.emit("wait_started", {"signal": config["signal"]})
    received = await ctx.wait_for_signal(config["signal"])
    await ctx.emit("wait_completed", {"signal": config["signal"]})
    return {"signal": config["signal"], "payload": received.get("payload")}


@hookimpl
def opcode_register_step_types() -> list[StepTypeSpec]:
    """Provide the `wait` step type."""
    return [StepTypeSpec(
        name="wait",
        description="Wait `config.duration`, or until a signal named `config.signal` (the run is suspended meanwhile).",
        config_schema=CONFIG_SCHEMA,
        run=run_wait,
    )]
