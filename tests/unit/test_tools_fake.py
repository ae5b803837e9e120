"""The MCP tools through a real in-memory MCP client, against the fake browser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

CONTRACT_TOOLS = {"crawl_url", "crawl_many", "create_session", "list_sessions", "close_session", "list_profiles"}
SITE = "https://example.com"

PAGE = """<html><head><title>Canned</title></head><body>
<h1>Heading</h1>
<p>First paragraph.</p>
<p>Second <b>bold</b> paragraph.</p>
<a href="/about">About us</a>
<a href="https://other.example.org/x">Elsewhere</a>
<script>var hidden = "SCRIPT-ONLY";</script>
</body></html>"""


@pytest.fixture
def site(crawlkeeper_browser: Any) -> Any:
    crawlkeeper_browser.add_page(f"{SITE}/", PAGE)
    crawlkeeper_browser.add_page(f"{SITE}/a", "<html><head><title>A</title></head><body><p>Page A</p></body></html>")
    crawlkeeper_browser.add_page(f"{SITE}/b", "<html><head><title>B</title></head><body><p>Page B</p></body></html>")
    crawlkeeper_browser.add_page(f"{SITE}/c", "<html><head><title>C</title></head><body><p>Page C</p></body></html>")
    long_body = "".join(f"<p>Paragraph {i}: the quick brown fox jumps over the lazy dog.</p>" for i in range(2000))
    crawlkeeper_browser.add_page(
        f"{SITE}/long", f"<html><head><title>Long</title></head><body>{long_body}</body></html>"
    )
    return crawlkeeper_browser


@pytest.mark.anyio
async def test_tool_list_has_the_contract_tools_with_schemas(crawlkeeper_client: Callable[..., Any]) -> None:
    async with crawlkeeper_client() as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) >= CONTRACT_TOOLS
    for name in CONTRACT_TOOLS:
        schema = tools[name].input_schema
        assert schema["type"] == "object", name
        assert tools[name].description, name
        assert "ctx" not in schema.get("properties", {}), name
    crawl = tools["crawl_url"].input_schema
    assert crawl["required"] == ["url"]
    assert {"url", "session_id", "profile", "output", "css_selector", "wait_for", "js_code", "timeout_s",
            "max_chars", "cursor"} <= set(crawl["properties"])
    assert set(tools["crawl_many"].input_schema["required"]) == {"urls"}
    assert "concurrency" in tools["crawl_many"].input_schema["properties"]
    assert {"session_id", "url", "cookies", "profile", "auth", "ttl_s"} <= set(
        tools["create_session"].input_schema["properties"]
    )
    assert tools["close_session"].input_schema["required"] == ["session_id"]
    assert tools["list_sessions"].input_schema.get("required", []) == []
    assert tools["crawl_url"].output_schema is not None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("output", "present", "absent"),
    [
        ("markdown", ["Heading", "First paragraph.", "Second bold paragraph."], ["<p>", "SCRIPT-ONLY"]),
        ("html", ["<h1>Heading</h1>", "<b>bold</b>", "SCRIPT-ONLY"], []),
        ("text", ["Heading", "First paragraph."], ["<p>", "SCRIPT-ONLY"]),
        ("links", [f"- [About us]({SITE}/about)", "- [Elsewhere](https://other.example.org/x)"], ["First paragraph"]),
    ],
)
async def test_crawl_url_outputs(
    crawlkeeper_client: Callable[..., Any], site: Any, output: str, present: list[str], absent: list[str]
) -> None:
    async with crawlkeeper_client() as client:
        result = await client.call_tool("crawl_url", {"url": f"{SITE}/", "output": output})
    assert not result.is_error, result.content[0].text
    data = result.structured_content
    assert data["output"] == output
    assert data["title"] == "Canned"
    assert data["status"] == 200
    assert data["url"] == data["final_url"] == f"{SITE}/"
    assert data["truncated"] is False and data["next_cursor"] is None
    assert data["session_id"] is None
    for text in present:
        assert text in data["content"]
    for text in absent:
        assert text not in data["content"]


@pytest.mark.anyio
async def test_crawl_url_default_output_is_markdown(crawlkeeper_client: Callable[..., Any], site: Any) -> None:
    async with crawlkeeper_client() as client:
        result = await client.call_tool("crawl_url", {"url": f"{SITE}/"})
    assert result.structured_content["output"] == "markdown"


@pytest.mark.anyio
async def test_paging_follows_cursors_to_the_end(crawlkeeper_client: Callable[..., Any], site: Any) -> None:
    url = f"{SITE}/long"
    async with crawlkeeper_client() as client:
        whole = await client.call_tool("crawl_url", {"url": url, "max_chars": 1_000_000})
        assert whole.structured_content["truncated"] is False
        assert whole.structured_content["next_cursor"] is None
        full = whole.structured_content["content"]
        assert len(full) > 50_000 and "Paragraph 1999" in full

        max_chars = 5000
        chunks = []
        result = await client.call_tool("crawl_url", {"url": url, "max_chars": max_chars})
        visited = len(site.navigations)
        while True:
            data = result.structured_content
            assert not result.is_error
            assert data["truncated"] is (data["next_cursor"] is not None)
            assert 0 < len(data["content"]) <= max_chars
            assert data["title"] == "Long" and data["url"] == url
            chunks.append(data["content"])
            if data["next_cursor"] is None:
                break
            assert len(chunks) < 100, "the cursor never ended"
            result = await client.call_tool(
                "crawl_url", {"url": url, "cursor": data["next_cursor"], "max_chars": max_chars}
            )
    assert len(chunks) >= len(full) // max_chars
    assert "".join(chunks) == full
    assert len(site.navigations) == visited  # following pages never crawls the page again
    # chunks end at a paragraph/line break when one is near
    assert all(chunk.endswith("\n") for chunk in chunks[:-1])


@pytest.mark.anyio
async def test_unknown_or_foreign_cursor_is_a_tool_error(crawlkeeper_client: Callable[..., Any], site: Any) -> None:
    async with crawlkeeper_client() as client:
        bad = await client.call_tool("crawl_url", {"url": f"{SITE}/long", "cursor": "nosuchtoken.200"})
        assert bad.is_error
        assert "unknown or has expired" in bad.content[0].text
        assert "without cursor" in bad.content[0].text

        first = await client.call_tool("crawl_url", {"url": f"{SITE}/long", "max_chars": 1000})
        cursor = first.structured_content["next_cursor"]
        assert cursor
        other = await client.call_tool("crawl_url", {"url": f"{SITE}/a", "cursor": cursor})
        assert other.is_error
        assert f"{SITE}/long" in other.content[0].text


@pytest.mark.anyio
async def test_crawl_many_keeps_order_reports_failures_in_place_and_reports_progress(
    crawlkeeper_client: Callable[..., Any], site: Any
) -> None:
    urls = [f"{SITE}/a", "file:///etc/passwd", f"{SITE}/b", "ftp://example.com/x", f"{SITE}/c"]
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async with crawlkeeper_client() as client:
        result = await client.call_tool(
            "crawl_many", {"urls": urls, "concurrency": 2, "output": "text"}, progress_callback=on_progress
        )
    assert not result.is_error, result.content[0].text
    results = result.structured_content["results"]
    assert [r["url"] for r in results] == urls
    assert [r.get("title") for r in results] == ["A", None, "B", None, "C"]
    assert "Page A" in results[0]["content"] and "Page C" in results[4]["content"]
    assert "error" in results[1] and "file" in results[1]["error"]
    assert "error" in results[3] and "ftp" in results[3]["error"]
    assert "/etc/passwd" not in [n[1] for n in site.navigations]
    assert len(progress) == len(urls)
    assert sorted(p[0] for p in progress) == [1, 2, 3, 4, 5]
    assert all(p[1] == len(urls) for p in progress)
    assert all(p[2] for p in progress)


@pytest.mark.anyio
async def test_bad_url_is_an_error_and_the_server_keeps_serving(
    crawlkeeper_client: Callable[..., Any], site: Any
) -> None:
    async with crawlkeeper_client() as client:
        for bad in ["not a url", "file:///etc/passwd", "javascript:alert(1)", "http://"]:
            result = await client.call_tool("crawl_url", {"url": bad})
            assert result.is_error, bad
            assert result.content[0].text.strip(), bad
        bad_arg = await client.call_tool("crawl_url", {"url": f"{SITE}/a", "output": "pdf"})
        assert bad_arg.is_error
        good = await client.call_tool("crawl_url", {"url": f"{SITE}/a"})
        assert not good.is_error
        assert "Page A" in good.structured_content["content"]


@pytest.mark.anyio
async def test_unknown_page_is_reported_with_its_status(crawlkeeper_client: Callable[..., Any], site: Any) -> None:
    async with crawlkeeper_client() as client:
        result = await client.call_tool("crawl_url", {"url": f"{SITE}/missing"})
    # the fake serves a 404 page; whichever way the core reports it, the status must be visible
    text = result.content[0].text
    assert "404" in text or (result.structured_content or {}).get("status") == 404


@pytest.mark.anyio
async def test_list_profiles_and_sessions_start_empty(crawlkeeper_client: Callable[..., Any]) -> None:
    async with crawlkeeper_client() as client:
        profiles = await client.call_tool("list_profiles", {})
        sessions = await client.call_tool("list_sessions", {})
    assert profiles.structured_content == {"profiles": []}
    assert sessions.structured_content == {"sessions": []}


@pytest.mark.anyio
async def test_every_tool_is_documented_for_agents_and_in_the_client_allowlist(
    crawlkeeper_client: Callable[..., Any]
) -> None:
    import re

    async with crawlkeeper_client() as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert len(names) >= 9
    readme, claude_code = _repo_texts("README.md", "examples/clients/claude_code.md")
    allowed = set(re.findall(r'"mcp__crawlkeeper__(\w+)"', claude_code))
    for name in sorted(names):
        assert re.search(rf"^{name}\(", readme, re.M), f"README has no agent-side example of {name}(...)"
        assert name in allowed, f"examples/clients/claude_code.md's tool allowlist misses {name}"
        assert f"`{name}`" in claude_code, f"claude_code.md's list of tools misses {name}"
    assert allowed <= names, f"the allowlist names tools the server does not have: {allowed - names}"


def _repo_texts(*paths: str) -> list[str]:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    return [(root / path).read_text() for path in paths]
