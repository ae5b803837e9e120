"""The ``screenshot`` tool: PNG images of a page (viewport, full page in tiles, or one element).

A full page is cut into tiles of at most :data:`TILE_PX` pixels: image inputs of current models are limited
per side (8000 px for one image, 2000 px when a request carries many), and one 30,000 px image would be
refused or shrunk into illegibility. Only the first ``max_screenshot_tiles`` tiles are captured (each with a
``clip``, so a 100,000 px page costs what its first tiles cost); what was cut is reported.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from .app.runner import PageTarget
from .errors import CrawlError, first_line
from .logs import safe_url
from .options import CrawlOptions

log = logging.getLogger("crawlkeeper.screenshots")

#: Height of one tile, in CSS pixels (device scale factor 1).
TILE_PX = 2000
#: Widest image returned: a page wider than this is cut at the right.
MAX_WIDTH_PX = 4000

_DIMENSIONS = """() => {
  const d = document.documentElement, b = document.body;
  return [Math.max(d ? d.scrollWidth : 0, b ? b.scrollWidth : 0, window.innerWidth),
          Math.max(d ? d.scrollHeight : 0, b ? b.scrollHeight : 0, window.innerHeight)];
}"""


@dataclass
class Shot:
    """The captured PNG images and what they cover."""

    images: list[bytes] = field(default_factory=list)
    width: int = 0  # of the images, CSS px
    height: int = 0  # covered by the images together
    page_height: int = 0  # of the page (or the element)
    omitted_tiles: int = 0
    omitted_px: int = 0

    def encoded(self) -> list[str]:
        return [base64.b64encode(image).decode("ascii") for image in self.images]


async def capture(
    page: Any, options: CrawlOptions, *, full_page: bool, selector: str | None, width: int | None,
    height: int | None,
) -> Shot:
    """Take the screenshot the call asked for of the page as it is now."""
    timeout_ms = max(1.0, options.timeout_s) * 1000
    restore = None
    if width or height:
        current = getattr(page, "viewport_size", None) or {"width": 1280, "height": 800}
        size = {"width": width or current["width"], "height": height or current["height"]}
        restore = current if size != current else None
        await page.set_viewport_size(size)
    try:
        if selector:
            return await _element(page, selector, options, timeout_ms)
        if not full_page:
            png = await page.screenshot(type="png", timeout=timeout_ms)
            viewport = getattr(page, "viewport_size", None) or {"width": 0, "height": 0}
            return Shot([png], viewport["width"], viewport["height"], viewport["height"])
        page_width, page_height = await _dimensions(page)
        return await _tiles(page, 0, 0, min(page_width, MAX_WIDTH_PX), page_height,
                            options.max_screenshot_tiles, timeout_ms)
    finally:
        if restore is not None:  # a session's (or a pooled) page keeps its own viewport for the next call
            try:
                await page.set_viewport_size(restore)
            except Exception:
                log.debug("could not restore the viewport", exc_info=True)


async def _dimensions(page: Any) -> tuple[int, int]:
    try:
        dims = await page.evaluate(_DIMENSIONS)
        return int(dims[0]), int(dims[1])
    except Exception:
        viewport = getattr(page, "viewport_size", None) or {"width": 1280, "height": 800}
        return viewport["width"], viewport["height"]


async def _tiles(page: Any, x: float, y: float, width: float, height: float, max_tiles: int,
                 timeout_ms: float) -> Shot:
    count = max(1, math.ceil(height / TILE_PX))
    keep = min(count, max_tiles)
    shot = Shot(width=int(width), page_height=int(height), omitted_tiles=count - keep)
    for index in range(keep):
        top = y + index * TILE_PX
        tile_h = min(TILE_PX, y + height - top)
        if tile_h < 1 or width < 1:
            break
        clip = {"x": x, "y": top, "width": width, "height": tile_h}
        shot.images.append(await page.screenshot(type="png", clip=clip, full_page=True, timeout=timeout_ms))
        shot.height += int(tile_h)
    shot.omitted_px = max(0, int(height) - shot.height)
    return shot


async def _element(page: Any, selector: str, options: CrawlOptions, timeout_ms: float) -> Shot:
    locator = page.locator(selector)
    try:
        count = await locator.count()
    except Exception as exc:
        raise CrawlError(f"selector {selector!r} is not a valid selector: {first_line(exc, 200)}") from None
    if count == 0:
        raise CrawlError(
            f"selector {selector!r} matches nothing on {safe_url(page.url)}; check it (crawl_url with "
            "output='html' shows the page), or wait for it with wait_for"
        )
    element = locator.first
    try:
        await element.scroll_into_view_if_needed(timeout=min(timeout_ms, 5000))
    except Exception:
        pass  # an element that cannot scroll (fixed, hidden) is judged by its box below
    box = await element.bounding_box()
    if not box or box["width"] < 1 or box["height"] < 1:
        raise CrawlError(
            f"selector {selector!r} matches an element that is not visible on {safe_url(page.url)} "
            "(hidden, or of zero size); pick a visible element"
        )
    scroll_x, scroll_y = await _scroll(page)
    # Page coordinates: the box is relative to the viewport.
    x, y = box["x"] + scroll_x, box["y"] + scroll_y
    return await _tiles(page, max(0.0, x), max(0.0, y), min(box["width"], MAX_WIDTH_PX), box["height"],
                        options.max_screenshot_tiles, timeout_ms)


async def _scroll(page: Any) -> tuple[float, float]:
    try:
        pos = await asyncio.wait_for(page.evaluate("() => [window.scrollX, window.scrollY]"), 5)
        return float(pos[0]), float(pos[1])
    except Exception:
        return 0.0, 0.0


async def take_screenshot(
    target: PageTarget,
    url: str,
    *,
    full_page: bool = False,
    selector: str | None = None,
    width: int | None = None,
    height: int | None = None,
    **arguments: Any,
) -> tuple[dict[str, Any], list[str]]:
    """Load ``url`` on ``target`` like ``crawl_url`` (session or pooled page, merge pipeline, egress policy,
    deadline), then capture.

    Returns the structured result and the base64 PNG images."""

    async def work(page: Any, options: CrawlOptions) -> tuple[Any, Shot]:
        loaded = await target.backend.load(page, url, options)
        shot = await capture(page, options, full_page=full_page, selector=selector, width=width, height=height)
        return loaded, shot

    (loaded, shot), _options = await target.run(url, work, arguments)
    result = {
        "url": loaded.url,
        "final_url": loaded.final_url,
        "status": loaded.status,
        "title": loaded.title,
        "width": shot.width,
        "height": shot.height,
        "page_height": shot.page_height,
        "tiles": len(shot.images),
        "omitted_tiles": shot.omitted_tiles,
        "omitted_px": shot.omitted_px,
        "full_page": full_page,
        "selector": selector,
        "session_id": target.session_id,
    }
    return result, shot.encoded()
