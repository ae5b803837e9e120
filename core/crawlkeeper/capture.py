"""Capturing a live session's browser state and putting it back into a fresh context.

Cookies, localStorage and IndexedDB come from Playwright's ``storage_state(indexed_db=True)``; sessionStorage
(which Playwright has no API for) is read with ``page.evaluate`` at the end of each call, while the page is still
on the site, and put back by an init script that only runs on its own origin. localStorage/IndexedDB are read
then too (:meth:`crawlkeeper.state.SessionKeeper.before_park`): read from a parked page, Playwright would load
every origin again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from .models import Session
from .saved import SavedState, json_metadata

log = logging.getLogger("crawlkeeper.state")

_SS_MARKER = "__crawlkeeper_restored__"
_CAPTURE_TIMEOUT_S = 5.0

_SESSION_STORAGE_JS = "() => [location.origin, JSON.stringify(Object.assign({}, sessionStorage))]"


async def capture(session: Session, previous: dict[str, dict[str, str]] | None = None,
                  origins: list[dict[str, Any]] | None = None) -> SavedState:
    """Snapshot a live session (cookies, localStorage, IndexedDB, sessionStorage of its page's origin).

    ``origins``: the session's localStorage/IndexedDB as read at the end of its last call (see
    :meth:`SessionKeeper.before_park`); then only the cookies are read now, which needs no page.
    """
    from .sessions import page_url

    if origins is not None:
        cookies = await asyncio.wait_for(session.context.cookies(), _CAPTURE_TIMEOUT_S)
        storage = {"cookies": list(cookies), "origins": origins}
    else:
        storage = await asyncio.wait_for(_storage_state(session.context), _CAPTURE_TIMEOUT_S)
    session_storage = dict(previous or {})
    await read_session_storage(session, session_storage)
    url = page_url(session)
    snapshot = getattr(session.headers, "snapshot", None)
    return SavedState(
        session_id=session.id, profile=session.profile, auth=session.auth, created_at=session.created_at,
        last_used_at=session.last_used_at, expires_at=session.expires_at,
        url=url if url and url != "about:blank" else None, metadata=json_metadata(session),
        storage=storage, session_storage=session_storage, saved_at=time.time(),
        headers=snapshot() if snapshot is not None else [], holds_secrets=session.holds_secrets,
    )


async def read_session_storage(session: Session, into: dict[str, dict[str, str]]) -> None:
    """Read the sessionStorage of the origin the session's page is on into ``into`` (nothing on about:blank,
    a parked page, or a page in the middle of a navigation)."""
    page = session.page
    if page is None or _closed(page):
        return
    try:
        if not str(page.url).startswith(("http://", "https://")):
            return
        got = await asyncio.wait_for(page.evaluate(_SESSION_STORAGE_JS), 2)
        if isinstance(got, list | tuple) and len(got) == 2 and isinstance(got[0], str) and got[0] != "null":
            items = {k: v for k, v in json.loads(got[1]).items() if k != _SS_MARKER}
            if items:
                into[got[0]] = items
            else:
                into.pop(got[0], None)
    except Exception as exc:  # navigating right now, a page without a document: keep what we had
        log.debug("session %s: sessionStorage not read (%s)", session.id, type(exc).__name__)


async def _storage_state(context: Any) -> dict[str, Any]:
    # Cheap while a page of the context is on each origin it visited (Playwright reads it in place); for an
    # origin no page is on (a parked session) Playwright opens a hidden page and loads the origin: about as
    # costly as a crawl. Hence SessionKeeper.before_park.
    try:
        state = await context.storage_state(indexed_db=True)
    except TypeError:  # a stand-in without IndexedDB support
        state = await context.storage_state()
    origins = []
    for origin in state.get("origins") or []:
        origin = dict(origin)
        origin["localStorage"] = [i for i in origin.get("localStorage") or [] if i.get("name") != _SS_MARKER]
        if origin["localStorage"] or origin.get("indexedDB"):
            origins.append(origin)
    return {"cookies": list(state.get("cookies") or []), "origins": origins}


def _closed(page: Any) -> bool:
    try:
        return bool(page.is_closed())
    except Exception:
        return True


def storage_script(kind: str, origin: str, items: dict[str, str]) -> str:
    """An init script that puts ``items`` back into ``kind`` (sessionStorage or localStorage), only on ``origin``
    and only once (a marker keeps later navigations from overwriting what the site changed since)."""
    return (
        "(() => { try {"
        f" if (location.origin !== {json.dumps(origin)}) return;"
        f" const store = window.{kind};"
        f" if (store.getItem({json.dumps(_SS_MARKER)})) return;"
        f" const items = {json.dumps(items)};"
        " for (const [k, v] of Object.entries(items)) store.setItem(k, v);"
        f" store.setItem({json.dumps(_SS_MARKER)}, '1');"
        " } catch (e) {} })();"
    )


async def apply(context: Any, state: SavedState) -> None:
    """Put a saved state into a fresh context (before its first page opens).

    Cookies go in with ``add_cookies`` and localStorage/sessionStorage with origin-scoped init scripts: a few
    milliseconds. Playwright's ``set_storage_state`` takes 1-2 s (it visits every origin), so it is used only
    for origins that hold IndexedDB, which nothing else can restore."""
    cookies = list(state.storage.get("cookies") or [])
    origins = list(state.storage.get("origins") or [])
    with_idb = [o for o in origins if o.get("indexedDB")]
    if with_idb:
        await context.set_storage_state({"cookies": cookies, "origins": with_idb})
    elif cookies:
        await context.add_cookies(cookies)
    for origin in origins:
        if origin.get("localStorage") and not origin.get("indexedDB"):
            items = {i["name"]: i["value"] for i in origin["localStorage"]}
            await context.add_init_script(storage_script("localStorage", origin["origin"], items))
    for origin_name, items in state.session_storage.items():
        await context.add_init_script(storage_script("sessionStorage", origin_name, items))


__all__ = ["apply", "capture", "read_session_storage", "storage_script"]
