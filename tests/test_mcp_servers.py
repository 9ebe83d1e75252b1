"""External MCP servers as action providers: a real server's tools become actions, survive a crash, report state."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import mcp.types as types
import pytest

from opcode_core.errors import ACTION_UNAVAILABLE, EXECUTION_ERROR, VALIDATION_ERROR, OpcodeError
from opcode_core.registry import DuplicateNameError, Registry, plugin_states
from opcode_core.runtime import Runtime
from opcode_core.settings import load_settings
from opcode_core.specs import ActionSpec
from opcode_plugins.mcp_servers import check_settings, parse_servers, tool_output
from opcode_plugins.mcp_servers_client import ServerConfig, ServerConnection
from opcode_server.process import pid_alive
from tests.conftest import OPCODE, free_port, opcode_env, run_definition, start_server, stop_server, write_settings
from tests.mcp_client import call, streamable_session

# The external server of these tests: the official SDK's MCPServer over stdio (or Streamable HTTP with a port).
CALC_SERVER = r'''
import os
import sys

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

with open(sys.argv[1], "a") as pids:
    pids.write(f"{os.getpid()}\n")

server = MCPServer("calc")


@server.tool()
def add(a: int, b: int) -> dict[str, int]:
    """Add two integers."""
    return {"sum": a + b}


@server.tool(structured_output=False)
def echo(text: str) -> str:
    """Return the text as it came."""
    return text


@server.tool()
def fail(message: str) -> str:
    """Fail on purpose with the message."""
    raise ToolError(message)


@server.tool(name="hash", structured_output=False)
def reverse(data: str) -> str:
    """The data reversed (named `hash` so that a server called `crypto` collides with crypto.hash)."""
    return data[::-1]


if len(sys.argv) > 2:
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
else:
    server.run()
'''

# A server that completes the handshake, lists one tool, then never answers again (pings included).
MUTE_SERVER = r'''
import json
import os
import sys

with open(sys.argv[1], "a") as pids:
    pids.write(f"{os.getpid()}\n")
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("method") == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}},
                  "serverInfo": {"name": "mute", "version": "1"}}
    elif msg.get("method") == "tools/list":
        result = {"tools": [{"name": "nap", "inputSchema": {"type": "object"}}]}
    else:
        continue
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
'''

ADD_THEN_ECHO = {
    "steps": [
        {"id": "sum", "action": "calc.add", "params": {"a": "${{inputs.a}}", "b": 2}},
        {"id": "say", "action": "calc.echo", "depends_on": ["sum"],
         "params": {"text": "sum=${{steps.sum.output.sum}}"}},
    ],
    "inputs": {"a": {"type": "integer"}},
}


def script(tmp_path: Path, name: str, text: str) -> Path:
    """Write a server script next to the test's files."""
    path = tmp_path / name
    path.write_text(text)
    return path


def pids(path: Path) -> list[int]:
    """The pids a test server wrote, oldest first."""
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def stdio(server: Path, pidfile: Path) -> dict[str, Any]:
    """A stdio server entry running a script with this interpreter."""
    return {"command": [sys.executable, str(server), str(pidfile)]}


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll check() until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def wait_sync(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """until() for code outside the event loop."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@asynccontextmanager
async def runtime_with(home: Path, servers: dict[str, Any], **tuning: Any) -> AsyncIterator[Runtime]:
    """A running runtime whose settings configure these external servers."""
    write_settings(home, {"plugins": {"settings": {"mcp_servers": {"servers": servers, **tuning}}}})
    rt = Runtime(load_settings({"OPCODE_HOME": str(home), "OPCODE_LOAD_PLUGINS": ""}))
    async with rt.running():
        yield rt


def states(rt: Runtime) -> dict[str, Any]:
    """The servers' states as /health shows them."""
    return plugin_states(rt.pm, rt.settings, rt)["mcp_servers"]


# --- end to end: a real `opcode serve` and the official MCP client -------------------------------------------


def health_state(base_url: str) -> dict[str, Any]:
    """The external servers' states in /health."""
    return httpx.get(f"{base_url}/health", timeout=5).json()["plugins"]["state"]["mcp_servers"]


@pytest.mark.slow
async def test_a_stdio_server_s_tools_are_actions_that_survive_its_crash(tmp_path: Path) -> None:
    home, pidfile = tmp_path / "home", tmp_path / "calc.pids"
    server_path = script(tmp_path, "calc_server.py", CALC_SERVER)
    # A long restart delay keeps the "down" window wide enough to run a workflow in it.
    write_settings(home, {"plugins": {"settings": {"mcp_servers": {
        "health_interval": "1s", "restart_delay": "3s",
        "servers": {"calc": stdio(server_path, pidfile),
                    "broken": {"command": [str(tmp_path / "no-such-server")]}},
    }}}})
    proc = start_server(home)
    try:
        async with streamable_session(proc.mcp_url) as session:
            query = {"resource": "actions", "filter": {"plugin": "mcp_servers"}}
            listed = await call(session, "opcode.query", query)
            actions = {a["name"]: a for a in listed["actions"]}
            assert set(actions) == {"calc.add", "calc.echo", "calc.fail", "calc.hash"}
            assert actions["calc.add"]["params_schema"]["required"] == ["a", "b"]
            assert "Add two integers." in actions["calc.add"]["description"]

            # The server that cannot start is reported; opcode and the other server work.
            state = health_state(proc.base_url)
            assert state["calc"]["state"] == "healthy" and state["calc"]["tools"] == 4
            assert state["broken"]["state"] in ("down", "starting")
            assert "no-such-server" in (state["broken"]["error"] or "")

            await call(session, "opcode.define", {"name": "calc", "definition": ADD_THEN_ECHO, "agent_id": "t"})

            async def run() -> dict[str, Any]:
                return await call(session, "opcode.run", {"template_name": "calc", "agent_id": "t",
                                                              "params": {"a": 40}})

            first = await run()
            assert first["status"] == "completed", first
            assert first["steps"]["sum"]["output"] == {"sum": 42}
            assert first["steps"]["say"]["output"] == {"result": "sum=42"}

            # `opcode plugins` reads the running server's live state.
            plugins = subprocess.run([OPCODE, "plugins"], env=opcode_env(home), capture_output=True, text=True,
                                     timeout=60)
            out = json.loads(plugins.stdout)
            assert out["state_from"] == f"{proc.base_url}/health"
            row = next(r for r in out["plugins"] if r["name"] == "mcp_servers")
            assert row["status"] == "loaded" and row["state"]["calc"]["state"] == "healthy"

            crashed = pids(pidfile)[-1]
            os.kill(crashed, signal.SIGKILL)
            await until(lambda: health_state(proc.base_url)["calc"]["state"] != "healthy", 10, "calc to be down")
            down = await run()
            assert down["status"] == "failed", down
            assert down["steps"]["sum"]["error"]["code"] == ACTION_UNAVAILABLE
            assert "calc" in down["steps"]["sum"]["error"]["message"]

            back = await until(lambda: (s := health_state(proc.base_url)["calc"])["state"] == "healthy" and s, 30,
                               "calc to be restarted")
            assert back["restarts"] >= 1
            again = await run()
            assert again["status"] == "completed", again
            assert again["steps"]["sum"]["output"] == {"sum": 42}
            restarted = pids(pidfile)[-1]
            assert restarted != crashed
    finally:
        stop_server(proc.process)
    # Stopping opcode stops the server it started.
    wait_sync(lambda: not pid_alive(restarted), 15, "the stdio server to exit with opcode")


def test_opcode_plugins_shows_configured_servers_without_a_running_server(tmp_path: Path) -> None:
    write_settings(tmp_path, {"plugins": {"settings": {"mcp_servers": {"servers": {
        "calc": {"command": ["calc-server"]},
        "search": {"url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": {"$env": "SEARCH_AUTH"}}},
        "legacy": {"url": "http://127.0.0.1:9/sse"},
        "off": {"command": "x", "enabled": False},
        "bad": {"command": "x", "url": "http://127.0.0.1:9/mcp"},
    }}}}})
    proc = subprocess.run([OPCODE, "plugins"], env=opcode_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["state_from"] == "settings"
    row = next(r for r in out["plugins"] if r["name"] == "mcp_servers")
    assert row["status"] == "loaded"
    state = row["state"]
    assert state["calc"] == {"transport": "stdio", "state": "configured"}
    assert state["search"] == {"transport": "streamable_http", "state": "configured"}
    assert state["legacy"] == {"transport": "sse", "state": "configured"}
    assert state["off"] == {"state": "disabled"}
    assert state["bad"]["state"] == "failed" and "either `command`" in state["bad"]["error"]


# --- in process: a real runtime and a real external server ---------------------------------------------------


async def test_results_errors_and_validation(tmp_path: Path) -> None:
    pidfile = tmp_path / "calc.pids"
    calc = stdio(script(tmp_path, "calc_server.py", CALC_SERVER), pidfile)
    async with runtime_with(tmp_path / "home", {"calc": calc}) as rt:
        echo = await run_definition(rt, {"steps": [
            {"id": "plain", "action": "calc.echo", "params": {"text": "hello"}},
            {"id": "json", "action": "calc.echo", "params": {"text": '{"n": 1, "ok": true}'}},
        ]})
        assert echo["status"] == "completed", echo
        assert echo["steps"]["plain"]["output"] == {"result": "hello"}
        assert echo["steps"]["json"]["output"] == {"n": 1, "ok": True}

        fail_step = {"id": "f", "action": "calc.fail", "params": {"message": "boom"}}
        failed = await run_definition(rt, {"steps": [fail_step]})
        assert failed["status"] == "failed"
        assert failed["steps"]["f"]["error"]["code"] == EXECUTION_ERROR
        assert "boom" in failed["steps"]["f"]["error"]["message"]

        # The tool's input schema is the action's params schema, checked before the call.
        bad = await run_definition(rt, {"steps": [{"id": "b", "action": "calc.add", "params": {"a": "x", "b": 1}}]})
        assert bad["steps"]["b"]["error"]["code"] == VALIDATION_ERROR
        assert rt.registry.actions["calc.add"].plugin == "mcp_servers"
        assert "calc.add" in rt.report.plugins["mcp_servers"].actions
        assert len(pids(pidfile)) == 1
        child = pids(pidfile)[0]
        assert pid_alive(child)
    # Shut-down kills the child and takes the actions away.
    assert "calc.add" not in rt.registry.actions
    await until(lambda: not pid_alive(child), 15, "the stdio server to exit")


async def test_a_streamable_http_server(tmp_path: Path) -> None:
    port = free_port()
    pidfile = tmp_path / "http.pids"
    server = subprocess.Popen([sys.executable, str(script(tmp_path, "calc_server.py", CALC_SERVER)), str(pidfile),
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await until(lambda: _answers(f"http://127.0.0.1:{port}/mcp"), 20, "the HTTP server to listen")
        async with runtime_with(tmp_path / "home", {"remote": {"url": f"http://127.0.0.1:{port}/mcp"}}) as rt:
            assert states(rt)["remote"]["transport"] == "streamable_http"
            assert states(rt)["remote"]["state"] == "healthy"
            result = await run_definition(rt, {"steps": [{"id": "s", "action": "remote.add",
                                                          "params": {"a": 2, "b": 3}}]})
            assert result["status"] == "completed", result
            assert result["steps"]["s"]["output"] == {"sum": 5}
    finally:
        server.terminate()
        server.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


async def test_a_server_that_stops_answering_pings_is_restarted(tmp_path: Path) -> None:
    pidfile = tmp_path / "mute.pids"
    mute = stdio(script(tmp_path, "mute_server.py", MUTE_SERVER), pidfile)
    async with runtime_with(tmp_path / "home", {"mute": mute}, health_interval="0.2s", health_timeout="0.2s",
                            unhealthy_after=2, restart_delay="0.1s") as rt:
        assert "mute.nap" in rt.registry.actions
        seen: set[str] = set()

        def restarted() -> bool:
            seen.add(states(rt)["mute"]["state"])
            return len(pids(pidfile)) >= 2 and states(rt)["mute"]["restarts"] >= 1

        await until(restarted, 20, "the mute server to be restarted")
        assert "unhealthy" in seen
        first = pids(pidfile)[0]
        # The hung process was stopped, not left behind.
        await until(lambda: not pid_alive(first), 15, "the hung server to be killed")


async def test_a_server_that_cannot_start_does_not_stop_the_others(tmp_path: Path) -> None:
    pidfile = tmp_path / "calc.pids"
    calc_path = script(tmp_path, "calc_server.py", CALC_SERVER)
    servers = {
        "calc": stdio(calc_path, pidfile),
        "missing": {"command": [str(tmp_path / "nothing-here")]},
        "dotted.name": {"command": "x"},
        # Its `hash` tool would be crypto.hash, which the crypto plugin holds: this server fails, nothing else.
        "crypto": stdio(calc_path, tmp_path / "crypto.pids"),
    }
    async with runtime_with(tmp_path / "home", servers, restart_delay="10s") as rt:
        now = states(rt)
        assert now["calc"]["state"] == "healthy"
        assert now["missing"]["state"] == "down" and "nothing-here" in now["missing"]["error"]
        assert now["dotted.name"]["state"] == "failed" and "server name" in now["dotted.name"]["error"]
        assert now["crypto"]["state"] == "failed"
        assert "'crypto.hash' is registered by both plugin 'crypto' and plugin 'mcp_servers'" in now["crypto"]["error"]
        assert rt.registry.actions["crypto.hash"].plugin == "crypto"
        assert "crypto.add" not in rt.registry.actions
        result = await run_definition(rt, {"steps": [{"id": "s", "action": "calc.add", "params": {"a": 1, "b": 1}}]})
        assert result["status"] == "completed"
        missing = await run_definition(rt, {"steps": [{"id": "s", "action": "crypto.hash",
                                                       "params": {"data": "x"}}]})
        assert missing["status"] == "completed"  # still the built-in action


async def test_invalid_plugin_settings_fail_the_plugin_not_opcode(tmp_path: Path) -> None:
    async with runtime_with(tmp_path, [{"command": "x"}]) as rt:  # type: ignore[arg-type]
        info = rt.report.plugins["mcp_servers"]
        assert info.status == "failed" and "servers" in info.error
        result = await run_definition(rt, {"steps": [{"id": "s", "action": "workflow.log",
                                                      "params": {"message": "still here"}}]})
        assert result["status"] == "completed"


# --- units --------------------------------------------------------------------------------------------------


def test_settings_are_checked_per_server() -> None:
    servers, problems, disabled = parse_servers({
        "call_timeout": "5s",
        "servers": {
            "a": {"command": "npx", "args": ["-y", "pkg"], "env": {"TOKEN": "t", "UNSET": None}},
            "b": {"url": "https://example.com/sse", "call_timeout": 2},
            "c": {"url": "https://example.com/events", "type": "sse"},
            "d": {"command": "x", "headers": {"A": "b"}},
            "e": {"command": "x", "typo": 1},
            "f": {"url": "ftp://x"},
            "g": {"command": "x", "transport": "sse"},
            "h": {"command": "x", "enabled": False},
        },
    })
    by_name = {s.name: s for s in servers}
    assert by_name["a"].command == ("npx", "-y", "pkg") and by_name["a"].env == {"TOKEN": "t"}
    assert by_name["a"].transport == "stdio" and by_name["a"].call_timeout == 5.0
    assert by_name["b"].transport == "sse" and by_name["b"].call_timeout == 2.0
    assert by_name["c"].transport == "sse"
    assert set(problems) == {"d", "e", "f", "g"}
    assert "do(es) not apply" in problems["d"] and "typo" in problems["e"] and "needs `url`" in problems["g"]
    assert disabled == ["h"]


def test_the_docs_examples_match_the_code(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "mcp-servers.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", doc, re.S)]
    write_settings(tmp_path, blocks[0])
    config = load_settings({"OPCODE_HOME": str(tmp_path)}).plugin_config("mcp_servers")
    check_settings(config)
    servers, problems, _ = parse_servers(config)
    assert problems == {}
    assert {s.name: s.transport for s in servers} == {"github": "stdio", "search": "streamable_http", "legacy": "sse"}
    health = blocks[-1]
    snapshot = ServerConnection(servers[0], lambda conn, tools: None).snapshot()
    assert all(set(entry) == set(snapshot) for entry in health.values())


def test_restart_backoff_is_exponential_and_capped() -> None:
    conn = ServerConnection(ServerConfig(name="x", transport="stdio", command=("x",), restart_delay=1.0,
                                         restart_max_delay=5.0), lambda conn, tools: None)
    delays = []
    for _ in range(5):
        conn._schedule_restart()
        delays.append(round(conn.retry_at - time.monotonic()))
    assert delays == [1, 2, 4, 5, 5]
    assert conn.state == "down"


def test_tool_results_become_outputs() -> None:
    text = types.TextContent(type="text", text="plain words")
    image = types.ImageContent(type="image", data="aGk=", mime_type="image/png")
    assert tool_output(types.CallToolResult(content=[text], structured_content={"k": 1})) == {"k": 1}
    assert tool_output(types.CallToolResult(content=[types.TextContent(type="text", text='{"a": [1]}')])) == {"a": [1]}
    assert tool_output(types.CallToolResult(content=[types.TextContent(type="text", text="7")])) == {"result": 7}
    assert tool_output(types.CallToolResult(content=[text])) == {"result": "plain words"}
    assert tool_output(types.CallToolResult(content=[])) == {"result": None}
    mixed = tool_output(types.CallToolResult(content=[text, image]))
    assert mixed == {"result": "plain words", "content": [{"type": "image", "data": "aGk=", "mimeType": "image/png"}]}


def _spec(name: str) -> ActionSpec:
    async def execute(params: dict[str, Any], ctx: Any) -> dict[str, Any]:
        return {}

    return ActionSpec(name, "d", {"type": "object"}, execute)


def test_registry_adds_actions_all_or_none_and_removes_only_its_own() -> None:
    registry = Registry({"http.get": _spec("http.get")}, {})
    registry.actions["http.get"] = ActionSpec("http.get", "d", {"type": "object"}, _spec("x").execute, plugin="http")
    with pytest.raises(DuplicateNameError, match="both plugin 'http' and plugin 'mcp_servers'"):
        registry.add_actions("mcp_servers", [_spec("http.post"), _spec("http.get")])
    assert "http.post" not in registry.actions
    registry.add_actions("mcp_servers", [_spec("gh.create_issue")])
    assert registry.action("gh.create_issue").plugin == "mcp_servers"
    registry.remove_actions("mcp_servers", ["gh.create_issue", "http.get"])
    assert "http.get" in registry.actions
    with pytest.raises(OpcodeError) as err:
        registry.action("gh.create_issue")
    assert err.value.code == ACTION_UNAVAILABLE
