"""`opcode.signal`: decisions, data, and resuming waits; a run not live in this process is revived first."""

from __future__ import annotations

import asyncio
from typing import Any

from opcode_core.engine.executor import SkipStep, WorkflowRun
from opcode_core.errors import (
    CONFLICT,
    NOT_FOUND,
    PERMISSION_DENIED,
    OpcodeError,
    ValidationError,
)
from opcode_core.runtime import Runtime

TERMINAL = ("completed", "failed", "cancelled")


async def send_signal(
    rt: Runtime,
    *,
    workflow_id: str,
    signal_type: str,
    payload: dict[str, Any],
    step_id: str | None = None,
    agent_id: str | None = None,
    reasoning: str | None = None,
) -> dict[str, Any]:
    """Deliver a signal to a run and answer as SPEC §3 says."""
    from opcode_core.service import revive_run

    wf = await rt.db(rt.store.get_workflow, workflow_id)
    if wf is None:
        raise OpcodeError(NOT_FOUND, f"workflow {workflow_id!r} not found")
    if wf["status"] in TERMINAL and not (signal_type in ("retry", "skip") and wf["status"] == "failed"):
        raise OpcodeError(CONFLICT, f"workflow {workflow_id} is {wf['status']}; it takes no more signals")
    if agent_id:
        await rt.db(rt.store.ensure_agent, agent_id)
    record = {"signal_type": signal_type, "payload": payload, "step_id": step_id, "agent_id": agent_id,
              "reasoning": reasoning}
    if signal_type in LIFECYCLE:
        return await LIFECYCLE[signal_type](rt, wf, step_id, record)
    decision = await _pick_decision(rt, workflow_id, step_id, agent_id, payload) if signal_type == "decision" else None
    await rt.writer.append(
        workflow_id,
        "signal_received",
        step_id=step_id,
        agent_id=agent_id,
        payload={
            "signal_type": signal_type,
            "payload": payload,
            "step_id": step_id,
            "agent_id": agent_id,
            "reasoning": reasoning,
        },
    )
    if decision is not None:
        resolution = {
            "choice": payload["choice"],
            "reasoning": reasoning,
            "data": payload.get("data") or {},
            "resolved_by": agent_id,
        }
        if not await rt.decisions.resolve(decision, resolution):
            raise OpcodeError(CONFLICT, f"the decision of step {decision['step_id']} was already resolved")
        run = rt.runs.get(workflow_id)
        if run is None or not run.deliver(decision["step_id"], resolution):
            run = run or await revive_run(rt, wf)
        await asyncio.shield(run.settled.wait())
        out = {
            "ok": True,
            "resumed": True,
            "workflow_id": workflow_id,
            "signal_type": signal_type,
            "step_id": decision["step_id"],
            "decision_id": decision["id"],
            "choice": resolution["choice"],
            "status": run.fsm.status,
            "output": run.output,
        }
        if run.error:
            out["error"] = run.error.to_dict()
        return out
    run = rt.runs.get(workflow_id) or await revive_run(rt, wf)
    if signal_type == "data":
        await _merge_context(rt, run, payload)
    names = {n for n in (step_id, signal_type, payload.get("signal")) if isinstance(n, str)}
    resumed = [w.step_id for w in run.signal_waiters(names)]
    for waiting in resumed:
        run.deliver(waiting, {"signal_type": signal_type, "payload": payload})
    return {"ok": True, "workflow_id": workflow_id, "signal_type": signal_type, "resumed_steps": resumed}


async def _pick_decision(
    rt: Runtime, workflow_id: str, step_id: str | None, agent_id: str | None, payload: dict[str, Any]
) -> dict[str, Any]:
    pending = await rt.db(rt.store.list_decisions, workflow_id, status="pending")
    if step_id:
        matches = [d for d in pending if d["step_id"] == step_id]
        if not matches:
            earlier = await rt.db(rt.store.list_decisions, workflow_id, step_id=step_id)
            if any(d["status"] == "resolved" for d in earlier):
                raise OpcodeError(CONFLICT, f"the decision of step {step_id} was already resolved")
            raise OpcodeError(NOT_FOUND, f"no pending decision for step {step_id!r}")
        decision = matches[-1]
    elif len(pending) == 1:
        decision = pending[0]
    elif not pending:
        raise OpcodeError(NOT_FOUND, f"workflow {workflow_id} has no pending decision")
    else:
        ids = ", ".join(d["step_id"] for d in pending)
        raise ValidationError(
            f"several decisions are pending ({ids}): say which with step_id",
            [{"path": "step_id", "message": f"required: one of {ids}"}],
        )
    target = decision.get("target_agent")
    if target and agent_id != target:
        raise OpcodeError(
            PERMISSION_DENIED, f"the decision of step {decision['step_id']} is for agent {target!r}, not {agent_id!r}"
        )
    choice = payload.get("choice")
    if not isinstance(choice, str) or not choice:
        raise ValidationError(
            "a decision needs payload.choice (a non-empty string)",
            [{"path": "payload.choice", "message": "required non-empty string"}],
        )
    valid = [o.get("id") for o in decision.get("options") or [] if isinstance(o, dict)]
    if valid and choice not in valid:
        raise ValidationError(
            f"choice {choice!r} is not an option (valid: {', '.join(valid)})",
            [{"path": "payload.choice", "message": f"must be one of {', '.join(valid)}"}],
        )
    return decision


async def _merge_context(rt: Runtime, run: WorkflowRun, values: dict[str, Any]) -> None:
    run.scope.context.update(values)
    await rt.db(rt.store.set_context, run.info.workflow_id, dict(run.scope.context))
    await run.emit("variable_set", None, {"values": values})


async def _settled_answer(run: WorkflowRun, signal_type: str, **extra: Any) -> dict[str, Any]:
    await asyncio.shield(run.settled.wait())
    out = {"ok": True, "workflow_id": run.info.workflow_id, "signal_type": signal_type, "status": run.fsm.status,
           "output": run.output, **extra}
    if run.error:
        out["error"] = run.error.to_dict()
    return out


async def _cancel(rt: Runtime, wf: dict[str, Any], step_id: str | None, record: dict[str, Any]) -> dict[str, Any]:
    wid = wf["id"]
    rt.writer.append(wid, "signal_received", step_id=step_id, agent_id=record["agent_id"], payload=record)
    reason = record.get("reasoning") or f"cancelled by {record.get('agent_id') or 'a signal'}"
    run = rt.runs.get(wid)
    if run is not None:
        run.cancel(reason, by=record.get("agent_id"))
        return await _settled_answer(run, "cancel")
    # Not live here (suspended before a restart): close it in the log without running anything.
    for sid, state in (await rt.db(rt.store.get_step_states, wid)).items():
        if state["status"] not in ("completed", "skipped", "failed"):
            rt.writer.append(wid, "step_skipped", step_id=sid, payload={"reason": reason})
    for decision in await rt.db(rt.store.list_decisions, wid, status="pending"):
        await rt.db(rt.store.resolve_decision, decision["id"], {"cancelled": True}, "cancelled")
    await rt.writer.append(wid, "workflow_cancelled", payload={"reason": reason}, agent_id=record["agent_id"])
    return {"ok": True, "workflow_id": wid, "signal_type": "cancel", "status": "cancelled"}


async def _retry(rt: Runtime, wf: dict[str, Any], step_id: str | None, record: dict[str, Any]) -> dict[str, Any]:
    from opcode_core.service import revive_run

    wid = wf["id"]
    if wf["status"] not in ("failed", "suspended"):
        raise OpcodeError(CONFLICT, f"retry needs a failed or suspended run; {wid} is {wf['status']}")
    failed = await _failed_step(rt, wid, step_id)
    if wid in rt.runs:
        raise OpcodeError(CONFLICT, f"workflow {wid} is still running; retry applies once it has stopped")
    await rt.writer.append(wid, "signal_received", step_id=failed, agent_id=record["agent_id"], payload=record)
    run = await revive_run(rt, wf)
    return await _settled_answer(run, "retry", step_id=failed)


async def _skip(rt: Runtime, wf: dict[str, Any], step_id: str | None, record: dict[str, Any]) -> dict[str, Any]:
    from opcode_core.service import revive_run

    wid = wf["id"]
    run = rt.runs.get(wid)
    reason = f"skipped by {record.get('agent_id') or 'a signal'}"
    if run is not None:
        target = step_id or next(iter(run.waiters), None)
        if target is None or target not in run.waiters:
            raise OpcodeError(CONFLICT, f"step {step_id!r} of {wid} is not failed or suspended")
        rt.writer.append(wid, "signal_received", step_id=target, agent_id=record["agent_id"], payload=record)
        for decision in await rt.db(rt.store.list_decisions, wid, step_id=target, status="pending"):
            await rt.db(rt.store.resolve_decision, decision["id"], {"skipped": True}, "cancelled")
        run.deliver(target, SkipStep(reason))
        return await _settled_answer(run, "skip", step_id=target)
    target = await _failed_step(rt, wid, step_id, statuses=("failed", "suspended", "running"))
    await rt.writer.append(wid, "signal_received", step_id=target, agent_id=record["agent_id"], payload=record)
    await rt.writer.append(wid, "step_skipped", step_id=target, payload={"reason": reason})
    run = await revive_run(rt, await rt.db(rt.store.get_workflow, wid))
    return await _settled_answer(run, "skip", step_id=target)


async def _resume(rt: Runtime, wf: dict[str, Any], step_id: str | None, record: dict[str, Any]) -> dict[str, Any]:
    from opcode_core.service import revive_run

    wid = wf["id"]
    if wf["status"] != "suspended":
        raise OpcodeError(CONFLICT, f"resume needs a suspended run; {wid} is {wf['status']}")
    if wid in rt.runs or await rt.db(rt.store.list_decisions, wid, status="pending"):
        raise OpcodeError(CONFLICT, f"workflow {wid} is waiting on a decision or a signal, not on `resume`")
    await rt.writer.append(wid, "signal_received", step_id=step_id, agent_id=record["agent_id"], payload=record)
    run = await revive_run(rt, wf)
    return await _settled_answer(run, "resume", resumed=True)


async def _failed_step(rt: Runtime, wid: str, step_id: str | None,
                       statuses: tuple[str, ...] = ("failed",)) -> str:
    states = await rt.db(rt.store.get_step_states, wid)
    candidates = [sid for sid, st in states.items() if st["status"] in statuses]
    if step_id is not None:
        if step_id not in candidates:
            found = states.get(step_id, {}).get("status", "unknown")
            raise OpcodeError(CONFLICT, f"step {step_id!r} of {wid} is {found}, not {' or '.join(statuses)}")
        return step_id
    if len(candidates) != 1:
        raise ValidationError(f"say which step with step_id (candidates: {', '.join(candidates) or 'none'})",
                              [{"path": "step_id", "message": "required"}])
    return candidates[0]


LIFECYCLE = {"cancel": _cancel, "retry": _retry, "skip": _skip, "resume": _resume}
