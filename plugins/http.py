"""HTTP actions (http.request, http.get, http.post) over one shared httpx client per runtime."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from typing import TYPE_CHECKING, Any

from opcode_core import ActionContext, ActionError, ActionSpec, hookimpl
from opcode_core.engine.durations import DURATION_PATTERN, parse_duration
from opcode_core.errors import EXECUTION_ERROR, NON_RETRYABLE, TIMEOUT_ERROR, VALIDATION_ERROR

if TYPE_CHECKING:
    import httpx

JSON = dict[str, Any]

DEFAULT_TIMEOUT = "30s"
DEFAULT_MAX_REDIRECTS = 10
# Plugin settings (`plugins.settings.http.max_response_bytes`) may change it.
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
# 408 and 429 say "try again later": they stay retryable under fail_on_error_status, like 5xx.
_RETRYABLE_STATUSES = frozenset({408, 429})

_AUTH_SCHEMA: JSON = {
    "type": "object",
    "description": "bearer: `token`; basic: `username`, `password`; api_key: `header_name`, `header_value`.",
    "properties": {
        "type": {"type": "string", "enum": ["bearer", "basic", "api_key"]},
        "token": {"type": "string", "description": "bearer: sent as `Authorization: Bearer <token>`."},
        "username": {"type": "string", "description": "basic: user name."},
        "password": {"type": "string", "default": "", "description": "basic: password."},
        "header_name": {"type": "string", "minLength": 1, "description": "api_key: header to send, e.g. X-API-Key."},
        "header_value": {"type": "string", "description": "api_key: the key."},
    },
    "required": ["type"],
    "allOf": [
        {"if": {"properties": {"type": {"const": "bearer"}}}, "then": {"required": ["token"]}},
        {"if": {"properties": {"type": {"const": "basic"}}}, "then": {"required": ["username"]}},
        {"if": {"properties": {"type": {"const": "api_key"}}}, "then": {"required": ["header_name", "header_value"]}},
    ],
    "additionalProperties": False,
}

_PROPERTIES: JSON = {
    "url": {"type": "string", "minLength": 1, "format": "uri", "description": "http:// or https:// URL."},
    "method": {"type": "string", "pattern": "^[A-Za-z]+$", "default": "GET", "description": "HTTP method."},
    "query": {"type": "object", "default": {},
              "additionalProperties": {"type": ["string", "number", "boolean", "array"],
                                       "items": {"type": ["string", "number", "boolean"]}},
              "description": "Query parameters added to the URL's own (a list repeats the name; a name the URL "
                             "already has is replaced)."},
    "headers": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}, "default": {},
                "description": "Request headers; they override the Content-Type set by `body_encoding`."},
    "body": {"description": "Request body (any JSON), encoded as `body_encoding` says."},
    "body_encoding": {"type": "string", "enum": ["json", "form", "text", "raw"], "default": "json",
                      "description": "json: serialized JSON; form: an object sent URL-encoded; text: text/plain; "
                      "raw: the text with no Content-Type. Non-string text/raw bodies are sent as JSON text."},
    "auth": _AUTH_SCHEMA,
    "timeout": {"type": ["string", "number"], "pattern": DURATION_PATTERN, "exclusiveMinimum": 0,
                "default": DEFAULT_TIMEOUT, "description": "Go duration (`500ms`, `30s`) or seconds, for the whole "
                "exchange including redirects and the body."},
    "follow_redirects": {"type": "boolean", "default": True, "description": "Follow 3xx redirects."},
    "max_redirects": {"type": "integer", "minimum": 0, "default": DEFAULT_MAX_REDIRECTS,
                      "description": "Redirect hops allowed before the step fails."},
    "tls_skip_verify": {"type": "boolean", "default": False,
                        "description": "Accept any TLS certificate (self-signed test servers only)."},
    "fail_on_error_status": {"type": "boolean", "default": False,
                             "description": "Fail the step on a 4xx/5xx response (the response stays readable as "
                             "the step's output); otherwise such a response completes the step."},
}


def _schema(*omit: str) -> JSON:
    return {
        "type": "object",
        "properties": {k: v for k, v in _PROPERTIES.items() if k not in omit},
        "required": ["url"],
        "additionalProperties": False,
    }


OUTPUT_SCHEMA: JSON = {
    "type": "object",
    "properties": {
        "status_code": {"type": "integer"},
        "status": {"type": "string", "description": "e.g. `200 OK`."},
        "headers": {"type": "object", "additionalProperties": {"type": "string"},
                    "description": "Canonical names (Content-Type); repeated headers joined with `, `."},
        "body": {"description": "Parsed JSON for a JSON content type, else the text; null when empty."},
        "content_type": {"type": "string"},
        "duration_ms": {"type": "integer"},
    },
}

# One client (connection pool) shared by every run, opened on start-up and closed on shut-down.
# Connections belong to the event loop that opened them, so a client is only reused on its own loop.
_client: httpx.AsyncClient | None = None
_client_loop: asyncio.AbstractEventLoop | None = None


def _new_client(*, verify: bool = True, max_redirects: int = DEFAULT_MAX_REDIRECTS) -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(verify=verify, max_redirects=max_redirects, follow_redirects=True)


def _shared_client() -> httpx.AsyncClient:
    global _client, _client_loop
    loop = asyncio.get_running_loop()
    if _client is None or _client.is_closed or _client_loop is not loop:
        _client, _client_loop = _new_client(), loop
    return _client


@hookimpl
async def opcode_startup(runtime: Any) -> None:
    """Open the shared HTTP client."""
    _shared_client()


@hookimpl
async def opcode_shutdown(runtime: Any) -> None:
    """Close the shared HTTP client."""
    global _client, _client_loop
    client, _client, _client_loop = _client, None, None
    if client is not None and not client.is_closed:
        await client.aclose()


def _timeout(value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except (TypeError, ValueError) as exc:
        raise ActionError(str(exc), code=VALIDATION_ERROR) from exc
    if seconds <= 0:
        raise ActionError(f"timeout must be positive, not {value!r}", code=VALIDATION_ERROR)
    return seconds


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else _text(value)


def _body(params: JSON) -> tuple[bytes | None, str | None]:
    """The encoded body and the Content-Type it implies."""
    if params.get("body") is None:
        return None, None
    body, encoding = params["body"], params.get("body_encoding", "json")
    if encoding == "form":
        from urllib.parse import urlencode

        if not isinstance(body, dict):
            raise ActionError("body_encoding form needs an object body", code=VALIDATION_ERROR)
        pairs = [(k, _scalar_text(item)) for k, v in body.items() for item in (v if isinstance(v, list) else [v])]
        return urlencode(pairs).encode(), "application/x-www-form-urlencoded"
    if encoding == "json":
        return json.dumps(body, ensure_ascii=False).encode(), "application/json"
    return _text(body).encode(), "text/plain; charset=utf-8" if encoding == "text" else None


def _url_with_query(url: str, params: JSON) -> httpx.URL | str:
    given = params.get("query")
    if not given:
        return url
    import httpx

    pairs = [(k, _scalar_text(item)) for k, v in given.items() for item in (v if isinstance(v, list) else [v])]
    # httpx's `params=` would replace the URL's own query string; merging keeps it.
    return httpx.URL(url).copy_merge_params(pairs)


def _headers(params: JSON, content_type: str | None) -> dict[str, str]:
    headers = {"Content-Type": content_type} if content_type else {}
    given = {k: _scalar_text(v) for k, v in (params.get("headers") or {}).items()}
    if any(k.lower() == "content-type" for k in given):
        headers.pop("Content-Type", None)
    headers.update(given)
    auth = params.get("auth")
    if auth and auth["type"] == "bearer":
        headers["Authorization"] = f"Bearer {auth['token']}"
    elif auth and auth["type"] == "basic":
        pair = f"{auth['username']}:{auth.get('password', '')}".encode()
        headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
    elif auth:
        headers[auth["header_name"]] = auth["header_value"]
    return headers


def _canonical(name: str) -> str:
    """Go's canonical header name (content-type → Content-Type), as the original's output uses."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode_body(raw: bytes, content_type: str, charset: str | None) -> Any:
    if not raw:
        return None
    try:
        text = raw.decode(charset or "utf-8", errors="replace")
    except LookupError:
        text = raw.decode("utf-8", errors="replace")
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            return json.loads(text, parse_float=_finite_float, parse_constant=_reject_constant)
        except ValueError:
            pass
    return text


def _response_output(response: httpx.Response, body: Any, started: float) -> JSON:
    headers: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        key = _canonical(name)
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return {
        "status_code": response.status_code,
        "status": f"{response.status_code} {response.reason_phrase}".strip(),
        "headers": headers,
        "body": body,
        "content_type": response.headers.get("content-type", ""),
        "duration_ms": int((time.monotonic() - started) * 1000),
    }


async def _read_capped(response: httpx.Response, cap: int, started: float) -> bytes:
    def too_large(size: str) -> ActionError:
        output = _response_output(response, None, started)
        return ActionError(f"response body is larger than the {cap}-byte limit ({size})",
                           code=NON_RETRYABLE, details={"limit": cap}, output=output)

    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise too_large(f"Content-Length {declared}")
    buf = bytearray()
    # Decoded bytes are counted, so a compressed body cannot expand past the cap either.
    async for chunk in response.aiter_bytes():
        buf += chunk
        if len(buf) > cap:
            raise too_large(f"stopped reading at {len(buf)} bytes")
    return bytes(buf)


async def request(params: JSON, ctx: ActionContext) -> JSON:
    """Send an HTTP request and return the response; see the action description for the options."""
    import httpx

    url, method = params["url"], params.get("method", "GET").upper()
    if not url.lower().startswith(("http://", "https://")):
        raise ActionError(f"url must start with http:// or https://, not {url!r}", code=VALIDATION_ERROR)
    timeout_value = params.get("timeout", DEFAULT_TIMEOUT)
    timeout = _timeout(timeout_value)
    content, content_type = _body(params)
    headers = _headers(params, content_type)
    cap = int((ctx.settings or {}).get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES))
    verify = not params.get("tls_skip_verify", False)
    max_redirects = params.get("max_redirects", DEFAULT_MAX_REDIRECTS)
    # Options the shared client was not built with get a client of their own for this call.
    own = None if verify and max_redirects == DEFAULT_MAX_REDIRECTS else _new_client(
        verify=verify, max_redirects=max_redirects)
    client = own or _shared_client()
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            req = client.build_request(method, _url_with_query(url, params), headers=headers, content=content,
                                       timeout=timeout)
            response = await client.send(req, stream=True, follow_redirects=params.get("follow_redirects", True))
            try:
                raw = await _read_capped(response, cap, started)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException) as exc:
        shown = timeout_value if isinstance(timeout_value, str) else f"{timeout_value}s"
        raise ActionError(f"{method} {url} timed out after {shown}", code=TIMEOUT_ERROR) from exc
    except httpx.TooManyRedirects as exc:
        raise ActionError(f"{method} {url}: stopped after {max_redirects} redirects", code=EXECUTION_ERROR) from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise ActionError(f"invalid url {url!r}: {exc}", code=VALIDATION_ERROR) from exc
    except httpx.HTTPError as exc:
        raise ActionError(f"{method} {url} failed: {type(exc).__name__}: {exc}", code=EXECUTION_ERROR) from exc
    finally:
        if own is not None:
            await own.aclose()

    content_type_out = response.headers.get("content-type", "")
    output = _response_output(response, _decode_body(raw, content_type_out, response.charset_encoding), started)
    status = response.status_code
    if status >= 400 and params.get("fail_on_error_status", False):
        retryable = status >= 500 or status in _RETRYABLE_STATUSES
        raise ActionError(f"{method} {url} returned {output['status']}",
                          code=EXECUTION_ERROR if retryable else NON_RETRYABLE, output=output)
    return output


async def get(params: JSON, ctx: ActionContext) -> JSON:
    """Send a GET request."""
    return await request({**params, "method": "GET"}, ctx)


async def post(params: JSON, ctx: ActionContext) -> JSON:
    """Send a POST request."""
    return await request({**params, "method": "POST"}, ctx)


_OUTPUT_NOTE = ("Output `{status_code, status, headers, body, content_type, duration_ms}`; `body` is parsed when "
                "the response is JSON. Responses over 10 MB (configurable) fail the step.")


@hookimpl
def opcode_register_actions(settings: Any) -> list[ActionSpec]:
    """Provide http.request, http.get and http.post."""
    return [
        ActionSpec(
            "http.request",
            "Send an HTTP request with any method, headers, a JSON/form/text/raw body, bearer/basic/api_key auth, "
            "a timeout (30s), redirect control and optional failure on 4xx/5xx. " + _OUTPUT_NOTE,
            _schema(),
            request,
            output_schema=OUTPUT_SCHEMA,
        ),
        ActionSpec(
            "http.get",
            "Send a GET request (http.request without method and body). " + _OUTPUT_NOTE,
            _schema("method", "body", "body_encoding"),
            get,
            output_schema=OUTPUT_SCHEMA,
        ),
        ActionSpec(
            "http.post",
            "Send a POST request (http.request without method); `body` is sent as JSON unless `body_encoding` "
            "says otherwise. " + _OUTPUT_NOTE,
            _schema("method"),
            post,
            output_schema=OUTPUT_SCHEMA,
        ),
    ]
