"""``crawlkeeper sessions`` (list, delete, export, import) and ``crawlkeeper login``: saved sessions from a terminal.

They work on the same store as the servers, through the same leases: a session a running server drives is
shown as ``active`` and cannot be deleted or replaced from here until that server lets it go.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .app import App
from .errors import CrawlkeeperError, SessionError
from .logs import safe_url
from .sessions import SESSION_ID_RE, iso
from .state import SavedState, encode
from .store import LeaseHeld

_LOGIN_POLL_S = 1.0


def _store_of(app: App) -> None:
    if not app.keeper.enabled:
        raise CrawlkeeperError(
            "no state store: the statefile plugin is disabled and no plugin provides a store, so sessions are not "
            "saved (enable statefile, or install a store plugin)"
        )


def _check_id(session_id: str) -> None:
    if not SESSION_ID_RE.fullmatch(session_id):
        raise SessionError(f"invalid session id {session_id!r}: use 1-64 letters, digits, '_', '.', ':' or '-'")


async def _in_use(app: App, session_id: str, owner: str = "local") -> bool:
    """Whether a running crawlkeeper process holds the session (probing its lease)."""
    assert app.keeper.store is not None
    key = app.keeper.key(session_id, owner)
    try:
        await _maybe(app.keeper.store.acquire(key))
    except LeaseHeld:
        return True
    await _maybe(app.keeper.store.release(key))
    return False


async def list_saved(app: App) -> list[dict[str, Any]]:
    """Every saved session: record, state and cookie names/domains/expiry (never values); ``owner`` is the client
    that owns it (``local`` for sessions made over stdio; HTTP clients have their own)."""
    _store_of(app)
    rows = []
    for owner, sid in await app.keeper.stored_pairs():
        row: dict[str, Any] = {"session_id": sid, "owner": owner,
                               "state": "active" if await _in_use(app, sid, owner) else "hibernated"}
        try:
            state = await app.keeper.load(sid, owner)
        except SessionError as exc:
            rows.append(row | {"error": str(exc)})
            continue
        if state is None:
            continue
        row |= {
            "profile": state.profile, "auth": state.auth, "created_at": iso(state.created_at),
            "last_used_at": iso(state.last_used_at), "expires_at": iso(state.expires_at),
            "url": safe_url(state.url) if state.url else None,
            "cookies": [c | {"expires": iso(c["expires"])} for c in state.cookie_summary()],
        }
        rows.append(row)
    return rows


async def delete_saved(app: App, session_id: str) -> None:
    _store_of(app)
    _check_id(session_id)
    if not await app.keeper.exists(session_id):
        raise SessionError(f"no saved session '{session_id}' (`crawlkeeper sessions` lists them)")
    await _claim_here(app, session_id)
    try:
        await app.keeper.delete(session_id)
    finally:
        await app.keeper.release(session_id)


async def _claim_here(app: App, session_id: str) -> None:
    try:
        await app.keeper.claim(session_id)
    except SessionError:
        raise SessionError(
            f"session '{session_id}' is in use by a running crawlkeeper server; close it there (close_session) "
            "or stop that server first"
        ) from None


async def export_saved(app: App, session_id: str) -> dict[str, Any]:
    """The session's Playwright storage state (cookies with values, origins): a secret."""
    _store_of(app)
    _check_id(session_id)
    state = await app.keeper.load(session_id)
    if state is None:
        raise SessionError(f"no saved session '{session_id}' (`crawlkeeper sessions` lists them)")
    return {"cookies": state.storage.get("cookies") or [], "origins": state.storage.get("origins") or []}


def write_secret_file(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to a new 0600 file (an existing file is replaced, and made 0600 first)."""
    path = path.expanduser()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
        fh.write("\n")


def read_storage_state(path: Path) -> dict[str, Any]:
    """A Playwright storage-state JSON file (``{"cookies": [...], "origins": [...]}``), checked."""
    try:
        data = json.loads(path.expanduser().read_text(encoding="utf-8"))
    except OSError as exc:
        raise CrawlkeeperError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise CrawlkeeperError(f"{path} is not JSON ({exc}); give a Playwright storage-state file") from None
    if not isinstance(data, dict) or not isinstance(data.get("cookies", []), list) or not isinstance(
            data.get("origins", []), list):
        raise CrawlkeeperError(f"{path} is not a Playwright storage state: expected {{\"cookies\": [...], "
                               "\"origins\": [...]}")
    for i, cookie in enumerate(data.get("cookies", [])):
        if not isinstance(cookie, dict) or not cookie.get("name") or "value" not in cookie or not (
                cookie.get("domain") or cookie.get("url")):
            raise CrawlkeeperError(f"{path}: cookie #{i + 1} needs name, value and domain (or url)")
        cookie.setdefault("path", "/")
    return {"cookies": data.get("cookies", []), "origins": data.get("origins", [])}


async def import_saved(app: App, session_id: str, storage: dict[str, Any], profile: str | None = None) -> None:
    """Save a new session from a storage state; refused when the id is taken or the store is full."""
    _store_of(app)
    _check_id(session_id)
    if profile is not None:
        app.profile(profile)  # an unknown or broken profile is an error now, not at first use
    try:
        await app.opener.claim_new(session_id)
    except SessionError as exc:
        if "in use by another" in str(exc):
            raise SessionError(f"session '{session_id}' is in use by a running crawlkeeper server") from None
        if "already exists" in str(exc):
            raise SessionError(
                f"session '{session_id}' already exists; delete it first (`crawlkeeper sessions delete "
                f"{session_id}`) or import under another id"
            ) from None
        raise
    try:
        now = time.time()
        state = SavedState(session_id=session_id, profile=profile, auth=None, created_at=now, last_used_at=now,
                           expires_at=None, url=None, storage=storage, saved_at=now)
        sealer = await app.keeper._ready()
        key = app.keeper.key(session_id)
        assert app.keeper.store is not None
        await _maybe(app.keeper.store.save(key, sealer.seal(key, encode(state))))
    finally:
        await app.keeper.release(session_id)


# -- crawlkeeper login --------------------------------------------------------------------------------


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


async def login(app: App, session_id: str, url: str, profile: str | None, *, wait_for_person: Any) -> dict[str, Any]:
    """Open ``url`` in a headed browser in a new saved session; save it while the person logs in, and once more
    when they press Enter (``wait_for_person`` returns) or close the window."""
    _store_of(app)
    _check_id(session_id)
    await app.startup()
    try:
        created = await app.create_session(session_id=session_id, url=url, profile=profile)
        session = app.sessions.get(session_id)
        page = await session.ensure_page()
        if page.url == "about:blank":  # every call ends with the page parked; the person needs it on the site
            await page.goto(session.parked_url or url, wait_until="domcontentloaded")
        done = asyncio.ensure_future(wait_for_person())
        page_closed, context_closed = asyncio.Event(), asyncio.Event()
        if session.page is not None:
            session.page.on("close", lambda _p: page_closed.set())
        session.context.on("close", lambda _c: context_closed.set())

        def usable() -> bool:
            return app.backend.alive and not context_closed.is_set()

        try:
            while not done.done() and not page_closed.is_set() and usable():
                await asyncio.wait({done}, timeout=_LOGIN_POLL_S)
                if usable():
                    await app.keeper.save(session)  # the window may be closed any moment: keep up
        finally:
            done.cancel()
        if usable():
            session.last_used_at = time.time()
            await app.keeper.save(session, force_times=True)
        names = sorted({c["name"] for c in (await app.keeper.load(session_id) or _empty(session_id)).cookie_summary()})
        return created | {"cookie_names": names}
    finally:
        await app.shutdown()


def _empty(session_id: str) -> SavedState:
    return SavedState(session_id=session_id, profile=None, auth=None, created_at=0, last_used_at=0, expires_at=None,
                      url=None)


async def _maybe(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value
