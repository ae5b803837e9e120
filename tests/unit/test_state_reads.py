"""What the end of a call reads from the page for the next save (``SessionKeeper.before_park``): one evaluation on
the page's origin when that is the only origin the call reached, and Playwright's full ``storage_state`` only
when the origin holds IndexedDB, the call went through another origin (a login through an identity provider, a
popup), or nothing was read before. Stand-ins for Playwright's page and context; the same reads against real
Chromium are in tests/integration/test_durable_real.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from crawlkeeper.capture import origin_of, with_local_storage
from crawlkeeper.models import Session
from crawlkeeper.saved import SavedState
from crawlkeeper.state import SessionKeeper

A = "https://app.example"
IDP = "https://idp.example"


class Frame:
    def __init__(self, url: str) -> None:
        self.url = url


class Page:
    """A page whose navigations fire ``framenavigated`` and whose evaluation answers like the storage script."""

    def __init__(self) -> None:
        self.url = "about:blank"
        self.handlers: dict[str, list[Callable[..., Any]]] = {}
        self.local: dict[str, dict[str, str]] = {}
        self.idb: set[str] = set()
        self.evaluations = 0

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        self.handlers.setdefault(event, []).append(handler)

    def is_closed(self) -> bool:
        return False

    def goto(self, url: str) -> None:
        self.url = url
        for handler in self.handlers.get("framenavigated", []):
            handler(Frame(url))

    async def evaluate(self, _script: str) -> Any:
        self.evaluations += 1
        origin = origin_of(self.url)
        return [origin, "{}", json.dumps(self.local.get(origin or "", {})), origin in self.idb]


class Context:
    def __init__(self) -> None:
        self.pages: list[Page] = []
        self.on_page: list[Callable[..., Any]] = []
        self.full_reads = 0

    def on(self, event: str, handler: Callable[..., Any]) -> None:
        assert event == "page"
        self.on_page.append(handler)

    def new_page(self) -> Page:
        page = Page()
        self.pages.append(page)
        for handler in self.on_page:
            handler(page)
        return page

    async def storage_state(self, **_: Any) -> dict[str, Any]:
        self.full_reads += 1
        local = self.pages[0].local if self.pages else {}
        return {"cookies": [], "origins": [
            {"origin": o, "localStorage": [{"name": k, "value": v} for k, v in items.items()]}
            for o, items in local.items()
        ]}


def keeper() -> SessionKeeper:
    kept = SessionKeeper(SimpleNamespace(settings=SimpleNamespace(sessions=SimpleNamespace(save_delay_s=1.0))))  # type: ignore[arg-type]
    kept.store = object()  # type: ignore[assignment]  # enabled; before_park never touches the store
    return kept


def session_on(context: Context) -> Session:
    return Session(id="s", profile=None, context=context, page=None)


@pytest.mark.anyio
async def test_a_call_that_stays_on_one_origin_reads_it_in_one_evaluation() -> None:
    k, context = keeper(), Context()
    session = session_on(context)
    session.page = page = context.new_page()
    page.goto(f"{A}/login")
    await k.before_park(session)  # the first read of a session is full: what came before is unknown
    assert context.full_reads == 1
    for value in ("1", "2"):
        page.goto(f"{A}/")
        page.local[A] = {"token": value}
        await k.before_park(session)
    assert context.full_reads == 1 and page.evaluations == 3
    assert k._kept[("local", "s")].origins == [{"origin": A, "localStorage": [{"name": "token", "value": "2"}]}]
    page.local[A] = {}
    page.goto(f"{A}/logout")
    await k.before_park(session)
    assert k._kept[("local", "s")].origins == [] and context.full_reads == 1


@pytest.mark.anyio
async def test_a_call_through_another_origin_or_with_indexeddb_reads_everything() -> None:
    k, context = keeper(), Context()
    session = session_on(context)
    session.page = page = context.new_page()
    page.goto(f"{A}/")
    await k.before_park(session)
    assert context.full_reads == 1
    page.goto(f"{IDP}/authorize")  # the identity provider keeps its own token, then sends the page back
    page.local[IDP] = {"idp": "t"}
    page.goto(f"{A}/callback")
    await k.before_park(session)
    assert context.full_reads == 2
    assert {o["origin"] for o in k._kept[("local", "s")].origins or []} == {IDP}
    page.goto(f"{A}/")
    await k.before_park(session)
    assert context.full_reads == 2, "the other origin was read; this call stayed on the app"
    page.idb.add(A)
    await k.before_park(session)
    assert context.full_reads == 3, "IndexedDB only Playwright's storage_state reads"


@pytest.mark.anyio
async def test_a_call_that_left_no_site_open_and_went_nowhere_reads_nothing() -> None:
    k, context = keeper(), Context()
    session = session_on(context)
    session.page = page = context.new_page()
    page.goto(f"{A}/")
    page.local[A] = {"a": "1"}
    await k.before_park(session)
    before = k._kept[("local", "s")].origins
    page.url = "about:blank"  # e.g. the call's page was parked already (a failed load)
    await k.before_park(session)
    assert page.evaluations == 1 and context.full_reads == 1
    assert k._kept[("local", "s")].origins == before


@pytest.mark.anyio
async def test_a_restored_session_starts_from_what_was_saved_and_reads_only_its_origin() -> None:
    k, context = keeper(), Context()
    session = session_on(context)
    saved = SavedState(session_id="s", profile=None, auth=None, created_at=1.0, last_used_at=2.0, expires_at=None,
                       url=None, storage={"cookies": [], "origins": [
                           {"origin": IDP, "localStorage": [{"name": "idp", "value": "t"}]}]})
    k.remember(session, saved)  # before the restored session's page exists: it is watched when it opens
    session.page = page = context.new_page()
    page.goto(f"{A}/")
    page.local[A] = {"a": "1"}
    await k.before_park(session)
    assert context.full_reads == 0
    assert k._kept[("local", "s")].origins == [
        {"origin": IDP, "localStorage": [{"name": "idp", "value": "t"}]},
        {"origin": A, "localStorage": [{"name": "a", "value": "1"}]},
    ]


def test_origins_are_spelled_as_location_origin_is() -> None:
    assert origin_of("https://Example.com:443/x?y") == "https://example.com"
    assert origin_of("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert origin_of("http://[::1]:80/") == "http://[::1]"
    assert origin_of("about:blank") is None and origin_of("data:text/html,x") is None


def test_replacing_one_origins_local_storage_keeps_the_others_and_their_order() -> None:
    origins = [{"origin": IDP, "localStorage": [], "indexedDB": [{"name": "db"}]},
               {"origin": A, "localStorage": [{"name": "a", "value": "1"}]}]
    assert with_local_storage(origins, A, {"a": "2"})[1] == {"origin": A, "localStorage": [{"name": "a", "value": "2"}]}
    assert with_local_storage(origins, A, {}) == origins[:1]
    assert with_local_storage(origins, "https://new.example", {"n": "1"})[2]["origin"] == "https://new.example"
