"""RunServices: what an action may ask of the runtime for its own run (`ctx.runtime`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from opcode_core.errors import NON_RETRYABLE, NOT_FOUND, OpcodeError

MAX_CHILD_DEPTH = 8

if TYPE_CHECKING:
    from opcode_core.runtime import Runtime


class RunServicesImpl:
    """The runtime's services bound to one run."""

    def __init__(self, runtime: Runtime, workflow_id: str, agent_id: str) -> None:
        self.runtime = runtime
        self.workflow_id = workflow_id
        self.agent_id = agent_id

    def _run(self) -> Any:
        run = self.runtime.runs.get(self.workflow_id)
        if run is None:
            raise OpcodeError(NOT_FOUND, f"workflow {self.workflow_id} is not running")
        return run

    async def sleep_until(self, when: float) -> None:
        """Sleep until epoch time `when`: the runtime's one timer service fires it."""
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = f"sleep:{self.workflow_id}:{id(woken)}"
        self.runtime.timers.at(key, when, lambda: woken.done() or woken.set_result(None))
        try:
            await woken
        finally:
            self.runtime.timers.cancel(key)

    async def emit(self, event_type: str, payload: dict[str, Any]) -> None:
        """Record a `custom_event`."""
        await self._run().emit("custom_event", None, {"event_type": event_type, "payload": payload})

    async def get_context(self) -> dict[str, Any]:
        """The run's context."""
        return dict(self._run().scope.context)

    async def update_context(self, values: dict[str, Any]) -> dict[str, Any]:
        """Merge values into the run's context, persist it and record `variable_set`."""
        run = self._run()
        run.scope.context.update(values)
        context = dict(run.scope.context)
        await self.runtime.db(self.runtime.store.set_context, self.workflow_id, context)
        await run.emit("variable_set", None, {"values": values})
        return context

    async def notify(self, message: str, data: Any = None, step_id: str | None = None) -> bool:
        """Push a notification to the run's agent; False when no session is connected."""
        if self.runtime.notifier is None:
            return False
        payload = {"message": message, "workflow_id": self.workflow_id, "step_id": step_id, "data": data}
        return bool(await self.runtime.notifier(self.agent_id, payload))

    async def scope(self) -> dict[str, Any]:
        """What expressions see of the run: completed steps' outputs, inputs, workflow, context."""
        run = self._run()
        steps = {sid: res.output for sid, res in run.scope.steps.items() if res.status == "completed"}
        return {"steps": steps, "inputs": dict(run.scope.inputs), "workflow": dict(run.scope.workflow),
                "context": dict(run.scope.context)}

    async def run_child(self, template_name: str, *, version: str | None, params: dict[str, Any]) -> dict[str, Any]:
        """Run a template as a child of this run and wait for its result; nesting is depth-limited."""
        from opcode_core import service

        depth, parent = 1, self.workflow_id
        while parent is not None:
            row = await self.runtime.db(self.runtime.store.get_workflow, parent)
            parent = row.get("parent_workflow_id") if row else None
            depth += 1 if parent else 0
            if depth >= MAX_CHILD_DEPTH:
                raise OpcodeError(NON_RETRYABLE, f"workflow.run nests deeper than {MAX_CHILD_DEPTH} runs "
                                  "(a template that runs itself?)")

        return await service.run_workflow(
            self.runtime,
            template_name=template_name,
            agent_id=self.agent_id,
            version=version,
            params=params,
            parent_workflow_id=self.workflow_id,
        )
