"""A small, realistic test website served on a loopback address from a background thread.

For plugin authors (a login form to test a login plugin against), the ``crawlkeeper demo`` command and
crawlkeeper's own tests. Standard library only.

    with TestSite() as site:
        site.url("/login")          # -> "http://127.0.0.1:PORT/login"
        site.hits["/private"]       # how often a path was requested
        site.session_token("alice") # a valid ``ck_session`` cookie value, for injecting cookies directly

Routes: ``/`` (index), ``/login`` (GET form, POST ``username``/``password``/``next``), ``/private`` (needs a
session), ``/logout``, ``/cookies`` (cookie names sent), ``/set-cookie?name=&value=``,
``/redirect?to=&status=``, ``/links``, ``/form-echo`` (field names posted) and ``/tiny``.

To add routes, subclass :class:`SiteHandler` (extend ``GET_ROUTES``, ``POST_ROUTES`` or ``PREFIX_ROUTES``
with handler method names) and set it as ``handler_class`` of a :class:`TestSite` subclass.

Only loopback addresses are accepted. Nothing here ever prints; cookie *values* are never recorded
(only the session store keeps the tokens it issued, because it has to).
"""

from __future__ import annotations

import collections
import contextlib
import email
import email.policy
import hmac
import html
import ipaddress
import math
import re
import secrets
import socket
import threading
from collections.abc import Iterable
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote, urlsplit

__all__ = ["SESSION_COOKIE", "SiteHandler", "TestSite"]

SESSION_COOKIE = "ck_session"
DEFAULT_USERS: dict[str, str] = {"alice": "wonderland", "bob": "builder"}

_MAX_BODY = 10 * 1024 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_HTML = "text/html; charset=utf-8"
# RFC 6265: cookie-name is an RFC 7230 token, cookie-value is *cookie-octet.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # fullmatch: "$" allows a trailing newline
_COOKIE_VALUE_RE = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*")
_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))  # printable ASCII minus space: left as-is
_REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization"})

_SENTENCES = (
    "The crawler visits every page of this little site and reads the text that a person would see.",
    "Each paragraph is deterministic, so tests can compare the extracted markdown from run to run.",
    "Headless Chromium renders the markup, runs the scripts and hands the final document to the parser.",
    "Nothing on this site talks to the outside world unless a test explicitly asks it to do so.",
    "Sessions, cookies, redirects and slow responses are all simulated here on a loopback address.",
    "A page with too little visible text may be mistaken for an empty or broken page by a crawler.",
)


def _filler(topic: str, count: int = 2) -> str:
    """Deterministic filler paragraphs (each well over 200 visible characters)."""
    out = []
    for i in range(count):
        a = _SENTENCES[i % len(_SENTENCES)]
        b = _SENTENCES[(i + 2) % len(_SENTENCES)]
        c = _SENTENCES[(i + 4) % len(_SENTENCES)]
        out.append(f'<p class="filler">{html.escape(topic)}: {a} {b} {c}</p>')
    return "\n".join(out)


def _page(title: str, content: str, *, heading: str | None = None, head_extra: str = "") -> bytes:
    return _page_text(title, content, heading=heading, head_extra=head_extra).encode("utf-8")


def _page_text(title: str, content: str, *, heading: str | None = None, head_extra: str = "") -> str:
    h1 = html.escape(title if heading is None else heading)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n{head_extra}</head>\n<body>\n<h1>{h1}</h1>\n{content}\n"
        "</body>\n</html>\n"
    )


def _loopback_family(host: str) -> int:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host must be a loopback IP literal, got {host!r}") from None
    if not ip.is_loopback:
        raise ValueError(f"only loopback addresses may be used, got {host!r}")
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _cookie_pairs(headers: Message) -> list[tuple[str, str]]:
    """(name, value) pairs from all Cookie headers; nameless cookies are skipped."""
    pairs: list[tuple[str, str]] = []
    for header in headers.get_all("Cookie") or []:
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            name = name.strip()
            if sep and name:
                pairs.append((name, value.strip()))
    return pairs


class _BadRequest(Exception):
    pass


# --------------------------------------------------------------------------------------------- server


class _SiteServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], family: int, site: TestSite) -> None:
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


class SiteHandler(BaseHTTPRequestHandler):
    """The request handler of :class:`TestSite`; subclass it to add routes (see the module docstring).

    ``GET_ROUTES`` maps a path to the name of the method that answers it (GET and HEAD); ``POST_ROUTES`` are
    the paths of it that also take POST; ``PREFIX_ROUTES`` maps a path prefix to a method called with the rest
    of the path (GET and HEAD only). A route method reads ``self._route_path``, ``self._param(name)`` and
    ``self._body``, and answers with ``self._send``/``self._send_page``/``self._redirect``.
    """

    protocol_version = "HTTP/1.1"
    server_version = "CrawlkeeperTestSite/1.0"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are dropped after this many seconds
    server: _SiteServer

    GET_ROUTES: ClassVar[dict[str, str]] = {
        "/": "_index",
        "/login": "_login",
        "/private": "_private",
        "/logout": "_logout",
        "/cookies": "_cookies",
        "/set-cookie": "_set_cookie",
        "/redirect": "_redirect_route",
        "/links": "_links",
        "/form-echo": "_form_echo",
        "/tiny": "_tiny",
    }
    POST_ROUTES: ClassVar[frozenset[str]] = frozenset({"/login", "/logout", "/form-echo"})
    PREFIX_ROUTES: ClassVar[dict[str, str]] = {}

    # ------------------------------------------------------------------ plumbing

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: never write anything anywhere

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    @property
    def site(self) -> TestSite:
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
        except _BadRequest as exc:
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
            raise _BadRequest("invalid Content-Length")
        if length > _MAX_BODY:
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
            raise _BadRequest(f"{name} must be an integer") from None
        return min(max(value, lo), hi)

    def _float_param(self, name: str, default: float, lo: float, hi: float) -> float:
        raw = self._param(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise _BadRequest(f"{name} must be a number") from None
        if not math.isfinite(value):
            raise _BadRequest(f"{name} must be finite")
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
        self.send_header("Cache-Control", "no-store")
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
        content_type: str = _HTML,
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
        self._send(status, _page(title, content, heading=heading), headers=headers)

    def _redirect(self, status: int, location: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        if any(ch in location for ch in "\r\n\0"):
            raise _BadRequest("redirect target contains control characters")
        location = quote(location, safe=_URL_SAFE)
        link = html.escape(location)
        content = f'<p>Redirecting to <a href="{link}">{link}</a>.</p>\n' + _filler("Redirect", 1)
        self._send_page(status, "Redirect", content, [("Location", location), *headers])

    def _not_found(self) -> None:
        content = (
            f'<p id="missing">There is no page at {html.escape(self._route_path)} on this site.</p>\n'
            + _filler("Not found", 2)
            + '\n<p><a href="/">Back to the index</a></p>'
        )
        self._send_page(404, "Not found", content)

    def _method_not_allowed(self) -> None:
        allow = "GET, HEAD, POST" if self._route_path in self.POST_ROUTES else "GET, HEAD"
        self._send_page(405, "Method not allowed", _filler("Method not allowed", 1), [("Allow", allow)])

    def _session_user(self) -> str | None:
        for name, value in _cookie_pairs(self.headers):
            if name == SESSION_COOKIE:
                user = self.site._user_for_token(value)
                if user is not None:
                    return user
        return None

    def _form_fields(self) -> list[tuple[str, str]]:
        ctype = self.headers.get("Content-Type", "")
        if ctype.lower().startswith("multipart/form-data"):
            msg = email.message_from_bytes(
                b"Content-Type: " + ctype.encode("latin-1", "replace") + b"\r\n\r\n" + self._body,
                policy=email.policy.HTTP,
            )
            fields: list[tuple[str, str]] = []
            if msg.is_multipart():
                for part in msg.iter_parts():  # type: ignore[attr-defined]
                    name = part.get_param("name", header="content-disposition")
                    if not name:
                        continue
                    payload = part.get_payload(decode=True) or b""
                    fields.append((str(name), payload.decode("utf-8", "replace")))
            return fields
        text = self._body.decode("utf-8", "replace")
        out: list[tuple[str, str]] = []
        for name, values in parse_qs(text, keep_blank_values=True).items():
            out.extend((name, v) for v in values)
        return out

    # ------------------------------------------------------------------ routes

    def _index(self) -> None:
        content = (
            "<p>This is a small website used to test crawlkeeper against a real headless browser.</p>\n"
            '<ul id="nav">\n'
            '<li><a href="/login">Log in</a></li>\n'
            '<li><a href="/private">Private area</a></li>\n'
            '<li><a href="/cookies">Cookie echo</a></li>\n'
            '<li><a href="/long">Long page</a></li>\n'
            '<li><a href="/links">Links</a></li>\n'
            "</ul>\n" + _filler("Index", 2)
        )
        self._send_page(200, "Crawlkeeper test site", content)

    def _login_page(self, status: int, next_path: str | None, error: bool) -> None:
        error_html = '<p class="error">Invalid username or password</p>\n' if error else ""
        hidden = (
            f'<input type="hidden" name="next" value="{html.escape(next_path)}">\n'
            if next_path and _safe_local_path(next_path)
            else ""
        )
        content = (
            f"{error_html}<p>Log in with a test account to reach the private area of this site.</p>\n"
            '<form id="login" method="post" action="/login">\n'
            f"{hidden}"
            '<label for="username">Username</label>\n<input name="username" id="username">\n'
            '<label for="password">Password</label>\n'
            '<input type="password" name="password" id="password">\n'
            '<button type="submit" id="submit">Log in</button>\n'
            "</form>\n" + _filler("Login", 2)
        )
        self._send_page(status, "Log in", content)

    def _login(self) -> None:
        next_query = self._param("next")
        if self.command != "POST":
            self._login_page(200, next_query, error=False)
            return
        form: dict[str, str] = {}
        for name, value in self._form_fields():
            form.setdefault(name, value)
        next_path = form.get("next") or next_query
        username = form.get("username", "")
        if not self.site._check_credentials(username, form.get("password", "")):
            self._login_page(200, next_path, error=True)
            return
        token = self.site.session_token(username)
        target = next_path if next_path and _safe_local_path(next_path) else "/private"
        cookie = f"{SESSION_COOKIE}={token}; HttpOnly; Path=/; SameSite=Lax"
        self._redirect(303, target, [("Set-Cookie", cookie)])

    def _private(self) -> None:
        user = self._session_user()
        if user is None:
            self._redirect(303, "/login?next=/private")
            return
        name = html.escape(user)
        content = (
            f'<p id="welcome">Welcome, {name}!</p>\n'
            f'<p class="private">This paragraph is only visible when logged in: secret-page-for-{name}.</p>\n'
            + _filler("Private", 2)
            + '\n<p><a href="/logout">Log out</a></p>'
        )
        self._send_page(200, "Private area", content)

    def _logout(self) -> None:
        for name, value in _cookie_pairs(self.headers):
            if name == SESSION_COOKIE:
                self.site._drop_token(value)
        cookie = f"{SESSION_COOKIE}=; Max-Age=0; HttpOnly; Path=/; SameSite=Lax"
        self._redirect(303, "/login", [("Set-Cookie", cookie)])

    def _cookies(self) -> None:
        names = sorted({name for name, _ in _cookie_pairs(self.headers)})
        items = "".join(f"<li>{html.escape(n)}</li>" for n in names)
        content = (
            f"<p>The browser sent {len(names)} cookie(s). Only their names are shown here.</p>\n"
            f'<ul id="cookie-names">{items}</ul>\n' + _filler("Cookie echo", 2)
        )
        self._send_page(200, "Cookie echo", content)

    def _set_cookie(self) -> None:
        name = self._param("name") or ""
        value = self._param("value") or ""
        if not _TOKEN_RE.fullmatch(name):
            raise _BadRequest("name must be a valid cookie name")
        if not _COOKIE_VALUE_RE.fullmatch(value):
            raise _BadRequest("value contains characters not allowed in a cookie")
        title = f"Cookie {name} set"
        content = "<p>The cookie was set for the whole site (Path=/).</p>\n" + _filler("Set cookie", 2)
        self._send_page(200, title, content, [("Set-Cookie", f"{name}={value}; Path=/")])

    def _redirect_route(self) -> None:
        status = self._int_param("status", 302, 0, 999)
        if status not in _REDIRECT_STATUSES:
            raise _BadRequest("status must be one of 301, 302, 303, 307, 308")
        self._redirect(status, self._param("to") or "/")

    def _links(self) -> None:
        internal = [
            ("/", "Home"),
            ("/login", "Log in"),
            ("/cookies", "Cookie echo"),
            ("/long?n=10", "A short long page"),
            ("/tiny", "Tiny page"),
        ]
        external = [
            ("https://example.com/", "Example home"),
            ("https://example.com/docs", "Example docs"),
            ("https://example.com/about", "About example"),
        ]
        items = [f'<li><a class="internal" href="{h}">{t}</a></li>' for h, t in internal]
        items += [f'<li><a class="external" href="{h}">{t}</a></li>' for h, t in external]
        content = (
            "<p>Five links stay on this site and three point to example.com.</p>\n"
            '<ul id="links">\n' + "\n".join(items) + "\n</ul>\n" + _filler("Links", 2)
        )
        self._send_page(200, "Links", content)

    def _form_echo(self) -> None:
        if self.command != "POST":
            content = (
                "<p>Submit this form to see which field names reached the server.</p>\n"
                '<form id="echo" method="post" action="/form-echo">\n'
                '<input name="name" id="name">\n<input name="email" id="email">\n'
                '<textarea name="message" id="message"></textarea>\n'
                '<button type="submit" id="submit">Send</button>\n</form>\n' + _filler("Form echo", 2)
            )
            self._send_page(200, "Form echo", content)
            return
        names = list(dict.fromkeys(name for name, _ in self._form_fields()))
        items = "".join(f"<li>{html.escape(n)}</li>" for n in names)
        content = (
            f"<p>The server received {len(names)} field name(s); values are never shown.</p>\n"
            f'<ul id="field-names">{items}</ul>\n' + _filler("Form echo", 2)
        )
        self._send_page(200, "Form echo", content)

    def _tiny(self) -> None:
        self._send(200, b"<html><body>ok</body></html>")


def _safe_local_path(path: str) -> bool:
    return (
        path.startswith("/")
        and not path.startswith("//")
        and "\\" not in path
        and not any(ch in path for ch in "\r\n\0")
    )


# --------------------------------------------------------------------------------------------- TestSite


class TestSite:
    """`with TestSite() as site: site.url("/login")` ; or site.start()/site.stop()."""

    __test__ = False  # not a pytest test class
    SESSION_COOKIE: ClassVar[str] = SESSION_COOKIE
    handler_class: ClassVar[type[SiteHandler]] = SiteHandler  # a SiteHandler subclass adds routes

    def __init__(self, host: str = "127.0.0.1", port: int = 0, users: dict[str, str] | None = None) -> None:
        self._family = _loopback_family(host)
        self.host = host
        self.port = port
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        self.hits: collections.Counter[str] = collections.Counter()
        self.requests: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._sessions: dict[str, str] = {}
        self._stop_event = threading.Event()
        self._server: _SiteServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> TestSite:
        if self._server is not None:
            return self
        self._stop_event = threading.Event()
        server = _SiteServer((self.host, self.port), self._family, self)
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ck-test-site-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stop_event.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=2)
        self._server = None
        self._thread = None

    def __enter__(self) -> TestSite:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    # ---------------------------------------------------------------- addresses

    @property
    def base_url(self) -> str:
        if self._server is None and self.port == 0:
            raise RuntimeError("TestSite is not started")
        return f"http://{_url_host(self.host)}:{self.port}"

    def url(self, path: str) -> str:
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url + path

    # ---------------------------------------------------------------- sessions

    def session_token(self, user: str) -> str:
        """A fresh, valid session cookie value for ``user`` (must be one of ``users``)."""
        if user not in self.users:
            raise KeyError(f"unknown test user {user!r}")
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._sessions[token] = user
        return token

    def _user_for_token(self, token: str) -> str | None:
        with self._lock:
            return self._sessions.get(token)

    def _drop_token(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    def _check_credentials(self, username: str, password: str) -> bool:
        expected = self.users.get(username)
        if expected is None:
            return False
        return hmac.compare_digest(expected.encode("utf-8"), password.encode("utf-8"))

    # ---------------------------------------------------------------- records

    def reset_records(self) -> None:
        """Forget hits, requests and errors (sessions are kept)."""
        with self._lock:
            self.hits.clear()
            self.requests.clear()
            self.errors.clear()

    def _record(self, path: str, method: str, headers: Message) -> None:
        cookie_names = sorted({name for name, _ in _cookie_pairs(headers)})
        flat: dict[str, str] = {}
        for key, value in headers.items():
            lower = key.lower()
            if lower == "cookie":
                continue  # never keep cookie values; names are in cookie_names
            if lower in _REDACTED_HEADERS:
                value = "<redacted>"
            flat[lower] = f"{flat[lower]}, {value}" if lower in flat else value
        entry = {"path": path, "method": method, "cookie_names": cookie_names, "headers": flat}
        with self._lock:
            self.hits[path] += 1
            self.requests.append(entry)

    def _record_error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)
