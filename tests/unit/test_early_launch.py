"""The browser launched at process start (crawlkeeper/early.py) and taken over by crawl4ai, with a fake Playwright:
one launch even when the first call arrives mid-launch, a failed launch falls back to the usual one and reports
nothing itself, and a shutdown during the launch leaves no browser or driver behind."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from crawlkeeper import _crawl4ai
from crawlkeeper.browser import ChromiumBackend
from crawlkeeper.early import EarlyLaunch


class FakeBrowser:
    def __init__(self) -> None:
        self.closed = False
        self.handlers: dict[str, Any] = {}

    def is_connected(self) -> bool:
        return not self.closed

    def on(self, event: str, handler: Any) -> None:
        self.handlers[event] = handler

    async def close(self) -> None:
        self.closed = True


class FakePlaywright:
    """What ``async_playwright().start()`` returns: ``chromium.launch`` takes ``launch_s`` (or fails)."""

    def __init__(self, launch_s: float = 0.1, error: Exception | None = None) -> None:
        self.launch_s, self.error = launch_s, error
        self.launches: list[dict[str, Any]] = []
        self.browsers: list[FakeBrowser] = []
        self.stopped = False
        self.chromium = self

    async def launch(self, **kwargs: Any) -> FakeBrowser:
        self.launches.append(kwargs)
        await asyncio.sleep(self.launch_s)
        if self.error is not None:
            raise self.error
        self.browsers.append(FakeBrowser())
        return self.browsers[-1]

    async def stop(self) -> None:
        self.stopped = True
        for browser in self.browsers:
            browser.closed = True  # the driver ends its browsers with it


@pytest.fixture(autouse=True)
def _no_cleanup(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real backend kills orphaned browsers of killed runs; not from unit tests."""
    import crawlkeeper.browser

    monkeypatch.setattr(crawlkeeper.browser, "cleanup_stale", lambda tmp_dir=None: (0, 0))


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def early_with(playwright: FakePlaywright) -> EarlyLaunch:
    early = EarlyLaunch()

    async def start() -> FakePlaywright:
        return playwright

    early.start_playwright = start  # type: ignore[assignment]
    return early


class FakeCrawler:
    def __init__(self, adopt: tuple[Any, Any] | None) -> None:
        self.adopt = adopt
        self.browser = adopt[1] if adopt else FakeBrowser()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        if self.adopt:
            await self.adopt[0].stop()
        self.browser.closed = True


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> tuple[ChromiumBackend, FakePlaywright, list[FakeCrawler]]:
    """A local backend whose crawl4ai is faked: ``make_crawler`` records whether it adopted the early browser."""
    made: list[FakeCrawler] = []

    def make_crawler(**kwargs: Any) -> FakeCrawler:
        made.append(FakeCrawler(kwargs.get("adopt")))
        return made[-1]

    async def no_import() -> None:
        pass

    monkeypatch.setattr(_crawl4ai, "make_crawler", make_crawler)
    monkeypatch.setattr(_crawl4ai, "browser_of", lambda crawler: crawler.browser)
    monkeypatch.setattr(_crawl4ai, "check_compatible", lambda: None)
    backend = ChromiumBackend(executable_path="/bin/sh", spare_context=False)
    monkeypatch.setattr(backend, "warm_up", no_import)
    playwright = FakePlaywright()
    backend.early = early_with(playwright)
    return backend, playwright, made


@pytest.mark.anyio
async def test_the_first_start_mid_launch_takes_the_early_browser_over_without_a_second_launch(
    backend: tuple[ChromiumBackend, FakePlaywright, list[FakeCrawler]],
) -> None:
    chromium, playwright, made = backend
    assert chromium.launch_early() is True
    assert chromium.launch_early() is False, "a second early launch was started"
    await asyncio.sleep(0.02)  # mid-launch: the first call arrives
    await asyncio.gather(chromium.start(), chromium.start())
    assert len(playwright.launches) == 1
    assert len(made) == 1 and made[0].adopt == (playwright, playwright.browsers[0])
    assert chromium.alive and chromium.generation == 1
    launch = playwright.launches[0]
    assert launch["executable_path"] == "/bin/sh" and launch["handle_sigterm"] is False
    assert "proxy" not in launch  # no egress proxy was given to this backend
    await chromium.close()
    assert playwright.stopped and playwright.browsers[0].closed


@pytest.mark.anyio
async def test_the_early_browser_serves_contexts_before_crawl4ai_takes_it_over(
    backend: tuple[ChromiumBackend, FakePlaywright, list[FakeCrawler]],
) -> None:
    """The warm-up opens the first call's page while crawl4ai still imports: ``start_browser`` is the browser
    alone; the first crawl (``start``) then hands that same browser to crawl4ai."""
    chromium, playwright, made = backend
    chromium.launch_early()
    await chromium.start_browser()
    assert chromium.alive and not made, "crawl4ai was needed to get the browser up"
    await chromium.start_browser()
    await chromium._crawler_ready()  # what crawl() and load() do first
    assert len(made) == 1 and made[0].adopt == (playwright, playwright.browsers[0])
    assert len(playwright.launches) == 1 and chromium.generation == 1
    await chromium.close()
    assert playwright.stopped


@pytest.mark.anyio
async def test_a_failed_early_launch_is_logged_and_the_first_start_launches_as_usual(
    backend: tuple[ChromiumBackend, FakePlaywright, list[FakeCrawler]], caplog: pytest.LogCaptureFixture,
) -> None:
    chromium, _, made = backend
    failing = FakePlaywright(error=RuntimeError("Executable doesn't exist at /bin/sh\nmore"))
    chromium.early = early_with(failing)
    with caplog.at_level(logging.WARNING, logger="crawlkeeper.browser"):
        assert chromium.launch_early()
        await chromium.start()
    assert failing.stopped, "the failed launch left its driver running"
    assert len(made) == 1 and made[0].adopt is None, "the first start did not launch a browser of its own"
    assert chromium.alive
    assert "launching the browser early failed (Executable doesn't exist at /bin/sh)" in caplog.text
    await chromium.close()


@pytest.mark.anyio
async def test_shutdown_during_the_early_launch_leaves_no_browser_or_driver(
    backend: tuple[ChromiumBackend, FakePlaywright, list[FakeCrawler]],
) -> None:
    chromium, playwright, made = backend
    playwright.launch_s = 0.5
    chromium.launch_early()
    await until(lambda: playwright.launches)
    await chromium.close()
    assert playwright.stopped, "the driver outlived a shutdown during the launch"
    assert not made and not chromium.alive
    # Launched but never taken: closed at shutdown too.
    other = FakePlaywright(launch_s=0)
    chromium.early = early_with(other)
    chromium.launch_early()
    await until(lambda: other.browsers)
    assert other.browsers and not other.browsers[0].closed
    await chromium.close()
    assert other.browsers[0].closed and other.stopped


@pytest.mark.anyio
async def test_no_early_launch_for_a_remote_browser_or_a_missing_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    remote = ChromiumBackend(cdp_url="http://127.0.0.1:9222", spare_context=False)
    missing = ChromiumBackend(executable_path="/nonexistent/chromium", spare_context=False)
    for chromium in (remote, missing):
        chromium.early = early_with(FakePlaywright())
        assert chromium.launch_early() is False
        assert not chromium.early.pending


@pytest.mark.anyio
async def test_the_app_launches_early_only_with_warmup_launch(crawlkeeper_config: Any) -> None:
    """``App.launch_early`` (what the warm-up calls first, and the stdio server before importing the MCP SDK with
    warmup = early) starts the launch behind the egress proxy with launch or early, and nothing with import or
    off."""
    from crawlkeeper.app import App
    from crawlkeeper.plugins import create_plugin_manager

    for mode, expected in (("launch", 1), ("early", 1), ("import", 0), ("off", 0)):
        crawlkeeper_config.settings.browser.warmup = mode
        chromium = ChromiumBackend(executable_path="/bin/sh", spare_context=False)
        playwright = FakePlaywright(launch_s=0)
        chromium.early = early_with(playwright)
        app = App(crawlkeeper_config, create_plugin_manager([], environ={}), backend=chromium)
        app.configure()
        await app.launch_early()
        if expected:
            await until(lambda: playwright.browsers)  # noqa: B023 - awaited within this iteration
        assert len(playwright.launches) == expected, mode
        if expected:
            proxy = playwright.launches[0]["proxy"]
            assert proxy["server"].startswith("http://127.0.0.1:"), "the early browser is not behind the egress proxy"
        await app.shutdown()
        assert all(b.closed for b in playwright.browsers)
