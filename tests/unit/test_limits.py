"""Limits against the fake browser and real processes: stateless session-less crawls, [limits]
max_browser_mb, the memory watchdog's choice of victim, the decoded-size meter's arithmetic."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import psutil
import pytest

from crawlkeeper import guard
from crawlkeeper.config import Settings
from crawlkeeper.errors import ConfigError

SITE = "https://example.com"
PAGE = "<html><head><title>Home</title></head><body><p>Welcome home.</p></body></html>"


@pytest.fixture
def site(crawlkeeper_browser: Any) -> Any:
    crawlkeeper_browser.add_page(f"{SITE}/set", PAGE, set_cookies={"tracker": "t-123"})
    crawlkeeper_browser.add_page(f"{SITE}/need", PAGE, requires_cookie="tracker")
    crawlkeeper_browser.add_page(f"{SITE}/*", PAGE)
    return crawlkeeper_browser


@pytest.mark.anyio
async def test_session_less_crawls_start_with_an_empty_cookie_jar(crawlkeeper_app: Any, site: Any) -> None:
    assert (await crawlkeeper_app.crawl(f"{SITE}/set"))["status"] == 200
    # The next session-less call reuses the warm context, wiped: the tracker cookie is gone.
    assert (await crawlkeeper_app.crawl(f"{SITE}/need"))["status"] == 401
    assert len(site.contexts) == 1


@pytest.mark.anyio
async def test_concurrent_session_less_crawls_never_share_a_context(crawlkeeper_app: Any, site: Any) -> None:
    await asyncio.gather(*(crawlkeeper_app.crawl(f"{SITE}/p{i}") for i in range(4)))
    used = {cid for cid, url in site.navigations if "/p" in url}
    assert len(used) == 4, site.navigations


def test_max_browser_mb_default_and_validation() -> None:
    assert Settings().limits.max_browser_mb == 2048
    with pytest.raises(Exception, match="max_browser_mb"):
        Settings(limits={"max_browser_mb": 10})


def test_bad_max_browser_mb_names_file_and_key(tmp_path: Any) -> None:
    from crawlkeeper.config import load_config

    path = tmp_path / "c.toml"
    path.write_text("[limits]\nmax_browser_mb = 5\n")
    with pytest.raises(ConfigError, match=r"c\.toml.*\[limits\] max_browser_mb"):
        load_config(path)


def test_memory_flags_respect_the_operators_js_flags() -> None:
    assert guard.memory_args(2048, []) == ["--js-flags=--max-old-space-size=512"]
    assert guard.memory_args(2048, ["--js-flags=--jitless"]) == []
    assert guard.js_heap_mb(256) == 128 and guard.js_heap_mb(100_000) == 2048


_TREE = """
import subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c", code, flag]) for code, flag in (
    ("import sys, time; b = b'1' * (120 * 1048576); time.sleep(60)", "--type=renderer"),
    ("import sys, time; b = b'1' * (20 * 1048576); time.sleep(60)", "--type=renderer"),
    ("import sys, time; b = b'1' * (200 * 1048576); time.sleep(60)", "--type=gpu-process"),
)]
print(" ".join(str(k.pid) for k in kids), flush=True)
time.sleep(60)
"""


def test_watchdog_kills_only_the_largest_renderer() -> None:
    root = subprocess.Popen([sys.executable, "-c", _TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert root.stdout is not None
        big, small, gpu = (int(p) for p in root.stdout.readline().split())
        deadline = time.monotonic() + 20
        while any(psutil.Process(pid).memory_info().rss < mb * 1_048_576 for pid, mb in ((big, 110), (gpu, 190))):
            assert time.monotonic() < deadline, "the children did not allocate their memory"
            time.sleep(0.05)
        watchdog = guard.MemoryWatchdog(root.pid, max_mb=300)
        assert watchdog.check() == big
        assert _dies(big)
        assert psutil.pid_exists(small) and psutil.pid_exists(gpu) and root.poll() is None
        assert watchdog.killed_recently()
        assert guard.MemoryWatchdog(root.pid, max_mb=100_000).check() is None  # under the cap: nothing
    finally:
        for proc in psutil.Process(root.pid).children(recursive=True):
            proc.kill()
        root.kill()
        root.wait()


def _dies(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


class _FakeCdp:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.sent.append(method)
        return {}


class _FakePage:
    url = "https://example.com/"


@pytest.mark.anyio
async def test_meter_trips_per_response_and_in_total() -> None:
    meter = guard.PageMeter(_FakePage(), _FakeCdp())
    meter.arm(1_048_576)
    meter._on_response({"requestId": "doc", "type": "Document", "response": {"url": "https://example.com/"}})
    meter._on_data({"requestId": "doc", "dataLength": 1_000_000})
    assert not meter.tripped.is_set()
    meter._on_data({"requestId": "doc", "dataLength": 100_000})
    assert meter.tripped.is_set() and "its HTML passed 1.0 MB" in (meter.problem or "")
    meter.arm(1_048_576)  # a new call starts from zero
    assert not meter.tripped.is_set()
    for i in range(3):
        meter._on_response({"requestId": f"r{i}", "type": "Fetch", "response": {"url": f"https://example.com/{i}?t=s"}})
        meter._on_data({"requestId": f"r{i}", "dataLength": 900_000})
    assert "in all" in (meter.problem or "") and "2 x max_page_mb" in (meter.problem or "")
    meter.arm(1_048_576)
    meter._on_response({"requestId": "v", "type": "Media", "response": {"url": "https://example.com/v.mp4"}})
    meter._on_data({"requestId": "v", "dataLength": 50_000_000})
    assert not meter.tripped.is_set()  # media streams through bounded buffers
    meter.exceeded_upstream("https://example.com/v.mp4", 50_000_000)  # the proxy's cut of it: not counted either
    assert not meter.tripped.is_set()
    meter._on_response({"requestId": "x", "type": "XHR", "response": {"url": "https://example.com/x?token=s3cr3t"}})
    meter._on_data({"requestId": "x", "dataLength": 2_000_000})
    assert "xhr response" in (meter.problem or "") and "s3cr3t" not in (meter.problem or "")
    assert meter.origins == {"https://example.com"}
    await asyncio.sleep(0)


@pytest.mark.anyio
async def test_a_cut_in_the_egress_proxy_fails_the_crawls_of_that_context_only() -> None:
    class Context:
        def on(self, *_: Any) -> None:
            pass

    ours, other = Context(), Context()
    tag = guard.new_tag()
    watched = guard.watch_context(ours, tag)
    guard.watch_context(other, guard.new_tag())
    page, stray = _FakePage(), _FakePage()
    watched.ours.add(page)
    meter = guard._METERS[page] = guard.PageMeter(page, _FakeCdp())
    assert guard.body_limit(tag) is watched and guard.body_limit("unknown") is None
    assert watched.max_bytes == 0  # between calls nothing is metered: the proxy pipes as before
    meter.arm(20 * 1_048_576)
    assert watched.max_bytes == 20 * 1_048_576
    guard._METERS[stray] = guard.PageMeter(stray, _FakeCdp())  # not ours: a popup the guard closes
    # The proxy cuts before the browser saw the response: the request is what the meter knows.
    meter._on_request({"requestId": "doc", "type": "Document", "request": {"url": "http://a.test/p"}})
    watched.exceeded("http://a.test/p", 21 * 1_048_576)
    above = "once decompressed, above max_page_mb = 20"
    assert meter.tripped.is_set() and meter.problem == f"its HTML passed 21.0 MB {above}"
    meter.arm(20 * 1_048_576)
    watched.exceeded("http://b.test/frame?token=s3cr3t", 21 * 1_048_576)  # a cross-site frame's: unknown here
    assert meter.problem == f"a response it loaded (http://b.test/frame) passed 21.0 MB {above}"
    await asyncio.sleep(0)


@pytest.mark.anyio
async def test_a_meter_that_cannot_attach_says_why_even_when_the_error_has_no_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Context:
        async def new_cdp_session(self, page: Any) -> Any:
            raise asyncio.TimeoutError()  # what a loaded browser gives: str() is ""

    class Page:
        context = Context()

    assert await guard.meter_page(Page()) is None
    assert "TimeoutError" in caplog.text, caplog.text


@pytest.mark.anyio
async def test_crawl_many_keeps_as_many_idle_contexts_as_ran_in_parallel_then_shrinks(
    crawlkeeper_app: Any, site: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crawlkeeper.app import pool

    monkeypatch.setattr(pool, "_IDLE_SHRINK_S", 0.3)
    urls = [f"{SITE}/p{i}" for i in range(24)]

    async def round_of_crawls() -> None:
        results = await crawlkeeper_app.crawl_many(urls, concurrency=8)
        assert all(r.get("status") == 200 for r in results), results
        for _ in range(50):  # contexts are wiped after their call answered
            if not any(e.wiping for e in crawlkeeper_app.pool._pool.values()):
                break
            await asyncio.sleep(0.01)

    await round_of_crawls()
    created = len(site.contexts)
    assert created <= 9, f"{created} contexts for 24 pages at concurrency 8"
    idle = [len(e.idle) for e in crawlkeeper_app.pool._pool.values()]
    assert sum(idle) >= 6, f"only {idle} idle contexts kept after 8 crawls at once"
    await round_of_crawls()
    assert len(site.contexts) == created, "the second round created contexts instead of reusing the idle ones"
    await asyncio.sleep(0.6)
    assert [len(e.idle) for e in crawlkeeper_app.pool._pool.values()] == [2], "the burst's contexts were kept"
    assert sum(1 for c in site.contexts if not c.closed) == 2
