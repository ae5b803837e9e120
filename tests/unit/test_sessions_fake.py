"""Sessions through the MCP tools (and the App) against the fake browser: ids, cookies, isolation, errors,
limits, ordering, plugin failures, plugin tools, shutdown and browser crashes."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import BaseModel, Field
from support import error_text, shown

from crawlkeeper import AuthMethod, CrawlError, PluginError, hookimpl

SITE = "https://example.com"
CANARY = "CANARY-7d1f9a"
PAGE = "<html><head><title>Home</title></head><body><p>Welcome home.</p></body></html>"


@pytest.fixture
def site(crawlkeeper_browser: Any) -> Any:
    crawlkeeper_browser.add_page(f"{SITE}/*", PAGE)
    crawlkeeper_browser.add_page(f"{SITE}/set", PAGE, set_cookies={"visited": "yes-visited"})
    return crawlkeeper_browser


async def listed_ids(client: Any) -> list[str]:
    result = await client.call_tool("list_sessions", {})
    return [s["session_id"] for s in result.structured_content["sessions"]]


class ClosingRecorder:
    def __init__(self) -> None:
        self.closed: list[tuple[str, str]] = []

    @hookimpl
    async def crawlkeeper_session_closing(self, session: Any, reason: str) -> None:
        await asyncio.sleep(0)
        self.closed.append((session.id, reason))


# -- ids and cookies -------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_generated_ids_are_unguessable(crawlkeeper_client: Callable[..., Any]) -> None:
    async with crawlkeeper_client() as client:
        ids = [(await client.call_tool("create_session", {})).structured_content["session_id"] for _ in range(3)]
        assert sorted(await listed_ids(client)) == sorted(ids)
    assert len(set(ids)) == 3
    for sid in ids:
        assert len(sid) >= 16
        assert re.fullmatch(r"[A-Za-z0-9_.:-]+", sid)


@pytest.mark.anyio
async def test_explicit_id_is_used_and_duplicates_or_bad_ids_refused(crawlkeeper_client: Callable[..., Any]) -> None:
    async with crawlkeeper_client() as client:
        first = await client.call_tool("create_session", {"session_id": "mine"})
        assert first.structured_content["session_id"] == "mine"
        assert first.structured_content["url"] == "about:blank"
        assert "already exists" in error_text(await client.call_tool("create_session", {"session_id": "mine"}))
        assert "invalid session_id" in error_text(await client.call_tool("create_session", {"session_id": "a b/c"}))
        assert await listed_ids(client) == ["mine"]


@pytest.mark.anyio
@pytest.mark.parametrize("bad", ["abc\n", "abc\r\n", "\nabc", "abc\x00", "a" * 65])
async def test_session_ids_with_a_trailing_newline_or_control_are_refused(
    crawlkeeper_client: Callable[..., Any], bad: str
) -> None:
    # `re.match` with `$` accepted "abc\n": `$` also matches before a trailing newline.
    async with crawlkeeper_client() as client:
        assert "invalid session_id" in error_text(await client.call_tool("create_session", {"session_id": bad}))
        assert await listed_ids(client) == []


@pytest.mark.anyio
async def test_cookies_reach_the_context_and_values_never_leave(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_app: Any, site: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cookies = [
        {"name": "sid", "value": CANARY},
        {"name": "pref", "value": "dark-mode", "domain": ".example.org", "path": "/", "httpOnly": True},
    ]
    async with crawlkeeper_client() as client:
        created = await client.call_tool(
            "create_session", {"session_id": "w", "url": f"{SITE}/app", "cookies": cookies}
        )
        assert not created.is_error, shown(created)
        context = crawlkeeper_app.sessions.get("w").context
        jar = {c["name"]: c for c in context.jar}
        assert jar["sid"]["value"] == CANARY
        assert jar["sid"]["domain"] == "example.com"  # no url/domain: applied to the session's url
        assert jar["pref"]["domain"] == ".example.org"
        assert created.structured_content["cookies"] == [
            {"name": "sid", "domain": "example.com"},
            {"name": "pref", "domain": ".example.org"},
        ]
        listing = await client.call_tool("list_sessions", {})
        crawled = await client.call_tool("crawl_url", {"url": f"{SITE}/page", "session_id": "w"})
        assert crawled.structured_content["session_id"] == "w"
        closed = await client.call_tool("close_session", {"session_id": "w"})
    assert listing.structured_content["sessions"][0]["cookies"] == created.structured_content["cookies"]
    for result in (created, listing, crawled, closed):
        assert CANARY not in shown(result)
    assert CANARY not in caplog.text
    assert "dark-mode" not in shown(created) + shown(listing)


@pytest.mark.anyio
async def test_cookie_without_url_or_domain_and_no_session_url(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_browser: Any
) -> None:
    async with crawlkeeper_client() as client:
        result = await client.call_tool("create_session", {"cookies": [{"name": "lonely", "value": CANARY}]})
        message = error_text(result)
        assert "'lonely'" in message
        assert "url" in message and "domain" in message
        assert CANARY not in message
        assert await listed_ids(client) == []
    assert crawlkeeper_browser.contexts and all(c.closed for c in crawlkeeper_browser.contexts)


@pytest.mark.anyio
async def test_cookie_only_session_does_not_navigate(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_browser: Any, crawlkeeper_app: Any
) -> None:
    async with crawlkeeper_client() as client:
        result = await client.call_tool(
            "create_session", {"cookies": [{"name": "tok", "value": "v-1234", "domain": "example.com", "path": "/"}]}
        )
        assert not result.is_error, shown(result)
        assert result.structured_content["url"] == "about:blank"
        sid = result.structured_content["session_id"]
        assert crawlkeeper_app.sessions.get(sid).context.cookie_names() == ["tok"]
    assert crawlkeeper_browser.navigations == []


@pytest.mark.anyio
async def test_sessions_are_isolated(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_app: Any, site: Any
) -> None:
    async with crawlkeeper_client() as client:
        for sid, name in (("one", "c_one"), ("two", "c_two")):
            result = await client.call_tool(
                "create_session", {"session_id": sid, "url": f"{SITE}/", "cookies": [{"name": name, "value": sid * 3}]}
            )
            assert not result.is_error, shown(result)
        set_result = await client.call_tool("crawl_url", {"url": f"{SITE}/set", "session_id": "one"})
        assert not set_result.is_error
        pooled = await client.call_tool("crawl_url", {"url": f"{SITE}/plain"})
        assert not pooled.is_error
        one, two = crawlkeeper_app.sessions.get("one"), crawlkeeper_app.sessions.get("two")
        assert one.context is not two.context
        assert one.context.cookie_names() == ["c_one", "visited"]
        assert two.context.cookie_names() == ["c_two"]
        listing = {s["session_id"]: s for s in (await client.call_tool("list_sessions", {})).structured_content[
            "sessions"]}
        assert [c["name"] for c in listing["two"]["cookies"]] == ["c_two"]
    session_contexts = {id(one.context), id(two.context)}
    pooled_contexts = [c for c in site.contexts if id(c) not in session_contexts]
    assert pooled_contexts, "a session-less crawl must not use a session's context"
    assert all(c.cookie_names() == [] for c in pooled_contexts)


# -- sessions that do not exist --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_unknown_closed_and_expired_sessions_say_which(
    crawlkeeper_client: Callable[..., Any], clocked_app: Any, fake_clock: Any, site: Any
) -> None:
    async with crawlkeeper_client() as client:
        unknown = error_text(await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "ghost"}))
        assert "unknown session 'ghost'" in unknown and "create_session" in unknown

        await client.call_tool("create_session", {"session_id": "gone"})
        assert (await client.call_tool("close_session", {"session_id": "gone"})).structured_content == {
            "session_id": "gone", "closed": True}
        closed = error_text(await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "gone"}))
        assert "'gone' was closed" in closed and "create_session" in closed
        again = error_text(await client.call_tool("close_session", {"session_id": "gone"}))
        assert "was closed" in again
        assert "unknown session" in error_text(await client.call_tool("close_session", {"session_id": "ghost"}))

        await client.call_tool("create_session", {"session_id": "old"})
        fake_clock.advance(100_000)
        expired = error_text(await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "old"}))
        assert "'old' expired" in expired and "create_session" in expired
    assert not [url for _, url in site.navigations]  # none of these calls reached the browser


@pytest.mark.anyio
@pytest.mark.parametrize(
    "crawlkeeper_config_toml", ['[sessions]\nmax_sessions = 2\n[plugins]\ndisable = ["statefile"]\n']
)
async def test_max_sessions_is_enforced_with_a_clear_error(crawlkeeper_client: Callable[..., Any]) -> None:
    async with crawlkeeper_client() as client:
        for sid in ("a", "b"):
            assert not (await client.call_tool("create_session", {"session_id": sid})).is_error
        message = error_text(await client.call_tool("create_session", {"session_id": "c"}))
        assert "max_sessions = 2" in message
        assert "close_session" in message
        await client.call_tool("close_session", {"session_id": "a"})
        assert not (await client.call_tool("create_session", {"session_id": "c"})).is_error
        assert sorted(await listed_ids(client)) == ["b", "c"]


# -- ordering ------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_same_session_in_order_different_sessions_in_parallel(
    crawlkeeper_app: Any, crawlkeeper_browser: Any, site: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = crawlkeeper_app
    await app.create_session(session_id="a")
    await app.create_session(session_id="b")
    original = crawlkeeper_browser.crawl
    starts: list[tuple[str, int]] = []
    active = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}
    go = asyncio.Event()

    async def slow_crawl(page: Any, url: str, options: Any) -> Any:
        query = parse_qs(urlsplit(url).query)
        sid, n = query["s"][0], int(query["n"][0])
        starts.append((sid, n))
        active[sid] += 1
        peak[sid] = max(peak[sid], active[sid])
        try:
            await asyncio.wait_for(go.wait(), 5)
            await asyncio.sleep(0.002)
            return await original(page, url, options)
        finally:
            active[sid] -= 1

    monkeypatch.setattr(crawlkeeper_browser, "crawl", slow_crawl)
    tasks = []
    for n in range(4):
        for sid in ("a", "b"):
            if sid == "b" and n == 3:
                continue
            tasks.append(asyncio.create_task(app.crawl(f"{SITE}/x?s={sid}&n={n}", session_id=sid)))
            await asyncio.sleep(0.005)  # arrival order
    # before anything may finish: exactly the first call of each session is running, side by side
    assert sorted(starts) == [("a", 0), ("b", 0)]
    assert active == {"a": 1, "b": 1}
    go.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert all(r["session_id"] in ("a", "b") for r in results)
    assert [n for s, n in starts if s == "a"] == [0, 1, 2, 3]
    assert [n for s, n in starts if s == "b"] == [0, 1, 2]
    assert peak == {"a": 1, "b": 1}


# -- plugin failures -----------------------------------------------------------------------------------------


class FailingCreation:
    """Raises in crawlkeeper_session_created for sessions whose id starts with 'bad'."""

    @hookimpl
    async def crawlkeeper_session_created(self, session: Any, request: Any) -> None:
        if request.session_id.startswith("bad"):
            raise RuntimeError("kaboom while preparing")


@pytest.mark.anyio
async def test_plugin_failure_in_session_created_fails_only_that_session(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_register: Callable[..., Any], crawlkeeper_browser: Any,
    site: Any,
) -> None:
    crawlkeeper_register(FailingCreation(), "failing_creation")
    async with crawlkeeper_client() as client:
        assert not (await client.call_tool("create_session", {"session_id": "good"})).is_error
        message = error_text(await client.call_tool("create_session", {"session_id": "bad1", "url": f"{SITE}/"}))
        assert "failing_creation" in message
        assert "kaboom while preparing" in message
        assert "session_created" in message
        assert await listed_ids(client) == ["good"]
        bad_context = crawlkeeper_browser.contexts[-1]
        assert bad_context.closed
        assert f"{SITE}/" not in crawlkeeper_browser.visited(bad_context)  # failed before navigating
        ok = await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "good"})
        assert not ok.is_error and ok.structured_content["title"] == "Home"
        bad = error_text(await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "bad1"}))
        assert "unknown session" in bad
        # the id is free again
        assert "already exists" not in error_text(await client.call_tool("create_session", {"session_id": "bad1"}))


@pytest.mark.anyio
@pytest.mark.parametrize("crawlkeeper_config_toml", ['[plugins]\ndisable = ["cookies"]\n'])
async def test_cookies_without_the_cookies_plugin_are_an_error(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_app: Any
) -> None:
    assert crawlkeeper_app.pm.get_plugin("cookies") is None
    async with crawlkeeper_client() as client:
        message = error_text(await client.call_tool(
            "create_session", {"url": f"{SITE}/", "cookies": [{"name": "sid", "value": CANARY}]}
        ))
        assert "no enabled plugin applies them" in message
        assert "'cookies'" in message
        assert CANARY not in message
        assert await listed_ids(client) == []
        assert not (await client.call_tool("create_session", {})).is_error  # without cookies it works


@pytest.mark.anyio
async def test_unknown_auth_method_lists_the_available_ones(crawlkeeper_client: Callable[..., Any]) -> None:
    async with crawlkeeper_client() as client:
        message = error_text(await client.call_tool("create_session", {"auth": "nope"}))
        assert "'nope'" in message
        assert "available auth methods" in message
        assert "cookies" in message
        assert await listed_ids(client) == []


class Params(BaseModel):
    greeting: str = "hello"


class BrokenLogin:
    @hookimpl
    def crawlkeeper_auth_methods(self) -> list[AuthMethod]:
        async def login(session: Any, params: Params) -> None:
            session.metadata["greeting"] = params.greeting
            raise CrawlError("the login form rejected the password")

        return [AuthMethod("broken_login", "always fails", Params, login)]


@pytest.mark.anyio
async def test_auth_login_failure_names_the_method_and_creates_nothing(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_register: Callable[..., Any], crawlkeeper_browser: Any
) -> None:
    crawlkeeper_register(BrokenLogin(), "broken_login_plugin")
    async with crawlkeeper_client() as client:
        message = error_text(await client.call_tool("create_session", {"auth": "broken_login"}))
        assert "broken_login" in message
        assert "the login form rejected the password" in message
        assert await listed_ids(client) == []
    assert crawlkeeper_browser.contexts[-1].closed


def test_two_plugins_with_one_auth_method_name(crawlkeeper_register: Callable[..., Any]) -> None:
    crawlkeeper_register(BrokenLogin(), "first_login")
    with pytest.raises(PluginError, match=r"auth method 'broken_login'.*first_login.*second_login|second_login.*first"):
        crawlkeeper_register(BrokenLogin(), "second_login")


# -- plugin tools --------------------------------------------------------------------------------------------


class ToolPlugin:
    @hookimpl
    def crawlkeeper_register_tools(self, registry: Any) -> None:
        async def shout(text: str, times: Annotated[int, Field(ge=1, le=3, description="Repeats.")] = 1) -> str:
            """Upper-case the text."""
            return " ".join([text.upper()] * times)

        async def session_count(app) -> str:  # type: ignore[no-untyped-def]
            """How many sessions are live (needs the app)."""
            return f"{len(app.sessions)} live sessions"

        async def refuse() -> str:
            """Always refuses."""
            raise CrawlError("refused on purpose; call shout instead")

        registry.add(shout)
        registry.add(session_count, name="session_count", read_only=True)
        registry.add(refuse, description="A tool that refuses.")


@pytest.mark.anyio
async def test_plugin_tools_are_listed_and_callable(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_register: Callable[..., Any]
) -> None:
    crawlkeeper_register(ToolPlugin(), "tool_plugin")
    async with crawlkeeper_client() as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert {"shout", "session_count", "refuse"} <= set(tools)
        assert tools["shout"].input_schema["required"] == ["text"]
        assert tools["shout"].input_schema["properties"]["times"]["maximum"] == 3
        assert "app" not in tools["session_count"].input_schema.get("properties", {})
        assert tools["refuse"].description == "A tool that refuses."
        shouted = await client.call_tool("shout", {"text": "quiet please"})
        assert not shouted.is_error
        assert "QUIET PLEASE" in shouted.content[0].text
        twice = await client.call_tool("shout", {"text": "hey", "times": 2})
        assert "HEY HEY" in twice.content[0].text
        assert (await client.call_tool("shout", {"text": "hey", "times": 9})).is_error  # validated by MCP
        await client.call_tool("create_session", {})
        counted = await client.call_tool("session_count", {})
        assert not counted.is_error, shown(counted)
        assert "1 live sessions" in counted.content[0].text
        refused = await client.call_tool("refuse", {})
        assert "refused on purpose" in error_text(refused)


def test_plugin_tool_name_clash_is_a_startup_error(crawlkeeper_register: Callable[..., Any]) -> None:
    class Clash:
        @hookimpl
        def crawlkeeper_register_tools(self, registry: Any) -> None:
            async def crawl_url(url: str) -> str:
                return url

            registry.add(crawl_url)

    with pytest.raises(PluginError) as info:
        crawlkeeper_register(Clash(), "clash")
    assert "'crawl_url'" in str(info.value)
    assert "plugin 'clash'" in str(info.value)
    assert info.value.plugin == "clash"


# -- shutdown and crashes ------------------------------------------------------------------------------------


class FaultyCloser:
    @hookimpl
    def crawlkeeper_session_closing(self, session: Any, reason: str) -> None:
        if session.id == "s2":
            raise RuntimeError("could not save s2")


class Lifecycle:
    def __init__(self) -> None:
        self.events: list[str] = []

    @hookimpl
    async def crawlkeeper_startup(self, server: Any) -> None:
        self.events.append("startup")

    @hookimpl
    async def crawlkeeper_shutdown(self, server: Any) -> None:
        self.events.append(f"shutdown with {len(server.sessions())} sessions")


@pytest.mark.anyio
async def test_shutdown_closes_every_session_even_if_a_closing_hook_raises(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_register: Callable[..., Any], crawlkeeper_browser: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = crawlkeeper_register(ClosingRecorder(), "recorder")
    crawlkeeper_register(FaultyCloser(), "faulty_closer")
    lifecycle = crawlkeeper_register(Lifecycle(), "lifecycle")
    async with crawlkeeper_client() as client:
        assert lifecycle.events == ["startup"]
        for sid in ("s1", "s2", "s3"):
            assert not (await client.call_tool("create_session", {"session_id": sid})).is_error
    assert sorted(recorder.closed) == [("s1", "shutdown"), ("s2", "shutdown"), ("s3", "shutdown")]
    assert lifecycle.events == ["startup", "shutdown with 0 sessions"]
    assert all(c.closed for c in crawlkeeper_browser.contexts)
    assert "faulty_closer" in caplog.text


@pytest.mark.anyio
async def test_close_session_runs_closing_hooks_with_reason_closed(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_register: Callable[..., Any], crawlkeeper_app: Any
) -> None:
    recorder = crawlkeeper_register(ClosingRecorder(), "recorder")
    async with crawlkeeper_client() as client:
        await client.call_tool("create_session", {"session_id": "x"})
        context = crawlkeeper_app.sessions.get("x").context
        await client.call_tool("close_session", {"session_id": "x"})
        assert recorder.closed == [("x", "closed")]
        assert context.closed


@pytest.mark.anyio
@pytest.mark.parametrize("crawlkeeper_config_toml", ['[plugins]\ndisable = ["statefile"]\n'])
async def test_browser_crash_loses_sessions_with_a_clear_message(
    crawlkeeper_client: Callable[..., Any], crawlkeeper_register: Callable[..., Any], crawlkeeper_browser: Any,
    site: Any,
) -> None:
    recorder = crawlkeeper_register(ClosingRecorder(), "recorder")
    async with crawlkeeper_client() as client:
        await client.call_tool("create_session", {"session_id": "doomed", "url": f"{SITE}/"})
        crawlkeeper_browser.crash()
        message = error_text(await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "doomed"}))
        assert "browser crashed" in message
        assert "create_session" in message
        assert await listed_ids(client) == []
        # the browser comes back for new sessions
        again = await client.call_tool("create_session", {"session_id": "doomed", "url": f"{SITE}/"})
        assert not again.is_error, shown(again)
        ok = await client.call_tool("crawl_url", {"url": f"{SITE}/", "session_id": "doomed"})
        assert not ok.is_error, shown(ok)
    assert ("doomed", "crashed") in recorder.closed
