"""Durable sessions: restoring a saved session on its next use, hibernating idle ones, deleting expired saved
state, and what a browser crash leaves of sessions that were saved."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from ..browser import BrowserBackend, generation_of, is_current, lost_with, new_session_context
from ..config import Config
from ..errors import CrawlkeeperError, SessionError
from ..fairness import FairLimiter
from ..headers import SessionHeaders
from ..logs import safe_url
from ..models import CrawlRequest, Profile, Session
from ..plugins import Hooks
from ..principal import LOCAL_ID
from ..sessions import SESSION_ID_RE, SessionMoved, SessionRegistry, iso
from ..state import SavedState, SessionKeeper, apply, delete_hint
from .contexts import close_quietly, install_headers, watched_page, without_headers
from .gate import EgressGate
from .layers import OptionLayers
from .logins import Logins

log = logging.getLogger("crawlkeeper.app")


class Durability:
    """Brings saved sessions back and puts idle ones to sleep; owns the per-session restore locks."""

    def __init__(
        self, config: Config, keeper: SessionKeeper, sessions: SessionRegistry, hooks: Hooks,
        backend: BrowserBackend, gate: EgressGate, layers: OptionLayers, limiter: FairLimiter, logins: Logins,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.keeper = keeper
        self.sessions = sessions
        self.hooks = hooks
        self.backend = backend
        self.gate = gate
        self.layers = layers
        self.limiter = limiter
        self.logins = logins
        self.clock = clock
        self._restoring: dict[tuple[str, str], asyncio.Lock] = {}  # by (owner, session id)
        self._crash_notes: dict[tuple[str, str], str] = {}
        # Leases being given back after a crash, by (owner, session id): a restore waits for its session's, or
        # its own claim could race the release (and a shared store would answer "in use by another process").
        self._releasing: dict[tuple[str, str], asyncio.Task[None]] = {}

    @asynccontextmanager
    async def using_session(self, session_id: str, owner: str = LOCAL_ID) -> AsyncIterator[Session]:
        """Hold ``owner``'s session for one call (restoring it from saved state first if it is not active)."""
        for _attempt in range(5):
            session = await self.resume(session_id, owner)
            async with contextlib.AsyncExitStack() as stack:
                try:
                    await stack.enter_async_context(self.sessions.use(session))
                except SessionMoved:
                    continue  # hibernated while this call waited for it: bring it back
                await self._still_ours(session)
                try:
                    yield session
                finally:
                    # Before the page is parked on about:blank, where the site's sessionStorage is out of reach.
                    await self.keeper.before_park(session)
                    self.keeper.touched(session)
                return
        raise SessionError(f"session '{session_id}' kept being hibernated while this call waited; retry the call")

    async def _still_ours(self, session: Session) -> None:
        """Before a call drives an active session: this process must still hold its lease. A lease can lapse
        (the process stalled past it, the store was unreachable) and another replica may then have taken the
        session over: two replicas must never drive one session, so this one lets go of it and says so. Taking a
        lease this process holds is a no-op (no round trip); a lapsed one nobody took is simply taken again."""
        if not (self.keeper.enabled and session.durable):
            return
        try:
            await self.keeper.claim(session.id, session.owner)
        except SessionError:
            self.sessions.detach(session)
            session.hibernated = session.closed = True  # calls queued behind this one restore (and are refused)
            self.keeper.forget(session.id, session.owner)
            self.keeper.lost(session.id, session.owner)
            log.error("session %s was taken over by another crawlkeeper process (this one's lease lapsed); "
                      "closing its context here", session.id)
            await self.hooks.acall("crawlkeeper_session_closing", keep_going=True, session=session,
                                   reason="hibernated")
            await close_quietly(session.context)
            raise SessionError(
                f"session '{session.id}' is in use by another crawlkeeper process: it took the session over when "
                "this one's lease lapsed; use it there (behind a load balancer: retry the call)"
            ) from None

    async def resume(self, session_id: str, owner: str = LOCAL_ID) -> Session:
        """The active session, or the saved one restored into a new context; else the precise error."""
        try:
            return self.sessions.get(session_id, owner)
        except SessionError:
            if not self.keeper.enabled or not SESSION_ID_RE.fullmatch(session_id):
                raise
        key = (owner, session_id)
        lock = self._restoring.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                with contextlib.suppress(SessionError):
                    return self.sessions.get(session_id, owner)  # restored by a call that held the lock first
                restored = await self._restore(session_id, owner)
                if restored is None:
                    return self.sessions.get(session_id, owner)  # raises: never created, closed, expired...
                return restored
        finally:
            if not lock.locked() and self._restoring.get(key) is lock:
                del self._restoring[key]

    async def _restore(self, sid: str, owner: str) -> Session | None:
        if not await self.keeper.exists(sid, owner):
            return None
        releasing = self._releasing.get((owner, sid))
        if releasing is not None:
            await asyncio.wait([releasing])
        await self.keeper.claim(sid, owner)
        reserved = False
        context: Any = None
        try:
            state = await self.keeper.load(sid, owner)
            if state is None:  # deleted by another process a moment ago
                await self.keeper.release(sid, owner)
                return None
            prof = self._saved_profile(sid, state)
            await self.make_room()
            self.sessions.reserve(sid, owner)
            reserved = True
            policy = self.gate.policy_for(prof)
            options = self.layers.context_options(CrawlRequest(url=None, profile=prof, session=None, arguments={}))
            try:
                chosen = self.logins.choose(state.auth, prof)
            except CrawlkeeperError:
                chosen = None  # the session works without it; a re-login would report the problem
            params = chosen[1] if chosen else None
            async with self.limiter.slot(owner):
                proxy = await self.gate.ensure_browser(policy)
                context = await new_session_context(self.backend, without_headers(options), proxy_url=proxy)
                generation = generation_of(self.backend, context)
                headers = await install_headers(context, options, policy, prof, params,
                                                owner=f"session '{sid}'" + (f" ({prof.label})" if prof else ""))
                await _restore_headers(headers, state)
                await apply(context, state)
            session = Session(
                id=sid, profile=state.profile, context=context, page=None, created_at=state.created_at,
                last_used_at=state.last_used_at, expires_at=state.expires_at, metadata=dict(state.metadata),
                auth=state.auth, generation=generation, headers=headers, holds_secrets=state.holds_secrets,
                owner=owner, page_factory=functools.partial(watched_page, self.backend, context, headers),
            )
            session.parked_url = state.url  # what listings show as its URL until its page is used
            session.note = self._crash_notes.pop((owner, sid), None) or (
                f"restored from the state saved at {iso(state.saved_at)}"
            )
            await self.hooks.acall("crawlkeeper_session_restored", session=session)
        except BaseException as exc:
            if reserved:
                self.sessions.release(sid, owner)
            if context is not None:
                await close_quietly(context)
            await self.keeper.release(sid, owner)
            if isinstance(exc, CrawlkeeperError) and not isinstance(exc, SessionError):
                raise SessionError(f"session '{sid}' could not be restored: {exc}") from None
            raise
        self.keeper.remember(session, state)
        self.sessions.forget_ended(sid, owner)
        self.sessions.add(session)
        log.info("session %s restored from saved state", sid)
        return session

    def _saved_profile(self, sid: str, state: SavedState) -> Profile | None:
        if state.profile is None:
            return None
        try:
            return self.layers.profile(state.profile)
        except CrawlkeeperError as exc:
            raise SessionError(
                f"session '{sid}' was saved with profile '{state.profile}', which cannot be used now ({exc}); "
                f"put the profile back, or {delete_hint(sid)}"
            ) from None

    async def make_room(self) -> None:
        """At ``max_sessions`` active sessions, hibernate the least recently used idle one (if it can be saved)."""
        while self.keeper.enabled and self.sessions.occupied() >= self.sessions.max_sessions:
            victim = self.sessions.lru_idle()
            if victim is None or not await self.hibernate(victim):
                return  # reserve() then refuses with the limit's message

    async def hibernate(self, session: Session) -> bool:
        """Save an idle session and close its context; its next use restores it. False if it could not be."""
        if not self.keeper.enabled or not session.durable:
            return False
        async with session.lock:
            if (session.closed or session.ended or session.busy
                    or self.sessions.peek(session.id, session.owner) is not session):
                return False
            if (not is_current(self.backend, session.generation)
                    or not await self.keeper.save(session, force_times=True)):
                return False
            self.sessions.detach(session)
            session.hibernated = session.closed = True
        await self.hooks.acall("crawlkeeper_session_closing", keep_going=True, session=session, reason="hibernated")
        await close_quietly(session.context)
        self.keeper.forget(session.id, session.owner)
        await self.keeper.release(session.id, session.owner)
        log.info("session %s hibernated", session.id)
        return True

    async def session_closed(self, session: Session, reason: str) -> None:
        """After a session's context closed: closing or expiry deletes its saved state, other reasons keep it."""
        if not self.keeper.enabled or not session.durable:
            return
        if reason in ("closed", "expired", "evicted"):
            await self.keeper.delete(session.id, session.owner)
        else:
            self.keeper.forget(session.id, session.owner)
        await self.keeper.release(session.id, session.owner)

    async def delete_saved(self, session_id: str, owner: str) -> bool:
        """Delete ``owner``'s saved (inactive) session; False if there is none."""
        if not (self.keeper.enabled and SESSION_ID_RE.fullmatch(session_id)
                and await self.keeper.exists(session_id, owner)):
            return False
        key = (owner, session_id)
        async with self._restoring.setdefault(key, asyncio.Lock()):
            await self.keeper.claim(session_id, owner)  # refused while another process drives it
            try:
                await self.keeper.delete(session_id, owner)
            finally:
                await self.keeper.release(session_id, owner)
        self._restoring.pop(key, None)
        return True

    def crashed(self, generation: int) -> None:
        """The browser of ``generation`` crashed: a session whose state is saved is restored on its next use
        into the relaunched browser, with a note saying so."""
        crash_note = getattr(self.backend, "crash_note", None)  # a fleet names the endpoint that went down
        for session in self.sessions.all():
            if lost_with(self.backend, session.generation, generation) and self.keeper.was_saved(session):
                self.sessions.detach(session)
                session.hibernated = session.closed = True
                session.note = crash_note() if crash_note is not None else (
                    "the browser crashed; the session was restored from its last saved state "
                    "(changes made in the last seconds before the crash may be missing)")
                key = (session.owner, session.id)
                self._crash_notes[key] = session.note
                task = asyncio.get_running_loop().create_task(self.keeper.release(session.id, session.owner))
                self._releasing[key] = task
                task.add_done_callback(
                    lambda t, k=key: self._releasing.pop(k, None) if self._releasing.get(k) is t else None)

    async def keep_house(self) -> None:
        """Hibernate idle sessions; now and then delete saved sessions whose expiry passed."""
        settings = self.config.settings.sessions
        after = settings.hibernate_after_s
        interval = max(0.2, min(after / 4, 5.0)) if after else 5.0
        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                if after:
                    now = self.clock()
                    for session in self.sessions.all():
                        if not session.busy and not session.lock.locked() and now - session.last_used_at >= after:
                            await self.hibernate(session)
                if time.monotonic() - last_sweep >= 60:
                    last_sweep = time.monotonic()
                    await self.sweep_expired()
            except Exception:
                log.exception("session housekeeping failed; retrying")

    async def sweep_expired(self) -> list[str]:
        """Delete saved, inactive sessions whose ``expires_at`` has passed (expiry deletes the state)."""
        deleted: list[str] = []
        if not self.keeper.enabled:
            return deleted
        now = self.clock()
        for owner, sid in await self.keeper.stored_pairs():
            if self.sessions.peek(sid, owner) is not None or (owner, sid) in self._restoring:
                continue
            try:
                state = await self.keeper.load(sid, owner)
            except SessionError:
                continue
            if state is None or state.expires_at is None or state.expires_at > now:
                continue
            try:
                await self.keeper.claim(sid, owner)
            except SessionError:
                continue  # in use by another process, which decides
            try:
                await self.keeper.delete(sid, owner)
                deleted.append(sid)
            finally:
                await self.keeper.release(sid, owner)
        return deleted


async def _restore_headers(headers: SessionHeaders, state: SavedState) -> None:
    """Put back the headers plugins added (an auth method's API key...); the configured ones were just installed
    from the current config, which wins over a saved copy."""
    for h in state.headers:
        if str(h.get("source", "")).startswith("[browser] extra_headers"):
            continue
        await headers.add({h["name"]: h["value"]}, domains=h.get("domains"), secret=bool(h.get("credential")),
                          source=str(h.get("source") or "a plugin"))


def describe_saved(state: SavedState) -> dict[str, Any]:
    """A listing entry for a saved session that is not active: never a cookie value, no query strings."""
    return {
        "session_id": state.session_id,
        "profile": state.profile,
        "created_at": iso(state.created_at),
        "last_used_at": iso(state.last_used_at),
        "expires_at": iso(state.expires_at),
        "url": safe_url(state.url) if state.url else None,
        "cookies": [{"name": c["name"], "domain": c["domain"]} for c in state.cookie_summary()],
        "state": "hibernated",
    }
