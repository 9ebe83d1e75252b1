"""Pending decisions of reasoning steps: asked once, resolved once, with timeout and fallback."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from opcode_core.errors import TIMEOUT_ERROR, OpcodeError

if TYPE_CHECKING:
    from opcode_core.engine.executor import StepRunContext
    from opcode_core.runtime import Runtime


def decision_view(row: dict[str, Any]) -> dict[str, Any]:
    """A decision as `opcode.status` shows it."""
    return {
        "id": row["id"],
        "step_id": row["step_id"],
        "context": row.get("context") or {},
        "options": row.get("options") or [],
        "timeout_at": row.get("timeout_at"),
        "fallback": row.get("fallback"),
        "target_agent": row.get("target_agent"),
        "status": row["status"],
        "created_at": row.get("created_at"),
    }


class DecisionBook:
    """Creates, expires and resolves decisions through the store; the executor asks it when a step reasons."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def request(
        self,
        ctx: StepRunContext,
        *,
        prompt: Any,
        data: dict[str, Any],
        options: list[dict[str, Any]],
        timeout: float | None,
        fallback: str | None,
        target_agent: str | None,
    ) -> dict[str, Any]:
        """The step's resolution: an earlier one if it exists (never asked twice), else suspend for one."""
        rt, run = self.runtime, ctx.run
        existing = await rt.db(rt.store.list_decisions, run.info.workflow_id, step_id=ctx.step_id)
        for row in existing:
            if row["status"] == "resolved":
                return row["resolution"]
        pending = [row for row in existing if row["status"] == "pending"]
        if pending:
            decision = pending[-1]
        else:
            timeout_at = None
            if timeout:
                timeout_at = (datetime.now(UTC) + timedelta(seconds=timeout)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            decision = await rt.db(
                rt.store.create_decision,
                id=str(uuid.uuid4()),
                workflow_id=run.info.workflow_id,
                step_id=ctx.step_id,
                context={"prompt": prompt, "data": data},
                options=options,
                timeout_at=timeout_at,
                fallback=fallback,
                target_agent=target_agent,
            )
            await run.emit("decision_requested", ctx.step_id, {k: v for k, v in decision_view(decision).items()
                                                                 if k != "status"})
        timer = f"decision:{decision['id']}"
        if decision.get("timeout_at"):
            deadline = datetime.fromisoformat(decision["timeout_at"]).timestamp()
            rt.timers.at(timer, deadline, lambda: self._expire(run, decision))
        try:
            return await run.suspend(ctx.step_id, "decision", None,
                                     {"waiting_for": "decision", "decision_id": decision["id"]})
        finally:
            rt.timers.cancel(timer)

    async def _expire(self, run: Any, decision: dict[str, Any]) -> None:
        """The deadline passed: choose the fallback, or fail the step with TIMEOUT_ERROR."""
        rt = self.runtime
        fallback = decision.get("fallback")
        if fallback:
            resolution = {"choice": fallback, "reasoning": "decision timed out; fallback chosen", "data": {},
                          "resolved_by": "timeout"}
            if await rt.db(rt.store.resolve_decision, decision["id"], resolution):
                await run.emit("decision_resolved", decision["step_id"], {"decision_id": decision["id"],
                                                                          **resolution})
                run.deliver(decision["step_id"], resolution)
            return
        if await rt.db(rt.store.resolve_decision, decision["id"], {"timed_out": True}, "expired"):
            error = OpcodeError(TIMEOUT_ERROR, f"decision {decision['id']} timed out with no fallback",
                                step_id=decision["step_id"])
            run.deliver(decision["step_id"], error)

    async def resolve(self, decision: dict[str, Any], resolution: dict[str, Any]) -> bool:
        """Record a resolution once; False when the decision was no longer pending."""
        rt = self.runtime
        if not await rt.db(rt.store.resolve_decision, decision["id"], resolution):
            return False
        await rt.writer.append(decision["workflow_id"], "decision_resolved", step_id=decision["step_id"],
                               payload={"decision_id": decision["id"], **resolution},
                               agent_id=resolution.get("resolved_by"))
        return True
