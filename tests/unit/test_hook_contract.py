"""The one hook-calling path keeps pluggy's contract, and the plugin contract's rules are checked at registration.

Each rule broken by a plugin fails when the plugin is registered, with a message naming the plugin, the hook and
the rule; wrappers, ``tryfirst``/``trylast`` and ``firstresult`` mean what they mean in pluggy.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import warnings
from collections.abc import Generator
from typing import Any

import pluggy
import pytest
from pydantic import BaseModel

from crawlkeeper import AuthMethod, CrawlRequest, PluginError, SessionExpired, hookimpl, hookspec
from crawlkeeper.plugins import Hooks, create_plugin_manager, register


def bare_pm(*plugins: tuple[str, object]) -> Any:
    return create_plugin_manager(load_entry_points=False, extra_plugins=plugins)


async def _login(session: Any, params: Any) -> None:
    pass


def method(name: str) -> AuthMethod:
    return AuthMethod(name, f"the {name} method", BaseModel, _login)


class Provider:
    def __init__(self, *names: str) -> None:
        self.names = names

    @hookimpl
    def crawlkeeper_auth_methods(self) -> list[AuthMethod]:
        return [method(n) for n in self.names]


# -- registration-time rules ----------------------------------------------------------------------------


class AsyncAcquire:
    @hookimpl
    async def crawlkeeper_session_acquire(self, session: Any) -> None:
        raise SessionExpired("never seen: the coroutine was never awaited")


class AsyncConfigure:
    @hookimpl
    async def crawlkeeper_configure(self, config: Any) -> None:
        pass


class AsyncAuthMethods:
    @hookimpl
    async def crawlkeeper_auth_methods(self) -> list[AuthMethod]:
        return []


@pytest.mark.parametrize(
    ("plugin", "hook"),
    [
        (AsyncAcquire(), "crawlkeeper_session_acquire"),
        (AsyncConfigure(), "crawlkeeper_configure"),
        (AsyncAuthMethods(), "crawlkeeper_auth_methods"),
    ],
)
def test_async_def_on_a_synchronous_hook_fails_at_registration(plugin: object, hook: str) -> None:
    pm = bare_pm()
    with pytest.raises(PluginError) as info:
        register(pm, plugin, "sneaky")
    message = str(info.value)
    assert "'sneaky'" in message
    assert hook in message
    assert "`async def` is not allowed" in message and "synchronous" in message
    assert info.value.plugin == "sneaky"
    assert not pm.is_registered(plugin)  # nothing half-registered


def test_async_def_is_refused_by_the_factory_too() -> None:
    with pytest.raises(PluginError, match=r"plugin 'sneaky'.*crawlkeeper_session_acquire.*async def"):
        bare_pm(("sneaky", AsyncAcquire()))


def test_async_def_on_an_async_ok_hook_is_accepted() -> None:
    class Fine:
        @hookimpl
        async def crawlkeeper_session_closing(self, session: Any, reason: str) -> None:
            pass

    pm = bare_pm(("fine", Fine()))
    assert pm.has_plugin("fine")


@pytest.mark.parametrize("opts", [{"wrapper": True}, {"hookwrapper": True}])
def test_wrapper_on_an_async_ok_hook_fails_at_registration(opts: dict[str, bool]) -> None:
    class Wrapping:
        @hookimpl(**opts)
        def crawlkeeper_session_closing(self, session: Any, reason: str) -> Generator[None, Any, Any]:
            return (yield)

    with pytest.raises(PluginError) as info:
        bare_pm(("wrapping", Wrapping()))
    message = str(info.value)
    assert "'wrapping'" in message and "crawlkeeper_session_closing" in message
    assert "hook wrappers" in message and "not supported on async-ok hooks" in message


def test_wrapper_on_the_historic_configure_hook_fails_at_registration() -> None:
    class Wrapping:
        @hookimpl(wrapper=True)
        def crawlkeeper_configure(self, config: Any) -> Generator[None, Any, Any]:
            return (yield)

    with pytest.raises(PluginError, match=r"plugin 'wrapping'.*crawlkeeper_configure.*historic"):
        bare_pm(("wrapping", Wrapping()))


def test_a_wrapped_coroutine_on_a_synchronous_hook_fails_when_called() -> None:
    """A sync callable that returns a coroutine slips past the registration check: it fails on first call,
    naming the plugin and the rule, and no 'never awaited' warning is left behind."""

    async def acquire(session: Any) -> None:
        raise SessionExpired("x")

    class Sneaky:
        crawlkeeper_session_acquire = hookimpl(staticmethod(functools.partial(acquire)))  # type: ignore[call-overload]

    plugin = Sneaky()
    pm = bare_pm()
    try:
        register(pm, plugin, "partial")
    except PluginError:
        return  # refused at registration: even better
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PluginError, match=r"plugin 'partial'.*crawlkeeper_session_acquire.*synchronous"):
            Hooks(pm).call("crawlkeeper_session_acquire", session=None)


# -- pluggy's contract is kept: wrappers, ordering, firstresult --------------------------------------------


def test_new_style_wrapper_on_a_collect_hook_is_honoured() -> None:
    class Filter:
        @hookimpl(wrapper=True)
        def crawlkeeper_auth_methods(self) -> Generator[None, list[list[AuthMethod]], list[list[AuthMethod]]]:
            results = yield
            return [[m for m in items if m.name != "hidden"] for items in results]

    hooks = Hooks(bare_pm(("provider", Provider("visible", "hidden")), ("filter", Filter())))
    pairs = hooks.collect("crawlkeeper_auth_methods")
    assert [(plugin, m.name) for plugin, m in pairs] == [("provider", "visible")]
    assert all(isinstance(m, AuthMethod) for _, m in pairs)  # never a generator object as an "item"


def test_old_style_hookwrapper_on_a_collect_hook_is_honoured() -> None:
    seen: list[str] = []

    class Watcher:
        @hookimpl(hookwrapper=True)
        def crawlkeeper_auth_methods(self) -> Generator[None, Any, None]:
            seen.append("before")
            outcome = yield
            seen.append(f"after {len(outcome.get_result())}")

    pairs = Hooks(bare_pm(("provider", Provider("a")), ("watcher", Watcher()))).collect("crawlkeeper_auth_methods")
    assert [(p, m.name) for p, m in pairs] == [("provider", "a")]
    assert seen == ["before", "after 1"]


def test_a_failing_wrapper_is_named() -> None:
    class Broken:
        @hookimpl(wrapper=True)
        def crawlkeeper_auth_methods(self) -> Generator[None, Any, Any]:
            yield
            raise RuntimeError("wrapper broke")

    with pytest.raises(PluginError, match=r"plugin 'broken' failed in crawlkeeper_auth_methods.*wrapper broke"):
        Hooks(bare_pm(("provider", Provider("a")), ("broken", Broken()))).collect("crawlkeeper_auth_methods")


def test_tryfirst_and_trylast_order_sync_hooks() -> None:
    class First:
        @hookimpl(tryfirst=True)
        def crawlkeeper_auth_methods(self) -> list[AuthMethod]:
            return [method("first")]

    class Last:
        @hookimpl(trylast=True)
        def crawlkeeper_auth_methods(self) -> list[AuthMethod]:
            return [method("last")]

    # registration order deliberately the opposite of the wanted call order
    pm = bare_pm(("first", First()), ("plain", Provider("plain")), ("last", Last()))
    names = [m.name for _, m in Hooks(pm).collect("crawlkeeper_auth_methods")]
    assert names == ["first", "plain", "last"]


@pytest.mark.anyio
async def test_tryfirst_and_trylast_order_async_hooks() -> None:
    calls: list[str] = []

    class Early:
        @hookimpl(tryfirst=True)
        async def crawlkeeper_session_closing(self, session: Any, reason: str) -> None:
            calls.append("early")

    class Plain:
        @hookimpl
        async def crawlkeeper_session_closing(self, session: Any, reason: str) -> None:
            calls.append("plain")

    class Late:
        @hookimpl(trylast=True)
        async def crawlkeeper_session_closing(self, session: Any, reason: str) -> None:
            await asyncio.sleep(0)
            calls.append("late")

    pm = bare_pm(("early", Early()), ("late", Late()), ("plain", Plain()))
    await Hooks(pm).acall("crawlkeeper_session_closing", session=None, reason="closed")
    assert calls == ["early", "plain", "late"]


class FirstResultSpecs:
    @hookspec(firstresult=True)
    def crawlkeeper_pick(self, key: str) -> str | None:
        """A test-only firstresult hook."""


def firstresult_pm(*plugins: tuple[str, object]) -> Any:
    pm = bare_pm()
    pm.add_hookspecs(FirstResultSpecs)
    for name, plugin in plugins:
        register(pm, plugin, name)
    return pm


def test_firstresult_sync_hook_returns_the_first_non_none_answer() -> None:
    asked: list[str] = []

    class Abstains:
        @hookimpl(tryfirst=True)
        def crawlkeeper_pick(self, key: str) -> str | None:
            asked.append("abstains")
            return None

    class Answers:
        @hookimpl
        def crawlkeeper_pick(self, key: str) -> str | None:
            asked.append("answers")
            return f"value of {key}"

    class NeverAsked:
        @hookimpl(trylast=True)
        def crawlkeeper_pick(self, key: str) -> str | None:
            asked.append("never")
            return "too late"

    pm = firstresult_pm(("never", NeverAsked()), ("answers", Answers()), ("abstains", Abstains()))
    assert Hooks(pm).call("crawlkeeper_pick", key="k") == "value of k"
    assert asked == ["abstains", "answers"]
    assert Hooks(firstresult_pm()).call("crawlkeeper_pick", key="k") is None


def test_firstresult_hook_refuses_async_at_registration() -> None:
    class AsyncPick:
        @hookimpl
        async def crawlkeeper_pick(self, key: str) -> str | None:
            return "a coroutine is never None, so it would always win"

    with pytest.raises(PluginError) as info:
        firstresult_pm(("async_pick", AsyncPick()))
    assert "'async_pick'" in str(info.value) and "crawlkeeper_pick" in str(info.value)
    assert "first non-None result" in str(info.value)


def test_firstresult_failure_names_the_plugin() -> None:
    class Broken:
        @hookimpl
        def crawlkeeper_pick(self, key: str) -> str | None:
            raise KeyError(key)

    with pytest.raises(PluginError, match=r"plugin 'broken' failed in crawlkeeper_pick: KeyError"):
        Hooks(firstresult_pm(("broken", Broken()))).call("crawlkeeper_pick", key="k")


# -- failures name the plugin, timeouts apply, nothing is left unawaited -------------------------------------


def test_collect_refuses_a_non_list_result_naming_the_plugin() -> None:
    class NotAList:
        @hookimpl
        def crawlkeeper_config_layers(self, request: Any) -> Any:
            return "oops"

    hooks = Hooks(bare_pm(("not_a_list", NotAList())))
    request = CrawlRequest(url=None, profile=None, session=None, arguments={})
    with pytest.raises(PluginError, match=r"plugin 'not_a_list' returned str from crawlkeeper_config_layers"):
        hooks.collect("crawlkeeper_config_layers", request=request)


@pytest.mark.anyio
async def test_a_sync_failure_closes_the_coroutines_of_async_implementations() -> None:
    ran: list[str] = []

    class AsyncOne:
        @hookimpl
        async def crawlkeeper_session_closing(self, session: Any, reason: str) -> None:
            ran.append("async")

    class SyncBroken:
        @hookimpl(trylast=True)
        def crawlkeeper_session_closing(self, session: Any, reason: str) -> None:
            raise ValueError("sync broke")

    pm = bare_pm(("async_one", AsyncOne()), ("sync_broken", SyncBroken()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(PluginError, match="'sync_broken'"):
            await Hooks(pm).acall("crawlkeeper_session_closing", session=None, reason="closed")
    assert ran == []


@pytest.mark.anyio
async def test_keep_going_runs_sync_and_async_implementations_past_failures(caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    class SyncBroken:
        @hookimpl(tryfirst=True)
        def crawlkeeper_session_closing(self, session: Any, reason: str) -> None:
            ran.append("sync_broken")
            raise ValueError("sync broke")

    class AsyncOk:
        @hookimpl
        async def crawlkeeper_session_closing(self, session: Any, reason: str) -> None:
            ran.append("async_ok")

    caplog.set_level(logging.ERROR, logger="crawlkeeper.plugins")
    pm = bare_pm(("async_ok", AsyncOk()), ("sync_broken", SyncBroken()))
    await Hooks(pm).acall("crawlkeeper_session_closing", keep_going=True, session=None, reason="closed")
    assert ran == ["sync_broken", "async_ok"]
    assert "sync_broken" in caplog.text


def test_a_late_plugin_failing_in_configure_is_named_and_not_registered() -> None:
    class Bad:
        @hookimpl
        def crawlkeeper_configure(self, config: Any) -> None:
            raise ValueError("cannot read my settings")

    pm = bare_pm()
    Hooks(pm).configure("CONFIG")
    plugin = Bad()
    with pytest.raises(PluginError, match=r"plugin 'late_bad' failed in crawlkeeper_configure.*cannot read"):
        register(pm, plugin, "late_bad")
    assert not pm.is_registered(plugin)


def test_configure_failure_names_the_plugin() -> None:
    class Bad:
        @hookimpl
        def crawlkeeper_configure(self, config: Any) -> None:
            raise ValueError("bad")

    with pytest.raises(PluginError, match=r"plugin 'bad' failed in crawlkeeper_configure"):
        Hooks(bare_pm(("bad", Bad()))).configure("CONFIG")


def test_call_refuses_an_async_ok_hook() -> None:
    with pytest.raises(TypeError, match="acall"):
        Hooks(bare_pm()).call("crawlkeeper_session_closing", session=None, reason="closed")


def test_pluggys_own_argument_validation_is_kept() -> None:
    class WrongArgs:
        @hookimpl
        def crawlkeeper_session_acquire(self, sesion: Any) -> None:
            pass

    with pytest.raises(PluginError, match=r"plugin 'wrong'.*crawlkeeper_session_acquire.*sesion"):
        bare_pm(("wrong", WrongArgs()))
    assert pluggy.PluginValidationError  # pluggy's error is what the factory translates


# -- the narrow Server handle for start-up and shutdown --------------------------------------------------------


def test_a_startup_hook_taking_app_is_refused_with_the_new_name() -> None:
    class Old:
        @hookimpl
        def crawlkeeper_startup(self, app: Any) -> None:
            pass

    with pytest.raises(PluginError) as info:
        bare_pm(("old", Old()))
    assert "'old'" in str(info.value) and "crawlkeeper_startup" in str(info.value)
    assert "`app` was replaced by `server`" in str(info.value)


@pytest.mark.anyio
async def test_startup_gets_a_server_handle_with_sessions_config_and_clock(
    crawlkeeper_app: Any, crawlkeeper_register: Any
) -> None:
    from crawlkeeper import Server

    seen: list[Any] = []

    class Watcher:
        @hookimpl
        def crawlkeeper_startup(self, server: Server) -> None:
            seen.append(server)

    crawlkeeper_register(Watcher(), "watcher")
    await crawlkeeper_app.startup()
    try:
        (server,) = seen
        assert isinstance(server, Server)
        assert not hasattr(server, "pm") and not hasattr(server, "backend")  # narrow: not the whole App
        assert server.config is crawlkeeper_app.config
        assert isinstance(server.clock(), float)
        created = await crawlkeeper_app.create_session(session_id="s1")
        (session,) = server.sessions()
        assert session.id == created["session_id"] and not server.in_use(session)
        with pytest.raises(ValueError, match="shutdown"):
            await server.close_session(session, "shutdown")
        assert await server.close_session(session, "evicted", "to make room")
        assert not await server.close_session(session, "evicted")  # already gone
        assert server.sessions() == []
    finally:
        await crawlkeeper_app.shutdown()
