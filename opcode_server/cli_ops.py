"""Operator commands: install, validate, define, workflows, status, signal, mcp-stdio.

The commands that read or change runs talk to the running server of this home over MCP when there is
one (pidfile + /health), and otherwise work on the embedded store in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import click

from opcode_core.errors import CONFLICT, ConfigError, OpcodeError
from opcode_core.settings import LOG_LEVELS, RECOVERY_MODES, Settings, load_settings, read_settings_file
from opcode_server import process
from opcode_server.cli_common import cli_settings

ToolCall = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
START_TIMEOUT_S = 30.0
# The keys of a template file besides its definition, as the original's examples write them.
TEMPLATE_KEYS = ("description", "input_schema", "output_schema", "triggers")


class ToolFailed(Exception):
    """A tool answered with an error: its `[CODE] message` text and structured error."""

    def __init__(self, text: str, structured: dict[str, Any] | None) -> None:
        super().__init__(text)
        self.structured = structured or {"error": {"message": text}}


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


# --- reaching the server, or the embedded store -------------------------------------------------


async def embedded_signal(rt: Any, **arguments: Any) -> dict[str, Any]:
    """opcode.signal without a server: never takes over a run another process executes or a crash left active."""
    from opcode_core import service

    wf = await rt.db(rt.store.get_workflow, arguments["workflow_id"])
    if wf is not None and wf["status"] == "active" and wf["id"] not in rt.runs:
        raise OpcodeError(
            CONFLICT,
            f"workflow {wf['id']} is active in another process, or a crash interrupted it; "
            "only `opcode serve` recovers it (start the server, then signal it)",
        )
    return await service.send_signal(rt, **arguments)


# Handlers that replace the server's own when tools run on the embedded store (CLI, stdio bridge).
EMBEDDED_HANDLERS = {"opcode.signal": embedded_signal}


@contextlib.asynccontextmanager
async def remote_tools(url: str) -> AsyncIterator[ToolCall]:
    """Call the tools of the server at `url` with the official client over Streamable HTTP."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(f"{url}/mcp") as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        async def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
            result = await session.call_tool(name, arguments)
            if result.is_error:
                text = result.content[0].text if result.content else "tool error"
                raise ToolFailed(text, result.structured_content)
            return result.structured_content or {}

        yield call


@contextlib.asynccontextmanager
async def embedded_tools(settings: Settings) -> AsyncIterator[ToolCall]:
    """Call the same tool handlers in this process on the configured store (never recovering runs)."""
    from opcode_core.runtime import Runtime
    from opcode_server.mcp_tools import HANDLERS, check_arguments

    settings.home.mkdir(parents=True, exist_ok=True)
    runtime = Runtime(settings)
    handlers = {**HANDLERS, **EMBEDDED_HANDLERS}
    async with runtime.running():

        async def call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
            try:
                check_arguments(name, arguments)
                return await handlers[name](runtime, **arguments)
            except OpcodeError as exc:
                raise ToolFailed(str(exc), {"error": exc.to_dict()}) from None

        yield call


def call_tool(settings: Settings, name: str, arguments: dict[str, Any]) -> None:
    """Call one tool on the running server, or on the embedded store; print the JSON, exit 1 on a tool error."""
    try:
        url = process.running_server(settings)
    except process.ProcessError as exc:
        _fail(str(exc))
        return

    async def go() -> dict[str, Any] | ToolFailed:
        tools = remote_tools(url) if url else embedded_tools(settings)
        async with tools as call:
            try:
                return await call(name, arguments)
            except ToolFailed as exc:
                return exc  # returned, not raised: task groups would wrap it in an exception group

    from opcode_core.logs import configure_logging

    configure_logging("warning")
    try:
        answer = asyncio.run(go())
    except ConfigError as exc:
        _fail(str(exc))
        return
    if isinstance(answer, ToolFailed):
        _echo_json(answer.structured)
        _fail(str(answer))
    _echo_json(answer)


# --- install -------------------------------------------------------------------------------------


def _csv(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _plugin_setting(text: str) -> tuple[str, str, Any]:
    target, sep, raw = text.partition("=")
    name, dot, key = target.partition(".")
    if not sep or not dot or not name or not key:
        raise click.BadParameter(f"{text!r} is not PLUGIN.KEY=VALUE", param_hint="--plugin-setting")
    try:
        return name, key, json.loads(raw)
    except json.JSONDecodeError:
        return name, key, raw


# (setting, option, click type, help); every one is written only when given.
_INSTALL_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("listen_addr", "--listen-addr", str, "host:port to serve on (default 127.0.0.1:4100)."),
    ("base_url", "--base-url", str, "URL the panel and logs show."),
    ("db_path", "--db-path", str, "SQLite database file (drops db_url)."),
    ("db_url", "--db-url", str, "postgresql:// URL (drops db_path)."),
    ("log_level", "--log-level", click.Choice(LOG_LEVELS), "Log level."),
    ("pool_size", "--pool-size", int, "Concurrent leaf actions."),
    ("recovery", "--recovery", click.Choice(RECOVERY_MODES), "What start-up does with interrupted runs."),
    ("max_recovery_attempts", "--max-recovery-attempts", int, "Crashes a run may cause before it is failed."),
    ("breaker_threshold", "--breaker-threshold", int, "Consecutive failures that open an action's breaker."),
    ("breaker_reset_s", "--breaker-reset", str, "How long a breaker stays open, e.g. 30s."),
]
_INSTALL_LISTS = [
    ("allowed_hosts", "--allowed-hosts", "Host header patterns, comma-separated."),
    ("allowed_origins", "--allowed-origins", "Origin header values, comma-separated."),
]
_INSTALL_FLAGS = [
    ("panel", "--panel/--no-panel", "Serve the web panel."),
    ("underscore_tool_names", "--underscore-tools/--no-underscore-tools",
     "Also list the tools as opcode_define, opcode_run, ... for MCP clients that refuse dots."),
]


def _install_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for name, decl, kind, help_text in reversed(_INSTALL_OPTIONS):
        fn = click.option(decl, name, type=kind, default=None, help=help_text)(fn)
    for name, decl, help_text in reversed(_INSTALL_LISTS):
        fn = click.option(decl, name, default=None, callback=_csv, help=help_text)(fn)
    for name, decl, help_text in reversed(_INSTALL_FLAGS):
        fn = click.option(decl, name, default=None, help=help_text)(fn)
    return fn


def merge_settings(current: dict[str, Any], given: dict[str, Any], plugins_allow: list[str] | None,
                   plugins_deny: list[str] | None, plugin_settings: tuple[str, ...],
                   unset: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    """The settings file with the given values merged in; and notes on what was dropped."""
    merged = json.loads(json.dumps(current))
    notes = []
    if merged.pop("vault_key", None) is not None:
        notes.append("removed vault_key: the vault key is never stored (use OPCODE_VAULT_KEY)")
    for name in unset:
        merged.pop(name, None)
    for name, value in given.items():
        merged[name] = value
    # db_path and db_url are one choice: the one given replaces the other.
    for chosen, other in (("db_path", "db_url"), ("db_url", "db_path")):
        if chosen in given and merged.pop(other, None) is not None:
            notes.append(f"removed {other}: {chosen} replaces it")
    if plugins_allow is None and plugins_deny is None and not plugin_settings:
        return merged, notes
    plugins = merged.setdefault("plugins", {})
    if plugins_allow is not None:
        plugins["allow"] = plugins_allow or None
    if plugins_deny is not None:
        plugins["deny"] = plugins_deny
    for name, key, value in map(_plugin_setting, plugin_settings):
        plugins.setdefault("settings", {}).setdefault(name, {})[key] = value
    return merged, notes


def validate_settings_data(data: dict[str, Any]) -> None:
    """Check a would-be settings.json with the settings loader itself (no environment overrides)."""
    with tempfile.TemporaryDirectory() as scratch:
        Path(scratch, "settings.json").write_text(json.dumps(data))
        load_settings(env={}, home=scratch)


def write_settings_file(path: Path, data: dict[str, Any]) -> None:
    """Replace settings.json atomically, readable by its owner only (plugin settings may hold secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _opcode_command() -> list[str]:
    """How to start this same opcode (the console script when we run as one)."""
    script = Path(sys.argv[0])
    if script.name == "opcode" and script.is_file():
        return [str(script.absolute())]
    found = shutil.which("opcode")
    if found:
        return [found]
    return [sys.executable, "-c", "import sys; from opcode_server.cli import main; sys.argv[0] = 'opcode'; main()"]


def start_detached(settings: Settings) -> dict[str, Any]:
    """Start `opcode serve` in the background, logging to $OPCODE_HOME/opcode.log; wait until /health answers."""
    import httpx

    log_path = settings.home / process.LOGFILE
    with log_path.open("ab") as log_file:
        child = subprocess.Popen(
            [*_opcode_command(), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            # Its own session: closing the terminal that ran `opcode install` must not stop the server.
            start_new_session=True,
        )
    url = process.server_url(settings)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-10:]
            raise process.ProcessError(f"opcode serve exited with {child.returncode}:\n" + "\n".join(tail))
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if httpx.get(f"{url}/health", timeout=1).json().get("pid") == child.pid:
                return {"action": "started", "pid": child.pid, "url": url, "log": str(log_path)}
        time.sleep(0.1)
    raise process.ProcessError(f"opcode serve (pid {child.pid}) did not answer at {url}/health "
                               f"within {START_TIMEOUT_S:.0f}s; see {log_path}")


def stop_server(pid: int, timeout_s: float = process.STOP_BUDGET_S + 5) -> None:
    """SIGTERM the server and wait until it is gone."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while process.pid_alive(pid):
        if time.monotonic() > deadline:
            raise process.ProcessError(f"opcode serve (pid {pid}) did not stop within {timeout_s:.0f}s")
        time.sleep(0.1)


@click.command()
@_install_options
@click.option("--plugins-allow", callback=_csv, help="Plugins to load, comma-separated ('' for every installed).")
@click.option("--plugins-deny", callback=_csv, help="Plugins never to load, comma-separated.")
@click.option("--plugin-setting", "plugin_settings", multiple=True, metavar="PLUGIN.KEY=VALUE",
              help="A plugin's setting (VALUE parsed as JSON when it is JSON); repeatable.")
@click.option("--unset", multiple=True, metavar="SETTING", help="Remove a setting from the file; repeatable.")
@click.option("--restart", is_flag=True, help="Restart a running server instead of reloading it.")
@click.option("--no-start", is_flag=True, help="Only write settings.json.")
def install(plugins_allow: list[str] | None, plugins_deny: list[str] | None, plugin_settings: tuple[str, ...],
            unset: tuple[str, ...], restart: bool, no_start: bool, **given: Any) -> None:
    """Write $OPCODE_HOME/settings.json, then start the server in the background or reload the running one."""
    home = Path(os.environ.get("OPCODE_HOME") or "~/.opcode").expanduser()
    path = home / "settings.json"
    try:
        current = read_settings_file(path)
        data, notes = merge_settings(current, {k: v for k, v in given.items() if v is not None},
                                     plugins_allow, plugins_deny, plugin_settings, unset)
        validate_settings_data(data)
    except (ConfigError, click.BadParameter) as exc:
        _fail(f"settings.json not written: {exc}")
        return
    try:
        before: Settings | None = load_settings()
    except ConfigError:
        before = None  # install is how a broken settings.json gets mended
    for note in notes:
        click.echo(f"note: {note}", err=True)
    write_settings_file(path, data)
    out: dict[str, Any] = {"settings": str(path), "written": data}
    try:
        after = load_settings()
        # Only a pid /health confirms gets a signal: a recycled pid must never get one.
        url = process.running_server(after)
        pid = process.read_pid(home) if url else None
        if no_start:
            out["server"] = {"action": "none", "pid": pid}
        elif pid is not None and not restart:
            os.kill(pid, signal.SIGHUP)
            applied, needs_restart = process.classify_changes(before or after, after)
            out["server"] = {"action": "reloaded", "pid": pid, "url": url,
                             "applied": applied, "restart_needed": needs_restart}
            if needs_restart:
                click.echo(f"note: {', '.join(needs_restart)} apply after a restart "
                           "(opcode install --restart)", err=True)
        else:
            if pid is not None:
                stop_server(pid)
            out["server"] = start_detached(after)
    except (ConfigError, process.ProcessError) as exc:
        _echo_json(out)
        _fail(str(exc))
    _echo_json(out)


# --- templates kept in files ---------------------------------------------------------------------


def read_template_file(path: Path, name: str | None) -> dict[str, Any]:
    """A file holding a bare definition, or `{name, description, input_schema, definition, ...}`."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise click.ClickException(f"{path}: not valid JSON: {exc}") from None
    if isinstance(doc, dict) and "definition" in doc:
        template = {k: doc[k] for k in TEMPLATE_KEYS if doc.get(k) is not None}
        template["definition"] = doc["definition"]
        template["name"] = name or doc.get("name") or path.stem
    else:
        template = {"name": name or path.stem, "definition": doc}
    return template


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(file: Path) -> None:
    """Check a workflow file as opcode.define would; print "valid", or each problem with its path (exit 1)."""
    from opcode_core import service
    from opcode_core.logs import configure_logging
    from opcode_core.runtime import Runtime

    configure_logging("warning")
    template = read_template_file(file, None)
    runtime = Runtime(cli_settings())
    try:
        runtime.load_plugins()
        asyncio.run(service.define_template(runtime, agent_id="cli", validate_only=True, **template))
    except ConfigError as exc:
        _fail(str(exc))
    except OpcodeError as exc:
        details = exc.details if isinstance(exc.details, dict) else {}
        problems = details.get("problems") or [{"path": "definition", "message": exc.message}]
        click.echo(f"invalid: {file} [{exc.code}]")
        for problem in problems:
            click.echo(f"  {problem.get('path', 'definition')}: {problem.get('message')}")
        sys.exit(1)
    click.echo("valid")


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Template name (default: the file's `name`, else its stem).")
@click.option("--agent-id", default="cli", show_default=True)
def define(file: Path, name: str | None, agent_id: str) -> None:
    """Store a workflow file as the next version of its template; prints {name, version}."""
    call_tool(cli_settings(), "opcode.define", {**read_template_file(file, name), "agent_id": agent_id})


# --- runs ----------------------------------------------------------------------------------------


@click.command()
@click.option("--status", help="Only runs with this status.")
@click.option("--agent-id", help="Only runs of this agent.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
def workflows(status: str | None, agent_id: str | None, limit: int) -> None:
    """List runs, newest first, as JSON."""
    filters = {k: v for k, v in {"status": status, "agent_id": agent_id, "limit": limit}.items() if v is not None}
    call_tool(cli_settings(), "opcode.query", {"resource": "workflows", "filter": filters})


@click.command("status")
@click.argument("workflow_id")
def status_command(workflow_id: str) -> None:
    """A run's status, steps, pending decisions, context and latest events, as JSON."""
    call_tool(cli_settings(), "opcode.status", {"workflow_id": workflow_id})


@click.command("signal")
@click.argument("workflow_id")
@click.argument("signal_type", type=click.Choice(["decision", "data", "cancel", "retry", "skip", "resume"]))
@click.option("--payload", default="{}", help="JSON object, e.g. '{\"choice\": \"approve\"}'.")
@click.option("--step-id")
@click.option("--agent-id", default="cli", show_default=True)
@click.option("--reasoning")
def signal_command(workflow_id: str, signal_type: str, payload: str, step_id: str | None, agent_id: str,
                   reasoning: str | None) -> None:
    """Send a signal to a run (decision, data, cancel, retry, skip, resume); prints the answer."""
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from None
    if not isinstance(body, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--payload")
    arguments = {"workflow_id": workflow_id, "signal_type": signal_type, "payload": body, "agent_id": agent_id}
    arguments.update({k: v for k, v in (("step_id", step_id), ("reasoning", reasoning)) if v is not None})
    call_tool(cli_settings(), "opcode.signal", arguments)


@click.command("mcp-stdio")
def mcp_stdio() -> None:
    """Serve the six tools over stdio: proxied to the running server, else on the embedded store."""
    from opcode_server.stdio_bridge import run_bridge

    try:
        run_bridge(cli_settings())
    except process.ProcessError as exc:
        _fail(str(exc))


OPERATOR_COMMANDS = [install, validate, define, workflows, status_command, signal_command, mcp_stdio]
