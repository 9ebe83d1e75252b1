"""A small real HTTP server on 127.0.0.1 for the compatibility runs of the upstream examples.

Every request is recorded (method, path, query, headers, body). Unless a route says otherwise, a GET
answers `{"ok": true, "method": "GET", "path": ...}` and any other method echoes the posted body as
`{"ok": true, "method": ..., "path": ..., "received": <body>}`, all with status 200 and a JSON
Content-Type. `route(path, ...)` sets the status, body and Content-Type a path answers with.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        """The body parsed as JSON (None when empty or not JSON)."""
        try:
            return json.loads(self.raw) if self.raw else None
        except ValueError:
            return None


@dataclass
class Route:
    """What one path answers with."""

    status: int = 200
    body: Any = None  # JSON-able, or bytes/str sent as they are; None: the default answer
    content_type: str = "application/json"


@dataclass
class CompatServer:
    """A ThreadingHTTPServer in a background thread, with routes and a request log."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:<port>."""
        assert self._httpd is not None, "the server is not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        """The absolute URL of `path` on this server."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def route(self, path: str, *, status: int = 200, body: Any = None,
              content_type: str = "application/json") -> str:
        """Make `path` answer with this status, body and Content-Type; returns its URL."""
        self.routes[path] = Route(status, body, content_type)
        return self.url(path)

    def received(self, path: str | None = None, method: str | None = None) -> list[Recorded]:
        """The requests received so far, optionally only those to `path` and/or with `method`."""
        with self._lock:
            found = list(self.requests)
        return [r for r in found if (path is None or r.path == path) and (method is None or r.method == method)]

    def start(self) -> CompatServer:
        """Listen on a free port of 127.0.0.1 and serve in a daemon thread."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return None  # quiet: tests assert on server.requests instead

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                record = Recorded(self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()), raw)
                with server._lock:
                    server.requests.append(record)
                status, payload, content_type = server._answer(record)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="compat-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _answer(self, record: Recorded) -> tuple[int, bytes, str]:
        route = self.routes.get(record.path, Route())
        body = route.body
        if body is None:
            body = {"ok": True, "method": record.method, "path": record.path}
            if record.method not in ("GET", "HEAD"):
                body["received"] = record.json if record.json is not None else record.raw.decode(errors="replace")
        if isinstance(body, bytes):
            payload = body
        elif isinstance(body, str) and not route.content_type.startswith("application/json"):
            payload = body.encode()
        else:
            payload = json.dumps(body).encode()
        return route.status, payload, route.content_type

    def __enter__(self) -> CompatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
