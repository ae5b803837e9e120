"""Building the plugin manager and calling hooks.

``create_plugin_manager()`` is the one factory: block disabled names, register the entry points of group
``crawlkeeper`` (built-ins included, they are ordinary entry points), then ``check_pending()`` so a
misspelled hook is an error, not silence. ``CRAWLKEEPER_TRACE_PLUGINS=1`` logs every hook call to stderr.

The rules of the contract (:mod:`crawlkeeper.hookrules`) are checked where a plugin enters
(:meth:`PluginManager.parse_hookimpl_opts`, run by pluggy's ``register`` before anything changes): ``async def``
only on hooks marked *async ok*, no hook wrappers on those hooks, no ``app`` argument on the start-up hooks. A
plugin breaking one fails at registration with a message naming the plugin, the hook and the rule.

Every hook is then called one way, through :class:`Hooks`, which calls pluggy itself (so wrappers,
``tryfirst``/``trylast``, ``firstresult``, ``historic`` and tracing keep pluggy's meaning). Each implementation
is guarded at registration (the guards are in :mod:`crawlkeeper.hookrules` too): an exception names its plugin,
an awaitable returned by an async implementation is awaited afterwards in call order with ``[plugins]
hook_timeout_s``.
"""

from __future__ import annotations

import asyncio
import difflib
import importlib.metadata
import inspect
import logging
import os
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType, TracebackType
from typing import Any

import pluggy

from . import hookspecs
from .errors import CrawlkeeperError, PluginError
from .hookrules import (  # the rules and guards; re-exported, so every name of this module keeps working
    _CALL,
    _KEEP_GOING,
    _CallState,
    _guarded,
    _named,
    _Pending,
    broken_rule,
)
from .hookrules import SECRET_ARGUMENT_HOOKS as SECRET_ARGUMENT_HOOKS  # public: importable from here

log = logging.getLogger("crawlkeeper.plugins")

ENTRY_POINT_GROUP = "crawlkeeper"
BUILTIN_PLUGINS = ("cookies", "profiles", "ttl", "tokens", "statefile")
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
    """pluggy's manager plus crawlkeeper's registration rules and what it knows about each plugin."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.known: set[str] = set(BUILTIN_PLUGINS)  # every installed or given plugin name, loaded or not

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

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        """pluggy's parsing plus crawlkeeper's rules, checked before pluggy changes anything (see module doc)."""
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None:
            return None
        hook_name = opts.get("specname") or name
        caller = getattr(self.hook, hook_name, None)
        if caller is None or not caller.has_spec():
            return opts  # an unknown hook: check_pending() reports it with its name
        problem = broken_rule(hook_name, inspect.getattr_static(plugin, name), opts, caller)
        if problem:
            raise pluggy.PluginValidationError(plugin, f"hook {hook_name}: {problem}")
        return opts

    def register(self, plugin: object, name: str | None = None) -> str | None:
        """Register ``plugin`` and guard its implementations (see :class:`Hooks`).

        A historic hook (``crawlkeeper_configure``) already called is replayed for the new plugin inside
        pluggy's ``register``; an exception there leaves nothing registered and names the plugin."""
        plugin_name = name or self.get_canonical_name(plugin)
        already = self.get_name(plugin) is not None
        try:
            registered = super().register(plugin, name=plugin_name)
        except Exception as exc:
            if already or self.get_name(plugin) is None:
                raise  # pluggy refused it (invalid, or registered twice): nothing of the plugin ran
            self.unregister(plugin)  # it raised while the historic hook was replayed for it
            raise _named(exc, plugin_name, "crawlkeeper_configure") from exc
        if registered is not None:
            for caller in self.get_hookcallers(plugin) or []:
                may_await = caller.name in hookspecs.ASYNC_HOOKS
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin and not (impl.wrapper or impl.hookwrapper):
                        impl.function = _guarded(impl.function, impl.plugin_name, caller.name, may_await)
        return registered


def _env_list(environ: Mapping[str, str], name: str) -> list[str] | None:
    value = environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def create_plugin_manager(
    disable: Iterable[str] = (),
    *,
    load_entry_points: bool = True,
    extra_plugins: Iterable[tuple[str, object]] = (),
    environ: Mapping[str, str] | None = None,
) -> PluginManager:
    """Build a fresh plugin manager.

    :param disable: plugin names to block (``[plugins] disable``); ``CRAWLKEEPER_DISABLE_PLUGINS`` adds more.
    :param load_entry_points: load the ``crawlkeeper`` entry-point group; ``CRAWLKEEPER_LOAD_PLUGINS``
        narrows it (empty: none at all; a comma list: only those).
    :param extra_plugins: ``(name, plugin)`` pairs registered after the entry points (tests, embedding).
    :param environ: where ``CRAWLKEEPER_DISABLE_PLUGINS``, ``CRAWLKEEPER_LOAD_PLUGINS`` and
        ``CRAWLKEEPER_TRACE_PLUGINS`` are read (``os.environ`` by default; ``{}`` in the test fixtures).
    :raises PluginError: a plugin failed to import or declares a hook that does not exist.
    """
    environ = os.environ if environ is None else environ
    pm = PluginManager()
    blocked = set(disable) | set(_env_list(environ, "CRAWLKEEPER_DISABLE_PLUGINS") or [])
    for name in blocked:
        pm.set_blocked(name)
        pm.info(name).disabled = True
    if environ.get("CRAWLKEEPER_TRACE_PLUGINS"):
        global TRACING
        TRACING = True
        _enable_tracing(pm)
    if load_entry_points:
        allow = _env_list(environ, "CRAWLKEEPER_LOAD_PLUGINS")
        for ep in _entry_points():
            _describe_entry_point(pm, ep)
            pm.known.add(ep.name)
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
        pm.known.add(name)
        register(pm, plugin, name)
    return pm


def _unknown(names: Iterable[str], known: set[str]) -> list[str]:
    """One phrase per unknown name: ``'baerer' (did you mean 'bearer'?)``."""
    out = []
    for name in names:
        if name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
        out.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return out


def check_plugin_names(pm: PluginManager, config: Any, environ: Mapping[str, str] | None = None) -> None:
    """Refuse plugin names that match no installed plugin, wherever they are given: ``[plugins] disable``,
    ``CRAWLKEEPER_DISABLE_PLUGINS``, ``CRAWLKEEPER_LOAD_PLUGINS`` and ``[plugins.<name>]`` tables. A typo there
    would otherwise leave the plugin someone meant to switch off (or configure) silently as it was.

    :raises PluginError: naming the setting, the unknown names and the closest installed names.
    """
    environ = os.environ if environ is None else environ
    known = set(pm.known)
    installed = ", ".join(sorted(known)) or "none"
    problems = []
    sources: list[tuple[str, list[str]]] = [
        (f"[plugins] disable in {config.origin}", list(config.settings.plugins.disable)),
    ]
    for var in ("CRAWLKEEPER_DISABLE_PLUGINS", "CRAWLKEEPER_LOAD_PLUGINS"):
        sources.append((f"environment variable {var}", _env_list(environ, var) or []))
    tables = [name for name, value in (config.settings.plugins.model_extra or {}).items() if isinstance(value, dict)]
    for name in tables:
        var = config.env_origins.get(("plugins", name)) or next(
            (v for k, v in config.env_origins.items() if k[:2] == ("plugins", name)), None)
        where = f"environment variable {var}" if var else config.origin
        sources.append((f"[plugins.{name}] in {where}", [name]))
    for where, names in sources:
        unknown = _unknown(names, known)
        if unknown:
            problems.append(f"{where} names no installed plugin: {', '.join(unknown)}")
    if problems:
        raise PluginError("; ".join(problems) + f". Installed plugins: {installed}")


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
        detail = str(exc).replace("\n", " ")
        raise PluginError(f"plugin '{name}' is invalid: {detail}", plugin=name) from None
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



def _trace(message: str, *args: Any) -> None:
    if TRACING:
        logging.getLogger("crawlkeeper.trace").info(message, *args)


def _plugin_of(pm: pluggy.PluginManager, hook_name: str, tb: TracebackType | None) -> str | None:
    """Which plugin raised, for what escaped the guards (a hook wrapper): match traceback frames."""
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


async def within(awaitable: Awaitable[Any], timeout_s: float, what: str, plugin: str | None) -> Any:
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


# -- the one hook-calling path -------------------------------------------------------------------------

class Hooks:
    """The one way the core calls hooks.

    Every call goes through pluggy (wrappers, ``tryfirst``/``trylast``, ``firstresult``, ``historic`` and
    tracing keep their meaning); the implementations were guarded at registration, so any failure names its
    plugin. ``call`` is for synchronous hooks, ``collect`` for list-returning ones (items paired with the
    plugin that returned them), ``acall`` for *async ok* hooks: synchronous implementations run during the
    pluggy call, then the awaitables of async ones are awaited in call order, each within ``timeout_s``.
    """

    def __init__(self, pm: PluginManager, timeout_s: float = 30.0) -> None:
        self.pm = pm
        self.timeout_s = timeout_s

    def _run(self, hook_name: str, kwargs: dict[str, Any], *, historic: bool = False) -> tuple[Any, _CallState]:
        caller = getattr(self.pm.hook, hook_name)
        state = _CallState()
        token = _CALL.set(state)
        try:
            if historic:
                caller.call_historic(kwargs=kwargs)
                result = None
            else:
                result = caller(**kwargs)
        except Exception as exc:
            for pending in state.pending:
                pending.discard()
            err = self._unguarded(hook_name, exc)
            if err is exc:
                raise
            raise err from exc
        finally:
            _CALL.reset(token)
        return result, state

    def _unguarded(self, hook_name: str, exc: Exception) -> BaseException:
        """Name the plugin of an exception the guards did not see (raised by a hook wrapper)."""
        if isinstance(exc, CrawlkeeperError) and getattr(exc, "plugin", None):
            return exc
        culprit = _plugin_of(self.pm, hook_name, exc.__traceback__)
        if culprit is None:
            if isinstance(exc, CrawlkeeperError):
                return exc
            culprit = "unknown"
        return _named(exc, culprit, hook_name)

    def configure(self, config: Any) -> None:
        """``crawlkeeper_configure``: historic, so a plugin registered later is configured at registration."""
        self._run("crawlkeeper_configure", {"config": config}, historic=True)

    def call(self, hook_name: str, **kwargs: Any) -> Any:
        """Call a synchronous hook: pluggy's result (a list, or one value or None for a firstresult hook)."""
        if hook_name in hookspecs.ASYNC_HOOKS:
            raise TypeError(f"{hook_name} may be async: call it with acall()")
        return self._run(hook_name, kwargs)[0]

    def collect(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call a list-returning hook and flatten the results as ``(plugin_name, item)`` pairs."""
        results, state = self._run(hook_name, kwargs)
        out: list[tuple[str, Any]] = []
        for items in results:
            plugin = state.origins.get(id(items), "unknown")  # "unknown": a hook wrapper made it
            if not isinstance(items, list | tuple):
                raise PluginError(
                    f"plugin '{plugin}' returned {type(items).__name__} from {hook_name}; return a list "
                    "(an empty one when you have nothing to add)", plugin=plugin)
            out.extend((state.origins.get(id(item), plugin), item) for item in items)
        return out

    async def acall(self, hook_name: str, *, keep_going: bool = False, **kwargs: Any) -> list[Any]:
        """Call an *async ok* hook; return every non-None result, awaited.

        With ``keep_going`` every implementation runs and failures are only logged (closing, shutdown).
        """
        token = _KEEP_GOING.set(keep_going)
        try:
            results, _ = self._run(hook_name, kwargs)
        finally:
            _KEEP_GOING.reset(token)
        out: list[Any] = []
        for index, result in enumerate(results):
            if not isinstance(result, _Pending):
                out.append(result)
                continue
            _trace("hook %s awaiting %s", hook_name, result.plugin)
            try:
                value = await within(result.awaitable, self.timeout_s, hook_name, result.plugin)
            except Exception as exc:
                err = _named(exc, result.plugin, hook_name)
                if keep_going:
                    if err is exc:
                        log.error("plugin %r failed in %s: %s", result.plugin, hook_name, exc)
                    continue
                for later in results[index + 1:]:
                    if isinstance(later, _Pending):
                        later.discard()
                if err is exc:
                    raise
                raise err from exc
            if value is not None:
                out.append(value)
        return out
