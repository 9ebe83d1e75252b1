"""Crash recovery with a real server killed by SIGKILL, in both recovery modes; crash loops; durable timers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import start_server, stop_server
from tests.test_mcp_e2e import call, connect

pytestmark = pytest.mark.slow


def five_steps(work: Path) -> dict[str, Any]:
    """Five sequential shell steps counting their runs in files; step 3 sleeps the first time only."""
    steps = []
    for n in range(1, 6):
        script = f"echo {n} >> {work}/runs"
        if n == 3:
            script += (
                f"; if [ ! -f {work}/slept ]; then touch {work}/slept; sleep 30 & echo $! > {work}/sleeper; wait; fi"
            )
        step = {"id": f"s{n}", "action": "shell.exec", "params": {"command": "sh", "args": ["-c", script]}}
        if n > 1:
            step["depends_on"] = [f"s{n - 1}"]
        steps.append(step)
    return {"steps": steps}


async def wait_for(predicate, seconds: float = 15) -> None:
    with anyio.fail_after(seconds):
        while not predicate():
            await anyio.sleep(0.05)


async def status_of(proc: Any, workflow_id: str) -> dict[str, Any]:
    async with connect(proc, "streamable_http") as session:
        return await call(session, "opcode.status", {"workflow_id": workflow_id})


async def wait_status(proc: Any, workflow_id: str, wanted: str, seconds: float = 20) -> dict[str, Any]:
    with anyio.fail_after(seconds):
        while True:
            state = await status_of(proc, workflow_id)
            if state["status"] == wanted:
                return state
            await anyio.sleep(0.2)


def kill_hard(proc: Any) -> None:
    proc.process.send_signal(signal.SIGKILL)
    proc.process.wait(timeout=10)


@pytest.mark.parametrize("mode", ["suspend", "auto"])
async def test_a_killed_server_recovers_the_run(tmp_path: Path, mode: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    proc = start_server(home, OPCODE_RECOVERY=mode)
    try:
        async with connect(proc, "streamable_http") as session:
            await call(session, "opcode.define", {"name": "five", "definition": five_steps(work), "agent_id": "crash"})
            run = await call(session, "opcode.run", {"template_name": "five", "agent_id": "crash", "wait": False})
        await wait_for(lambda: (work / "sleeper").exists())
        kill_hard(proc)
    finally:
        stop_server(proc.process)
    sleeper = int((work / "sleeper").read_text())
    os.kill(sleeper, signal.SIGKILL)  # the orphaned sleep of the killed server's step

    proc = start_server(home, OPCODE_RECOVERY=mode)
    try:
        wid = run["workflow_id"]
        if mode == "suspend":
            state = await wait_status(proc, wid, "suspended")
            async with connect(proc, "sse") as session:
                answer = await call(
                    session,
                    "opcode.signal",
                    {"workflow_id": wid, "signal_type": "resume", "payload": {}, "agent_id": "crash"},
                )
            assert answer["resumed"] is True and answer["status"] == "completed", answer
        state = await wait_status(proc, wid, "completed")
    finally:
        stop_server(proc.process)
    assert (work / "runs").read_text().split() == ["1", "2", "3", "3", "4", "5"]  # 1 and 2 exactly once
    events = state["events"]
    kinds = [e["event_type"] for e in events]
    assert "workflow_interrupted" in kinds
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    rerun = [e for e in events if e["event_type"] == "step_started" and e["step_id"] == "s3"]
    assert len(rerun) == 2 and rerun[1]["payload"]["rerun"] is True


async def test_a_run_that_keeps_killing_the_server_ends_failed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"OPCODE_RECOVERY": "auto", "OPCODE_MAX_RECOVERY_ATTEMPTS": "2"}
    killer = {
        "steps": [
            {
                "id": "die",
                "action": "shell.exec",
                "params": {"command": "sh", "args": ["-c", "sleep 0.5; kill -9 $PPID"]},
            }
        ]
    }
    proc = start_server(home, **env)
    async with connect(proc, "streamable_http") as session:
        await call(session, "opcode.define", {"name": "killer", "definition": killer, "agent_id": "k"})
        run = await call(session, "opcode.run", {"template_name": "killer", "agent_id": "k", "wait": False})
    proc.process.wait(timeout=15)
    crashes = 1
    for _ in range(4):
        try:
            proc = start_server(home, **env)
        except RuntimeError:
            crashes += 1  # killed again during recovery, before it answered /health
            continue
        time.sleep(1.0)
        if proc.process.poll() is not None:
            crashes += 1
            continue
        break
    try:
        state = await wait_status(proc, run["workflow_id"], "failed")
    finally:
        stop_server(proc.process)
    assert crashes == 3
    assert "interrupted by 3 crashes" in state["workflow"]["error"]["message"]


async def test_a_decision_deadline_passed_while_down_applies_the_fallback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    gate = {
        "steps": [
            {
                "id": "ask",
                "type": "reasoning",
                "config": {
                    "prompt_context": "ok?",
                    "timeout": "1s",
                    "fallback": "no",
                    "options": [{"id": "yes"}, {"id": "no"}],
                },
            }
        ]
    }
    proc = start_server(home)
    try:
        async with connect(proc, "streamable_http") as session:
            await call(session, "opcode.define", {"name": "gate", "definition": gate, "agent_id": "d"})
            run = await call(session, "opcode.run", {"template_name": "gate", "agent_id": "d"})
        assert run["status"] == "suspended"
    finally:
        stop_server(proc.process)
    time.sleep(1.5)
    proc = start_server(home)
    try:
        state = await wait_status(proc, run["workflow_id"], "completed")
    finally:
        stop_server(proc.process)
    assert state["steps"]["ask"]["output"]["choice"] == "no"
    assert state["steps"]["ask"]["output"]["resolved_by"] == "timeout"


async def test_a_wait_resumes_its_recorded_deadline_after_a_crash(tmp_path: Path) -> None:
    from datetime import datetime

    home = tmp_path / "home"
    definition = {"steps": [{"id": "pause", "type": "wait", "config": {"duration": "4s"}}]}
    proc = start_server(home, OPCODE_RECOVERY="auto")
    try:
        async with connect(proc, "streamable_http") as session:
            await call(session, "opcode.define", {"name": "pause", "definition": definition, "agent_id": "w"})
            run = await call(session, "opcode.run", {"template_name": "pause", "agent_id": "w", "wait": False})
        await anyio.sleep(1.0)
        kill_hard(proc)
    finally:
        stop_server(proc.process)
    proc = start_server(home, OPCODE_RECOVERY="auto")
    try:
        state = await wait_status(proc, run["workflow_id"], "completed")
    finally:
        stop_server(proc.process)
    def at(event: dict) -> float:
        return datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()

    starts = [e for e in state["events"] if e["event_type"] == "wait_started"]
    [done] = [e for e in state["events"] if e["event_type"] == "wait_completed"]
    assert len(starts) == 2  # the original wait, and the one revived after the crash
    deadline = starts[0]["payload"]["until"]
    assert starts[1]["payload"]["until"] == deadline  # the revived wait kept the recorded deadline
    revived = at(starts[1])
    # It ends at the recorded deadline, or at once if that passed while the server was down ...
    assert at(done) <= max(deadline, revived) + 1.0
    # ... clearly before a wait restarted from zero would have ended.
    assert at(done) <= revived + 4.0 - 1.0
