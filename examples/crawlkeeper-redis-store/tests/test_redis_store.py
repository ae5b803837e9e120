"""The Redis store against a real redis-server on loopback: blobs, a fenced lease that a dead replica loses,
and two crawlkeeper apps sharing a session with its secrets encrypted before they reach Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from crawlkeeper_redis_store import RedisStore, RedisStorePlugin
from crawlkeeper_redis_store.testing import RedisServerMissing, redis_server

from crawlkeeper.app import App
from crawlkeeper.config import load_config
from crawlkeeper.plugins import create_plugin_manager, register
from crawlkeeper.store import LeaseHeld
from crawlkeeper.testing import FakeBrowser

pytestmark = pytest.mark.integration  # a real redis-server
SITE = "https://example.com"
CANARY = "CANARY-redisstore-77a1"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        with redis_server(tmp_path_factory.mktemp("redis")) as url:
            yield url
    except RedisServerMissing as exc:
        pytest.fail(f"{exc} (./run test installs it)")


@pytest.mark.anyio
async def test_blobs_round_trip(redis_url: str) -> None:
    store = RedisStore(redis_url, prefix="t1:")
    await store.save("local/a", b"\x00blob")
    assert await store.load("local/a") == b"\x00blob" and await store.list() == ["local/a"]
    await store.delete("local/a")
    assert await store.load("local/a") is None and await store.list() == []
    await store.close()


@pytest.mark.anyio
async def test_a_dead_holders_lease_expires_and_it_can_no_longer_write(redis_url: str) -> None:
    first, second = RedisStore(redis_url, prefix="t2:", lease_s=1), RedisStore(redis_url, prefix="t2:", lease_s=1)
    await first.acquire("local/s")
    await first.acquire("local/s")  # its own lease again: a no-op
    await first.save("local/s", b"v1")
    with pytest.raises(LeaseHeld):
        await second.acquire("local/s")
    await asyncio.sleep(1.5)  # the holder renews while it lives
    with pytest.raises(LeaseHeld):
        await second.acquire("local/s")
    first._renewers["local/s"].cancel()  # the holder "dies" (no release, no renewal)
    await asyncio.sleep(1.3)
    await second.acquire("local/s")  # expired: taken over
    await second.save("local/s", b"v2")
    with pytest.raises(LeaseHeld):
        await first.save("local/s", b"stale")  # fenced: the old holder cannot overwrite
    assert await second.load("local/s") == b"v2"
    assert await second.lease_violations() == 1
    await first.release("local/s")  # compare-and-delete: the new holder keeps its lease
    with pytest.raises(LeaseHeld):
        await first.acquire("local/s")
    await second.close()
    await first.close()


@pytest.mark.anyio
async def test_a_lapsed_lease_is_taken_again_unless_another_replica_took_it(redis_url: str) -> None:
    first = RedisStore(redis_url, prefix="t4:", lease_s=1)
    await first.acquire("local/a")
    await first.acquire("local/b")
    await first.r.delete("t4:lease:local/a")  # what expiry does when the holder stalled past its lease
    await first.r.set("t4:lease:local/b", "another-replica", px=5000)  # ...and here another replica took it
    await asyncio.sleep(0.6)  # one renewal (every lease_s / 3)
    assert await first.r.get("t4:lease:local/a") == first._tokens["local/a"].encode()
    assert "local/b" not in first._tokens  # lost: no longer renewed, and saves are refused
    with pytest.raises(LeaseHeld):
        await first.save("local/b", b"stale")
    await first.close()


@pytest.mark.anyio
async def test_a_stalled_replica_never_overwrites_state_written_after_its_lease_lapsed(redis_url: str) -> None:
    """The lapse nobody sees: another replica takes the session, saves and *releases* it while this one stalls.
    The lease is free again, yet this replica's copy is stale: it may neither save nor silently take it again."""
    first, second = RedisStore(redis_url, prefix="t5:", lease_s=1), RedisStore(redis_url, prefix="t5:", lease_s=1)
    await first.acquire("local/s")
    await first.save("local/s", b"v1")
    token = first._tokens["local/s"]
    first._renewers["local/s"].cancel()  # the stall: no renewal
    await asyncio.sleep(1.3)
    await second.acquire("local/s")
    await second.save("local/s", b"v2")
    await second.release("local/s")  # hibernated or closed there: the lease is free
    with pytest.raises(LeaseHeld):
        await first.save("local/s", b"stale")  # the generation moved on since first's lease
    first._renewers["local/s"] = asyncio.ensure_future(first._keep("local/s", token))  # the stall ends
    await asyncio.sleep(0.6)
    assert "local/s" not in first._tokens  # not taken again: someone held it meanwhile
    with pytest.raises(LeaseHeld):
        await first.acquire("local/s")  # once: the core lets its stale copy go...
    await first.acquire("local/s")  # ...and restores the current state under a fresh lease
    assert await first.load("local/s") == b"v2"
    assert await first.lease_violations() == 1
    await first.close()
    await second.close()


def make_app(folder: Path, redis_url: str) -> App:
    (folder / "crawlkeeper.toml").write_text(
        f'[plugins]\ndisable = ["statefile"]\n[plugins.redisstore]\nurl = "{redis_url}"\nprefix = "t3:"\n'
        "lease_s = 1\n", encoding="utf-8")
    config = load_config(folder / "crawlkeeper.toml")
    config.settings.sessions.key_file = folder / "state.key"
    browser = FakeBrowser()
    browser.add_page(f"{SITE}/private", "<title>Private</title><p>secret area</p>", requires_cookie="sid",
                     login_url="/login")
    pm = create_plugin_manager(["statefile"])
    register(pm, RedisStorePlugin(), "redisstore")

    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.215.14"]

    app = App(config, pm, backend=browser, resolver=resolver)
    app.configure()
    return app


@pytest.mark.anyio
async def test_two_apps_share_a_session_encrypted(tmp_path: Path, redis_url: str) -> None:
    first, second = make_app(tmp_path, redis_url), make_app(tmp_path, redis_url)
    assert "Redis at redis://127.0.0.1" in first.keeper.store.description  # type: ignore[union-attr]
    await first.create_session(session_id="r", cookies=[{"name": "sid", "value": CANARY, "url": SITE}])
    with pytest.raises(Exception, match="in use by another crawlkeeper process"):
        await second.crawl(f"{SITE}/private", session_id="r")
    await first.shutdown()  # releases its lease
    result = await second.crawl(f"{SITE}/private", session_id="r")
    assert result["restored"] is True and "secret area" in result["content"]
    import redis.asyncio as redis

    client = redis.from_url(redis_url)
    blob = await client.get("t3:state:local/r")
    assert blob and CANARY.encode() not in blob  # encrypted by crawlkeeper before it reached Redis
    await second.shutdown()
    await client.aclose()
