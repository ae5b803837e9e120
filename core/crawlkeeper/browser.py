"""The shared browser: finding a Chromium, launching it lazily, isolated contexts, crawling a page.

``BrowserBackend`` is the seam between the core and a browser. ``ChromiumBackend`` is the real one
(Playwright-launched Chromium driven through crawl4ai); ``crawlkeeper.testing.FakeBrowser`` is the fake
that plugin authors test with. The core never imports crawl4ai or Playwright itself: only this module
does, and only when the first browser call needs them, so ``initialize`` answers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import sys
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from . import guard
from .errors import BrowserUnavailable, CrawlError, PageCrashed, PageTimeout, PageTooLarge, first_line
from .headers import attach_page
from .launch import launch_args
from .logs import safe_url
from .options import ContextOptions, CrawlOptions

log = logging.getLogger("crawlkeeper.browser")

# crawl4ai prints a promotional banner to stdout on import unless this is set; stdout is the MCP channel.
os.environ.setdefault("CRAWL4AI_NO_CLOUD_NOTICE", "1")

SYSTEM_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: Debian's /usr/bin/chromium is a shell wrapper that prints to stderr; the real binary lives here.
WRAPPER_TARGETS = {"/usr/bin/chromium": "/usr/lib/chromium/chromium"}


@dataclass
class BrowserCandidate:
    path: str | None
    source: str  # "config", "playwright", "PATH (chromium)" ...
    problem: str | None = None


@dataclass
class PageResult:
    """What one crawl produced, before it is shaped into a tool result."""

    url: str
    final_url: str
    status: int | None
    title: str
    html: str
    markdown: str
    cleaned_html: str  # the (selected) content as HTML; ``text`` output is derived from it on demand
    links: list[dict[str, str]] = field(default_factory=list)


@dataclass
class PageLoad:
    """A page loaded for a tool that reads it itself (screenshot, extract): where it ended and how."""

    url: str
    final_url: str
    status: int | None
    title: str


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


def _playwright_chromium() -> str | None:
    """Playwright's own downloaded Chromium, if ``playwright install chromium`` was run."""
    roots = [os.environ.get("PLAYWRIGHT_BROWSERS_PATH"), str(Path.home() / ".cache" / "ms-playwright")]
    if sys.platform == "darwin":
        roots.append(str(Path.home() / "Library" / "Caches" / "ms-playwright"))
    for root in filter(None, roots):
        base = Path(root)
        if not base.is_dir():
            continue
        for pattern in ("chromium-*/chrome-linux*/chrome", "chromium-*/chrome-mac*/Chromium.app/Contents/MacOS/*",
                        "chromium_headless_shell-*/chrome-*/headless_shell"):
            for hit in sorted(base.glob(pattern), reverse=True):
                if os.access(hit, os.X_OK):
                    return str(hit)
    return None


def find_browser(configured: Path | str | None = None) -> BrowserCandidate:
    """Where the browser comes from: the config, then Playwright's own Chromium, then PATH."""
    if configured:
        path = Path(configured).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            return BrowserCandidate(
                str(path), "config", f"[browser] executable_path = {path} is not an executable file"
            )
        return BrowserCandidate(WRAPPER_TARGETS.get(str(path), str(path)), "config")
    found = _playwright_chromium()
    if found:
        return BrowserCandidate(found, "playwright")
    for name in SYSTEM_BROWSERS:
        hit = shutil.which(name)
        if hit:
            real = os.path.realpath(hit)
            real = WRAPPER_TARGETS.get(hit, WRAPPER_TARGETS.get(real, real))
            if os.access(real, os.X_OK):
                return BrowserCandidate(real, f"PATH ({name})")
    return BrowserCandidate(
        None,
        "none",
        "no Chromium or Chrome found. Install one: `sudo apt-get install chromium` (Debian/Ubuntu), "
        "`python -m playwright install chromium`, or set [browser] executable_path in the config",
    )


PROFILE_DIR_PREFIXES = ("playwright_chromiumdev_profile-", "playwright-artifacts-")


def cleanup_stale(tmp_dir: str | None = None) -> tuple[int, int]:
    """Remove what a previous run killed with SIGKILL left behind: orphaned Chromium processes (Linux) and
    Playwright's temporary profile folders whose browser is gone. Returns (processes killed, folders removed)."""
    import signal
    import tempfile
    import time

    tmp = Path(tmp_dir or tempfile.gettempdir())
    killed = 0
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            marker = f"--user-data-dir={tmp}/{PROFILE_DIR_PREFIXES[0]}".encode()
            if ppid == 1 and any(arg.startswith(marker) for arg in cmdline):
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
    removed = 0
    for folder in tmp.glob("playwright*"):
        if not folder.name.startswith(PROFILE_DIR_PREFIXES) or not folder.is_dir():
            continue
        lock = folder / "SingletonLock"
        try:
            owner = os.readlink(lock).rsplit("-", 1)[-1]
            alive = owner.isdigit() and Path(f"/proc/{owner}").exists()
        except OSError:
            alive = time.time() - folder.stat().st_mtime < 600  # no lock yet: maybe starting right now
        if not alive:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if killed or removed:
        log.info("cleaned up after a previous run: %d orphaned browser processes, %d temporary profiles",
                 killed, removed)
    return killed, removed


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


class ChromiumBackend:
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
    ) -> None:
        self.cdp_url = cdp_url
        self.max_browser_mb = max_browser_mb
        self.watchdog: guard.MemoryWatchdog | None = None
        self.candidate = (
            BrowserCandidate(cdp_url, "[browser] cdp_url") if cdp_url else find_browser(executable_path)
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

    @property
    def description(self) -> str:
        return f"{self.candidate.path} (from {self.candidate.source})"

    @property
    def alive(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    def on_crash(self, callback: Callable[[int], None]) -> None:
        self._crash_callbacks.append(callback)

    async def start(self) -> None:
        """Launch the browser if it is not running (first use, or after a crash)."""
        if self.alive:
            return
        async with self._lock:
            if self.alive:
                return
            await self._discard()
            if self.candidate.problem:
                raise BrowserUnavailable(self.candidate.problem)
            from . import _crawl4ai

            if self.cache_dir is not None:
                _crawl4ai.prepare_environment(self.cache_dir)
            if self.generation == 0:
                _crawl4ai.check_compatible()  # an incompatible crawl4ai must fail loudly, not leak cookies
                await asyncio.get_running_loop().run_in_executor(None, cleanup_stale)
            args = launch_args(self.extra_args)
            if self.max_browser_mb:
                args += guard.memory_args(self.max_browser_mb, self.extra_args)
            before = guard.browser_processes() if self.max_browser_mb and not self.cdp_url else set()
            crawler = _crawl4ai.make_crawler(
                cdp_url=self.cdp_url,
                executable_path=None if self.cdp_url else self.candidate.path,
                headless=self.headless,
                args=args,
                proxy=playwright_proxy(self.proxy_url),
                after_goto=_check_page_size,
                before_retrieve_html=_run_call_scripts,
            )
            try:
                await crawler.start()
            except Exception as exc:
                try:
                    await crawler.close()
                except Exception:
                    pass
                raise BrowserUnavailable(
                    f"the browser {self.description} failed to launch: {first_line(exc)}. "
                    "Run `crawlkeeper doctor` for details"
                ) from exc
            self._crawler = crawler
            self._browser = _crawl4ai.browser_of(crawler)
            self.generation += 1
            generation = self.generation
            self._browser.on("disconnected", lambda _b: self._disconnected(generation))
            self._start_watchdog(before)
            log.info("browser started: %s (generation %d)", self.description, generation)

    def _start_watchdog(self, before: set[int]) -> None:
        if not self.max_browser_mb or self.cdp_url:
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
        log.error("the browser (generation %d) disconnected; it will be relaunched on next use", generation)
        for callback in self._crash_callbacks:
            try:
                callback(generation)
            except Exception:
                log.exception("crash callback failed")

    async def _discard(self) -> None:
        crawler, self._crawler, self._browser = self._crawler, None, None
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
            await self._discard()
        finally:
            self._closing = False

    async def warm_up(self) -> None:
        """Import crawl4ai (and Playwright) in a thread: ~1.3 s of imports the first call would otherwise pay."""
        if self.cache_dir is not None:
            from . import _crawl4ai

            _crawl4ai.prepare_environment(self.cache_dir)
        await asyncio.to_thread(__import__, "crawl4ai")

    async def new_context(self, options: ContextOptions, *, proxy_url: str | None = None) -> Any:
        await self.start()
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
        context = await self._browser.new_context(**kwargs)
        guard.watch_context(context)  # closes popups and other pages the site opens
        return context

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

    async def crawl(self, page: Any, url: str, options: CrawlOptions) -> PageResult:
        from . import _crawl4ai

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


_PARK_TIMEOUT_S = 5.0


@dataclass
class _PageState:
    status: int | None = None
    max_bytes: int | None = None
    too_large: int | None = None
    refused: str | None = None  # the egress proxy refused a hop of the page's navigation (its reason code)
    refused_message: str | None = None  # ... and its message
    script: tuple[Any, str | None, str, float] | None = None  # (js_code, wait_for, wait_until, deadline)
    script_error: CrawlError | None = None
    navigated: bool = False  # js_code navigated: the status is the new document's


async def _run_call_scripts(page: Any, context: Any = None, config: Any = None, **_: Any) -> Any:
    """crawl4ai ``before_retrieve_html`` hook: the call's js_code, then its wait_for (see :mod:`.scripts`)."""
    from .scripts import run_scripts, wait_for_condition

    state = _PAGE_STATE.get(page)
    if state is None or state.script is None:
        return page
    js_code, wait_for, wait_until, deadline = state.script
    try:
        if js_code:
            state.navigated = await run_scripts(page, js_code, wait_until=wait_until, deadline=deadline)
            if state.navigated and not state.too_large:
                await _check_page_size(page)
        if wait_for:
            await wait_for_condition(page, wait_for, deadline)
    except CrawlError as exc:
        state.script_error = exc
        raise
    return page


#: Which setting to change, by the proxy's reason code (when its message did not come through).
_REFUSAL_HINTS = {
    "domain": "the host is not in the profile's allowed_domains",
    "scheme": "the URL scheme is not in [security] allowed_schemes",
    "metadata": "it is a cloud metadata address; only its exact address in [security] allow_private allows it",
    "host": "the host is not valid",
    "address": "its address is private; to allow it, add the host to [security] allow_private",
}


async def _check_page_size(page: Any, context: Any = None, url: str | None = None, response: Any = None,
                           **_: Any) -> Any:
    """crawl4ai ``after_goto`` hook: refuse pages above ``max_page_mb`` before they are processed.

    A declared Content-Length is already enforced as the headers arrive (``new_page``'s response listener);
    this catches pages sent without one, by the size of the document the browser built."""
    state = _PAGE_STATE.get(page)
    if state is None or not state.max_bytes or state.too_large:
        return page
    try:
        size = await page.evaluate("document.documentElement ? document.documentElement.outerHTML.length : 0")
    except Exception:
        return page
    if size > state.max_bytes:
        state.too_large = size
        raise CrawlError("page too large")
    return page


_PAGE_STATE: weakref.WeakKeyDictionary[Any, _PageState] = weakref.WeakKeyDictionary()


async def _page_title(page: Any) -> str:
    """The document's title (crawl4ai reads it from the selected fragment, so css_selector loses it)."""
    try:
        return (await asyncio.wait_for(page.title(), 2)).strip()
    except Exception:
        return ""


_INTERNALS = re.compile(r"\s*(?:Unexpected error in \w+ at line \d+ in \w+ )?\([^()]*site-packages[^()]*\):?")


def _navigation_message(url: str, error: str) -> str:
    """A navigation failure in words, without crawl4ai's internal file paths or the URL's query string."""
    first = _INTERNALS.sub("", error.strip().splitlines()[0] if error.strip() else error).strip(" :")
    detail = f" ({first[:200]})" if first else ""
    for marker, meaning in (
        ("ERR_NAME_NOT_RESOLVED", "the host name does not resolve"),
        ("ERR_CONNECTION_REFUSED", "the server refused the connection"),
        ("ERR_TUNNEL_CONNECTION_FAILED", "the address was refused by the egress policy or is unreachable"),
        ("ERR_CERT", "the TLS certificate is not valid"),
        ("Wait condition failed", "the wait_for condition was not met in time (check it, or raise timeout_s)"),
        ("Timeout", "the page did not load in time"),
    ):
        if marker in error:
            return f"could not load {safe_url(url)}: {meaning}"
    return f"could not load {safe_url(url)}{':' if detail else ''}{detail}"


_BLOCKS = ("p", "div", "br", "li", "h1", "h2", "h3", "h4", "h5", "h6", "tr", "section", "article", "header",
           "footer", "pre", "blockquote", "dt", "dd", "table", "ul", "ol")


def html_to_text(html: str) -> str:
    """Visible text of an HTML fragment, one block per line (lxml is a crawl4ai dependency).

    Linear in the page size (tree iteration, not an XPath union, which is quadratic on large pages); callers
    on the event loop run it in a thread.
    """
    if not html.strip():
        return ""
    import lxml.html

    try:
        root = lxml.html.fromstring(html)
    except Exception:
        return ""
    for bad in list(root.iter("script", "style", "noscript", "template")):
        bad.drop_tree()
    for block in root.iter(*_BLOCKS):
        block.tail = "\n" + (block.tail or "")
    lines = (" ".join(line.split()) for line in root.text_content().splitlines())
    return "\n".join(line for line in lines if line)
