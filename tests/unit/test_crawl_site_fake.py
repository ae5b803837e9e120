"""crawl_site against the fake browser: BFS order, limits, scope, robots rules, progress, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from support import error_text

from crawlkeeper import robots, site_crawl
from crawlkeeper.robots import RobotsFile, rules_from
from crawlkeeper.site_crawl import normalize

SITE = "https://example.com"


def tree_page(i: int) -> str:
    links = "".join(f'<a href="/p/{j}">p{j}</a>' for j in (2 * i + 1, 2 * i + 2))
    return (f'<html><head><title>P{i}</title></head><body><p>Page {i}</p>{links}<a href="/p/{i}#top">me</a>'
            f'<a href="https://example.com:443/p/{i}">again</a><a href="/private/x">private</a><a href="https://other.org/">out</a>'
            '<a href="mailto:x@example.com">mail</a></body></html>')


@pytest.fixture
def site(crawlkeeper_browser: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for i in range(200):
        crawlkeeper_browser.add_page(f"{SITE}/p/{i}", tree_page(i))
    crawlkeeper_browser.add_page(f"{SITE}/private/x", "<html><title>Private</title></html>")
    crawlkeeper_browser.robots = RobotsFile(200, b"User-agent: *\nDisallow: /private/\n")
    fetched: list[str] = []

    def fetcher(_proxy: Any, *a: Any, **k: Any) -> Any:
        async def fetch(url: str) -> RobotsFile:
            fetched.append(url)
            return crawlkeeper_browser.robots

        return fetch

    monkeypatch.setattr(site_crawl, "proxied_fetcher", fetcher)
    crawlkeeper_browser.robots_fetched = fetched
    return crawlkeeper_browser


def test_normalize() -> None:
    assert normalize("HTTP://Example.COM:80/a?b=1#frag") == "http://example.com/a?b=1"
    assert normalize("https://example.com") == "https://example.com/"
    assert normalize("https://example.com:8443/x") == "https://example.com:8443/x"
    assert normalize("mailto:a@b.c") is None and normalize("javascript:void(0)") is None


@pytest.mark.parametrize(("status", "body", "allowed"), [
    (200, b"User-agent: *\nDisallow: /private/\n", {"/a": True, "/private/x": False}),
    (200, b"User-agent: crawlkeeper\nDisallow: /\nUser-agent: *\nAllow: /\n", {"/a": False}),
    (404, b"", {"/a": True, "/private/x": True}),  # RFC 9309: unavailable -> allow all
    (503, b"", {"/a": False}),  # RFC 9309: unreachable -> disallow all
    (None, b"", {"/a": False}),  # network failure / too slow -> unreachable
    (407, b"", {"/a": False}),  # the egress proxy refused the fetch: the site's file was never seen
])
def test_robots_rules_follow_rfc_9309(status: int | None, body: bytes, allowed: dict[str, bool]) -> None:
    rules = rules_from(RobotsFile(status, body))
    for path, expected in allowed.items():
        assert rules.allowed(f"{SITE}{path}") is expected, path


def test_crawl_delay_is_read_and_bounded() -> None:
    assert rules_from(RobotsFile(200, b"User-agent: *\nCrawl-delay: 2\n")).crawl_delay() == 2
    assert rules_from(RobotsFile(200, b"User-agent: *\nCrawl-delay: 86400\n")).crawl_delay() == 60


@pytest.mark.anyio
async def test_breadth_first_with_limits_scope_robots_and_progress(
    crawlkeeper_client: Callable[..., Any], site: Any
) -> None:
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async with crawlkeeper_client() as client:
        result = await client.call_tool("crawl_site", {"url": f"{SITE}/p/0", "max_pages": 10, "max_depth": 5,
                                                       "output": "text"}, progress_callback=on_progress)
    assert not result.is_error, error_text(result)
    data = result.structured_content
    pages = data["pages"]
    assert [p["url"] for p in pages] == [f"{SITE}/p/{i}" for i in range(10)]  # breadth-first, in order
    assert [p["depth"] for p in pages] == [0, 1, 1, 2, 2, 2, 2, 3, 3, 3]
    assert pages[0]["title"] == "P0" and "Page 0" in pages[0]["content"]
    skipped = data["skipped"]
    assert skipped["robots"] == 1  # /private/x, once, although every page links to it
    assert skipped["scope"] == 1  # other.org
    assert skipped["duplicate"] >= 1  # the :443 spellings
    assert skipped["limit"] > 0 and skipped["refused"] == 0
    assert site.robots_fetched == [f"{SITE}/robots.txt"]  # once per host
    assert progress == sorted(progress) and progress[-1] == 10
    assert f"{SITE}/private/x" not in site.visited()


@pytest.mark.anyio
async def test_max_depth_and_the_config_bound(
    crawlkeeper_client: Callable[..., Any], site: Any, crawlkeeper_app: Any
) -> None:
    async with crawlkeeper_client() as client:
        shallow = await client.call_tool("crawl_site", {"url": f"{SITE}/p/0", "max_depth": 1, "max_pages": 100})
        crawlkeeper_app.config.raw.setdefault("crawl", {})["max_site_pages"] = 4
        bounded = await client.call_tool("crawl_site", {"url": f"{SITE}/p/0", "max_depth": 9, "max_pages": 100})
    assert [p["depth"] for p in shallow.structured_content["pages"]] == [0, 1, 1]
    assert len(bounded.structured_content["pages"]) == 4


@pytest.mark.anyio
async def test_robots_unreachable_disallows_the_host_and_respect_robots_false_ignores_it(
    crawlkeeper_client: Callable[..., Any], site: Any, crawlkeeper_app: Any
) -> None:
    site.robots = RobotsFile(500)
    async with crawlkeeper_client() as client:
        refused = await client.call_tool("crawl_site", {"url": f"{SITE}/p/0"})
        crawlkeeper_app.config.raw.setdefault("crawl", {})["respect_robots"] = False
        ignored = await client.call_tool("crawl_site", {"url": f"{SITE}/p/0", "max_pages": 3})
    assert refused.structured_content["pages"] == []
    assert refused.structured_content["skipped"]["robots"] == 1
    assert len(ignored.structured_content["pages"]) == 3


@pytest.mark.anyio
async def test_one_bad_page_never_fails_the_crawl(crawlkeeper_client: Callable[..., Any], site: Any) -> None:
    site.add_page(f"{SITE}/p/2", '<html><title>P2</title><a href="/p/5">x</a><a href="/refuse">r</a></html>')
    site.add_page(f"{SITE}/refuse", "<html></html>", redirect="https://elsewhere.org/")
    async with crawlkeeper_client() as client:
        result = await client.call_tool("crawl_site", {"url": f"{SITE}/p/0", "max_pages": 8, "max_depth": 3})
    data = result.structured_content
    assert not result.is_error
    assert data["skipped"]["scope"] >= 2  # other.org and the redirect out of scope
    assert f"{SITE}/refuse" not in [p["url"] for p in data["pages"]]


@pytest.mark.anyio
async def test_a_refused_start_is_an_error(crawlkeeper_client: Callable[..., Any], site: Any) -> None:
    async with crawlkeeper_client() as client:
        result = await client.call_tool("crawl_site", {"url": "http://169.254.169.254/"})
    assert "refused" in error_text(result)


@pytest.mark.anyio
async def test_cancellation_stops_the_crawl_within_a_second(crawlkeeper_app: Any, site: Any) -> None:
    original = crawlkeeper_app.backend.crawl

    async def slow(page: Any, url: str, options: Any) -> Any:
        await asyncio.sleep(0.2)
        return await original(page, url, options)

    crawlkeeper_app.backend.crawl = slow
    task = asyncio.ensure_future(site_crawl.crawl_site(crawlkeeper_app, f"{SITE}/p/0", max_pages=200, max_depth=9))
    await asyncio.sleep(0.7)
    task.cancel()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert loop.time() - started < 1.0
    visits = len(site.navigations)
    await asyncio.sleep(0.5)
    assert len(site.navigations) == visits, "pages were still loaded after the cancellation"
    assert robots.USER_AGENT == "crawlkeeper"


@pytest.mark.anyio
async def test_a_sessionless_crawl_is_one_visitor_in_one_context(
    crawlkeeper_client: Callable[..., Any], site: Any
) -> None:
    async with crawlkeeper_client() as client:
        before = len(site.contexts)
        result = await client.call_tool("crawl_site", {"url": f"{SITE}/p/0", "max_pages": 20, "max_depth": 9,
                                                       "concurrency": 4})
    assert len(result.structured_content["pages"]) == 20
    used = site.contexts[before:]
    # Not a pooled context (created, wiped and parked) per page: one context, its pages reused, closed at the end.
    assert len(used) == 1 and used[0].closed
    assert len(site.visited(used[0])) == 20


@pytest.mark.anyio
async def test_js_code_runs_on_every_page_under_the_security_switch(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_app: Any, site: Any
) -> None:
    seen: list[Any] = []
    original = crawlkeeper_app.backend.crawl

    async def recording(page: Any, url: str, options: Any) -> Any:
        seen.append(options.js_code)
        return await original(page, url, options)

    crawlkeeper_app.backend.crawl = recording
    async with crawlkeeper_client() as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert "js_code" in tools["crawl_site"].input_schema["properties"]
        ran = await client.call_tool("crawl_site", {"url": f"{SITE}/p/0", "max_pages": 3, "js_code": "1 + 1"})
        assert not ran.is_error, error_text(ran)
        assert seen == ["1 + 1"] * 3
        crawlkeeper_app.config.settings.security.js_code = "deny"
        denied = error_text(await client.call_tool("crawl_site", {"url": f"{SITE}/p/0", "js_code": "1"}))
    assert 'js_code = "deny"' in denied
    assert len(seen) == 3, "a refused script must not load any page"


@pytest.mark.anyio
async def test_a_logging_in_profile_logs_in_once_for_the_whole_crawl(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_app: Any, site: Any, write_profile: Callable[..., Any]
) -> None:
    write_profile("member", '[[cookies]]\nname = "sid"\nvalue = "s3cret-value"\ndomain = "example.com"\n')
    async with crawlkeeper_client() as client:
        before = len(site.contexts)
        result = await client.call_tool("crawl_site", {"url": f"{SITE}/p/0", "profile": "member", "max_pages": 6,
                                                       "max_depth": 9})
        listed = await client.call_tool("list_sessions", {})
    data = result.structured_content
    assert not result.is_error, error_text(result)
    assert len(data["pages"]) == 6 and data["session_id"] is None
    used = site.contexts[before:]
    assert len(used) == 1 and used[0].closed  # one temporary session, closed at the end
    sent = [r for r in site.requests if r.context_id == used[0].id and r.resource_type == "document"]
    assert len(sent) == 6 and all("sid" in r.cookie_names for r in sent)  # every page as the profile's user
    assert listed.structured_content["sessions"] == []


@pytest.mark.anyio
async def test_every_refused_or_failed_page_is_counted_with_its_reason(
    crawlkeeper_app: Any, site: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crawlkeeper.errors import CrawlError

    site.add_page(f"{SITE}/p/0", '<html><title>P0</title><a href="/p/1">one</a><a href="/broken">broken</a>'
                  '<a href="https://intranet.example.com/x">intranet</a><a href="https://cdn.example.com/ok">cdn</a>'
                  '<a href="/away">away</a></html>')
    site.add_page(f"{SITE}/p/1", "<html><title>P1</title><p>one</p></html>")
    site.add_page(f"{SITE}/broken", "<html></html>")
    site.add_page(f"{SITE}/away", "<html></html>", redirect="https://elsewhere.org/")
    site.add_page("https://cdn.example.com/ok", "<html><title>CDN</title><p>ok</p></html>")

    async def resolver(host: str, port: int) -> list[str]:  # an in-scope name that resolves to a private address
        return ["10.1.2.3"] if host.startswith("intranet.") else ["93.184.215.14"]

    crawlkeeper_app.gate.resolver = resolver
    real_crawl = crawlkeeper_app.backend.crawl

    async def crawl(page: Any, url: str, options: Any) -> Any:
        if url.endswith("/broken"):
            raise CrawlError(f"could not load {url}: net::ERR_CONNECTION_RESET")
        return await real_crawl(page, url, options)

    monkeypatch.setattr(crawlkeeper_app.backend, "crawl", crawl)
    data = await site_crawl.crawl_site(crawlkeeper_app, f"{SITE}/p/0", scope="same-domain", max_pages=20,
                                       max_depth=1)
    pages = {p["url"]: p for p in data["pages"]}
    assert set(pages) == {f"{SITE}/p/0", f"{SITE}/p/1", f"{SITE}/broken", "https://cdn.example.com/ok"}
    assert "ERR_CONNECTION_RESET" in pages[f"{SITE}/broken"]["error"]  # failed: listed with its reason
    assert all(not p.get("error") for u, p in pages.items() if u != f"{SITE}/broken")
    skipped = data["skipped"]
    assert skipped["refused"] == 1  # intranet.example.com: in scope, refused by the egress policy
    assert skipped["scope"] == 1  # /away redirects out of scope: counted, its page not listed
    assert skipped["robots"] == 0
