"""The browser: one Chromium launched lazily (or one remote endpoint), isolated contexts, crawling a page.

``BrowserBackend`` is the seam between the core and a browser. ``ChromiumBackend`` is the real one
(Playwright-launched Chromium, or a remote one reached over Playwright's protocol or CDP, driven through
crawl4ai); :mod:`crawlkeeper.fleet` spreads sessions over several endpoints; finding a local binary is in
:mod:`crawlkeeper.local`, the page-level checks in :mod:`crawlkeeper.pages`;
``crawlkeeper.testing.FakeBrowser`` is the fake that plugin authors test with. The core never imports
crawl4ai or Playwright itself: only these modules do, and only when the first browser call needs them, so
``initialize`` answers at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from . import guard
from .early import EarlyLaunch, Launched
from .endpoints import Endpoint
from .errors import BrowserUnavailable, first_line
from .launch import launch_args
from .local import (  # noqa: F401  (re-exported: the public home of these names)
    PROFILE_DIR_PREFIXES,
    SYSTEM_BROWSERS,
    WRAPPER_TARGETS,
    BrowserCandidate,
    cleanup_stale,
    find_browser,
)
from .options import ContextOptions, CrawlOptions
from .pages import (  # noqa: F401  (PageLoad, PageResult, html_to_text: re-exported)
    _PAGE_STATE,
    _PARK_TIMEOUT_S,
    _REFUSAL_HINTS,
    PageLoad,
    PageResult,
    _check_page_size,
    _navigation_message,
    _page_title,
    _PageState,
    _run_call_scripts,
    html_to_text,
)
from .pagework import PageWork
from .spare import SpareContext

log = logging.getLogger("crawlkeeper.browser")

# crawl4ai prints a promotional banner to stdout on import unless this is set; stdout is the MCP channel.
os.environ.setdefault("CRAWL4AI_NO_CLOUD_NOTICE", "1")


class BrowserBackend(Protocol):
    """What the core needs from a browser. Contexts and pages are Playwright objects (or look-alikes)."""

    generation: int  # increases every time the browser is (re)launched
    description: str

    @property
    def alive(self) -> bool: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def new_context(self, options: ContextOptions, *, proxy_url: str | None = None) -> Any: ...
    async def new_page(self, context: Any) -> Any: ...
    async def crawl(self, page: Any, url: str, options: CrawlOptions) -> PageResult: ...
    async def load(self, page: Any, url: str, options: CrawlOptions) -> PageLoad: ...
    def on_crash(self, callback: Callable[[int], None]) -> None: ...




# Generations tell a context on a browser that is still running from one on a browser that died. One browser
# counts up (a session of an older generation than a crash is lost); a fleet has one per endpoint connection,
# and an endpoint's loss ends only its own. These helpers accept any backend (the fake has only ``generation``).


def generation_of(backend: BrowserBackend, context: Any) -> int:
    """The generation a new ``context`` belongs to (what a session is stamped with)."""
    of = getattr(backend, "generation_of", None)
    return of(context) if of is not None else backend.generation  # type: ignore[no-any-return]


def is_current(backend: BrowserBackend, generation: int) -> bool:
    """Whether a context of ``generation`` is on a browser that is still connected."""
    check = getattr(backend, "is_current", None)
    if check is not None:
        return check(generation)  # type: ignore[no-any-return]
    return generation == backend.generation and backend.alive


def lost_with(backend: BrowserBackend, generation: int, lost: int) -> bool:
    """Whether a context of ``generation`` died with the browser of generation ``lost``."""
    check = getattr(backend, "lost_with", None)
    return check(generation, lost) if check is not None else generation <= lost  # type: ignore[no-any-return]


async def new_session_context(backend: BrowserBackend, options: ContextOptions, *, proxy_url: str | None = None) -> Any:
    """A new context for a session. A fleet counts these (and not session-less ones) against an endpoint's
    ``max_sessions``; any other backend makes a plain context."""
    make = getattr(backend, "new_session_context", None)
    if make is not None:
        return await make(options, proxy_url=proxy_url)
    return await backend.new_context(options, proxy_url=proxy_url)


def playwright_proxy(url: str | None) -> dict[str, str] | None:
    """Playwright's ``proxy`` option for an egress proxy URL (``http://USER:PASSWORD@127.0.0.1:PORT``): the
    credentials go in ``username``/``password`` (Chromium ignores them in the server URL), and loopback is
    proxied too (``<-loopback>``: Chromium would otherwise reach it directly)."""
    if not url:
        return None
    parts = urlsplit(url)
    proxy = {"server": f"{parts.scheme}://{parts.hostname}:{parts.port}", "bypass": "<-loopback>"}
    if parts.username is not None:
        proxy["username"] = unquote(parts.username)
        proxy["password"] = unquote(parts.password or "")
    return proxy


def make_backend(settings: Any, cache_dir: Path | None) -> BrowserBackend:
    """The browser of a config: a fleet for ``[browser] endpoints``, else one Chromium (launched, or cdp_url)."""
    browser = settings.browser
    if browser.endpoints:
        from .fleet import FleetBackend

        return FleetBackend(browser.fleet(), cache_dir=cache_dir,  # type: ignore[return-value]
                            spare_context=browser.spare_context)
    return ChromiumBackend(
        executable_path=browser.executable_path,
        headless=browser.headless,
        extra_args=browser.extra_args,
        cache_dir=cache_dir,
        cdp_url=browser.cdp_url,
        max_browser_mb=settings.limits.max_browser_mb,
        spare_context=browser.spare_context,
    )


async def import_crawl4ai(cache_dir: Path | None) -> None:
    """Import crawl4ai off the event loop (its environment prepared first), once."""
    import sys

    if "crawl4ai.async_webcrawler" in sys.modules:
        return
    if cache_dir is not None:
        from . import _crawl4ai

        _crawl4ai.prepare_environment(cache_dir)
    await asyncio.to_thread(__import__, "crawl4ai")


class ChromiumBackend(PageWork):
    """One shared Chromium launched by Playwright (through crawl4ai) on first use; relaunched after a crash."""

    needs_proxy = True  # every context is forced through the egress proxy

    def __init__(
        self,
        *,
        executable_path: Path | str | None = None,
        headless: bool = True,
        extra_args: list[str] | None = None,
        proxy_url: str | None = None,
        cache_dir: Path | None = None,
        cdp_url: str | None = None,
        max_browser_mb: int | None = None,
        endpoint: Endpoint | None = None,
        spare_context: bool = True,
    ) -> None:
        # A remote browser (an endpoint, or the older cdp_url) is connected to, never launched.
        self.endpoint = endpoint or (Endpoint.cdp(cdp_url) if cdp_url else None)
        if self.endpoint is not None:
            self.endpoint.register_secrets()
        self.max_browser_mb = max_browser_mb
        self.watchdog: guard.MemoryWatchdog | None = None
        self.candidate = (
            BrowserCandidate(self.endpoint.name, "[browser] endpoints" if endpoint else "[browser] cdp_url")
            if self.endpoint else find_browser(executable_path)
        )
        self.headless = headless
        self.extra_args = list(extra_args or [])
        self.proxy_url = proxy_url
        self.cache_dir = cache_dir
        self.generation = 0
        self._crawler: Any = None
        self._browser: Any = None
        self._lock = asyncio.Lock()
        self._crash_callbacks: list[Callable[[int], None]] = []
        self._closing = False
        # One unused context made in advance: resuming a session then skips Chromium's ~65-250 ms (spare.py).
        self.spare = SpareContext(self._make_spare, enabled=spare_context)
        self.early = EarlyLaunch()
        self._adopted: Launched | None = None  # the early browser until crawl4ai takes it over

    @property
    def description(self) -> str:
        return f"{self.candidate.path} (from {self.candidate.source})"

    @property
    def alive(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    def on_crash(self, callback: Callable[[int], None]) -> None:
        self._crash_callbacks.append(callback)

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """Whether the browser answers a round trip now (a connection can look alive for a moment after the
        other end died). Only an error counts as dead; a browser too busy to answer in time is alive."""
        browser = self._browser
        if browser is None or not browser.is_connected():
            return False
        try:
            cdp = await asyncio.wait_for(browser.new_browser_cdp_session(), timeout_s)
            await asyncio.wait_for(cdp.detach(), timeout_s)
        except asyncio.TimeoutError:
            return True  # slow (a loaded browser) is not dead: declaring it dead would drop its sessions
        except Exception:
            return False
        return True

    async def start(self) -> None:
        """Launch the browser if it is not running (first use, or after a crash), driven by crawl4ai: a browser
        launched early (see :meth:`launch_early`) is taken over instead."""
        if self.alive and self._crawler is not None:
            return
        async with self._lock:
            if self.alive and self._crawler is not None:
                return
            if not self.alive and not await self._take_early():
                await self._launch()
            elif self._crawler is None:
                await self._attach_crawler()

    async def start_browser(self) -> None:
        """The browser up, crawl4ai perhaps not imported yet: contexts and pages can be made (the warm-up opens
        the first call's page meanwhile); :meth:`start` (which a crawl calls) then hands the browser to crawl4ai."""
        if self.alive:
            return
        async with self._lock:
            if self.alive or await self._take_early():
                return
        await self.start()

    async def _take_early(self) -> bool:
        """Take the browser launched early, if one was (waiting for its launch); False: none, or it failed."""
        if self.generation or not self.early.pending:
            return False
        launched = await self.early.take()
        if launched is None:
            return False
        self._adopted = launched
        self._up(launched.browser, launched.before, "launched early")
        return True

    async def _attach_crawler(self) -> None:
        """crawl4ai takes over the browser launched early (imported now if it is not yet)."""
        launched = self._adopted
        assert launched is not None
        await self.warm_up()  # the import, in a thread: the event loop keeps serving meanwhile
        from . import _crawl4ai

        try:
            _crawl4ai.check_compatible()  # an incompatible crawl4ai must fail loudly, not leak cookies
            crawler = _crawl4ai.make_crawler(
                executable_path=self.candidate.path, headless=self.headless, args=self._launch_args(),
                proxy=playwright_proxy(self.proxy_url), after_goto=_check_page_size,
                before_retrieve_html=_run_call_scripts, adopt=(launched.playwright, launched.browser))
            await crawler.start()
        except Exception as exc:
            await self._discard()  # the browser goes (as in a crash: contexts made on it are lost)
            if isinstance(exc, BrowserUnavailable):
                raise
            raise BrowserUnavailable(f"crawl4ai could not take over the browser {self.description}: "
                                     f"{first_line(exc)}. Run `crawlkeeper doctor` for details") from exc
        self._adopted = None  # crawl4ai owns it now: its close() closes the browser and stops the driver
        self._crawler = crawler
        # Orphans of a killed earlier run: left until now, off the start-up path (ours is not an orphan, and its
        # profile folder's lock names a live process, so both survive the sweep); nobody waits for it.
        asyncio.get_running_loop().run_in_executor(None, cleanup_stale)

    async def _launch(self) -> None:
        await self._discard()
        if self.candidate.problem:
            raise BrowserUnavailable(self.candidate.problem)
        await self.warm_up()  # the import, in a thread: the event loop keeps serving meanwhile
        from . import _crawl4ai

        if self.generation == 0:
            _crawl4ai.check_compatible()  # an incompatible crawl4ai must fail loudly, not leak cookies
            await asyncio.get_running_loop().run_in_executor(None, cleanup_stale)
        before = guard.browser_processes() if self.max_browser_mb and not self.endpoint else set()
        endpoint = self.endpoint
        crawler = _crawl4ai.make_crawler(
            executable_path=None if endpoint else self.candidate.path,
            headless=self.headless,
            args=self._launch_args(),
            proxy=playwright_proxy(self.proxy_url),
            after_goto=_check_page_size,
            before_retrieve_html=_run_call_scripts,
            connect=(lambda pw: endpoint.connect(pw)) if endpoint else None,
        )
        try:
            await crawler.start()
        except Exception as exc:
            try:
                await crawler.close()
            except Exception:
                pass
            if endpoint is not None:
                from .logs import scrub

                raise BrowserUnavailable(
                    f"the browser endpoint {endpoint.name} is unreachable: "
                    f"{scrub(first_line(exc)).replace(endpoint.url, endpoint.name)}. Check it runs (and any "
                    "token in its headers); `crawlkeeper doctor` checks every endpoint"
                ) from exc
            raise BrowserUnavailable(
                f"the browser {self.description} failed to launch: {first_line(exc)}. "
                "Run `crawlkeeper doctor` for details"
            ) from exc
        self._crawler = crawler
        self._up(_crawl4ai.browser_of(crawler), before, "")

    def _up(self, browser: Any, before: set[int], how: str) -> None:
        self._browser = browser
        self.generation += 1
        generation = self.generation
        self._browser.on("disconnected", lambda _b: self._disconnected(generation))
        self._start_watchdog(before)
        log.info("browser started: %s (generation %d%s)", self.description, generation, f", {how}" if how else "")

    def _launch_args(self) -> list[str]:
        args = launch_args(self.extra_args)
        if self.max_browser_mb:
            args += guard.memory_args(self.max_browser_mb, self.extra_args)
        return args

    def launch_early(self) -> bool:
        """Start launching the local browser now, before crawl4ai is imported (see :mod:`crawlkeeper.early`);
        :meth:`start` takes it over. False (nothing started) for a remote browser, a missing binary, or a browser
        already running or launching: those go the usual way, and report their errors on first use."""
        if self.endpoint is not None or self.candidate.problem or self.alive or self.early.pending \
                or self.generation:
            return False
        from ._crawl4ai import launch_kwargs

        self.early.start(launch_kwargs(executable_path=self.candidate.path, headless=self.headless,
                                       args=self._launch_args(), proxy=playwright_proxy(self.proxy_url)),
                         watch_processes=bool(self.max_browser_mb))
        return True

    def _start_watchdog(self, before: set[int]) -> None:
        if not self.max_browser_mb or self.endpoint:
            return  # a remote browser's processes are not ours to watch
        pid = guard.find_browser_process(before)
        if pid is None:
            log.warning("cannot find the browser's process: [limits] max_browser_mb is enforced by the "
                        "JavaScript heap limit only")
            return
        self.watchdog = guard.MemoryWatchdog(pid, self.max_browser_mb)
        self.watchdog.start()

    def _disconnected(self, generation: int) -> None:
        if self._closing or generation != self.generation:
            return
        self.spare.discard()
        log.error("the browser (generation %d) disconnected; it will be relaunched on next use", generation)
        for callback in self._crash_callbacks:
            try:
                callback(generation)
            except Exception:
                log.exception("crash callback failed")

    async def _discard(self) -> None:
        if self.endpoint is not None and self._browser is not None and self._browser.is_connected():
            await self.spare.close()  # a remote browser lives on: it would keep the spare
        else:
            self.spare.discard()  # it goes with the browser
        crawler, self._crawler, self._browser = self._crawler, None, None
        adopted, self._adopted = self._adopted, None
        if adopted is not None:
            await adopted.close()  # launched early, never handed to crawl4ai: ours to close
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        if crawler is not None:
            try:
                await asyncio.wait_for(crawler.close(), 5)
            except Exception:
                log.debug("closing the old crawler failed", exc_info=True)

    async def close(self) -> None:
        self._closing = True
        try:
            await self.early.close()  # a launch under way (shutdown before first use) leaves no browser
            await self._discard()
        finally:
            self._closing = False

    async def warm_up(self) -> None:
        """Import crawl4ai (and Playwright) in a thread: ~1.3 s of imports the first call would otherwise pay.
        A second caller while the first imports waits for it (Python's per-module import lock), in its thread."""
        await import_crawl4ai(self.cache_dir)

    async def new_context(self, options: ContextOptions, *, proxy_url: str | None = None) -> Any:
        """A new isolated context: the spare one when it was made with the same arguments (it was never used),
        else one made now."""
        await self.start_browser()  # a context needs the browser, not crawl4ai (see start_browser)
        kwargs = self._context_kwargs(options, proxy_url)
        # The spare was made with exactly these arguments and never used: as good as one made now.
        context = await self.spare.take(kwargs, self.generation)
        return context if context is not None else await self._make_context(kwargs)

    def prime_spare(self, options: ContextOptions, *, proxy_url: str | None = None) -> None:
        """Make the spare context for these options now (at start-up: the first resume needs no context made)."""
        if self.alive:
            self.spare.prime(self._context_kwargs(options, proxy_url), self.generation)

    def _context_kwargs(self, options: ContextOptions, proxy_url: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "viewport": {"width": options.viewport_width, "height": options.viewport_height},
            "java_script_enabled": options.java_script_enabled,
            "ignore_https_errors": options.ignore_https_errors,
            "service_workers": "block",
            "accept_downloads": False,
        }
        if options.user_agent:
            kwargs["user_agent"] = options.user_agent
        if options.locale:
            kwargs["locale"] = options.locale
        if options.timezone_id:
            kwargs["timezone_id"] = options.timezone_id
        if options.extra_headers:
            kwargs["extra_http_headers"] = options.extra_headers
        proxy = playwright_proxy(proxy_url or self.proxy_url)
        if proxy:
            kwargs["proxy"] = proxy
        return kwargs  # without the context's tag: equal options give equal arguments (the spare's key)

    async def _make_spare(self, kwargs: dict[str, Any]) -> Any:
        context = await self._make_context(kwargs)
        # Chromium sets up a context's cookie store on its first use (tens of ms, far more under load): reading
        # the (empty) jar now moves that out of the resume that puts the saved cookies in.
        await context.cookies()
        return context

    async def _make_context(self, kwargs: dict[str, Any]) -> Any:
        if self._browser is None:
            raise BrowserUnavailable("the browser is not running; retry the call")
        tag = ""
        proxy = kwargs.get("proxy")
        if proxy and "username" in proxy:  # the context's own tag: the egress proxy meters its responses by it
            from .egress.proxy import ProxyCredentials  # the one place the USER.TAG form is made

            tag = guard.new_tag()
            tagged = ProxyCredentials(proxy["username"], proxy.get("password", "")).tagged(tag)
            kwargs = {**kwargs, "proxy": {**proxy, "username": tagged.username}}
        context = await self._browser.new_context(**kwargs)
        guard.watch_context(context, tag)  # closes popups and other pages the site opens
        return context
