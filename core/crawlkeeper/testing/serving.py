"""The plumbing under crawlkeeper's loopback test sites: a threaded HTTP server that accepts only loopback
addresses and never prints, a request handler that dispatches by path (:class:`RouteHandler`), and small HTML
helpers. :mod:`crawlkeeper.testing.site` builds the login site on it; this repository's tests build their
adversarial sites on it too. Standard library only.
"""

from __future__ import annotations

import contextlib
import html
import ipaddress
import math
import socket
import threading
from collections.abc import Iterable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Protocol
from urllib.parse import parse_qs, quote, urlsplit

__all__ = ["HTML", "SENTENCES", "BadRequest", "Recorder", "RouteHandler", "SiteServer", "cookie_pairs", "filler",
           "loopback_family", "page", "page_text", "url_host"]

MAX_BODY = 10 * 1024 * 1024
HTML = "text/html; charset=utf-8"
URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))  # printable ASCII minus space: left as-is in redirects


class Recorder(Protocol):
    """What a :class:`SiteServer` serves for: the handler class to answer with, and where requests are recorded."""

    handler_class: type[BaseHTTPRequestHandler]

    def _record(self, path: str, method: str, headers: Message) -> None: ...

    def _record_error(self, message: str) -> None: ...


SENTENCES = (
    "The crawler visits every page of this little site and reads the text that a person would see.",
    "Each paragraph is deterministic, so tests can compare the extracted markdown from run to run.",
    "Headless Chromium renders the markup, runs the scripts and hands the final document to the parser.",
    "Nothing on this site talks to the outside world unless a test explicitly asks it to do so.",
    "Sessions, cookies, redirects and slow responses are all simulated here on a loopback address.",
    "A page with too little visible text may be mistaken for an empty or broken page by a crawler.",
)


def filler(topic: str, count: int = 2) -> str:
    """Deterministic filler paragraphs (each well over 200 visible characters)."""
    out = []
    for i in range(count):
        a = SENTENCES[i % len(SENTENCES)]
        b = SENTENCES[(i + 2) % len(SENTENCES)]
        c = SENTENCES[(i + 4) % len(SENTENCES)]
        out.append(f'<p class="filler">{html.escape(topic)}: {a} {b} {c}</p>')
    return "\n".join(out)


def page(title: str, content: str, *, heading: str | None = None, head_extra: str = "") -> bytes:
    return page_text(title, content, heading=heading, head_extra=head_extra).encode("utf-8")


def page_text(title: str, content: str, *, heading: str | None = None, head_extra: str = "") -> str:
    h1 = html.escape(title if heading is None else heading)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n{head_extra}</head>\n<body>\n<h1>{h1}</h1>\n{content}\n"
        "</body>\n</html>\n"
    )


def loopback_family(host: str) -> int:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host must be a loopback IP literal, got {host!r}") from None
    if not ip.is_loopback:
        raise ValueError(f"only loopback addresses may be used, got {host!r}")
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def cookie_pairs(headers: Message) -> list[tuple[str, str]]:
    """(name, value) pairs from all Cookie headers; nameless cookies are skipped."""
    pairs: list[tuple[str, str]] = []
    for header in headers.get_all("Cookie") or []:
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            name = name.strip()
            if sep and name:
                pairs.append((name, value.strip()))
    return pairs


class BadRequest(Exception):
    pass


# --------------------------------------------------------------------------------------------- server


class SiteServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], family: int, site: Recorder) -> None:
        self.address_family = family
        self.site = site
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, site.handler_class)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:  # never print tracebacks
        self.site._record_error("unhandled error in request handler")

    def close_connections(self) -> None:
        """Wake up handler threads blocked on idle keep-alive connections."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)




class RouteHandler(BaseHTTPRequestHandler):
    """Plumbing of a loopback test server's request handler: dispatch by path, parameters, bodies, answers.

    ``GET_ROUTES`` maps a path to the name of the method that answers it (GET and HEAD); ``POST_ROUTES`` are
    the paths of it that also take POST; ``PREFIX_ROUTES`` maps a path prefix to a method called with the rest
    of the path (GET and HEAD only). A route method reads ``self._route_path``, ``self._param(name)`` and
    ``self._body``, and answers with ``self._send``/``self._send_page``/``self._redirect``.
    """

    protocol_version = "HTTP/1.1"
    server_version = "CrawlkeeperTestSite/1.0"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are dropped after this many seconds
    server: SiteServer

    GET_ROUTES: ClassVar[dict[str, str]] = {}
    POST_ROUTES: ClassVar[frozenset[str]] = frozenset()
    PREFIX_ROUTES: ClassVar[dict[str, str]] = {}


    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: never write anything anywhere

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    @property
    def site(self) -> Recorder:
        return self.server.site

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        self._route_path = parts.path or "/"
        self._query = parse_qs(parts.query, keep_blank_values=True)
        self._started = False
        self._body = b""
        self.site._record(self._route_path, self.command, self.headers)
        try:
            if self.command == "POST" and not self._read_body():
                return
            self._route()
        except BadRequest as exc:
            if not self._started:
                self._send_page(400, "Bad request", f'<p id="error">{html.escape(str(exc))}</p>')
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True
        except Exception as exc:
            self.site._record_error(f"{self.command} {self._route_path}: {exc!r}")
            self.close_connection = True
            if not self._started:
                with contextlib.suppress(OSError):
                    self._send_page(500, "Internal server error", "<p>The test site failed.</p>")

    def _read_body(self) -> bool:
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            # No chunked support: read nothing and don't reuse the connection.
            self.close_connection = True
            return True
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise BadRequest("invalid Content-Length")
        if length > MAX_BODY:
            self.close_connection = True
            self._send_page(413, "Payload too large", "<p>The request body is too large.</p>")
            return False
        self._body = self.rfile.read(length)
        return True

    def _route(self) -> None:
        path = self._route_path
        for prefix, prefix_name in self.PREFIX_ROUTES.items():
            if path.startswith(prefix):
                if self.command == "POST":
                    self._method_not_allowed()
                    return
                getattr(self, prefix_name)(path[len(prefix) :])
                return
        name = self.GET_ROUTES.get(path)
        if name is None:
            self._not_found()
            return
        if self.command == "POST" and path not in self.POST_ROUTES:
            self._method_not_allowed()
            return
        getattr(self, name)()

    def _param(self, name: str) -> str | None:
        values = self._query.get(name)
        return values[0] if values else None

    def _int_param(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self._param(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"{name} must be an integer") from None
        return min(max(value, lo), hi)

    def _float_param(self, name: str, default: float, lo: float, hi: float) -> float:
        raw = self._param(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise BadRequest(f"{name} must be a number") from None
        if not math.isfinite(value):
            raise BadRequest(f"{name} must be finite")
        return min(max(value, lo), hi)

    def _start(
        self,
        status: int,
        content_type: str | None,
        length: int | None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        headers = list(headers)
        if not any(key.lower() == "cache-control" for key, _ in headers):
            self.send_header("Cache-Control", "no-store")  # unless the route chose its own caching
        for key, value in headers:
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._started = True

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = HTML,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self._start(status, content_type, len(body), headers)
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_page(
        self,
        status: int,
        title: str,
        content: str,
        headers: Iterable[tuple[str, str]] = (),
        *,
        heading: str | None = None,
    ) -> None:
        self._send(status, page(title, content, heading=heading), headers=headers)

    def _redirect(self, status: int, location: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        if any(ch in location for ch in "\r\n\0"):
            raise BadRequest("redirect target contains control characters")
        location = quote(location, safe=URL_SAFE)
        link = html.escape(location)
        content = f'<p>Redirecting to <a href="{link}">{link}</a>.</p>\n' + filler("Redirect", 1)
        self._send_page(status, "Redirect", content, [("Location", location), *headers])

    def _not_found(self) -> None:
        content = (
            f'<p id="missing">There is no page at {html.escape(self._route_path)} on this site.</p>\n'
            + filler("Not found", 2)
            + '\n<p><a href="/">Back to the index</a></p>'
        )
        self._send_page(404, "Not found", content)

    def _method_not_allowed(self) -> None:
        allow = "GET, HEAD, POST" if self._route_path in self.POST_ROUTES else "GET, HEAD"
        self._send_page(405, "Method not allowed", filler("Method not allowed", 1), [("Allow", allow)])
