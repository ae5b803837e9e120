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
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .models import Session
from .saved import SavedState, json_metadata

log = logging.getLogger("crawlkeeper.state")

_SS_MARKER = "__crawlkeeper_restored__"
_CAPTURE_TIMEOUT_S = 5.0

_SESSION_STORAGE_JS = "() => [location.origin, JSON.stringify(Object.assign({}, sessionStorage))]"

# Everything the end of a call needs from the page, in one round trip: its origin, its sessionStorage and
# localStorage (without the restore marker), and whether the origin holds IndexedDB databases (only Playwright's
# storage_state can read those). A storage that cannot be read (an opaque origin) comes back null.
_PAGE_STORAGE_JS = """async () => {
  const dump = (name) => { try { const s = window[name], o = {};
    for (let i = 0; i < s.length; i++) { const k = s.key(i); if (k !== "__MARKER__") o[k] = s.getItem(k); }
    return JSON.stringify(o); } catch (e) { return null; } };
  let idb = null;
  try { idb = (await indexedDB.databases()).length > 0; } catch (e) {}
  return [location.origin, dump("sessionStorage"), dump("localStorage"), idb];
}""".replace("__MARKER__", _SS_MARKER)


@dataclass
class PageStorage:
    """What :func:`read_page_storage` found on the page's origin (None: could not be read)."""

    origin: str
    session_storage: dict[str, str] | None
    local_storage: dict[str, str] | None
    indexed_db: bool | None


async def read_page_storage(page: Any) -> PageStorage | None:
    """The storage of the origin ``page`` is on, in one evaluation; None on about:blank, a closed page, a page in
    the middle of a navigation, or an answer that is not what the script returns (a stand-in page)."""
    if page is None or _closed(page) or not str(page.url).startswith(("http://", "https://")):
        return None
    try:
        got = await asyncio.wait_for(page.evaluate(_PAGE_STORAGE_JS), 2)
    except Exception as exc:
        log.debug("page storage not read (%s)", type(exc).__name__)
        return None
    if not (isinstance(got, list | tuple) and len(got) == 4 and isinstance(got[0], str) and got[0] != "null"):
        return None

    def items(raw: Any) -> dict[str, str] | None:
        return {str(k): str(v) for k, v in json.loads(raw).items()} if isinstance(raw, str) else None

    try:
        return PageStorage(got[0], items(got[1]), items(got[2]), got[3] if isinstance(got[3], bool) else None)
    except (ValueError, AttributeError):
        return None


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL as ``location.origin`` spells it (default ports dropped)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    try:
        port = parts.port
    except ValueError:
        return None
    default = 80 if parts.scheme == "http" else 443
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def watch_origins(context: Any, into: set[str]) -> bool:
    """Add to ``into`` the origin of every document any frame of any page of ``context`` commits to from now on
    (redirect chains through other sites, OAuth logins, popups). Playwright reports frame navigations to the
    client anyway: listening costs no round trip. False when ``context`` cannot be watched (a stand-in)."""
    on = getattr(context, "on", None)
    if on is None:
        return False

    def navigated(frame: Any) -> None:
        origin = origin_of(str(getattr(frame, "url", "")))
        if origin is not None:
            into.add(origin)

    def watch_page(page: Any) -> None:
        page.on("framenavigated", navigated)

    on("page", watch_page)
    for page in list(getattr(context, "pages", None) or []):
        watch_page(page)
    return True


def with_local_storage(origins: list[dict[str, Any]], origin: str, items: dict[str, str]) -> list[dict[str, Any]]:
    """``origins`` (Playwright's storage-state list) with ``origin``'s localStorage replaced by ``items`` and no
    IndexedDB (the page found none there); an origin left with nothing is dropped. Order is kept, so an unchanged
    storage hashes the same."""
    entry = {"origin": origin, "localStorage": [{"name": k, "value": v} for k, v in items.items()]}
    out: list[dict[str, Any]] = []
    found = False
    for current in origins:
        if current.get("origin") == origin:
            found = True
            if items:
                out.append(entry)
        else:
            out.append(current)
    if not found and items:
        out.append(entry)
    return out



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


__all__ = [
    "PageStorage", "apply", "capture", "origin_of", "read_page_storage", "read_session_storage", "storage_script",
    "watch_origins", "with_local_storage",
]
