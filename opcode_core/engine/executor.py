"""Runs one workflow: step lists in dependency order, leaf actions under the pool limit, every change an event."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from opcode_core.engine.definition import StepDef, WorkflowDef
from opcode_core.engine.fsm import StepFSM, WorkflowFSM
from opcode_core.engine.interpolation import Scope, StepResult, interpolate
from opcode_core.errors import (
    ACTION_UNAVAILABLE,
    TIMEOUT_ERROR,
    ActionError,
    OpcodeError,
    as_opcode_error,
)
from opcode_core.specs import ActionContext, RunServices

if TYPE_CHECKING:
    from opcode_core.registry import Registry

log = logging.getLogger("opcode.executor")

Emit = Callable[..., "asyncio.Future[Any]"]


class StepFailed(Exception):
    """A step failed and its failure ends the step list that contains it."""

    def __init__(self, error: OpcodeError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class RunInfo:
    """The identity of a run, as `${{workflow.*}}` shows it."""

    workflow_id: str
    name: str
    template_name: str | None
    template_version: str | None
    agent_id: str

    def as_scope(self) -> dict[str, Any]:
        """The `workflow` namespace of interpolation."""
        return {
            "run_id": self.workflow_id,
            "id": self.workflow_id,
            "name": self.name,
            "template_name": self.template_name,
            "template_version": self.template_version,
            "agent_id": self.agent_id,
        }


class WorkflowRun:
    """One run of a definition; `execute()` drives it to completed or failed."""

    def __init__(
        self,
        *,
        info: RunInfo,
        definition: WorkflowDef,
        params: dict[str, Any],
        registry: Registry,
        emit: Emit,
        pool: asyncio.Semaphore,
        services: RunServices,
        plugin_settings: Callable[[str], dict[str, Any]],
        context: dict[str, Any] | None = None,
    ) -> None:
        self.info = info
        self.definition = definition
        self.registry = registry
        self._emit = emit
        self.pool = pool
        self.services = services
        self.plugin_settings = plugin_settings
        self.fsm = WorkflowFSM(info.workflow_id)
        self.step_fsms: dict[str, StepFSM] = {}
        self.durations: dict[str, int] = {}
        self.scope = Scope(
            inputs={**definition.inputs, **params},
            workflow=info.as_scope(),
            context=context if context is not None else dict(definition.context),
            steps={},
        )
        self.output: Any = None
        self.error: OpcodeError | None = None
        self.started_at: float | None = None
        self.completed_at: float | None = None
        self.log = logging.LoggerAdapter(log, {"workflow_id": info.workflow_id, "agent_id": info.agent_id})

    def emit(self, event_type: str, step_id: str | None = None, payload: dict[str, Any] | None = None):
        """Append an event; the returned future resolves once it is durable."""
        return self._emit(self.info.workflow_id, event_type, step_id=step_id, payload=payload or {},
                          agent_id=self.info.agent_id)

    async def execute(self) -> None:
        """Run every step; the outcome is left in status/output/error and in the event log."""
        self.fsm.to("active")
        self.started_at = time.time()
        self.emit("workflow_started", payload={
            "template_name": self.info.template_name,
            "template_version": self.info.template_version,
            "params": dict(self.scope.inputs),
        })
        try:
            async with asyncio.timeout(self.definition.timeout):
                await self.run_steps(self.definition.steps, "", self.scope)
            self.output = self._final_output()
        except StepFailed as failed:
            await self._fail(failed.error)
            return
        except TimeoutError:
            await self.emit("workflow_timed_out", payload={"timeout_s": self.definition.timeout})
            await self._fail(OpcodeError(TIMEOUT_ERROR, f"workflow timed out after {self.definition.timeout}s"))
            return
        except OpcodeError as exc:
            await self._fail(exc)
            return
        self.fsm.to("completed")
        self.completed_at = time.time()
        await self.emit("workflow_completed", payload={"output": self.output})

    async def crash(self, exc: BaseException) -> None:
        """Fail a run that an unexpected exception stopped, unless it already ended."""
        if self.fsm.status in ("pending", "active", "suspended"):
            if self.fsm.status == "pending":
                self.fsm.to("active")
            await self._fail(as_opcode_error(exc))

    async def _fail(self, error: OpcodeError) -> None:
        self.error = error
        self.fsm.to("failed")
        self.completed_at = time.time()
        await self.emit("workflow_failed", payload={"error": error.to_dict()})

    def _final_output(self) -> Any:
        if self.definition.output is not None:
            return interpolate(self.definition.output, self.scope)
        terminal = self.definition.terminal_steps()
        outputs = {sid: self.scope.steps[sid].output for sid in terminal if sid in self.scope.steps}
        if len(terminal) == 1:
            return outputs.get(terminal[0])
        return outputs

    async def run_steps(self, steps: list[StepDef], prefix: str, scope: Scope) -> None:
        """Run a step list: each step starts as soon as its depends_on are done; a failure stops new starts."""
        remaining = {step.id: step for step in steps}
        done: set[str] = set()
        running: dict[asyncio.Task[None], str] = {}
        failure: BaseException | None = None
        try:
            while remaining or running:
                if failure is None:
                    for sid, step in list(remaining.items()):
                        if all(dep in done for dep in step.depends_on):
                            del remaining[sid]
                            task = asyncio.create_task(self.run_step(step, prefix + sid, scope))
                            running[task] = sid
                if not running:
                    break
                finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    sid = running.pop(task)
                    exc = task.exception()
                    if exc is None:
                        done.add(sid)
                    elif failure is None:
                        failure = exc
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        if failure is not None:
            raise failure

    async def run_step(self, step: StepDef, full_id: str, scope: Scope) -> None:
        """Run one step through its step type; its completion is durable before this returns."""
        fsm = self.step_fsms[full_id] = StepFSM(full_id)
        fsm.to("scheduled")
        spec = self.registry.step_types.get(step.type)
        fsm.to("running")
        self.emit("step_started", full_id, {"attempt": 1, "type": step.type, "action": step.action})
        started = time.monotonic()
        ctx = StepRunContext(self, step, full_id, scope)
        try:
            if spec is None:
                raise OpcodeError(ACTION_UNAVAILABLE, f"step type {step.type!r} is not available")
            async with asyncio.timeout(step.timeout):
                output = await spec.run(step, ctx)
        except TimeoutError:
            error = OpcodeError(TIMEOUT_ERROR, f"step timed out after {step.timeout}s", step_id=full_id)
            await self._step_failed(fsm, scope, error, None, ctx, started)
            raise StepFailed(error) from None
        except Exception as exc:
            error = as_opcode_error(exc, step_id=full_id)
            partial = exc.output if isinstance(exc, ActionError) else None
            await self._step_failed(fsm, scope, error, partial, ctx, started)
            raise StepFailed(error) from None
        duration = self.durations[full_id] = int((time.monotonic() - started) * 1000)
        fsm.to("completed")
        scope.steps[full_id] = StepResult("completed", output)
        if scope is not self.scope:
            self.scope.steps[full_id] = scope.steps[full_id]
        await self.emit("step_completed", full_id, {"output": output, "input": ctx.input, "duration_ms": duration})

    async def _step_failed(
        self, fsm: StepFSM, scope: Scope, error: OpcodeError, partial: Any, ctx: StepRunContext, started: float
    ) -> None:
        duration = self.durations[fsm.step_id] = int((time.monotonic() - started) * 1000)
        fsm.to("failed")
        scope.steps[fsm.step_id] = StepResult("failed", partial, error.to_dict())
        if scope is not self.scope:
            self.scope.steps[fsm.step_id] = scope.steps[fsm.step_id]
        payload = {"error": error.to_dict(), "output": partial, "input": ctx.input, "duration_ms": duration}
        await self.emit("step_failed", fsm.step_id, payload)

    def result(self) -> dict[str, Any]:
        """The answer of `opcode.run`: status, output, error and every step."""
        steps = {}
        for sid, fsm in self.step_fsms.items():
            entry: dict[str, Any] = {"step_id": sid, "status": fsm.status, "duration_ms": self.durations.get(sid)}
            res = self.scope.steps.get(sid)
            entry["output"] = res.output if res else None
            if res and res.error:
                entry["error"] = res.error
            steps[sid] = entry
        out: dict[str, Any] = {
            "workflow_id": self.info.workflow_id,
            "status": self.fsm.status,
            "output": self.output,
            "started_at": _iso(self.started_at),
            "completed_at": _iso(self.completed_at),
            "steps": steps,
        }
        if self.error:
            out["error"] = self.error.to_dict()
        return out


class StepRunContext:
    """The StepContext a step type gets: interpolation, actions under the pool, events."""

    def __init__(self, run: WorkflowRun, step: StepDef, full_id: str, scope: Scope) -> None:
        self.run = run
        self.step = step
        self.step_id = full_id
        self.scope = scope
        self.workflow_id = run.info.workflow_id
        self.agent_id = run.info.agent_id
        self.input: Any = None

    def interpolate(self, value: Any) -> Any:
        """Resolve `${{...}}` against this step's scope."""
        return interpolate(value, self.scope)

    async def run_action(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Validate params against the action's schema and execute it, holding one pool slot."""
        spec = self.run.registry.action(name)
        self.input = params
        self.run.registry.validate_params(spec, params)
        ctx = ActionContext(
            workflow_id=self.workflow_id,
            step_id=self.step_id,
            agent_id=self.agent_id,
            attempt=1,
            logger=logging.LoggerAdapter(
                logging.getLogger(f"opcode.action.{name}"),
                {"workflow_id": self.workflow_id, "step_id": self.step_id, "agent_id": self.agent_id},
            ),
            settings=self.run.plugin_settings(spec.plugin or ""),
            runtime=self.run.services,
            timeout_s=self.step.timeout,
        )
        async with self.run.pool:
            output = await spec.execute(params, ctx)
        if not isinstance(output, dict):
            raise OpcodeError("EXECUTION_ERROR", f"action {name} returned {type(output).__name__}, not an object")
        return output

    async def emit(self, event_type: str, payload: dict[str, Any]) -> None:
        """Append an event for this step and wait until it is durable."""
        await self.run.emit(event_type, self.step_id, payload)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
