"""The hook contract's rules and the guards: what :mod:`crawlkeeper.plugins` applies when a plugin registers.

:func:`broken_rule` names the rule an implementation breaks (``async def`` only on hooks marked *async ok*, no
hook wrappers on those hooks, no ``app`` argument on the start-up hooks); the plugin manager's
``parse_hookimpl_opts`` refuses such a plugin before pluggy changes anything. :func:`_guarded` wraps each
implementation once, at registration, so that whatever it raises names its plugin (:func:`_named`), what it
returns is traced back to it, and an awaitable from an async implementation is handed back as a
:class:`_Pending` for :class:`crawlkeeper.plugins.Hooks` to await. ``Hooks`` sets the per-call state the
guards write to (``_CALL``, ``_KEEP_GOING``).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import CrawlkeeperError, PluginError

log = logging.getLogger("crawlkeeper.plugins")  # the messages keep the logger they had before this module split


def broken_rule(hook_name: str, attribute: Any, opts: pluggy.HookimplOpts, caller: Any = None) -> str | None:
    """The contract rule an implementation breaks, in words, or None. ``attribute`` is the raw attribute
    (a function, staticmethod or classmethod) as found on the plugin."""
    fn = attribute.__func__ if isinstance(attribute, staticmethod | classmethod) else attribute
    is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
    wrapper = bool(opts.get("wrapper") or opts.get("hookwrapper"))
    if is_async and hook_name not in hookspecs.ASYNC_HOOKS:
        allowed = ", ".join(sorted(hookspecs.ASYNC_HOOKS))
        firstresult = caller is not None and caller.spec is not None and caller.spec.opts.get("firstresult")
        why = "its first non-None result is used" if firstresult else (
            "the core needs its answer at once")
        return (f"`async def` is not allowed: this hook is synchronous ({why}); make it a plain `def` "
                f"(hooks that may be async: {allowed})")
    if wrapper and hook_name in hookspecs.ASYNC_HOOKS:
        return ("hook wrappers (wrapper=True / hookwrapper=True) are not supported on async-ok hooks: the "
                "implementations they would wrap are awaited after the wrapper has returned; order your "
                "implementation with tryfirst=True / trylast=True instead")
    if hook_name in ("crawlkeeper_startup", "crawlkeeper_shutdown") and not wrapper:
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        if "app" in params:
            return ("the argument `app` was replaced by `server` (a crawlkeeper.Server: sessions(), in_use(), "
                    "close_session(), config, clock()) in crawlkeeper 0.2.0; rename the parameter "
                    "(see CHANGELOG.md)")
    return None


# -- the guards -----------------------------------------------------------------------------------------

_KEEP_GOING: contextvars.ContextVar[bool] = contextvars.ContextVar("crawlkeeper_keep_going", default=False)


@dataclass
class _Pending:
    """What a guarded async implementation returns to pluggy: its awaitable, with its plugin's name."""

    plugin: str
    awaitable: Awaitable[Any]

    def discard(self) -> None:
        close = getattr(self.awaitable, "close", None)
        if close is not None:
            close()  # never awaited: close it so Python does not warn "coroutine was never awaited"


@dataclass
class _CallState:
    origins: dict[int, str] = field(default_factory=dict)  # id(result) -> plugin that returned it
    pending: list[_Pending] = field(default_factory=list)


#: Hooks whose arguments are secrets (a bearer token): a failure is logged by plugin and exception type only.
SECRET_ARGUMENT_HOOKS = frozenset({"crawlkeeper_verify_token"})

_CALL: contextvars.ContextVar[_CallState | None] = contextvars.ContextVar("crawlkeeper_hook_call", default=None)


def _named(exc: BaseException, plugin: str, hook_name: str) -> BaseException:
    """The exception to raise for ``exc`` raised by ``plugin`` in ``hook_name``: it names the plugin.

    A :class:`CrawlkeeperError` raised on purpose keeps its type and message (tagged with ``plugin``); a bare
    ``PluginError`` the core raised on the plugin's behalf (a tool name clash) gets the plugin's name; anything
    else becomes a :class:`PluginError`."""
    if isinstance(exc, CrawlkeeperError):
        if type(exc) is PluginError and not exc.plugin:
            return PluginError(f"plugin '{plugin}' failed in {hook_name}: {exc}", plugin=plugin)
        if not getattr(exc, "plugin", None):
            exc.plugin = plugin  # type: ignore[attr-defined]
        return exc
    if hook_name in SECRET_ARGUMENT_HOOKS:  # the message or a traceback frame may quote the token
        log.error("plugin %r raised %s in %s (details withheld: its argument is a secret)",
                  plugin, type(exc).__name__, hook_name)
        return PluginError(f"plugin '{plugin}' failed in {hook_name}: {type(exc).__name__}", plugin=plugin)
    log.error("plugin %r raised in %s", plugin, hook_name, exc_info=exc)
    return PluginError(f"plugin '{plugin}' failed in {hook_name}: {type(exc).__name__}: {exc}", plugin=plugin)


def _guarded(fn: Callable[..., Any], plugin: str, hook_name: str, may_await: bool) -> Callable[..., Any]:
    """Wrap one implementation so that whatever it raises names ``plugin``, and what it returns is traced back
    to it. Installed once, at registration; pluggy still does the calling."""
    if getattr(fn, "_crawlkeeper_guarded", False):
        return fn

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            err = _named(exc, plugin, hook_name)
            if _KEEP_GOING.get():
                if err is exc:
                    log.error("plugin %r failed in %s: %s", plugin, hook_name, exc)
                return None
            if err is exc:
                raise
            raise err from exc
        state = _CALL.get()
        if inspect.isawaitable(result):
            if not may_await:  # an async callable the registration check could not see (a wrapped coroutine)
                _Pending(plugin, result).discard()
                raise PluginError(
                    f"plugin '{plugin}' returned an awaitable from {hook_name}, which is synchronous (rule: "
                    "`async def` only on async-ok hooks); make the implementation a plain `def`", plugin=plugin)
            pending = _Pending(plugin, result)
            if state is not None:
                state.pending.append(pending)
            return pending
        if state is not None and result is not None:
            state.origins[id(result)] = plugin
            if isinstance(result, list | tuple):  # items keep their plugin when a wrapper rebuilds the list
                state.origins.update((id(item), plugin) for item in result)
        return result

    guarded._crawlkeeper_guarded = True  # type: ignore[attr-defined]
    return guarded


__all__ = ["SECRET_ARGUMENT_HOOKS", "broken_rule"]
