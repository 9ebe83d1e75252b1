"""The web panel: server-rendered pages (jinja2 + htmx), live over SSE, on the same port as MCP.

`build_panel(runtime)` returns an ASGI app that `opcode_server.app` mounts at `/` after the MCP routes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opcode_core.errors import NOT_FOUND, OpcodeError
from opcode_server.panel.actions import Actions
from opcode_server.panel.live import LiveFeed
from opcode_server.panel.pages import Pages
from opcode_server.panel.render import render
from opcode_server.panel.security import PanelGuard, protected

if TYPE_CHECKING:
    from opcode_core.runtime import Runtime

STATIC = Path(__file__).parent / "static"
# No inline script anywhere in the panel: every script is a file served from /static.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                 b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
                                 b"base-uri 'none'; form-action 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """ASGI middleware adding the panel's CSP and anti-framing headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers if scope["type"] == "http" else send)


def panel_routes(runtime: Runtime) -> list[BaseRoute]:
    """Every route of the panel; POST routes go through the CSRF and Origin check."""
    pages, live = Pages(runtime), LiveFeed(runtime)
    actions = Actions(runtime, pages)

    def post(path: str, handler: object) -> Route:
        return Route(path, protected(runtime, handler), methods=["POST"])  # type: ignore[arg-type]

    return [
        Route("/", pages.dashboard, methods=["GET"]),
        Route("/workflows", pages.workflows, methods=["GET"]),
        Route("/workflows/{workflow_id}", pages.workflow, methods=["GET"]),
        Route("/templates", pages.templates, methods=["GET"]),
        Route("/templates/{name}", pages.template, methods=["GET"]),
        Route("/decisions", pages.decisions, methods=["GET"]),
        Route("/scheduler", pages.scheduler, methods=["GET"]),
        Route("/events", pages.events, methods=["GET"]),
        Route("/agents", pages.agents, methods=["GET"]),
        Route("/plugins", pages.plugins, methods=["GET"]),
        Route("/parts/dashboard", pages.dashboard_summary, methods=["GET"]),
        Route("/parts/feed", pages.feed, methods=["GET"]),
        Route("/parts/workflows", pages.workflows_table, methods=["GET"]),
        Route("/parts/workflows/{workflow_id}", pages.workflow_live, methods=["GET"]),
        Route("/parts/workflows/{workflow_id}/timeline", pages.workflow_timeline, methods=["GET"]),
        Route("/parts/decisions", pages.decisions_list, methods=["GET"]),
        Route("/parts/scheduler", pages.jobs_table, methods=["GET"]),
        Route("/live", live.endpoint, methods=["GET"]),
        post("/workflows/{workflow_id}/cancel", actions.cancel),
        post("/workflows/{workflow_id}/rerun", actions.rerun),
        post("/templates", actions.define),
        post("/decisions/{decision_id}/resolve", actions.resolve),
        post("/scheduler", actions.save_job),
        post("/scheduler/{job_id}", actions.save_job),
        post("/scheduler/{job_id}/toggle", actions.toggle_job),
        post("/scheduler/{job_id}/delete", actions.delete_job),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]


async def _opcode_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, OpcodeError)
    return render(request, "error.html", {"error": exc}, status_code=404 if exc.code == NOT_FOUND else 400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = OpcodeError("HTTP_" + str(exc.status_code), str(exc.detail))
    return render(request, "error.html", {"error": error}, status_code=exc.status_code)


def build_panel(runtime: Runtime) -> Starlette:
    """The panel as one ASGI app: guarded (setting on, Host allowed), with security headers on every answer."""
    return Starlette(
        routes=panel_routes(runtime),
        middleware=[Middleware(SecurityHeaders), Middleware(PanelGuard, runtime=runtime)],
        exception_handlers={OpcodeError: _opcode_error, HTTPException: _http_error},
    )
