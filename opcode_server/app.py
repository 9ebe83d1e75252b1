"""The Starlette app: MCP over legacy SSE (`/sse`) and Streamable HTTP (`/mcp`), and `/health`, on one port."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from mcp.server.sse import SseServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from opcode_core import __version__
from opcode_core.recovery import recover
from opcode_core.registry import plugin_states
from opcode_core.runtime import Runtime
from opcode_core.scheduler import Scheduler
from opcode_core.settings import Settings
from opcode_server.mcp_tools import build_mcp_server
from opcode_server.panel import build_panel

log = logging.getLogger("opcode.server")


class SseEndpoint:
    """`GET /sse`: one legacy SSE connection, served by the SDK's transport (an ASGI class, not a Route function)."""

    def __init__(self, transport: SseServerTransport, server: Any) -> None:
        self.transport = transport
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with self.transport.connect_sse(scope, receive, send) as (read, write):
                await self.server.run(read, write, self.server.create_initialization_options())
        except ValueError:
            # A bad Host/Origin has already been answered (421/403) by the transport security check.
            return


def security_settings(settings: Settings) -> TransportSecuritySettings:
    """The SDK's DNS-rebinding protection, from allowed_hosts / allowed_origins."""
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=settings.hosts_allowed,
        allowed_origins=settings.origins_allowed,
    )


def create_app(runtime: Runtime, settings: Settings) -> Starlette:
    """Routes and lifespan; the runtime starts and stops with the app."""
    server = build_mcp_server(runtime)
    security = security_settings(settings)
    sse = SseServerTransport("/messages/", security_settings=security)
    manager = StreamableHTTPSessionManager(app=server, security_settings=security)

    async def health(request: Request) -> JSONResponse:
        report = runtime.report
        failed = [{"name": p.name, "error": p.error} for p in report.failed()] if report else []
        try:
            await runtime.db(runtime.store.ping)
            database = "ok"
        except Exception as exc:
            database = f"error: {exc}"
        ok = database == "ok"
        body = {"status": "ok" if ok else "unavailable", "version": __version__, "database": database,
                "plugins": {"failed": failed, "state": plugin_states(runtime.pm, runtime.settings, runtime)},
                "pid": os.getpid()}
        return JSONResponse(body, status_code=200 if ok else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with runtime.running(), manager.run():
            # Only a serving process recovers runs a crash left behind (it takes the database's recovery lock).
            await recover(runtime)
            # The process that recovers runs is also the one that fires cron jobs: one scheduler per database.
            if runtime.store.holds_recovery_lock:
                runtime.scheduler = Scheduler(runtime)
                await runtime.scheduler.start()
            log.info("opcode %s serving MCP on %s (/sse, /mcp)", __version__, settings.public_base_url)
            if settings.panel_enabled:
                log.info("web panel on %s/", settings.public_base_url)
            try:
                yield
            finally:
                if runtime.scheduler is not None:
                    await runtime.scheduler.stop()

    return Starlette(
        routes=[
            Route("/health", endpoint=health, methods=["GET"]),
            Route("/sse", endpoint=SseEndpoint(sse, server), methods=["GET"]),
            Mount("/messages/", app=sse.handle_post_message),
            Route("/mcp", endpoint=StreamableHTTPASGIApp(manager), methods=["GET", "POST", "DELETE"]),
            # Last: the panel owns every other path. Always mounted, it answers only while the `panel`
            # setting is on, which a SIGHUP can change.
            Mount("/", app=build_panel(runtime)),
        ],
        lifespan=lifespan,
    )
