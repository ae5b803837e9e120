"""Page handling: work on a page under the call's overall deadline and the page meter, abandoning a page that
hangs, floods or crashes, and parking a session's page at the end of each call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .. import guard
from ..browser import BrowserBackend
from ..errors import CrawlError, PageCrashed, PageTimeout, PageTooLarge, first_line
from ..logs import safe_url
from ..models import Session
from ..options import CrawlOptions
from .contexts import close_quietly

log = logging.getLogger("crawlkeeper.app")

T = TypeVar("T")
_TIMEOUT_GRACE_S = 2.0


class PageHandler:
    """Runs work on pages within their limits; owns the clean-up tasks it starts in the background."""

    def __init__(self, backend: BrowserBackend) -> None:
        self.backend = backend
        self._cleanups: set[asyncio.Future[Any]] = set()

    async def crawl_in_session(
        self, session: Session, url: str, options: CrawlOptions, work: Callable[[Any, CrawlOptions], Awaitable[T]]
    ) -> T:
        """Work in a session's page, under the overall deadline; a page that hangs is replaced."""
        try:
            page = await session.ensure_page()
        except Exception as exc:
            raise CrawlError(f"could not open a page for session '{session.id}' ({first_line(exc)})") from None
        try:
            return await self.crawl_or_abandon(
                page, url, options, work, f" (session '{session.id}' keeps its cookies)"
            )
        except (PageTimeout, PageTooLarge, PageCrashed):
            # The page may still be loading or running a script: a late navigation would interrupt the
            # session's next call, so the page is dropped and the next call opens a new one (the context,
            # and so the login, stays).
            session.page = None
            raise

    async def crawl_or_abandon(
        self, page: Any, url: str, options: CrawlOptions, work: Callable[[Any, CrawlOptions], Awaitable[T]],
        kept: str = "",
    ) -> T:
        """Work under the overall deadline; a page that times out is abandoned (its scripts stopped, closed)."""
        try:
            meter = guard.meter_of(page)
            if meter is not None:  # screenshots and extraction too, not only crawls
                meter.arm(int(options.max_page_mb * 1_048_576))
            result = await asyncio.wait_for(guard.race_meter(work(page, options), meter),
                                            options.timeout_s + _TIMEOUT_GRACE_S)
            if meter is not None and (meter.crashed or meter.problem):
                raise self.meter_error(meter, url)
            return result  # type: ignore[no-any-return]
        except (PageTooLarge, PageCrashed):
            self.background(self.abandon(page))  # a renderer busy with the oversized body answers late
            raise
        except (asyncio.TimeoutError, PageTimeout):
            await self.abandon(page)
            raise PageTimeout(
                f"timed out after {options.timeout_s:g} s crawling {safe_url(url)}; the page was closed{kept}. "
                "Raise timeout_s or try a lighter page"
            ) from None

    def meter_error(self, meter: guard.PageMeter, url: str) -> CrawlError:
        if meter.crashed:
            describe = getattr(self.backend, "crash_message", None)
            return PageCrashed(describe(url) if describe else f"the page {safe_url(url)} crashed its renderer")
        return PageTooLarge(guard.too_large_message(url, meter.problem or "too much data"))

    def background(self, work: Awaitable[Any]) -> None:
        """Run clean-up work without making the caller wait (kept referenced until it ends)."""
        task = asyncio.ensure_future(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def park_session(self, session: Session) -> None:
        """End of a call on ``session``: park its page (nothing of the site runs until the next call)."""
        park = getattr(self.backend, "park_page", None)
        page = session.page
        if park is None or page is None:
            return
        try:
            url = page.url
            if url and url != "about:blank":
                session.parked_url = url
            await park(page)
        except Exception as exc:  # a page that cannot be parked is replaced; the context (login) stays
            log.debug("could not park the page of session %s: %s", session.id, exc)
            if session.page is page:
                session.page = None
            await self.abandon(page)

    async def abandon(self, page: Any) -> None:
        abandon = getattr(self.backend, "abandon_page", None)
        if abandon is not None:
            await abandon(page)
        else:
            await close_quietly(page)
