"""A fake browser for plugin tests: canned pages, recorded navigations, requests and cookies, no Chromium.

It implements the core's ``BrowserBackend`` and the small part of Playwright's ``BrowserContext``/``Page`` API
that auth plugins use (``goto``, ``fill``, ``click``, ``wait_for_url``, ``wait_for_selector``, ``content``,
``title``, ``evaluate``, ``add_cookies``, ``cookies``, ``set_extra_http_headers``, ``route``). Each page is a
:class:`CannedPage` added with :meth:`FakeBrowser.add_page`; a form submission is modelled by
``on_click={"#submit": handler}``.

Headers behave as on Chromium (``tests/contract/test_headers.py`` holds both to the same tests):
``set_extra_http_headers`` *replaces* the context-wide set, route handlers run last-registered first and
``route.fallback(headers=...)`` replaces a request's headers, redirect hops carry the first request's headers
without passing route handlers, a DevTools session's ``Fetch`` interception (``new_cdp_session``) pauses every
matching request and redirect hop and may replace its headers, and a canned page's ``<img>``, ``<script>``,
``<iframe>`` and stylesheet ``<link>`` are requested after it loads. Every request is recorded in
:attr:`FakeBrowser.requests` with the headers it carried (names lower-cased) and the names of the cookies sent
with it.

This module holds the browser and its contexts (cookie jar, headers, route table); the page side (canned
pages, pages, routes, DevTools sessions, recorded requests) is in :mod:`.fake_page`, whose names are importable
from here too.
"""

from __future__ import annotations

import fnmatch
import inspect
import itertools
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

from ..browser import PageLoad, PageResult, html_to_text
from ..errors import CrawlError
from ..headers import attach_page
from ..options import ContextOptions, CrawlOptions
from .fake_page import (  # the page side; re-exported, so every name of this module keeps working
    CannedPage,
    FakeCDPSession,
    FakePageHandle,
    FakeRequest,
    FakeResponse,
    FakeRoute,
    Handler,
    _route_matches,
    _RouteRequest,
)

_CLOSED = "Target page, context or browser has been closed"
#: Chromium caps a cookie's lifetime at 400 days (RFC 6265bis); Playwright reports the capped value.
_MAX_COOKIE_AGE_S = 400 * 86400
_SECURE_HOSTS = ("localhost", "127.0.0.1", "::1")  # potentially trustworthy: secure cookies go there over http


def _cookie_path_of(url_path: str) -> str:
    """The default path of a cookie set for a URL: the URL path's directory (RFC 6265 5.1.4), as Chromium does."""
    if not url_path.startswith("/") or url_path.count("/") == 1:
        return "/"
    return url_path[: url_path.rindex("/") + 1]


def _cookie_matches(cookie: dict[str, Any], url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    domain = str(cookie["domain"]).lower()
    if domain.startswith("."):
        if host != domain[1:] and not host.endswith(domain):
            return False
    elif host != domain:
        return False
    path = parts.path or "/"
    cpath = cookie["path"]
    if not (path == cpath or (path.startswith(cpath) and (cpath.endswith("/") or path[len(cpath)] == "/"))):
        return False
    return not cookie["secure"] or parts.scheme == "https" or host in _SECURE_HOSTS


class FakeContext:
    """A browser context: its own cookie jar and pages, with Playwright's cookie rules (see ``tests/contract``)."""

    _ids = itertools.count(1)

    def __init__(self, browser: FakeBrowser, options: ContextOptions) -> None:
        self.id = next(self._ids)
        self.browser = browser
        self.options = options
        self.jar: list[dict[str, Any]] = []
        self._pages: list[FakePageHandle] = []
        self.closed = False
        self.init_scripts: list[str] = []
        # Chromium's context-wide headers: set at creation, *replaced* by set_extra_http_headers.
        self.extra_headers: dict[str, str] = {
            k: v for k, v in (options.extra_headers or {}).items() if isinstance(v, str)
        }
        self.routes: list[tuple[Any, Callable[..., Any]]] = []

    @property
    def pages(self) -> list[FakePageHandle]:
        """Open pages, like Playwright's ``BrowserContext.pages``."""
        return [page for page in self._pages if not page.closed]

    def _check(self) -> None:
        if self.closed:
            raise RuntimeError(_CLOSED)

    async def add_cookies(self, cookies: list[dict[str, Any]]) -> None:
        self._check()
        normalised = [self._normalise(cookie) for cookie in cookies]  # all or nothing, as in Playwright
        for cookie in normalised:
            key = (cookie["name"], cookie["domain"], cookie["path"])
            self.jar = [c for c in self.jar if (c["name"], c["domain"], c["path"]) != key]
            self.jar.append(cookie)

    @staticmethod
    def _normalise(cookie: dict[str, Any]) -> dict[str, Any]:
        if not cookie.get("name"):
            raise ValueError("Cookie should have a name")
        if cookie.get("url"):
            parts = urlsplit(cookie["url"])
            if not parts.hostname or parts.scheme not in ("http", "https"):
                raise ValueError(f"Invalid cookie URL: {cookie['url']}")
            domain, path = parts.hostname, _cookie_path_of(parts.path)
        elif cookie.get("domain") and cookie.get("path"):
            domain, path = cookie["domain"], cookie["path"]
        else:
            raise ValueError("Cookie should have a url or a domain/path pair")
        expires = cookie.get("expires")
        if expires is None or expires < 0:
            expires = -1
        else:
            expires = float(min(expires, time.time() + _MAX_COOKIE_AGE_S))
        return {
            "name": cookie["name"],
            "value": str(cookie.get("value", "")),
            "domain": domain,
            "path": path,
            "expires": expires,
            "httpOnly": bool(cookie.get("httpOnly", False)),
            "secure": bool(cookie.get("secure", False)),
            "sameSite": cookie.get("sameSite") or "Lax",
        }

    async def cookies(self, urls: str | list[str] | None = None) -> list[dict[str, Any]]:
        self._check()
        now = time.time()
        self.jar = [c for c in self.jar if c["expires"] == -1 or c["expires"] > now]
        if isinstance(urls, str):
            urls = [urls]
        if not urls:
            return [dict(c) for c in self.jar]
        return [dict(c) for c in self.jar if any(_cookie_matches(c, url) for url in urls)]

    async def clear_cookies(self, **_: Any) -> None:
        self._check()
        self.jar.clear()

    async def storage_state(self, **_: Any) -> dict[str, Any]:
        """Playwright's storage state: the cookie jar (no localStorage in the fake)."""
        return {"cookies": [dict(c) for c in self.jar], "origins": []}

    async def set_storage_state(self, state: dict[str, Any]) -> None:
        self.jar = []
        await self.add_cookies([dict(c) for c in state.get("cookies") or []])

    async def new_page(self) -> FakePageHandle:
        self._check()
        page = FakePageHandle(self)
        self._pages.append(page)
        return page

    async def add_init_script(self, script: str | None = None, **_: Any) -> None:
        self._check()
        self.init_scripts.append(script or "")

    async def new_cdp_session(self, page: FakePageHandle) -> FakeCDPSession:
        """A DevTools session on ``page``; only the ``Fetch`` domain's request-stage interception is modelled."""
        self._check()
        session = FakeCDPSession(page)
        page.cdp_sessions.append(session)
        return session

    async def set_extra_http_headers(self, headers: dict[str, str]) -> None:
        self._check()
        self.extra_headers = dict(headers)  # as on Chromium: replaces, never merges

    async def route(self, url: Any, handler: Callable[..., Any], **_: Any) -> None:
        self._check()
        self.routes.append((url, handler))

    async def unroute(self, url: Any, handler: Callable[..., Any] | None = None) -> None:
        self.routes = [(u, h) for u, h in self.routes if not (u == url and (handler is None or h == handler))]

    async def unroute_all(self, **_: Any) -> None:
        self.routes.clear()

    async def _request(self, page: FakePageHandle, url: str, resource_type: str) -> dict[str, str] | None:
        """Send one request through the route handlers, as Chromium does; record it. None if aborted, else the
        headers its redirect hops carry: what the routes made (Playwright re-applies them), not what a DevTools
        Fetch handler changed (Chromium applies that to the one hop it paused)."""
        headers = {k.lower(): v for k, v in {**self.extra_headers, **page.extra_headers}.items()}
        if self.options.user_agent:
            headers.setdefault("user-agent", self.options.user_agent)
        for matcher, handler in reversed(self.routes):  # Playwright: the last registered route runs first
            if not _route_matches(matcher, url):
                continue
            route = FakeRoute(_RouteRequest(url, headers, resource_type, resource_type == "document"))
            params = [p for p in inspect.signature(handler).parameters.values() if p.kind != p.VAR_KEYWORD]
            result = handler(route, route.request) if len(params) >= 2 else handler(route)
            if inspect.isawaitable(result):
                await result
            if route.outcome is None:
                raise RuntimeError(f"a route handler for {url} neither continued, fell back nor aborted it")
            if route.headers is not None:
                headers = route.headers
            if route.outcome == "abort":
                return None
            if route.outcome != "fallback":
                break
        self._record(url, resource_type, await page._paused(url, headers))
        return headers

    def _record(self, url: str, resource_type: str, headers: dict[str, str]) -> None:
        self.browser.requests.append(
            FakeRequest(self.id, url, dict(headers), resource_type, self.cookie_names(url))
        )

    async def close(self, **_: Any) -> None:
        self.closed = True
        for page in self._pages:
            page.closed = True

    def cookie_names(self, url: str | None = None) -> list[str]:
        """Names of the cookies in the jar (only those a request to ``url`` would carry, if given)."""
        jar = self.jar if url is None else [c for c in self.jar if _cookie_matches(c, url)]
        return sorted(c["name"] for c in jar)

class FakeBrowser:
    """A ``BrowserBackend`` serving canned pages. Records every navigation as ``(context_id, url)``."""

    needs_proxy = False
    description = "fake browser (crawlkeeper.testing)"

    def __init__(self) -> None:
        self.generation = 0
        self.pages: dict[str, CannedPage] = {}
        self.navigations: list[tuple[int, str]] = []
        self.requests: list[FakeRequest] = []  # every request (navigation hops, subresources) and its headers
        self.contexts: list[FakeContext] = []
        self.started = False
        self._crash_callbacks: list[Callable[[int], None]] = []

    def add_page(self, url: str, html: str | None = None, **kwargs: Any) -> CannedPage:
        """Serve ``html`` at ``url`` (glob patterns allowed). See :class:`CannedPage` for the options."""
        page = CannedPage(url=url, **kwargs) if html is None else CannedPage(url=url, html=html, **kwargs)
        self.pages[url] = page
        return page

    def find(self, url: str) -> CannedPage | None:
        if url in self.pages:
            return self.pages[url]
        for pattern, page in self.pages.items():
            if fnmatch.fnmatch(url, pattern):
                return page
        return None

    def requests_to(self, host: str) -> list[FakeRequest]:
        """The requests sent to ``host`` (exactly that host name)."""
        return [r for r in self.requests if r.host == host.lower()]

    def visited(self, context: Any = None) -> list[str]:
        """URLs navigated to, for one context (a session's ``context``) or all."""
        cid = getattr(context, "id", None)
        return [url for c, url in self.navigations if cid is None or c == cid]

    def crash(self) -> None:
        """Simulate a browser crash: every session on it is lost."""
        for context in self.contexts:
            context.closed = True
        self.started = False
        for callback in self._crash_callbacks:
            callback(self.generation)

    # -- BrowserBackend -----------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.started

    def on_crash(self, callback: Callable[[int], None]) -> None:
        self._crash_callbacks.append(callback)

    async def start(self) -> None:
        if not self.started:
            self.started = True
            self.generation += 1

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()
        self.started = False

    async def new_context(self, options: ContextOptions, *, proxy_url: str | None = None) -> FakeContext:
        await self.start()
        context = FakeContext(self, options)
        self.contexts.append(context)
        return context

    async def new_page(self, context: FakeContext) -> FakePageHandle:
        page = await context.new_page()
        await attach_page(page)  # session headers cover it per request and redirect hop, as on Chromium
        return page

    async def load(self, page: FakePageHandle, url: str, options: CrawlOptions) -> PageLoad:
        """Navigate without content processing (``screenshot``, ``extract``); js_code is recorded, not run."""
        try:
            response = await page.goto(url)
        except RuntimeError as exc:
            raise CrawlError(f"could not load {url}: {exc}") from None
        for script in [options.js_code] if isinstance(options.js_code, str) else options.js_code or []:
            await page.evaluate(script)
        if options.wait_for:
            await page.wait_for_selector(options.wait_for.removeprefix("css:"))
        return PageLoad(url=url, final_url=page.url, status=response.status, title=await page.title())

    async def crawl(self, page: FakePageHandle, url: str, options: CrawlOptions) -> PageResult:
        try:
            response = await page.goto(url)
        except RuntimeError as exc:
            raise CrawlError(f"could not load {url}: {exc}") from None
        html = await page.content()
        links = [{"href": urljoin(page.url, h), "text": t.strip()}
                 for h, t in re.findall(r'<a[^>]+href="([^"]+)"[^>]*>(.*?)</a>', html, re.S | re.I)]
        return PageResult(url=url, final_url=page.url, status=response.status, title=await page.title(),
                          html=html, markdown=html_to_text(html), cleaned_html=html, links=links)


__all__ = [
    "CannedPage", "FakeBrowser", "FakeCDPSession", "FakeContext", "FakePageHandle", "FakeRequest", "FakeResponse",
    "FakeRoute", "Handler",
]
