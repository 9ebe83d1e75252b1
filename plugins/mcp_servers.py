"""External MCP servers as action providers: each tool of a configured server becomes the action `<server>.<tool>`.

Servers are configured under `plugins.settings.mcp_servers.servers` (see docs/mcp-servers.md). At start-up
the runtime connects to each one (a stdio child process, or a Streamable HTTP / SSE URL), lists its tools
and registers them; a background task per server pings it and restarts it with capped exponential backoff.
While a server is down its actions stay registered (definitions still validate) and answer ACTION_UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
import weakref
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from opcode_core import ActionContext, ActionError, ActionSpec, hookimpl
from opcode_core.engine.durations import DURATION_PATTERN, parse_duration
from opcode_core.errors import (
    ACTION_UNAVAILABLE,
    EXECUTION_ERROR,
    TIMEOUT_ERROR,
    VALIDATION_ERROR,
    ConfigError,
)

if TYPE_CHECKING:
    import mcp.types as types

    from opcode_plugins.mcp_servers_client import ServerConfig, ServerConnection

JSON = dict[str, Any]

log = logging.getLogger("opcode.mcp_servers")

# The name this plugin is installed under (its entry point); the runtime's plugin manager is asked first.
DEFAULT_NAME = "mcp_servers"
SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Servers are stopped in parallel; stdio_client's own shutdown (close stdin, TERM, KILL) takes at most ~6 s.
STOP_TIMEOUT_S = 8.0
TRANSPORTS = {"stdio": "stdio", "streamable_http": "streamable_http", "http": "streamable_http", "sse": "sse"}

_DURATION: JSON = {"type": ["string", "number"], "pattern": DURATION_PATTERN, "exclusiveMinimum": 0}
TUNING_DEFAULTS: dict[str, Any] = {
    "connect_timeout": "30s", "call_timeout": "60s", "health_interval": "30s", "health_timeout": "10s",
    "unhealthy_after": 3, "restart_delay": "1s", "restart_max_delay": "60s",
}
_TUNING: JSON = {key: _DURATION for key in TUNING_DEFAULTS} | {"unhealthy_after": {"type": "integer", "minimum": 1}}
_STRINGS: JSON = {"type": "object", "additionalProperties": {"type": ["string", "null"]}}

SERVER_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "command": {"oneOf": [{"type": "string", "minLength": 1},
                              {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
        "args": {"type": "array", "items": {"type": "string"}},
        "env": _STRINGS,
        "cwd": {"type": "string", "minLength": 1},
        "url": {"type": "string", "pattern": "^https?://"},
        "transport": {"enum": sorted(TRANSPORTS)},
        "type": {"enum": sorted(TRANSPORTS)},
        "headers": _STRINGS,
        "enabled": {"type": "boolean"},
        **_TUNING,
    },
    "additionalProperties": False,
}
SETTINGS_SCHEMA: JSON = {
    "type": "object",
    "properties": {"servers": {"type": "object", "additionalProperties": {"type": "object"}}, **_TUNING},
    "additionalProperties": False,
}

# One manager per running runtime; weak so a runtime that is gone takes its manager along.
_managers: weakref.WeakKeyDictionary[Any, Manager] = weakref.WeakKeyDictionary()


def _problems(schema: JSON, value: Any, where: str) -> list[str]:
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join([where, *map(str, e.absolute_path)])}: {e.message}" for e in errors]


def check_settings(config: JSON) -> None:
    """Raise ConfigError when the plugin's block is malformed outside any single server."""
    problems = _problems(SETTINGS_SCHEMA, config, f"plugins.settings.{DEFAULT_NAME}")
    if problems:
        raise ConfigError("; ".join(problems))


def _server_config(name: str, raw: JSON, defaults: JSON) -> ServerConfig:
    """One server's settings, checked; ConfigError names what is wrong."""
    from opcode_plugins.mcp_servers_client import ServerConfig

    where = f"plugins.settings.{DEFAULT_NAME}.servers.{name}"
    if not SERVER_NAME.match(name):
        raise ConfigError(f"{where}: a server name is 1-64 letters, digits, '_' or '-' (it is the action namespace)")
    problems = _problems(SERVER_SCHEMA, raw, where)
    if problems:
        raise ConfigError("; ".join(problems))
    given = raw.get("transport") or raw.get("type")
    has_command, has_url = "command" in raw, "url" in raw
    if has_command == has_url:
        raise ConfigError(f"{where}: give either `command` (a stdio server) or `url` (Streamable HTTP or SSE)")
    if has_command:
        if given not in (None, "stdio"):
            raise ConfigError(f"{where}: transport {given!r} needs `url`, not `command`")
        transport = "stdio"
    else:
        if given == "stdio":
            raise ConfigError(f"{where}: transport 'stdio' needs `command`, not `url`")
        # A URL ending in /sse is the legacy transport, as MCP clients guess it; anything else is Streamable HTTP.
        transport = TRANSPORTS[given] if given else ("sse" if raw["url"].rstrip("/").endswith("/sse") else
                                                     "streamable_http")
    wrong = [key for key in (("args", "env", "cwd") if not has_command else ("headers",)) if key in raw]
    if wrong:
        raise ConfigError(f"{where}: {', '.join(wrong)} do(es) not apply to a {transport} server")
    command = raw.get("command")
    argv = ([command] if isinstance(command, str) else list(command or [])) + list(raw.get("args") or [])
    tuning = {key: raw.get(key, defaults.get(key, default)) for key, default in TUNING_DEFAULTS.items()}
    timings = {key: float(parse_duration(value)) for key, value in tuning.items() if key != "unhealthy_after"}
    return ServerConfig(
        name=name,
        transport=transport,
        command=tuple(argv),
        # A `{"$env": "VAR"}` whose variable is unset resolves to null: that key is simply not passed on.
        env={k: v for k, v in (raw.get("env") or {}).items() if v is not None},
        cwd=raw.get("cwd"),
        url=raw.get("url"),
        headers={k: v for k, v in (raw.get("headers") or {}).items() if v is not None},
        unhealthy_after=int(tuning["unhealthy_after"]),
        **timings,
    )


def parse_servers(config: JSON) -> tuple[list[ServerConfig], dict[str, str], list[str]]:
    """The enabled servers, a problem per server whose settings are invalid, and the disabled names."""
    servers: list[ServerConfig] = []
    problems: dict[str, str] = {}
    disabled: list[str] = []
    for name, raw in (config.get("servers") or {}).items():
        if isinstance(raw, dict) and raw.get("enabled") is False:
            disabled.append(name)
            continue
        try:
            servers.append(_server_config(name, raw, config))
        except (ConfigError, ValueError) as exc:
            problems[name] = str(exc)
    return servers, problems, disabled


def tool_output(result: types.CallToolResult) -> JSON:
    """A tool result as an action output: its structured content, else its text parsed as JSON when it is."""
    if result.structured_content is not None:
        content = result.structured_content
        return content if isinstance(content, dict) else {"result": content}
    texts = [block.text for block in result.content if block.type == "text"]
    others = [block.model_dump(by_alias=True, mode="json", exclude_none=True)
              for block in result.content if block.type != "text"]
    value = _parse_text("\n".join(texts)) if texts else None
    if isinstance(value, dict) and not others:
        return value
    out: JSON = {"result": value}
    if others:
        # Images, audio and resources are passed on as MCP content blocks.
        out["content"] = others
    return out


def _parse_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _error_text(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text").strip()


def _params_schema(server: str, tool: types.Tool) -> JSON:
    schema = tool.input_schema or {"type": "object"}
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        # The server still checks its own input; a schema we cannot read must not hide the tool.
        log.warning("MCP server %s: tool %s has an input schema that is not valid JSON Schema (%s); its params "
                    "are passed on unchecked", server, tool.name, exc.message)
        return {"type": "object"}
    return schema


def _execute(conn: ServerConnection, action: str, tool: str) -> Any:
    async def execute(params: JSON, ctx: ActionContext) -> JSON:
        """Call the tool on its server and return its structured (or parsed text) result."""
        from mcp import MCPError
        from mcp.types import INVALID_PARAMS, REQUEST_TIMEOUT

        from opcode_plugins.mcp_servers_client import Unavailable, describe_error

        try:
            result = await conn.call(tool, params)
        except Unavailable as exc:
            raise ActionError(str(exc), code=ACTION_UNAVAILABLE) from None
        except MCPError as exc:
            code = {REQUEST_TIMEOUT: TIMEOUT_ERROR, INVALID_PARAMS: VALIDATION_ERROR}.get(exc.error.code,
                                                                                          EXECUTION_ERROR)
            raise ActionError(f"{action}: {exc.error.message}", code=code,
                              details={"server": conn.config.name, "tool": tool, "mcp_code": exc.error.code}) from None
        except Exception as exc:
            raise ActionError(f"{action}: {describe_error(exc)}", code=EXECUTION_ERROR) from None
        if result.is_error:
            details: JSON = {"server": conn.config.name, "tool": tool}
            if result.structured_content is not None:
                details["structured_content"] = result.structured_content
            raise ActionError(_error_text(result) or f"{action} failed", code=EXECUTION_ERROR, details=details)
        return tool_output(result)

    return execute


def action_spec(conn: ServerConnection, tool: types.Tool) -> ActionSpec:
    """The action `<server>.<tool>` that calls one tool."""
    server = conn.config.name
    name = f"{server}.{tool.name}"
    description = tool.description or tool.title or f"The tool {tool.name!r}"
    return ActionSpec(
        name,
        f"{description.strip()} (MCP server {server!r})",
        _params_schema(server, tool),
        _execute(conn, name, tool.name),
        output_schema=tool.output_schema,
    )


class Manager:
    """The connections of one runtime, and the actions they added to its registry."""

    def __init__(self, runtime: Any, plugin: str, servers: list[ServerConfig], problems: dict[str, str],
                 disabled: list[str]) -> None:
        from opcode_plugins.mcp_servers_client import ServerConnection

        self.runtime = runtime
        self.plugin = plugin
        self.problems = problems
        self.disabled = disabled
        self.connections = {cfg.name: ServerConnection(cfg, self._register) for cfg in servers}
        self.owned: set[str] = set()

    def _register(self, conn: ServerConnection, tools: list[types.Tool]) -> str | None:
        """Add the actions of tools not registered yet; a name another plugin holds fails the server."""
        from opcode_core.registry import DuplicateNameError

        specs = [action_spec(conn, tool) for tool in tools if f"{conn.config.name}.{tool.name}" not in self.owned]
        try:
            self.runtime.registry.add_actions(self.plugin, specs, self.runtime.report)
        except DuplicateNameError as exc:
            return str(exc)
        self.owned.update(spec.name for spec in specs)
        return None

    async def start(self) -> None:
        """Connect every server in the background, waiting (bounded) for each one's first attempt."""
        for name, problem in self.problems.items():
            log.error("MCP server %s is not started: %s", name, problem)
        for conn in self.connections.values():
            conn.start()
        if self.connections:
            bound = max(c.config.connect_timeout for c in self.connections.values()) + 1
            firsts = [c.first_attempt.wait() for c in self.connections.values()]
            # A slow server keeps connecting in its own task; opcode does not wait for it past this bound.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*firsts), bound)

    async def stop(self) -> None:
        """Close every connection (stdio children are stopped) and forget the actions."""
        await asyncio.gather(*(c.stop(STOP_TIMEOUT_S) for c in self.connections.values()))
        if self.runtime.registry is not None:
            self.runtime.registry.remove_actions(self.plugin, self.owned, self.runtime.report)
        self.owned.clear()

    def state(self) -> JSON:
        """Each server's live state."""
        out: JSON = {name: conn.snapshot() for name, conn in self.connections.items()}
        out.update({name: {"state": "failed", "error": problem} for name, problem in self.problems.items()})
        out.update({name: {"state": "disabled"} for name in self.disabled})
        return out


def _plugin_name(runtime: Any) -> str:
    pm = getattr(runtime, "pm", None)
    name = pm.get_name(sys.modules[__name__]) if pm is not None else None
    return name or DEFAULT_NAME


def plugin_state(config: JSON, runtime: Any = None) -> JSON | None:
    """The configured servers and their state: live in a running runtime, `configured` from settings alone."""
    manager = _managers.get(runtime) if runtime is not None else None
    if manager is not None:
        return manager.state()
    if not config.get("servers"):
        return None
    try:
        check_settings(config)
    except ConfigError:
        return None  # the plugin's own row already says it failed, with this error
    servers, problems, disabled = parse_servers(config)
    out: JSON = {cfg.name: {"transport": cfg.transport, "state": "configured"} for cfg in servers}
    out.update({name: {"state": "failed", "error": problem} for name, problem in problems.items()})
    out.update({name: {"state": "disabled"} for name in disabled})
    return out


@hookimpl
def opcode_register_actions(settings: Any) -> list[ActionSpec]:
    """Check the settings; the servers' actions are added at start-up, once their tools are known."""
    check_settings(settings.plugin_config(DEFAULT_NAME) if settings is not None else {})
    return []


@hookimpl
async def opcode_startup(runtime: Any) -> None:
    """Connect to the configured servers and register their tools as actions."""
    name = _plugin_name(runtime)
    config = runtime.settings.plugin_config(name)
    report = getattr(runtime, "report", None)
    if not config.get("servers") or runtime in _managers:
        return
    if report is not None and name in report.plugins and report.plugins[name].status == "failed":
        return  # its settings were refused at registration; the report says why
    servers, problems, disabled = parse_servers(config)
    manager = _managers[runtime] = Manager(runtime, name, servers, problems, disabled)
    await manager.start()


@hookimpl
async def opcode_shutdown(runtime: Any) -> None:
    """Close every server connection and stop the stdio servers' processes."""
    manager = _managers.pop(runtime, None)
    if manager is not None:
        await manager.stop()
