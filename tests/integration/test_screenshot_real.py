"""screenshot over stdio with real Chromium: PNG content, tiles for tall pages, elements, sessions, errors."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Iterator

import pytest
from PIL import Image

from crawlkeeper.testing.site import TestSite

from helpers import Server, mcp_server, write_config
from sites import ExtraSite, html_page

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def extra() -> Iterator[ExtraSite]:
    with ExtraSite() as site:
        site.page("/tall", html_page("Tall", '<div style="height:100000px;background:linear-gradient(red,blue)">'
                                             "<p>a page 100,000 px tall</p></div>"))
        site.page("/box", html_page("Box", '<div id="box" style="width:300px;height:120px;background:#0a0">x</div>'
                                           '<p id="hidden" style="display:none">hidden</p>'))
        yield site


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    config = write_config(tmp_path_factory.mktemp("screenshot"), "[crawl]\nmax_screenshot_tiles = 3\n")
    async with mcp_server(config) as srv:
        yield srv


def images(result: object) -> list[Image.Image]:
    out = []
    for block in result.content:  # type: ignore[attr-defined]
        if block.type == "image":
            assert block.mime_type == "image/png"
            out.append(Image.open(io.BytesIO(base64.b64decode(block.data))))
    return out


@pytest.mark.anyio
async def test_viewport_screenshot(server: Server, extra: ExtraSite) -> None:
    result = await server.call("screenshot", {"url": extra.url("/box"), "width": 800, "height": 600})
    assert not result.is_error
    [image] = images(result)
    assert image.format == "PNG" and image.size == (800, 600)
    data = result.structured_content
    assert (data["width"], data["height"], data["tiles"], data["final_url"]) == (800, 600, 1, extra.url("/box"))


@pytest.mark.anyio
async def test_a_100000_px_page_comes_in_capped_tiles(server: Server, extra: ExtraSite) -> None:
    result = await server.call("screenshot", {"url": extra.url("/tall"), "full_page": True})
    assert not result.is_error
    tiles = images(result)
    assert len(tiles) == 3
    assert all(tile.size == (1280, 2000) for tile in tiles)
    data = result.structured_content
    assert data["page_height"] >= 100_000 and data["height"] == 6000
    assert data["omitted_tiles"] == -(-data["page_height"] // 2000) - 3
    assert data["omitted_px"] == data["page_height"] - 6000
    top, bottom = tiles[0].convert("RGB").getpixel((640, 1000)), tiles[2].convert("RGB").getpixel((640, 1000))
    assert top[0] > 200 and bottom[0] > 200  # red near the top of a red-to-blue page: tiles in order


@pytest.mark.anyio
async def test_element_screenshot_and_selector_errors(server: Server, extra: ExtraSite) -> None:
    result = await server.call("screenshot", {"url": extra.url("/box"), "selector": "#box"})
    assert not result.is_error
    [image] = images(result)
    assert image.size == (300, 120)
    assert image.convert("RGB").getpixel((150, 60)) == (0, 170, 0)
    assert "matches nothing" in await server.error("screenshot", {"url": extra.url("/box"), "selector": "#none"})
    assert "not visible" in await server.error("screenshot", {"url": extra.url("/box"), "selector": "#hidden"})


@pytest.mark.anyio
async def test_screenshot_in_a_logged_in_session(server: Server, test_site: TestSite) -> None:
    cookie = {"name": test_site.SESSION_COOKIE, "value": test_site.session_token("alice"), "url": test_site.url("/")}
    await server.ok("create_session", {"session_id": "shot", "cookies": [cookie]})
    inside = (await server.call("screenshot", {"url": test_site.url("/private"), "session_id": "shot"}))
    assert inside.structured_content["final_url"] == test_site.url("/private")
    assert inside.structured_content["title"] == "Private area"
    outside = await server.call("screenshot", {"url": test_site.url("/private")})
    assert outside.structured_content["final_url"].startswith(test_site.url("/login"))
