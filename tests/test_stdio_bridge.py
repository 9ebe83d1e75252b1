"""`opcode mcp-stdio` driven by the official stdio client: proxied to a running server, or on the embedded store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
import pytest
from mcp import ClientSession, MCPError
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.conftest import OPCODE, opcode_env, start_server, stop_server
from tests.durability.test_recovery import wait_for
from tests.test_mcp_e2e import call, connect
from tests.test_operations import sleepy

pytestmark = pytest.mark.slow

TOOLS = {"opcode.define", "opcode.run", "opcode.status", "opcode.signal", "opcode.query", "opcode.diagram"}
TELL = {
    "steps": [
        {"id": "digest", "action": "crypto.hash", "params": {"data": "${{inputs.text}}"}},
        {"id": "note", "action": "workflow.log", "depends_on": ["digest"],
         "params": {"message": "bridged ${{steps.digest.output.hash}}"}},
        {"id": "tell", "action": "workflow.notify", "depends_on": ["note"], "params": {"message": "done"}},
    ]
}


@asynccontextmanager
async def bridge(home: Path, errlog: Path, received: list[Any] | None = None,
                 **env: str) -> AsyncIterator[ClientSession]:
    """`opcode mcp-stdio` spawned by the official stdio client, initialized."""
    params = StdioServerParameters(command=OPCODE, args=["mcp-stdio"], env=opcode_env(home, **env))

    async def on_log(message: types.LoggingMessageNotificationParams) -> None:
        if received is not None:
            received.append(message)

    with errlog.open("w") as err, anyio.fail_after(60):
        async with stdio_client(params, errlog=err) as (read, write), \
                ClientSession(read, write, logging_callback=on_log) as session:
            await session.initialize()
            yield session


async def define_and_run(session: ClientSession, agent: str) -> dict[str, Any]:
    assert {t.name for t in (await session.list_tools()).tools} == TOOLS
    defined = await call(session, "opcode.define", {"name": "tell", "definition": TELL, "agent_id": agent})
    assert defined == {"name": "tell", "version": "v1"}
    run = await call(session, "opcode.run", {"template_name": "tell", "agent_id": agent, "params": {"text": "hi"}})
    assert run["status"] == "completed", run
    with pytest.raises(MCPError) as info:
        await session.call_tool("opcode.nope", {})
    assert info.value.error.code == -32602
    failed = await session.call_tool("opcode.status", {"workflow_id": "no-such-run"})
    assert failed.is_error and failed.content[0].text.startswith("[NOT_FOUND]")
    return run


async def test_proxied_to_the_running_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = start_server(home)
    received: list[Any] = []
    try:
        addr = proc.base_url.removeprefix("http://")
        async with bridge(home, tmp_path / "bridge.log", received, OPCODE_LISTEN_ADDR=addr) as session:
            run = await define_and_run(session, "stdio-agent")
            # workflow.notify reached the agent through the server's push, forwarded over stdio.
            assert run["steps"]["tell"]["output"] == {"notified": True}
            with anyio.fail_after(5):
                while not received:
                    await anyio.sleep(0.05)
        assert received[0].data["message"] == "done" and received[0].data["workflow_id"] == run["workflow_id"]
        # The run is in the server's database, and it ran inside the server (its log line is there).
        async with connect(proc, "streamable_http") as session:
            state = await call(session, "opcode.status", {"workflow_id": run["workflow_id"]})
        assert state["status"] == "completed" and state["workflow"]["agent_id"] == "stdio-agent"
        lines = [json.loads(line) for line in proc.log().splitlines() if '"bridged ' in line]
        assert [(line["workflow_id"], line["step_id"]) for line in lines] == [(run["workflow_id"], "note")]
        assert "proxying to the opcode server at " + proc.base_url in (tmp_path / "bridge.log").read_text()
    finally:
        stop_server(proc.process)


async def test_embedded_when_no_server_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    received: list[Any] = []
    async with bridge(home, tmp_path / "bridge.log", received) as session:
        run = await define_and_run(session, "stdio-agent")
        assert run["steps"]["tell"]["output"] == {"notified": True}  # the stdio session is the agent's
        with anyio.fail_after(5):
            while not received:
                await anyio.sleep(0.05)
    assert "serving on the embedded store" in (tmp_path / "bridge.log").read_text()
    assert not (home / "opcode.pid").exists()
    # The run is in the home's own store, where a server started later finds it.
    proc = start_server(home)
    try:
        async with connect(proc, "streamable_http") as session:
            state = await call(session, "opcode.status", {"workflow_id": run["workflow_id"]})
        assert state["status"] == "completed"
    finally:
        stop_server(proc.process)


async def test_embedded_bridge_never_recovers_or_takes_over_a_run_it_did_not_start(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    proc = start_server(home)
    try:
        async with connect(proc, "streamable_http") as session:
            await call(session, "opcode.define", {"name": "sleepy", "definition": sleepy(work), "agent_id": "ops"})
            run = await call(session, "opcode.run", {"template_name": "sleepy", "agent_id": "ops", "wait": False})
        await wait_for(lambda: (work / "sleeper").exists())
        proc.process.send_signal(signal.SIGKILL)  # a crash: the run is left active
        proc.process.wait(timeout=10)
    finally:
        stop_server(proc.process)
    os.kill(int((work / "sleeper").read_text()), signal.SIGKILL)
    wid = run["workflow_id"]
    async with bridge(home, tmp_path / "bridge.log") as session:
        await anyio.sleep(1)  # time in which a recovering process would have acted
        state = await call(session, "opcode.status", {"workflow_id": wid})
        assert state["status"] == "active"
        assert "workflow_interrupted" not in [e["event_type"] for e in state["events"]]
        # A data signal would otherwise revive the run here, re-running its interrupted step.
        refused = await session.call_tool("opcode.signal", {"workflow_id": wid, "signal_type": "data",
                                                            "payload": {"x": 1}, "agent_id": "ops"})
        assert refused.is_error and refused.content[0].text.startswith("[CONFLICT]")
        assert "only `opcode serve` recovers it" in refused.content[0].text
        await anyio.sleep(1)
    assert (work / "runs").read_text().split() == ["1", "2"]  # nothing ran again
    status = subprocess.run([OPCODE, "status", wid], env=opcode_env(home), capture_output=True, text=True,
                            timeout=60)
    assert json.loads(status.stdout)["status"] == "active"
