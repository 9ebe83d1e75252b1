"""The official MCP client as end-to-end tests use it: a Streamable HTTP session, tool calls that pass or fail."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


@asynccontextmanager
async def streamable_session(mcp_url: str, *, transport: Any = None,
                             message_handler: Any = None) -> AsyncIterator[ClientSession]:
    """An initialized client session over Streamable HTTP (through `transport` when given, e.g. to record bytes)."""
    async with (
        httpx2.AsyncClient(**({"transport": transport} if transport is not None else {})) as http,
        streamable_http_client(mcp_url, http_client=http) as (read, write),
        ClientSession(read, write, message_handler=message_handler) as session,
    ):
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """Call a tool that must succeed and return its structured content."""
    result = await session.call_tool(tool, args)
    assert not result.is_error, result.content[0].text
    return result.structured_content


async def call_error(session: ClientSession, tool: str, args: dict[str, Any]) -> str:
    """Call a tool that must fail with a tool error and return its text."""
    result = await session.call_tool(tool, args)
    assert result.is_error, result.structured_content
    return result.content[0].text
