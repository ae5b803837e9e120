"""Durable sessions against the fake browser: save, restore after a restart, leases, hibernation, crash
recovery, expiry, and every fault the store can meet (corrupt, truncated, future format, wrong key, full disk)."""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import error_text, shown

from crawlkeeper import hookimpl
from crawlkeeper.app import App
from crawlkeeper.plugins import create_plugin_manager, register
from crawlkeeper.store import LeaseHeld, filename_key, key_filename
from crawlkeeper.testing import FakeBrowser

SITE = "https://example.com"
CANARY = "CANARY-durable-5c1e0b"
PAGE = "<html><head><title>Home</title></head><body><p>Welcome home.</p></body></html>"


async def _resolver(host: str, port: int) -> list[str]:
    return ["93.184.215.14"]


def new_browser() -> FakeBrowser:
    browser = FakeBrowser()
    browser.add_page(f"{SITE}/*", PAGE)
    browser.add_page(f"{SITE}/set", PAGE, set_cookies={"visited": "yes"})
    browser.add_page(f"{SITE}/private", PAGE, requires_cookie="sid", login_url="/login")
    return browser


@pytest.fixture
def make_app(crawlkeeper_config: Any, fake_clock: Any) -> Iterator[Callable[..., App]]:
    """``make_app()``: a fresh App on the same config (and so the same store): a server restart."""
    apps: list[App] = []

    def make(*plugins: tuple[str, object]) -> App:
        pm = create_plugin_manager(crawlkeeper_config.disabled_plugins)
        for name, plugin in plugins:
            register(pm, plugin, name)
        app = App(crawlkeeper_config, pm, backend=new_browser(), resolver=_resolver, clock=fake_clock)
        app.sessions.clock = fake_clock
        ttl = pm.get_plugin("ttl")
        if ttl is not None:
            ttl.clock = fake_clock
        app.configure()
        apps.append(app)
        return app

    yield make


def store_dir(app: App) -> Path:
    return Path(app.keeper.store.dir)  # type: ignore[union-attr]


def state_file(app: App, sid: str) -> Path:
    return store_dir(app) / (key_filename(f"local/{sid}") + ".state")


async def login_cookie_session(app: App, sid: str = "gh") -> None:
    await app.create_session(session_id=sid, cookies=[{"name": "sid", "value": CANARY, "url": SITE,
                                                        "httpOnly": True}])


@pytest.mark.anyio
async def test_a_session_survives_a_restart_and_says_it_was_restored(make_app: Callable[..., App]) -> None:
    first = make_app()
    await first.startup()
    await login_cookie_session(first)
    await first.shutdown()
    assert state_file(first, "gh").exists()

    second = make_app()
    await second.startup()
    try:
        result = await second.crawl(f"{SITE}/private", session_id="gh")
        assert result["final_url"] == f"{SITE}/private", "restored without its login cookie"
        assert result["restored"] is True and "restored" in result["note"]
        again = await second.crawl(f"{SITE}/private", session_id="gh")
        assert again["restored"] is False and "note" not in again
        session = second.sessions.get("gh")
        assert [c["name"] for c in await session.context.cookies()] == ["sid"]
    finally:
        await second.shutdown()


@pytest.mark.anyio
async def test_create_session_with_a_saved_id_is_an_error_that_says_what_to_do(make_app: Callable[..., App]) -> None:
    first = make_app()
    await login_cookie_session(first)
    await first.shutdown()
    second = make_app()
    with pytest.raises(Exception) as info:
        await second.create_session(session_id="gh")
    assert "already exists" in str(info.value) and "close_session" in str(info.value)
    # the saved login was not replaced
    result = await second.crawl(f"{SITE}/private", session_id="gh")
    assert result["final_url"].endswith("/private")
    await second.shutdown()


@pytest.mark.anyio
async def test_close_deletes_the_state_shutdown_keeps_it(make_app: Callable[..., App]) -> None:
    app = make_app()
    await login_cookie_session(app, "a")
    await login_cookie_session(app, "b")
    await app.close_session("a")
    assert not state_file(app, "a").exists() and state_file(app, "b").exists()
    await app.shutdown()
    assert state_file(app, "b").exists()
    # a saved (not active) session can be closed too: its state is deleted for good
    again = make_app()
    assert (await again.close_session("b"))["closed"] is True
    assert not state_file(app, "b").exists()
    with pytest.raises(Exception, match="unknown session"):
        await again.crawl(f"{SITE}/", session_id="b")


@pytest.mark.anyio
async def test_ttl_keeps_its_meaning_across_restarts(make_app: Callable[..., App], fake_clock: Any) -> None:
    first = make_app()
    await first.create_session(session_id="idle", ttl_s=60)
    await first.shutdown()
    fake_clock.advance(61)  # idle time counts while no server runs
    second = make_app()
    with pytest.raises(Exception, match="expired") as info:
        await second.crawl(f"{SITE}/", session_id="idle")
    assert "60 s idle" in str(info.value)
    await second.sessions.close_all("shutdown")
    assert not state_file(second, "idle").exists(), "expiry must delete the saved state"
    # maximum age counts from the original creation, across restarts and uses
    third = make_app()
    await third.create_session(session_id="old", ttl_s=10000)
    for _ in range(3):
        fake_clock.advance(4500)
        await third.crawl(f"{SITE}/", session_id="old")
        await third.shutdown()
        third = make_app()
    fake_clock.advance(1000)  # 14,500 s after creation, 1,000 s after the last use
    with pytest.raises(Exception, match="maximum age"):
        await third.crawl(f"{SITE}/", session_id="old")
    await third.shutdown()


@pytest.mark.anyio
async def test_expired_saved_sessions_are_swept(make_app: Callable[..., App], fake_clock: Any) -> None:
    app = make_app()
    await app.create_session(session_id="gone", ttl_s=30)
    await app.create_session(session_id="kept")
    await app.shutdown()
    fake_clock.advance(31)
    later = make_app()
    assert await later.sweep_expired() == ["gone"]
    assert [s["session_id"] for s in await later.list_sessions()] == ["kept"]


@pytest.mark.anyio
async def test_a_second_process_gets_a_clear_in_use_error(make_app: Callable[..., App]) -> None:
    first = make_app()
    await login_cookie_session(first)
    second = make_app()  # another server on the same store (two MCP clients open at once)
    with pytest.raises(Exception) as info:
        await second.crawl(f"{SITE}/", session_id="gh")
    assert "session 'gh' is in use by another crawlkeeper process" in str(info.value)
    await first.shutdown()  # releases the lease
    assert (await second.crawl(f"{SITE}/private", session_id="gh"))["restored"] is True
    await second.shutdown()


def hold_lock_in_another_process(lock: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "import sys, time, filelock; l = filelock.FileLock(sys.argv[1], thread_local=False); "
         "l.acquire(); print('held', flush=True); time.sleep(60)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )


def replace_key(path: Path) -> None:
    path.write_text("a-different-key-" + "x" * 40, encoding="utf-8")


@pytest.mark.anyio
async def test_the_lease_of_a_dead_process_is_taken_over(make_app: Callable[..., App]) -> None:
    app = make_app()
    await login_cookie_session(app)
    await app.shutdown()
    lock = store_dir(app) / (key_filename("local/gh") + ".lock")
    holder = hold_lock_in_another_process(lock)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeld):
            await app.keeper.store.acquire("local/gh")  # type: ignore[union-attr]
    finally:
        holder.kill()  # SIGKILL: no chance to release anything
        holder.wait()
    other = make_app()
    assert (await other.crawl(f"{SITE}/private", session_id="gh"))["restored"] is True
    await other.shutdown()


@pytest.mark.anyio
@pytest.mark.parametrize("damage", ["corrupt", "truncate", "future", "garbage"])
async def test_a_bad_state_file_fails_only_that_session(make_app: Callable[..., App], damage: str) -> None:
    app = make_app()
    await login_cookie_session(app, "bad")
    await login_cookie_session(app, "good")
    await app.shutdown()
    path = state_file(app, "bad")
    data = bytearray(path.read_bytes())
    if damage == "corrupt":
        data[-5] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "future":
        data[4] = 99
    else:
        data = bytearray(b"not a state file at all")
    path.write_bytes(bytes(data))
    later = make_app()
    with pytest.raises(Exception) as info:
        await later.crawl(f"{SITE}/", session_id="bad")
    message = str(info.value)
    assert "session 'bad'" in message and "crawlkeeper sessions delete bad" in message, message
    if damage == "future":
        assert "newer crawlkeeper" in message
    assert (await later.crawl(f"{SITE}/private", session_id="good"))["restored"] is True
    listed = {s["session_id"]: s for s in await later.list_sessions()}
    assert listed["bad"].get("error") and listed["good"]["state"] == "active"
    assert path.read_bytes() == bytes(data), "a bad file must be left for the person to inspect or delete"
    await later.close_session("bad")  # closing deletes it
    assert not path.exists()
    await later.shutdown()


@pytest.mark.anyio
async def test_a_wrong_key_is_a_clear_error_and_overwrites_nothing(
    make_app: Callable[..., App], crawlkeeper_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    await login_cookie_session(app)
    await app.shutdown()
    before = {p.name: p.read_bytes() for p in store_dir(app).iterdir() if p.suffix != ".lock"}
    key_file = Path(crawlkeeper_config.settings.sessions.key_file)
    replace_key(key_file)
    later = make_app()
    with pytest.raises(Exception) as info:
        await later.crawl(f"{SITE}/", session_id="gh")
    assert "another key" in str(info.value) and str(key_file) in str(info.value)
    created = await later.create_session(session_id="new")  # works, in memory, with a loud log line
    assert created["session_id"] == "new"
    await later.shutdown()
    after = {p.name: p.read_bytes() for p in store_dir(app).iterdir() if p.suffix != ".lock"}
    assert after == before, "a wrong key must not overwrite (or add) anything"
    assert "SAVING SESSION new FAILED" in caplog.text


@pytest.mark.anyio
async def test_a_full_disk_keeps_the_live_session_and_the_old_file(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    await login_cookie_session(app)
    path = state_file(app, "gh")
    good = path.read_bytes()
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    result = await app.crawl(f"{SITE}/set", session_id="gh")  # changes the jar
    assert result["status"] == 200
    assert await app.keeper.save(app.sessions.get("gh")) is False
    assert "SAVING SESSION gh FAILED" in caplog.text and "No space left on device" in caplog.text
    assert path.read_bytes() == good
    assert not [p for p in store_dir(app).iterdir() if p.name.endswith(".tmp")], "a half-written file was left"
    assert (await app.crawl(f"{SITE}/private", session_id="gh"))["final_url"].endswith("/private")
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert await app.keeper.save(app.sessions.get("gh")) is True
    assert path.read_bytes() != good
    await app.shutdown()


@pytest.mark.anyio
async def test_nothing_readable_on_disk_and_modes_are_private(make_app: Callable[..., App], crawlkeeper_config: Any,
                                                              ) -> None:
    app = make_app()
    await login_cookie_session(app, "odd.id:with-chars")
    await app.crawl(f"{SITE}/set", session_id="odd.id:with-chars")
    await app.shutdown()
    folder = store_dir(app)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    root = Path(crawlkeeper_config.path).parent
    for path in root.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), f"{path} holds the cookie value in plaintext"
            if path.is_relative_to(folder) or path.name == "state.key":
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert state_file(app, "odd.id:with-chars").exists()


def test_session_ids_never_become_paths() -> None:
    for key in ("local/../../etc/passwd", "local/a/b", "local/" + "x" * 400, "local/CON", "local/a\x00b"):
        name = key_filename(key)
        assert "/" not in name and "\x00" not in name and ".." not in name and len(name) <= 201
        assert name == name.lower()
        assert filename_key(name) in (key, None)
    assert key_filename("local/A") != key_filename("local/a")


@pytest.mark.anyio
@pytest.mark.parametrize("crawlkeeper_config_toml", ["[sessions]\nmax_sessions = 2\n"])
async def test_max_sessions_hibernates_the_least_recently_used(make_app: Callable[..., App], fake_clock: Any) -> None:
    app = make_app()
    await login_cookie_session(app, "a")
    fake_clock.advance(1)
    await login_cookie_session(app, "b")
    fake_clock.advance(1)
    await app.crawl(f"{SITE}/", session_id="a")  # b is now the least recently used
    fake_clock.advance(1)
    await login_cookie_session(app, "c")
    states = {s["session_id"]: s["state"] for s in await app.list_sessions()}
    assert states == {"a": "active", "c": "active", "b": "hibernated"}
    assert len(app.sessions) == 2
    result = await app.crawl(f"{SITE}/private", session_id="b")
    assert result["restored"] is True and result["final_url"].endswith("/private")
    states = {s["session_id"]: s["state"] for s in await app.list_sessions()}
    assert states == {"a": "hibernated", "b": "active", "c": "active"}
    await app.shutdown()


@pytest.mark.anyio
@pytest.mark.parametrize("crawlkeeper_config_toml", ["[sessions]\nmax_stored = 2\n"])
async def test_max_stored_is_a_clear_error(make_app: Callable[..., App]) -> None:
    app = make_app()
    await app.create_session(session_id="a")
    await app.create_session(session_id="b")
    with pytest.raises(Exception, match=r"max_stored = 2"):
        await app.create_session(session_id="c")
    await app.close_session("a")
    await app.create_session(session_id="c")
    await app.shutdown()


@pytest.mark.anyio
async def test_idle_sessions_hibernate_and_their_context_closes(make_app: Callable[..., App]) -> None:
    app = make_app()
    await login_cookie_session(app)
    session = app.sessions.get("gh")
    assert await app.hibernate(session) is True
    assert session.context.closed and len(app.sessions) == 0
    listed = await app.list_sessions()
    assert listed[0]["state"] == "hibernated" and listed[0]["cookies"] == [{"name": "sid", "domain": "example.com"}]
    assert CANARY not in repr(listed)
    result = await app.crawl(f"{SITE}/private", session_id="gh")
    assert result["restored"] is True
    await app.shutdown()


@pytest.mark.anyio
async def test_browser_crash_restores_from_saved_state(make_app: Callable[..., App]) -> None:
    app = make_app()
    await login_cookie_session(app)
    app.backend.crash()  # type: ignore[attr-defined]
    result = await app.crawl(f"{SITE}/private", session_id="gh")
    assert result["restored"] is True and "crashed" in result["note"]
    assert result["final_url"].endswith("/private")
    await app.shutdown()


class MetadataPlugin:
    def __init__(self) -> None:
        self.restored: list[dict[str, Any]] = []

    @hookimpl
    def crawlkeeper_session_created(self, session: Any) -> None:
        session.metadata["meta.token_expiry"] = {"at": 123, "kind": "bearer"}
        session.metadata["meta.live_object"] = object()  # not JSON: lives only in this process

    @hookimpl
    async def crawlkeeper_session_restored(self, session: Any) -> None:
        self.restored.append(dict(session.metadata))


@pytest.mark.anyio
async def test_plugin_metadata_survives_and_the_restored_hook_runs(make_app: Callable[..., App]) -> None:
    first = make_app(("meta", MetadataPlugin()))
    await first.create_session(session_id="m", auth=None)
    assert first.sessions.get("m").auth is None
    await first.shutdown()
    plugin = MetadataPlugin()
    second = make_app(("meta", plugin))
    await second.crawl(f"{SITE}/", session_id="m")
    assert plugin.restored and plugin.restored[0]["meta.token_expiry"] == {"at": 123, "kind": "bearer"}
    assert "meta.live_object" not in plugin.restored[0]
    await second.shutdown()


@pytest.mark.anyio
async def test_changes_are_saved_debounced_and_unchanged_state_is_not_rewritten(
    make_app: Callable[..., App], crawlkeeper_config: Any
) -> None:
    crawlkeeper_config.settings.sessions.save_delay_s = 0.05
    app = make_app()
    await app.create_session(session_id="d", url=f"{SITE}/")
    path = state_file(app, "d")
    first = path.read_bytes()
    await app.crawl(f"{SITE}/", session_id="d")
    await app.crawl(f"{SITE}/", session_id="d")
    await asyncio.sleep(0.2)
    assert path.read_bytes() == first, "an unchanged jar was re-encrypted"
    await app.crawl(f"{SITE}/set", session_id="d")
    await asyncio.sleep(0.2)
    assert path.read_bytes() != first
    state = await app.keeper.load("d")
    assert state is not None and [c["name"] for c in state.storage["cookies"]] == ["visited"]
    await app.shutdown()


@pytest.mark.anyio
async def test_saves_read_storage_while_the_page_is_on_the_site_never_after_parking(
    make_app: Callable[..., App], crawlkeeper_config: Any
) -> None:
    # Playwright's storage_state on a context whose page is parked opens a hidden page and loads every origin
    # again (a crawl's cost per save); read at the end of the call, it is one evaluation in the open page.
    crawlkeeper_config.settings.sessions.save_delay_s = 0.05
    app = make_app()

    async def park_page(page: Any) -> None:  # as ChromiumBackend.park_page does (the fake has none)
        page.url = "about:blank"

    app.backend.park_page = park_page  # type: ignore[attr-defined]
    await app.create_session(session_id="p", url=f"{SITE}/")
    session = app.sessions.get("p")
    where: list[str] = []
    real = session.context.storage_state

    async def spy(**kwargs: Any) -> dict[str, Any]:
        where.append(session.page.url if session.page is not None else "no page")
        return await real(**kwargs)

    session.context.storage_state = spy
    await app.crawl(f"{SITE}/set", session_id="p")
    assert session.page is not None and session.page.url == "about:blank"
    for _ in range(100):  # the delayed save runs after the page was parked
        await asyncio.sleep(0.05)
        state = await app.keeper.load("p")
        if state is not None and state.storage["cookies"]:
            break
    assert state is not None and [c["name"] for c in state.storage["cookies"]] == ["visited"]
    await app.shutdown()  # saves every session once more
    assert where and all(url.startswith(SITE) for url in where), where


class MemoryStore:
    """A store plugin in a few lines (the plugin guide's example is tested in test_plugin_guide_example)."""

    description = "memory"

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    async def load(self, key: str) -> bytes | None:
        return self.blobs.get(key)

    async def save(self, key: str, blob: bytes) -> None:
        self.blobs[key] = blob

    async def delete(self, key: str) -> None:
        self.blobs.pop(key, None)

    async def list(self) -> list[str]:
        return list(self.blobs)

    async def acquire(self, key: str) -> None:
        pass

    async def release(self, key: str) -> None:
        pass


class MemoryStorePlugin:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    @hookimpl
    def crawlkeeper_state_store(self, config: Any) -> MemoryStore:
        return self.store


@pytest.mark.anyio
async def test_a_store_plugin_replaces_statefile(make_app: Callable[..., App]) -> None:
    store = MemoryStore()
    app = make_app(("memstore", MemoryStorePlugin(store)))
    assert app.keeper.store is store
    await login_cookie_session(app)
    assert "local/gh" in store.blobs and CANARY.encode() not in store.blobs["local/gh"]
    await app.shutdown()
    again = make_app(("memstore", MemoryStorePlugin(store)))
    assert (await again.crawl(f"{SITE}/private", session_id="gh"))["restored"] is True
    await again.shutdown()


@pytest.mark.anyio
@pytest.mark.parametrize("crawlkeeper_config_toml", ['[plugins]\ndisable = ["statefile"]\n'])
async def test_without_a_store_sessions_live_in_memory(make_app: Callable[..., App]) -> None:
    app = make_app()
    assert not app.keeper.enabled
    await login_cookie_session(app)
    await app.shutdown()
    again = make_app()
    with pytest.raises(Exception, match="unknown session"):
        await again.crawl(f"{SITE}/", session_id="gh")


@pytest.mark.anyio
async def test_list_sessions_over_mcp_shows_states(crawlkeeper_client: Callable[..., Any],
                                                   crawlkeeper_app: Any) -> None:
    crawlkeeper_app.backend.add_page(f"{SITE}/*", PAGE)
    async with crawlkeeper_client() as client:
        created = await client.call_tool("create_session", {"session_id": "x"})
        assert not created.is_error, shown(created)
        await crawlkeeper_app.hibernate(crawlkeeper_app.sessions.get("x"))
        listed = (await client.call_tool("list_sessions", {})).structured_content["sessions"]
        assert [(s["session_id"], s["state"]) for s in listed] == [("x", "hibernated")]
        crawled = await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "x"})
        assert crawled.structured_content["restored"] is True
        again = await client.call_tool("create_session", {"session_id": "x"})
        assert "already exists" in error_text(again)


class HeaderLogin:
    """An auth method that logs in by sending an API key header (like the plugin guide's apikey example)."""

    @hookimpl
    def crawlkeeper_auth_methods(self) -> list[Any]:
        from pydantic import BaseModel

        from crawlkeeper import AuthMethod

        class NoParams(BaseModel):
            pass

        async def login(session: Any, params: Any) -> None:
            await session.headers.add({"X-Api-Key": "k-durable-123"}, domains=["example.com"])

        return [AuthMethod("hdr", "header login", NoParams, login)]


@pytest.mark.anyio
async def test_headers_an_auth_method_added_come_back_after_a_restart(make_app: Callable[..., App]) -> None:
    first = make_app(("hdr", HeaderLogin()))
    await first.create_session(session_id="h", auth="hdr")
    assert first.sessions.get("h").headers.effective(f"{SITE}/") == {"X-Api-Key": "k-durable-123"}
    await first.shutdown()
    assert b"k-durable-123" not in state_file(first, "h").read_bytes()
    second = make_app(("hdr", HeaderLogin()))
    await second.crawl(f"{SITE}/", session_id="h")
    session = second.sessions.get("h")
    assert session.headers.effective(f"{SITE}/") == {"X-Api-Key": "k-durable-123"}
    assert session.headers.effective("https://elsewhere.example/") == {}
    assert session.holds_secrets and session.auth == "hdr"
    await second.shutdown()


@pytest.mark.anyio
async def test_saved_sessions_are_namespaced_by_principal(make_app: Callable[..., App]) -> None:
    from crawlkeeper import Principal

    alice = Principal(id="token:alice", name="alice")
    bob = Principal(id="token:bob", name="bob")
    first = make_app()
    await first.create_session(session_id="gh", principal=alice,
                               cookies=[{"name": "sid", "value": CANARY, "url": SITE}])
    await first.create_session(session_id="gh", principal=bob)  # the same id in another namespace
    await first.shutdown()
    assert state_file(first, "gh").exists() is False  # not under "local"
    second = make_app()
    assert (await second.crawl(f"{SITE}/private", session_id="gh", principal=alice))["final_url"].endswith("/private")
    bob_result = await second.crawl(f"{SITE}/private", session_id="gh", principal=bob)
    assert bob_result["final_url"].endswith("/login"), "bob restored alice's login"
    with pytest.raises(Exception, match="unknown session"):
        await second.crawl(f"{SITE}/", session_id="gh")  # the local user has no such session
    listed = await second.list_sessions(principal=bob)
    assert [s["session_id"] for s in listed] == ["gh"] and listed[0]["cookies"] == []
    await second.shutdown()
