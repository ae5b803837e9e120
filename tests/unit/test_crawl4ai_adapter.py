"""Pins every crawl4ai internal that ``crawlkeeper/_crawl4ai.py`` (and ``browser.py``'s use of crawl4ai results)
touches, so that upgrading crawl4ai fails here, loudly and by name, instead of leaking cookies between sessions,
writing unredacted log files or losing pages. No browser is started: these are facts about crawl4ai's code.

When one of these fails after an upgrade: read the new crawl4ai code for that seam, adapt ``_crawl4ai.py``, then
update the pin and ``SUPPORTED``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module", autouse=True)
def _crawl4ai_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """crawl4ai writes to its base directory on import: keep it out of ``~``."""
    home = tmp_path_factory.mktemp("crawl4ai-home")
    old = os.environ.get("CRAWL4_AI_BASE_DIRECTORY")
    os.environ.setdefault("CRAWL4_AI_BASE_DIRECTORY", str(home))
    os.environ.setdefault("CRAWL4AI_NO_CLOUD_NOTICE", "1")
    yield home
    if old is None and os.environ.get("CRAWL4_AI_BASE_DIRECTORY") == str(home):
        del os.environ["CRAWL4_AI_BASE_DIRECTORY"]


def params(fn: Any) -> set[str]:
    return set(inspect.signature(fn).parameters)


def test_the_installed_version_is_supported_and_check_compatible_passes() -> None:
    import importlib.metadata

    from crawlkeeper import _crawl4ai

    assert importlib.metadata.version("crawl4ai").startswith(_crawl4ai.SUPPORTED)
    _crawl4ai.check_compatible()


def test_the_logger_seam() -> None:
    """AsyncWebCrawler(logger=...) takes our logger; our logger implements every abstract method of crawl4ai's."""
    from crawl4ai import AsyncWebCrawler
    from crawl4ai.async_logger import AsyncLoggerBase

    from crawlkeeper import _crawl4ai

    assert {"config", "logger"} <= params(AsyncWebCrawler.__init__)
    logger = _crawl4ai.quiet_logger()  # raises TypeError if crawl4ai added an abstract method we lack
    assert isinstance(logger, AsyncLoggerBase)
    for name in getattr(AsyncLoggerBase, "__abstractmethods__", ()):
        assert callable(getattr(logger, name)), name
    logger.url_status("https://x.example/?token=abc", True, 0.1)
    logger.error_status("https://x.example/", "boom")
    logger.info("message {x}", params={"x": 1})


def test_the_cache_database_logger_seam() -> None:
    from crawl4ai import async_database

    db = getattr(async_database, "async_db_manager", None)
    assert db is not None and hasattr(db, "logger"), "crawl4ai's cache database logger moved"


def test_browser_config_takes_what_make_crawler_passes() -> None:
    from crawl4ai import BrowserConfig

    assert {"headless", "verbose", "extra_args", "browser_type", "cdp_url", "cache_cdp_connection"} <= params(
        BrowserConfig.__init__)


@pytest.fixture(scope="module")
def crawler() -> Any:
    from crawlkeeper import _crawl4ai

    return _crawl4ai.make_crawler(executable_path="/opt/chromium/chrome", headless=True, args=["--ck-test"],
                                  proxy={"server": "http://127.0.0.1:1"}, after_goto=_hook,
                                  before_retrieve_html=_hook)


async def _hook(page: Any, **_: Any) -> Any:
    return page


def test_launch_arguments_seam(crawler: Any) -> None:
    """BrowserManager._build_browser_args is per-instance wrappable and its dict reaches Playwright's launch."""
    from crawl4ai.browser_manager import BrowserManager

    manager = crawler.crawler_strategy.browser_manager
    assert isinstance(manager, BrowserManager)
    launch = manager._build_browser_args()
    assert launch["executable_path"] == "/opt/chromium/chrome"
    assert launch["proxy"] == {"server": "http://127.0.0.1:1"}
    assert launch["handle_sigterm"] is launch["handle_sigint"] is launch["handle_sighup"] is False
    assert "--ck-test" in launch["args"] and launch["headless"] is True
    # crawl4ai must still launch with the dict this method returns
    source = inspect.getsource(BrowserManager)
    assert "self._build_browser_args()" in source, "crawl4ai no longer launches through _build_browser_args"


def test_session_seam(crawler: Any) -> None:
    """get_page() reuses (context, page) registered in BrowserManager.sessions under the run's session_id, and
    crawl4ai's own session expiry is out of reach."""
    from crawl4ai.browser_manager import BrowserManager

    from crawlkeeper import _crawl4ai

    manager = crawler.crawler_strategy.browser_manager
    assert manager.session_ttl == _crawl4ai.NEVER
    assert isinstance(manager.sessions, dict)
    source = inspect.getsource(BrowserManager.get_page)
    assert "crawlerRunConfig.session_id in self.sessions" in source, "get_page no longer looks in sessions first"
    assert "_cleanup_expired_sessions" in source and "session_ttl" in inspect.getsource(
        BrowserManager._cleanup_expired_sessions)
    context, page = object(), object()
    _crawl4ai.attach(crawler, "ck-1", context, page)
    stored = manager.sessions["ck-1"]
    assert stored[0] is context and stored[1] is page and isinstance(stored[2], float)
    _crawl4ai.detach(crawler, "ck-1")
    assert "ck-1" not in manager.sessions
    _crawl4ai.detach(crawler, "ck-1")  # forgetting twice is harmless
    assert hasattr(manager, "browser"), "browser_of() reads BrowserManager.browser"
    assert _crawl4ai.browser_of(crawler) is None  # not started


def test_hooks_seam(crawler: Any) -> None:
    hooks = crawler.crawler_strategy.hooks
    assert hooks["after_goto"] is _hook
    assert hooks["before_retrieve_html"] is _hook


def test_run_config_seam() -> None:
    from crawl4ai import CacheMode, CrawlerRunConfig

    from crawlkeeper import _crawl4ai
    from crawlkeeper.options import CrawlOptions

    options = CrawlOptions(css_selector="main", wait_for="css:#x", js_code="1", timeout_s=7, delay_s=0.5)
    config = _crawl4ai.run_config(options, "ck-a")
    assert isinstance(config, CrawlerRunConfig)
    assert (config.session_id, config.cache_mode, config.verbose) == ("ck-a", CacheMode.BYPASS, False)
    assert (config.css_selector, config.page_timeout, config.delay_before_return_html) == ("main", 7000, 0.5)
    assert config.wait_until == options.wait_until and config.word_count_threshold == 1
    other = _crawl4ai.run_config(options, "ck-b")
    assert other.session_id == "ck-b" and config.session_id == "ck-a"  # copies of one template, independent
    processed = _crawl4ai.process_config(options, "https://x.example/")
    assert processed.base_url == "https://x.example/" and processed.cache_mode == CacheMode.BYPASS


def test_the_crawl_result_fields_browser_py_reads() -> None:
    from crawl4ai import AsyncWebCrawler
    from crawl4ai.models import CrawlResult

    fields = set(CrawlResult.model_fields)
    for name in ("status_code", "html", "success", "error_message", "redirected_url", "metadata", "links",
                 "cleaned_html"):
        assert name in fields, name
    assert hasattr(CrawlResult, "markdown"), "CrawlResult.markdown (raw_markdown) is gone"
    assert {"url", "config"} <= params(AsyncWebCrawler.arun)


def test_run_configs_skip_crawl4ais_slow_setattr_and_build_the_same_attributes() -> None:
    import time

    from crawl4ai import CacheMode, CrawlerRunConfig

    from crawlkeeper import _crawl4ai

    fast_class = _crawl4ai._run_config_class()
    assert issubclass(fast_class, CrawlerRunConfig) and fast_class.__name__ == "CrawlerRunConfig"
    # What it skips only refuses deprecated names, which crawlkeeper never sets.
    assert hasattr(CrawlerRunConfig, "_UNWANTED_PROPS")
    kwargs: dict[str, Any] = dict(cache_mode=CacheMode.BYPASS, verbose=False, css_selector="main", wait_for=None,
                                  js_code=None, page_timeout=7000, wait_until="load", word_count_threshold=1,
                                  proxy_config="http://u:p@127.0.0.1:9")
    started = time.perf_counter()
    original = CrawlerRunConfig(**kwargs)
    slow_s = time.perf_counter() - started
    started = time.perf_counter()
    fast = fast_class(**kwargs)
    fast_s = time.perf_counter() - started
    assert set(vars(fast)) == set(vars(original))
    for name, value in vars(original).items():
        if type(value).__repr__ is object.__repr__:  # strategy objects: compare their type, not their address
            assert type(vars(fast)[name]) is type(value), name
        else:
            assert repr(vars(fast)[name]) == repr(value), name
    assert fast.proxy_config is not None and fast.proxy_config.server == original.proxy_config.server  # setter ran
    assert fast_s < slow_s, (fast_s, slow_s)


@pytest.mark.parametrize("sandbox", ["false", "true"])
def test_the_early_launch_passes_exactly_what_crawl4ai_would_launch_with(
    sandbox: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A browser launched before crawl4ai is imported (crawlkeeper/early.py) must be the browser crawl4ai would
    have launched: same flags, binary, proxy, signal handling and removed default flags."""
    from crawlkeeper import _crawl4ai

    monkeypatch.setenv("CRAWL4AI_CHROMIUM_SANDBOX", sandbox)
    proxy = {"server": "http://127.0.0.1:9", "username": "u", "password": "p"}
    for args, proxy_ in ((["--disable-gpu", "--lang=de", "--no-sandbox"], proxy), ([], None)):
        crawler = _crawl4ai.make_crawler(executable_path="/usr/bin/true", headless=True, args=list(args),
                                         proxy=proxy_)
        built = crawler.crawler_strategy.browser_manager._build_browser_args()
        ours = _crawl4ai.launch_kwargs(executable_path="/usr/bin/true", headless=True, args=list(args),
                                       proxy=proxy_)
        assert {k: (dict(v) if k == "proxy" else v) for k, v in built.items()} == ours


def test_user_agent_data_is_parsed_once_not_per_browser_config() -> None:
    """fake_useragent parses its ~14,000-line list in every crawl4ai BrowserConfig (three on the way to the first
    crawl); the adapter makes that once per process. Pinned: a fake_useragent upgrade that renames ``load``
    would silently bring the cost back."""
    from fake_useragent import fake

    from crawlkeeper import _crawl4ai

    _crawl4ai.make_crawler(executable_path=None, headless=True, args=[], proxy=None)
    _crawl4ai.make_crawler(executable_path=None, headless=True, args=[], proxy=None)
    assert hasattr(fake.load, "cache_info"), "fake_useragent.fake.load is gone: see _share_user_agent_data"
    assert fake.load.cache_info().misses == 1
