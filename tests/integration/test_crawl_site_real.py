"""crawl_site over stdio with real Chromium: robots.txt through the egress proxy, an infinite calendar,
redirects out of scope, a logged-in session, progress notifications."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from crawlkeeper.testing.site import TestSite

from helpers import Server, mcp_server, write_config
from sites import ExtraSite, Request, Response, html_page

pytestmark = pytest.mark.integration

WORDS = "<p>Enough words on this page for the crawler to treat it as real content rather than an empty shell.</p>"


def calendar(request: Request) -> Response:
    month = int(request.path.rsplit("/", 1)[1])
    body = WORDS + f'<a href="/cal/{month + 1}">next month</a><a href="/cal/{month - 1}">previous month</a>'
    return 200, {}, html_page(f"Month {month}", body)


@pytest.fixture(scope="module")
def extra(test_site: TestSite) -> Iterator[ExtraSite]:
    with ExtraSite() as site:
        site.page("/robots.txt", "User-agent: *\nDisallow: /private/\n", headers={"content-type": "text/plain"})
        site.page("/", html_page("Home", WORDS + '<a href="/cal/0">calendar</a><a href="/private/a">private</a>'
                                 '<a href="/away">away</a><a href="/docs/a">docs</a><a href="/#top">top</a>'))
        site.route("/cal/*", calendar)
        site.page("/away", b"", status=302, headers={"location": test_site.url("/links")})
        site.page("/docs/a", html_page("Docs A", WORDS + '<a href="/docs/b">b</a>'))
        site.page("/docs/b", html_page("Docs B", WORDS))
        site.page("/private/a", html_page("Private", WORDS))
        yield site


@pytest.fixture(scope="module")
def no_robots() -> Iterator[ExtraSite]:
    with ExtraSite() as site:
        site.page("/robots.txt", "down", status=503)
        site.page("/", html_page("Home", WORDS))
        yield site


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with mcp_server(write_config(tmp_path_factory.mktemp("crawl-site"))) as srv:
        yield srv


@pytest.mark.anyio
async def test_a_polite_bounded_crawl(server: Server, extra: ExtraSite) -> None:
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    result = await server.call("crawl_site", {"url": extra.url("/"), "max_pages": 12, "max_depth": 50,
                                              "max_chars_per_page": 300}, progress_callback=on_progress)
    assert not result.is_error, result.content[0].text
    data = result.structured_content
    urls = [p["url"] for p in data["pages"]]
    assert urls[0] == extra.url("/") and len(urls) == 12
    assert extra.url("/docs/b") in urls  # depth 2
    assert not any("/private/" in u for u in urls)
    bad = [(p["url"], p["status"], p.get("error")) for p in data["pages"]
           if p["status"] != 200 or len(p["content"] or "") > 300]
    assert not bad
    assert data["skipped"]["robots"] == 1
    assert data["skipped"]["scope"] == 1  # /away redirects to another host (the test site's port)
    assert data["skipped"]["limit"] >= 1  # the calendar never ends: max_pages stops it
    assert extra.hits("/robots.txt") == 1
    assert extra.hits("/private/a") == 0
    assert progress and progress[-1] == 12


@pytest.mark.anyio
async def test_an_unreachable_robots_txt_disallows_the_host(server: Server, no_robots: ExtraSite) -> None:
    data = await server.ok("crawl_site", {"url": no_robots.url("/")})
    assert data["pages"] == [] and data["skipped"]["robots"] == 1
    assert no_robots.hits("/") == 0


@pytest.mark.anyio
async def test_crawl_site_in_a_logged_in_session(server: Server, test_site: TestSite) -> None:
    cookie = {"name": test_site.SESSION_COOKIE, "value": test_site.session_token("alice"), "url": test_site.url("/")}
    await server.ok("create_session", {"session_id": "site", "cookies": [cookie]})
    data = await server.ok("crawl_site", {"url": test_site.url("/private"), "session_id": "site", "max_depth": 1,
                                          "exclude": ["/logout*"], "concurrency": 4, "output": "text"})
    first = data["pages"][0]
    assert first["url"] == test_site.url("/private") and "Welcome, alice!" in first["content"]
    assert data["skipped"]["scope"] >= 1  # /logout, excluded
    private = await server.ok("crawl_url", {"url": test_site.url("/private"), "session_id": "site"})
    assert "Welcome, alice!" in private["content"], "the crawl logged the session out"
    anonymous = await server.ok("crawl_site", {"url": test_site.url("/private"), "max_pages": 1})
    assert anonymous["pages"] == [] or "Welcome" not in (anonymous["pages"][0].get("content") or "")
