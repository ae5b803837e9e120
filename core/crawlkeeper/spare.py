"""One spare browser context, made in advance, so a session is resumed (or created) without waiting ~65-250 ms
for Chromium to make a context.

A spare is a context exactly as :meth:`ChromiumBackend.new_context` would make it for the same arguments
(viewport, user agent, locale, time zone, the egress proxy and its credentials...): no page, no cookie, no
storage, never used. It is handed to exactly one caller, which then owns it as if it had just been created;
another is made in the background shortly after. A caller whose arguments differ from the spare's gets a new
context as before (and the spare follows the latest arguments). The spare is dropped when its browser dies and
closed when the browser is closed. It is a context, not a session: it counts against no session limit. Its
cost is one empty context in the browser process (no renderer: that comes with the first page).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("crawlkeeper.browser")

#: How long after a spare is taken its replacement starts: the taker is still putting state into its context,
#: and should not wait behind a second context being made in the same browser process.
REFILL_DELAY_S = 0.1


def spare_key(kwargs: dict[str, Any]) -> str:
    """Equal keys mean the contexts would be made with exactly the same arguments."""
    return json.dumps(kwargs, sort_keys=True, default=str)


class SpareContext:
    """At most one unused context for ``make(kwargs)``, of the browser generation it was made in."""

    def __init__(self, make: Callable[[dict[str, Any]], Awaitable[Any]], *, enabled: bool = True,
                 delay_s: float = REFILL_DELAY_S) -> None:
        self._make = make
        self.enabled = enabled
        self.delay_s = delay_s
        self._key: str | None = None
        self._generation = -1
        self._task: asyncio.Task[Any] | None = None
        self._asked: set[asyncio.Task[Any]] = set()  # tasks past their delay (cancelling them would leak)
        self.taken = 0  # spares handed out (for tests and benchmarks)
        self.missed = 0  # calls that wanted a context and got none from here

    async def take(self, kwargs: dict[str, Any], generation: int) -> Any | None:
        """The spare context if it was made with ``kwargs`` in browser ``generation``, else None. Either way a spare for
        ``kwargs`` is made again in the background."""
        if not self.enabled:
            return None
        key = spare_key(kwargs)
        task = self._task
        # made, or being made right now (then waiting is never slower than starting another)
        ready = task is not None and (task.done() or self._making_task(task))
        matches = task is not None and self._key == key and self._generation == generation
        self._task = None
        context = None
        if task is not None and matches and ready:
            try:
                context = await asyncio.shield(task)
            except asyncio.CancelledError:
                task.add_done_callback(_close_result)  # our caller gave up: nobody else may get this one
                raise
            except Exception as exc:
                log.debug("the spare browser context failed: %s", exc)
        elif task is not None:
            self._drop(task)  # of other arguments, another browser, or not started: not worth waiting for
        self._refill(kwargs, key, generation)
        if context is None:
            self.missed += 1
        else:
            self.taken += 1
        return context

    def prime(self, kwargs: dict[str, Any], generation: int) -> None:
        """Make a spare for ``kwargs`` now, unless one for them is there or on its way."""
        if not self.enabled:
            return
        key = spare_key(kwargs)
        if self._task is not None and self._key == key and self._generation == generation:
            return
        if self._task is not None:
            self._drop(self._task)
        self._refill(kwargs, key, generation, delay_s=0.0)

    def _refill(self, kwargs: dict[str, Any], key: str, generation: int, delay_s: float | None = None) -> None:
        current = self._task
        if current is not None:  # another taker started one while this one waited for the spare it got
            if self._key == key and self._generation == generation:
                return
            self._drop(current)  # replaced here, never left running unreferenced (it would leak its context)
        self._key, self._generation = key, generation
        delay = self.delay_s if delay_s is None else delay_s
        self._task = asyncio.get_running_loop().create_task(self._make_later(kwargs, delay))
        self._task.add_done_callback(_quiet)

    async def _make_later(self, kwargs: dict[str, Any], delay_s: float) -> Any:
        await asyncio.sleep(delay_s)
        task = asyncio.current_task()
        assert task is not None
        # Once Chromium is asked, the context will exist: cancelling now would leak it, so it is closed instead.
        self._asked.add(task)
        task.add_done_callback(self._asked.discard)
        return await self._make(kwargs)

    def _drop(self, task: asyncio.Task[Any]) -> None:
        if task.done():
            _close_result(task)
            return
        if not self._making_task(task):
            task.cancel()  # still in its delay: nothing was asked of the browser yet
        task.add_done_callback(_close_result)  # a context being made is closed when it lands

    def _making_task(self, task: asyncio.Task[Any]) -> bool:
        return task in self._asked

    def discard(self) -> None:
        """The browser died (or is being replaced): its spare went with it."""
        task, self._task = self._task, None
        if task is not None:
            self._drop(task)

    async def close(self) -> None:
        """Close the spare (before the browser closes: a remote browser lives on and would keep it)."""
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done() and not self._making_task(task):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(task), 3)
        if task.done() and not task.cancelled() and task.exception() is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task.result().close(), 3)
        elif not task.done():
            task.add_done_callback(_close_result)


def _quiet(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("making a spare browser context failed: %s", task.exception())


def _close_result(task: asyncio.Task[Any]) -> None:
    """Close the context a finished task made (nobody will use it)."""
    if task.cancelled() or task.exception() is not None:
        return
    context = task.result()

    async def close() -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(context.close(), 3)

    with contextlib.suppress(RuntimeError):  # no running loop: the browser is gone with it
        closing = asyncio.get_running_loop().create_task(close())
        _CLOSING.add(closing)
        closing.add_done_callback(_CLOSING.discard)


_CLOSING: set[asyncio.Task[None]] = set()

__all__ = ["REFILL_DELAY_S", "SpareContext", "spare_key"]
