"""A fleet of remote browsers (``[browser] endpoints``): placement, health, and the endpoint of every context.

Each endpoint is driven by its own :class:`~crawlkeeper.browser.ChromiumBackend` (one connection, one
crawl4ai crawler). The fleet looks like one backend to the core: a new session goes to the healthy endpoint with
the fewest sessions, a session-less crawl's context to the one with the fewest open contexts, and every later
call on that context or its pages goes to the endpoint that holds it. ``max_sessions`` bounds an endpoint's
sessions only: a session-less crawl's pooled context does not count against it (those are few, short-lived and
recycled), so a full endpoint still takes its share of them. An endpoint that fails or disconnects is marked
down and probed again with back-off; it rejoins placement as soon as a connection succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from .browser import BrowserCandidate, ChromiumBackend, PageLoad, PageResult, import_crawl4ai
from .endpoints import Endpoint
from .errors import BrowserUnavailable, first_line
from .options import ContextOptions, CrawlOptions

log = logging.getLogger("crawlkeeper.fleet")
T = TypeVar("T")

#: A session's generation in a fleet: its endpoint's connection count times this, plus the endpoint's index.
_SLOTS = 1000

#: Back-off between probes of a dead endpoint: doubles from the first to the last, then stays.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0


class Member:
    """One endpoint of the fleet: its backend, its open contexts, its health."""

    def __init__(self, index: int, backend: ChromiumBackend) -> None:
        self.index = index
        self.backend = backend
        self.contexts: set[Any] = set()
        self.sessions: set[Any] = set()  # the contexts of sessions among them (what max_sessions bounds)
        self.pending_sessions = 0
        self.lost = 0  # the generation whose loss was last handled
        self.placed = 0  # contexts ever placed here (what spreading is checked by)
        self.pending = 0  # contexts being made (placement awaits: count them before they exist)
        self.down_since: float | None = None
        self.retry_at = 0.0
        self.backoff = RETRY_FIRST_S
        self.error = ""

    @property
    def endpoint(self) -> Endpoint:
        assert self.backend.endpoint is not None
        return self.backend.endpoint

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def full(self) -> bool:
        """No room for another session (session-less contexts are not counted)."""
        limit = self.endpoint.max_sessions
        return limit is not None and len(self.sessions) + self.pending_sessions >= limit

    @property
    def load(self) -> int:
        return len(self.contexts) + self.pending

    def mark_down(self, error: str, now: float) -> None:
        if self.down_since is None:
            self.down_since = now
            self.backoff = RETRY_FIRST_S
        else:
            self.backoff = min(self.backoff * 2, RETRY_MAX_S)
        self.retry_at = now + self.backoff
        self.error = error
        self.contexts.clear()
        self.sessions.clear()

    def mark_up(self) -> None:
        if self.down_since is not None:
            log.info("browser endpoint %s is back", self.name)
        self.down_since, self.error, self.backoff = None, "", RETRY_FIRST_S


class FleetBackend:
    """Several remote browsers behind one :class:`~crawlkeeper.browser.BrowserBackend`."""

    needs_proxy = True

    def __init__(
        self, endpoints: list[Endpoint], *, proxy_url: str | None = None, cache_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic, spare_context: bool = True,
    ) -> None:
        if not endpoints or len(endpoints) >= _SLOTS:
            raise ValueError(f"a fleet needs 1 to {_SLOTS - 1} endpoints")
        # Each endpoint keeps its own spare context (never one endpoint's spare for another's session).
        self.members = [Member(i, ChromiumBackend(endpoint=e, proxy_url=proxy_url, cache_dir=cache_dir,
                                                  spare_context=spare_context))
                        for i, e in enumerate(endpoints)]
        self.clock = clock
        self.cache_dir = cache_dir
        self._proxy_url = proxy_url
        # Bumped whenever an endpoint is lost: what the core stamps on sessions to tell stale ones.
        self.generation = 1
        self._crash_callbacks: list[Callable[[int], None]] = []
        self._owner: weakref.WeakKeyDictionary[Any, Member] = weakref.WeakKeyDictionary()
        self._closing: set[asyncio.Future[None]] = set()
        self.lost_endpoint: str | None = None  # the endpoint whose loss the crash callbacks are told about
        for member in self.members:
            member.backend.on_crash(lambda _g, m=member: self._lost(m))
        self.candidate = BrowserCandidate(self.description, "[browser] endpoints")

    # -- what the core sees ---------------------------------------------------------------------------

    @property
    def description(self) -> str:
        return f"{len(self.members)} browser endpoints ({', '.join(m.name for m in self.members)})"

    @property
    def proxy_url(self) -> str | None:
        return self._proxy_url

    @proxy_url.setter
    def proxy_url(self, value: str | None) -> None:
        self._proxy_url = value
        for member in self.members:
            member.backend.proxy_url = value

    @property
    def alive(self) -> bool:
        return any(m.backend.alive for m in self.members)

    def on_crash(self, callback: Callable[[int], None]) -> None:
        self._crash_callbacks.append(callback)

    def generation_of(self, context: Any) -> int:
        member = self._owner[context]
        return member.backend.generation * _SLOTS + member.index

    def is_current(self, generation: int) -> bool:
        member = self.members[generation % _SLOTS]
        return member.backend.generation == generation // _SLOTS and member.backend.alive

    @staticmethod
    def lost_with(generation: int, lost: int) -> bool:
        return generation == lost

    def context_lost(self, context: Any) -> bool:
        """Whether ``context``'s endpoint died (a crawl that failed in it is worth one retry elsewhere)."""
        member = self._owner.get(context)
        return member is None or not member.backend.alive

    async def confirm_lost(self, context: Any, error: BaseException, *, wait_s: float = 2.0) -> bool:
        """Whether a call that failed with ``error`` in ``context`` failed because its endpoint died. A killed
        endpoint's disconnection can arrive a moment after the call saw its context fail, so the endpoint is
        asked for a round trip; one that does not answer is marked lost here and then."""
        member = self._owner.get(context)
        if member is None:
            return False
        if not member.backend.alive:
            return True
        if await member.backend.ping(wait_s):
            return False  # the endpoint is fine: the failure was the page's
        self._force_lost(member)
        return True

    def _force_lost(self, member: Member) -> None:
        """``member`` did not answer although its connection looks open: treat it as disconnected now."""
        if not member.backend.alive:
            return  # its disconnection was (or is being) handled
        self._lost(member)
        # Drop the half-dead connection, or the endpoint would look connected and never be probed again.
        task = asyncio.ensure_future(member.backend.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def crash_note(self) -> str:
        return (f"its browser endpoint {self.lost_endpoint} went down; the session was restored on another endpoint "
                "from its last saved state (changes made in the last seconds before may be missing)")

    def endpoint_of(self, context: Any) -> str | None:
        """The (masked) endpoint holding ``context``; None if it is not (or no longer) the fleet's."""
        member = self._owner.get(context)
        return member.name if member is not None else None

    def active_sessions(self) -> dict[str, int]:
        """Open contexts per endpoint (sessions and session-less crawls)."""
        return {m.name: len(m.contexts) for m in self.members}

    def session_counts(self) -> dict[str, int]:
        """Open session contexts per endpoint (what ``max_sessions`` bounds)."""
        return {m.name: len(m.sessions) for m in self.members}

    def placements(self) -> dict[str, int]:
        """Contexts ever placed per endpoint."""
        return {m.name: m.placed for m in self.members}

    def prime_spare(self, options: ContextOptions, *, proxy_url: str | None = None) -> None:
        """Make each connected endpoint's spare context for these options now."""
        for member in self.members:
            prime = getattr(member.backend, "prime_spare", None)
            if prime is not None:
                prime(options, proxy_url=proxy_url)

    async def warm_up(self) -> None:
        await import_crawl4ai(self.cache_dir)

    async def warm_pipeline(self, options: CrawlOptions) -> None:
        """Warm crawl4ai's processing (see :meth:`PageWork.warm_pipeline`) through any connected endpoint."""
        for member in self.members:
            if member.backend.alive:
                await member.backend.warm_pipeline(options)
                return

    async def start(self) -> None:
        """Connect to every endpoint that is not known to be down (in parallel); fail only if none answers."""
        now = self.clock()
        pending = [m for m in self.members if not m.backend.alive and (m.down_since is None or now >= m.retry_at)]
        if pending:
            await asyncio.gather(*(self._connect(m) for m in pending))
        if not self.alive:
            raise BrowserUnavailable(self._all_down())

    async def _connect(self, member: Member) -> bool:
        try:
            await member.backend.start()
        except Exception as exc:
            if member.down_since is None:
                log.error("browser endpoint %s is down: %s", member.name, first_line(exc))
            member.mark_down(first_line(exc), self.clock())
            return False
        member.mark_up()
        return True

    def _all_down(self) -> str:
        details = "; ".join(f"{m.name} ({m.error or 'not connected'})" for m in self.members)
        return (f"no browser endpoint is reachable: {details}. Start them (or fix [browser] endpoints); "
                "crawlkeeper retries each one with back-off")

    def _lost(self, member: Member) -> None:
        """An endpoint's browser disconnected (its process died, the network dropped), or stopped answering."""
        lost = member.backend.generation * _SLOTS + member.index
        if member.lost == lost:
            return  # already handled (found dead by a failed call before its disconnection arrived)
        member.lost = lost
        spare = getattr(member.backend, "spare", None)
        if spare is not None:
            spare.discard()  # its spare context went down with it
        member.mark_down("it disconnected", self.clock())
        log.error("browser endpoint %s disconnected; its sessions are restored elsewhere at their next use",
                  member.name)
        self.generation += 1  # session-less contexts pooled before are dropped
        self.lost_endpoint = member.name
        for callback in self._crash_callbacks:
            try:
                callback(lost)
            except Exception:
                log.exception("crash callback failed")

    async def _place(self, session: bool) -> Member:
        """The endpoint for a new context: for a session, the healthy one with the fewest sessions among those
        with room for one more; for a session-less crawl, the one with the fewest open contexts."""
        now = self.clock()
        retry = [m for m in self.members if not m.backend.alive and m.down_since is not None and now >= m.retry_at]
        if retry:
            await asyncio.gather(*(self._connect(m) for m in retry))
        candidates = [m for m in self.members if m.down_since is None]
        if not candidates:
            raise BrowserUnavailable(self._all_down())
        room = [m for m in candidates if not m.full] if session else candidates
        if not room:
            limits = ", ".join(f"{m.name}: {m.endpoint.max_sessions}" for m in candidates)
            raise BrowserUnavailable(
                f"every browser endpoint is full of sessions (max_sessions {limits}); close sessions, or add "
                "endpoints or raise max_sessions in [browser] endpoints"
            )
        if session:  # sessions spread by sessions (an idle pooled context must not push them elsewhere)
            return min(room, key=lambda m: (len(m.sessions) + m.pending_sessions, m.load, m.index))
        return min(room, key=lambda m: (m.load, m.index))

    async def new_session_context(self, options: ContextOptions, *, proxy_url: str | None = None) -> Any:
        """A context for a session: counted against its endpoint's ``max_sessions``."""
        return await self.new_context(options, proxy_url=proxy_url, session=True)

    async def new_context(self, options: ContextOptions, *, proxy_url: str | None = None, session: bool = False) -> Any:
        tried: list[str] = []
        for _ in range(len(self.members)):
            member = await self._place(session)
            member.pending += 1
            member.pending_sessions += session
            try:
                if not member.backend.alive and not await self._connect(member):
                    tried.append(member.name)
                    continue
                context = await member.backend.new_context(options, proxy_url=proxy_url)
            except Exception as exc:
                if not isinstance(exc, BrowserUnavailable) and await member.backend.ping():
                    raise  # the endpoint is fine: not a reason to go elsewhere
                if member.backend.alive:
                    self._force_lost(member)
                else:
                    member.mark_down(first_line(exc), self.clock())
                tried.append(member.name)
                continue
            finally:
                member.pending -= 1
                member.pending_sessions -= session
            member.contexts.add(context)
            if session:
                member.sessions.add(context)
            member.placed += 1
            log.debug("new context on %s (%d open)", member.name, len(member.contexts))
            self._owner[context] = member
            context.on("close", lambda c, m=member: (m.contexts.discard(c), m.sessions.discard(c)))
            return context
        raise BrowserUnavailable(self._all_down())

    def _member(self, obj: Any) -> ChromiumBackend:
        context = getattr(obj, "context", obj)  # a page, or a context
        member = self._owner.get(context)
        if member is None:
            raise BrowserUnavailable("this browser context belongs to no endpoint (it was lost); retry the call")
        return member.backend

    async def _call(self, obj: Any, work: Awaitable[T]) -> T:
        """Run one call on ``obj``'s endpoint; a failure because that endpoint died becomes a clear
        :class:`BrowserUnavailable` (naming every endpoint if none is left)."""
        context = getattr(obj, "context", obj)
        try:
            return await work
        except Exception as exc:
            member = self._owner.get(context)
            if member is None or not await self.confirm_lost(context, exc):
                raise
            if not any(m.down_since is None for m in self.members):
                raise BrowserUnavailable(self._all_down()) from None
            raise BrowserUnavailable(f"the browser endpoint {member.name} went down during the call; retry it "
                                     "(sessions are restored on another endpoint)") from None

    async def new_page(self, context: Any) -> Any:
        return await self._call(context, self._member(context).new_page(context))

    async def crawl(self, page: Any, url: str, options: CrawlOptions) -> PageResult:
        return await self._call(page, self._member(page).crawl(page, url, options))

    async def load(self, page: Any, url: str, options: CrawlOptions) -> PageLoad:
        return await self._call(page, self._member(page).load(page, url, options))

    async def park_page(self, page: Any) -> None:
        await self._member(page).park_page(page)

    async def reset_context(self, context: Any, page: Any) -> None:
        await self._member(context).reset_context(context, page)

    def allow_pages(self, context: Any) -> Any:
        return self._member(context).allow_pages(context)

    async def abandon_page(self, page: Any) -> None:
        await self._member(page).abandon_page(page)

    def crash_message(self, url: str) -> str:
        return self.members[0].backend.crash_message(url)

    async def close(self) -> None:
        await asyncio.gather(*(m.backend.close() for m in self.members), return_exceptions=True)
        for member in self.members:
            member.contexts.clear()
            member.sessions.clear()
