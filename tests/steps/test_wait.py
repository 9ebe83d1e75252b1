"""The wait step type: by duration, and by signal (by name, by payload.signal, by step_id)."""

from __future__ import annotations

import asyncio
import time

import pytest

from opcode_core import service
from tests.conftest import log, run_definition


async def test_wait_by_duration(runtime) -> None:
    started = time.monotonic()
    result = await run_definition(
        runtime,
        {
            "steps": [
                {"id": "pause", "type": "wait", "config": {"duration": "300ms"}},
                log("after", depends_on=["pause"]),
            ]
        },
    )
    assert result["status"] == "completed"
    assert time.monotonic() - started >= 0.3
    assert result["steps"]["pause"]["output"]["waited"] >= 300


@pytest.mark.parametrize("how", ["payload_signal", "step_id"])
async def test_wait_for_a_named_signal_suspends_then_resumes(runtime, how: str) -> None:
    definition = {
        "steps": [
            {"id": "hold", "type": "wait", "config": {"signal": "go-ahead"}},
            log("after", "got ${{steps.hold.output.payload.note}}", depends_on=["hold"]),
        ]
    }
    first = await run_definition(runtime, definition)
    assert first["status"] == "suspended"
    assert first["steps"]["hold"]["status"] == "suspended"
    wid = first["workflow_id"]
    payload = {"note": "hi"}
    if how == "payload_signal":
        payload["signal"] = "go-ahead"
        answer = await service.send_signal(runtime, workflow_id=wid, signal_type="data", payload=payload)
    else:
        answer = await service.send_signal(
            runtime, workflow_id=wid, signal_type="data", payload=payload, step_id="hold"
        )
    assert answer["resumed_steps"] == ["hold"]
    for _ in range(50):
        status = await service.workflow_status(runtime, workflow_id=wid)
        if status["status"] == "completed":
            break
        await asyncio.sleep(0.05)
    assert status["status"] == "completed"
    assert status["steps"]["after"]["output"]["message"] == "got hi"
    assert status["steps"]["hold"]["output"]["signal"] == "go-ahead"
    assert status["context"]["note"] == "hi"  # a data signal also merges into the context


async def test_an_unrelated_signal_does_not_resume_the_wait(runtime) -> None:
    first = await run_definition(runtime, {"steps": [{"id": "hold", "type": "wait", "config": {"signal": "go"}}]})
    answer = await service.send_signal(
        runtime, workflow_id=first["workflow_id"], signal_type="data", payload={"signal": "other"}
    )
    assert answer["resumed_steps"] == []
    status = await service.workflow_status(runtime, workflow_id=first["workflow_id"])
    assert status["status"] == "suspended"
