"""Waiting for a crawl slot is not crawling: time spent queued behind ``[limits] max_concurrent_crawls`` never
counts against a call's ``timeout_s``, and only a full queue answers "busy, retry" (issue 16: under load,
clients must see their calls queue, not time out)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from crawlkeeper.errors import CrawlkeeperError

SITE = "https://example.com"
WORK_S = 0.1  # what one crawl takes in the browser
TIMEOUT_S = 0.2  # each call's own budget (the 2 s grace after it is patched out here)
CALLS = 6  # one at a time: the last call waits about 5 x 0.1 = 0.5 s for its slot, more than its 0.2 s


@pytest.fixture
def crawlkeeper_config_toml() -> str:
    return f"[limits]\nmax_concurrent_crawls = 1\nmax_queued_calls = {CALLS}\n"


@pytest.fixture
def slow_browser(crawlkeeper_browser: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr("crawlkeeper.app.page_limits._TIMEOUT_GRACE_S", 0.0)  # the deadline is timeout_s
    crawlkeeper_browser.add_page(f"{SITE}/*", "<html><head><title>t</title></head><body><p>page</p></body></html>")
    crawl = crawlkeeper_browser.crawl
    running: list[int] = [0, 0]  # now, most at once

    async def slow_crawl(page: Any, url: str, options: Any) -> Any:
        running[0] += 1
        running[1] = max(running)
        try:
            await asyncio.sleep(float(url.rsplit("s=", 1)[1]) if "s=" in url else WORK_S)
            return await crawl(page, url, options)
        finally:
            running[0] -= 1

    monkeypatch.setattr(crawlkeeper_browser, "crawl", slow_crawl)
    crawlkeeper_browser.running = running
    return crawlkeeper_browser


@pytest.mark.anyio
async def test_queue_time_does_not_count_against_timeout_s(crawlkeeper_app: Any, slow_browser: Any) -> None:
    started = time.monotonic()
    results = await asyncio.gather(*(crawlkeeper_app.crawl(f"{SITE}/p{i}", timeout_s=TIMEOUT_S)
                                     for i in range(CALLS)), return_exceptions=True)
    elapsed = time.monotonic() - started
    assert slow_browser.running[1] == 1  # they really queued, one at a time
    assert elapsed >= (CALLS - 1) * WORK_S > TIMEOUT_S  # the last one waited longer than its deadline
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, failed
    assert all(r["status"] == 200 for r in results)  # type: ignore[index]


@pytest.mark.anyio
async def test_queue_time_in_sessions_does_not_count_either(crawlkeeper_app: Any, slow_browser: Any) -> None:
    ids = [(await crawlkeeper_app.create_session())["session_id"] for _ in range(CALLS)]
    results = await asyncio.gather(*(crawlkeeper_app.crawl(f"{SITE}/p", session_id=sid, timeout_s=TIMEOUT_S)
                                     for sid in ids), return_exceptions=True)
    assert slow_browser.running[1] == 1
    failed = [r for r in results if isinstance(r, BaseException)]
    assert not failed, failed


@pytest.mark.anyio
async def test_the_crawl_itself_still_times_out(crawlkeeper_app: Any, slow_browser: Any) -> None:
    started = time.monotonic()
    with pytest.raises(CrawlkeeperError, match=r"timed out after 0.2 s"):
        await crawlkeeper_app.crawl(f"{SITE}/hang?s=5", timeout_s=TIMEOUT_S)
    assert time.monotonic() - started < 10  # 0.2 s, plus a loaded machine


@pytest.mark.anyio
async def test_past_the_queue_limit_callers_are_told_to_retry(crawlkeeper_app: Any, slow_browser: Any) -> None:
    # one running + CALLS queued fill everything; the next calls are refused at once with "busy ... retry"
    calls = [asyncio.ensure_future(crawlkeeper_app.crawl(f"{SITE}/q{i}", timeout_s=TIMEOUT_S))
             for i in range(CALLS + 3)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 2, results
    assert all("busy" in str(r) and "retry" in str(r) for r in refused), refused
    assert sum(1 for r in results if isinstance(r, dict) and r["status"] == 200) == CALLS + 1
