"""The contract site and the ``Backend`` a contract test drives (see ``conftest.py`` for the fixtures)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from crawlkeeper.options import ContextOptions
from crawlkeeper.testing import FakeBrowser


@dataclass
class Route:
    """One page of the contract site, served the same way by the real server and the fake."""

    html: str = "<html><head><title>Page</title></head><body><p>Some content.</p></body></html>"
    status: int = 200
    set_cookies: dict[str, str] = field(default_factory=dict)  # host-only, Path=/, session cookies
    redirect: str | None = None  # a 302 to this path (after setting the cookies)
    requires_cookie: str | None = None  # without it: a 302 to login_url
    login_url: str | None = None


def page_html(title: str, body: str) -> str:
    return f"<html><head><title>{title}</title></head><body>{body}</body></html>"


SITE: dict[str, Route] = {
    "/page": Route(page_html("Page", "<p>Some content.</p>")),
    "/other": Route(page_html("Other", "<p>Other content.</p>")),
    "/missing": Route(page_html("Not found", "<p>Nothing here.</p>"), status=404),
    "/login": Route(page_html("Login", '<form><input name="user"><button id="submit">Go</button></form>')),
    "/do-login": Route(set_cookies={"sid": "s3cr3t-session"}, redirect="/private"),
    "/private": Route(page_html("Private", "<p>Welcome back.</p>"), requires_cookie="sid", login_url="/login"),
    "/hop1": Route(redirect="/hop2"),
    "/hop2": Route(redirect="/other"),
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class ContractSite:
    """The real HTTP server for :data:`SITE` on 127.0.0.1 (plus routes a test adds), recording request headers."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = dict(SITE)
        self.received: list[tuple[str, dict[str, str]]] = []  # (path, headers with lower-cased names)
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                site.received.append((path, {k.lower(): v for k, v in self.headers.items()}))
                route = site.routes.get(path)
                if route is None:
                    return self._send(404, page_html("Not found", "<p>No such page.</p>"))
                cookies = {
                    name: value
                    for part in self.headers.get("Cookie", "").split(";")
                    for name, _, value in [part.strip().partition("=")]
                    if name
                }
                if route.requires_cookie and route.requires_cookie not in cookies:
                    return self._send(302, "", location=route.login_url or "/login")
                extra = [("Set-Cookie", f"{k}={v}; Path=/") for k, v in route.set_cookies.items()]
                if route.redirect:
                    return self._send(302, "", location=route.redirect, headers=extra)
                return self._send(route.status, route.html, headers=extra)

            def _send(self, status: int, body: str, *, location: str | None = None,
                      headers: list[tuple[str, str]] | None = None) -> None:
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                if location:
                    self.send_header("Location", location)
                for name, value in headers or []:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # never print: stdout belongs to pytest
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ContractSite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class Backend:
    """What a contract test drives: contexts and pages of one browser, and the site it visits.

    :ivar kind: ``"fake"`` or ``"chromium"``.
    """

    def __init__(self, kind: str, browser: Any, site: ContractSite) -> None:
        self.kind = kind
        self.browser = browser
        self.site = site
        self._contexts: list[Any] = []

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on the contract site."""
        return self.site.base + path

    @property
    def host(self) -> str:
        return "127.0.0.1"

    async def new_context(self, **options: Any) -> Any:
        """A new isolated context, made the way crawlkeeper makes a session's (``ContextOptions`` keys)."""
        context = await self.browser.new_context(ContextOptions(**options))
        self._contexts.append(context)
        return context

    async def new_page(self, context: Any) -> Any:
        return await self.browser.new_page(context)

    def route(self, path: str, route: Route) -> None:
        """Serve ``route`` at ``path`` on both sites, for this test."""
        self.site.routes[path] = route
        if self.kind == "fake":
            add_to_fake(self.browser, self.site.base, path, route)

    def requests(self, path: str) -> list[dict[str, str]]:
        """Headers (lower-cased names) of every request the site received for ``path``, oldest first."""
        if self.kind == "fake":
            url = self.url(path)
            return [{k.lower(): v for k, v in r.headers.items()} for r in self.browser.requests if r.url == url]
        return [headers for p, headers in self.site.received if p == path]

    async def close(self) -> None:
        for context in self._contexts:
            try:
                await context.close()
            except Exception:
                pass


def add_to_fake(browser: FakeBrowser, base: str, path: str, route: Route) -> None:
    browser.add_page(
        base + path,
        route.html,
        status=route.status,
        set_cookies=dict(route.set_cookies),
        redirect=route.redirect,
        requires_cookie=route.requires_cookie,
        login_url=route.login_url,
    )
