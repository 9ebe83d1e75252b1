"""The reasoning step type: options, free-form, invalid choices, target agents, injected data, timeouts."""

from __future__ import annotations

import pytest

from opcode_core import service
from opcode_core.errors import OpcodeError
from tests.conftest import log, run_definition

OPTIONS = [{"id": "approve", "description": "go"}, {"id": "reject", "description": "stop"}]


def gate(**config) -> dict:
    return {
        "steps": [
            {"id": "facts", "action": "shell.exec", "params": {"command": "echo", "args": ['{"risk": "low"}']}},
            {
                "id": "gate",
                "type": "reasoning",
                "depends_on": ["facts"],
                "config": {
                    "prompt_context": "Deploy ${{inputs.env}}?",
                    "options": OPTIONS,
                    "data_inject": {
                        "risk": "steps.facts.output.stdout.risk",
                        "env": "inputs.env",
                        "raw": "steps['facts'].stdout",
                    },
                    **config,
                },
            },
            {
                "id": "route",
                "type": "condition",
                "depends_on": ["gate"],
                "config": {
                    "expression": "steps['gate'].choice",
                    "branches": {"approve": [log("ship", "shipping")], "reject": [log("hold", "holding")]},
                },
            },
        ]
    }


async def test_decision_with_options_resumes_the_run(runtime) -> None:
    first = await run_definition(runtime, gate(), {"env": "prod"})
    assert first["status"] == "suspended"
    wid = first["workflow_id"]
    status = await service.workflow_status(runtime, workflow_id=wid)
    [decision] = status["pending_decisions"]
    assert decision["step_id"] == "gate" and decision["options"] == OPTIONS
    assert decision["context"]["prompt"] == "Deploy prod?"
    assert decision["context"]["data"] == {"risk": "low", "env": "prod", "raw": {"risk": "low"}}
    answer = await service.send_signal(
        runtime,
        workflow_id=wid,
        signal_type="decision",
        payload={"choice": "approve"},
        agent_id="boss",
        reasoning="looks fine",
    )
    assert answer["ok"] and answer["resumed"] and answer["status"] == "completed"
    status = await service.workflow_status(runtime, workflow_id=wid)
    assert status["steps"]["gate"]["output"] == {
        "choice": "approve",
        "reasoning": "looks fine",
        "data": {},
        "resolved_by": "boss",
    }
    assert status["steps"]["route.approve.ship"]["status"] == "completed"
    assert status["pending_decisions"] == []
    kinds = [e["event_type"] for e in status["events"]]
    assert kinds.index("decision_requested") < kinds.index("workflow_suspended") < kinds.index("signal_received")
    assert kinds.index("decision_resolved") < kinds.index("workflow_completed")


async def test_invalid_choice_is_refused_and_the_decision_stays_pending(runtime) -> None:
    first = await run_definition(runtime, gate(), {"env": "x"})
    with pytest.raises(OpcodeError) as info:
        await service.send_signal(
            runtime, workflow_id=first["workflow_id"], signal_type="decision", payload={"choice": "maybe"}
        )
    assert info.value.code == "VALIDATION_ERROR" and "approve, reject" in info.value.message
    status = await service.workflow_status(runtime, workflow_id=first["workflow_id"])
    assert status["status"] == "suspended" and len(status["pending_decisions"]) == 1


async def test_free_form_decision_accepts_any_choice(runtime) -> None:
    definition = {
        "steps": [
            {"id": "ask", "type": "reasoning", "config": {"prompt_context": "name it"}},
            log("echo", "${{steps.ask.output.choice}}", depends_on=["ask"]),
        ]
    }
    first = await run_definition(runtime, definition)
    answer = await service.send_signal(
        runtime,
        workflow_id=first["workflow_id"],
        signal_type="decision",
        payload={"choice": "anything at all", "data": {"n": 1}},
    )
    assert answer["status"] == "completed"
    assert answer["output"]["message"] == "anything at all"


async def test_wrong_agent_is_refused(runtime) -> None:
    first = await run_definition(runtime, gate(target_agent="reviewer"), {"env": "x"})
    with pytest.raises(OpcodeError) as info:
        await service.send_signal(
            runtime,
            workflow_id=first["workflow_id"],
            signal_type="decision",
            payload={"choice": "approve"},
            agent_id="intruder",
        )
    assert info.value.code == "PERMISSION_DENIED"
    ok = await service.send_signal(
        runtime,
        workflow_id=first["workflow_id"],
        signal_type="decision",
        payload={"choice": "reject"},
        agent_id="reviewer",
    )
    assert ok["status"] == "completed"


async def test_a_resolved_decision_is_never_asked_again(runtime) -> None:
    first = await run_definition(runtime, gate(), {"env": "x"})
    wid = first["workflow_id"]
    await service.send_signal(
        runtime, workflow_id=wid, signal_type="decision", payload={"choice": "approve"}, step_id="gate"
    )
    with pytest.raises(OpcodeError) as info:
        await service.send_signal(
            runtime, workflow_id=wid, signal_type="decision", payload={"choice": "reject"}, step_id="gate"
        )
    assert info.value.code == "CONFLICT"


async def test_timeout_picks_the_fallback(runtime) -> None:
    result = await run_definition(runtime, gate(timeout="200ms", fallback="reject"), {"env": "x"})
    assert result["status"] == "suspended"
    status = {}
    for _ in range(40):
        status = await service.workflow_status(runtime, workflow_id=result["workflow_id"])
        if status["status"] == "completed":
            break
        import asyncio

        await asyncio.sleep(0.05)
    assert status["status"] == "completed"
    assert status["steps"]["gate"]["output"]["choice"] == "reject"
    assert status["steps"]["gate"]["output"]["resolved_by"] == "timeout"


async def test_timeout_without_fallback_fails_the_step(runtime) -> None:
    import asyncio

    result = await run_definition(runtime, gate(timeout="100ms"), {"env": "x"})
    for _ in range(40):
        status = await service.workflow_status(runtime, workflow_id=result["workflow_id"])
        if status["status"] == "failed":
            break
        await asyncio.sleep(0.05)
    assert status["status"] == "failed"
    assert status["steps"]["gate"]["error"]["code"] == "TIMEOUT_ERROR"


async def test_decision_needs_step_id_when_several_are_pending(runtime) -> None:
    definition = {
        "steps": [
            {"id": "one", "type": "reasoning", "config": {"options": OPTIONS}},
            {"id": "two", "type": "reasoning", "config": {"options": OPTIONS}},
        ]
    }
    first = await run_definition(runtime, definition)
    wid = first["workflow_id"]
    status = await service.workflow_status(runtime, workflow_id=wid)
    assert len(status["pending_decisions"]) == 2
    with pytest.raises(OpcodeError) as info:
        await service.send_signal(runtime, workflow_id=wid, signal_type="decision", payload={"choice": "approve"})
    assert info.value.code == "VALIDATION_ERROR" and "one" in info.value.message and "two" in info.value.message
    answer = await service.send_signal(
        runtime, workflow_id=wid, signal_type="decision", payload={"choice": "approve"}, step_id="one"
    )
    assert answer["status"] == "suspended"  # still waiting on "two"
    answer = await service.send_signal(runtime, workflow_id=wid, signal_type="decision", payload={"choice": "reject"})
    assert answer["status"] == "completed"
