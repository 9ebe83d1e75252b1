"""One external MCP server kept connected by a background task: connect, list tools, ping, restart with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp.types as types
from mcp import ClientSession, MCPError

from opcode_core import __version__

log = logging.getLogger("opcode.mcp_servers")

# What a server's `state` says; `configured` and `disabled` come from settings alone (no connection).
STARTING = "starting"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"
DOWN = "down"
FAILED = "failed"
STOPPED = "stopped"
CALLABLE_STATES = frozenset({HEALTHY, UNHEALTHY})

CLIENT_INFO = types.Implementation(name="opcode", version=__version__)
# A server that keeps paging its tool list past this many pages is cut off there.
MAX_TOOL_PAGES = 100


@dataclass(frozen=True)
class ServerConfig:
    """One server from `plugins.settings.mcp_servers.servers`, with its timings in seconds."""

    name: str
    transport: str  # stdio | streamable_http | sse
    command: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    connect_timeout: float = 30.0
    call_timeout: float = 60.0
    health_interval: float = 30.0
    health_timeout: float = 10.0
    unhealthy_after: int = 3
    restart_delay: float = 1.0
    restart_max_delay: float = 60.0


class Unavailable(Exception):
    """The server cannot take a call now (down, restarting, failed, or the tool is gone)."""


def _errlog() -> Any:
    """Where a stdio server's stderr goes: ours (the server log) when it is a real file."""
    try:
        sys.stderr.fileno()
        return sys.stderr
    except (AttributeError, OSError, ValueError):
        # pytest's capture and similar wrappers have no descriptor a child could inherit.
        return sys.__stderr__


def describe_error(exc: BaseException) -> str:
    """A one-line description of what went wrong, looking inside task-group exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MCPError):
        return f"MCP error {exc.error.code}: {exc.error.message}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextlib.asynccontextmanager
async def open_transport(config: ServerConfig) -> AsyncIterator[tuple[Any, Any]]:
    """The read and write streams of the server's transport (for stdio, the child process lives as long)."""
    if config.transport == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=config.command[0], args=list(config.command[1:]),
                                       env=config.env or None, cwd=config.cwd)
        async with stdio_client(params, errlog=_errlog()) as streams:
            yield streams
    elif config.transport == "sse":
        from mcp.client.sse import sse_client

        async with sse_client(config.url or "", headers=config.headers or None,
                              timeout=config.connect_timeout) as streams:
            yield streams
    else:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        # The SDK wants an httpx2 client (an httpx one fails quietly); the read timeout covers server streams.
        timeout = httpx2.Timeout(config.connect_timeout, read=max(300.0, config.call_timeout))
        async with (
            httpx2.AsyncClient(headers=config.headers, timeout=timeout) as http,
            streamable_http_client(config.url or "", http_client=http) as streams,
        ):
            yield streams


@contextlib.asynccontextmanager
async def _notice_end(read: Any, on_end: Callable[[], None]) -> AsyncIterator[Any]:
    """Relay the transport's read stream so that its end (the process exited, the peer hung up) is seen at once."""
    send, receive = anyio.create_memory_object_stream[Any](0)

    async def relay() -> None:
        try:
            async with send:
                async for item in read:
                    await send.send(item)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
            pass
        finally:
            on_end()

    async with anyio.create_task_group() as group:
        group.start_soon(relay)
        try:
            yield receive
        finally:
            group.cancel_scope.cancel()


async def list_all_tools(session: ClientSession) -> list[types.Tool]:
    """Every tool the server offers, following pagination."""
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        result = await session.list_tools(params=params)
        tools.extend(result.tools)
        cursor = result.next_cursor
        if not cursor:
            break
    return tools


# Called with the tools of each new connection; returns a reason to give up on the server, or None.
OnTools = Callable[["ServerConnection", list[types.Tool]], "str | None"]


class ServerConnection:
    """Keeps one server connected from a background task, and answers calls while it is."""

    def __init__(self, config: ServerConfig, on_tools: OnTools) -> None:
        self.config = config
        self.on_tools = on_tools
        self.state = STARTING
        self.error: str | None = None
        self.tools: dict[str, types.Tool] = {}
        self.restarts = 0
        self.session: ClientSession | None = None
        self.retry_at: float | None = None
        self.connected_at: float | None = None
        self.first_attempt = asyncio.Event()
        self._failures = 0
        self._stopping = False
        self._ended = False  # the transport's read stream ended
        self._lost = False  # a call saw the connection closed
        self._give_up = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the task that connects, watches and restarts the server."""
        self._task = asyncio.create_task(self._supervise(), name=f"mcp-server:{self.config.name}")

    async def stop(self, timeout: float) -> None:
        """Close the connection (a stdio server's process is stopped, then killed), waiting at most timeout."""
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                task.cancel()
                await asyncio.wait({task}, timeout=2)
        self.session = None
        self.state = STOPPED

    def snapshot(self) -> dict[str, Any]:
        """The state shown by /health and `opcode plugins`."""
        retry_in = None if self.retry_at is None else round(max(0.0, self.retry_at - time.monotonic()), 1)
        return {"transport": self.config.transport, "state": self.state, "tools": len(self.tools),
                "error": self.error, "restarts": self.restarts, "retry_in_s": retry_in}

    def unavailable(self, why: str | None = None) -> Unavailable:
        """The error a call gets while the server cannot answer."""
        reason = why or self.error
        text = f"MCP server {self.config.name!r} is {self.state}" + (f": {reason}" if reason else "")
        if self.retry_at is not None:
            text += f"; next restart in {max(0.0, self.retry_at - time.monotonic()):.1f}s"
        return Unavailable(text)

    async def call(self, tool: str, arguments: dict[str, Any]) -> types.CallToolResult:
        """Call a tool; Unavailable when the server is not connected or the connection drops during the call."""
        session = self.session
        if session is None or self.state not in CALLABLE_STATES:
            raise self.unavailable()
        if tool not in self.tools:
            raise Unavailable(f"MCP server {self.config.name!r} no longer offers the tool {tool!r}")
        try:
            return await session.call_tool(tool, arguments, read_timeout_seconds=self.config.call_timeout)
        except MCPError as exc:
            if exc.error.code != types.CONNECTION_CLOSED:
                raise
            # Tell the watcher now rather than at the next ping.
            self._lost = True
            self._wake.set()
            raise self.unavailable("the connection closed during the call") from None

    async def _supervise(self) -> None:
        while not self._stopping:
            try:
                await self._connect_and_watch()
            except Exception as exc:
                self.error = describe_error(exc)
            finally:
                self.session = None
                self.first_attempt.set()
            if self._stopping:
                break
            if self._give_up:
                self.state = FAILED
                log.error("MCP server %s failed and is not restarted: %s", self.config.name, self.error)
                break
            self._schedule_restart()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, (self.retry_at or 0) - time.monotonic()))
            self.retry_at = None
            if not self._stopping:
                self.restarts += 1
                self.state = STARTING

    def _schedule_restart(self) -> None:
        cfg = self.config
        # A connection that stayed up longer than the longest delay starts the backoff over.
        if self.connected_at is not None and time.monotonic() - self.connected_at >= cfg.restart_max_delay:
            self._failures = 0
        self.connected_at = None
        self._failures += 1
        delay = min(cfg.restart_delay * 2 ** (self._failures - 1), cfg.restart_max_delay)
        self.state = DOWN
        self.retry_at = time.monotonic() + delay
        log.warning("MCP server %s is down (%s); restarting in %.1fs", cfg.name, self.error, delay)

    async def _connect_and_watch(self) -> None:
        cfg = self.config
        self.state = STARTING
        self._ended = self._lost = False
        # One scope for the whole connection: its deadline bounds the handshake and is lifted once connected,
        # so the transport's task groups are entered and left inside the same scope.
        with anyio.CancelScope(deadline=anyio.current_time() + cfg.connect_timeout) as scope:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(open_transport(cfg))
                read = await stack.enter_async_context(_notice_end(read, self._on_end))
                session = await stack.enter_async_context(ClientSession(read, write, client_info=CLIENT_INFO))
                await session.initialize()
                tools = await list_all_tools(session)
                scope.deadline = math.inf
                problem = self.on_tools(self, tools)
                if problem is not None:
                    self.error, self._give_up = problem, True
                    return
                self.tools = {tool.name: tool for tool in tools}
                self.session, self.state, self.error = session, HEALTHY, None
                self.connected_at = time.monotonic()
                self.first_attempt.set()
                log.info("MCP server %s connected (%s, %d tools)", cfg.name, cfg.transport, len(tools))
                try:
                    await self._watch(session)
                finally:
                    self.session = None
        if scope.cancelled_caught:
            raise TimeoutError(f"no answer within {cfg.connect_timeout:g}s")

    def _on_end(self) -> None:
        self._ended = True
        self._wake.set()

    async def _watch(self, session: ClientSession) -> None:
        """Ping every health_interval; return (to restart) when the connection ends or pings keep failing."""
        cfg = self.config
        misses = 0
        while True:
            self._wake.clear()
            if not (self._stopping or self._ended or self._lost):
                with anyio.move_on_after(cfg.health_interval):
                    await self._wake.wait()
            if self._stopping:
                return
            if self._ended or self._lost:
                self.error = self._gone()
                return
            problem = await self._ping(session)
            if problem is None:
                misses = 0
                self.state, self.error = HEALTHY, None
                continue
            if problem == "closed":
                self.error = self._gone()
                return
            misses += 1
            self.state, self.error = UNHEALTHY, problem
            log.warning("MCP server %s health check failed (%d/%d): %s", cfg.name, misses, cfg.unhealthy_after,
                        problem)
            if misses >= cfg.unhealthy_after:
                return

    def _gone(self) -> str:
        return "the server process exited" if self.config.transport == "stdio" else "the connection closed"

    async def _ping(self, session: ClientSession) -> str | None:
        """None when the server answered, "closed" when the connection is gone, else what went wrong."""
        try:
            with anyio.fail_after(self.config.health_timeout):
                await session.send_ping()
        except MCPError as exc:
            # The SDK's own answer when a Streamable HTTP server forgot our session (it restarted).
            if exc.error.code == types.CONNECTION_CLOSED or exc.error.message == "Session terminated":
                return "closed"
            # A server without ping still answered, which is all a health check asks.
            return None if exc.error.code == types.METHOD_NOT_FOUND else describe_error(exc)
        except TimeoutError:
            return f"no answer to ping within {self.config.health_timeout:g}s"
        except Exception as exc:
            return describe_error(exc)
        return None
