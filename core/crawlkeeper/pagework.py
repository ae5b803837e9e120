"""Working in a page of a real browser: opening it (metered, watched), loading and crawling it with the page-level
checks (egress refusals, size, scripts), parking and abandoning it. Shared by a launched and a remote browser."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from . import guard
from .errors import BrowserUnavailable, CrawlError, PageCrashed, PageTimeout, PageTooLarge, first_line
from .headers import attach_page
from .logs import safe_url
from .options import CrawlOptions
from .pages import (
    _PAGE_STATE,
    _PARK_TIMEOUT_S,
    _REFUSAL_HINTS,
    PageLoad,
    PageResult,
    _check_page_size,
    _navigation_message,
    _page_title,
    _PageState,
)

log = logging.getLogger("crawlkeeper.browser")

_WARM_HTML = ("<html><head><title>warm-up</title></head><body><main><h1>Warm-up</h1><p>A paragraph of text with "
              "a <a href='/a'>link</a> and <b>emphasis</b>.</p><ul><li>one</li><li>two</li></ul></main></body></html>")


class PageWork:
    """The page half of :class:`~crawlkeeper.browser.ChromiumBackend` (which sets ``_crawler``, ``watchdog``
    and ``max_browser_mb``)."""

    _crawler: Any
    watchdog: guard.MemoryWatchdog | None
    max_browser_mb: int | None

    async def new_page(self, context: Any) -> Any:
        watcher = guard.guard_of(context)
        page = await (watcher.new_page() if watcher is not None else context.new_page())
        await guard.meter_page(page)
        await attach_page(page)  # scoped headers, decided per redirect hop (headers.py)
        state = _PageState()
        _PAGE_STATE[page] = state

        def on_response(response: Any) -> None:
            try:
                if not (response.request.is_navigation_request() and response.frame == page.main_frame):
                    return
                state.status = response.status
                refused = response.headers.get("x-crawlkeeper-refused")
                if refused:
                    state.refused = refused
                    state.refused_message = response.headers.get("x-crawlkeeper-refused-message")
                declared = response.headers.get("content-length", "")
                if state.max_bytes and declared.isdigit() and int(declared) > state.max_bytes:
                    # Stop before Chromium parses it all: a new navigation cancels the oversized one.
                    state.too_large = int(declared)
                    task = asyncio.get_running_loop().create_task(page.goto("about:blank"))
                    task.add_done_callback(lambda t: t.exception())
            except Exception:
                pass

        page.on("response", on_response)
        return page

    def crash_message(self, url: str) -> str:
        """Why a page's renderer died, in words the caller can act on."""
        if self.watchdog is not None and self.watchdog.killed_recently():
            return (f"the page {safe_url(url)} was stopped: the browser used more memory than [limits] "
                    f"max_browser_mb = {self.max_browser_mb} allows, and this page's renderer used the most. "
                    "Other sessions are unaffected; retry later, or raise [limits] max_browser_mb")
        heap = f" (JavaScript heap limit {guard.js_heap_mb(self.max_browser_mb)} MB)" if self.max_browser_mb else ""
        return (f"the page {safe_url(url)} crashed its renderer, most likely by running out of memory{heap}; "
                "other sessions are unaffected. Retry, or raise [limits] max_browser_mb")

    async def park_page(self, page: Any) -> None:
        """Stop everything ``page`` runs between calls: scripts, timers, loads, workers, sockets (a session
        page keeps its sessionStorage, which belongs to the tab). Raises if the page cannot be parked."""
        await page.goto("about:blank", timeout=_PARK_TIMEOUT_S * 1000)
        watcher = guard.guard_of(page.context)
        if watcher is not None:
            await watcher.sweep()

    async def reset_context(self, context: Any, page: Any) -> None:
        """Make a parked session-less context as good as new: no cookies, no storage of any origin the page
        reached (local/session storage, IndexedDB, cache storage, service workers)."""
        meter = guard.meter_of(page)
        await asyncio.gather(
            context.clear_cookies(),
            meter.clear_storage(set()) if meter is not None else asyncio.sleep(0),
        )

    def allow_pages(self, context: Any) -> Any:
        """A context manager under which ``context`` may open extra pages (an auth plugin's login popups)."""
        watcher = guard.guard_of(context)
        return watcher.allow_pages() if watcher is not None else contextlib.nullcontext()

    async def abandon_page(self, page: Any) -> None:
        """Close a page that hangs (an endless script, a load that never ends) without blocking its context:
        stop its JavaScript first, or the renderer stays busy for every other page of the same site."""
        try:
            cdp = await asyncio.wait_for(page.context.new_cdp_session(page), 2)
            await asyncio.wait_for(cdp.send("Runtime.terminateExecution"), 2)
        except Exception as exc:
            log.debug("could not stop the page's scripts: %s", exc)
        try:
            await asyncio.wait_for(page.close(run_before_unload=False), 3)
        except Exception as exc:
            log.debug("could not close a hung page: %s", exc)

    async def load(self, page: Any, url: str, options: CrawlOptions) -> PageLoad:
        """Load ``url`` in ``page`` without crawl4ai's processing (for screenshot and extract): the same
        checks as :meth:`crawl` (egress refusals, size), then the call's js_code and wait_for."""
        from .scripts import run_scripts, wait_for_condition

        await self._crawler_ready()
        if self._crawler is None:
            raise BrowserUnavailable("the browser is not running; retry the call to relaunch it")
        state = _PAGE_STATE.setdefault(page, _PageState())
        state.max_bytes, state.too_large, state.refused = int(options.max_page_mb * 1024 * 1024), None, None
        state.status, state.script, state.script_error, state.navigated = None, None, None, False
        deadline = asyncio.get_running_loop().time() + options.timeout_s
        try:
            response = await page.goto(url, wait_until=options.wait_until, timeout=options.timeout_s * 1000)
        except Exception as exc:
            self._raise_refusals(url, state, options)
            message = first_line(exc)
            if "Timeout" in message and "exceeded" in message:
                raise PageTimeout(f"timed out after {options.timeout_s:g} s loading {safe_url(url)}") from None
            raise CrawlError(_navigation_message(url, message)) from None
        self._raise_refusals(url, state, options)
        if not state.too_large:
            try:
                await _check_page_size(page)
            except CrawlError:
                pass
        self._raise_refusals(url, state, options)
        if options.js_code:
            state.navigated = await run_scripts(page, options.js_code, wait_until=options.wait_until,
                                                deadline=deadline)
            if state.navigated:
                try:
                    await _check_page_size(page)
                except CrawlError:
                    pass
                self._raise_refusals(url, state, options)
        if options.wait_for:
            await wait_for_condition(page, options.wait_for, deadline)
        status = state.status if state.status is not None else getattr(response, "status", None)
        return PageLoad(url=url, final_url=page.url or url, status=status, title=await _page_title(page))

    @staticmethod
    def _raise_refusals(url: str, state: _PageState, options: CrawlOptions) -> None:
        if state.refused:
            raise CrawlError(
                f"refused to load {safe_url(url)}: it leads to an address the egress policy refuses "
                f"({state.refused}); to allow it, add the host to [security] allow_private"
            )
        if state.too_large:
            raise CrawlError(
                f"{safe_url(url)} is too large: about {state.too_large / 1_048_576:.1f} MB of HTML, above "
                f"max_page_mb = {options.max_page_mb:g}; raise [crawl] max_page_mb"
            )

    async def _crawler_ready(self) -> None:
        """A browser that is up before crawl4ai was imported (launched early) gets its crawler now; after a
        crash (browser gone) nothing is relaunched here: the call fails and the next one relaunches."""
        if self._crawler is None and getattr(self, "alive", False):
            await self.start()  # type: ignore[attr-defined]

    async def warm_pipeline(self, options: CrawlOptions) -> None:
        """Run crawl4ai's processing once on a small held page (``raw:``, no browser, no network): its first
        run compiles regular expressions and sets up the scraping and markdown strategies (~0.2 s of CPU) that
        an agent's first crawl would otherwise wait for."""
        from . import _crawl4ai

        crawler = self._crawler
        if crawler is not None:
            await crawler.arun("raw:" + _WARM_HTML, config=_crawl4ai.process_config(options, "http://localhost/"))
            _crawl4ai.run_config(options, "ck-warm")  # the template of the default options, built once

    async def crawl(self, page: Any, url: str, options: CrawlOptions) -> PageResult:
        from . import _crawl4ai

        await self._crawler_ready()
        crawler = self._crawler
        if crawler is None:
            raise BrowserUnavailable("the browser is not running; retry the call to relaunch it")
        key = f"ck-{id(page):x}"
        state = _PAGE_STATE.setdefault(page, _PageState())
        state.max_bytes, state.too_large = int(options.max_page_mb * 1024 * 1024), None
        state.refused = state.refused_message = None
        state.script, state.script_error, state.navigated = None, None, False
        run_options = options
        if options.js_code or options.wait_for:
            # Ours, not crawl4ai's: it swallows script errors and checks wait_for before the script runs.
            deadline = asyncio.get_running_loop().time() + options.timeout_s
            state.script = (options.js_code, options.wait_for, options.wait_until, deadline)
            run_options = options.model_copy(update={"js_code": None, "wait_for": None})
        meter = guard.meter_of(page)
        if meter is not None:
            meter.arm(state.max_bytes)
        _crawl4ai.attach(crawler, key, page.context, page)
        try:
            result = await guard.race_meter(crawler.arun(url, config=_crawl4ai.run_config(run_options, key)), meter)
        finally:
            _crawl4ai.detach(crawler, key)
            state.script = None
        if meter is not None and meter.crashed:
            raise PageCrashed(self.crash_message(url))
        if meter is not None and meter.problem:
            raise PageTooLarge(guard.too_large_message(url, meter.problem))
        if state.refused:
            # The proxy's own message: it names the host as the proxy parsed it and the setting that refused it.
            detail = state.refused_message or _REFUSAL_HINTS.get(state.refused, _REFUSAL_HINTS["address"])
            raise CrawlError(f"refused to crawl {safe_url(url)}: it redirects to a host the egress policy refuses: "
                             f"{detail}")
        if state.too_large:
            raise PageTooLarge(
                f"{safe_url(url)} is too large: about {state.too_large / 1_048_576:.1f} MB of HTML, above "
                f"max_page_mb = {options.max_page_mb:g}; use css_selector on a smaller part, or raise "
                "[crawl] max_page_mb"
            )
        if state.script_error is not None:
            error, state.script_error = state.script_error, None
            raise type(error)(str(error))
        status = state.status if state.navigated and state.status else result.status_code
        html = result.html or ""
        if not html and not result.success:
            error = result.error_message or "no content"
            if "Timeout" in error and "exceeded" in error:
                raise PageTimeout(f"timed out after {options.timeout_s:g} s loading {safe_url(url)}")
            raise CrawlError(_navigation_message(url, error))
        markdown = getattr(result.markdown, "raw_markdown", None) or str(result.markdown or "")
        metadata = result.metadata or {}
        links = [
            {"href": link.get("href", ""), "text": (link.get("text") or "").strip()}
            for kind in ("internal", "external")
            for link in (result.links or {}).get(kind, [])
        ]
        return PageResult(
            url=url,
            final_url=result.redirected_url or page.url or url,
            status=status,
            title=(metadata.get("title") or "").strip() or await _page_title(page),
            html=result.cleaned_html if options.css_selector else html,
            markdown=markdown,
            cleaned_html=result.cleaned_html or html,
            links=links,
        )


