"""The `parallel` step type: branches of nested steps run at once; all must succeed, or the first wins."""

from __future__ import annotations

import asyncio
from typing import Any

from opcode_core import StepTypeSpec, hookimpl
from opcode_core.engine.definition import StepDef

CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "mode": {"enum": ["all", "race"], "default": "all",
                 "description": "all: wait for every branch (any failure fails the step); race: the first branch "
                 "to succeed wins and the others are cancelled."},
        "branches": {"type": "array", "minItems": 1, "items": {"type": "array", "items": {"type": "object"}}},
    },
    "required": ["branches"],
    "additionalProperties": False,
}


def nested(config: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """Each branch as `branch_<i>`."""
    return [(f"branch_{i}", branch) for i, branch in enumerate(config.get("branches") or [])]


async def run_parallel(step: StepDef, ctx: Any) -> dict[str, Any]:
    """`{mode: all, branches: [...]}` or `{mode: race, winner, output}`."""
    mode = step.config.get("mode") or "all"
    branches = step.config["branches"]
    await ctx.emit("parallel_started", {"mode": mode, "branches": len(branches)})
    tasks = [asyncio.create_task(ctx.run_steps(branch, f"branch_{i}")) for i, branch in enumerate(branches)]
    try:
        output = await (_all(tasks) if mode == "all" else _race(ctx, tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await ctx.emit("parallel_completed", {"mode": mode})
    return output


async def _all(tasks: list[asyncio.Task[Any]]) -> dict[str, Any]:
    outputs = await asyncio.gather(*tasks, return_exceptions=True)
    for out in outputs:
        if isinstance(out, BaseException):
            raise out
    return {"mode": "all", "branches": outputs}


async def _race(ctx: Any, tasks: list[asyncio.Task[Any]]) -> dict[str, Any]:
    pending = set(tasks)
    last_error: BaseException | None = None
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.exception() is None:
                winner = tasks.index(task)
                for loser in pending:
                    ctx.cancel_nested(f"branch_{tasks.index(loser)}", f"branch_{winner} won the race")
                    loser.cancel()
                return {"mode": "race", "winner": winner, "output": task.result()}
            last_error = task.exception()
    assert last_error is not None
    raise last_error


@hookimpl
def opcode_register_step_types() -> list[StepTypeSpec]:
    """Provide the `parallel` step type."""
    return [StepTypeSpec(
        name="parallel",
        description="Run `config.branches` (lists of steps) concurrently; mode `all` or `race`.",
        config_schema=CONFIG_SCHEMA,
        run=run_parallel,
        nested_steps=nested,
    )]
