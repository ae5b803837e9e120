"""A test-only loopback web server for adversarial pages (never shipped in ``crawlkeeper.testing``).

Routes are registered per test module: ``site.page(path, html)`` or ``site.route(path, handler)`` where a
handler gets the request (``path``, ``query``, ``headers``) and returns ``(status, headers, body)``. Every
request is recorded in ``site.requests`` as ``(method, path_with_query, user_agent)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Response = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any


Handler = Callable[[Request], Response]


def html_page(title: str, body: str, head: str = "") -> bytes:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>{head}</head>"
            f"<body>{body}</body></html>").encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class ExtraSite:
    """``with ExtraSite() as site: site.page("/x", "<p>..</p>"); site.url("/x")``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        site = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                self._serve()

            def do_HEAD(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                self._serve()

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                with site.lock:
                    site.requests.append((self.command, self.path, self.headers.get("user-agent", "")))
                handler = site.routes.get(parts.path) or site._prefix_route(parts.path)
                if handler is None:
                    status, headers, body = 404, {"content-type": "text/html"}, html_page("Not found", "<p>none</p>")
                else:
                    try:
                        status, headers, body = handler(Request(self.command, parts.path, parse_qs(parts.query),
                                                                self.headers))
                    except Exception as exc:  # a test bug: answer 500 rather than hanging the browser
                        status, headers, body = 500, {"content-type": "text/plain"}, repr(exc).encode()
                try:
                    self.send_response(status)
                    headers = {"content-type": "text/html; charset=utf-8", **headers}
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)
                except OSError:
                    pass

        self._server = _Server((host, 0), _Handler)
        self.port = self._server.server_address[1]
        self.host = host
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _prefix_route(self, path: str) -> Handler | None:
        for prefix, handler in self.routes.items():
            if prefix.endswith("*") and path.startswith(prefix[:-1]):
                return handler
        return None

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def page(self, path: str, body: bytes | str, *, status: int = 200, headers: dict[str, str] | None = None,
             delay_s: float = 0.0) -> None:
        data = body.encode() if isinstance(body, str) else body

        def handler(_request: Request) -> Response:
            if delay_s:
                time.sleep(delay_s)
            return status, dict(headers or {}), data

        self.routes[path] = handler

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def hits(self, path: str) -> int:
        with self.lock:
            return sum(1 for _, p, _ in self.requests if urlsplit(p).path == path)

    def __enter__(self) -> ExtraSite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
