"""Replicas sharing one store: a replica whose lease lapsed and was taken over lets go of the session (it never
drives it alongside the new holder); a lapsed lease nobody took is taken again without the caller noticing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crawlkeeper import hookimpl
from crawlkeeper.app import App
from crawlkeeper.plugins import create_plugin_manager, register
from crawlkeeper.store import LeaseHeld
from crawlkeeper.testing import FakeBrowser

SITE = "https://example.com"
PAGE = "<html><head><title>Home</title></head><body><p>Welcome home, this is the private page.</p></body></html>"


class SharedBackend:
    """What Redis is to the replicas: blobs and lease holders, shared by every :class:`ReplicaStore`."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.holders: dict[str, object] = {}


class ReplicaStore:
    """One replica's view of the shared store; ``lapse(key)`` is what a lease expiring does."""

    description = "shared memory"

    def __init__(self, shared: SharedBackend) -> None:
        self.shared = shared
        self.acquires = 0  # acquire calls that had to ask the shared store (a held lease is a no-op)

    async def load(self, key: str) -> bytes | None:
        return self.shared.blobs.get(key)

    async def save(self, key: str, blob: bytes) -> None:
        holder = self.shared.holders.get(key)
        if holder is not None and holder is not self:
            raise LeaseHeld(key)
        self.shared.blobs[key] = blob

    async def delete(self, key: str) -> None:
        self.shared.blobs.pop(key, None)

    async def list(self) -> list[str]:
        return list(self.shared.blobs)

    async def acquire(self, key: str) -> None:
        holder = self.shared.holders.get(key)
        if holder is self:
            return
        self.acquires += 1
        if holder is not None:
            raise LeaseHeld(key)
        self.shared.holders[key] = self

    async def release(self, key: str) -> None:
        if self.shared.holders.get(key) is self:
            del self.shared.holders[key]

    def lapse(self, key: str) -> None:
        if self.shared.holders.get(key) is self:
            del self.shared.holders[key]


class StorePlugin:
    def __init__(self, store: ReplicaStore) -> None:
        self.store = store

    @hookimpl
    def crawlkeeper_state_store(self, config: Any) -> ReplicaStore:
        return self.store


async def _resolver(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]


def replica(config: Any, shared: SharedBackend) -> tuple[App, ReplicaStore]:
    browser = FakeBrowser()
    browser.add_page(f"{SITE}/*", PAGE)
    store = ReplicaStore(shared)
    pm = create_plugin_manager(config.disabled_plugins, environ={})
    register(pm, StorePlugin(store), "shared")
    app = App(config, pm, backend=browser, resolver=_resolver)
    app.configure()
    return app, store


@pytest.mark.anyio
async def test_a_replica_that_lost_its_lease_lets_the_session_go(crawlkeeper_config: Any) -> None:
    shared = SharedBackend()
    (one, store_one), (two, _) = replica(crawlkeeper_config, shared), replica(crawlkeeper_config, shared)
    await one.create_session(session_id="s", url=f"{SITE}/")
    with pytest.raises(Exception, match="in use by another crawlkeeper process"):
        await two.crawl(f"{SITE}/", session_id="s")  # the live holder keeps it
    context = one.sessions.get("s").context
    store_one.lapse("local/s")  # replica 1 stalled past its lease...
    taken = await two.crawl(f"{SITE}/", session_id="s")  # ...and replica 2 took the session over
    assert taken["restored"] is True
    with pytest.raises(Exception, match="in use by another crawlkeeper process: it took the session over"):
        await one.crawl(f"{SITE}/", session_id="s")
    assert one.sessions.peek("s") is None and context.closed  # let go: its context is closed here
    assert shared.holders["local/s"] is not store_one
    assert (await two.crawl(f"{SITE}/", session_id="s"))["restored"] is False  # the new holder is unaffected
    await one.shutdown()
    await two.shutdown()
    assert "local/s" in shared.blobs  # replica 1's shutdown deleted nothing of a session it no longer holds


@pytest.mark.anyio
async def test_a_lapsed_lease_nobody_took_is_taken_again(crawlkeeper_config: Any) -> None:
    shared = SharedBackend()
    one, store = replica(crawlkeeper_config, shared)
    await one.create_session(session_id="s", url=f"{SITE}/")
    before = store.acquires
    await one.crawl(f"{SITE}/", session_id="s")
    assert store.acquires == before  # a held lease costs the store nothing per call
    store.lapse("local/s")
    result = await one.crawl(f"{SITE}/", session_id="s")
    assert result["restored"] is False and shared.holders["local/s"] is store
    await one.shutdown()


class TokenStore(ReplicaStore):
    """Like the Redis store: the local token goes at once, the shared lease one round trip later."""

    def __init__(self, shared: SharedBackend) -> None:
        super().__init__(shared)
        self.tokens: set[str] = set()

    async def acquire(self, key: str) -> None:
        if key in self.tokens:
            return
        if self.shared.holders.get(key) is not None:
            raise LeaseHeld(key)
        self.shared.holders[key] = self
        self.tokens.add(key)

    async def release(self, key: str) -> None:
        if key in self.tokens:
            self.tokens.discard(key)
            await asyncio.sleep(0.02)  # the compare-and-delete's round trip
            if self.shared.holders.get(key) is self:
                del self.shared.holders[key]


@pytest.mark.anyio
async def test_a_session_restored_after_a_browser_crash_holds_its_lease(crawlkeeper_config: Any) -> None:
    shared = SharedBackend()
    browser = FakeBrowser()
    browser.add_page(f"{SITE}/*", PAGE)
    store = TokenStore(shared)
    pm = create_plugin_manager(crawlkeeper_config.disabled_plugins, environ={})
    register(pm, StorePlugin(store), "shared")
    app = App(crawlkeeper_config, pm, backend=browser, resolver=_resolver)
    app.configure()
    await app.create_session(session_id="s", url=f"{SITE}/")
    browser.crash()  # the crash path gives the lease back in the background; the restore must not race it
    result = await app.crawl(f"{SITE}/", session_id="s")
    assert result["restored"] is True
    assert shared.holders.get("local/s") is store and "local/s" in store.tokens
    await app.shutdown()
