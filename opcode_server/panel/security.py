"""Panel safety: loopback Host check on every request, and a CSRF token plus an Origin check on every POST."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from opcode_core.runtime import Runtime

CSRF_COOKIE = "opcode_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
# What a browser says about a request's initiator; anything but these is another site driving ours.
SAME_SITE = ("same-origin", "none")
MAX_FORM_BYTES = 2 * 1024 * 1024

FormHandler = Callable[[Request, FormData], Awaitable[Response]]


def matches(value: str, patterns: list[str]) -> bool:
    """Whether a Host or Origin value is allowed; `name:*` allows any port, as the MCP SDK's check does."""
    return any(value == allowed or (allowed.endswith(":*") and value.startswith(allowed[:-1]))
               for allowed in patterns)


class PanelGuard:
    """ASGI middleware: 404 while the `panel` setting is off, 421 for a Host the settings do not allow."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Read per request: a SIGHUP can turn the panel on or off, or change the allowed hosts.
        settings = self.runtime.settings
        if not settings.panel_enabled:
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            return
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        # Checked on reads too: a DNS-rebound page could otherwise read the panel, CSRF token included.
        if not matches(host, settings.hosts_allowed):
            await PlainTextResponse("Invalid Host header", status_code=421)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def csrf_token(request: Request) -> str:
    """The browser's CSRF token (the cookie's value), minting one for a browser that has none yet."""
    token = getattr(request.state, "csrf_token", None)
    if token is None:
        token = request.cookies.get(CSRF_COOKIE) or ""
        if len(token) < 32:
            token = secrets.token_urlsafe(32)
            request.state.new_csrf_token = True
        request.state.csrf_token = token
    return token


def set_csrf_cookie(request: Request, response: Response) -> Response:
    """Attach the cookie of a token minted while rendering this response."""
    if getattr(request.state, "new_csrf_token", False):
        # Strict and HttpOnly: the page carries the token in its forms, so no script needs to read the cookie.
        response.set_cookie(CSRF_COOKIE, request.state.csrf_token, httponly=True, samesite="strict", path="/")
    return response


def origin_problem(request: Request, allowed_origins: list[str]) -> str | None:
    """Why a state-changing request looks cross-site, or None."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in SAME_SITE:
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin = request.headers.get("origin")
    if origin is None:
        return None  # not a browser, or an old one: the token alone decides
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    if origin != own and not matches(origin, allowed_origins):
        return f"cross-origin request refused (Origin: {origin})"
    return None


def protected(runtime: Runtime, handler: FormHandler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a POST handler: refuse with 403 unless the Origin is ours and the form carries the cookie's token."""

    async def endpoint(request: Request) -> Response:
        problem = origin_problem(request, runtime.settings.origins_allowed)
        if problem:
            raise HTTPException(403, problem)
        form = await request.form(max_part_size=MAX_FORM_BYTES)
        cookie = request.cookies.get(CSRF_COOKIE, "")
        sent = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD) or ""
        if not cookie or not isinstance(sent, str) or not hmac.compare_digest(cookie.encode(), sent.encode()):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        return await handler(request, form)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint
