"""Shared fixtures: a real `opcode serve` process on 127.0.0.1 with its own home and SQLite file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

OPCODE = str(Path(sys.executable).with_name("opcode"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def opcode_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment for an opcode subprocess with its own home; third-party plugins off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPCODE_")}
    env.update({"OPCODE_HOME": str(home), "OPCODE_LOAD_PLUGINS": "", "OPCODE_LOG_LEVEL": "info"})
    env.update(extra)
    return env


@dataclass
class ServerProcess:
    """A running `opcode serve` and where to reach it."""

    process: subprocess.Popen[bytes]
    base_url: str
    home: Path
    log_path: Path

    @property
    def sse_url(self) -> str:
        """The legacy SSE endpoint."""
        return f"{self.base_url}/sse"

    @property
    def mcp_url(self) -> str:
        """The Streamable HTTP endpoint."""
        return f"{self.base_url}/mcp"

    def log(self) -> str:
        """What the server wrote to stderr so far."""
        return self.log_path.read_text(errors="replace")


def start_server(home: Path, **env: str) -> ServerProcess:
    """Start `opcode serve` and wait until /health answers."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "server.log"
    process = subprocess.Popen(
        [OPCODE, "serve"],
        env=opcode_env(home, OPCODE_LISTEN_ADDR=f"127.0.0.1:{port}", **env),
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("wb"),
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"opcode serve exited with {process.returncode}: {log_path.read_text()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return ServerProcess(process, base, home, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_server(process)
    raise RuntimeError(f"opcode serve did not become healthy: {log_path.read_text()}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop a server we started, by its PID."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real server per test module."""
    proc = start_server(tmp_path_factory.mktemp("opcode-home"))
    try:
        yield proc
    finally:
        stop_server(proc.process)


def write_settings(home: Path, settings: dict) -> None:
    """Write `$OPCODE_HOME/settings.json`."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "settings.json").write_text(json.dumps(settings))


@pytest.fixture
async def runtime(tmp_path: Path):
    """A real runtime on a fresh SQLite file, built-in plugins only."""
    from opcode_core.runtime import Runtime
    from opcode_core.settings import load_settings

    settings = load_settings({"OPCODE_HOME": str(tmp_path), "OPCODE_LOAD_PLUGINS": ""})
    rt = Runtime(settings)
    async with rt.running():
        yield rt


async def run_definition(rt, definition: dict, params: dict | None = None, *, wait: bool = True,
                         agent_id: str = "tester") -> dict:
    """Define a template from `definition` and run it through the service functions."""
    import uuid

    from opcode_core import service

    name = f"t-{uuid.uuid4().hex[:8]}"
    await service.define_template(rt, name=name, definition=definition, agent_id=agent_id)
    return await service.run_workflow(rt, template_name=name, agent_id=agent_id, params=params or {}, wait=wait)


def log(step_id: str, message: str = "x", **extra) -> dict:
    """A workflow.log step."""
    return {"id": step_id, "action": "workflow.log", "params": {"message": message}, **extra}
