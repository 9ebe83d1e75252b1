"""`opcode mcp-stdio`: the six tools over stdio, proxied to the running server or run on the embedded store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mcp.types as types
from mcp import ClientSession, MCPError
from mcp.server import Server, ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.stdio import stdio_server

from opcode_core import __version__
from opcode_core.logs import configure_logging
from opcode_core.settings import Settings
from opcode_server import process
from opcode_server.sessions import RawNotification

log = logging.getLogger("opcode.stdio")


def run_bridge(settings: Settings) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin; logs go to stderr only."""
    configure_logging(settings.log_level)
    url = process.running_server(settings)
    if url:
        log.info("mcp-stdio: proxying to the opcode server at %s", url)
        asyncio.run(_proxy(url))
    else:
        log.info("mcp-stdio: no server runs from %s; serving on the embedded store", settings.home)
        asyncio.run(_embedded(settings))


async def _serve_stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def _embedded(settings: Settings) -> None:
    """The server's own tools on a Runtime in this process, which never recovers runs it did not start."""
    from opcode_core.runtime import Runtime
    from opcode_server.cli_ops import EMBEDDED_HANDLERS
    from opcode_server.mcp_tools import build_mcp_server

    settings.home.mkdir(parents=True, exist_ok=True)
    runtime = Runtime(settings)
    # Runs still going when the client leaves are cancelled with the runtime: left active, `opcode serve`
    # recovers them at its next start.
    async with runtime.running():
        await _serve_stdio(build_mcp_server(runtime, handlers=EMBEDDED_HANDLERS))


class Proxy:
    """Forwards tools/list and tools/call to the server, and its pushes (workflow.notify) back to stdio."""

    def __init__(self, upstream: ClientSession, url: str) -> None:
        self.upstream = upstream
        self.url = url
        self.downstream: ServerSession | None = None

    async def forward_log(self, params: types.LoggingMessageNotificationParams) -> None:
        """A server push for our agent: pass it on to the stdio client."""
        if self.downstream is not None:
            # As the server sent it, extra keys included (send_log_message would drop them, and warns).
            message = RawNotification(method="notifications/message",
                                      params=params.model_dump(by_alias=True, exclude_none=True))
            await self.downstream.send_notification(message)

    async def list_tools(self, ctx: ServerRequestContext[Any], params: Any) -> types.ListToolsResult:
        """The server's own listing (so its underscore aliases, if on, show too)."""
        self.downstream = ctx.session
        return types.ListToolsResult(tools=(await self.upstream.list_tools()).tools)

    async def call_tool(self, ctx: ServerRequestContext[Any],
                        params: types.CallToolRequestParams) -> types.CallToolResult:
        """Call the server's tool; a lost connection is a tool error that says so."""
        self.downstream = ctx.session

        async def progress(done: float, total: float | None, message: str | None) -> None:
            await ctx.session.report_progress(done, total, message)

        try:
            return await self.upstream.call_tool(params.name, params.arguments, progress_callback=progress)
        except MCPError:
            raise  # a protocol error (unknown tool): the client gets it as the server sent it
        except Exception as exc:
            log.exception("proxied call %s failed", params.name)
            text = (f"[EXECUTION_ERROR] lost the connection to the opcode server at {self.url} "
                    f"({type(exc).__name__}); restart this MCP server entry once opcode serve runs again")
            return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


@asynccontextmanager
async def _upstream(url: str, proxy_box: list[Proxy]) -> AsyncIterator[ClientSession]:
    from mcp.client.streamable_http import streamable_http_client

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        if proxy_box:
            await proxy_box[0].forward_log(params)

    async with (
        streamable_http_client(f"{url}/mcp") as (read, write),
        ClientSession(read, write, logging_callback=on_log) as session,
    ):
        yield session


async def _proxy(url: str) -> None:
    """One upstream session over Streamable HTTP for the life of the stdio connection."""
    box: list[Proxy] = []
    async with _upstream(url, box) as upstream:
        hello = await upstream.initialize()
        proxy = Proxy(upstream, url)
        box.append(proxy)
        server = Server(
            "opcode",
            version=__version__,
            instructions=hello.instructions,
            on_list_tools=proxy.list_tools,
            on_call_tool=proxy.call_tool,
        )
        await _serve_stdio(server)
