"""Guards that keep a hostile page inside its call: decoded-size metering, popup closing, page parking.

- :class:`PageMeter` counts the *decoded* bytes a page receives, per response, as they arrive, from the
  DevTools protocol's ``Network.dataReceived`` events (``dataLength`` is the size after gzip/br/zstd
  decoding). A Content-Length check sees only the compressed size and a chunked stream has none; the egress
  proxy sees plain HTTP only (HTTPS is an opaque tunnel to it, and it would have to re-implement every
  content coding), so the count is taken where the browser itself decodes. The events come from the page's
  renderer as it consumes the body, which is also what makes its memory grow: the network service holds
  only a small pipe buffer ahead of it. When a response (or the page's total) passes the limit the meter
  trips: the crawl waiting on it fails at once and the page is abandoned.
- For plain HTTP the egress proxy counts the same decoded bytes at network speed (the renderer takes in HTML at
  2-3 MB/s, so at ``max_page_mb = 20`` the meter alone tripped ~8 s in): each context authenticates to the proxy
  with its own tag (:attr:`ContextGuard.tag`), the proxy asks the context's guard for the limit and cuts a
  response that passes it, and the guard trips the meters of the context's pages with the same error. The proxy
  also sees what the page's own DevTools session does not: cross-site (out-of-process) iframes and workers.
- :class:`ContextGuard` closes every page of a context that crawlkeeper did not open itself (popups, also
  those opened by ``js_code``, which Chromium's popup blocker lets through as user-initiated) the moment it
  appears, except while an auth plugin's login runs (OAuth-style popups), and sweeps leftovers after it.

Between calls a page is *parked* on ``about:blank`` (see ``ChromiumBackend.park_page``): nothing it loaded
keeps running, and sessionStorage, which lives in the tab, survives for the session's next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import weakref
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from .attached import Attached
from .logs import safe_url

# The browser's memory as a whole lives in memory.py; its names stay importable from here.
from .memory import (  # noqa: F401  (re-exported)
    MemoryWatchdog,
    browser_processes,
    find_browser_process,
    js_heap_mb,
    memory_args,
)

log = logging.getLogger("crawlkeeper.guard")

#: The page's total received bytes may reach this many times ``max_page_mb`` (many medium responses).
TOTAL_FACTOR = 2
#: Audio/video is streamed through the media pipeline's bounded buffers, not held whole: not counted.
_UNCOUNTED_TYPES = frozenset({"Media"})
_CDP_TIMEOUT_S = 5.0


class PageMeter:
    """Decoded bytes a page received since it was last armed, per response and in total."""

    def __init__(self, page: Any, cdp: Any) -> None:
        self.page = page
        self.cdp = cdp
        self.max_bytes = 0
        self.tripped = asyncio.Event()
        self.problem: str | None = None  # what passed the limit, in words
        self.crashed = False  # the page's renderer died (out of memory, or killed by the watchdog)
        self.origins: set[str] = set()  # every origin a response came from since the last reset
        self._sizes: dict[str, int] = {}
        self._kinds: dict[str, tuple[str, str]] = {}  # requestId -> (resource type, url)
        self._total = 0

    @classmethod
    async def attach(cls, page: Any) -> PageMeter:
        """Open a DevTools session on ``page`` and start counting (response bodies are not buffered)."""
        cdp = await page.context.new_cdp_session(page)
        meter = cls(page, cdp)
        cdp.on("Network.requestWillBeSent", meter._on_request)
        cdp.on("Network.responseReceived", meter._on_response)
        cdp.on("Network.dataReceived", meter._on_data)
        cdp.on("Network.loadingFinished", meter._on_done)
        cdp.on("Network.loadingFailed", meter._on_done)
        await asyncio.wait_for(
            cdp.send("Network.enable", {"maxTotalBufferSize": 0, "maxResourceBufferSize": 0}), _CDP_TIMEOUT_S
        )
        return meter

    def crash(self) -> None:
        """The page's renderer is gone: whoever waits on ``tripped`` fails at once instead of at its timeout."""
        self.crashed = True
        self.tripped.set()

    def arm(self, max_bytes: int) -> None:
        """Start a new call: limits at ``max_bytes`` per response, ``TOTAL_FACTOR`` times that in total."""
        self.max_bytes = max_bytes
        self.problem = None
        if not self.crashed:
            self.tripped.clear()
        self._total = 0
        self._sizes.clear()

    def _on_request(self, params: dict[str, Any]) -> None:
        # Known before the egress proxy sees the request: a cut it reports can say what the response was.
        url = params.get("request", {}).get("url", "")
        self._kinds[params.get("requestId", "")] = (params.get("type", "Other"), url)

    def _on_response(self, params: dict[str, Any]) -> None:
        url = params.get("response", {}).get("url", "")
        self._kinds[params.get("requestId", "")] = (params.get("type", "Other"), url)
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.netloc:
            self.origins.add(f"{parts.scheme}://{parts.netloc}")

    def _on_done(self, params: dict[str, Any]) -> None:
        self._kinds.pop(params.get("requestId", ""), None)
        self._sizes.pop(params.get("requestId", ""), None)

    def _on_data(self, params: dict[str, Any]) -> None:
        if not self.max_bytes or self.problem:
            return
        request_id = params.get("requestId", "")
        kind, url = self._kinds.get(request_id, ("Other", ""))
        if kind in _UNCOUNTED_TYPES:
            return
        size = self._sizes[request_id] = self._sizes.get(request_id, 0) + int(params.get("dataLength", 0))
        self._total += int(params.get("dataLength", 0))
        limit_mb = self.max_bytes / 1_048_576
        if size > self.max_bytes:
            self._trip(_too_large(kind, url, size, self.max_bytes))
        elif self._total > TOTAL_FACTOR * self.max_bytes:
            self._trip(f"it received {self._total / 1_048_576:.1f} MB (decompressed) in all, above "
                       f"{TOTAL_FACTOR} x max_page_mb = {TOTAL_FACTOR * limit_mb:g} MB")

    def exceeded_upstream(self, url: str, size: int) -> None:
        """The egress proxy cut a response of this page's context at ``size`` decoded bytes."""
        if not self.max_bytes or self.problem:
            return
        # The page's own responses are known by URL; a cross-site iframe's or a worker's are not.
        kind = next((k for k, u in self._kinds.values() if u == url), "")
        if kind in _UNCOUNTED_TYPES:
            return
        self._trip(_too_large(kind, url, size, self.max_bytes))

    def _trip(self, problem: str) -> None:
        self.problem = problem
        self.tripped.set()
        # Stop feeding the renderer right away; whoever waits on ``tripped`` abandons the page.
        task = asyncio.get_running_loop().create_task(self.cdp.send("Page.stopLoading"))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def clear_storage(self, extra_origins: set[str]) -> None:
        """Clear the context's HTTP cache and every kind of storage (local/session storage, IndexedDB, cache
        storage...) of the origins the page received responses from, plus ``extra_origins``; then forget them."""
        origins = self.origins | extra_origins
        self.origins = set()
        # The HTTP cache too: Playwright switches it off per page while it intercepts requests (it does with
        # the egress proxy's credentials), but a page without interception would serve call 1's cached
        # responses to call 2. Clears the cache of this page's context (off the record) only.
        await asyncio.wait_for(asyncio.gather(self.cdp.send("Network.clearBrowserCache"), *(
            self.cdp.send("Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "all"})
            for origin in origins
        )), _CDP_TIMEOUT_S)


def _too_large(kind: str, url: str, size: int, max_bytes: int) -> str:
    if kind == "Document":
        what = "its HTML"
    elif kind:
        what = f"a {kind.lower()} response it loaded ({safe_url(url)})"
    else:
        what = f"a response it loaded ({safe_url(url)})"
    return f"{what} passed {size / 1_048_576:.1f} MB once decompressed, above max_page_mb = {max_bytes / 1_048_576:g}"


def too_large_message(url: str, problem: str) -> str:
    return (f"{safe_url(url)} is too large: {problem}; the page was stopped. If the page is legitimate, raise "
            "[crawl] max_page_mb (in the config file or the profile)")


async def race_meter(work: Any, meter: PageMeter | None) -> Any:
    """Await ``work`` unless ``meter`` trips first; then cancel it and return None (the caller checks the
    meter). Cancelling the caller cancels ``work`` too."""
    task = asyncio.ensure_future(work)
    if meter is None:
        return await task
    waiter = asyncio.ensure_future(meter.tripped.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    # Not awaited: the page is busy with the oversized body, so the cancellation lands late; the caller
    # answers now and abandons the page.
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return None


class ContextGuard:
    """Tracks the pages crawlkeeper opened in one context and closes every other page as soon as it appears."""

    def __init__(self, context: Any, tag: str = "") -> None:
        self.context = context
        self.tag = tag  # in the context's egress proxy user name: the proxy asks this guard for its limit
        self.ours: weakref.WeakSet[Any] = weakref.WeakSet()
        self.closed_pages = 0
        self._opening = 0
        self._opened = asyncio.Event()
        self._opened.set()
        self._allowing = 0
        context.on("page", self._on_page)

    async def new_page(self) -> Any:
        """A page of ours (never closed by the guard)."""
        self._opening += 1
        self._opened.clear()
        try:
            page = await self.context.new_page()
            self.ours.add(page)
            return page
        finally:
            self._opening -= 1
            if not self._opening:
                self._opened.set()

    @property
    def max_bytes(self) -> int:
        """The largest decoded response the egress proxy lets through for this context now: the limit of the
        calls last armed on its pages (0 before any call; after one it stays armed, harmlessly: a parked page
        loads nothing)."""
        return max((m.max_bytes for m in self._meters()), default=0)

    def exceeded(self, url: str, size: int) -> None:
        """The egress proxy cut a response of this context: every running crawl on its pages fails at once."""
        log.info("cut %s at %.1f MB (decompressed): above max_page_mb", safe_url(url), size / 1_048_576)
        for meter in self._meters():
            meter.exceeded_upstream(url, size)

    def _meters(self) -> list[PageMeter]:
        return [m for m in (_METERS.get(p) for p in list(self.ours)) if m is not None and m.max_bytes]

    @contextlib.contextmanager
    def allow_pages(self) -> Iterator[None]:
        """Let other pages live while trusted code (an auth plugin's login) runs; they are swept after."""
        self._allowing += 1
        try:
            yield
        finally:
            self._allowing -= 1

    def _on_page(self, page: Any) -> None:
        if page in self.ours:
            return
        task = asyncio.get_running_loop().create_task(self._judge(page))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _judge(self, page: Any) -> None:
        # Our own new_page's page shows up here before new_page returns: wait until it is registered.
        await self._opened.wait()
        if page in self.ours or self._allowing:
            return
        await self._close(page)

    async def sweep(self) -> int:
        """Close every page of the context that is not ours (left over from a login, or missed)."""
        if self._allowing:
            return 0
        strays = [p for p in list(getattr(self.context, "pages", [])) if p not in self.ours]
        await asyncio.gather(*(self._close(p) for p in strays))
        return len(strays)

    async def _close(self, page: Any) -> None:
        self.closed_pages += 1
        log.info("closed a page the crawled site opened (%s)", safe_url(_url_of(page)))
        try:
            await asyncio.wait_for(page.close(run_before_unload=False), _CDP_TIMEOUT_S)
        except Exception as exc:
            log.debug("could not close an unwanted page: %s", exc)


def _url_of(page: Any) -> str:
    try:
        return str(page.url)
    except Exception:
        return "?"


# Kept on the context/page itself: a guard holds its context and a meter its page (see attached.py).
_GUARDS: Attached[ContextGuard] = Attached("guard")
_METERS: Attached[PageMeter] = Attached("meter")
_TAGGED: weakref.WeakValueDictionary[str, ContextGuard] = weakref.WeakValueDictionary()


def guard_of(context: Any) -> ContextGuard | None:
    return _GUARDS.get(context)


def meter_of(page: Any) -> PageMeter | None:
    return _METERS.get(page)


def new_tag() -> str:
    """A fresh tag for a context's egress proxy user name (see :func:`watch_context`)."""
    return secrets.token_hex(6)


def watch_context(context: Any, tag: str = "") -> ContextGuard:
    """Guard ``context``; with ``tag`` (the one in its egress proxy user name), the proxy meters it too."""
    guard = _GUARDS[context] = ContextGuard(context, tag)
    if tag:
        _TAGGED[tag] = guard
    return guard


def body_limit(tag: str) -> ContextGuard | None:
    """What the egress proxy asks about a connection from the context tagged ``tag``."""
    return _TAGGED.get(tag)


async def meter_page(page: Any) -> PageMeter | None:
    """Attach a :class:`PageMeter` to ``page`` (None, logged, if the browser does not speak CDP)."""
    try:
        meter = _METERS[page] = await PageMeter.attach(page)
        page.on("crash", lambda _page: meter.crash())
    except Exception as exc:
        # Under load the exception's text can be empty (a bare TimeoutError): its type and repr say what it was.
        log.warning("cannot meter the page's downloads (max_page_mb applies to Content-Length only): %s: %r",
                    type(exc).__name__, exc)
        return None
    return meter
