"""The one place crawlkeeper reaches into crawl4ai's internals (pinned to crawl4ai 0.9.x).

crawl4ai is used for navigation and content processing; crawlkeeper owns browser contexts (one per session)
because crawl4ai shares one context between session ids with equal run configs. Three private seams are used,
each checked by :func:`check_compatible` (and by ``tests/unit/test_crawl4ai_adapter.py``) so an upgrade that
moves them fails loudly instead of leaking cookies:

- ``BrowserManager._build_browser_args`` is wrapped per instance to add ``executable_path`` and the egress proxy;
- ``BrowserManager.sessions[session_id] = (context, page, last_used)`` makes ``arun(session_id=...)`` use our page;
- ``BrowserManager.session_ttl`` is set out of reach so crawl4ai's own 30-minute expiry never fires;
- ``BrowserManager._start_impl`` is replaced per instance for a remote endpoint: crawl4ai only knows CDP, and
  crawlkeeper connects over Playwright's own protocol (or CDP with headers) itself.

crawl4ai's own logger appends every URL (query tokens included) and every Playwright error to
``<base>/.crawl4ai/crawler.log``, unrotated: each crawler gets :func:`quiet_logger` instead, which writes no
file and hands crawl4ai's messages to Python logging (``crawlkeeper.crawl4ai``, DEBUG) with URLs stripped of
query strings and registered secrets masked.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .launch import merge_feature_switches

if TYPE_CHECKING:
    from crawl4ai import AsyncWebCrawler, CrawlerRunConfig

    from .options import CrawlOptions

NEVER = 10**9  # seconds; crawl4ai's session expiry must never fire behind our back
SUPPORTED = ("0.9.",)
#: Playwright's default Chromium flags crawlkeeper removes.
IGNORED_DEFAULT_ARGS = ("--disable-popup-blocking",)


#: Log files crawl4ai wrote in our cache dir before crawlkeeper gave it a logger: full URLs, tokens included.
STALE_LOGS = (".crawl4ai/crawler.log", ".crawl4ai/crawler_db.log")


def prepare_environment(cache_dir: Path) -> None:
    """Keep crawl4ai's files out of ``~`` (must run before crawl4ai is imported; the banner is switched off
    in :mod:`crawlkeeper.browser`), and delete the unredacted logs older versions let it write there."""
    os.environ.setdefault("CRAWL4_AI_BASE_DIRECTORY", str(cache_dir))
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in STALE_LOGS:
        try:
            (cache_dir / name).unlink()
        except OSError:
            pass


_log = logging.getLogger("crawlkeeper.crawl4ai")


@functools.lru_cache(maxsize=1)
def _quiet_logger_class() -> type:
    from crawl4ai.async_logger import AsyncLoggerBase

    from .logs import scrub

    class QuietLogger(AsyncLoggerBase):  # type: ignore[misc]
        """crawl4ai's logger interface, writing no file: messages go to Python logging at DEBUG, scrubbed."""

        verbose = False  # crawl4ai sets this from each run's config; nothing is printed either way

        def _emit(self, tag: str, message: str, params: dict[str, Any] | None = None, **_: Any) -> None:
            if not _log.isEnabledFor(logging.DEBUG):
                return
            try:
                text = message.format(**params) if params else message
            except Exception:
                text = message
            _log.debug("[%s] %s", tag, scrub(str(text)))

        def debug(self, message: str, tag: str = "DEBUG", **kwargs: Any) -> None:
            self._emit(tag, message, **kwargs)

        info = success = warning = error = critical = exception = fatal = alert = notice = debug

        def url_status(self, url: str, success: bool, timing: float, tag: str = "FETCH",
                       url_length: int = 100) -> None:
            self._emit(tag, f"{url} {'ok' if success else 'failed'} in {timing:.2f} s")

        def error_status(self, url: str, error: str, tag: str = "ERROR", url_length: int = 100) -> None:
            self._emit(tag, f"{url}: {error}")

    return QuietLogger


def quiet_logger() -> Any:
    """A crawl4ai logger that writes no file (see the module docstring)."""
    return _quiet_logger_class()()


@functools.lru_cache(maxsize=1)
def _share_user_agent_data() -> None:
    """Parse fake_useragent's browser list once per process, not for every ``BrowserConfig``.

    crawl4ai 0.9 builds a ``ValidUAGenerator`` (a fake_useragent ``UserAgent``) in every ``BrowserConfig``, even
    with a fixed user agent, and each parses a ~14,000-line JSON-lines file: 0.1-0.3 s of CPU, three times on the
    way to the first crawl (compatibility check, crawler, its strategy). ``UserAgent`` only reads the list, so one
    parsed copy serves them all. Only a speed-up: any other fake_useragent layout is left alone."""
    try:
        from fake_useragent import fake
    except ImportError:  # pragma: no cover - crawl4ai without fake_useragent
        return
    load = getattr(fake, "load", None)
    if callable(load) and not hasattr(load, "cache_info"):
        fake.load = functools.lru_cache(maxsize=1)(load)


def check_compatible() -> None:
    """Raise RuntimeError if the crawl4ai internals this adapter relies on are not there."""
    _share_user_agent_data()
    import crawl4ai
    from crawl4ai.browser_manager import BrowserManager

    try:
        version = importlib.metadata.version("crawl4ai")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        version = "?"
    problems = []
    if not str(version).startswith(SUPPORTED):
        problems.append(f"version {version} (supported: {', '.join(SUPPORTED)}x)")
    if "logger" not in inspect.signature(crawl4ai.AsyncWebCrawler.__init__).parameters:
        problems.append("AsyncWebCrawler takes no logger (crawl4ai would write its own unredacted crawler.log)")
    for seam in ("_build_browser_args", "_start_impl", "_compute_browser_endpoint_key"):
        if not callable(getattr(BrowserManager, seam, None)):
            problems.append(f"BrowserManager.{seam} is gone")
    probe = BrowserManager.__new__(BrowserManager)
    try:
        BrowserManager.__init__(probe, crawl4ai.BrowserConfig(verbose=False))
    except Exception as exc:  # pragma: no cover - only on an incompatible upgrade
        problems.append(f"BrowserManager() failed: {exc}")
    else:
        if not isinstance(getattr(probe, "sessions", None), dict):
            problems.append("BrowserManager.sessions is not a dict")
        if not hasattr(probe, "session_ttl"):
            problems.append("BrowserManager.session_ttl is gone")
    if problems:
        from .errors import BrowserUnavailable

        raise BrowserUnavailable(
            "the installed crawl4ai is not compatible with this crawlkeeper (" + "; ".join(problems)
            + "); install a supported version: pip install 'crawl4ai>=0.9.5,<0.10'"
        )


def make_crawler(
    *,
    executable_path: str | None,
    headless: bool,
    args: list[str],
    proxy: dict[str, str] | None,
    after_goto: Any = None,
    before_retrieve_html: Any = None,
    cdp_url: str | None = None,
    connect: Callable[[Any], Awaitable[Any]] | None = None,
    adopt: tuple[Any, Any] | None = None,
) -> AsyncWebCrawler:
    """An ``AsyncWebCrawler`` whose browser is launched from ``executable_path`` with ``args``
    (or, with ``cdp_url``, a running browser it connects to; or, with ``connect``, the browser that
    ``await connect(playwright)`` returns; or, with ``adopt = (playwright, browser)``, a browser already
    launched with :func:`launch_kwargs` of the same arguments, which crawl4ai then owns as if it had launched it:
    its ``close()`` closes the browser and stops that Playwright)."""
    from crawl4ai import AsyncWebCrawler, BrowserConfig

    _share_user_agent_data()
    config = BrowserConfig(headless=headless, verbose=False, extra_args=list(args), browser_type="chromium",
                           cdp_url=cdp_url, cache_cdp_connection=False)
    logger = quiet_logger()
    crawler = AsyncWebCrawler(config=config, logger=logger)
    # The cache database's own logger (crawler_db.log) is a module global; crawls bypass the cache, but nothing
    # of crawl4ai's may write an unredacted file.
    from crawl4ai import async_database

    db = getattr(async_database, "async_db_manager", None)
    if db is not None and hasattr(db, "logger"):
        db.logger = logger
    manager = crawler.crawler_strategy.browser_manager
    original = manager._build_browser_args

    def build_browser_args() -> dict[str, Any]:
        launch = original()
        if executable_path:
            launch["executable_path"] = executable_path
        if proxy:
            launch["proxy"] = dict(proxy)
        launch["handle_sigterm"] = launch["handle_sigint"] = launch["handle_sighup"] = False
        # Playwright turns Chromium's popup blocker off; a page opening popups must stay blocked.
        launch["ignore_default_args"] = [*launch.get("ignore_default_args", []), *IGNORED_DEFAULT_ARGS]
        launch["args"] = merge_feature_switches(list(launch.get("args") or []))  # crawl4ai's own switch too
        return launch

    manager._build_browser_args = build_browser_args
    manager.session_ttl = NEVER
    if connect is not None:
        manager._start_impl = functools.partial(_start_connected, manager, connect)
    elif adopt is not None:
        manager._start_impl = functools.partial(_start_adopted, manager, *adopt)
    if after_goto is not None:
        crawler.crawler_strategy.set_hook("after_goto", after_goto)
    if before_retrieve_html is not None:
        crawler.crawler_strategy.set_hook("before_retrieve_html", before_retrieve_html)
    return crawler


async def _start_connected(manager: Any, connect: Callable[[Any], Awaitable[Any]]) -> None:
    """``BrowserManager._start_impl`` for a remote browser: what the launch branch sets, with a connection
    instead of a launch (crawl4ai's close then disconnects without stopping the remote browser)."""
    from playwright.async_api import async_playwright

    if manager.playwright is not None:
        await manager.close()
    # Held by the manager before connecting: a failed connection's driver is then stopped by crawl4ai's close().
    manager.playwright = await async_playwright().start()
    await _start_adopted(manager, manager.playwright, await connect(manager.playwright))


async def _start_adopted(manager: Any, playwright: Any, browser: Any) -> None:
    """``BrowserManager._start_impl`` for a browser launched before crawl4ai was imported (see
    :mod:`crawlkeeper.early`), and the end of :func:`_start_connected`: the state crawl4ai's launch branch
    leaves, without launching."""
    from crawl4ai.browser_manager import BrowserManager

    manager._using_cached_cdp = False
    manager.playwright = playwright
    manager.browser = browser
    manager.default_context = browser
    manager._browser_endpoint_key = manager._compute_browser_endpoint_key()
    BrowserManager._global_pages_in_use.setdefault(manager._browser_endpoint_key, set())


#: The flags ``BrowserManager._build_browser_args`` of crawl4ai 0.9 passes with crawlkeeper's ``BrowserConfig``
#: (a copy, so a browser can be launched before crawl4ai is imported; ``tests/unit/test_crawl4ai_adapter.py`` holds
#: :func:`launch_kwargs` equal to what crawl4ai builds, so an upgrade that changes them fails there).
CRAWL4AI_ARGS = (
    "--disable-gpu",
    "--disable-gpu-compositing",
    "--disable-software-rasterizer",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-infobars",
    "--window-position=0,0",
    "--disable-blink-features=AutomationControlled",
    "--window-position=400,0",
    "--disable-renderer-backgrounding",
    "--disable-ipc-flooding-protection",
    "--force-color-profile=srgb",
    "--mute-audio",
    "--disable-background-timer-throttling",
    "--disable-features=MediaRouter,DialMediaRouteProvider",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--window-size=1080,600",
)


def launch_kwargs(*, executable_path: str | None, headless: bool, args: list[str],
                  proxy: dict[str, str] | None) -> dict[str, Any]:
    """Playwright ``chromium.launch`` arguments equal to those :func:`make_crawler`'s launch uses, built without
    importing crawl4ai."""
    flags = merge_feature_switches(list(dict.fromkeys([*CRAWL4AI_ARGS, *args])))
    sandbox = os.environ.get("CRAWL4AI_CHROMIUM_SANDBOX", "false").lower() == "true"
    if sandbox:
        flags = [f for f in flags if f != "--no-sandbox"]
    launch: dict[str, Any] = {"headless": headless, "args": flags}
    if sandbox:
        launch["chromium_sandbox"] = True
    if executable_path:
        launch["executable_path"] = executable_path
    if proxy:
        launch["proxy"] = dict(proxy)
    launch["handle_sigterm"] = launch["handle_sigint"] = launch["handle_sighup"] = False
    launch["ignore_default_args"] = list(IGNORED_DEFAULT_ARGS)
    return launch


def browser_of(crawler: AsyncWebCrawler) -> Any:
    """The Playwright ``Browser`` crawl4ai launched."""
    return crawler.crawler_strategy.browser_manager.browser


def attach(crawler: AsyncWebCrawler, key: str, context: Any, page: Any) -> None:
    """Make ``arun(config=CrawlerRunConfig(session_id=key))`` use our ``page`` in our ``context``."""
    crawler.crawler_strategy.browser_manager.sessions[key] = (context, page, time.time())


def detach(crawler: AsyncWebCrawler, key: str) -> None:
    """Forget ``key`` without closing anything (the page and context are ours to close)."""
    crawler.crawler_strategy.browser_manager.sessions.pop(key, None)


@functools.lru_cache(maxsize=1)
def _run_config_class() -> type:
    """``CrawlerRunConfig`` without its per-attribute ``__setattr__``.

    crawl4ai 0.9's ``CrawlerRunConfig.__setattr__`` computes ``inspect.signature(self.__init__)`` for every
    attribute only to refuse deprecated names (``_UNWANTED_PROPS``) set to non-default values, which crawlkeeper
    never passes: ~110 signatures, 50-100 ms of CPU on the event loop for each config built (the largest part of
    a first crawl's own work). ``object.__setattr__`` still runs property setters (``proxy_config``), and the
    subclass passes crawl4ai's ``isinstance`` checks; ``tests/unit/test_crawl4ai_adapter.py`` pins that it
    builds the same attributes as the original."""
    from crawl4ai import CrawlerRunConfig

    class FastRunConfig(CrawlerRunConfig):  # type: ignore[misc]
        __setattr__ = object.__setattr__

    FastRunConfig.__name__ = FastRunConfig.__qualname__ = "CrawlerRunConfig"
    return FastRunConfig


def run_config(options: CrawlOptions, key: str) -> CrawlerRunConfig:
    """The ``CrawlerRunConfig`` for one crawl: always bypassing the cache and never verbose.

    One template per distinct set of options is built (see :func:`_run_config_class`) and shallow-copied.
    """
    config = copy.copy(_template(options.model_dump_json()))
    object.__setattr__(config, "session_id", key)  # plain setattr: the copy is ours alone
    return config


@functools.lru_cache(maxsize=64)
def _template(options_json: str) -> CrawlerRunConfig:
    from crawl4ai import CacheMode

    from .options import CrawlOptions

    options = CrawlOptions.model_validate_json(options_json)
    return _run_config_class()(
        session_id=None,
        cache_mode=CacheMode.BYPASS,
        verbose=False,
        css_selector=options.css_selector,
        wait_for=options.wait_for,
        js_code=options.js_code,
        page_timeout=int(options.timeout_s * 1000),
        wait_until=options.wait_until,
        delay_before_return_html=options.delay_s,
        word_count_threshold=1,
    )


def process_config(options: CrawlOptions, base_url: str) -> CrawlerRunConfig:
    """Config to process HTML we already hold (``raw:`` URL, no browser): same content options."""
    from crawl4ai import CacheMode

    return _run_config_class()(
        cache_mode=CacheMode.BYPASS,
        verbose=False,
        css_selector=options.css_selector,
        base_url=base_url,
        word_count_threshold=1,
    )
