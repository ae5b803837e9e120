"""Building the plugin manager and calling hooks.

``create_plugin_manager()`` is the one factory: block disabled names, register the entry points of group
``crawlkeeper`` (built-ins included, they are ordinary entry points), then ``check_pending()`` so a
misspelled hook is an error, not silence. ``CRAWLKEEPER_TRACE_PLUGINS=1`` logs every hook call to stderr.

Hooks are called through :class:`Hooks`, which names the plugin behind any exception, awaits async
implementations one by one with a timeout, and keeps one failing closing hook from stopping the others.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType, TracebackType
from typing import Any

import pluggy

from . import hookspecs
from .errors import CrawlkeeperError, PluginError

log = logging.getLogger("crawlkeeper.plugins")

ENTRY_POINT_GROUP = "crawlkeeper"
BUILTIN_PLUGINS = ("cookies", "profiles", "ttl", "statefile")
BUILTIN_DISTRIBUTION = "crawlkeeper"
TRACING = bool(os.environ.get("CRAWLKEEPER_TRACE_PLUGINS"))


@dataclass
class PluginInfo:
    """What ``crawlkeeper plugins`` shows about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    disabled: bool = False
    builtin: bool = False
    hooks: list[str] = field(default_factory=list)
    auth_methods: list[str] = field(default_factory=list)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus what crawlkeeper knows about each plugin (distribution, disabled)."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}

    def info(self, name: str) -> PluginInfo:
        return self.infos.setdefault(name, PluginInfo(name=name))

    def describe(self) -> list[PluginInfo]:
        """Every known plugin (loaded or disabled) with the hooks it implements."""
        for name, plugin in self.list_name_plugin():
            if plugin is None:
                continue
            info = self.info(name)
            info.hooks = sorted(h.name for h in self.get_hookcallers(plugin) or [])
        return sorted(self.infos.values(), key=lambda i: (not i.builtin, i.name))


def _env_list(name: str) -> list[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def create_plugin_manager(
    disable: Iterable[str] = (),
    *,
    load_entry_points: bool = True,
    extra_plugins: Iterable[tuple[str, object]] = (),
) -> PluginManager:
    """Build a fresh plugin manager.

    :param disable: plugin names to block (``[plugins] disable``); ``CRAWLKEEPER_DISABLE_PLUGINS`` adds more.
    :param load_entry_points: load the ``crawlkeeper`` entry-point group; ``CRAWLKEEPER_LOAD_PLUGINS``
        narrows it (empty: none at all; a comma list: only those).
    :param extra_plugins: ``(name, plugin)`` pairs registered after the entry points (tests, embedding).
    :raises PluginError: a plugin failed to import or declares a hook that does not exist.
    """
    pm = PluginManager()
    blocked = set(disable) | set(_env_list("CRAWLKEEPER_DISABLE_PLUGINS") or [])
    for name in blocked:
        pm.set_blocked(name)
        pm.info(name).disabled = True
    if os.environ.get("CRAWLKEEPER_TRACE_PLUGINS"):
        global TRACING
        TRACING = True
        _enable_tracing(pm)
    if load_entry_points:
        allow = _env_list("CRAWLKEEPER_LOAD_PLUGINS")
        for ep in _entry_points():
            _describe_entry_point(pm, ep)
            if allow is not None and ep.name not in allow:
                pm.info(ep.name).disabled = True
                continue
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # the message must name the plugin, whatever it raised
                raise PluginError(
                    f"plugin '{ep.name}' ({ep.value}) failed to import: {type(exc).__name__}: {exc}. "
                    f"Fix or uninstall it, or disable it with CRAWLKEEPER_DISABLE_PLUGINS={ep.name}",
                    plugin=ep.name,
                ) from exc
            if isinstance(plugin, type):
                plugin = plugin()  # a class entry point gets a fresh instance per plugin manager
            register(pm, plugin, ep.name)
    for name, plugin in extra_plugins:
        register(pm, plugin, name)
    return pm


def register(pm: PluginManager, plugin: object, name: str) -> None:
    """Register one plugin, turning pluggy's validation errors into messages that name it."""
    if pm.is_blocked(name):
        return
    try:
        pm.register(plugin, name=name)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        if pm.is_registered(plugin):
            pm.unregister(plugin)
        raise PluginError(f"plugin '{name}' is invalid: {exc}", plugin=name) from None
    info = pm.info(name)
    if info.module is None:
        info.module = getattr(plugin, "__name__", type(plugin).__module__)


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    seen: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        seen.setdefault(ep.name, ep)  # the first distribution on sys.path wins, as for imports
    return list(seen.values())


def _describe_entry_point(pm: PluginManager, ep: importlib.metadata.EntryPoint) -> None:
    info = pm.info(ep.name)
    dist = getattr(ep, "dist", None)
    if dist is not None:
        info.distribution = dist.metadata["Name"]
        info.version = dist.version
    info.module = ep.value
    info.builtin = ep.name in BUILTIN_PLUGINS and (info.distribution or "").lower() == BUILTIN_DISTRIBUTION


def _enable_tracing(pm: PluginManager) -> None:
    trace = logging.getLogger("crawlkeeper.trace")

    def before(hook_name: str, impls: list[pluggy.HookImpl], kwargs: dict[str, Any]) -> None:
        trace.info("hook %s -> %s", hook_name, ", ".join(i.plugin_name for i in reversed(impls)) or "(none)")

    def after(outcome: Any, hook_name: str, impls: list[pluggy.HookImpl], kwargs: dict[str, Any]) -> None:
        exc = outcome.exception
        trace.info("hook %s done%s", hook_name, f" (raised {type(exc).__name__})" if exc else "")

    pm.add_hookcall_monitoring(before, after)


def _trace(hook_name: str, plugin: str) -> None:
    if TRACING:
        logging.getLogger("crawlkeeper.trace").info("hook %s -> %s", hook_name, plugin)


def _plugin_of(pm: pluggy.PluginManager, hook_name: str, tb: TracebackType | None) -> str | None:
    """Which plugin's implementation raised: match traceback frames against the hook's implementations."""
    caller = getattr(pm.hook, hook_name, None)
    if caller is None:
        return None
    codes = {}
    for impl in caller.get_hookimpls():
        fn = inspect.unwrap(impl.function)
        code = getattr(fn, "__code__", None)
        if code is not None:
            codes[code] = impl.plugin_name
    found = None
    while tb is not None:
        found = codes.get(tb.tb_frame.f_code, found)
        tb = tb.tb_next
    return found


def plugin_name_for(pm: pluggy.PluginManager, plugin: object | ModuleType) -> str:
    return pm.get_name(plugin) or getattr(plugin, "__name__", repr(plugin))


class HookTimeout(PluginError):
    """A plugin's hook (or auth login) ran past ``[plugins] hook_timeout_s`` and was cut off."""


async def within(awaitable: Any, timeout_s: float, what: str, plugin: str | None) -> Any:
    """Await ``awaitable`` for at most ``timeout_s``. Only *our* deadline becomes :class:`HookTimeout`; a
    ``TimeoutError`` the plugin raises itself (a selector that never appeared) stays the plugin's error."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        who = f"plugin '{plugin}'" if plugin else "a plugin"
        raise HookTimeout(
            f"{who} did not finish {what} within {timeout_s:g} s ([plugins] hook_timeout_s); it was cut off",
            plugin=plugin,
        )
    return task.result()


class Hooks:
    """Calls hooks so that every failure names its plugin.

    Synchronous hooks go through pluggy (so tracing sees them); async implementations are awaited in
    call order, each with ``timeout_s``.
    """

    def __init__(self, pm: pluggy.PluginManager, timeout_s: float = 30.0) -> None:
        self.pm = pm
        self.timeout_s = timeout_s

    def call(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call a synchronous hook; an exception becomes a :class:`PluginError` naming the plugin
        (a :class:`CrawlkeeperError` raised on purpose keeps its type and message)."""
        try:
            return getattr(self.pm.hook, hook_name)(**kwargs)
        except CrawlkeeperError as exc:
            if exc.__class__ is PluginError:
                culprit = None if exc.plugin else _plugin_of(self.pm, hook_name, exc.__traceback__)
                if culprit:  # raised by the core on a plugin's behalf (a tool name clash): name the plugin
                    raise PluginError(f"plugin '{culprit}' failed in {hook_name}: {exc}", plugin=culprit) from None
                raise
            plugin = _plugin_of(self.pm, hook_name, exc.__traceback__)
            if plugin and not getattr(exc, "plugin", None):
                exc.plugin = plugin  # type: ignore[attr-defined]
            raise
        except Exception as exc:
            plugin = _plugin_of(self.pm, hook_name, exc.__traceback__) or "unknown"
            log.error("plugin %r raised in %s", plugin, hook_name, exc_info=True)
            raise PluginError(
                f"plugin '{plugin}' failed in {hook_name}: {type(exc).__name__}: {exc}", plugin=plugin
            ) from exc

    def collect(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call a list-returning hook and flatten the results as ``(plugin_name, item)`` pairs."""
        out: list[tuple[str, Any]] = []
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            _trace(hook_name, impl.plugin_name)
            try:
                items = impl.function(**{k: kwargs[k] for k in impl.argnames if k in kwargs})
            except CrawlkeeperError as exc:
                if not getattr(exc, "plugin", None):
                    exc.plugin = impl.plugin_name  # type: ignore[attr-defined]
                raise
            except Exception as exc:
                log.error("plugin %r raised in %s", impl.plugin_name, hook_name, exc_info=True)
                raise PluginError(
                    f"plugin '{impl.plugin_name}' failed in {hook_name}: {type(exc).__name__}: {exc}",
                    plugin=impl.plugin_name,
                ) from exc
            out.extend((impl.plugin_name, item) for item in items or [])
        return out

    async def acall(self, hook_name: str, *, keep_going: bool = False, **kwargs: Any) -> None:
        """Call an "async ok" hook: sync results are done; coroutines are awaited in order with a timeout.

        With ``keep_going`` every implementation runs and failures are only logged (closing hooks).
        """
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            name = impl.plugin_name
            _trace(hook_name, name)
            try:
                args = {k: kwargs[k] for k in impl.argnames if k in kwargs}
                result = impl.function(**args)
                if inspect.isawaitable(result):
                    await within(result, self.timeout_s, hook_name, name)
            except CrawlkeeperError as exc:
                if keep_going:
                    log.error("plugin %r failed in %s: %s", name, hook_name, exc)
                    continue
                if not getattr(exc, "plugin", None):
                    exc.plugin = name  # type: ignore[attr-defined]
                raise
            except Exception as exc:
                log.error("plugin %r raised in %s", name, hook_name, exc_info=True)
                if keep_going:
                    continue
                raise PluginError(
                    f"plugin '{name}' failed in {hook_name}: {type(exc).__name__}: {exc}", plugin=name
                ) from exc
