"""Runs one workflow: step lists in dependency order, leaf actions under the pool limit, every change an event."""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator

from opcode_core.engine.breakers import CircuitBreakers
from opcode_core.engine.definition import StepDef, WorkflowDef, parse_steps
from opcode_core.engine.expressions import split_engine
from opcode_core.engine.fsm import StepFSM, WorkflowFSM
from opcode_core.engine.interpolation import Scope, StepResult, interpolate
from opcode_core.engine.retry import RetryPolicy
from opcode_core.errors import (
    ACTION_UNAVAILABLE,
    EXECUTION_ERROR,
    NOT_FOUND,
    RETRY_EXHAUSTED,
    TIMEOUT_ERROR,
    VALIDATION_ERROR,
    ActionError,
    OpcodeError,
    as_opcode_error,
)
from opcode_core.specs import ActionContext, RunServices

if TYPE_CHECKING:
    from opcode_core.engine.expressions import ExpressionEvaluator
    from opcode_core.redaction import Redactor
    from opcode_core.registry import Registry

log = logging.getLogger("opcode.executor")

# `EventWriter.append`: (workflow_id, event_type, *, step_id, payload, agent_id, awaited) -> future of the event.
Emit = Callable[..., "asyncio.Future[Any]"]
RESTORABLE = ("completed", "skipped")
NO_RETRY = RetryPolicy()


class SkipStep(Exception):
    """Delivered to a suspended step to end it skipped (a `skip` signal)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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


@dataclass
class Waiter:
    """A suspended step waiting for a decision or a named signal."""

    step_id: str
    kind: str  # decision | signal
    name: str | None
    future: asyncio.Future[Any]


class WorkflowRun:
    """One run of a definition; `execute()` drives it until it completes, fails, or waits suspended."""

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
        expressions: ExpressionEvaluator | None = None,
        decisions: Any = None,
        context: dict[str, Any] | None = None,
        restored: dict[str, StepResult] | None = None,
        status: str = "pending",
        output_schema: dict[str, Any] | None = None,
        attempts: dict[str, int] | None = None,
        breakers: CircuitBreakers | None = None,
        deadlines: dict[str, float] | None = None,
    ) -> None:
        self.info = info
        self.definition = definition
        self.registry = registry
        self._emit = emit
        self.pool = pool
        self.services = services
        self.plugin_settings = plugin_settings
        self.expressions = expressions
        self.decisions = decisions
        self.output_schema = output_schema
        self.fsm = WorkflowFSM(info.workflow_id, status)
        self.resuming = status != "pending"
        self.step_fsms: dict[str, StepFSM] = {}
        self.durations: dict[str, int] = {}
        # Attempts a step has already had (a `retry` signal or a recovery re-runs it as attempt n+1).
        self.attempts: dict[str, int] = dict(attempts or {})
        self.breakers = breakers
        # Deadlines (epoch seconds) that steps recorded before a restart, so a wait resumes where it was.
        self.deadlines: dict[str, float] = dict(deadlines or {})
        self.restored = restored or {}
        self.scope = Scope(
            inputs={**definition.inputs, **params},
            workflow=info.as_scope(),
            context=context if context is not None else dict(definition.context),
            steps=dict(self.restored),
        )
        for sid, res in self.restored.items():
            self.step_fsms[sid] = StepFSM(sid, res.status)
        self.output: Any = None
        self.error: OpcodeError | None = None
        self.started_at: float | None = None
        self.completed_at: float | None = None
        self.waiters: dict[str, Waiter] = {}
        self.suspended: set[str] = set()
        # Nested lists cancelled on purpose (a lost race), by id prefix; their steps end skipped.
        self.cancel_reasons: dict[str, str] = {}
        self._main: asyncio.Future[Any] | None = None
        self.cancelled_by: str | None = None
        # Set whenever the run stops advancing on its own: suspended, or ended.
        self.settled = asyncio.Event()
        self._parsed: dict[int, list[StepDef]] = {}
        # Hides resolved secret values in what leaves the run (events, result); None until use_secrets.
        self.redactor: Redactor | None = None
        self.log = logging.LoggerAdapter(log, {"workflow_id": info.workflow_id, "agent_id": info.agent_id})

    def use_secrets(self, lookup: Callable[[str], str], redactor: Redactor) -> None:
        """Resolve `${{secrets.*}}` through `lookup`; hide what `redactor` knows in events and the result."""
        self.scope.secret_lookup = lookup
        self.redactor = redactor

    def emit(self, event_type: str, step_id: str | None = None, payload: dict[str, Any] | None = None,
             awaited: bool = True):
        """Append an event; the returned future resolves once it is durable (`awaited=False`: nobody waits)."""
        if payload and self.redactor:
            # Only the stored (and observed) copy is redacted; the scope keeps the real values for later steps.
            payload = self.redactor.redact(payload)
        return self._emit(self.info.workflow_id, event_type, step_id=step_id, payload=payload or {},
                          agent_id=self.info.agent_id, awaited=awaited)

    @property
    def finished(self) -> bool:
        """Whether the run reached a terminal status."""
        return self.fsm.status in ("completed", "failed", "cancelled")

    async def execute(self) -> None:
        """Run every step; the outcome is left in status/output/error and in the event log."""
        try:
            await self._drive()
        finally:
            self.settled.set()

    async def _drive(self) -> None:
        self.started_at = time.time()
        self.fsm.to("active")
        if self.resuming:
            self.emit("workflow_resumed", payload={"restored_steps": len(self.restored)}, awaited=False)
        else:
            self.emit("workflow_started", payload={
                "template_name": self.info.template_name,
                "template_version": self.info.template_version,
                "params": dict(self.scope.inputs),
            }, awaited=False)
        if self.definition.timeout is None:
            failure = await self._run_main_here()
        else:
            self._main = asyncio.ensure_future(self.run_steps(self.definition.steps, "", self.scope))
            try:
                done, _ = await asyncio.wait([self._main], timeout=self.definition.timeout)
            except asyncio.CancelledError:
                self._main.cancel()
                raise
            if not done:
                await self._timed_out()
                return
            failure = asyncio.CancelledError() if self._main.cancelled() else self._main.exception()
        if self.cancel_reasons.get(""):
            await self._cancelled(self.cancel_reasons[""])
            return
        try:
            if failure is not None:
                raise failure
            self.output = self._final_output()
        except StepFailed as failed:
            await self._fail(failed.error)
            await self._hook(self.definition.on_error)
            return
        except asyncio.CancelledError:
            await self._cancelled(self.cancel_reasons.get("") or "cancelled")
            return
        except OpcodeError as exc:
            await self._fail(exc)
            await self._hook(self.definition.on_error)
            return
        self._leave_suspension()
        self.fsm.to("completed")
        self.completed_at = time.time()
        await self.emit("workflow_completed", payload={"output": self.output})
        await self._hook(self.definition.on_complete)

    async def _run_main_here(self) -> BaseException | None:
        """Run the top-level steps in this task (no timeout to watch from outside); return their failure, if any.

        A separate task would cost a Task and three turns of the loop per run, and it would start the first steps
        a turn after `workflow_started`, too late to share its commit. `cancel()` cancels this task meanwhile.
        """
        task = asyncio.current_task()
        assert task is not None
        self._main = task
        try:
            await self.run_steps(self.definition.steps, "", self.scope)
        except asyncio.CancelledError:
            if not self.cancel_reasons.get(""):
                raise  # the runtime is stopping: not a cancellation of the run
            task.uncancel()
        except Exception as exc:
            return exc
        finally:
            self._main = None
        if self.cancel_reasons.get("") and task.cancelling():
            # cancel() came from this very task and no await has delivered it yet: take it here, not in what follows.
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                task.uncancel()
        return None

    def cancel(self, reason: str, by: str | None = None) -> None:
        """Stop the run on purpose: running steps are cancelled and end skipped, the run ends cancelled."""
        self.cancel_reasons[""] = reason
        self.cancelled_by = by
        for waiter in list(self.waiters.values()):
            self.deliver(waiter.step_id, SkipStep(reason))
        if self._main is not None:
            self._main.cancel()

    async def _stop_main(self, reason: str | None) -> None:
        if reason is not None:
            self.cancel_reasons[""] = reason
        self._main.cancel()
        await asyncio.gather(self._main, return_exceptions=True)

    async def _timed_out(self) -> None:
        mode = self.definition.on_timeout
        self.emit("workflow_timed_out", payload={"timeout_s": self.definition.timeout, "on_timeout": mode},
                  awaited=False)
        if mode == "suspend":
            # Running steps stay unfinished: a `resume` signal re-runs them with a fresh timeout window.
            await self._stop_main(None)
            if self.fsm.status == "active":
                self.fsm.to("suspended")
            self.suspended.clear()
            await self.emit("workflow_suspended", payload={"reason": "timeout"})
            return
        await self._stop_main("workflow timed out")
        if mode == "cancel":
            await self._cancelled("workflow timed out")
            return
        await self._fail(OpcodeError(TIMEOUT_ERROR, f"workflow timed out after {self.definition.timeout}s"))
        await self._hook(self.definition.on_error)

    async def _cancelled(self, reason: str) -> None:
        for step in self.definition.steps:
            fsm = self.step_fsms.get(step.id)
            if fsm is None:
                fsm = self.step_fsms[step.id] = StepFSM(step.id)
                fsm.to("skipped")
                self._record(self.scope, step.id, StepResult("skipped"))
                self.emit("step_skipped", step.id, {"reason": reason}, awaited=False)
        self._leave_suspension()
        self.fsm.to("cancelled")
        self.completed_at = time.time()
        # Recorded as done by whoever cancelled (an agent, the panel), like a cancel of a run not live here.
        await self._emit(self.info.workflow_id, "workflow_cancelled", step_id=None, payload={"reason": reason},
                         agent_id=self.cancelled_by or self.info.agent_id)

    async def _hook(self, hook: StepDef | None) -> None:
        """Run an on_complete / on_error hook step; its failure is recorded but changes nothing."""
        if hook is None:
            return
        try:
            await self.run_step(hook, hook.id, self.scope)
        except StepFailed as failed:
            self.log.warning("hook step %s failed: %s", hook.id, failed.error)

    async def crash(self, exc: BaseException) -> None:
        """Fail a run that an unexpected exception stopped, unless it already ended."""
        if not self.finished:
            if self.fsm.status == "pending":
                self.fsm.to("active")
            await self._fail(as_opcode_error(exc))
        self.settled.set()

    async def _fail(self, error: OpcodeError) -> None:
        self.error = error
        self._leave_suspension()
        self.fsm.to("failed")
        self.completed_at = time.time()
        await self.emit("workflow_failed", payload={"error": error.to_dict()})

    def _leave_suspension(self) -> None:
        if self.fsm.status == "suspended":
            self.fsm.to("active")
            self.suspended.clear()

    def _final_output(self) -> Any:
        if self.definition.output is not None:
            output = interpolate(self.definition.output, self.scope)
        else:
            terminal = self.definition.terminal_steps()
            outputs = {sid: self.scope.steps[sid].output for sid in terminal if sid in self.scope.steps}
            output = outputs.get(terminal[0]) if len(terminal) == 1 else outputs
        if self.output_schema:
            problems = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                        for e in Draft202012Validator(self.output_schema).iter_errors(output)]
            if problems:
                raise OpcodeError(VALIDATION_ERROR, "the run's output does not match the template's output_schema: "
                                  + "; ".join(problems), details={"output": output, "problems": problems})
        return output

    def steps_of(self, raw_steps: list[Any]) -> list[StepDef]:
        """StepDefs of a nested list from a step's config, parsed once per run."""
        key = id(raw_steps)
        if key not in self._parsed:
            self._parsed[key] = parse_steps(raw_steps)
        return self._parsed[key]

    async def run_steps(self, steps: list[StepDef], prefix: str, scope: Scope) -> Any:
        """Run a step list (each step as soon as its depends_on are done); return the last step's output."""
        plan = _StepList(self, steps, prefix, scope)
        try:
            first = plan.take()
            plan.spawn()
            if first is not None:
                await plan.work(first)  # this task is a worker too: a chain of steps runs without a Task of its own
            while plan.workers:
                plan.idle = asyncio.get_running_loop().create_future()
                await plan.idle
        finally:
            workers = list(plan.workers)
            for task in workers:
                task.cancel()
            if workers:
                await asyncio.gather(*workers, return_exceptions=True)
        if plan.failure is not None:
            raise plan.failure
        last = None
        for step in steps:
            result = scope.steps.get(prefix + step.id)
            if result is not None and result.status == "completed":
                last = result.output
        return last

    async def run_step(self, step: StepDef, full_id: str, scope: Scope, siblings: dict[str, StepDef] | None = None,
                       prefix: str = "") -> None:
        """Run one step with its retry policy and on_error strategy; its outcome is durable before this returns."""
        fsm = self.step_fsms[full_id] = StepFSM(full_id, "scheduled")  # pending -> scheduled, always allowed
        ctx = StepRunContext(self, step, full_id, scope)
        if step.condition and not await self._guard_allows(step, fsm, scope, ctx):
            return
        spec = self.registry.step_types.get(step.type)
        policy = RetryPolicy.from_step(step.retry) if step.retry else NO_RETRY
        attempt = self.attempts.get(full_id, 0) + 1
        fsm.to("running")
        started_payload: dict[str, Any] = {"attempt": attempt, "type": step.type, "action": step.action}
        if attempt > 1:
            started_payload["rerun"] = True
        self.emit("step_started", full_id, started_payload, awaited=False)
        started = time.monotonic()
        retries = 0
        while True:
            ctx.attempt = attempt
            try:
                if spec is None:
                    raise OpcodeError(ACTION_UNAVAILABLE, f"step type {step.type!r} is not available")
                if step.timeout is None:
                    output = await spec.run(step, ctx)
                else:
                    async with asyncio.timeout(step.timeout):
                        output = await spec.run(step, ctx)
                break
            except StepFailed as nested:
                # A nested step failed: this flow step fails too, and the run reports the innermost step.
                await self._step_failed(fsm, scope, nested.error, None, ctx, started)
                raise
            except SkipStep as skip:
                await self._step_cancelled(fsm, scope, skip.reason)
                return
            except asyncio.CancelledError:
                if ctx.cancel_reason() is not None:
                    await self._step_cancelled(fsm, scope, ctx.cancel_reason() or "cancelled")
                raise
            except Exception as exc:
                if isinstance(exc, TimeoutError):
                    error = OpcodeError(TIMEOUT_ERROR, f"step timed out after {step.timeout}s", step_id=full_id)
                else:
                    error = as_opcode_error(exc, step_id=full_id)
                partial = exc.output if isinstance(exc, ActionError) else None
                if retries < policy.max and error.retryable:
                    retries += 1
                    delay = policy.delay_before(retries)
                    fsm.to("retrying")
                    self.emit("step_retrying", full_id, {"attempt": attempt, "next_attempt": attempt + 1,
                                                         "delay_ms": int(delay * 1000), "error": error.to_dict()},
                              awaited=False)
                    await asyncio.sleep(delay)
                    attempt += 1
                    fsm.to("running")
                    self.emit("step_retry_attempt", full_id, {"attempt": attempt, "retry": retries}, awaited=False)
                    continue
                if retries and error.retryable:
                    error = OpcodeError(RETRY_EXHAUSTED, f"failed after {attempt} attempts: {error.message}",
                                        step_id=full_id, details={"attempts": attempt, "last_error": error.to_dict()})
                await self._on_error(step, fsm, scope, error, partial, ctx, started, siblings or {}, prefix)
                return
        self.attempts[full_id] = attempt
        duration = self.durations[full_id] = int((time.monotonic() - started) * 1000)
        fsm.to("completed")
        self._record(scope, full_id, StepResult("completed", output))
        await self.emit("step_completed", full_id, {"output": output, "input": ctx.input, "duration_ms": duration,
                                                    "attempt": attempt})

    async def _guard_allows(self, step: StepDef, fsm: StepFSM, scope: Scope, ctx: StepRunContext) -> bool:
        try:
            allowed = ctx.evaluate(step.condition or "")
        except OpcodeError as exc:
            exc.step_id = exc.step_id or fsm.step_id
            await self._step_failed(fsm, scope, exc, None, ctx, time.monotonic(), started=False)
            raise StepFailed(exc) from None
        if allowed is True:
            return True
        fsm.to("skipped")
        self._record(scope, fsm.step_id, StepResult("skipped"))
        await self.emit("step_skipped", fsm.step_id, {"reason": "condition is false", "condition": step.condition})
        return False

    async def _on_error(self, step: StepDef, fsm: StepFSM, scope: Scope, error: OpcodeError, partial: Any,
                        ctx: StepRunContext, started: float, siblings: dict[str, StepDef], prefix: str) -> None:
        """Apply the step's on_error strategy; raise StepFailed when the failure ends the step list."""
        self.attempts[fsm.step_id] = ctx.attempt
        strategy = (step.on_error or {}).get("strategy")
        if strategy not in ("ignore", "fallback_step"):
            await self._step_failed(fsm, scope, error, partial, ctx, started)
            raise StepFailed(error)
        fallback_id = (step.on_error or {}).get("fallback_step")
        self.emit("error_handler_invoked", fsm.step_id, {"strategy": strategy, "error": error.to_dict(),
                                                          "fallback": fallback_id}, awaited=False)
        if strategy == "ignore":
            duration = self.durations[fsm.step_id] = int((time.monotonic() - started) * 1000)
            fsm.to("skipped")
            # The failed attempt's output (e.g. a shell's exit_code) stays readable by later steps.
            self._record(scope, fsm.step_id, StepResult("skipped", partial, error.to_dict()))
            await self.emit("step_ignored", fsm.step_id, {"error": error.to_dict(), "output": partial,
                                                          "duration_ms": duration})
            return
        await self._step_failed(fsm, scope, error, partial, ctx, started)
        fallback = siblings.get(fallback_id or "") or next((s for s in self.definition.steps if s.id == fallback_id),
                                                           None)
        if fallback is None:
            missing = OpcodeError(NOT_FOUND, f"fallback step {fallback_id!r} of step {step.id!r} does not exist",
                                  step_id=fsm.step_id)
            raise StepFailed(missing)
        full = (prefix if fallback_id in siblings else "") + fallback.id
        await self.emit("step_fallback", fsm.step_id, {"original_step": fsm.step_id, "fallback_step": full,
                                                       "original_error": error.to_dict()})
        if full not in self.step_fsms or self.step_fsms[full].status not in RESTORABLE:
            await self.run_step(fallback, full, scope if fallback_id in siblings else self.scope)

    def _record(self, scope: Scope, step_id: str, result: StepResult) -> None:
        scope.steps[step_id] = result
        self.scope.steps[step_id] = result

    async def _step_failed(
        self,
        fsm: StepFSM,
        scope: Scope,
        error: OpcodeError,
        partial: Any,
        ctx: StepRunContext,
        started_at: float,
        started: bool = True,
    ) -> None:
        duration = self.durations[fsm.step_id] = int((time.monotonic() - started_at) * 1000)
        if not started:
            fsm.to("running")
            self.emit("step_started", fsm.step_id, {"attempt": 1, "type": ctx.step.type}, awaited=False)
        fsm.to("failed")
        self._record(scope, fsm.step_id, StepResult("failed", partial, error.to_dict()))
        payload = {"error": error.to_dict(), "output": partial, "input": ctx.input, "duration_ms": duration}
        await self.emit("step_failed", fsm.step_id, payload)

    async def _step_cancelled(self, fsm: StepFSM, scope: Scope, reason: str) -> None:
        if fsm.status in ("running", "suspended", "scheduled"):
            self.suspended.discard(fsm.step_id)
            fsm.to("skipped")
            self._record(scope, fsm.step_id, StepResult("skipped"))
            await asyncio.shield(self.emit("step_skipped", fsm.step_id, {"reason": reason}))

    # -- suspension -----------------------------------------------------------------------------------

    async def suspend(self, step_id: str, kind: str, name: str | None, payload: dict[str, Any]) -> Any:
        """Suspend a step until `deliver` resolves it; the run is suspended while any step is."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiters[step_id] = Waiter(step_id, kind, name, future)
        self.step_fsms[step_id].to("suspended")
        self.suspended.add(step_id)
        self.emit("step_suspended", step_id, payload, awaited=False)
        if self.fsm.status == "active":
            self.fsm.to("suspended")
            await self.emit("workflow_suspended", payload={"step_id": step_id, "reason": kind})
        self.settled.set()
        try:
            value = await future
        finally:
            self.waiters.pop(step_id, None)
        self.step_fsms[step_id].to("running")
        if self.fsm.status == "suspended" and not self.suspended:
            self.fsm.to("active")
            self.emit("workflow_resumed", payload={"step_id": step_id}, awaited=False)
        return value

    def deliver(self, step_id: str, value: Any) -> bool:
        """Resume a suspended step with `value`; False when it is not waiting."""
        waiter = self.waiters.get(step_id)
        if waiter is None or waiter.future.done():
            return False
        self.suspended.discard(step_id)
        if not self.suspended:
            self.settled.clear()  # before returning, so a caller waiting for `settled` sees the resumption
        if isinstance(value, BaseException):
            waiter.future.set_exception(value)
        else:
            waiter.future.set_result(value)
        return True

    def signal_waiters(self, names: set[str]) -> list[Waiter]:
        """Waits for a named signal that one of `names` (step id or signal name) resumes."""
        return [w for w in self.waiters.values()
                if w.kind == "signal" and (w.step_id in names or (w.name is not None and w.name in names))]

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
        return self.redactor.redact(out) if self.redactor else out


class _StepList:
    """The schedule of one step list: what each step still waits for, what is ready, the workers running it.

    A worker runs a step, then the first step that completion made ready, and starts a worker for each other
    one: a Task per branch of parallelism rather than per step, and no wake-up of a coordinator per completion.
    """

    def __init__(self, run: WorkflowRun, steps: list[StepDef], prefix: str, scope: Scope) -> None:
        self.run = run
        self.prefix = prefix
        self.scope = scope
        self.by_id = {step.id: step for step in steps}
        self.order = {step.id: i for i, step in enumerate(steps)}
        self.waiting: dict[str, int] = {}
        self.dependants: dict[str, list[str]] = {}
        for step in steps:
            deps = set(step.depends_on)
            self.waiting[step.id] = len(deps)
            for dep in deps:
                self.dependants.setdefault(dep, []).append(step.id)
        # Ready steps start in definition order, as they are listed.
        self.ready = [(self.order[sid], sid) for sid, count in self.waiting.items() if count == 0]
        heapq.heapify(self.ready)
        self.workers: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None
        self.idle: asyncio.Future[None] | None = None

    def release(self, sid: str) -> None:
        """A step is done: its dependants wait for one step less."""
        for dependant in self.dependants.get(sid, ()):
            self.waiting[dependant] -= 1
            if self.waiting[dependant] == 0:
                heapq.heappush(self.ready, (self.order[dependant], dependant))

    def take(self) -> str | None:
        """The next ready step to run, None when there is none or the list has failed."""
        while self.ready and self.failure is None:
            _, sid = heapq.heappop(self.ready)
            earlier = self.run.scope.steps.get(self.prefix + sid)
            if earlier is not None and earlier.status in RESTORABLE:
                self.release(sid)  # restored from before a suspension or restart, or run as a fallback
                continue
            return sid
        return None

    def spawn(self) -> None:
        """Start a worker for every ready step."""
        while (sid := self.take()) is not None:
            task = asyncio.create_task(self.work(sid))
            self.workers.add(task)
            task.add_done_callback(self._worker_done)

    async def work(self, sid: str) -> None:
        """Run `sid`, then the steps its completions make ready, until none is left for this worker."""
        current: str | None = sid
        try:
            while current is not None:
                await self.run.run_step(self.by_id[current], self.prefix + current, self.scope, self.by_id,
                                        self.prefix)
                self.release(current)
                current = self.take()
                self.spawn()
        except Exception as exc:
            if self.failure is None:
                self.failure = exc
        finally:
            # The last worker wakes run_steps itself: its done-callback would cost another turn of the loop.
            self.workers.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._wake_if_idle()

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self.workers.discard(task)
        if self.failure is None and task.cancelled():
            self.failure = asyncio.CancelledError()  # a worker cancelled by someone other than run_steps
        self._wake_if_idle()

    def _wake_if_idle(self) -> None:
        if not self.workers and self.idle is not None and not self.idle.done():
            self.idle.set_result(None)


class StepRunContext:
    """The StepContext a step type gets: interpolation, expressions, nested lists, actions, suspension."""

    def __init__(self, run: WorkflowRun, step: StepDef, full_id: str, scope: Scope) -> None:
        self.run = run
        self.step = step
        self.step_id = full_id
        self.scope = scope
        self.workflow_id = run.info.workflow_id
        self.agent_id = run.info.agent_id
        self.input: Any = None
        self.attempt = 1

    def cancel_reason(self) -> str | None:
        """Why this step's task was cancelled on purpose (a lost race), None for a shutdown."""
        reasons = self.run.cancel_reasons
        return next((reasons[p] for p in (*self.scope.prefixes, "") if p in reasons), None)

    def cancel_nested(self, segment: str, reason: str) -> None:
        """Mark a nested list as cancelled on purpose before its task is cancelled (its steps end skipped)."""
        self.run.cancel_reasons[f"{self.step_id}.{segment}."] = reason

    def interpolate(self, value: Any) -> Any:
        """Resolve `${{...}}` against this step's scope."""
        return interpolate(value, self.scope)

    def evaluate(self, source: str, default_engine: str = "cel", scope: Scope | None = None) -> Any:
        """Evaluate an expression (CEL unless prefixed, e.g. `jq: .x`) against this step's (or a given) scope."""
        evaluator = self.run.expressions
        if evaluator is None:
            raise OpcodeError(EXECUTION_ERROR, "no expression engine is available")
        engine, body = split_engine(source, default_engine)
        try:
            return evaluator.evaluate(engine, body, lambda refs: activation(scope or self.scope, refs))
        except OpcodeError as exc:
            exc.step_id = exc.step_id or self.step_id
            raise

    async def run_steps(self, raw_steps: list[Any], segment: str, loop: dict[str, Any] | None = None) -> Any:
        """Run a nested step list as `<this id>.<segment>.<child id>`; return its last step's output."""
        prefix = f"{self.step_id}.{segment}."
        return await self.run.run_steps(self.run.steps_of(raw_steps), prefix, self.scope.child(prefix, loop))

    def nested_scope(self, segment: str, loop: dict[str, Any] | None = None) -> Scope:
        """The scope a nested list runs in (to evaluate an expression as its steps see it)."""
        return self.scope.child(f"{self.step_id}.{segment}.", loop)

    async def run_action(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Validate params against the action's schema and execute it, holding one pool slot."""
        spec = self.run.registry.action(name)
        self.input = params
        self.run.registry.validate_params(spec, params)
        ctx = ActionContext(
            workflow_id=self.workflow_id,
            step_id=self.step_id,
            agent_id=self.agent_id,
            attempt=self.attempt,
            logger=logging.LoggerAdapter(
                _action_logger(name),
                {"workflow_id": self.workflow_id, "step_id": self.step_id, "agent_id": self.agent_id},
            ),
            settings=self.run.plugin_settings(spec.plugin or ""),
            runtime=self.run.services,
            timeout_s=self.step.timeout,
        )
        breakers = self.run.breakers
        if breakers is not None:
            breakers.before_call(name, self._breaker_event)
        pool = self.run.pool
        try:
            # acquire/release rather than `async with`: the context manager's two extra coroutines cost more here.
            await pool.acquire()
            try:
                output = await spec.execute(params, ctx)
            finally:
                pool.release()
        except OpcodeError as exc:
            if breakers is not None and exc.retryable:
                breakers.failed(name, self._breaker_event)
            raise
        except Exception:
            if breakers is not None:
                breakers.failed(name, self._breaker_event)
            raise
        if breakers is not None:
            breakers.succeeded(name, self._breaker_event)
        if not isinstance(output, dict):
            raise OpcodeError(EXECUTION_ERROR, f"action {name} returned {type(output).__name__}, not an object")
        return output

    async def emit(self, event_type: str, payload: dict[str, Any]) -> None:
        """Append an event for this step and wait until it is durable."""
        await self.run.emit(event_type, self.step_id, payload)

    def _breaker_event(self, action: str, state: str, details: dict[str, Any]) -> None:
        self.run.emit(f"circuit_breaker_{state}", self.step_id, {"action": action, **details}, awaited=False)

    def deadline(self, seconds: float) -> float:
        """This step's deadline: the one it recorded before a restart, else now + seconds (epoch seconds)."""
        return self.run.deadlines.setdefault(self.step_id, time.time() + seconds)

    async def sleep_until(self, when: float) -> None:
        """Sleep until epoch time `when` on the runtime's timer service (a cancel or timeout interrupts it)."""
        await self.run.services.sleep_until(when)

    async def wait_for_signal(self, name: str | None) -> dict[str, Any]:
        """Suspend until a signal names this step or `name`; returns `{signal_type, payload}`."""
        return await self.run.suspend(self.step_id, "signal", name, {"waiting_for": "signal", "signal": name})

    async def request_decision(self, *, prompt: Any, data: dict[str, Any], options: list[dict[str, Any]],
                               timeout: float | None, fallback: str | None, target_agent: str | None) -> dict[str, Any]:
        """Ask for a decision (or reuse the one already resolved for this step) and suspend until it is made."""
        return await self.run.decisions.request(self, prompt=prompt, data=data, options=options, timeout=timeout,
                                                fallback=fallback, target_agent=target_agent)


def activation(scope: Scope, refs: AbstractSet[str]) -> dict[str, Any]:
    """The parts of the scope an expression reads, as plain values (`steps['id']` is the step's output)."""
    names, all_steps, step_ids = _reading(refs if isinstance(refs, frozenset) else frozenset(refs))
    out: dict[str, Any] = {}
    if "inputs" in names:
        out["inputs"] = dict(scope.inputs)
    if "workflow" in names:
        out["workflow"] = dict(scope.workflow)
    if "context" in names:
        out["context"] = dict(scope.context)
    if "iter" in names:
        out["iter"] = dict(scope.loop) if scope.loop is not None else {}
    if "steps" in names:
        steps: dict[str, Any] = {}
        if all_steps:
            for prefix in ("", *reversed(scope.prefixes)):
                for sid, result in scope.steps.items():
                    if sid.startswith(prefix) and result.status == "completed":
                        steps[sid[len(prefix):]] = result.output
        for sid in step_ids:
            found = scope.find_step(sid)
            if found is not None and found[1] == "":
                steps[sid] = scope.steps[found[0]].output
        out["steps"] = steps
    return out


@functools.lru_cache(maxsize=4096)
def _reading(refs: frozenset[str]) -> tuple[frozenset[str], bool, tuple[str, ...]]:
    """What a set of references reads: top-level names, whether every step, and which step ids."""
    if "$env" in refs:  # the expression reads its whole environment
        refs = frozenset({"inputs", "workflow", "context", "iter", "steps:*"})
    step_ids = tuple(r[len("steps:"):] for r in refs if r.startswith("steps:") and r != "steps:*")
    names = {r for r in refs if ":" not in r}
    if "steps:*" in refs or step_ids:
        names.add("steps")
    return frozenset(names), "steps:*" in refs, step_ids


@functools.cache
def _action_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"opcode.action.{name}")


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
