"""A test-only hostile website on loopback: decompression bombs, endless streams, popups, background beacons,
memory hogs and state writers. Never shipped (it lives under ``tests/``): nothing here is useful to a user.

    with HostileSite() as site:
        site.url("/gzip-bomb?mb=100")   # ~100 KB on the wire, 100 MB of HTML once inflated
        site.hits["/beacon"]            # requests that reached a path
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gzip
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

_FILLER = "<p>" + "hostile page filler text " * 40 + "</p>\n"  # ~1 KB, compresses ~1000:1 in bulk
_HTML = "text/html; charset=utf-8"


@functools.lru_cache(maxsize=4)
def gzip_bomb(mb: int) -> bytes:
    """``mb`` MB of HTML, gzipped (100 MB -> ~100 KB); built once per size."""
    out = io.BytesIO()
    chunk = (_FILLER * 1024).encode()  # ~1 MB
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        gz.write(b"<!doctype html><html><head><title>bomb</title></head><body>\n")
        written = 0
        while written < mb * 1_048_576:
            gz.write(chunk)
            written += len(chunk)
        gz.write(b"</body></html>\n")
    return out.getvalue()


def _page(title: str, body: str, script: str = "") -> bytes:
    return (f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1>\n"
            f"<p>{_FILLER}</p>{body}<script>{script}</script></body></html>").encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    site: HostileSite


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        site = self.server.site
        with site.lock:
            site.hits[parts.path] += 1
        route = getattr(self, "_r_" + parts.path.strip("/").replace("-", "_"), None)
        try:
            if route is None:
                self._send(404, _page("missing", ""))
            else:
                route(query)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True

    def _send(self, status: int, body: bytes, content_type: str = _HTML,
              headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if not any(name.lower() == "cache-control" for name, _ in headers):
            self.send_header("Cache-Control", "no-store")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    # -- routes ----------------------------------------------------------------------------------

    def _r_(self, query: dict[str, str]) -> None:
        self._send(200, _page("hostile index", "<p>a harmless page</p>"))

    def _r_gzip_bomb(self, query: dict[str, str]) -> None:
        """A small gzip body (with an honest, small Content-Length) that inflates to ``mb`` MB of HTML."""
        body = gzip_bomb(int(query.get("mb", "100")))
        self._send(200, body, headers=(("Content-Encoding", "gzip"),))

    def _r_stream(self, query: dict[str, str]) -> None:
        """Chunked HTML without Content-Length, never ending (until the client goes or the site stops)."""
        self.send_response(200)
        self.send_header("Content-Type", _HTML)
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
        self._send(200, _page("big fetch", "<p id=x>fetching</p>",
                              "fetch('/stream').then(r => r.text()).then(t => { window.t = t; });"))

    def _r_alloc(self, query: dict[str, str]) -> None:
        """A page whose script allocates memory without end: JavaScript objects (``kind=heap``, bounded by
        V8's heap limit) or ArrayBuffers (``kind=buffers``: outside that heap, only a process limit stops it)."""
        if query.get("kind") == "buffers":
            grow = "window.hog.push(new Uint8Array(16 * 1048576).fill(7));"  # filled: really resident
        else:
            grow = "for (let i = 0; i < 20; i++) window.hog.push(new Array(100000).fill(Math.random()));"
        self._send(200, _page("alloc", "<p>allocating</p>",
                              f"window.hog = []; (function grow() {{ {grow} setTimeout(grow, 20); }})();"))

    def _r_popups(self, query: dict[str, str]) -> None:
        n = int(query.get("n", "30"))
        self._send(200, _page("popups", "<p>opening popups</p>",
                              f"for (let i = 0; i < {n}; i++) window.open('/interval?popup=' + i, '_blank');"
                              f"for (let i = 0; i < 3; i++) window.open('/interval?noopener=' + i, '_blank',"
                              " 'noopener');"))

    def _r_interval(self, query: dict[str, str]) -> None:
        """A page that keeps making requests in the background (every 50 ms) for as long as it lives."""
        self._send(200, _page("interval", "<p>beaconing</p>",
                              "setInterval(() => fetch('/beacon?t=' + Date.now()).catch(() => {}), 50);"
                              "setInterval(() => { new Image().src = '/beacon?img=' + Date.now(); }, 50);"))

    def _r_beacon(self, query: dict[str, str]) -> None:
        self._send(204, b"", "text/plain")

    def _r_cacheable(self, query: dict[str, str]) -> None:
        """A page and an image any cache may keep for 10 minutes."""
        self._send(200, _page("cacheable", '<img src="/cacheable-img">'), headers=(("Cache-Control", "max-age=600"),))

    def _r_cacheable_img(self, query: dict[str, str]) -> None:
        self._send(200, b"GIF89a", "image/gif", headers=(("Cache-Control", "max-age=600"),))

    def _r_set_state(self, query: dict[str, str]) -> None:
        """Sets a cookie by header and writes localStorage/sessionStorage from a script."""
        self._send(200, _page("set state", "<p>state written</p>",
                              "localStorage.setItem('ls_mark', 'LEAKED-LS');"
                              "sessionStorage.setItem('ss_mark', 'LEAKED-SS');"
                              "document.cookie = 'js_mark=LEAKED-JS; path=/';"),
                   headers=(("Set-Cookie", "hdr_mark=LEAKED-HDR; Path=/"),))

    def _r_read_state(self, query: dict[str, str]) -> None:
        """Shows what the browser sent and what storage holds, as page text."""
        sent = self.headers.get("Cookie", "")
        self._send(200, _page("read state", f"<p id=sent>sent cookies: [{sent}]</p><p id=js></p>",
                              "document.getElementById('js').textContent = 'storage: [' + document.cookie + '|' +"
                              " (localStorage.getItem('ls_mark') || '') + '|' +"
                              " (sessionStorage.getItem('ss_mark') || '') + ']';"))


class HostileSite:
    """The hostile routes on 127.0.0.1, served from a background thread."""

    def __init__(self) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.streamed = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HostileSite:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.site = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            with contextlib.suppress(OSError):
                self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def count(self, path: str) -> int:
        with self.lock:
            return self.hits[path]
