"""The background warm-up (``[browser] warmup``): what an agent's first call would otherwise wait for, done while
the agent thinks after ``initialize``. Over stdio it starts once the handshake is answered (see
:func:`after_handshake`); elsewhere when the app starts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..browser import BrowserBackend
from ..config import Config
from ..errors import first_line
from ..models import CrawlRequest
from ..options import CrawlOptions
from .contexts import without_headers
from .gate import EgressGate
from .layers import OptionLayers
from .pool import ContextPool

log = logging.getLogger("crawlkeeper.app")


class WarmUp:
    """Import crawl4ai (off the event loop), launch the browser, open the first session-less call's context and
    page, and run crawl4ai's processing once. Calls arriving meanwhile wait for it (``gate.warming``) instead of
    starting the same work beside it; its failures surface on the first call, which tries again."""

    def __init__(self, config: Config, backend: BrowserBackend, gate: EgressGate, layers: OptionLayers,
                 pool: ContextPool) -> None:
        self.mode = config.settings.browser.warmup
        #: Both launch the browser; "early" already at process start (see :meth:`launch_early`).
        self.launches = self.mode in ("launch", "early")
        self.backend = backend
        self.gate = gate
        self.layers = layers
        self.pool = pool
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start it in the background, once (later calls do nothing)."""
        if self.task is not None or self.mode == "off" or not hasattr(self.backend, "warm_up"):
            return
        self.gate.warming = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def launch_early(self) -> None:
        """With ``launch`` or ``early``: start launching Chromium now, while Python still imports (crawl4ai; with
        ``early``, called at process start, the MCP SDK too); the warm-up then takes that browser over. Its
        failure is logged, never raised."""
        if not self.launches or not hasattr(self.backend, "warm_up"):
            return
        try:
            await self.gate.launch_early()
        except Exception as exc:
            log.info("could not start the browser early (%s); the warm-up will launch it", first_line(exc))

    async def cancel(self) -> None:
        """Stop it (shutdown); what it opened is closed with the pool."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=2)

    async def _run(self) -> None:
        started = time.perf_counter()
        stages: list[str] = []

        def stage(name: str) -> None:
            stages.append(f"{name} {time.perf_counter() - started:.2f} s")

        reserved = None
        proxy: str | None = None
        options: CrawlOptions | None = None
        # crawl4ai imports in a thread while the browser comes up (launched now, or at process start with
        # "early") and the first call's context and page open: neither needs crawl4ai.
        await self.launch_early()
        importing = asyncio.ensure_future(self.backend.warm_up())  # type: ignore[attr-defined]
        filling = None
        try:
            try:
                if self.launches:
                    proxy = await self.gate.ensure_browser(self.gate.policy, warming=True, browser_only=True)
                    stage("launched")
                    request = CrawlRequest(url="http://localhost/", profile=None, session=None, arguments={})
                    layers = self.layers.layers(request)
                    options = self.layers.crawl_options(request, layers)
                    reserved = self.pool.reserve(self.layers.context_options(request, layers), self.gate.policy,
                                                 proxy)
            finally:
                if self.gate.warming is not None:
                    self.gate.warming.set()  # the browser is up (or failed): waiting calls go on
            filling = asyncio.ensure_future(self.pool.fill(*reserved)) if reserved is not None else None
            await importing
            stage("imported")
            if self.launches:
                await self.backend.start()  # crawl4ai takes the browser over (the gate skips a running browser)
                stage("crawl4ai ready")
            warm_pipeline = getattr(self.backend, "warm_pipeline", None)
            if options is not None and warm_pipeline is not None:
                try:
                    await warm_pipeline(options)  # CPU here while Chromium starts the pooled page's renderer
                    stage("processing warmed")
                except Exception as exc:
                    log.debug("warming crawl4ai's processing failed: %s", first_line(exc))
            if filling is not None:
                await filling
                stage("page open")
            if self.launches:
                self._prime_spare(proxy)
            log.info("warm-up done (%s) in %.2f s (%s)", self.mode, time.perf_counter() - started,
                     ", ".join(stages))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("warm-up failed (%s); the first call will try again", first_line(exc))
        finally:
            if not importing.done():
                importing.cancel()  # the thread finishes the import; nobody waits for it
            elif not importing.cancelled() and importing.exception() is not None:
                log.debug("importing crawl4ai failed: %s", first_line(importing.exception()))
            if filling is not None and not filling.done():
                filling.cancel()  # shutdown or a failure: the pooled page is not wanted any more

    def _prime_spare(self, proxy: str | None) -> None:
        """The spare context for a session without a profile, the most common kind (see spare.py), made after the
        first call's page so it never delays that: the first resume then finds it ready."""
        prime = getattr(self.backend, "prime_spare", None)
        if prime is not None:
            request = CrawlRequest(url=None, profile=None, session=None, arguments={})
            prime(without_headers(self.layers.context_options(request)), proxy_url=proxy)


#: After ``initialize`` is answered, how long the warm-up waits for the client's ``tools/list`` before starting
#: anyway. Clients list tools right away; started beside that, the warm-up's import (holding the interpreter lock)
#: made the answer ~50 % slower (31 vs 20 ms, quiet).
TOOLS_LIST_GRACE_S = 0.3


def after_handshake(start: Callable[[], None]) -> Callable[..., Any]:
    """MCP server middleware calling ``start`` once the client's handshake is answered: after its ``tools/list``
    (or any other request), or :data:`TOOLS_LIST_GRACE_S` after ``initialize`` for a client that lists nothing.
    The stdio server starts the app without its warm-up, since importing crawl4ai beside ``initialize`` made the
    handshake slower."""

    async def middleware(ctx: Any, call_next: Callable[[Any], Any]) -> Any:
        result = await call_next(ctx)
        # Its answer is written after this returns: start just after that (a no-op once started).
        delay = TOOLS_LIST_GRACE_S if ctx.method == "initialize" else 0.01
        asyncio.get_running_loop().call_later(delay, start)
        return result

    return middleware
