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
with handler method names) and set it as ``handler_class`` of a :class:`TestSite` subclass. The server and
handler plumbing under it is :mod:`crawlkeeper.testing.serving`.

Only loopback addresses are accepted. Nothing here ever prints; cookie *values* are never recorded
(only the session store keeps the tokens it issued, because it has to).
"""

from __future__ import annotations

import collections
import email
import email.policy
import hmac
import html
import re
import secrets
import threading
from email.message import Message
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import parse_qs

from .serving import (
    BadRequest,
    RouteHandler,
    SiteServer,
    cookie_pairs,
    filler,
    loopback_family,
    url_host,
)

__all__ = ["SESSION_COOKIE", "SiteHandler", "TestSite"]

SESSION_COOKIE = "ck_session"
DEFAULT_USERS: dict[str, str] = {"alice": "wonderland", "bob": "builder"}

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# RFC 6265: cookie-name is an RFC 7230 token, cookie-value is *cookie-octet.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # fullmatch: "$" allows a trailing newline
_COOKIE_VALUE_RE = re.compile(r"[\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]*")
_REDACTED_HEADERS = frozenset({"authorization", "proxy-authorization"})


def _count_word(n: int) -> str:
    words = ("No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")
    return words[n] if n < len(words) else str(n)


class SiteHandler(RouteHandler):
    """The request handler of :class:`TestSite`: the login site's routes; subclass it to add routes (see the
    module docstring, and :class:`~crawlkeeper.testing.serving.RouteHandler` for the route tables).
    """

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
    #: The index page's navigation (href, text); a subclass adding pages may link them here.
    NAV_LINKS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("/login", "Log in"),
        ("/private", "Private area"),
        ("/cookies", "Cookie echo"),
        ("/links", "Links"),
    )
    #: The same-site links of ``/links`` (href, text); every one is served.
    INTERNAL_LINKS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("/", "Home"),
        ("/login", "Log in"),
        ("/cookies", "Cookie echo"),
        ("/tiny", "Tiny page"),
    )

    @property
    def site(self) -> TestSite:
        return self.server.site  # type: ignore[return-value]  # TestSite is the Recorder this handler runs in

    # ------------------------------------------------------------------ site helpers

    def _session_user(self) -> str | None:
        for name, value in cookie_pairs(self.headers):
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
            '<ul id="nav">\n' + "".join(f'<li><a href="{h}">{t}</a></li>\n' for h, t in self.NAV_LINKS)
            + "</ul>\n" + filler("Index", 2)
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
            "</form>\n" + filler("Login", 2)
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
            + filler("Private", 2)
            + '\n<p><a href="/logout">Log out</a></p>'
        )
        self._send_page(200, "Private area", content)

    def _logout(self) -> None:
        for name, value in cookie_pairs(self.headers):
            if name == SESSION_COOKIE:
                self.site._drop_token(value)
        cookie = f"{SESSION_COOKIE}=; Max-Age=0; HttpOnly; Path=/; SameSite=Lax"
        self._redirect(303, "/login", [("Set-Cookie", cookie)])

    def _cookies(self) -> None:
        names = sorted({name for name, _ in cookie_pairs(self.headers)})
        items = "".join(f"<li>{html.escape(n)}</li>" for n in names)
        content = (
            f"<p>The browser sent {len(names)} cookie(s). Only their names are shown here.</p>\n"
            f'<ul id="cookie-names">{items}</ul>\n' + filler("Cookie echo", 2)
        )
        self._send_page(200, "Cookie echo", content)

    def _set_cookie(self) -> None:
        name = self._param("name") or ""
        value = self._param("value") or ""
        if not _TOKEN_RE.fullmatch(name):
            raise BadRequest("name must be a valid cookie name")
        if not _COOKIE_VALUE_RE.fullmatch(value):
            raise BadRequest("value contains characters not allowed in a cookie")
        title = f"Cookie {name} set"
        content = "<p>The cookie was set for the whole site (Path=/).</p>\n" + filler("Set cookie", 2)
        self._send_page(200, title, content, [("Set-Cookie", f"{name}={value}; Path=/")])

    def _redirect_route(self) -> None:
        status = self._int_param("status", 302, 0, 999)
        if status not in _REDIRECT_STATUSES:
            raise BadRequest("status must be one of 301, 302, 303, 307, 308")
        self._redirect(status, self._param("to") or "/")

    def _links(self) -> None:
        internal = list(self.INTERNAL_LINKS)
        external = [
            ("https://example.com/", "Example home"),
            ("https://example.com/docs", "Example docs"),
            ("https://example.com/about", "About example"),
        ]
        items = [f'<li><a class="internal" href="{h}">{t}</a></li>' for h, t in internal]
        items += [f'<li><a class="external" href="{h}">{t}</a></li>' for h, t in external]
        content = (
            f"<p>{_count_word(len(internal))} links stay on this site and three point to example.com.</p>\n"
            '<ul id="links">\n' + "\n".join(items) + "\n</ul>\n" + filler("Links", 2)
        )
        self._send_page(200, "Links", content)

    def _form_echo(self) -> None:
        if self.command != "POST":
            content = (
                "<p>Submit this form to see which field names reached the server.</p>\n"
                '<form id="echo" method="post" action="/form-echo">\n'
                '<input name="name" id="name">\n<input name="email" id="email">\n'
                '<textarea name="message" id="message"></textarea>\n'
                '<button type="submit" id="submit">Send</button>\n</form>\n' + filler("Form echo", 2)
            )
            self._send_page(200, "Form echo", content)
            return
        names = list(dict.fromkeys(name for name, _ in self._form_fields()))
        items = "".join(f"<li>{html.escape(n)}</li>" for n in names)
        content = (
            f"<p>The server received {len(names)} field name(s); values are never shown.</p>\n"
            f'<ul id="field-names">{items}</ul>\n' + filler("Form echo", 2)
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
        self._family = loopback_family(host)
        self.host = host
        self.port = port
        self.users: dict[str, str] = dict(DEFAULT_USERS if users is None else users)
        self.hits: collections.Counter[str] = collections.Counter()
        self.requests: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._sessions: dict[str, str] = {}
        self._stop_event = threading.Event()
        self._server: SiteServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> TestSite:
        if self._server is not None:
            return self
        self._stop_event = threading.Event()
        server = SiteServer((self.host, self.port), self._family, self)
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
        return f"http://{url_host(self.host)}:{self.port}"

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
        cookie_names = sorted({name for name, _ in cookie_pairs(headers)})
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
