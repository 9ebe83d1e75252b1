"""The MCP server: the six tools as thin shells over the service functions, with our error mapping."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import mcp.types as types
from jsonschema import Draft202012Validator
from mcp import MCPError
from mcp.server import Server, ServerRequestContext

from opcode_core import __version__, service
from opcode_core.errors import OpcodeError, ValidationError, schema_problems, summarize
from opcode_core.runtime import Runtime
from opcode_server.sessions import AgentSessions
from opcode_server.tool_schemas import INSTRUCTIONS, TOOLS

log = logging.getLogger("opcode.mcp")

Handler = Callable[..., Awaitable[dict[str, Any]]]

HANDLERS: dict[str, Handler] = {
    "opcode.define": service.define_template,
    "opcode.run": service.run_workflow,
    "opcode.status": service.workflow_status,
    "opcode.signal": service.send_signal,
    "opcode.query": service.query,
    "opcode.diagram": service.render_diagram,
}

_VALIDATORS = {name: Draft202012Validator(tool["input_schema"]) for name, tool in TOOLS.items()}
_TOOL_LIST = [
    types.Tool(name=name, description=tool["description"], input_schema=tool["input_schema"])
    for name, tool in TOOLS.items()
]
# Opt-in (setting underscore_tool_names): the same tools as opcode_define, ... for clients that refuse dots.
UNDERSCORE_ALIASES = {name.replace(".", "_"): name for name in TOOLS}
_ALIAS_LIST = [tool.model_copy(update={"name": tool.name.replace(".", "_")}) for tool in _TOOL_LIST]


def check_arguments(tool: str, arguments: Any) -> dict[str, Any]:
    """Validate tool arguments against the tool's input schema; every problem is listed with its path."""
    problems = schema_problems(_VALIDATORS[tool], arguments, "arguments")
    if problems:
        raise ValidationError(f"invalid arguments for {tool}: {summarize(problems)}", problems)
    return arguments


def tool_result(obj: dict[str, Any]) -> types.CallToolResult:
    """A successful result: the JSON as text and as structured content."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(obj, default=str))], structured_content=obj
    )


def with_image(result: types.CallToolResult) -> types.CallToolResult:
    """A diagram result in format image also carries the PNG as MCP image content, so clients show it."""
    obj = result.structured_content or {}
    if obj.get("format") == "image" and isinstance(obj.get("diagram"), str):
        result.content.append(types.ImageContent(type="image", data=obj["diagram"], mime_type="image/png"))
    return result


def tool_error(error: OpcodeError) -> types.CallToolResult:
    """A tool error whose text starts with `[CODE]`, carrying the structured error object."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=str(error))],
        structured_content={"error": error.to_dict()},
        is_error=True,
    )


def build_mcp_server(runtime: Runtime, handlers: dict[str, Handler] | None = None) -> Server[Any]:
    """The low-level MCP server behind both transports (and stdio); `handlers` replaces some tools' handlers."""
    sessions = AgentSessions()
    runtime.notifier = sessions.notify
    table = {**HANDLERS, **(handlers or {})}

    async def on_list_tools(ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        # Read per request: a SIGHUP that turns the aliases on reaches the next listing.
        aliases = _ALIAS_LIST if runtime.settings.underscore_tool_names else []
        return types.ListToolsResult(tools=_TOOL_LIST + aliases)

    async def on_call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
        name = params.name
        if runtime.settings.underscore_tool_names:
            name = UNDERSCORE_ALIASES.get(name, name)
        handler = table.get(name)
        if handler is None:
            raise MCPError(code=types.INVALID_PARAMS, message=f"Unknown tool: {params.name}")
        arguments = params.arguments if params.arguments is not None else {}
        if not isinstance(arguments, dict):
            raise MCPError(code=types.INVALID_PARAMS, message="arguments must be an object")
        try:
            check_arguments(name, arguments)
            if isinstance(arguments.get("agent_id"), str):
                sessions.remember(arguments["agent_id"], ctx)
            extra: dict[str, Any] = {}
            if name == "opcode.run":
                async def progress(done: int, total: int) -> None:
                    await ctx.session.report_progress(done, total, f"{done} of {total} steps done")

                extra["progress"] = progress
            result = tool_result(await handler(runtime, **arguments, **extra))
            return with_image(result) if name == "opcode.diagram" else result
        except OpcodeError as exc:
            return tool_error(exc)
        except Exception as exc:  # never let one escape: the SDK would send it as a JSON-RPC error
            log.exception("tool %s failed", name)
            return tool_error(OpcodeError("EXECUTION_ERROR", f"internal error: {type(exc).__name__}: {exc}"))

    return Server(
        "opcode",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )
