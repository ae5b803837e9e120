"""Test-only websites on loopback, for crawlkeeper's own tests and benchmarks (never shipped).

- ``ReposTestSite``: the shipped :class:`crawlkeeper.testing.site.TestSite` (login site) plus the adversarial
  routes only this repo needs: ``/long``, ``/js``, ``/slow``, ``/loop``, ``/big``, ``/redirect-chain``,
  ``/status/N``, and the egress probes ``/subresources``, ``/sw.js``, ``/ws``. The ``test_site`` fixture serves it.
- ``HitCounter``: a "sentinel" server that counts every TCP connection it accepts (plain requests, CONNECT
  tunnels, raw connections), answers a tiny 200 and closes. Egress tests point browsers at it and assert that
  its ``hits`` stays at zero.
- ``HostileSite``: decompression bombs, endless streams, popups, background beacons, memory hogs and state
  writers (``site.url("/gzip-bomb?mb=100")``, ``site.count("/beacon")``).
- ``ExtraSite``: routes registered per test module, ``site.page(path, html)`` or ``site.route(path, handler)``
  where a handler gets a ``Request`` and returns ``(status, headers, body)``; every request is recorded in
  ``site.requests`` as ``(method, path_with_query, user_agent)``.

Importable as ``sites``: pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in pyproject.toml), the
benchmarks insert it themselves.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import functools
import gzip
import hashlib
import html
import io
import json
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from crawlkeeper.testing.serving import (
    HTML,
    SENTENCES,
    BadRequest,
    RouteHandler,
    SiteServer,
    filler,
    loopback_family,
    page_text,
    url_host,
)
from crawlkeeper.testing.site import SiteHandler, TestSite

__all__ = ["ExtraSite", "HitCounter", "HostileSite", "ReposTestSite", "Request", "Response", "gzip_bomb",
           "html_page"]

# ============================================================================== ReposTestSite (TestSite + routes)

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_SLOW_S = 120.0
_MAX_BIG_MB = 1024.0
_MAX_LONG_N = 200_000
_MAX_CHAIN = 50
_LONG_WORDS = ("amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "island", "juniper")


def _js_string(value: str) -> str:
    """A JavaScript string literal that is also safe inside an inline <script>."""
    return json.dumps(value).replace("</", "<\\/").replace("<!--", "<\\!--")


def _long_paragraph(i: int) -> str:
    w1 = _LONG_WORDS[i % len(_LONG_WORDS)]
    w2 = _LONG_WORDS[(i * 7 + 3) % len(_LONG_WORDS)]
    return (
        f"<p>Paragraph {i}: the {w1} path leads past the {w2} stones toward line number {i} of this page.</p>"
    )


_BIG_SENTENCE = (
    "Filler for the big page; it exists only to make the document heavy for crawler and memory tests."
)


def _big_paragraph(i: int) -> str:
    # Fixed width numbering keeps every paragraph the same length, so Content-Length is exact.
    return f"<p>Big paragraph {i:09d}: {_BIG_SENTENCE}</p>\n"


_BIG_PARAGRAPH_LEN = len(_big_paragraph(0).encode("ascii"))


class ReposHandler(SiteHandler):
    """The shipped login site's routes plus slow, heavy, looping and egress-probing pages."""

    GET_ROUTES: ClassVar[dict[str, str]] = {
        **SiteHandler.GET_ROUTES,
        "/redirect-chain": "_redirect_chain",
        "/long": "_long",
        "/js": "_js",
        "/slow": "_slow",
        "/loop": "_loop",
        "/big": "_big",
        "/subresources": "_subresources",
        "/sw.js": "_sw_js",
        "/ws": "_ws",
    }
    PREFIX_ROUTES: ClassVar[dict[str, str]] = {**SiteHandler.PREFIX_ROUTES, "/status/": "_status"}
    NAV_LINKS = (*SiteHandler.NAV_LINKS[:3], ("/long", "Long page"), *SiteHandler.NAV_LINKS[3:])
    INTERNAL_LINKS = (*SiteHandler.INTERNAL_LINKS[:3], ("/long?n=10", "A short long page"),
                      *SiteHandler.INTERNAL_LINKS[3:])

    def _redirect_chain(self) -> None:
        n = self._int_param("n", 3, 0, _MAX_CHAIN)
        self._redirect(302, f"/redirect-chain?n={n - 1}" if n > 1 else "/")

    def _long(self) -> None:
        n = self._int_param("n", 2000, 0, _MAX_LONG_N)
        intro = f'<p class="intro">This page has {n} numbered paragraphs. {SENTENCES[0]} {SENTENCES[5]}'
        paragraphs = "\n".join(_long_paragraph(i) for i in range(1, n + 1))
        self._send_page(200, "Long page", f"{intro}</p>\n{paragraphs}")

    def _js(self) -> None:
        delay = self._int_param("delay_ms", 500, 0, 120_000)
        late_filler = _js_string(" ".join(SENTENCES[1:4]))
        content = (
            '<div id="status">Loading...</div>\n'
            + filler("Script page", 1)
            + "\n<script>\nsetTimeout(function () {\n"
            '  var late = document.createElement("div");\n'
            '  late.id = "late";\n'
            '  late.textContent = "Late content arrived";\n'
            "  document.body.appendChild(late);\n"
            '  var p = document.createElement("p");\n'
            '  p.className = "late-filler";\n'
            f"  p.textContent = {late_filler};\n"
            "  document.body.appendChild(p);\n"
            '  document.getElementById("status").textContent = "Loaded.";\n'
            f"}}, {delay});\n</script>"
        )
        self._send_page(200, "Script page", content)

    def _slow(self) -> None:
        seconds = self._float_param("s", 5.0, 0.0, _MAX_SLOW_S)
        if self.site._stop_event.wait(seconds):
            self.close_connection = True  # server is stopping: drop the request without an answer
            return
        content = f'<p id="slow">This page waited {seconds:g} seconds before answering.</p>\n' + filler(
            "Slow page", 2
        )
        self._send_page(200, "Slow page", content)

    def _loop(self) -> None:
        mode = self._param("mode") or "inline"
        if mode == "load":
            script = 'window.addEventListener("load", function () { while (true) {} });'
        else:
            script = "while (true) {}"
        content = (
            '<p id="loop">The script at the end of this page never finishes.</p>\n'
            + filler("Loop page", 2)
            + f"\n<script>{script}</script>"
        )
        self._send_page(200, "Loop page", content)

    def _big(self) -> None:
        mb = self._float_param("mb", 30.0, 0.0, _MAX_BIG_MB)
        text = page_text("Big page", '<p class="intro">' + SENTENCES[2] + "</p>\n" + filler("Big", 1))
        head_text, _, tail_text = text.rpartition("</body>")
        head = head_text.encode("utf-8")
        tail = ("</body>" + tail_text).encode("utf-8")
        remaining = max(0, int(mb * 1024 * 1024) - len(head) - len(tail))
        count = math.ceil(remaining / _BIG_PARAGRAPH_LEN)
        self._start(200, HTML, len(head) + len(tail) + count * _BIG_PARAGRAPH_LEN)
        if self.command == "HEAD":
            return
        self.wfile.write(head)
        stop = self.site._stop_event
        step = 1024  # ~130 KB per write
        for first in range(0, count, step):
            if stop.is_set():
                self.close_connection = True
                return
            chunk = "".join(_big_paragraph(i) for i in range(first, min(first + step, count)))
            self.wfile.write(chunk.encode("ascii"))
        self.wfile.write(tail)

    def _status(self, raw: str) -> None:
        try:
            code = int(raw)
        except ValueError:
            self._not_found()
            return
        if not 200 <= code <= 599:
            self._not_found()
            return
        if code in (204, 304):
            self._start(code, None, None)
            return
        content = f'<p id="status-code">This response deliberately has status {code}.</p>\n' + filler(
            f"Status {code}", 2
        )
        self._send_page(code, f"Status {code}", content)

    def _target_param(self) -> str:
        target = self._param("target") or ""
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise BadRequest("target must be an absolute http(s) URL")
        if any(ch in target for ch in "\r\n\0"):
            raise BadRequest("target contains control characters")
        return target

    def _subresources(self) -> None:
        target = self._target_param()
        ws_target = ("wss" if target.startswith("https") else "ws") + target[target.index(":") :]
        attr = html.escape(target, quote=True)
        content = (
            "<p>This page references an outside address in many different ways.</p>\n"
            + filler("Subresources", 2)
            + f'\n<img id="probe-img" src="{attr}" alt="probe image">\n'
            f'<iframe id="probe-frame" src="{attr}" title="probe frame"></iframe>\n'
            "<script>\n(function () {\n"
            f"  var target = {_js_string(target)};\n"
            f"  var wsTarget = {_js_string(ws_target)};\n"
            "  try {\n"
            '    fetch(target, {mode: "no-cors", cache: "no-store"}).catch(function () {});\n'
            "  } catch (e) {}\n"
            "  try { var ws = new WebSocket(wsTarget); ws.onerror = function () {}; } catch (e) {}\n"
            '  if ("serviceWorker" in navigator) {\n'
            '    navigator.serviceWorker.register("/sw.js?target=" + encodeURIComponent(target))'
            ".catch(function () {});\n"
            "  }\n})();\n</script>"
        )
        self._send_page(200, "Subresources", content)

    def _sw_js(self) -> None:
        target = self._target_param()
        body = (
            f"const TARGET = {_js_string(target)};\n"
            "function probe() {\n"
            '  return fetch(TARGET, {mode: "no-cors", cache: "no-store"}).catch(function () {});\n'
            "}\n"
            'self.addEventListener("install", function (event) {\n'
            "  self.skipWaiting();\n  event.waitUntil(probe());\n});\n"
            'self.addEventListener("activate", function (event) {\n  event.waitUntil(probe());\n});\n'
        ).encode()
        self._send(200, body, "application/javascript; charset=utf-8")

    def _ws(self) -> None:
        key = (self.headers.get("Sec-WebSocket-Key") or "").strip()
        upgrade = (self.headers.get("Upgrade") or "").strip().lower()
        if self.command != "GET" or upgrade != "websocket" or not key:
            content = "<p>This endpoint only accepts WebSocket upgrades.</p>\n" + filler("WebSocket", 1)
            self._send_page(426, "Upgrade required", content, [("Upgrade", "websocket")])
            return
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode("ascii")).digest()).decode("ascii")
        self.close_connection = True
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self._started = True
        self.site._stop_event.wait(0.5)
        with contextlib.suppress(OSError):
            self.wfile.write(b"\x88\x02\x03\xe8")  # close frame, status 1000


class ReposTestSite(TestSite):
    """``TestSite`` with this repo's test-only routes (see ``ReposHandler``)."""

    handler_class = ReposHandler


# ============================================================================== HitCounter

class HitCounter:
    """Sentinel server: counts every accepted TCP connection, answers a tiny 200 and closes."""

    __test__ = False

    def __init__(self, host: str = "127.0.0.3", port: int = 0) -> None:
        self._family = loopback_family(host)
        self.host = host
        self.port = port
        self.request_lines: list[str] = []  # first line of each request that sent one
        self._hits = 0
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()

    def start(self) -> HitCounter:
        if self._sock is not None:
            return self
        self._stop_event = threading.Event()
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.settimeout(0.05)
        self.port = int(sock.getsockname()[1])
        self._sock = sock
        self._thread = threading.Thread(
            target=self._accept_loop, name=f"ck-hit-counter-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        sock, thread = self._sock, self._thread
        if sock is None:
            return
        self._stop_event.set()
        if thread is not None:
            thread.join(timeout=2)
        sock.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._sock = None
        self._thread = None

    def __enter__(self) -> HitCounter:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def hits(self) -> int:
        with self._lock:
            return self._hits

    @property
    def base_url(self) -> str:
        if self._sock is None and self.port == 0:
            raise RuntimeError("HitCounter is not started")
        return f"http://{url_host(self.host)}:{self.port}"

    def url(self, path: str = "/") -> str:
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url + path

    def wait_for_hits(self, minimum: int = 1, timeout: float = 2.0) -> bool:
        """Poll until ``hits >= minimum``; True if reached within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self.hits >= minimum:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def reset(self) -> None:
        with self._lock:
            self._hits = 0
            self.request_lines.clear()

    def _accept_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop_event.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._hits += 1
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(1.0)
            data = b""
            try:
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            if data:
                line = data.split(b"\r\n", 1)[0][:2000].decode("latin-1")
                with self._lock:
                    self.request_lines.append(line)
            with contextlib.suppress(OSError):
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                    b"Connection: close\r\n\r\nok"
                )
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()


# ============================================================================== HostileSite

_FILLER = "<p>" + "hostile page filler text " * 40 + "</p>\n"  # ~1 KB, compresses ~1000:1 in bulk


@functools.lru_cache(maxsize=4)
def gzip_bomb(mb: float) -> bytes:
    """``mb`` MB of HTML, gzipped (100 MB -> ~100 KB); built once per size."""
    out = io.BytesIO()
    chunk = (_FILLER * 64).encode()  # ~64 KB
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        gz.write(b"<!doctype html><html><head><title>bomb</title></head><body>\n")
        written = 0
        while written < mb * 1_048_576:
            gz.write(chunk)
            written += len(chunk)
        gz.write(b"</body></html>\n")
    return out.getvalue()


def _hostile_page(title: str, body: str, script: str = "") -> bytes:
    return (f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1>\n"
            f"<p>{_FILLER}</p>{body}<script>{script}</script></body></html>").encode()


_Site = TypeVar("_Site", bound="_LoopbackSite")


class _LoopbackSite:
    """Lifecycle of the test-only sites below on :class:`crawlkeeper.testing.serving.SiteServer` (the plumbing
    under the shipped ``TestSite``): a threaded loopback server that never prints, ``with`` or start/stop,
    ``url(path)``; a handler's unexpected errors land in ``errors``."""

    handler_class: ClassVar[type[BaseHTTPRequestHandler]]

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._family = loopback_family(host)
        self.host = host
        self.port = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.errors: list[str] = []
        self._server: SiteServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self: _Site) -> _Site:
        server = SiteServer((self.host, 0), self._family, self)
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()  # endless responses end
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
            self._server = None

    @property
    def base_url(self) -> str:
        return f"http://{url_host(self.host)}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def _record(self, path: str, method: str, headers: Message) -> None:
        return None

    def _record_error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)


class _HostileHandler(RouteHandler):
    """Routes are the methods ``_r_<path>`` (``-`` as ``_``), called with the query's last values."""

    def _route(self) -> None:
        route = getattr(self, "_r_" + self._route_path.strip("/").replace("-", "_"), None)
        if route is None:
            self._send(404, _hostile_page("missing", ""))
        else:
            route({k: v[-1] for k, v in self._query.items()})

    # -- routes ----------------------------------------------------------------------------------

    def _r_(self, query: dict[str, str]) -> None:
        self._send(200, _hostile_page("hostile index", "<p>a harmless page</p>"))

    def _r_gzip_bomb(self, query: dict[str, str]) -> None:
        """A small gzip body (with an honest, small Content-Length) that inflates to ``mb`` MB of HTML."""
        body = gzip_bomb(float(query.get("mb", "100")))
        self._send(200, body, headers=(("Content-Encoding", "gzip"),))

    def _r_stream(self, query: dict[str, str]) -> None:
        """Chunked HTML without Content-Length, never ending (until the client goes or the site stops)."""
        self.send_response(200)
        self.send_header("Content-Type", HTML)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = (_FILLER * 256).encode()  # ~256 KB
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        head = b"<!doctype html><html><body>\n"
        self.wfile.write(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        stop = self.server.site.stopping
        while not stop.is_set():
            self.wfile.write(framed)
            with self.server.site.lock:
                self.server.site.streamed += len(chunk)
        self.close_connection = True

    def _r_big_fetch(self, query: dict[str, str]) -> None:
        """A normal page whose script fetches the endless stream (a subresource, not the document)."""
        self._send(200, _hostile_page("big fetch", "<p id=x>fetching</p>",
                              "fetch('/stream').then(r => r.text()).then(t => { window.t = t; });"))

    def _r_framed(self, query: dict[str, str]) -> None:
        """A harmless page framing ``src`` (another site's page: a cross-site iframe runs in its own renderer)."""
        src = html.escape(query.get("src", "/"), quote=True)
        self._send(200, _hostile_page("framed", f'<iframe src="{src}" width=300 height=200></iframe>'))

    def _r_alloc(self, query: dict[str, str]) -> None:
        """A page whose script allocates memory without end: JavaScript objects (``kind=heap``, bounded by
        V8's heap limit) or ArrayBuffers (``kind=buffers``: outside that heap, only a process limit stops it)."""
        if query.get("kind") == "buffers":
            grow = "window.hog.push(new Uint8Array(16 * 1048576).fill(7));"  # filled: really resident
        else:
            grow = "for (let i = 0; i < 20; i++) window.hog.push(new Array(100000).fill(Math.random()));"
        self._send(200, _hostile_page("alloc", "<p>allocating</p>",
                              f"window.hog = []; (function grow() {{ {grow} setTimeout(grow, 20); }})();"))

    def _r_popups(self, query: dict[str, str]) -> None:
        n = int(query.get("n", "30"))
        self._send(200, _hostile_page("popups", "<p>opening popups</p>",
                              f"for (let i = 0; i < {n}; i++) window.open('/interval?popup=' + i, '_blank');"
                              f"for (let i = 0; i < 3; i++) window.open('/interval?noopener=' + i, '_blank',"
                              " 'noopener');"))

    def _r_interval(self, query: dict[str, str]) -> None:
        """A page that keeps making requests in the background (every 50 ms) for as long as it lives."""
        self._send(200, _hostile_page("interval", "<p>beaconing</p>",
                              "setInterval(() => fetch('/beacon?t=' + Date.now()).catch(() => {}), 50);"
                              "setInterval(() => { new Image().src = '/beacon?img=' + Date.now(); }, 50);"))

    def _r_beacon(self, query: dict[str, str]) -> None:
        self._send(204, b"", "text/plain")

    def _r_cacheable(self, query: dict[str, str]) -> None:
        """A page and an image any cache may keep for 10 minutes."""
        self._send(200, _hostile_page("cacheable", '<img src="/cacheable-img">'),
                   headers=(("Cache-Control", "max-age=600"),))

    def _r_cacheable_img(self, query: dict[str, str]) -> None:
        self._send(200, b"GIF89a", "image/gif", headers=(("Cache-Control", "max-age=600"),))

    def _r_set_state(self, query: dict[str, str]) -> None:
        """Sets a cookie by header and writes localStorage/sessionStorage from a script."""
        self._send(200, _hostile_page("set state", "<p>state written</p>",
                              "localStorage.setItem('ls_mark', 'LEAKED-LS');"
                              "sessionStorage.setItem('ss_mark', 'LEAKED-SS');"
                              "document.cookie = 'js_mark=LEAKED-JS; path=/';"),
                   headers=(("Set-Cookie", "hdr_mark=LEAKED-HDR; Path=/"),))

    def _r_read_state(self, query: dict[str, str]) -> None:
        """Shows what the browser sent and what storage holds, as page text."""
        sent = self.headers.get("Cookie", "")
        self._send(200, _hostile_page("read state", f"<p id=sent>sent cookies: [{sent}]</p><p id=js></p>",
                              "document.getElementById('js').textContent = 'storage: [' + document.cookie + '|' +"
                              " (localStorage.getItem('ls_mark') || '') + '|' +"
                              " (sessionStorage.getItem('ss_mark') || '') + ']';"))


class HostileSite(_LoopbackSite):
    """The hostile routes on a loopback address (127.0.0.1 by default), served from a background thread;
    ``count(path)`` is how many requests reached ``path``."""

    handler_class = _HostileHandler

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)  # another loopback address (127.0.0.3) is another site: its frames are cross-site
        self.hits: collections.Counter[str] = collections.Counter()
        self.streamed = 0

    def _record(self, path: str, method: str, headers: Message) -> None:
        with self.lock:
            self.hits[path] += 1

    def count(self, path: str) -> int:
        with self.lock:
            return self.hits[path]


# ============================================================================== ExtraSite

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


class _ExtraHandler(RouteHandler):
    """Answers from the routes registered on its :class:`ExtraSite` (exact paths, then ``prefix*``)."""

    server: SiteServer

    def _route(self) -> None:
        site: ExtraSite = self.server.site  # type: ignore[assignment]
        with site.lock:
            site.requests.append((self.command, self.path, self.headers.get("user-agent", "")))
        handler = site.routes.get(self._route_path) or site._prefix_route(self._route_path)
        if handler is None:
            status, headers, body = 404, {"content-type": "text/html"}, html_page("Not found", "<p>none</p>")
        else:
            try:
                status, headers, body = handler(Request(self.command, self._route_path, self._query, self.headers))
            except Exception as exc:  # a test bug: answer 500 rather than hanging the browser
                status, headers, body = 500, {"content-type": "text/plain"}, repr(exc).encode()
        rest = [(k, v) for k, v in headers.items() if k.lower() != "content-type"]
        kind = next((v for k, v in headers.items() if k.lower() == "content-type"), HTML)
        self._send(status, body, kind, rest)


class ExtraSite(_LoopbackSite):
    """``with ExtraSite() as site: site.page("/x", "<p>..</p>"); site.url("/x")``."""

    handler_class = _ExtraHandler

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.routes: dict[str, Handler] = {}
        self.requests: list[tuple[str, str, str]] = []

    def _prefix_route(self, path: str) -> Handler | None:
        for prefix, handler in self.routes.items():
            if prefix.endswith("*") and path.startswith(prefix[:-1]):
                return handler
        return None

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
