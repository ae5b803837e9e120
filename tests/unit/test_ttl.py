"""The built-in TTL plugin with a fake clock: idle expiry, maximum age, per-session ttl_s, the reaper, and
what happens when it is disabled or replaced."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from crawlkeeper import CrawlkeeperError, SessionError, SessionExpired, hookimpl
from crawlkeeper.sessions import iso
from crawlkeeper_plugins.ttl import TTLPlugin

SITE = "https://example.com"
TTL_TOML = "[plugins.ttl]\nidle_s = 60\nmax_age_s = 300\n"


@pytest.fixture
def crawlkeeper_config_toml() -> str:
    return TTL_TOML


@pytest.fixture
def app(clocked_app: Any, crawlkeeper_browser: Any) -> Any:
    crawlkeeper_browser.add_page(f"{SITE}/*", "<html><head><title>T</title></head><body><p>ok</p></body></html>")
    return clocked_app


@pytest.fixture
def ttl(app: Any) -> TTLPlugin:
    plugin = app.pm.get_plugin("ttl")
    assert isinstance(plugin, TTLPlugin)
    return plugin


class ClosingRecorder:
    def __init__(self) -> None:
        self.closed: list[tuple[str, str]] = []

    @hookimpl
    def crawlkeeper_session_closing(self, session: Any, reason: str) -> None:
        self.closed.append((session.id, reason))


async def crawl(app: Any, sid: str) -> dict[str, Any]:
    return await app.crawl(f"{SITE}/page", session_id=sid)


async def live(app: Any) -> list[str]:
    return [s["session_id"] for s in await app.list_sessions()]


# -- expiry on use -------------------------------------------------------------------------------------------


def test_settings_come_from_the_config(ttl: TTLPlugin) -> None:
    assert (ttl.settings.idle_s, ttl.settings.max_age_s) == (60, 300)


@pytest.mark.anyio
async def test_idle_expiry(app: Any, ttl: TTLPlugin, fake_clock: Any) -> None:
    await app.create_session(session_id="s")
    fake_clock.advance(59)
    await crawl(app, "s")  # still fine; and this use restarts the idle time
    fake_clock.advance(59)
    await crawl(app, "s")
    fake_clock.advance(60)
    with pytest.raises(SessionError) as info:
        await crawl(app, "s")
    message = str(info.value)
    assert "'s' expired" in message
    assert "after 60 s idle" in message
    assert "create_session" in message
    assert await live(app) == []
    with pytest.raises(SessionError, match="after 60 s idle"):  # and it keeps saying so
        await crawl(app, "s")


@pytest.mark.anyio
async def test_max_age(app: Any, ttl: TTLPlugin, fake_clock: Any) -> None:
    await app.create_session(session_id="s")
    for _ in range(5):
        fake_clock.advance(59)
        await crawl(app, "s")  # never idle for long ...
    fake_clock.advance(5)  # ... but 300 s old now
    with pytest.raises(SessionError) as info:
        await crawl(app, "s")
    assert "maximum age of 300 s" in str(info.value)
    assert "[plugins.ttl] max_age_s" in str(info.value)


@pytest.mark.anyio
async def test_per_session_ttl(app: Any, fake_clock: Any) -> None:
    await app.create_session(session_id="short", ttl_s=10)
    await app.create_session(session_id="default")
    fake_clock.advance(11)
    with pytest.raises(SessionError, match="after 10 s idle"):
        await crawl(app, "short")
    await crawl(app, "default")
    assert await live(app) == ["default"]


@pytest.mark.anyio
async def test_ttl_above_max_age_is_refused(app: Any, crawlkeeper_browser: Any) -> None:
    with pytest.raises(CrawlkeeperError) as info:
        await app.create_session(session_id="long", ttl_s=400)
    message = str(info.value)
    assert "exceeds the maximum session age of 300 s" in message
    assert "ttl" in message
    assert await live(app) == []
    assert crawlkeeper_browser.contexts[-1].closed


@pytest.mark.anyio
async def test_non_positive_ttl_is_refused(app: Any, crawlkeeper_client: Callable[..., Any]) -> None:
    # by the plugin, when called directly ...
    for bad in (-5, 0):
        with pytest.raises(CrawlkeeperError, match="ttl_s must be positive"):
            await app.create_session(ttl_s=bad)
    # ... and by the tool's schema before anything runs
    async with crawlkeeper_client() as client:
        result = await client.call_tool("create_session", {"ttl_s": -5})
        assert result.is_error
        assert "ttl_s" in result.content[0].text
        assert (await client.call_tool("list_sessions", {})).structured_content["sessions"] == []


@pytest.mark.anyio
async def test_expires_at_is_set_and_moves_with_use(
    app: Any, fake_clock: Any, crawlkeeper_client: Callable[..., Any]
) -> None:
    start = fake_clock()
    async with crawlkeeper_client() as client:
        created = (await client.call_tool("create_session", {"session_id": "s"})).structured_content
        assert created["expires_at"] == iso(start + 60)
        fake_clock.advance(30)
        listed = (await client.call_tool("list_sessions", {})).structured_content["sessions"][0]
        assert listed["expires_at"] == iso(start + 60)  # listing is not a use
        assert listed["created_at"] == iso(start)
        assert not (await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "s"})).is_error
        listed = (await client.call_tool("list_sessions", {})).structured_content["sessions"][0]
        assert listed["expires_at"] == iso(start + 90)
        assert listed["last_used_at"] == iso(start + 30)
        fake_clock.advance(250)  # idle 250 > 60: gone from the listing even before the reaper runs
        assert (await client.call_tool("list_sessions", {})).structured_content["sessions"] == []


@pytest.mark.anyio
async def test_expires_at_is_capped_by_max_age(app: Any, fake_clock: Any) -> None:
    start = fake_clock()
    created = await app.create_session(session_id="s", ttl_s=250)
    assert created["expires_at"] == iso(start + 250)
    fake_clock.advance(200)
    await crawl(app, "s")
    assert app.sessions.get("s").expires_at == start + 300  # not 200 + 250


# -- the reaper ----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_reap_once_closes_expired_idle_sessions(
    app: Any, ttl: TTLPlugin, fake_clock: Any, crawlkeeper_register: Callable[..., Any]
) -> None:
    recorder = crawlkeeper_register(ClosingRecorder(), "recorder")
    for sid in ("a", "b", "c", "d"):
        await app.create_session(session_id=sid)
    fake_clock.advance(30)
    await crawl(app, "d")  # d was used recently: not expired
    fake_clock.advance(31)
    assert await ttl.reap_once(app.server) == ["a", "b", "c"]
    assert recorder.closed == [("a", "expired"), ("b", "expired"), ("c", "expired")]
    assert await live(app) == ["d"]
    assert await ttl.reap_once(app.server) == []  # nothing more to do


@pytest.mark.anyio
async def test_reaper_skips_a_session_in_use(
    app: Any, ttl: TTLPlugin, fake_clock: Any, crawlkeeper_register: Callable[..., Any], crawlkeeper_browser: Any
) -> None:
    recorder = crawlkeeper_register(ClosingRecorder(), "recorder")
    for sid in ("a", "b", "c", "d"):
        await app.create_session(session_id=sid)
    fake_clock.advance(30)
    await crawl(app, "d")
    fake_clock.advance(31)
    b, c = app.sessions.get("b"), app.sessions.get("c")
    c.busy += 1  # a call is running on c
    try:
        async with b.lock:  # a call holds b
            closed = await asyncio.wait_for(ttl.reap_once(app.server), 2)
    finally:
        c.busy -= 1
    assert closed == ["a"]
    assert recorder.closed == [("a", "expired")]
    assert app.sessions.get("b") is b and app.sessions.get("c") is c  # still there, just not listed
    assert await live(app) == ["d"]
    assert await asyncio.wait_for(ttl.reap_once(app.server), 2) == ["b", "c"]  # once free, they go too
    assert sorted(recorder.closed) == [("a", "expired"), ("b", "expired"), ("c", "expired")]
    assert b.context.closed and c.context.closed and not app.sessions.get("d").context.closed
    with pytest.raises(SessionError) as info:
        await crawl(app, "a")
    assert "'a' expired" in str(info.value) and "after 60 s idle" in str(info.value)


@pytest.mark.anyio
@pytest.mark.parametrize("crawlkeeper_config_toml", [TTL_TOML + "reap_interval_s = 0.02\n"])
async def test_reaper_task_runs_while_the_server_runs(
    app: Any, fake_clock: Any, crawlkeeper_client: Callable[..., Any], crawlkeeper_register: Callable[..., Any]
) -> None:
    recorder = crawlkeeper_register(ClosingRecorder(), "recorder")
    async with crawlkeeper_client() as client:
        await client.call_tool("create_session", {"session_id": "idle"})
        fake_clock.advance(61)
        for _ in range(100):
            if recorder.closed:
                break
            await asyncio.sleep(0.02)
        assert recorder.closed == [("idle", "expired")]
        result = await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "idle"})
        assert result.is_error and "expired" in result.content[0].text
    assert ttl_tasks_stopped(app)


def ttl_tasks_stopped(app: Any) -> bool:
    return not app.pm.get_plugin("ttl")._reapers


# -- disabled and replaced -------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("crawlkeeper_config_toml", ['[plugins]\ndisable = ["ttl"]\n'])
async def test_disabled_ttl_keeps_sessions_alive_and_refuses_ttl_s(app: Any, fake_clock: Any) -> None:
    assert app.pm.get_plugin("ttl") is None
    created = await app.create_session(session_id="forever")
    assert created["expires_at"] is None
    fake_clock.advance(10 * 365 * 86400)
    await crawl(app, "forever")
    assert await live(app) == ["forever"]
    with pytest.raises(CrawlkeeperError) as info:
        await app.create_session(session_id="timed", ttl_s=30)
    assert "ttl_s" in str(info.value)
    assert "'ttl' plugin is disabled" in str(info.value)
    assert await live(app) == ["forever"]


class FixedDeadline:
    """A replacement expiry policy: every session expires at one wall-clock time."""

    def __init__(self, clock: Callable[[], float], deadline: float) -> None:
        self.clock = clock
        self.deadline = deadline

    @hookimpl
    def crawlkeeper_session_created(self, session: Any, request: Any) -> None:
        session.expires_at = self.deadline
        if request.ttl_s is not None:
            request.mark_handled("ttl_s")  # accepted and ignored: the deadline rules

    @hookimpl
    def crawlkeeper_session_acquire(self, session: Any) -> None:
        if self.clock() >= self.deadline:
            raise SessionExpired("at the fixed deadline of the replacement plugin")


@pytest.mark.anyio
@pytest.mark.parametrize("crawlkeeper_config_toml", ['[plugins]\ndisable = ["ttl"]\n'])
async def test_replacement_expiry_plugin(
    app: Any, fake_clock: Any, crawlkeeper_register: Callable[..., Any]
) -> None:
    deadline = fake_clock() + 1000
    crawlkeeper_register(FixedDeadline(fake_clock, deadline), "deadline")
    recorder = crawlkeeper_register(ClosingRecorder(), "recorder")
    created = await app.create_session(session_id="s", ttl_s=5)
    assert created["expires_at"] == iso(deadline)
    fake_clock.advance(999)
    await crawl(app, "s")  # idle far beyond ttl_s: the built-in rule is gone
    fake_clock.advance(1)
    with pytest.raises(SessionError) as info:
        await crawl(app, "s")
    assert "expired: at the fixed deadline of the replacement plugin" in str(info.value)
    assert "create_session again" in str(info.value)
    await asyncio.sleep(0.01)  # the close runs in the background
    assert recorder.closed == [("s", "expired")]
    assert await live(app) == []
