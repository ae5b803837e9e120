"""The background warm-up ([browser] warmup) against the fake browser: when it starts, that a call arriving
meanwhile waits for it instead of starting a second launch, and that the first call uses the page it opened."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from crawlkeeper.app import App
from crawlkeeper.plugins import create_plugin_manager
from crawlkeeper.testing.fake import FakeBrowser

SITE = "https://example.com"


class SlowWarmBrowser(FakeBrowser):
    """A fake browser whose import (warm_up) and launch take time, counting launches and pipeline warm-ups."""

    def __init__(self, import_s: float = 0.2, launch_s: float = 0.2) -> None:
        super().__init__()
        self.import_s, self.launch_s = import_s, launch_s
        self.launches = 0
        self.warmed_pipeline = 0

    async def warm_up(self) -> None:
        await asyncio.sleep(self.import_s)

    async def start(self) -> None:
        if not self.started:
            self.launches += 1
            await asyncio.sleep(self.launch_s)
        await super().start()

    async def warm_pipeline(self, options: Any) -> None:
        self.warmed_pipeline += 1


@pytest.fixture
def browser() -> SlowWarmBrowser:
    fake = SlowWarmBrowser()
    fake.add_page(f"{SITE}/*", "<html><head><title>Home</title></head><body><p>Welcome home.</p></body></html>")
    return fake


def make_app(config: Any, browser: FakeBrowser) -> App:
    from crawlkeeper.testing.pytest_plugin import _fake_resolver

    app = App(config, create_plugin_manager(config.disabled_plugins, environ={}), backend=browser,
              resolver=_fake_resolver)
    app.configure()
    return app


@pytest.mark.anyio
async def test_a_call_during_the_warm_up_waits_for_it_and_uses_the_page_it_opened(
    crawlkeeper_config: Any, browser: SlowWarmBrowser
) -> None:
    app = make_app(crawlkeeper_config, browser)
    await app.startup()  # warmup = "launch" (the default) starts at once here
    try:
        await asyncio.sleep(0.05)  # mid-import: the agent's first call arrives
        result = await app.crawl(f"{SITE}/a")
        assert result["status"] == 200
        assert browser.launches == 1, "the call launched a second browser beside the warm-up"
        assert len(browser.contexts) == 1, "the call opened its own context instead of the warm-up's"
        await app.warmup.task  # type: ignore[misc]
        assert browser.warmed_pipeline == 1
    finally:
        await app.shutdown()


@pytest.mark.anyio
async def test_after_the_warm_up_the_first_call_opens_nothing(
    crawlkeeper_config: Any, browser: SlowWarmBrowser
) -> None:
    app = make_app(crawlkeeper_config, browser)
    await app.startup()
    try:
        await app.warmup.task  # type: ignore[misc]
        assert browser.launches == 1 and len(browser.contexts) == 1
        idle = [s for e in app.pool._pool.values() for s in e.idle]
        assert len(idle) == 1 and idle[0].page is not None, "no pooled page was opened ahead of the first call"
        assert (await app.crawl(f"{SITE}/a"))["status"] == 200
        assert len(browser.contexts) == 1
    finally:
        await app.shutdown()


@pytest.mark.anyio
async def test_stdio_style_startup_defers_the_warm_up_until_the_handshake(
    crawlkeeper_config: Any, browser: SlowWarmBrowser
) -> None:
    from mcp import Client

    from crawlkeeper.server import build_server

    app = make_app(crawlkeeper_config, browser)
    await app.startup(warm_up=False)  # what `crawlkeeper serve` (stdio) does
    try:
        await asyncio.sleep(0.1)
        assert app.warmup.task is None, "the warm-up started before the client's initialize"
        async with Client(build_server(app, owns_app=False)) as client:
            await client.list_tools()
            await asyncio.sleep(0.1)
            assert app.warmup.task is not None, "the warm-up did not start after the handshake"
            warmup = app.warmup.task
            await client.list_tools()
            assert app.warmup.task is warmup  # started once
    finally:
        await app.shutdown()


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["off", "import"])
async def test_warmup_off_and_import_launch_nothing(tmp_path: Any, browser: SlowWarmBrowser, mode: str) -> None:
    from crawlkeeper.config import load_config

    path = tmp_path / "c.toml"
    path.write_text(f'[browser]\nwarmup = "{mode}"\n[plugins]\ndisable = ["statefile"]\n')
    app = make_app(load_config(path), browser)
    await app.startup()
    try:
        if app.warmup.task is not None:
            await app.warmup.task
        assert browser.launches == 0 and browser.contexts == []
        assert (app.warmup.task is None) == (mode == "off")
    finally:
        await app.shutdown()


@pytest.mark.anyio
async def test_shutdown_during_the_warm_up_leaves_nothing_open(
    crawlkeeper_config: Any, browser: SlowWarmBrowser
) -> None:
    app = make_app(crawlkeeper_config, browser)
    await app.startup()
    await asyncio.sleep(0.3)  # mid-launch
    await app.shutdown()
    assert app.warmup.task is not None and app.warmup.task.done()
    assert all(c.closed for c in browser.contexts)


@pytest.mark.anyio
async def test_the_stdio_warm_up_starts_after_tools_list_or_a_grace_after_initialize() -> None:
    from types import SimpleNamespace

    from crawlkeeper.app.warmup import TOOLS_LIST_GRACE_S, after_handshake

    started: list[float] = []
    middleware = after_handshake(lambda: started.append(time.monotonic()))

    async def answer(_ctx: object) -> str:
        return "answer"

    t0 = time.monotonic()
    assert await middleware(SimpleNamespace(method="initialize"), answer) == "answer"
    await asyncio.sleep(0.05)
    assert not started  # the client's tools/list comes first: the warm-up's import would slow its answer
    await middleware(SimpleNamespace(method="tools/list"), answer)
    await asyncio.sleep(0.05)
    assert started and started[0] - t0 < TOOLS_LIST_GRACE_S
    await asyncio.sleep(TOOLS_LIST_GRACE_S)
    assert len(started) == 2  # the grace timer fires too: starting twice is a no-op (WarmUp.start)

    started.clear()  # a client that lists nothing: started after the grace
    await middleware(SimpleNamespace(method="initialize"), answer)
    await asyncio.sleep(TOOLS_LIST_GRACE_S + 0.1)
    assert len(started) == 1
