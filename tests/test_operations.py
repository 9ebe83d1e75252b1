"""Operations with real processes: install and reload, the pidfile, SIGTERM mid-run, a busy port, and the
operator commands (validate, define, workflows, status, signal) with a server running and with none."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import pytest
from mcp import MCPError

from opcode_server.process import pid_alive
from tests.conftest import OPCODE, free_port, opcode_env, start_server, stop_server
from tests.durability.test_recovery import wait_for, wait_status
from tests.test_mcp_e2e import call, connect

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

GATE = {
    "name": "gate",
    "description": "Ask, then log the choice.",
    "category": "test",  # the original's example files carry keys opcode.define does not take
    "definition": {
        "steps": [
            {"id": "ask", "type": "reasoning",
             "config": {"prompt_context": "ship it?", "options": [{"id": "yes"}, {"id": "no"}]}},
            {"id": "after", "action": "workflow.log", "depends_on": ["ask"],
             "params": {"message": "chose ${{steps.ask.output.choice}}"}},
        ]
    },
}


def ops_env(home: Path, **extra: str) -> dict[str, str]:
    """The test environment, minus OPCODE_LOG_LEVEL so that settings.json decides the level."""
    env = opcode_env(home, **extra)
    env.pop("OPCODE_LOG_LEVEL")
    return env


def opcode(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    """Run an `opcode` command to its end; stdout parsed as JSON when it is JSON."""
    proc = subprocess.run([OPCODE, *args], env=env or ops_env(home), capture_output=True, text=True,
                          timeout=timeout)
    try:
        proc.json = json.loads(proc.stdout)
    except json.JSONDecodeError:
        proc.json = None
    return proc


def wait_gone(pid: int, seconds: float) -> float:
    """Wait until a process (not necessarily our child) is gone; return how long it took."""
    start = time.monotonic()
    while pid_alive(pid):
        if time.monotonic() - start > seconds:
            raise AssertionError(f"pid {pid} still alive after {seconds}s")
        time.sleep(0.05)
    return time.monotonic() - start


def log_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a server log, each of which must be a JSON object."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh OPCODE_HOME; any server `opcode install` left running there is stopped afterwards."""
    path = tmp_path / "home"
    path.mkdir()
    yield path
    pidfile = path / "opcode.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().split()[0])
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 10)


def session_target(base_url: str) -> Any:
    """What tests.test_mcp_e2e.connect needs to reach a server."""
    return SimpleNamespace(sse_url=f"{base_url}/sse", mcp_url=f"{base_url}/mcp")


LOUD = {
    "steps": [{"id": "say", "action": "workflow.log", "params": {"message": "psst", "level": "debug"}}]
}


async def run_loud(base_url: str) -> str:
    async with connect(session_target(base_url), "streamable_http") as session:
        await call(session, "opcode.define", {"name": "loud", "definition": LOUD, "agent_id": "ops"})
        run = await call(session, "opcode.run", {"template_name": "loud", "agent_id": "ops"})
    assert run["status"] == "completed", run
    return run["workflow_id"]


async def test_install_starts_reloads_on_sighup_and_sigterm_removes_the_pidfile(home: Path) -> None:
    port = free_port()
    first = opcode(home, "install", "--listen-addr", f"127.0.0.1:{port}", "--log-level", "info", "--pool-size", "4")
    assert first.returncode == 0, first.stderr
    assert json.loads((home / "settings.json").read_text()) == {
        "listen_addr": f"127.0.0.1:{port}", "log_level": "info", "pool_size": 4}
    server = first.json["server"]
    assert server["action"] == "started" and server["url"] == f"http://127.0.0.1:{port}"
    pid = server["pid"]
    assert (home / "opcode.pid").read_text().split() == [str(pid), server["url"]]
    health = httpx.get(f"{server['url']}/health", timeout=5)
    assert health.status_code == 200 and health.json()["pid"] == pid
    log = home / "opcode.log"

    quiet_run = await run_loud(server["url"])
    assert not [line for line in log_lines(log) if line["level"] == "debug"]
    assert httpx.get(f"{server['url']}/", timeout=5).status_code == 200  # the panel, on by default on loopback

    second = opcode(home, "install", "--log-level", "debug", "--pool-size", "6", "--no-panel")
    assert second.returncode == 0, second.stderr
    assert second.json["server"] == {"action": "reloaded", "pid": pid, "url": server["url"],
                                     "applied": ["log_level", "panel"], "restart_needed": ["pool_size"]}
    assert json.loads((home / "settings.json").read_text())["log_level"] == "debug"  # merged, not replaced
    assert json.loads((home / "settings.json").read_text())["listen_addr"] == f"127.0.0.1:{port}"
    await wait_for(lambda: any(line["message"] == "settings reloaded" for line in log_lines(log)), 10)
    reloaded = next(line for line in log_lines(log) if line["message"] == "settings reloaded")
    assert reloaded["data"] == {"applied": ["log_level", "panel"], "restart_needed": ["pool_size"]}
    assert "pool_size" in next(line["message"] for line in log_lines(log) if line["level"] == "warning")
    assert httpx.get(f"{server['url']}/", timeout=5).status_code == 404

    loud_run = await run_loud(server["url"])
    said = [line for line in log_lines(log) if line["message"] == "psst"]
    assert [line["workflow_id"] for line in said] == [loud_run] and loud_run != quiet_run
    assert said[0]["level"] == "debug" and said[0]["step_id"] == "say" and said[0]["agent_id"] == "ops"
    assert any(line["logger"].startswith("uvicorn") for line in log_lines(log))  # uvicorn's lines are JSON too

    # A new port applies only after a restart; meanwhile the commands still find the server (pidfile).
    port2 = free_port()
    moved = opcode(home, "install", "--listen-addr", f"127.0.0.1:{port2}")
    assert moved.json["server"]["restart_needed"] == ["listen_addr"], moved.stderr
    assert "listen_addr apply after a restart" in moved.stderr
    assert opcode(home, "workflows").json["workflows"][0]["workflow_id"] == loud_run
    restarted = opcode(home, "install", "--restart")
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.json["server"]["action"] == "started"
    assert restarted.json["server"]["url"] == f"http://127.0.0.1:{port2}"
    assert not pid_alive(pid)
    assert any(line["message"] == f"Finished server process [{pid}]" for line in log_lines(log))

    pid = restarted.json["server"]["pid"]
    # A broken file (edited by hand) is reported on SIGHUP and changes nothing.
    (home / "settings.json").write_text(json.dumps({"listen_addr": f"127.0.0.1:{port2}", "pool_size": 0}))
    os.kill(pid, signal.SIGHUP)
    await wait_for(lambda: any(line["message"].startswith("settings not reloaded") and "pool_size" in line["message"]
                               for line in log_lines(log)), 10)
    assert httpx.get(f"{restarted.json['server']['url']}/health", timeout=5).json()["pid"] == pid

    os.kill(pid, signal.SIGTERM)
    assert wait_gone(pid, 10) < 10
    assert not (home / "opcode.pid").exists()


def test_install_refuses_an_invalid_setting_and_writes_nothing(home: Path) -> None:
    (home / "settings.json").write_text(json.dumps({"pool_size": 3, "vault_key": "oops"}))
    bad = opcode(home, "install", "--listen-addr", "nowhere")
    assert bad.returncode == 1
    assert "settings.json not written" in bad.stderr and "listen_addr" in bad.stderr
    assert json.loads((home / "settings.json").read_text()) == {"pool_size": 3, "vault_key": "oops"}

    ok = opcode(home, "install", "--recovery", "auto", "--no-start")
    assert ok.returncode == 0, ok.stderr
    assert "vault key is never stored" in ok.stderr
    assert json.loads((home / "settings.json").read_text()) == {"pool_size": 3, "recovery": "auto"}
    assert not (home / "opcode.pid").exists()


def sleepy(work: Path) -> dict[str, Any]:
    """Three shell steps; the second sleeps 30 s the first time only, and records its sleep's pid."""
    once = f"if [ ! -f {work}/slept ]; then touch {work}/slept; sleep 30 & echo $! > {work}/sleeper; wait; fi"
    steps = []
    for n, script in enumerate([f"echo 1 >> {work}/runs", f"echo 2 >> {work}/runs; {once}",
                                f"echo 3 >> {work}/runs"], start=1):
        step = {"id": f"s{n}", "action": "shell.exec", "params": {"command": "sh", "args": ["-c", script]}}
        if n > 1:
            step["depends_on"] = [f"s{n - 1}"]
        steps.append(step)
    return {"steps": steps}


async def test_sigterm_during_a_run_stops_within_10s_and_leaves_the_run_resumable(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    proc = start_server(home)
    released: list[BaseException] = []
    try:
        with anyio.fail_after(30):
            # One agent waits on the run over Streamable HTTP, another stays connected over SSE: neither may
            # hold the stop up, and the waiting one is released (its stream ends) rather than left hanging.
            async with connect(proc, "streamable_http") as session, connect(proc, "sse") as watcher:
                await call(session, "opcode.define", {"name": "sleepy", "definition": sleepy(work), "agent_id": "ops"})

                async def run_and_wait() -> None:
                    try:
                        await session.call_tool("opcode.run", {"template_name": "sleepy", "agent_id": "ops"})
                    except MCPError as exc:
                        released.append(exc)

                async with anyio.create_task_group() as group:
                    group.start_soon(run_and_wait)
                    await wait_for(lambda: (work / "sleeper").exists())
                    assert (home / "opcode.pid").read_text().split() == [str(proc.process.pid), proc.base_url]
                    active = await call(watcher, "opcode.query",
                                        {"resource": "workflows", "filter": {"status": "active"}})
                    started = time.monotonic()
                    proc.process.send_signal(signal.SIGTERM)
                    await anyio.to_thread.run_sync(lambda: proc.process.wait(timeout=12))
                    took = time.monotonic() - started
    finally:
        stop_server(proc.process)
    assert took < 10, took
    assert len(released) == 1
    (run,) = active["workflows"]
    assert not (home / "opcode.pid").exists()
    sleeper = int((work / "sleeper").read_text())
    await wait_for(lambda: not pid_alive(sleeper), 5)  # the step's process group went with the run
    assert "interrupted 1 workflow(s)" in proc.log()

    proc = start_server(home)
    try:
        wid = run["workflow_id"]
        state = await wait_status(proc, wid, "suspended")
        assert "workflow_interrupted" in [e["event_type"] for e in state["events"]]
        async with connect(proc, "streamable_http") as session:
            answer = await call(session, "opcode.signal",
                                {"workflow_id": wid, "signal_type": "resume", "payload": {}, "agent_id": "ops"})
        assert answer["status"] == "completed", answer
    finally:
        stop_server(proc.process)
    assert (work / "runs").read_text().split() == ["1", "2", "2", "3"]  # s1 once, the interrupted s2 again


def test_a_second_server_on_a_busy_port_says_so_plainly(tmp_path: Path) -> None:
    proc = start_server(tmp_path / "one")
    try:
        addr = proc.base_url.removeprefix("http://")
        other = subprocess.run([OPCODE, "serve"], env=opcode_env(tmp_path / "two", OPCODE_LISTEN_ADDR=addr),
                               capture_output=True, text=True, timeout=30)
        assert other.returncode == 1
        assert other.stderr.strip().splitlines()[-1] == f"error: {addr} is already in use (another opcode serve?)"
        assert "Traceback" not in other.stderr
        same_home = subprocess.run([OPCODE, "serve"], env=opcode_env(tmp_path / "one", OPCODE_LISTEN_ADDR=addr),
                                   capture_output=True, text=True, timeout=30)
        assert same_home.returncode == 1
        assert f"error: opcode is already running from {tmp_path / 'one'} (pid {proc.process.pid}" in same_home.stderr
        assert proc.process.poll() is None and (tmp_path / "one" / "opcode.pid").exists()
    finally:
        stop_server(proc.process)


def test_a_stale_pidfile_is_replaced(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (home / "opcode.pid").write_text(f"{dead.pid}\n")
    proc = start_server(home)
    try:
        assert (home / "opcode.pid").read_text().split() == [str(proc.process.pid), proc.base_url]
    finally:
        stop_server(proc.process)
    assert not (home / "opcode.pid").exists()


def test_validate_a_good_and_a_bad_file(tmp_path: Path) -> None:
    good = opcode(tmp_path, "validate", str(ROOT / "examples" / "hello.json"))
    assert (good.returncode, good.stdout) == (0, "valid\n")
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(GATE["definition"]))
    assert opcode(tmp_path, "validate", str(bare)).stdout == "valid\n"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "definition": {"steps": [
        {"id": "a", "action": "no.such"},
        {"id": "b", "action": "workflow.log", "depends_on": ["zz"], "params": {"message": "x"}, "timeout": "soon"},
    ]}}))
    result = opcode(tmp_path, "validate", str(bad))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"invalid: {bad} [VALIDATION_ERROR]"
    assert any(line.startswith("  definition.steps[0].action: ") and "no.such" in line for line in lines)
    assert any(line.startswith("  definition.steps[1].depends_on[0]: ") for line in lines)
    assert any(line.startswith("  definition.steps[1].timeout: ") for line in lines)

    cycle = tmp_path / "cycle.json"
    cycle.write_text(json.dumps({"steps": [{"id": "a", "action": "crypto.uuid", "depends_on": ["b"]},
                                           {"id": "b", "action": "crypto.uuid", "depends_on": ["a"]}]}))
    looped = opcode(tmp_path, "validate", str(cycle))
    assert looped.returncode == 1 and "[CYCLE_DETECTED]" in looped.stdout


@pytest.mark.parametrize("with_server", [True, False], ids=["server", "embedded"])
async def test_define_workflows_status_signal(tmp_path: Path, with_server: bool) -> None:
    home = tmp_path / "home"
    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps(GATE))
    proc = start_server(home) if with_server else None
    env = opcode_env(home, **({"OPCODE_LISTEN_ADDR": proc.base_url.removeprefix("http://")} if proc else {}))
    try:
        assert opcode(home, "define", str(gate), env=env).json == {"name": "gate", "version": "v1"}
        assert opcode(home, "define", str(gate), "--agent-id", "ops", env=env).json == {"name": "gate", "version": "v2"}
        if proc:
            async with connect(proc, "streamable_http") as session:
                run = await call(session, "opcode.run", {"template_name": "gate", "agent_id": "ops"})
                templates = await call(session, "opcode.query", {"resource": "templates", "filter": {"name": "gate"}})
            assert {t["version"] for t in templates["templates"]} == {"v1", "v2"}  # in the server's DB
        else:
            run = opcode(home, "run", str(gate), "-q", "--agent-id", "ops", env=env).json
        wid = run["workflow_id"]
        assert run["status"] == "suspended"

        listed = opcode(home, "workflows", "--status", "suspended", "--agent-id", "ops", env=env)
        assert listed.returncode == 0, listed.stderr
        assert [w["workflow_id"] for w in listed.json["workflows"]] == [wid]
        assert opcode(home, "workflows", "--agent-id", "nobody", env=env).json == {"workflows": []}

        status = opcode(home, "status", wid, env=env).json
        assert status["status"] == "suspended"
        assert [d["step_id"] for d in status["pending_decisions"]] == ["ask"]

        wrong = opcode(home, "signal", wid, "decision", "--payload", '{"choice": "maybe"}', env=env)
        assert wrong.returncode == 1 and wrong.json["error"]["code"] == "VALIDATION_ERROR"
        assert "error: [VALIDATION_ERROR]" in wrong.stderr

        answer = opcode(home, "signal", wid, "decision", "--payload", '{"choice": "yes"}', "--reasoning", "fine",
                        env=env)
        assert answer.returncode == 0, answer.stderr
        assert answer.json["status"] == "completed" and answer.json["choice"] == "yes"
        assert opcode(home, "status", wid, env=env).json["steps"]["after"]["output"]["message"] == "chose yes"
        missing = opcode(home, "status", "no-such-run", env=env)
        assert missing.returncode == 1 and missing.json["error"]["code"] == "NOT_FOUND"
        if proc:
            # The decision resumed the run inside the server: its step logged there, with its ids bound.
            said = [json.loads(line) for line in proc.log().splitlines() if '"chose yes"' in line]
            assert [(s["workflow_id"], s["step_id"], s["agent_id"]) for s in said] == [(wid, "after", "ops")]
    finally:
        if proc:
            stop_server(proc.process)


async def test_embedded_signal_never_takes_over_a_run_left_active(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    flow = tmp_path / "sleepy.json"
    flow.write_text(json.dumps(sleepy(work)))
    crashed = subprocess.Popen([OPCODE, "run", str(flow), "-q"], env=opcode_env(home),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_for(lambda: (work / "sleeper").exists())
    finally:
        crashed.kill()
        crashed.wait(timeout=10)
    os.kill(int((work / "sleeper").read_text()), signal.SIGKILL)
    (wid,) = [w["workflow_id"] for w in opcode(home, "workflows", "--status", "active").json["workflows"]]
    refused = opcode(home, "signal", wid, "resume")
    assert refused.returncode == 1 and refused.json["error"]["code"] == "CONFLICT"
    assert "only `opcode serve` recovers it" in refused.json["error"]["message"]
    state = opcode(home, "status", wid).json
    assert state["status"] == "active"
    assert "workflow_interrupted" not in [e["event_type"] for e in state["events"]]


async def test_underscore_tool_names_only_when_the_setting_is_on(tmp_path: Path) -> None:
    names = ("define", "run", "status", "signal", "query", "diagram")
    for setting, expected in (("0", set()), ("1", {f"opcode_{n}" for n in names})):
        proc = start_server(tmp_path / f"home-{setting}", OPCODE_UNDERSCORE_TOOLS=setting)
        try:
            async with connect(proc, "streamable_http") as session:
                listed = {t.name for t in (await session.list_tools()).tools}
                assert {f"opcode.{n}" for n in names} <= listed
                assert {n for n in listed if n.startswith("opcode_")} == expected
                args = {"resource": "actions", "filter": {"name": "crypto.uuid"}}
                if expected:
                    aliased = await call(session, "opcode_query", args)
                    assert aliased == await call(session, "opcode.query", args)
                else:
                    with pytest.raises(MCPError) as info:
                        await session.call_tool("opcode_query", args)
                    assert info.value.error.code == -32602
        finally:
            stop_server(proc.process)
