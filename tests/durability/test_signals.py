"""cancel, retry and skip signals, each recorded as signal_received."""

from __future__ import annotations

import asyncio

import pytest

from opcode_core import service
from opcode_core.errors import OpcodeError
from tests.conftest import log, run_definition


async def kinds(rt, workflow_id: str) -> list[str]:
    events = (await service.query(rt, resource="events", filter={"workflow_id": workflow_id}))["events"]
    return [e["event_type"] for e in events]


async def test_cancel_a_running_run(runtime) -> None:
    definition = {
        "steps": [
            log("a"),
            {"id": "slow", "type": "wait", "config": {"duration": "10s"}, "depends_on": ["a"]},
            log("b", depends_on=["slow"]),
        ]
    }
    started = await run_definition(runtime, definition, wait=False)
    await asyncio.sleep(0.3)
    answer = await service.send_signal(
        runtime,
        workflow_id=started["workflow_id"],
        signal_type="cancel",
        payload={},
        agent_id="ops",
        reasoning="not needed",
    )
    assert answer["status"] == "cancelled"
    status = await service.workflow_status(runtime, workflow_id=started["workflow_id"])
    assert status["status"] == "cancelled"
    assert status["steps"]["a"]["status"] == "completed"
    assert status["steps"]["slow"]["status"] == "skipped" and status["steps"]["b"]["status"] == "skipped"
    events = status["events"]
    received = next(e for e in events if e["event_type"] == "signal_received")
    assert received["agent_id"] == "ops" and received["payload"]["reasoning"] == "not needed"
    assert events[-1]["event_type"] == "workflow_cancelled"
    with pytest.raises(OpcodeError) as info:
        await service.send_signal(runtime, workflow_id=started["workflow_id"], signal_type="cancel", payload={})
    assert info.value.code == "CONFLICT"


async def test_cancel_a_run_waiting_on_a_decision(runtime) -> None:
    first = await run_definition(runtime, {"steps": [{"id": "ask", "type": "reasoning", "config": {}}]})
    answer = await service.send_signal(runtime, workflow_id=first["workflow_id"], signal_type="cancel", payload={})
    assert answer["status"] == "cancelled"
    status = await service.workflow_status(runtime, workflow_id=first["workflow_id"])
    assert status["steps"]["ask"]["status"] == "skipped"


async def test_retry_runs_the_failed_step_again_and_the_run_continues(runtime, tmp_path) -> None:
    gate = tmp_path / "gate"
    definition = {
        "steps": [
            log("first", "once"),
            {
                "id": "fragile",
                "action": "shell.exec",
                "depends_on": ["first"],
                "params": {"command": "sh", "args": ["-c", f"test -f {gate}"]},
            },
            log("last", "after ${{steps.first.output.message}}", depends_on=["fragile"]),
        ]
    }
    first = await run_definition(runtime, definition)
    assert first["status"] == "failed"
    gate.write_text("open")
    answer = await service.send_signal(
        runtime, workflow_id=first["workflow_id"], signal_type="retry", payload={}, step_id="fragile"
    )
    assert answer["status"] == "completed", answer
    status = await service.workflow_status(runtime, workflow_id=first["workflow_id"])
    assert status["steps"]["last"]["output"]["message"] == "after once"
    events = status["events"]
    starts = [e for e in events if e["event_type"] == "step_started"]
    assert [e["step_id"] for e in starts].count("first") == 1  # a completed step never runs again
    rerun = [e for e in starts if e["step_id"] == "fragile"][-1]
    assert rerun["payload"]["rerun"] is True and rerun["payload"]["attempt"] == 2
    sequences = [e["sequence"] for e in events]
    assert sequences == list(range(1, len(sequences) + 1))
    states = await runtime.db(runtime.store.get_step_states, first["workflow_id"])
    assert await runtime.db(runtime.store.rebuild_step_states, first["workflow_id"]) == states


async def test_skip_a_failed_step_lets_the_run_continue(runtime) -> None:
    definition = {
        "steps": [
            {"id": "broken", "action": "workflow.fail", "params": {"reason": "x"}},
            log("after", "went on", depends_on=["broken"]),
        ]
    }
    first = await run_definition(runtime, definition)
    answer = await service.send_signal(
        runtime, workflow_id=first["workflow_id"], signal_type="skip", payload={}, step_id="broken"
    )
    assert answer["status"] == "completed"
    status = await service.workflow_status(runtime, workflow_id=first["workflow_id"])
    assert status["steps"]["broken"]["status"] == "skipped"
    assert status["steps"]["after"]["output"]["message"] == "went on"


async def test_skip_a_suspended_step(runtime) -> None:
    definition = {
        "steps": [{"id": "hold", "type": "wait", "config": {"signal": "never"}}, log("after", depends_on=["hold"])]
    }
    first = await run_definition(runtime, definition)
    answer = await service.send_signal(
        runtime, workflow_id=first["workflow_id"], signal_type="skip", payload={}, step_id="hold"
    )
    assert answer["status"] == "completed"


async def test_resume_is_refused_while_a_decision_is_pending(runtime) -> None:
    first = await run_definition(runtime, {"steps": [{"id": "ask", "type": "reasoning", "config": {}}]})
    with pytest.raises(OpcodeError) as info:
        await service.send_signal(runtime, workflow_id=first["workflow_id"], signal_type="resume", payload={})
    assert info.value.code == "CONFLICT"
