"""Saving sessions and bringing them back: when state is written, and what the end of a call reads.

The record and its serialisation are in :mod:`crawlkeeper.saved`; capturing and restoring browser state in
:mod:`crawlkeeper.capture`; the state key in :mod:`crawlkeeper.statekey`. What a saved session holds: cookies
(HttpOnly and session cookies too), localStorage and IndexedDB (Playwright's ``storage_state(indexed_db=True)``),
sessionStorage per origin, and the session's record. The payload is JSON, zlib-compressed, then sealed
(AES-256-GCM) before any store sees it.

:class:`SessionKeeper` decides when: right after ``create_session``, at most once per ``[sessions]
save_delay_s`` after calls that used a session (only when something changed: a hash of the state is compared
first, so an unchanged jar is never re-encrypted), before hibernating, and at shutdown. Closing or expiry
deletes the state; shutdown and crashes keep it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .capture import (
    _closed,
    _storage_state,
    apply,
    capture,
    read_page_storage,
    read_session_storage,
    storage_script,
    watch_origins,
    with_local_storage,
)
from .errors import SessionError
from .models import Session
from .saved import STATE_FORMAT, SavedState, decode, delete_hint, encode, json_metadata
from .statekey import load_sealer
from .store import LOCAL_NAMESPACE, LeaseHeld, Sealer, StateCorrupt, StateStore, make_key, split_key

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("crawlkeeper.state")

KEYCHECK_KEY = "_crawlkeeper/keycheck"
_KEYCHECK_TEXT = b"crawlkeeper state key check"
_TIMES_ONLY_EVERY_S = 30.0  # an unchanged jar whose times moved is rewritten at most this often


# -- the keeper -------------------------------------------------------------------------------------------


@dataclass
class _Kept:
    """What the keeper remembers about a session it saved or restored (no secrets)."""

    hash: str | None = None
    saved_at: float = 0.0
    times: tuple[float, float | None] = (0.0, None)
    session_storage: dict[str, dict[str, str]] = field(default_factory=dict)
    pending: asyncio.Task[None] | None = None
    # localStorage/IndexedDB read at the end of the last call, while the page was still on the site; nothing
    # of the site runs between calls (the page is parked), so it stays exact until the next call ends.
    origins: list[dict[str, Any]] | None = None
    # Origins the session's pages committed documents to since the last call ended, and the context watched
    # for them (a weak reference: a hibernated or crashed session's context must not be kept alive by this).
    visited: set[str] = field(default_factory=set)
    watching: weakref.ref[Any] | None = None


class SessionKeeper:
    """Saves, loads and deletes sessions in the configured store; owns the leases of this process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store: StateStore | None = None
        self.save_delay_s = config.settings.sessions.save_delay_s
        self._sealer: Sealer | None = None
        self._key_error: str | None = None
        self._checked = False
        self._kept: dict[tuple[str, str], _Kept] = {}  # by (owner, session id)
        self._leases: set[str] = set()
        self.save_failures = 0
        self.save_count = 0  # blobs written (for benchmarks and tests)

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def key(self, session_id: str, owner: str = LOCAL_NAMESPACE) -> str:
        """The store key: the owner (the client's principal id; ``local`` over stdio) namespaces the id."""
        return make_key(owner, session_id)

    # -- the key check --------------------------------------------------------------------------------

    async def _ready(self) -> Sealer:
        """The sealer, after checking once that it opens what this store already holds."""
        if self._key_error:
            raise SessionError(self._key_error)
        if self._sealer is None:
            self._sealer = await asyncio.to_thread(load_sealer, self.config)
        if not self._checked:
            assert self.store is not None
            check = await _maybe(self.store.load(KEYCHECK_KEY))
            if check is None:
                await _maybe(self.store.save(KEYCHECK_KEY, self._sealer.seal(KEYCHECK_KEY, _KEYCHECK_TEXT)))
            else:
                try:
                    self._sealer.open(KEYCHECK_KEY, check, what="the key check")
                except StateCorrupt:
                    self._key_error = (
                        f"the saved sessions ({self.store.description}) were encrypted with another key than the "
                        f"one from {self._sealer.source}; put the original key back (CRAWLKEEPER_STATE_KEY, the OS "
                        "keyring or the key file), or move the saved sessions away to start afresh. Nothing was "
                        "overwritten"
                    )
                    log.error("%s", self._key_error)
                    raise SessionError(self._key_error) from None
            self._checked = True
        return self._sealer

    # -- leases ------------------------------------------------------------------------------------------

    async def claim(self, session_id: str, owner: str = LOCAL_NAMESPACE) -> None:
        """Take this session's lease, or a clear error when another crawlkeeper process drives it."""
        assert self.store is not None
        key = self.key(session_id, owner)
        try:
            await _maybe(self.store.acquire(key))
        except LeaseHeld:
            raise SessionError(
                f"session '{session_id}' is in use by another crawlkeeper process (another MCP client has it "
                "open); use it there, close that client, or use another session id"
            ) from None
        self._leases.add(key)

    async def release(self, session_id: str, owner: str = LOCAL_NAMESPACE) -> None:
        key = self.key(session_id, owner)
        if self.store is not None and key in self._leases:
            self._leases.discard(key)
            try:
                await _maybe(self.store.release(key))
            except Exception as exc:
                log.warning("releasing the lease of session %s failed: %s", session_id, exc)

    def lost(self, session_id: str, owner: str = LOCAL_NAMESPACE) -> None:
        """Another process holds this session's lease now: it is no longer ours to release."""
        self._leases.discard(self.key(session_id, owner))

    async def release_all(self) -> None:
        for key in list(self._leases):
            owner, session_id = split_key(key)
            await self.release(session_id, owner)

    # -- reading ---------------------------------------------------------------------------------------

    async def exists(self, session_id: str, owner: str = LOCAL_NAMESPACE) -> bool:
        """Whether ``owner``'s session is saved: one look-up when the store has ``exists`` (every resume asks),
        else a scan of its listing."""
        if not self.enabled:
            return False
        assert self.store is not None
        key = self.key(session_id, owner)
        exists = getattr(self.store, "exists", None)
        if exists is not None:
            return bool(await _maybe(exists(key)))
        return key in await self.stored_keys()

    async def stored_keys(self) -> list[str]:
        assert self.store is not None
        return [k for k in await _maybe(self.store.list()) if not k.startswith("_crawlkeeper/")]

    async def stored_ids(self, owner: str = LOCAL_NAMESPACE) -> list[str]:
        """Ids of ``owner``'s saved sessions."""
        return [sid for o, sid in await self.stored_pairs() if o == owner]

    async def stored_pairs(self) -> list[tuple[str, str]]:
        """Every saved session as ``(owner, session id)``."""
        return [split_key(k) for k in await self.stored_keys()]

    async def load(self, session_id: str, owner: str = LOCAL_NAMESPACE) -> SavedState | None:
        """The saved state of ``session_id`` (None when there is none); a bad file names the session."""
        assert self.store is not None
        what = f"session '{session_id}'"
        key = self.key(session_id, owner)
        blob = await _maybe(self.store.load(key))
        if blob is None:
            return None
        sealer = await self._ready()
        try:
            state = decode(sealer.open(key, blob, what=what), what=what)
        except StateCorrupt as exc:
            raise SessionError(f"{exc}; {delete_hint(session_id)}") from None
        state.register_secrets()
        return state

    def remember(self, session: Session, state: SavedState) -> None:
        """A restored session starts with the hash of what was loaded: unchanged, it is not rewritten."""
        kept = self._kept.setdefault((session.owner, session.id), _Kept())
        kept.hash = state.content_hash()
        kept.saved_at = time.time()
        kept.times = (state.last_used_at, state.expires_at)
        kept.session_storage = dict(state.session_storage)
        # What was loaded is the storage of every origin (the restore puts it back as each is visited): the end of
        # a call then reads only the origin its page is on, unless the call took the page elsewhere too.
        kept.origins = [dict(o) for o in state.storage.get("origins") or []]
        kept.watching = None
        self._watch(session, kept)

    def was_saved(self, session: Session) -> bool:
        kept = self._kept.get((session.owner, session.id))
        return kept is not None and kept.hash is not None

    # -- writing ----------------------------------------------------------------------------------------

    async def save(self, session: Session, *, force_times: bool = False) -> bool:
        """Capture and save ``session`` if it changed. Failures are logged loudly and return False: a save
        that fails never breaks the live session, and a failed write never replaces a good file."""
        if not self.enabled or not session.durable:
            return False
        kept = self._kept.setdefault((session.owner, session.id), _Kept())
        try:
            sealer = await self._ready()
            state = await capture(session, kept.session_storage, kept.origins)
            digest = state.content_hash()
            times = (state.last_used_at, state.expires_at)
            if digest == kept.hash and (
                times == kept.times or (not force_times and time.time() - kept.saved_at < _TIMES_ONLY_EVERY_S)
            ):
                return True  # nothing changed (or only the times, written recently enough)
            key = self.key(session.id, session.owner)
            blob = sealer.seal(key, encode(state))
            assert self.store is not None
            await _maybe(self.store.save(key, blob))
        except Exception as exc:
            self.save_failures += 1
            log.error(
                "SAVING SESSION %s FAILED: %s. The session keeps working in this process, but a restart would "
                "lose the changes since its last save", session.id, _describe(exc),
            )
            return False
        kept.hash, kept.saved_at, kept.times = digest, time.time(), times
        kept.session_storage = state.session_storage
        self.save_count += 1
        return True

    async def read_session_storage(self, session: Session) -> None:
        """At the end of a call, while the page is still on the site: remember its sessionStorage."""
        if self.enabled and session.durable and not session.closed:
            kept = self._kept.setdefault((session.owner, session.id), _Kept())
            await read_session_storage(session, kept.session_storage)

    async def before_park(self, session: Session) -> None:
        """At the end of a call, while the page is still on the site: remember its sessionStorage, and its
        localStorage/IndexedDB for the next save.

        Usually one evaluation in the open page (origin, sessionStorage, localStorage, whether IndexedDB exists):
        only that origin can have changed when the call's pages committed to no other origin. Playwright's full
        ``storage_state(indexed_db=True)`` (several round trips, its IndexedDB script, a hidden page for every
        origin no page is on) is read only when the origin holds IndexedDB, the call went through other origins
        (a login redirecting through an identity provider, a popup), or nothing was read before. Read by a save
        after the page was parked, Playwright would load every origin again in a hidden page.
        """
        if not (self.enabled and session.durable and not session.closed):
            return
        kept = self._kept.setdefault((session.owner, session.id), _Kept())
        first = self._watch(session, kept)
        visited = set(kept.visited)
        kept.visited.clear()
        page = session.page
        found = await read_page_storage(page)
        if found is None:
            if page is not None and str(page.url).startswith(("http://", "https://")):
                await read_session_storage(session, kept.session_storage)  # a stand-in page: the old way
            elif not visited and not first:
                return  # the call left no site open and went nowhere: nothing can have changed
        elif found.session_storage is not None:
            if found.session_storage:
                kept.session_storage[found.origin] = found.session_storage
            else:
                kept.session_storage.pop(found.origin, None)
        if (found is not None and not first and kept.origins is not None and found.indexed_db is False
                and found.local_storage is not None and not visited - {found.origin}):
            kept.origins = with_local_storage(kept.origins, found.origin, found.local_storage)
            return
        kept.origins = None  # if the read below fails, the next save reads everything itself
        if page is None or _closed(page) or not str(page.url).startswith(("http://", "https://")):
            return  # nothing of a site is open: the save reads it
        try:
            kept.origins = (await asyncio.wait_for(_storage_state(session.context), 2))["origins"]
        except Exception as exc:  # navigating right now, a page without a document: the save reads it later
            log.debug("session %s: storage not read before parking (%s)", session.id, type(exc).__name__)

    def _watch(self, session: Session, kept: _Kept) -> bool:
        """Start gathering the origins ``session``'s pages visit (once per context). True when it starts now:
        what happened before is unknown, so the caller reads everything once."""
        context = session.context
        if kept.watching is not None and kept.watching() is context:
            return False
        kept.visited.clear()
        try:
            ref = weakref.ref(context)
        except TypeError:  # a stand-in without weak references: not watched (every call reads everything)
            return True
        kept.watching = ref if watch_origins(context, kept.visited) else None
        return True

    def touched(self, session: Session) -> None:
        """A call used ``session``: save it within ``save_delay_s`` (at most one save per window)."""
        if not self.enabled or not session.durable:
            return
        kept = self._kept.setdefault((session.owner, session.id), _Kept())
        if kept.pending is None or kept.pending.done():
            kept.pending = asyncio.get_running_loop().create_task(self._save_later(session))

    async def _save_later(self, session: Session) -> None:
        await asyncio.sleep(self.save_delay_s)
        if not session.closed and not session.hibernated:
            await self.save(session)

    async def delete(self, session_id: str, owner: str = LOCAL_NAMESPACE) -> None:
        """Forget a session for good (closed or expired)."""
        self.forget(session_id, owner)
        if self.store is None:
            return
        try:
            await _maybe(self.store.delete(self.key(session_id, owner)))
        except Exception as exc:
            log.error("deleting the saved state of session %s failed: %s", session_id, _describe(exc))

    def forget(self, session_id: str, owner: str = LOCAL_NAMESPACE) -> None:
        kept = self._kept.pop((owner, session_id), None)
        if kept is not None and kept.pending is not None and not kept.pending.done():
            kept.pending.cancel()

    async def flush(self) -> None:
        """Cancel pending delayed saves (shutdown saves every session itself)."""
        tasks = [k.pending for k in self._kept.values() if k.pending is not None and not k.pending.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        await self.release_all()
        closer = getattr(self.store, "close", None)
        if closer is not None:
            with contextlib.suppress(Exception):
                await _maybe(closer())


async def _maybe(value: Any) -> Any:
    """Store methods may be ``async def`` or plain."""
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


__all__ = [  # the record and capture live in saved.py and capture.py; importers of this module keep working
    "STATE_FORMAT", "SavedState", "SessionKeeper", "apply", "capture", "decode", "delete_hint", "encode",
    "json_metadata", "load_sealer", "read_session_storage", "storage_script",
]
