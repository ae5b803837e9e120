"""The session registry: one isolated browser context per session, serialized use, limits, closing.

Calls on one session run one at a time in arrival order (an ``asyncio.Lock`` is FIFO); calls on different
sessions run in parallel. A session that ended is remembered (closed, expired, crashed...) so a later call
can say which, instead of a bare "unknown session".

Sessions are owned: ids live in their owner's namespace (the principal id that created them), so a client
asking for another client's session gets exactly the answer for an id that never existed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from .errors import SessionError, SessionExpired
from .logs import safe_url
from .models import Session
from .principal import LOCAL_ID

if TYPE_CHECKING:
    from .plugins import Hooks

log = logging.getLogger("crawlkeeper.sessions")

#: Checked with ``fullmatch``: ``$`` alone also matches before a trailing newline (``"abc\n"``).
SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
REASONS = ("closed", "expired", "evicted", "shutdown", "crashed", "temporary", "hibernated")
_MAX_TOMBSTONES = 10_000
_CLOSE_CONTEXT_TIMEOUT_S = 3.0

_ENDED = {
    "closed": "session '{id}' was closed{detail}; call create_session to start a new one",
    "expired": "session '{id}' expired{detail}; call create_session again",
    "evicted": "session '{id}' was evicted{detail}; call create_session again",
    "shutdown": "session '{id}' ended when the server shut down; call create_session again",
    "crashed": "session '{id}' was lost because the browser crashed; create it again with create_session",
    "temporary": "session '{id}' was a one-shot session for a single crawl and has ended",
    "hibernated": "session '{id}' was hibernated; use it again to bring it back",
}


class SessionMoved(Exception):
    """The session was hibernated while a call waited for it: look it up (and restore it) again."""


class SessionRegistry:
    """Live sessions by id, plus a memory of how ended ones ended."""

    def __init__(
        self,
        hooks: Hooks,
        *,
        max_sessions: int,
        clock: Callable[[], float] = time.time,
        park: Callable[[Session], Awaitable[None]] | None = None,
    ) -> None:
        self.hooks = hooks
        self.park = park  # stops the session's page at the end of every use
        self.max_sessions = max_sessions
        self.clock = clock
        self.max_per_owner: int | None = None  # [server] max_sessions_per_client, set for the HTTP transport
        self._sessions: dict[tuple[str, str], Session] = {}
        self._reserved: set[tuple[str, str]] = set()
        self._ended: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._closing_tasks: set[asyncio.Task[None]] = set()
        #: Awaited once a session's context is closed (the app deletes or keeps its saved state there).
        self.on_closed: Callable[[Session, str], Awaitable[None]] | None = None

    # -- lookup -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    def all(self, owner: str | None = None) -> list[Session]:
        """Live sessions, oldest first: every owner's, or only ``owner``'s."""
        return [s for s in self._sessions.values() if owner is None or s.owner == owner]

    def find(self, session_id: str) -> list[Session]:
        """Every owner's live session with this id (for an admin closing someone else's session)."""
        return [s for (_, sid), s in self._sessions.items() if sid == session_id]

    def get(self, session_id: str, owner: str = LOCAL_ID) -> Session:
        """``owner``'s live session, or a :class:`SessionError` saying whether it never existed, was closed or
        expired. Another owner's session with this id is not looked at: its existence is not revealed."""
        key = (owner, session_id)
        session = self._sessions.get(key)
        if session is not None:
            return session
        if key in self._ended:
            raise SessionError(self._ended[key])
        if key in self._reserved:
            raise SessionError(f"session '{session_id}' is still being created; retry in a moment")
        raise SessionError(
            f"unknown session '{session_id}': no session with this id was created on this server (or it ended "
            "long ago); call create_session first (list_sessions shows the live ones)"
        )

    # -- creation -------------------------------------------------------------------------------

    def reserve(self, session_id: str | None, owner: str = LOCAL_ID) -> str:
        """Claim an id in ``owner``'s namespace (generated, unguessable, if None) and a slot under
        ``max_sessions`` (and ``max_per_owner``)."""
        if session_id is None:
            session_id = "s_" + secrets.token_urlsafe(12)
        elif not SESSION_ID_RE.fullmatch(session_id):
            raise SessionError(
                f"invalid session_id {session_id!r}: use 1-64 letters, digits, '_', '.', ':' or '-'"
            )
        key = (owner, session_id)
        if key in self._sessions or key in self._reserved:
            raise SessionError(
                f"session '{session_id}' already exists; use it, close it with close_session, or pick another id"
            )
        if len(self._sessions) + len(self._reserved) >= self.max_sessions:
            raise SessionError(
                f"too many sessions: the limit is max_sessions = {self.max_sessions}; close one with "
                "close_session (list_sessions shows them) or raise [sessions] max_sessions in the config"
            )
        if self.max_per_owner is not None:
            mine = sum(1 for o, _ in self._sessions if o == owner) + sum(1 for o, _ in self._reserved if o == owner)
            if mine >= self.max_per_owner:
                raise SessionError(
                    f"too many sessions for this client: the limit is {self.max_per_owner} per client "
                    "([server] max_sessions_per_client); close one with close_session (list_sessions shows yours)"
                )
        self._ended.pop(key, None)
        self._reserved.add(key)
        return session_id

    def release(self, session_id: str, owner: str = LOCAL_ID) -> None:
        self._reserved.discard((owner, session_id))

    def add(self, session: Session) -> None:
        key = (session.owner, session.id)
        self._reserved.discard(key)
        self._sessions[key] = session

    def detach(self, session: Session) -> None:
        """Take a session out of the live ones without ending it (hibernated, or its browser crashed with its
        state saved): its next use brings it back."""
        key = (session.owner, session.id)
        if self._sessions.get(key) is session:
            del self._sessions[key]
        self._ended.pop(key, None)

    def forget_ended(self, session_id: str, owner: str = LOCAL_ID) -> None:
        self._ended.pop((owner, session_id), None)

    def peek(self, session_id: str, owner: str = LOCAL_ID) -> Session | None:
        """``owner``'s live session with this id, or None (no error)."""
        return self._sessions.get((owner, session_id))

    def occupied(self) -> int:
        """Live sessions plus ids being created or restored: what ``max_sessions`` bounds."""
        return len(self._sessions) + len(self._reserved)

    def lru_idle(self) -> Session | None:
        """The least recently used session that no call is using or waiting for."""
        idle = [s for s in self._sessions.values() if not s.busy and not s.lock.locked()]
        return min(idle, key=lambda s: s.last_used_at, default=None)

    # -- use ------------------------------------------------------------------------------------

    @asynccontextmanager
    async def use(self, session: Session) -> AsyncIterator[Session]:
        """Hold the session for one call: in arrival order, after the acquire hooks agreed."""
        async with session.lock:
            if session.hibernated:
                raise SessionMoved(session.id)
            if session.ended or session.closed:
                raise SessionError(session.ended or _ENDED["closed"].format(id=session.id, detail=""))
            try:
                self.hooks.call("crawlkeeper_session_acquire", session=session)
            except SessionExpired as exc:
                self._end(session, "expired", str(exc).strip())
                self._spawn_close(session, "expired")
                raise SessionError(session.ended) from None
            session.busy += 1
            try:
                yield session
            finally:
                try:
                    if self.park is not None and session.page is not None and not session.closed:
                        await self.park(session)  # nothing the site loaded runs until the next call
                finally:
                    session.busy -= 1
                    session.last_used_at = self.clock()

    # -- closing ---------------------------------------------------------------------------------

    def _end(self, session: Session, reason: str, detail: str = "") -> None:
        """Unregister ``session`` and remember why, on the session and by id (for later lookups)."""
        if detail and not detail.startswith(("(", " ")):
            detail = f" ({detail.rstrip('.')})" if reason != "expired" else f": {detail.rstrip('.')}"
        session.ended = _ENDED[reason].format(id=session.id, detail=detail)
        key = (session.owner, session.id)
        if self._sessions.get(key) is session:
            del self._sessions[key]
        self._ended[key] = session.ended
        self._ended.move_to_end(key)
        while len(self._ended) > _MAX_TOMBSTONES:
            self._ended.popitem(last=False)

    async def close(
        self,
        session_id: str,
        reason: str = "closed",
        detail: str = "",
        *,
        session: Session | None = None,
        owner: str = LOCAL_ID,
    ) -> bool:
        """End ``owner``'s session: wait for its running call, run closing hooks, close its context.

        Pass ``session`` to close that very object only (not a newer session that reused the id; its own
        owner is used). Returns
        False if it was not live. Queued calls on it are refused with the reason. Cancelling the caller does
        not cancel the close: the context is closed and the hooks run regardless.
        """
        if reason not in REASONS:
            raise ValueError(f"unknown close reason {reason!r}")
        current = self._sessions.get((session.owner if session is not None else owner, session_id))
        if current is None or (session is not None and current is not session):
            return False
        self._end(current, reason, detail)
        await asyncio.shield(self._spawn_close(current, reason, wait=True))
        return True

    def _spawn_close(self, session: Session, reason: str, *, wait: bool = False) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._finish(session, reason, wait=wait))
        self._closing_tasks.add(task)
        task.add_done_callback(self._closing_tasks.discard)
        return task

    async def _finish(self, session: Session, reason: str, *, wait: bool) -> None:
        if wait and reason not in ("crashed", "shutdown"):
            async with session.lock:  # a call in progress finishes first
                pass
        session.closed = True
        await self.hooks.acall("crawlkeeper_session_closing", keep_going=True, session=session, reason=reason)
        try:
            await asyncio.wait_for(session.context.close(), _CLOSE_CONTEXT_TIMEOUT_S)
        except Exception as exc:  # a crashed browser, a hung context: the session is gone either way
            log.debug("closing the context of session %s failed: %s", session.id, exc)
        if self.on_closed is not None:
            try:
                await self.on_closed(session, reason)
            except Exception:
                log.exception("after closing session %s", session.id)
        log.info("session %s closed (%s)", session.id, reason)

    def crashed(self, generation: int, lost: Callable[[int, int], bool] | None = None) -> None:
        """The browser of ``generation`` died: every session on it is lost (reason ``crashed``). ``lost(session's
        generation, generation)`` says which are on it (default: this generation and older)."""
        for session in list(self._sessions.values()):
            if lost(session.generation, generation) if lost is not None else session.generation <= generation:
                self._end(session, "crashed")
                self._spawn_close(session, "crashed")

    async def close_all(self, reason: str = "shutdown") -> None:
        """Close every session concurrently; one failure never stops the others."""
        live = list(self._sessions.values())
        results = await asyncio.gather(
            *(self.close(s.id, reason, session=s) for s in live), return_exceptions=True
        )
        for session, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                log.error("closing session %s failed: %s", session.id, result)
        if self._closing_tasks:
            await asyncio.gather(*self._closing_tasks, return_exceptions=True)

    def describe(self, session: Session, cookies: list[dict[str, str]]) -> dict[str, Any]:
        """A listing entry: never a cookie value, and the URL without its query string (tokens live there)."""
        url = page_url(session)
        return {
            "session_id": session.id,
            "profile": session.profile,
            "created_at": iso(session.created_at),
            "last_used_at": iso(session.last_used_at),
            "expires_at": iso(session.expires_at),
            "url": safe_url(url) if url else None,
            "cookies": cookies,
        }


def page_url(session: Session) -> str | None:
    """The session's current URL (``about:blank`` before its page is opened): between calls its page is
    parked on ``about:blank``, and the URL is the one it was parked from."""
    if session.page is None:
        return session.parked_url or "about:blank"
    try:
        url = session.page.url
    except Exception:
        return session.parked_url
    return session.parked_url if url == "about:blank" and session.parked_url else url


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


__all__ = ["REASONS", "SessionMoved", "SessionRegistry", "iso", "page_url"]
