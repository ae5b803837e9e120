"""The screenshot tool through a real in-memory MCP client, against the fake browser."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from support import error_text

SITE = "https://example.com"


@pytest.fixture
def site(crawlkeeper_browser: Any, page: Callable[[str, str], str]) -> Any:
    crawlkeeper_browser.add_page(f"{SITE}/a", page("A", "<p>Page A</p>"))
    return crawlkeeper_browser


@pytest.mark.anyio
async def test_screenshot_returns_png_image_content_and_structured_fields(
    crawlkeeper_client: Callable[..., Any], site: Any
) -> None:
    async with crawlkeeper_client() as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        result = await client.call_tool("screenshot", {"url": f"{SITE}/a"})
    assert not result.is_error, result.content
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert base64.b64decode(images[0].data).startswith(b"\x89PNG\r\n\x1a\n")
    data = result.structured_content
    assert data["url"] == data["final_url"] == f"{SITE}/a"
    assert data["title"] == "A" and data["tiles"] == 1 and data["omitted_tiles"] == 0
    schema = tools["screenshot"]
    assert {"url", "session_id", "profile", "full_page", "selector", "wait_for", "js_code", "width", "height",
            "wait_until", "timeout_s"} == set(schema.input_schema["properties"])
    assert schema.output_schema is not None and "omitted_tiles" in schema.output_schema["properties"]


@pytest.mark.anyio
async def test_screenshot_in_a_session_uses_the_sessions_context(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_app: Any, site: Any
) -> None:
    async with crawlkeeper_client() as client:
        created = await client.call_tool("create_session", {"session_id": "s1"})
        assert not created.is_error
        shot = await client.call_tool("screenshot", {"url": f"{SITE}/a", "session_id": "s1", "width": 640})
        assert not shot.is_error, shot.content
        missing = await client.call_tool("screenshot", {"url": f"{SITE}/a", "session_id": "nope"})
        page = crawlkeeper_app.sessions.get("s1").page
    assert f"{SITE}/a" in site.visited(page.context)
    assert "create_session" in error_text(missing)
    assert page.screenshots and page.viewport_size == {"width": 1280, "height": 800}  # restored after the shot


@pytest.mark.anyio
async def test_screenshot_goes_through_the_egress_policy(crawlkeeper_client: Callable[..., Any], site: Any) -> None:
    async with crawlkeeper_client() as client:
        for bad in ["file:///etc/passwd", "http://169.254.169.254/latest/meta-data/"]:
            result = await client.call_tool("screenshot", {"url": bad})
            assert "refused" in error_text(result), bad
    assert not site.navigations
