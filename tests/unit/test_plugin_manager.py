"""The plugin manager factory (blocking, allowlist, entry points, validation, tracing) and ``Hooks``."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import sys
import time
import types
from typing import Any

import pytest
from pydantic import BaseModel

import crawlkeeper.plugins as ck_plugins
from crawlkeeper import AuthMethod, ConfigError, CrawlkeeperError, CrawlRequest, PluginError, hookimpl
from crawlkeeper.config import load_config
from crawlkeeper.plugins import Hooks, create_plugin_manager, register
from crawlkeeper_plugins.ttl import TTLPlugin

BUILTINS = {"cookies", "profiles", "ttl"}


def loaded(pm: Any) -> set[str]:
    return {name for name, plugin in pm.list_name_plugin() if plugin is not None}


def fake_entry_point(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name=name, value=value, group="crawlkeeper")


def bare_pm(*plugins: tuple[str, object]) -> Any:
    return create_plugin_manager(load_entry_points=False, extra_plugins=plugins)


# -- blocking and the allowlist ---------------------------------------------------------------------------


def test_builtins_are_loaded_from_entry_points() -> None:
    pm = create_plugin_manager()
    assert loaded(pm) >= BUILTINS
    infos = {i.name: i for i in pm.describe()}
    for name in BUILTINS:
        assert infos[name].builtin and not infos[name].disabled
        assert infos[name].distribution and infos[name].distribution.lower() == "crawlkeeper"
    assert "crawlkeeper_session_acquire" in infos["ttl"].hooks
    assert "crawlkeeper_session_created" in infos["cookies"].hooks


def test_disable_argument_blocks_names() -> None:
    pm = create_plugin_manager(["ttl"])
    assert "ttl" not in loaded(pm)
    assert {"cookies", "profiles"} <= loaded(pm)
    assert pm.is_blocked("ttl")
    assert pm.infos["ttl"].disabled
    # a blocked name stays blocked for plugins registered later under it
    register(pm, TTLPlugin(), "ttl")
    assert pm.get_plugin("ttl") is None


def test_disable_environment_variable_blocks_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLKEEPER_DISABLE_PLUGINS", " ttl , cookies ")
    pm = create_plugin_manager(["profiles"])
    assert loaded(pm) & BUILTINS == set()
    assert all(pm.infos[name].disabled for name in BUILTINS)


def test_load_plugins_empty_loads_no_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLKEEPER_LOAD_PLUGINS", "")
    pm = create_plugin_manager()
    assert loaded(pm) == set()
    # what was skipped is still described (as disabled) for `crawlkeeper plugins`
    assert all(pm.infos[name].disabled for name in BUILTINS)


def test_load_plugins_list_loads_only_those(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLKEEPER_LOAD_PLUGINS", "ttl")
    pm = create_plugin_manager()
    assert loaded(pm) == {"ttl"}
    assert isinstance(pm.get_plugin("ttl"), TTLPlugin)
    assert pm.infos["cookies"].disabled and not pm.infos["ttl"].disabled


def test_load_plugins_allowlist_still_honours_disable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAWLKEEPER_LOAD_PLUGINS", "ttl,cookies")
    monkeypatch.setenv("CRAWLKEEPER_DISABLE_PLUGINS", "ttl")
    assert loaded(create_plugin_manager()) == {"cookies"}


def test_config_file_disable_reaches_the_factory(tmp_path: Any) -> None:
    path = tmp_path / "crawlkeeper.toml"
    path.write_text('[plugins]\ndisable = ["cookies"]\n', encoding="utf-8")
    config = load_config(path)
    assert config.disabled_plugins == ["cookies"]
    assert "cookies" not in loaded(create_plugin_manager(config.disabled_plugins))


# -- validation and import errors ----------------------------------------------------------------------


class Misspelled:
    @hookimpl
    def crawlkeeper_sesion_created(self, session: Any) -> None:  # one "s" short
        pass


def test_misspelled_hook_is_an_error_naming_plugin_and_hook() -> None:
    with pytest.raises(PluginError) as info:
        bare_pm(("typo_plugin", Misspelled()))
    message = str(info.value)
    assert "typo_plugin" in message
    assert "crawlkeeper_sesion_created" in message
    assert info.value.plugin == "typo_plugin"


def test_misspelled_hook_from_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("ck_fake_typo_mod")
    module.Misspelled = Misspelled  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ck_fake_typo_mod", module)
    monkeypatch.setattr(ck_plugins, "_entry_points", lambda: [fake_entry_point("typo", "ck_fake_typo_mod:Misspelled")])
    with pytest.raises(PluginError, match=r"plugin 'typo'.*crawlkeeper_sesion_created"):
        create_plugin_manager()


def test_register_rejects_bad_argument_names_and_leaves_nothing_registered() -> None:
    class WrongArgs:
        @hookimpl
        def crawlkeeper_session_acquire(self, session: Any, nonsense: Any) -> None:
            pass

    pm = bare_pm()
    plugin = WrongArgs()
    with pytest.raises(PluginError, match="wrong_args"):
        register(pm, plugin, "wrong_args")
    assert not pm.is_registered(plugin)


def test_entry_point_that_fails_to_import_names_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ck_plugins, "_entry_points", lambda: [fake_entry_point("broken_one", "nonexistent_mod_xyz")])
    with pytest.raises(PluginError) as info:
        create_plugin_manager()
    message = str(info.value)
    assert "broken_one" in message
    assert "nonexistent_mod_xyz" in message
    assert "CRAWLKEEPER_DISABLE_PLUGINS=broken_one" in message
    assert info.value.plugin == "broken_one"


def test_broken_entry_point_can_be_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ck_plugins, "_entry_points", lambda: [fake_entry_point("broken_one", "nonexistent_mod_xyz")])
    monkeypatch.setenv("CRAWLKEEPER_DISABLE_PLUGINS", "broken_one")
    pm = create_plugin_manager()
    assert loaded(pm) == set()
    assert pm.infos["broken_one"].disabled


def test_class_entry_points_get_a_fresh_instance_per_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []

    class Counted:
        def __init__(self) -> None:
            made.append(self)

        @hookimpl
        def crawlkeeper_session_acquire(self, session: Any) -> None:
            pass

    module = types.ModuleType("ck_fake_class_mod")
    module.Counted = Counted  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ck_fake_class_mod", module)
    monkeypatch.setattr(ck_plugins, "_entry_points", lambda: [fake_entry_point("counted", "ck_fake_class_mod:Counted")])
    first, second = create_plugin_manager(), create_plugin_manager()
    assert len(made) == 2
    assert first.get_plugin("counted") is made[0]
    assert second.get_plugin("counted") is made[1]
    # and the real built-in class entry point too
    monkeypatch.undo()
    a, b = create_plugin_manager(), create_plugin_manager()
    assert isinstance(a.get_plugin("ttl"), TTLPlugin)
    assert a.get_plugin("ttl") is not b.get_plugin("ttl")


# -- tracing -------------------------------------------------------------------------------------------


class AuthProvider:
    @hookimpl
    def crawlkeeper_auth_methods(self) -> list[AuthMethod]:
        async def login(session: Any, params: Any) -> None:
            pass

        return [AuthMethod("fake_auth", "a fake", BaseModel, login)]


def test_tracing_logs_hook_calls(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("CRAWLKEEPER_TRACE_PLUGINS", "1")
    monkeypatch.setattr(ck_plugins, "TRACING", False)  # the factory must turn it on from the environment
    caplog.set_level(logging.INFO, logger="crawlkeeper.trace")
    pm = create_plugin_manager(extra_plugins=[("auth_provider", AuthProvider())])
    assert ck_plugins.TRACING is True
    hooks = Hooks(pm)
    hooks.call("crawlkeeper_auth_methods")
    hooks.collect("crawlkeeper_config_layers", request=CrawlRequest(url=None, profile=None, session=None, arguments={}))
    traced = [r.getMessage() for r in caplog.records if r.name == "crawlkeeper.trace"]
    assert any("crawlkeeper_auth_methods" in m and "auth_provider" in m and "cookies" in m for m in traced), traced
    assert any("crawlkeeper_auth_methods done" in m for m in traced), traced
    assert any("crawlkeeper_config_layers -> profiles" in m for m in traced), traced  # collect traces per plugin


@pytest.mark.anyio
async def test_tracing_covers_async_hooks(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(ck_plugins, "TRACING", True)
    caplog.set_level(logging.INFO, logger="crawlkeeper.trace")
    await Hooks(bare_pm(("starter", Starter()))).acall("crawlkeeper_startup", server=None)
    assert any(
        "crawlkeeper_startup" in r.getMessage() and "starter" in r.getMessage()
        for r in caplog.records
        if r.name == "crawlkeeper.trace"
    )


def test_no_tracing_by_default(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(ck_plugins, "TRACING", False)
    caplog.set_level(logging.INFO, logger="crawlkeeper.trace")
    pm = create_plugin_manager(extra_plugins=[("auth_provider", AuthProvider())])
    hooks = Hooks(pm)
    hooks.call("crawlkeeper_auth_methods")
    hooks.collect("crawlkeeper_auth_methods")
    assert not [r for r in caplog.records if r.name == "crawlkeeper.trace"]


# -- Hooks: naming plugins, timeouts, keep_going ------------------------------------------------------------


class Starter:
    def __init__(self) -> None:
        self.started: list[Any] = []
        self.stopped: list[Any] = []

    @hookimpl
    async def crawlkeeper_startup(self, server: Any) -> None:
        self.started.append(server)

    @hookimpl
    def crawlkeeper_shutdown(self, server: Any) -> None:
        self.stopped.append(server)


class Exploder:
    @hookimpl
    async def crawlkeeper_startup(self, server: Any) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("boom in startup")


class Sleeper:
    @hookimpl
    async def crawlkeeper_startup(self, server: Any) -> None:
        await asyncio.sleep(30)


class Closer:
    def __init__(self, name: str, log: list[tuple[str, str]], fail: bool = False, hang: bool = False) -> None:
        self.name, self.log, self.fail, self.hang = name, log, fail, hang

    @hookimpl
    async def crawlkeeper_session_closing(self, session: Any, reason: str) -> None:
        self.log.append((self.name, reason))
        if self.hang:
            await asyncio.sleep(30)
        if self.fail:
            raise ValueError(f"{self.name} could not save")


@pytest.mark.anyio
async def test_acall_awaits_async_and_runs_sync_implementations() -> None:
    starter = Starter()
    hooks = Hooks(bare_pm(("starter", starter)))
    await hooks.acall("crawlkeeper_startup", server="APP")
    await hooks.acall("crawlkeeper_shutdown", server="APP")
    assert starter.started == ["APP"]
    assert starter.stopped == ["APP"]


@pytest.mark.anyio
async def test_acall_names_the_plugin_that_raised() -> None:
    hooks = Hooks(bare_pm(("starter", Starter()), ("exploder", Exploder())))
    with pytest.raises(PluginError) as info:
        await hooks.acall("crawlkeeper_startup", server=None)
    message = str(info.value)
    assert "'exploder'" in message
    assert "crawlkeeper_startup" in message
    assert "boom in startup" in message
    assert info.value.plugin == "exploder"


@pytest.mark.anyio
async def test_acall_keeps_crawlkeeper_errors_and_tags_the_plugin() -> None:
    class Refuser:
        @hookimpl
        async def crawlkeeper_startup(self, server: Any) -> None:
            raise ConfigError("bad settings for refuser")

    with pytest.raises(ConfigError, match="bad settings for refuser") as info:
        await Hooks(bare_pm(("refuser", Refuser()))).acall("crawlkeeper_startup", server=None)
    assert info.value.plugin == "refuser"  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_acall_cuts_off_a_hanging_hook_naming_the_plugin() -> None:
    hooks = Hooks(bare_pm(("sleeper", Sleeper())), timeout_s=0.05)
    started = time.monotonic()
    with pytest.raises(PluginError) as info:
        await hooks.acall("crawlkeeper_startup", server=None)
    assert time.monotonic() - started < 2
    message = str(info.value)
    assert "'sleeper'" in message
    assert "0.05 s" in message
    assert "crawlkeeper_startup" in message


@pytest.mark.anyio
async def test_acall_keep_going_runs_every_implementation(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[str, str]] = []
    pm = bare_pm(
        ("first", Closer("first", calls)),
        ("faulty", Closer("faulty", calls, fail=True)),
        ("hanging", Closer("hanging", calls, hang=True)),
        ("last", Closer("last", calls)),
    )
    caplog.set_level(logging.ERROR, logger="crawlkeeper.plugins")
    await Hooks(pm, timeout_s=0.05).acall("crawlkeeper_session_closing", keep_going=True, session=None, reason="closed")
    assert sorted(name for name, _ in calls) == ["faulty", "first", "hanging", "last"]
    assert {reason for _, reason in calls} == {"closed"}
    errors = caplog.text
    assert "faulty" in errors
    assert "hanging" in errors


@pytest.mark.anyio
async def test_acall_without_keep_going_stops_at_the_failure() -> None:
    calls: list[tuple[str, str]] = []
    # pluggy calls the last registered implementation first
    pm = bare_pm(("after", Closer("after", calls)), ("faulty", Closer("faulty", calls, fail=True)))
    with pytest.raises(PluginError, match=r"'faulty'.*faulty could not save"):
        await Hooks(pm).acall("crawlkeeper_session_closing", session=None, reason="closed")
    assert calls == [("faulty", "closed")]


class BadAuth:
    @hookimpl
    def crawlkeeper_auth_methods(self) -> list[AuthMethod]:
        raise KeyError("no such secret store")


def test_collect_names_the_plugin_and_pairs_items_with_names() -> None:
    hooks = Hooks(bare_pm(("auth_provider", AuthProvider())))
    pairs = hooks.collect("crawlkeeper_auth_methods")
    assert [(name, method.name) for name, method in pairs] == [("auth_provider", "fake_auth")]

    hooks = Hooks(bare_pm(("auth_provider", AuthProvider()), ("bad_auth", BadAuth())))
    with pytest.raises(PluginError) as info:
        hooks.collect("crawlkeeper_auth_methods")
    assert "'bad_auth'" in str(info.value)
    assert "crawlkeeper_auth_methods" in str(info.value)
    assert "no such secret store" in str(info.value)
    assert info.value.plugin == "bad_auth"


def test_collect_keeps_crawlkeeper_errors_and_tags_the_plugin() -> None:
    class Strict:
        @hookimpl
        def crawlkeeper_load_profiles(self, config: Any) -> list[Any]:
            raise ConfigError("vault is sealed")

    with pytest.raises(ConfigError, match="vault is sealed") as info:
        Hooks(bare_pm(("strict", Strict()))).collect("crawlkeeper_load_profiles", config=None)
    assert info.value.plugin == "strict"  # type: ignore[attr-defined]


def test_call_names_the_plugin_of_a_sync_hook() -> None:
    class Acquirer:
        @hookimpl
        def crawlkeeper_session_acquire(self, session: Any) -> None:
            raise RuntimeError("acquire broke")

    with pytest.raises(PluginError) as info:
        Hooks(bare_pm(("acquirer", Acquirer()))).call("crawlkeeper_session_acquire", session=None)
    assert "'acquirer'" in str(info.value)
    assert "acquire broke" in str(info.value)
    assert isinstance(info.value, CrawlkeeperError)


def test_configure_is_historic_for_late_plugins() -> None:
    seen: list[Any] = []

    class Configurable:
        @hookimpl
        def crawlkeeper_configure(self, config: Any) -> None:
            seen.append(config)

    pm = bare_pm()
    pm.hook.crawlkeeper_configure.call_historic(kwargs={"config": "CONFIG"})
    register(pm, Configurable(), "late")
    assert seen == ["CONFIG"]
