"""Built-in ``ttl`` plugin: sessions expire after ``idle_s`` without use or ``max_age_s`` after creation.

Expiry is enforced on use (``crawlkeeper_session_acquire`` raises ``SessionExpired``) and by a reaper task
that closes expired, idle sessions within about a second even when nobody calls. A session busy with a call
is never closed under it. Settings: ``[plugins.ttl] idle_s`` (default 900), ``max_age_s`` (default 14400);
``create_session(ttl_s=...)`` sets one session's idle TTL, capped by ``max_age_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from crawlkeeper import Config, CrawlError, Server, Session, SessionExpired, SessionRequest, hookimpl

log = logging.getLogger("crawlkeeper.plugins.ttl")

IDLE_KEY = "ttl.idle_s"


class TTLSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    idle_s: float = Field(900.0, gt=0, description="Close a session after this many seconds without use.")
    max_age_s: float = Field(14400.0, gt=0, description="Close a session this long after it was created.")
    reap_interval_s: float = Field(1.0, gt=0, le=60, description="How often the reaper looks.")


class TTLPlugin:
    """Idle and maximum-age expiry. ``clock`` is injectable so tests need no sleeps."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.settings = TTLSettings()
        self._reapers: dict[int, asyncio.Task[None]] = {}

    @hookimpl
    def crawlkeeper_configure(self, config: Config) -> None:
        self.settings = config.plugin_settings("ttl", TTLSettings)

    # -- bookkeeping ----------------------------------------------------------------------------

    def idle_s(self, session: Session) -> float:
        return float(session.metadata.get(IDLE_KEY, self.settings.idle_s))

    def expiry(self, session: Session, last_used: float) -> float:
        return min(last_used + self.idle_s(session), session.created_at + self.settings.max_age_s)

    def why_expired(self, session: Session, now: float) -> str | None:
        """None if the session may be used at ``now``, else why it expired (for the caller's error)."""
        if now - session.created_at >= self.settings.max_age_s:
            return f"after reaching the maximum age of {self.settings.max_age_s:g} s ([plugins.ttl] max_age_s)"
        idle = self.idle_s(session)
        if now - session.last_used_at >= idle:
            return f"after {idle:g} s idle"
        return None

    @hookimpl
    def crawlkeeper_session_created(self, session: Session, request: SessionRequest) -> None:
        if request.ttl_s is not None:
            if request.ttl_s <= 0:
                raise CrawlError(f"ttl_s must be positive, got {request.ttl_s:g}")
            if request.ttl_s > self.settings.max_age_s:
                raise CrawlError(
                    f"ttl_s = {request.ttl_s:g} exceeds the maximum session age of {self.settings.max_age_s:g} s "
                    "([plugins.ttl] max_age_s); pass a smaller ttl_s"
                )
            session.metadata[IDLE_KEY] = float(request.ttl_s)
            request.mark_handled("ttl_s")
        session.expires_at = self.expiry(session, session.created_at)

    @hookimpl
    def crawlkeeper_session_acquire(self, session: Session) -> None:
        now = self.clock()
        reason = self.why_expired(session, now)
        if reason:
            raise SessionExpired(reason)
        session.expires_at = self.expiry(session, now)

    # -- the reaper -------------------------------------------------------------------------------

    async def reap_once(self, server: Server) -> list[str]:
        """Close every expired session that is not in the middle of a call; return their ids."""
        now = self.clock()
        closed = []
        for session in server.sessions():
            if server.in_use(session):
                continue  # the call finishes first; expiry applies after it
            reason = self.why_expired(session, now)
            if reason and await server.close_session(session, "expired", reason):
                closed.append(session.id)
        return closed

    async def _reap_forever(self, server: Server) -> None:
        while True:
            await asyncio.sleep(self.settings.reap_interval_s)
            try:
                for session_id in await self.reap_once(server):
                    log.info("session %s expired", session_id)
            except Exception:
                log.exception("the TTL reaper failed; retrying")

    @hookimpl
    def crawlkeeper_startup(self, server: Server) -> None:
        self._reapers[id(server)] = asyncio.get_running_loop().create_task(self._reap_forever(server))

    @hookimpl
    async def crawlkeeper_shutdown(self, server: Server) -> None:
        task = self._reapers.pop(id(server), None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
