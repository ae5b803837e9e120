"""The page side of the fake browser (:mod:`crawlkeeper.testing.fake`): canned pages, a page's Playwright calls, and
the requests it sends.

:class:`CannedPage` is what :meth:`FakeBrowser.add_page` serves; :class:`FakePageHandle` navigates (redirects,
cookie-guarded pages, subresources), fills, clicks and evaluates; :class:`FakeRoute` is what a route handler gets;
:class:`FakeCDPSession` models DevTools ``Fetch`` interception; :class:`FakeRequest` is one recorded request. The
cookie jar, context-wide headers and route table belong to the context (:class:`FakeContext`, in ``fake``).
"""

from __future__ import annotations

import fnmatch
import inspect
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

if TYPE_CHECKING:
    from .fake import FakeBrowser, FakeContext

_PNG_1X1 = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)

Handler = Callable[["FakePageHandle"], Any]


@dataclass
class CannedPage:
    """One canned response. ``set_cookies`` are set on the visiting context; ``redirect`` sends it elsewhere."""

    url: str
    html: str = "<html><head><title>Fake page</title></head><body><p>Fake content.</p></body></html>"
    status: int = 200
    set_cookies: dict[str, str] = field(default_factory=dict)
    redirect: str | None = None
    requires_cookie: str | None = None  # without this cookie: redirect to ``login_url`` (or 401)
    login_url: str | None = None
    on_click: dict[str, Handler] = field(default_factory=dict)


class _RouteRequest:
    """What a route handler sees (Playwright's ``Request``, the parts handlers use)."""

    def __init__(self, url: str, headers: dict[str, str], resource_type: str, frame_navigation: bool) -> None:
        self.url = url
        self.headers = dict(headers)
        self.resource_type = resource_type
        self.method = "GET"
        self._navigation = frame_navigation

    def is_navigation_request(self) -> bool:
        return self._navigation

    async def all_headers(self) -> dict[str, str]:
        return dict(self.headers)


class FakeRoute:
    """Playwright's ``Route``: ``fallback``/``continue_`` (optionally with replacement headers), ``abort``."""

    def __init__(self, request: _RouteRequest) -> None:
        self.request = request
        self.outcome: str | None = None
        self.headers: dict[str, str] | None = None

    def _settle(self, outcome: str, headers: dict[str, str] | None) -> None:
        if self.outcome is not None:
            raise RuntimeError("Route is already handled!")
        self.outcome = outcome
        if headers is not None:  # Playwright: the given headers *replace* the request's (names lower-cased)
            self.headers = {k.lower(): str(v) for k, v in headers.items()}

    async def fallback(self, *, headers: dict[str, str] | None = None, **_: Any) -> None:
        self._settle("fallback", headers)

    async def continue_(self, *, headers: dict[str, str] | None = None, **_: Any) -> None:
        self._settle("continue", headers)

    async def abort(self, error_code: str | None = None) -> None:
        self._settle("abort", None)

    async def fulfill(self, **_: Any) -> None:
        self._settle("fulfill", None)


def _route_matches(matcher: Any, url: str) -> bool:
    if callable(matcher):
        return bool(matcher(url))
    if isinstance(matcher, re.Pattern):
        return bool(matcher.search(url))
    return fnmatch.fnmatch(url, str(matcher).replace("**", "*"))


_SUBRESOURCES = (
    (re.compile(r"<img\b[^>]*?\bsrc=[\"']([^\"']+)[\"']", re.I), "image"),
    (re.compile(r"<script\b[^>]*?\bsrc=[\"']([^\"']+)[\"']", re.I), "script"),
    (re.compile(r"<iframe\b[^>]*?\bsrc=[\"']([^\"']+)[\"']", re.I), "document"),
    (re.compile(r"<link\b(?=[^>]*\brel=[\"']?stylesheet)[^>]*?\bhref=[\"']([^\"']+)[\"']", re.I), "stylesheet"),
)


class FakeResponse:
    def __init__(self, status: int, url: str) -> None:
        self.status = status
        self.url = url
        self.ok = 200 <= status < 400


def _glob(pattern: str) -> re.Pattern[str]:
    """Chromium's ``Fetch`` URL patterns: ``*`` any run of characters, ``?`` one; nothing else is special."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


class FakeCDPSession:
    """A DevTools session on a fake page: ``Fetch.enable``/``disable``/``continueRequest`` and the
    ``Fetch.requestPaused`` event (a handler may be sync or async and must continue the request)."""

    _ids = itertools.count(1)

    def __init__(self, page: FakePageHandle) -> None:
        self.page = page
        self.patterns: list[re.Pattern[str]] | None = None  # None: Fetch disabled
        self.handlers: dict[str, list[Callable[..., Any]]] = {}
        self._continued: dict[str, dict[str, Any]] = {}

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        self.handlers.setdefault(event, []).append(handler)

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.page._check()
        params = params or {}
        if method == "Fetch.enable":
            self.patterns = [_glob(p.get("urlPattern", "*")) for p in params.get("patterns") or [{}]]
        elif method == "Fetch.disable":
            self.patterns = None
        elif method == "Fetch.continueRequest":
            self._continued[str(params["requestId"])] = params
        return {}

    async def detach(self) -> None:
        if self in self.page.cdp_sessions:
            self.page.cdp_sessions.remove(self)

    async def _pause(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        if self.patterns is None or not any(p.fullmatch(url) for p in self.patterns):
            return headers
        request_id = f"interception-{next(self._ids)}"
        event = {"requestId": request_id, "request": {"url": url, "headers": dict(headers)}}
        for handler in list(self.handlers.get("Fetch.requestPaused", [])):
            result = handler(event)
            if inspect.isawaitable(result):
                await result
        continued = self._continued.pop(request_id, None)
        if continued is None:
            raise RuntimeError(f"a Fetch.requestPaused handler for {url} never continued the request")
        if continued.get("headers") is None:
            return headers
        return {str(h["name"]).lower(): str(h["value"]) for h in continued["headers"]}


class FakePageHandle:
    """A page in a :class:`FakeContext`, with the Playwright calls auth plugins make."""

    def __init__(self, context: FakeContext) -> None:
        self.context = context
        self.extra_headers: dict[str, str] = {}
        self.url = "about:blank"
        self.closed = False
        self.filled: dict[str, str] = {}
        self.clicks: list[str] = []
        self.evaluated: list[str] = []
        self.screenshots: list[dict[str, Any]] = []
        self.viewport_size: dict[str, int] | None = None
        self.cdp_sessions: list[FakeCDPSession] = []
        self._html = "<html><body></body></html>"

    @property
    def browser(self) -> FakeBrowser:
        return self.context.browser

    def _check(self) -> None:
        if self.closed or self.context.closed:
            raise RuntimeError("Target page, context or browser has been closed")

    async def set_extra_http_headers(self, headers: dict[str, str]) -> None:
        self.extra_headers = dict(headers)

    async def _paused(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        """Pass one request (or redirect hop) through every DevTools session intercepting it."""
        for session in list(self.cdp_sessions):
            headers = await session._pause(url, headers)
        return headers

    async def goto(self, url: str, **_: Any) -> FakeResponse:
        self._check()
        status = 200
        sent: dict[str, str] | None = None
        for _hop in range(10):
            self.browser.navigations.append((self.context.id, url))
            if sent is None:
                sent = await self.context._request(self, url, "document")
                if sent is None:
                    raise RuntimeError(f"net::ERR_FAILED at {url} (aborted by a route)")
            else:
                # Redirect hops skip route handlers and carry the first request's headers, as Playwright does;
                # DevTools Fetch interception pauses each hop, as Chromium does.
                self.context._record(url, "document", await self._paused(url, dict(sent)))
            spec = self.browser.find(url)
            if spec is None:
                self.url, self._html, status = url, "<html><head><title>Not found</title></head></html>", 404
                break
            if spec.requires_cookie and spec.requires_cookie not in self.context.cookie_names(url):
                if spec.login_url:
                    url = urljoin(url, spec.login_url)
                    continue
                self.url, self._html, status = url, "<html><title>Unauthorized</title></html>", 401
                break
            if spec.set_cookies:
                host = urlsplit(url).hostname or ""
                await self.context.add_cookies(
                    [{"name": k, "value": v, "domain": host, "path": "/"} for k, v in spec.set_cookies.items()]
                )
            if spec.redirect:
                url = urljoin(url, spec.redirect)
                continue
            self.url, self._html, status = url, spec.html, spec.status
            break
        await self._load_subresources()
        return FakeResponse(status, self.url)

    async def _load_subresources(self) -> None:
        for pattern, kind in _SUBRESOURCES:
            for src in pattern.findall(self._html):
                target = urljoin(self.url, src)
                if urlsplit(target).scheme in ("http", "https"):
                    await self.context._request(self, target, kind)

    async def content(self) -> str:
        self._check()
        return self._html

    async def title(self) -> str:
        match = re.search(r"<title>(.*?)</title>", self._html, re.S | re.I)
        return match.group(1).strip() if match else ""

    async def fill(self, selector: str, value: str, **_: Any) -> None:
        self._check()
        if not _has_selector(self._html, selector):
            raise TimeoutError(f"fake page {self.url}: no element matches {selector!r}")
        self.filled[selector] = value

    async def type(self, selector: str, text: str, **kw: Any) -> None:
        await self.fill(selector, text, **kw)

    async def click(self, selector: str, **_: Any) -> None:
        self._check()
        if not _has_selector(self._html, selector):
            raise TimeoutError(f"fake page {self.url}: no element matches {selector!r}")
        self.clicks.append(selector)
        spec = self.browser.find(self.url)
        handler = spec.on_click.get(selector) if spec else None
        if handler is not None:
            result = handler(self)
            if hasattr(result, "__await__"):
                await result

    async def press(self, selector: str, key: str, **_: Any) -> None:
        if key == "Enter":
            await self.click(selector)

    async def wait_for_selector(self, selector: str, **_: Any) -> Any:
        if not _has_selector(self._html, selector):
            raise TimeoutError(f"fake page {self.url}: timed out waiting for {selector!r}")
        return True

    async def wait_for_url(self, pattern: Any, **_: Any) -> None:
        if not _url_matches(self.url, pattern):
            raise TimeoutError(f"fake page is at {self.url}, which does not match {pattern!r}")

    async def wait_for_load_state(self, *_: Any, **__: Any) -> None:
        return None

    async def evaluate(self, script: str, *_: Any) -> Any:
        self.evaluated.append(script)
        return None

    async def screenshot(self, **kwargs: Any) -> bytes:
        """A valid 1x1 PNG; the arguments are recorded in ``screenshots``."""
        self._check()
        self.screenshots.append(kwargs)
        return _PNG_1X1

    async def set_viewport_size(self, size: dict[str, int]) -> None:
        self.viewport_size = dict(size)

    def is_closed(self) -> bool:
        return self.closed

    async def close(self, **_: Any) -> None:
        self.closed = True


@dataclass
class FakeRequest:
    """One request the fake browser "sent": what a server would have received (cookie values aside)."""

    context_id: int
    url: str
    headers: dict[str, str]  # lower-case names
    resource_type: str = "document"  # "document", "image", "script", "stylesheet"
    cookie_names: list[str] = field(default_factory=list)
    method: str = "GET"

    @property
    def host(self) -> str:
        return (urlsplit(self.url).hostname or "").lower()


def _has_selector(html: str, selector: str) -> bool:
    """A rough CSS match for canned pages: ``#id``, ``.class``, ``tag``, ``[name=x]``, ``tag[name=x]``."""
    for part in (p.strip() for p in selector.split(",")):
        if part.startswith("#") and re.search(rf'id=["\']?{re.escape(part[1:])}\b', html):
            return True
        if part.startswith(".") and re.search(rf'class=["\'][^"\']*\b{re.escape(part[1:])}\b', html):
            return True
        attr = re.fullmatch(r"(\w*)\[(\w+)=['\"]?([^'\"\]]+)['\"]?\]", part)
        if attr and re.search(rf'{attr.group(2)}=["\']?{re.escape(attr.group(3))}\b', html):
            return True
        if re.fullmatch(r"\w+", part) and re.search(rf"<{part}\b", html, re.I):
            return True
    return False


def _url_matches(url: str, pattern: Any) -> bool:
    if callable(pattern):
        return bool(pattern(url))
    if isinstance(pattern, re.Pattern):
        return bool(pattern.search(url))
    return fnmatch.fnmatch(url, str(pattern)) or url == str(pattern)


__all__ = ["CannedPage", "FakeCDPSession", "FakePageHandle", "FakeRequest", "FakeResponse", "FakeRoute", "Handler"]
