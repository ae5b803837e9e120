"""The session-less context pool: a crawl without a session gets a browser context of its own (so concurrent
calls never see each other's cookies), wiped before it is used again and recycled after many uses."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..browser import BrowserBackend
from ..egress import EgressPolicy
from ..errors import CrawlError, PageCrashed, PageTimeout, PageTooLarge, first_line
from ..options import ContextOptions, CrawlOptions
from .contexts import close_quietly, install_headers, without_headers
from .gate import EgressGate
from .page_limits import PageHandler

log = logging.getLogger("crawlkeeper.app")

T = TypeVar("T")
_MAX_POOLED_CONTEXTS = 4
_IDLE_SLOTS_PER_ENTRY = 2  # idle contexts kept per entry when calls come one or two at a time
_MAX_IDLE_SLOTS = 16  # whatever [limits] max_concurrent_crawls says: each idle context holds a renderer (~65 MB)
_IDLE_SHRINK_S = 30.0  # idle contexts kept for a burst of parallel calls are closed after this long unused
_PAGE_REUSES = 25  # crawls per pooled context before it is replaced (bounds renderer memory growth)
_WIPE_WAIT_S = 2.0  # a call waits this long for a context being wiped before it creates another


@dataclass
class _Slot:
    """One session-less browser identity: a context and its page, used by one crawl at a time."""

    context: Any
    page: Any = None
    uses: int = 0  # crawls it served


@dataclass
class _PoolEntry:
    """Session-less contexts with equal options. Each crawl holds a context of its own (so concurrent calls
    never see each other's cookies), and a context is wiped before it is used again."""

    key: str
    generation: int
    options: ContextOptions
    proxy: str | None
    users: int = 0
    holds_secrets: bool = False  # a credential header from the configuration (js_code policy)
    idle: list[_Slot] = field(default_factory=list)
    wiping: int = 0  # slots being wiped after their call answered
    peak: int = 0  # the most crawls that held a context of this entry at once (since it last shrank)
    last_used: float = 0.0  # loop time a call last took a context of this entry
    shrink: asyncio.TimerHandle | None = None  # closes the idle contexts beyond two once unused for a while
    returned: asyncio.Event = field(default_factory=asyncio.Event)  # set when a wiped slot becomes idle


class ContextPool:
    """Session-less contexts by options and policy, least recently used entries closed beyond the pool's size."""

    def __init__(self, backend: BrowserBackend, gate: EgressGate, pages: PageHandler, *,
                 max_parallel: int = _IDLE_SLOTS_PER_ENTRY) -> None:
        self.backend = backend
        self.gate = gate
        self.pages = pages
        # Idle contexts an entry may keep: as many as crawls ran in parallel on it (crawl_many at concurrency 8
        # reuses 8 contexts instead of creating 6 new ones per round), at most the crawls allowed at once.
        self.max_idle = max(_IDLE_SLOTS_PER_ENTRY, min(max_parallel, _MAX_IDLE_SLOTS))
        self._pool: OrderedDict[str, _PoolEntry] = OrderedDict()
        self._pool_lock = asyncio.Lock()
        self._closing: set[asyncio.Future[Any]] = set()

    async def crawl(
        self, url: str, options: CrawlOptions, context_options: ContextOptions, policy: EgressPolicy,
        work: Callable[[Any, CrawlOptions], Awaitable[T]], used: list[Any] | None = None,
    ) -> T:
        """Run ``work`` in a pooled page for these options; the context is wiped (or closed) afterwards.
        ``used`` (if given) receives the context, so a caller can tell whether its endpoint died."""
        entry, slot = await self._pooled_slot(context_options, policy)
        if used is not None:
            used.append(slot.context)
        reusable = abandoned = handed_off = False
        try:
            if slot.page is None:
                try:
                    slot.page = await self.backend.new_page(slot.context)
                except Exception as exc:  # the context died (browser crash): forget it, let the caller retry
                    self._pool.pop(entry.key, None)
                    raise CrawlError(f"could not open a page ({first_line(exc)}); retry the call") from None
            try:
                result = await self.pages.crawl_or_abandon(slot.page, url, options, work)
            except (PageTimeout, PageTooLarge, PageCrashed):
                abandoned = True  # the page was abandoned
                raise
            except CrawlError:
                handed_off = self._recycle_later(entry, slot)
                raise
            handed_off = self._recycle_later(entry, slot)
            return result
        finally:
            if not handed_off:
                await self._release(entry, slot, reusable=reusable, abandoned=abandoned)

    def _recycle_later(self, entry: _PoolEntry, slot: _Slot) -> bool:
        """Wipe the slot after the call answered: parking the page and clearing the context took a quarter of a
        screenshot's time on the caller's clock. The slot is idle (reusable) only once it is wiped; a call that
        finds none waits for it rather than opening a new context."""
        entry.wiping += 1
        task = asyncio.ensure_future(self._recycle(entry, slot))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        return True

    async def _recycle(self, entry: _PoolEntry, slot: _Slot) -> None:
        reusable = False
        try:
            reusable = await self._wipe(slot)
        finally:
            entry.wiping -= 1
            await self._release(entry, slot, reusable=reusable, abandoned=False)

    async def _release(self, entry: _PoolEntry, slot: _Slot, *, reusable: bool, abandoned: bool) -> None:
        """The end of a slot's call: back to the idle list if it was wiped, else closed."""
        try:
            entry.users -= 1
            # A renderer that served many pages keeps their leftovers: recycle the context now and then.
            slot.uses += 1
            if abandoned:
                self.pages.background(close_quietly(slot.context))  # do not wait for a busy renderer
            elif (reusable and slot.uses < _PAGE_REUSES and len(entry.idle) < self._idle_cap(entry)
                    and self._pool.get(entry.key) is entry and entry.generation == self.backend.generation):
                entry.idle.append(slot)
                if len(entry.idle) > _IDLE_SLOTS_PER_ENTRY and entry.shrink is None:
                    entry.shrink = asyncio.get_running_loop().call_later(_IDLE_SHRINK_S, self._shrink, entry)
            else:
                await close_quietly(slot.context)
        finally:
            entry.returned.set()  # wake calls waiting for a wiped slot (or to learn there is none)
        await self._trim_pool()

    def _idle_cap(self, entry: _PoolEntry) -> int:
        return max(_IDLE_SLOTS_PER_ENTRY, min(entry.peak, self.max_idle))

    def _shrink(self, entry: _PoolEntry) -> None:
        """A burst of parallel calls is over: close the idle contexts kept for it beyond the usual two."""
        loop = asyncio.get_running_loop()
        unused_s = loop.time() - entry.last_used
        if entry.users or unused_s < _IDLE_SHRINK_S:  # still in use: look again later
            entry.shrink = loop.call_later(max(0.05, _IDLE_SHRINK_S - unused_s), self._shrink, entry)
            return
        entry.shrink = None
        entry.peak = 0
        while len(entry.idle) > _IDLE_SLOTS_PER_ENTRY:
            self.pages.background(close_quietly(entry.idle.pop(0).context))

    async def _wipe(self, slot: _Slot) -> bool:
        """Stop a session-less page and clear its context (cookies, storage) so the next call starts empty.
        False if that failed: the context is then closed rather than reused."""
        park = getattr(self.backend, "park_page", None)
        reset = getattr(self.backend, "reset_context", None)
        try:
            if park is not None:
                await park(slot.page)
            if reset is not None:
                await reset(slot.context, slot.page)
            else:
                await slot.context.clear_cookies()
        except Exception as exc:
            log.debug("could not reset a session-less context: %s", exc)
            return False
        return True

    async def _pooled_slot(self, options: ContextOptions, policy: EgressPolicy) -> tuple[_PoolEntry, _Slot]:
        """A session-less context with these options for one crawl (never a session's context, never shared
        with a concurrent crawl). The caller holds the entry (``users``) until its crawl ends, so eviction
        never closes it under a crawl."""
        key = options.signature() + repr(policy)
        async with self._pool_lock:
            proxy = await self.gate.ensure_browser(policy)
            entry = self._pool.get(key)
            if entry is None or entry.generation != self.backend.generation:
                entry = self._pool[key] = _PoolEntry(key, self.backend.generation, options, proxy)
            self._pool.move_to_end(key)
            entry.users += 1
            entry.peak = max(entry.peak, entry.users)
            entry.last_used = asyncio.get_running_loop().time()
            slot = entry.idle.pop() if entry.idle else None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _WIPE_WAIT_S
        while slot is None and entry.wiping and loop.time() < deadline:
            # A slot of an earlier call is being wiped (tens of ms): cheaper than a new context (~250 ms).
            entry.returned.clear()
            try:
                await asyncio.wait_for(entry.returned.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
            except BaseException:
                entry.users -= 1
                raise
            slot = entry.idle.pop() if entry.idle else None
        try:
            if slot is None:
                context = await self.backend.new_context(without_headers(options), proxy_url=entry.proxy)
                try:
                    headers = await install_headers(context, options, policy, None, None,
                                                    owner="a session-less crawl")
                except BaseException:
                    await close_quietly(context)
                    raise
                entry.holds_secrets = entry.holds_secrets or headers.holds_secrets
                slot = _Slot(context)
        except BaseException:
            entry.users -= 1
            raise
        await self._trim_pool()
        return entry, slot

    def reserve(self, options: ContextOptions, policy: EgressPolicy,
                proxy: str | None) -> tuple[_PoolEntry, EgressPolicy] | None:
        """Announce a context the warm-up opens before the first call (see :meth:`fill`): a call for these
        options arriving meanwhile waits for it, as for a slot being wiped, instead of opening a second one.
        None if the entry already has a context (idle or on its way)."""
        key = options.signature() + repr(policy)
        entry = self._pool.get(key)
        if entry is None or entry.generation != self.backend.generation:
            entry = self._pool[key] = _PoolEntry(key, self.backend.generation, options, proxy)
        if entry.idle or entry.wiping:
            return None
        entry.users += 1  # held: the pool's trimming must not drop it while its context opens
        entry.wiping += 1
        return entry, policy

    async def fill(self, entry: _PoolEntry, policy: EgressPolicy) -> None:
        """Open the reserved context and its page (~0.3 s: a renderer process starts) and make it idle, ready
        for the first session-less call. A failure only costs that call the same work."""
        slot: _Slot | None = None
        try:
            context = await self.backend.new_context(without_headers(entry.options), proxy_url=entry.proxy)
            try:
                headers = await install_headers(context, entry.options, policy, None, None,
                                                owner="a session-less crawl")
                entry.holds_secrets = entry.holds_secrets or headers.holds_secrets
                opened = _Slot(context)
                opened.page = await self.backend.new_page(context)
                slot = opened
            except BaseException:
                await close_quietly(context)
                raise
        except Exception as exc:
            log.info("could not open a pooled page ahead of the first call: %s", first_line(exc))
        finally:
            entry.wiping -= 1
            entry.users -= 1
            if slot is not None:
                if self._pool.get(entry.key) is entry and entry.generation == self.backend.generation:
                    entry.idle.append(slot)
                else:
                    self.pages.background(close_quietly(slot.context))
            entry.returned.set()

    async def _trim_pool(self) -> None:
        """Close the least recently used idle entries beyond the pool's size."""
        idle = [e for e in self._pool.values() if e.users == 0]
        while len(self._pool) > _MAX_POOLED_CONTEXTS and idle:
            entry = idle.pop(0)
            self._pool.pop(entry.key, None)
            for slot in entry.idle:
                await close_quietly(slot.context)
            entry.idle.clear()

    def forget(self) -> None:
        """The browser crashed: every pooled context died with it (on a fleet, only those of the endpoint that
        died: the others are closed in the background rather than leaked on their remote browsers)."""
        for entry in self._pool.values():
            for slot in entry.idle:
                task = asyncio.ensure_future(close_quietly(slot.context))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        self._pool.clear()

    async def close(self) -> None:
        """Close every idle pooled context (matters with cdp_url: the remote browser lives on)."""
        for entry in self._pool.values():
            if entry.shrink is not None:
                entry.shrink.cancel()
        if self._closing:  # contexts still being wiped after their call: let them settle first
            await asyncio.wait(list(self._closing), timeout=3)
        for entry in list(self._pool.values()):
            for slot in entry.idle:
                await close_quietly(slot.context)
        self._pool.clear()
