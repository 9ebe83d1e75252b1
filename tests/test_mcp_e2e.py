"""End to end: the official mcp client, over both transports, against a real `opcode serve` process."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import ClientSession, MCPError
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests.mcp_client import call, call_error, streamable_session

pytestmark = pytest.mark.slow

FOUR_STEPS = {
    "context": {"intent": "e2e"},
    "steps": [
        {"id": "digest", "action": "crypto.hash", "params": {"data": "${{inputs.text}}"}},
        {"id": "count", "action": "shell.exec", "params": {"command": "echo", "args": ['{"n": 41}']}},
        {
            "id": "combine",
            "action": "workflow.log",
            "depends_on": ["digest", "count"],
            "params": {"message": "hash=${{steps.digest.output.hash}} n=${{steps.count.output.stdout.n}}"},
        },
        {
            "id": "echo-hash",
            "action": "shell.exec",
            "depends_on": ["combine"],
            "params": {
                "command": "sh",
                "args": ["-c", "printf '%s' \"$H\""],
                "env": {"H": "${{steps.digest.output.hash}}"},
            },
        },
    ],
}


@asynccontextmanager
async def connect(server: Any, transport: str) -> AsyncIterator[ClientSession]:
    """An initialized client session over the named transport."""
    if transport == "sse":
        async with sse_client(server.sse_url) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session
    else:
        async with streamable_session(server.mcp_url) as session:
            yield session


@pytest.mark.parametrize("transport", ["sse", "streamable_http"])
async def test_define_run_status_query(server: Any, transport: str) -> None:
    name = f"four-steps-{transport}"
    async with connect(server, transport) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == {
            "opcode.define",
            "opcode.run",
            "opcode.status",
            "opcode.signal",
            "opcode.query",
            "opcode.diagram",
        }
        assert tools["opcode.run"].input_schema["required"] == ["template_name", "agent_id"]

        defined = await call(session, "opcode.define", {"name": name, "definition": FOUR_STEPS, "agent_id": "e2e"})
        assert defined == {"name": name, "version": "v1"}

        run = await call(session, "opcode.run", {"template_name": name, "agent_id": "e2e", "params": {"text": "hello"}})
        expected = hashlib.sha256(b"hello").hexdigest()
        assert run["status"] == "completed", run
        assert {sid: s["status"] for sid, s in run["steps"].items()} == {
            "digest": "completed",
            "count": "completed",
            "combine": "completed",
            "echo-hash": "completed",
        }
        assert run["steps"]["digest"]["output"]["hash"] == expected
        assert run["steps"]["count"]["output"]["stdout"] == {"n": 41}
        assert run["steps"]["echo-hash"]["output"]["stdout_raw"] == expected
        assert run["output"]["stdout_raw"] == expected  # the single terminal step's output
        assert run["started_at"] and run["completed_at"]

        status = await call(session, "opcode.status", {"workflow_id": run["workflow_id"]})
        assert status["status"] == "completed"
        assert status["steps"]["combine"]["status"] == "completed"
        assert status["context"] == {"intent": "e2e"}
        types = [e["event_type"] for e in status["events"]]
        assert types[0] == "workflow_started" and types[-1] == "workflow_completed"
        assert types.count("step_completed") == 4
        assert status["events_total"] == len(status["events"])
        sequences = [e["sequence"] for e in status["events"]]
        assert sequences == list(range(1, len(sequences) + 1))
        # "combine" started only after both of its dependencies completed
        order = [(e["event_type"], e["step_id"]) for e in status["events"]]
        assert order.index(("step_started", "combine")) > order.index(("step_completed", "digest"))
        assert order.index(("step_started", "combine")) > order.index(("step_completed", "count"))

        workflows = await call(session, "opcode.query", {"resource": "workflows", "filter": {"agent_id": "e2e"}})
        assert run["workflow_id"] in {w["workflow_id"] for w in workflows["workflows"]}
        events = await call(
            session,
            "opcode.query",
            {"resource": "events", "filter": {"workflow_id": run["workflow_id"], "event_type": "step_completed"}},
        )
        assert sorted(e["step_id"] for e in events["events"]) == ["combine", "count", "digest", "echo-hash"]

        again = await call(session, "opcode.define", {"name": name, "definition": FOUR_STEPS, "agent_id": "e2e"})
        assert again["version"] == "v2"
        templates = await call(session, "opcode.query", {"resource": "templates", "filter": {"name": name}})
        assert [t["version"] for t in templates["templates"]] == ["v2", "v1"]

        actions = await call(session, "opcode.query", {"resource": "actions", "filter": {"name": "shell"}})
        shell = actions["actions"][0]
        assert shell["name"] == "shell.exec" and "command" in shell["params_schema"]["properties"]


@pytest.mark.parametrize("transport", ["sse", "streamable_http"])
async def test_bad_input_is_a_tool_error_and_the_session_goes_on(server: Any, transport: str) -> None:
    async with connect(server, transport) as session:
        text = await call_error(
            session,
            "opcode.define",
            {"name": "bad", "agent_id": "e2e", "definition": {"steps": [{"action": "crypto.hash"}]}},
        )
        assert text.startswith("[VALIDATION_ERROR]") and "definition.steps[0]" in text and "'id'" in text

        text = await call_error(
            session,
            "opcode.define",
            {
                "name": "cyc",
                "agent_id": "e2e",
                "definition": {
                    "steps": [
                        {"id": "a", "action": "workflow.log", "params": {"message": "x"}, "depends_on": ["b"]},
                        {"id": "b", "action": "workflow.log", "params": {"message": "y"}, "depends_on": ["a"]},
                    ]
                },
            },
        )
        assert text.startswith("[CYCLE_DETECTED]") and "a -> b -> a" in text

        text = await call_error(
            session, "opcode.define", {"name": "x", "agent_id": "e2e", "bogus": 1, "definition": {"steps": []}}
        )
        assert text.startswith("[VALIDATION_ERROR]") and "bogus" in text

        text = await call_error(session, "opcode.run", {"template_name": "no-such-template", "agent_id": "e2e"})
        assert text.startswith("[NOT_FOUND]") and "no-such-template" in text

        text = await call_error(session, "opcode.status", {"workflow_id": "nope"})
        assert text.startswith("[NOT_FOUND]")

        text = await call_error(
            session, "opcode.signal", {"workflow_id": "w", "signal_type": "decision", "payload": {"choice": "x"}}
        )
        assert text.startswith("[NOT_FOUND]")

        text = await call_error(session, "opcode.signal", {"workflow_id": "w", "signal_type": "shout", "payload": {}})
        assert text.startswith("[VALIDATION_ERROR]") and "signal_type" in text

        with pytest.raises(MCPError) as info:
            await session.call_tool("opcode.nope", {})
        assert info.value.error.code == -32602

        # the session and the server still answer normally
        fine = await call(session, "opcode.query", {"resource": "templates", "filter": {"limit": 1}})
        assert isinstance(fine["templates"], list)


async def test_a_failed_run_is_a_normal_result(server: Any) -> None:
    definition = {
        "steps": [
            {"id": "ok", "action": "workflow.log", "params": {"message": "fine"}},
            {
                "id": "boom",
                "action": "shell.exec",
                "depends_on": ["ok"],
                "params": {"command": "sh", "args": ["-c", "echo out; exit 3"]},
            },
            {"id": "never", "action": "workflow.log", "depends_on": ["boom"], "params": {"message": "no"}},
        ]
    }
    async with connect(server, "streamable_http") as session:
        await call(session, "opcode.define", {"name": "fails", "definition": definition, "agent_id": "e2e"})
        run = await call(session, "opcode.run", {"template_name": "fails", "agent_id": "e2e"})
        assert run["status"] == "failed"
        assert run["error"]["step_id"] == "boom"
        assert run["steps"]["boom"]["status"] == "failed"
        assert run["steps"]["boom"]["output"]["exit_code"] == 3
        assert "never" not in run["steps"]


async def test_health_and_dns_rebinding_protection(server: Any) -> None:
    health = httpx2.get(f"{server.base_url}/health")
    assert health.status_code == 200 and health.json()["database"] == "ok"
    headers = {
        "Host": "evil.example:80",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    evil = httpx2.post(server.mcp_url, headers=headers, content=b"{}")
    assert evil.status_code == 421


async def test_disconnecting_client_does_not_cancel_the_run(server: Any) -> None:
    import anyio

    definition = {
        "steps": [
            {"id": "slow", "action": "shell.exec", "params": {"command": "sleep", "args": ["1.5"]}},
            {"id": "after", "action": "workflow.log", "depends_on": ["slow"], "params": {"message": "still here"}},
        ]
    }
    async with connect(server, "streamable_http") as session:
        await call(session, "opcode.define", {"name": "slow", "definition": definition, "agent_id": "leaver"})
        with anyio.move_on_after(0.5):  # leave while the run is in its first step
            await session.call_tool("opcode.run", {"template_name": "slow", "agent_id": "leaver"})
    async with connect(server, "sse") as session:
        runs = await call(session, "opcode.query", {"resource": "workflows", "filter": {"agent_id": "leaver"}})
        workflow_id = runs["workflows"][0]["workflow_id"]
        status = {}
        for _ in range(50):
            status = await call(session, "opcode.status", {"workflow_id": workflow_id})
            if status["status"] != "active":
                break
            await anyio.sleep(0.1)
        assert status["status"] == "completed", status
        assert status["steps"]["after"]["output"]["message"] == "still here"


async def test_progress_notifications_during_run(server: Any) -> None:
    definition = {
        "steps": [
            {"id": "a", "action": "crypto.uuid"},
            {"id": "b", "action": "crypto.uuid", "depends_on": ["a"]},
            {"id": "c", "action": "crypto.uuid", "depends_on": ["b"]},
        ]
    }
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with connect(server, "streamable_http") as session:
        await call(session, "opcode.define", {"name": "three", "definition": definition, "agent_id": "e2e"})
        result = await session.call_tool(
            "opcode.run", {"template_name": "three", "agent_id": "e2e"}, progress_callback=on_progress
        )
        assert result.structured_content["status"] == "completed"
    assert seen == [(1, 3), (2, 3), (3, 3)]


async def test_server_on_postgresql(tmp_path: Any) -> None:
    from tests.conftest import start_server, stop_server
    from tests.test_store import POSTGRES_URL, postgres_schema

    if not POSTGRES_URL:
        pytest.skip("OPCODE_TEST_POSTGRES_URL is not set")
    with postgres_schema() as backend:
        proc = start_server(tmp_path / "home", OPCODE_DB_URL=backend.url)
        try:
            async with connect(proc, "streamable_http") as session:
                await call(session, "opcode.define", {"name": "pg", "definition": FOUR_STEPS, "agent_id": "pg"})
                run = await call(
                    session, "opcode.run", {"template_name": "pg", "agent_id": "pg", "params": {"text": "on postgres"}}
                )
                assert run["status"] == "completed", run
        finally:
            stop_server(proc.process)
        rows = backend.fetch(
            "SELECT event_type FROM events WHERE workflow_id = ? ORDER BY sequence", run["workflow_id"]
        )
        assert rows[0] == ("workflow_started",) and rows[-1] == ("workflow_completed",)
        assert backend.fetch(
            "SELECT count(*) FROM step_state WHERE workflow_id = ? AND status = 'completed'", run["workflow_id"]
        ) == [(4,)]
        assert not (tmp_path / "home" / "opcode.db").exists()


@pytest.mark.parametrize("transport", ["sse", "streamable_http"])
async def test_reasoning_suspends_and_a_signal_resolves_it(server: Any, transport: str) -> None:
    definition = {
        "steps": [
            {"id": "facts", "action": "shell.exec", "params": {"command": "echo", "args": ['{"tests": 12}']}},
            {
                "id": "approve",
                "type": "reasoning",
                "depends_on": ["facts"],
                "config": {
                    "prompt_context": "Ship it?",
                    "options": [{"id": "yes"}, {"id": "no"}],
                    "data_inject": {"tests": "steps.facts.output.stdout.tests"},
                },
            },
            {
                "id": "done",
                "action": "workflow.log",
                "depends_on": ["approve"],
                "params": {"message": "decided ${{steps.approve.output.choice}}"},
            },
        ]
    }
    name = f"gate-{transport}"
    async with connect(server, transport) as session:
        await call(session, "opcode.define", {"name": name, "definition": definition, "agent_id": "e2e"})
        run = await call(session, "opcode.run", {"template_name": name, "agent_id": "e2e"})
        assert run["status"] == "suspended"
        status = await call(session, "opcode.status", {"workflow_id": run["workflow_id"]})
        [pending] = status["pending_decisions"]
        assert pending["step_id"] == "approve" and pending["context"]["data"] == {"tests": 12}
        answer = await call(
            session,
            "opcode.signal",
            {
                "workflow_id": run["workflow_id"],
                "signal_type": "decision",
                "payload": {"choice": "yes"},
                "agent_id": "e2e",
                "reasoning": "tests pass",
            },
        )
        assert answer["ok"] is True and answer["resumed"] is True and answer["status"] == "completed"
        assert answer["output"]["message"] == "decided yes"
        again = await call_error(
            session,
            "opcode.signal",
            {
                "workflow_id": run["workflow_id"],
                "signal_type": "decision",
                "payload": {"choice": "no"},
                "step_id": "approve",
            },
        )
        assert again.startswith("[CONFLICT]")


async def test_wait_false_answers_at_once(server: Any) -> None:
    import anyio

    definition = {"steps": [{"id": "slow", "type": "wait", "config": {"duration": "700ms"}}]}
    async with connect(server, "streamable_http") as session:
        await call(session, "opcode.define", {"name": "bg", "definition": definition, "agent_id": "e2e"})
        with anyio.fail_after(0.5):
            started = await call(session, "opcode.run", {"template_name": "bg", "agent_id": "e2e", "wait": False})
        assert started["status"] == "active" and started["workflow_id"]
        for _ in range(40):
            status = await call(session, "opcode.status", {"workflow_id": started["workflow_id"]})
            if status["status"] == "completed":
                break
            await anyio.sleep(0.1)
        assert status["status"] == "completed"


@pytest.mark.parametrize("transport", ["sse", "streamable_http"])
async def test_workflow_notify_reaches_the_runs_agent(server: Any, transport: str) -> None:
    import anyio

    received: list[Any] = []

    async def on_log(params: Any) -> None:
        received.append(params)

    definition = {
        "steps": [
            {
                "id": "tell",
                "action": "workflow.notify",
                "params": {"message": "build ${{inputs.n}} done", "data": {"n": "${{inputs.n}}"}},
            }
        ]
    }
    agent = f"listener-{transport}"
    if transport == "sse":
        opened = sse_client(server.sse_url)
    else:
        http = httpx2.AsyncClient()
        opened = streamable_http_client(server.mcp_url, http_client=http)
    async with opened as (read, write), ClientSession(read, write, logging_callback=on_log) as session:
        await session.initialize()
        await call(session, "opcode.define", {"name": f"tell-{transport}", "definition": definition, "agent_id": agent})
        run = await call(
            session, "opcode.run", {"template_name": f"tell-{transport}", "agent_id": agent, "params": {"n": 7}}
        )
        assert run["steps"]["tell"]["output"] == {"notified": True}
        with anyio.fail_after(5):
            while not received:
                await anyio.sleep(0.05)
        late = {
            "steps": [
                {"id": "pause", "type": "wait", "config": {"duration": "500ms"}},
                {"id": "tell", "action": "workflow.notify", "depends_on": ["pause"], "params": {"message": "anyone?"}},
            ]
        }
        await call(session, "opcode.define", {"name": f"late-{transport}", "definition": late, "agent_id": agent})
    # Another agent starts a run and leaves before its notification is due: it is not connected any more.
    async with connect(server, transport) as gone:
        started = await call(
            gone, "opcode.run", {"template_name": f"late-{transport}", "agent_id": f"ghost-{transport}", "wait": False}
        )
    async with connect(server, transport) as watcher:
        with anyio.fail_after(10):
            while True:
                other = await call(watcher, "opcode.status", {"workflow_id": started["workflow_id"]})
                if other["status"] == "completed":
                    break
                await anyio.sleep(0.1)
    note = received[0]
    assert note.level == "info" and note.data["message"] == "build 7 done"
    assert note.data["workflow_id"] == run["workflow_id"] and note.data["step_id"] == "tell"
    assert note.data["data"] == {"n": 7}
    assert other["status"] == "completed"
    assert other["steps"]["tell"]["output"] == {"notified": False, "reason": "agent not connected"}
