"""http.* actions against a real HTTP server on 127.0.0.1 (http.server in a background thread)."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from opcode_core.errors import EXECUTION_ERROR, NON_RETRYABLE, TIMEOUT_ERROR, VALIDATION_ERROR, ActionError
from opcode_plugins import http

SPECS = {spec.name: spec for spec in http.opcode_register_actions(settings=None)}


class Handler(BaseHTTPRequestHandler):
    """Routes: /echo, /json, /text, /latin1, /problem, /badjson, /empty, /headers, /status/N, /redirect/N,
    /bytes/N (with Content-Length), /stream/N (without), /slow."""

    def _send(self, status: int, body: bytes = b"", content_type: str | None = None,
              headers: list[tuple[str, str]] | None = None, length: bool = True) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in headers or []:
            self.send_header(name, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: object, content_type: str = "application/json") -> None:
        self._send(status, json.dumps(value).encode(), content_type)

    def _route(self) -> None:
        parts = urlsplit(self.path)
        head, _, arg = parts.path.strip("/").partition("/")
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size).decode() if size else ""
        if head == "echo":
            self._json(200, {"method": self.command, "path": parts.path, "query": parts.query,
                             "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
        elif head == "json":
            self._json(200, {"items": [1, 2], "ok": True}, "application/json; charset=utf-8")
        elif head == "text":
            self._send(200, b"hello", "text/plain")
        elif head == "latin1":
            self._send(200, "café".encode("latin-1"), "text/plain; charset=iso-8859-1")
        elif head == "problem":
            self._json(422, {"title": "bad"}, "application/problem+json")
        elif head == "badjson":
            self._send(200, b"not json{", "application/json")
        elif head == "empty":
            self._send(204, length=False)
        elif head == "headers":
            self._send(200, b"", "text/plain", [("X-Multi", "a"), ("X-Multi", "b"), ("x-lower-case", "v")])
        elif head == "status":
            self._json(int(arg), {"error": "boom"})
        elif head == "redirect":
            n = int(arg)
            if n == 0:
                self._json(200, {"redirected": True})
            else:
                self._send(302, headers=[("Location", f"/redirect/{n - 1}")])
        elif head == "bytes":
            self._send(200, b"x" * int(arg), "application/octet-stream")
        elif head == "stream":
            # HTTP/1.0 without Content-Length: the body ends when the connection closes.
            self._send(200, b"y" * int(arg), "text/plain", length=False)
        elif head == "slow":
            time.sleep(2)
            self._send(200, b"late", "text/plain")
        else:
            self._send(404, b"no route", "text/plain")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _route

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients that time out on purpose leave broken pipes behind


def _serve(server: ThreadingHTTPServer) -> Iterator[str]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    for port in _serve(Server(("127.0.0.1", 0), Handler)):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def tls_url(tmp_path_factory) -> Iterator[str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = Server(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    for port in _serve(server):
        yield f"https://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
async def close_shared_client() -> Iterator[None]:
    yield
    await http.opcode_shutdown(None)


async def run(name, params, ctx):
    return await SPECS[name].execute(params, ctx)


def test_entry_point_provides_the_actions(via_entry_point):
    module, specs = via_entry_point("http")
    assert module is http
    assert sorted(s.name for s in specs) == ["http.get", "http.post", "http.request"]


def test_schemas_are_complete(well_formed):
    well_formed(list(SPECS.values()))
    assert "method" not in SPECS["http.get"].params_schema["properties"]
    assert "body" not in SPECS["http.get"].params_schema["properties"]
    assert "method" not in SPECS["http.post"].params_schema["properties"]
    assert "body" in SPECS["http.post"].params_schema["properties"]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("http.get", {"url": "http://x"}),
        ("http.get", {"url": "http://x", "headers": {"X-N": 1}, "timeout": "5s", "fail_on_error_status": True}),
        ("http.get", {"url": "http://x", "query": {"email": "a@b", "ids": [1, 2], "on": True}}),
        ("http.request", {"url": "http://x", "method": "delete", "body": [1], "body_encoding": "json"}),
        ("http.request", {"url": "http://x", "auth": {"type": "bearer", "token": "t"}}),
        ("http.request", {"url": "http://x", "auth": {"type": "basic", "username": "u"}}),
        ("http.request", {"url": "http://x", "auth": {"type": "api_key", "header_name": "X-K", "header_value": "v"}}),
        ("http.post", {"url": "http://x", "body": {"a": 1}, "body_encoding": "form", "timeout": 2}),
        ("http.request", {"url": "http://x", "follow_redirects": False, "max_redirects": 0, "tls_skip_verify": True}),
    ],
)
def test_valid_params(schema_check, name, params):
    assert schema_check(SPECS[name], params) == []


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("http.get", {}),
        ("http.get", {"url": "http://x", "method": "POST"}),
        ("http.get", {"url": "http://x", "body": "b"}),
        ("http.post", {"url": "http://x", "method": "PUT"}),
        ("http.request", {"url": "http://x", "method": "GET /"}),
        ("http.request", {"url": "http://x", "body_encoding": "xml"}),
        ("http.request", {"url": "http://x", "headers": {"X": {"a": 1}}}),
        ("http.request", {"url": "http://x", "auth": {"type": "bearer"}}),
        ("http.request", {"url": "http://x", "auth": {"type": "api_key", "header_name": "X-K"}}),
        ("http.request", {"url": "http://x", "auth": {"type": "digest"}}),
        ("http.request", {"url": "http://x", "auth": {"type": "bearer", "token": "t", "scope": "s"}}),
        ("http.request", {"url": "http://x", "timeout": "fast"}),
        ("http.request", {"url": "http://x", "max_redirects": -1}),
        ("http.request", {"url": "http://x", "verify": False}),
        ("http.get", {"url": "http://x", "query": {"a": {"b": 1}}}),
        ("http.get", {"url": "http://x", "query": "a=1"}),
    ],
)
def test_invalid_params(schema_check, name, params):
    assert schema_check(SPECS[name], params) != []


async def test_get_json(ctx, base_url):
    out = await run("http.get", {"url": f"{base_url}/json"}, ctx)
    assert (out["status_code"], out["status"]) == (200, "200 OK")
    assert out["body"] == {"items": [1, 2], "ok": True}
    assert out["content_type"] == "application/json; charset=utf-8"
    assert out["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert isinstance(out["duration_ms"], int)
    assert set(out) == {"status_code", "status", "headers", "body", "content_type", "duration_ms"}


async def test_post_json_body(ctx, base_url):
    out = await run("http.post", {"url": f"{base_url}/echo", "body": {"name": "ü", "n": [1]}}, ctx)
    echo = out["body"]
    assert echo["method"] == "POST"
    assert json.loads(echo["body"]) == {"name": "ü", "n": [1]}
    assert echo["headers"]["content-type"] == "application/json"


async def test_form_body(ctx, base_url):
    body = {"q": "a b&c", "tags": ["x", "y"], "on": True, "n": 3, "none": None}
    out = await run("http.post", {"url": f"{base_url}/echo", "body": body, "body_encoding": "form"}, ctx)
    assert out["body"]["body"] == "q=a+b%26c&tags=x&tags=y&on=true&n=3&none="
    assert out["body"]["headers"]["content-type"] == "application/x-www-form-urlencoded"


async def test_form_body_must_be_an_object(ctx, base_url):
    with pytest.raises(ActionError) as info:
        await run("http.post", {"url": f"{base_url}/echo", "body": [1], "body_encoding": "form"}, ctx)
    assert info.value.code == VALIDATION_ERROR


async def test_text_and_raw_bodies(ctx, base_url):
    text = await run("http.request", {"url": f"{base_url}/echo", "method": "put", "body": "plain words",
                                      "body_encoding": "text"}, ctx)
    assert text["body"]["method"] == "PUT"
    assert text["body"]["body"] == "plain words"
    assert text["body"]["headers"]["content-type"].startswith("text/plain")
    raw = await run("http.post", {"url": f"{base_url}/echo", "body": "<x/>", "body_encoding": "raw",
                                  "headers": {"Content-Type": "application/xml"}}, ctx)
    assert raw["body"]["body"] == "<x/>"
    assert raw["body"]["headers"]["content-type"] == "application/xml"
    bare = await run("http.post", {"url": f"{base_url}/echo", "body": "zz", "body_encoding": "raw"}, ctx)
    assert "content-type" not in bare["body"]["headers"]


async def test_query_params_are_added_to_the_url(ctx, base_url):
    # The original's lead-enrichment example passes `query` to http.get.
    query = {"email": "a+b@x.io", "tag": ["p", "q"], "n": 2, "on": False}
    out = await run("http.get", {"url": f"{base_url}/echo?keep=1", "query": query}, ctx)
    assert out["body"]["query"] == "keep=1&email=a%2Bb%40x.io&tag=p&tag=q&n=2&on=false"


async def test_headers_override_the_body_content_type(ctx, base_url):
    out = await run("http.post", {"url": f"{base_url}/echo", "body": {"a": 1},
                                  "headers": {"content-type": "application/vnd.x+json", "X-Count": 2}}, ctx)
    assert out["body"]["headers"]["content-type"] == "application/vnd.x+json"
    assert out["body"]["headers"]["x-count"] == "2"


@pytest.mark.parametrize(
    ("auth", "header", "value"),
    [
        ({"type": "bearer", "token": "tok123"}, "authorization", "Bearer tok123"),
        # RFC 7617 section 2's example.
        ({"type": "basic", "username": "Aladdin", "password": "open sesame"}, "authorization",
         "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ({"type": "api_key", "header_name": "X-API-Key", "header_value": "k-1"}, "x-api-key", "k-1"),
    ],
)
async def test_auth_headers_arrive(ctx, base_url, auth, header, value):
    out = await run("http.get", {"url": f"{base_url}/echo", "auth": auth}, ctx)
    assert out["body"]["headers"][header] == value


async def test_redirects_are_followed(ctx, base_url):
    out = await run("http.get", {"url": f"{base_url}/redirect/3"}, ctx)
    assert (out["status_code"], out["body"]) == (200, {"redirected": True})


async def test_redirects_not_followed(ctx, base_url):
    out = await run("http.get", {"url": f"{base_url}/redirect/3", "follow_redirects": False}, ctx)
    assert out["status_code"] == 302
    assert out["headers"]["Location"] == "/redirect/2"


async def test_too_many_redirects(ctx, base_url):
    with pytest.raises(ActionError) as info:
        await run("http.get", {"url": f"{base_url}/redirect/3", "max_redirects": 2}, ctx)
    assert info.value.code == EXECUTION_ERROR
    assert "stopped after 2 redirects" in info.value.message
    ok = await run("http.get", {"url": f"{base_url}/redirect/3", "max_redirects": 3}, ctx)
    assert ok["status_code"] == 200


async def test_error_status_completes_by_default(ctx, base_url):
    out = await run("http.get", {"url": f"{base_url}/status/404"}, ctx)
    assert (out["status_code"], out["status"], out["body"]) == (404, "404 Not Found", {"error": "boom"})


@pytest.mark.parametrize(("status", "code"), [(404, NON_RETRYABLE), (429, EXECUTION_ERROR), (503, EXECUTION_ERROR)])
async def test_fail_on_error_status(ctx, base_url, status, code):
    with pytest.raises(ActionError) as info:
        await run("http.get", {"url": f"{base_url}/status/{status}", "fail_on_error_status": True}, ctx)
    assert info.value.code == code
    assert info.value.output["status_code"] == status
    assert info.value.output["body"] == {"error": "boom"}
    ok = await run("http.get", {"url": f"{base_url}/status/201", "fail_on_error_status": True}, ctx)
    assert ok["status_code"] == 201


async def test_body_parsing(ctx, base_url):
    assert (await run("http.get", {"url": f"{base_url}/text"}, ctx))["body"] == "hello"
    assert (await run("http.get", {"url": f"{base_url}/latin1"}, ctx))["body"] == "café"
    assert (await run("http.get", {"url": f"{base_url}/problem"}, ctx))["body"] == {"title": "bad"}
    assert (await run("http.get", {"url": f"{base_url}/badjson"}, ctx))["body"] == "not json{"
    empty = await run("http.request", {"url": f"{base_url}/empty", "method": "DELETE"}, ctx)
    assert (empty["status_code"], empty["body"], empty["content_type"]) == (204, None, "")


async def test_repeated_headers_are_joined_under_canonical_names(ctx, base_url):
    out = await run("http.get", {"url": f"{base_url}/headers"}, ctx)
    assert out["headers"]["X-Multi"] == "a, b"
    assert out["headers"]["X-Lower-Case"] == "v"


@pytest.mark.parametrize("route", ["bytes", "stream"])
async def test_response_size_cap(make_ctx, base_url, route):
    ctx = make_ctx(settings={"max_response_bytes": 1000})
    assert len((await run("http.get", {"url": f"{base_url}/{route}/1000"}, ctx))["body"]) == 1000
    with pytest.raises(ActionError) as info:
        await run("http.get", {"url": f"{base_url}/{route}/50000"}, ctx)
    assert info.value.code == NON_RETRYABLE
    assert "1000-byte limit" in info.value.message
    assert info.value.output["status_code"] == 200
    assert info.value.output["body"] is None


async def test_default_size_cap_is_10_mb(ctx, base_url):
    with pytest.raises(ActionError) as info:
        await run("http.get", {"url": f"{base_url}/bytes/{10 * 1024 * 1024 + 1}"}, ctx)
    assert "10485760-byte limit" in info.value.message


@pytest.mark.parametrize("timeout", ["200ms", 0.2])
async def test_timeout(ctx, base_url, timeout):
    started = time.monotonic()
    with pytest.raises(ActionError) as info:
        await run("http.get", {"url": f"{base_url}/slow", "timeout": timeout}, ctx)
    assert time.monotonic() - started < 1.5
    assert info.value.code == TIMEOUT_ERROR


async def test_connection_refused(ctx):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ActionError) as info:
        await run("http.get", {"url": f"http://127.0.0.1:{port}/"}, ctx)
    assert info.value.code == EXECUTION_ERROR


@pytest.mark.parametrize("url", ["ftp://example.com/file", "example.com", "file:///etc/passwd"])
async def test_only_http_urls(ctx, url):
    with pytest.raises(ActionError) as info:
        await run("http.get", {"url": url}, ctx)
    assert info.value.code == VALIDATION_ERROR


async def test_tls_skip_verify(ctx, tls_url):
    with pytest.raises(ActionError) as info:
        await run("http.get", {"url": f"{tls_url}/json"}, ctx)
    assert info.value.code == EXECUTION_ERROR
    assert "CERTIFICATE_VERIFY_FAILED" in info.value.message
    out = await run("http.get", {"url": f"{tls_url}/json", "tls_skip_verify": True}, ctx)
    assert out["body"] == {"items": [1, 2], "ok": True}


async def test_startup_opens_one_shared_client_and_shutdown_closes_it(ctx, base_url):
    await http.opcode_startup(None)
    client = http._client
    assert client is not None
    await run("http.get", {"url": f"{base_url}/json"}, ctx)
    await run("http.post", {"url": f"{base_url}/echo", "body": {}}, ctx)
    assert http._client is client
    # Options the shared client was not built with use a client of their own and leave it alone.
    await run("http.get", {"url": f"{base_url}/json", "tls_skip_verify": True}, ctx)
    assert http._client is client and not client.is_closed
    await http.opcode_shutdown(None)
    assert client.is_closed
    assert http._client is None


async def test_a_client_is_made_lazily_without_startup(ctx, base_url):
    await http.opcode_shutdown(None)
    await run("http.get", {"url": f"{base_url}/json"}, ctx)
    assert http._client is not None and not http._client.is_closed
