"""Launching the local Chromium before crawl4ai is imported (``[browser] warmup = "launch"`` / ``"early"``).

A server answers ``initialize`` only after importing the MCP SDK (about 1.6 s of CPU on a quiet machine), and
crawl4ai takes as long again. Launching Chromium needs neither: Playwright's node driver and Chromium start in
their own processes, so they use the second core while Python imports. :class:`EarlyLaunch` starts Playwright
and Chromium beside the crawl4ai import (``launch``) or at process start (``early``) with the launch arguments
crawl4ai would use
(:func:`crawlkeeper._crawl4ai.launch_kwargs`); :meth:`ChromiumBackend.start
<crawlkeeper.browser.ChromiumBackend.start>` then hands that browser to crawl4ai instead of launching one. A
launch that failed is logged and forgotten: the first use launches as it always did and reports its own error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from . import guard
from .errors import first_line

log = logging.getLogger("crawlkeeper.browser")


@dataclass
class Launched:
    """A browser launched early: its Playwright (whose driver owns the process) and the browser."""

    playwright: Any
    browser: Any
    #: Browser processes that existed before the launch (the memory watchdog finds ours by difference).
    before: set[int] = field(default_factory=set)
    seconds: float = 0.0

    async def close(self) -> None:
        """Close the browser and stop its driver (Playwright's driver ends the process with it)."""
        try:
            await asyncio.wait_for(self.browser.close(), 3)
        except Exception as exc:
            log.debug("closing the early browser failed: %s", first_line(exc))
        try:
            await asyncio.wait_for(self.playwright.stop(), 3)
        except Exception as exc:
            log.debug("stopping the early browser's driver failed: %s", first_line(exc))


async def _start_playwright() -> Any:
    """Playwright started (its import in a thread: ~0.1 s the event loop need not wait for)."""
    module = await asyncio.to_thread(__import__, "playwright.async_api", fromlist=["async_playwright"])
    return await module.async_playwright().start()


class EarlyLaunch:
    """One launch of Chromium through plain Playwright, started as a task, taken once by the backend."""

    def __init__(self) -> None:
        self.task: asyncio.Task[Launched] | None = None
        #: Replaceable in tests: ``await start_playwright()`` returns a started Playwright.
        self.start_playwright = _start_playwright

    @property
    def pending(self) -> bool:
        """Whether a launch was started and not taken yet."""
        return self.task is not None

    def start(self, launch: dict[str, Any], *, watch_processes: bool) -> None:
        """Start launching with Playwright's ``chromium.launch(**launch)``, once (later calls do nothing)."""
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._launch(launch, watch_processes))

    async def _launch(self, launch: dict[str, Any], watch_processes: bool) -> Launched:
        started = time.perf_counter()
        # What a killed earlier run left behind is cleaned up later (ChromiumBackend._attach_crawler): scanning
        # /proc here would take the CPU and interpreter lock the MCP SDK import needs before `initialize`.
        before = guard.browser_processes() if watch_processes else set()
        playwright = await self.start_playwright()
        try:
            browser = await playwright.chromium.launch(**launch)
        except BaseException:  # a failed or cancelled launch leaves no driver (nor browser) behind
            try:
                await asyncio.shield(playwright.stop())
            except Exception:
                pass
            raise
        seconds = time.perf_counter() - started
        log.info("browser launched early in %.2f s (before crawl4ai was imported)", seconds)
        return Launched(playwright, browser, before, seconds)

    async def take(self) -> Launched | None:
        """The early browser (waiting for its launch if under way), once; None when no launch was started or it
        failed (logged: the caller then launches as usual and reports its own error)."""
        task, self.task = self.task, None
        if task is None:
            return None
        try:
            launched = await task
        except asyncio.CancelledError:
            if task.cancelled() and not _cancelling():
                return None  # the launch was stopped (shutdown), not this caller
            raise
        except Exception as exc:
            log.warning("launching the browser early failed (%s); launching it on first use instead",
                        first_line(exc))
            return None
        if not launched.browser.is_connected():
            log.warning("the browser launched early has exited; launching it again")
            await launched.close()
            return None
        return launched

    async def close(self) -> None:
        """Stop a launch under way, or close the browser it launched if nobody took it (shutdown)."""
        task, self.task = self.task, None
        if task is None:
            return
        if not task.done():
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=5)
        if task in done and not task.cancelled() and task.exception() is None:
            await task.result().close()


def _cancelling() -> bool:
    """Whether the running task itself is being cancelled (Python 3.11+; before that assume it is)."""
    current = asyncio.current_task()
    cancelling = getattr(current, "cancelling", None)
    return True if cancelling is None else bool(cancelling())
