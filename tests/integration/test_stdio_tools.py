"""The MCP tools end to end: `crawlkeeper serve` over stdio, real Chromium, the loopback test site."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import AsyncIterator

import anyio
import pytest

from crawlkeeper.testing.site import TestSite

from helpers import Server, browsers, descendants, describe, import_baseline_s, mcp_server, write_config

pytestmark = pytest.mark.integration

TOOLS = {"crawl_url", "crawl_many", "create_session", "list_sessions", "close_session", "list_profiles"}


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    # warmup = "early": the browser launches beside the SDK import (the default "launch" is what every other
    # stdio test's server runs).
    config = write_config(tmp_path_factory.mktemp("stdio-tools"), '[browser]\nwarmup = "early"\n')
    async with mcp_server(config, log_level="INFO") as srv:
        # Calls that need no browser, while the browser warms up in the background ([browser] warmup).
        await srv.session.list_tools()
        await srv.ok("list_sessions")
        for _ in range(150):  # polling a process tree: there is no event to wait for
            if browsers(descendants(srv.process)):
                break
            await anyio.sleep(0.2)
        srv.facts["browsers_before_first_crawl"] = describe(browsers(descendants(srv.process)))
        yield srv


@pytest.mark.anyio
async def test_initialize_is_fast_and_the_browser_warms_up_before_the_first_crawl(
    server: Server, test_site: TestSite
) -> None:
    baseline = import_baseline_s()
    limit = max(3.0, 1.5 * baseline)  # 3 s on an idle machine; more only if importing the SDK alone is slow
    assert server.init_s < limit, f"initialize took {server.init_s:.2f} s (importing mcp alone: {baseline:.2f} s)"
    assert server.facts["browsers_before_first_crawl"], "the browser did not warm up in the background"

    started = time.monotonic()
    first = await server.ok("crawl_url", {"url": test_site.url("/links")})
    first_s = time.monotonic() - started
    assert first["status"] == 200
    assert browsers(descendants(server.process)), "no Chromium process after a crawl"
    # The browser was launched at process start, beside the SDK import (before initialize could be answered),
    # and that very browser answered the first call: one launch, taken over by crawl4ai.
    log = server.log()
    assert "launching the browser early, while the MCP SDK imports" in log, log[-2000:]
    assert "browser launched early" in log, log[-2000:]
    assert log.count("browser started:") == 1 and "(generation 1, launched early)" in log, log[-2000:]

    warm = []
    for _ in range(5):
        started = time.monotonic()
        await server.ok("crawl_url", {"url": test_site.url("/links")})
        warm.append(time.monotonic() - started)
    warm_s = statistics.median(warm)
    print(f"\ntimings: initialize {server.init_s:.2f} s (SDK import baseline {baseline:.2f} s), "
          f"first crawl_url {first_s:.2f} s, warm crawl_url median {warm_s:.2f} s (min {min(warm):.2f} s)")
    assert first_s < 20
    assert warm_s < 3


@pytest.mark.anyio
async def test_the_browser_runs_with_one_merged_feature_switch_and_no_hidden_ui_renderers(
    server: Server, test_site: TestSite
) -> None:
    await server.ok("create_session", {"session_id": "features", "url": test_site.url("/")})
    try:
        tree = descendants(server.process)
        main = [p for p in browsers(tree) if not any(a.startswith("--type=") for a in p.cmdline())]
        assert len(main) == 1, describe(browsers(tree))
        switches = [a for a in main[0].cmdline() if a.startswith("--disable-features=")]
        # Chromium honours only the last one: crawl4ai's used to be it, dropping Playwright's whole list (which
        # Playwright puts first). Ours is last and holds Playwright's, crawl4ai's and crawlkeeper's.
        features = set(switches[-1].split("=", 1)[1].split(","))
        assert set(switches[0].split("=", 1)[1].split(",")) <= features
        assert {"HttpsUpgrades", "AvoidCorsURLLoaderRestartOnRedirect", "MediaRouter", "WebUIOmniboxPopup"} <= features
        # Nor does any context (the pooled one, the spare, this session's) get Chromium's hidden address-bar pages.
        ui = [p for p in browsers(descendants(server.process)) if "--top-chrome-webui" in p.cmdline()]
        assert not ui, describe(ui)
    finally:
        await server.ok("close_session", {"session_id": "features"})


@pytest.mark.anyio
async def test_warmup_off_starts_no_browser_before_the_first_crawl(
    tmp_path: pytest.TempPathFactory, test_site: TestSite
) -> None:
    config = write_config(tmp_path, '[browser]\nwarmup = "off"\n')  # type: ignore[arg-type]
    async with mcp_server(config) as srv:
        await srv.session.list_tools()
        await anyio.sleep(1.0)
        assert browsers(descendants(srv.process)) == [], "Chromium ran although [browser] warmup = off"
        assert (await srv.ok("crawl_url", {"url": test_site.url("/links")}))["status"] == 200


@pytest.mark.anyio
async def test_tools_list(server: Server) -> None:
    listed = await server.session.list_tools()
    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) >= TOOLS
    assert tools["crawl_url"].input_schema["required"] == ["url"]
    assert tools["crawl_many"].input_schema["required"] == ["urls"]
    assert tools["close_session"].input_schema["required"] == ["session_id"]


@pytest.mark.anyio
async def test_markdown(server: Server, test_site: TestSite) -> None:
    url = test_site.url("/")
    result = await server.ok("crawl_url", {"url": url})
    assert result["url"] == url
    assert result["final_url"] == url
    assert result["status"] == 200
    assert result["title"] == "Crawlkeeper test site"
    assert result["output"] == "markdown"
    assert result["session_id"] is None
    assert (result["truncated"], result["next_cursor"]) == (False, None)
    content = result["content"]
    assert content.startswith("# Crawlkeeper test site")
    assert f"[Log in]({test_site.url('/login')})" in content
    assert "Index: The crawler visits every page" in content


@pytest.mark.anyio
async def test_html(server: Server, test_site: TestSite) -> None:
    result = await server.ok("crawl_url", {"url": test_site.url("/"), "output": "html"})
    assert result["output"] == "html"
    assert '<ul id="nav">' in result["content"]
    assert "<h1>Crawlkeeper test site</h1>" in result["content"]


@pytest.mark.anyio
async def test_text(server: Server, test_site: TestSite) -> None:
    result = await server.ok("crawl_url", {"url": test_site.url("/"), "output": "text"})
    content = result["content"]
    assert "This is a small website used to test crawlkeeper" in content
    assert "Private area" in content
    assert "<" not in content and "](" not in content and not content.startswith("#")


@pytest.mark.anyio
async def test_links(server: Server, test_site: TestSite) -> None:
    result = await server.ok("crawl_url", {"url": test_site.url("/links"), "output": "links"})
    pairs = re.findall(r"^- \[(.+)\]\((.+)\)$", result["content"], re.MULTILINE)
    assert len(pairs) == len(result["content"].splitlines()) == 8
    assert dict(pairs) == {
        "Home": test_site.url("/"),
        "Log in": test_site.url("/login"),
        "Cookie echo": test_site.url("/cookies"),
        "A short long page": test_site.url("/long?n=10"),
        "Tiny page": test_site.url("/tiny"),
        "Example home": "https://example.com/",
        "Example docs": "https://example.com/docs",
        "About example": "https://example.com/about",
    }


@pytest.mark.anyio
async def test_css_selector(server: Server, test_site: TestSite) -> None:
    result = await server.ok("crawl_url", {"url": test_site.url("/links"), "css_selector": "#links"})
    assert "Example docs" in result["content"]
    assert "Five links stay" not in result["content"]
    assert "Links: The crawler" not in result["content"]


@pytest.mark.anyio
async def test_wait_for(server: Server, test_site: TestSite) -> None:
    waited = await server.ok("crawl_url", {"url": test_site.url("/js?delay_ms=800"), "wait_for": "css:#late"})
    assert "Late content arrived" in waited["content"]
    assert "Loaded." in waited["content"]
    # Control: without wait_for the late element is not there yet, so the assertion above means something.
    unwaited = await server.ok("crawl_url", {"url": test_site.url("/js?delay_ms=4000")})
    assert "Late content arrived" not in unwaited["content"]
    assert "Loading..." in unwaited["content"]


@pytest.mark.anyio
async def test_wait_for_that_never_matches_is_an_error(server: Server, test_site: TestSite) -> None:
    url = test_site.url("/js?delay_ms=60000")
    started = time.monotonic()
    message = await server.error("crawl_url", {"url": url, "wait_for": "css:#late", "timeout_s": 1})
    assert time.monotonic() - started < 10
    assert "/js" in message and "wait_for" in message


@pytest.mark.anyio
async def test_wait_for_that_never_matches_is_an_error_with_js_code(server: Server, test_site: TestSite) -> None:
    url = test_site.url("/js?delay_ms=60000")
    message = await server.error(
        "crawl_url", {"url": url, "wait_for": "css:#late", "js_code": "window.scrollTo(0, 0);", "timeout_s": 1}
    )
    assert "/js" in message and "wait_for" in message


@pytest.mark.anyio
async def test_js_code(server: Server, test_site: TestSite) -> None:
    js = "document.body.innerHTML += '<p id=x>added by js</p>'"
    result = await server.ok("crawl_url", {"url": test_site.url("/links"), "js_code": js})
    assert "added by js" in result["content"]
    plain = await server.ok("crawl_url", {"url": test_site.url("/links")})
    assert "added by js" not in plain["content"]


@pytest.mark.anyio
async def test_paging_a_long_page_to_the_end(server: Server, test_site: TestSite) -> None:
    url = test_site.url("/long?n=2000")
    chunks = []
    result = await server.ok("crawl_url", {"url": url, "max_chars": 5000})
    chunks.append(result)
    while result["next_cursor"]:
        assert len(chunks) < 100, "paging does not end"
        result = await server.ok("crawl_url", {"url": url, "max_chars": 5000, "cursor": result["next_cursor"]})
        chunks.append(result)
    assert len(chunks) > 10
    assert all(len(c["content"]) <= 5000 for c in chunks)
    assert [c["truncated"] for c in chunks] == [True] * (len(chunks) - 1) + [False]
    assert all(c["status"] == 200 and c["url"] == url for c in chunks)
    assert "Paragraph 2000" in chunks[-1]["content"]
    numbers = [int(n) for n in re.findall(r"Paragraph (\d+):", "".join(c["content"] for c in chunks))]
    assert numbers == list(range(1, 2001))


@pytest.mark.anyio
async def test_bad_cursor_is_an_error(server: Server, test_site: TestSite) -> None:
    message = await server.error("crawl_url", {"url": test_site.url("/long"), "cursor": "nope.123"})
    assert "cursor" in message and "without cursor" in message


@pytest.mark.anyio
async def test_http_error_status_is_a_result(server: Server, test_site: TestSite) -> None:
    result = await server.ok("crawl_url", {"url": test_site.url("/status/404")})
    assert result["status"] == 404
    assert result["title"] == "Status 404"
    assert "deliberately has status 404" in result["content"]


@pytest.mark.anyio
async def test_crawl_many_in_order_with_progress(server: Server, test_site: TestSite) -> None:
    urls = [test_site.url("/"), test_site.url("/status/404"), "file:///etc/passwd", test_site.url("/links")]
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    result = await server.ok("crawl_many", {"urls": urls, "concurrency": 2}, progress_callback=on_progress)
    results = result["results"]
    assert [r["url"] for r in results] == urls
    assert results[0]["status"] == 200 and results[0]["title"] == "Crawlkeeper test site"
    assert results[1]["status"] == 404 and "error" not in results[1]
    assert set(results[2]) == {"url", "error"}
    assert "file" in results[2]["error"] and "scheme" in results[2]["error"]
    assert results[3]["status"] == 200 and results[3]["title"] == "Links"
    assert sorted(p[0] for p in progress) == [1, 2, 3, 4], progress
    assert all(p[1] == 4 for p in progress)


@pytest.mark.anyio
async def test_refused_and_bad_urls_are_clear_errors_and_the_server_keeps_serving(
    server: Server, test_site: TestSite
) -> None:
    message = await server.error("crawl_url", {"url": "http://127.0.0.3:1/"})
    assert "refused" in message and "loopback" in message and "allow_private" in message
    message = await server.error("crawl_url", {"url": "http://169.254.169.254/latest/meta-data/"})
    assert "metadata" in message
    message = await server.error("crawl_url", {"url": "file:///etc/passwd"})
    assert "scheme" in message and "root:" not in message
    message = await server.error("crawl_url", {"url": "not a url"})
    assert "http" in message
    # A session-less create is refused the same way, before any browser work.
    message = await server.error("create_session", {"url": "http://127.0.0.3:1/"})
    assert "refused" in message

    assert server.process.is_running()
    result = await server.ok("crawl_url", {"url": test_site.url("/tiny")})
    assert result["status"] == 200 and "ok" in result["content"]
