"""The :class:`App` facade: builds the parts of a running server, starts and stops them, and keeps the public
methods that MCP tools, the HTTP transport, the CLI and tests call. Each behaviour lives in the part named for it
(see the package's docstring)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

from ..browser import BrowserBackend, PageLoad, PageResult, is_current, lost_with, make_backend
from ..config import Config
from ..egress import EgressPolicy
from ..errors import SessionError
from ..fairness import FairLimiter
from ..handle import Server
from ..logs import scrub_secrets
from ..models import AuthMethod, ConfigLayer, CrawlRequest, Profile, Session
from ..options import ContextOptions, CrawlOptions
from ..paging import ContentPager
from ..plugins import Hooks, PluginManager
from ..pressure import Governor
from ..principal import LOCAL, LOCAL_ID, Principal
from ..profiles import ProfileStore
from ..sessions import SessionRegistry
from ..state import SessionKeeper
from ..tools import ToolRegistry
from .durability import Durability, describe_saved
from .gate import EgressGate
from .layers import OptionLayers
from .logins import Logins
from .opening import SessionOpener, cookie_names
from .page_limits import PageHandler
from .pool import ContextPool
from .runner import PageRunner, PageTarget, ProgressCallback
from .warmup import WarmUp

log = logging.getLogger("crawlkeeper.app")

T = TypeVar("T")


class App:
    """Everything a running crawlkeeper server holds."""

    def __init__(
        self,
        config: Config,
        pm: PluginManager,
        *,
        backend: BrowserBackend | None = None,
        clock: Callable[[], float] = time.time,
        resolver: Any = None,
    ) -> None:
        self.config = config
        self.pm = pm
        self.clock = clock
        now = lambda: self.clock()  # noqa: E731 -- tests replace app.clock after construction
        settings = config.settings
        self.hooks = Hooks(pm, timeout_s=settings.plugins.hook_timeout_s)
        self.backend: BrowserBackend = backend or make_backend(settings, cache_dir())
        self.gate = EgressGate(settings.security, self.backend, resolver)
        self.policy = self.gate.policy
        self.backend.on_crash(self._on_crash)
        self.pages = PageHandler(self.backend)
        self.sessions = SessionRegistry(self.hooks, max_sessions=settings.sessions.max_sessions, clock=clock,
                                        park=self.pages.park_session)
        self.keeper = SessionKeeper(config)
        self._housekeeping: asyncio.Task[None] | None = None
        self.server = Server(config, self.sessions, now)  # what startup/shutdown hooks see
        self.profiles = ProfileStore(self.hooks, config)
        self.limiter = FairLimiter(settings.limits.max_concurrent_crawls, settings.limits.max_queued_calls)
        self.pager = ContentPager()
        self.tools = ToolRegistry()
        self.logins = Logins(config, pm, self.hooks, now)
        self.layers = OptionLayers(config, self.hooks, self.profiles, self.sessions)
        self.pool = ContextPool(self.backend, self.gate, self.pages,
                                max_parallel=settings.limits.max_concurrent_crawls)
        self.durability = Durability(config, self.keeper, self.sessions, self.hooks, self.backend, self.gate,
                                     self.layers, self.limiter, self.logins, now)
        self.sessions.on_closed = self.durability.session_closed
        self.opener = SessionOpener(config, self.hooks, self.sessions, self.keeper, self.backend, self.gate,
                                    self.layers, self.limiter, self.logins, self.pages, self.durability, now)
        self.runner = PageRunner(config, self.sessions, self.layers, self.gate, self.limiter, self.logins,
                                 self.pages, self.pool, self.durability, self.opener, self.pager, self.backend)
        self._started = False
        self.warmup = WarmUp(config, self.backend, self.gate, self.layers, self.pool)
        self._governor: asyncio.Task[None] | None = None  # fits the crawl slots to the CPU left (pressure.py)

    @property
    def auth_methods(self) -> dict[str, tuple[str, AuthMethod]]:
        """Auth methods by name, each with the plugin that provides it."""
        return self.logins.methods

    # -- lifecycle -----------------------------------------------------------------------------

    def configure(self) -> None:
        """Synchronous start-up: plugin settings, auth methods, plugin tools, first profile load."""
        self.hooks.configure(self.config)
        self.configure_plugins()

    def configure_plugins(self) -> None:
        """Collect auth methods, plugin tools and profiles (again, after a plugin was registered late)."""
        self.tools = ToolRegistry()
        self.logins.collect()
        self.hooks.call("crawlkeeper_register_tools", registry=self.tools)
        self.profiles.refresh(force=True)
        self.keeper.store = self.hooks.call("crawlkeeper_state_store", config=self.config)

    async def startup(self, *, warm_up: bool = True) -> None:
        """Start the app: startup hooks, housekeeping and (unless ``warm_up`` is false: the stdio server starts
        it once the client's ``initialize`` was answered, see :meth:`start_warm_up`) the browser warm-up."""
        if self._started:
            return
        await self.hooks.acall("crawlkeeper_startup", server=self.server)
        self._started = True
        if self.keeper.enabled:
            self._housekeeping = asyncio.get_running_loop().create_task(self.durability.keep_house())
        limits = self.config.settings.limits
        governor = Governor.for_settings(self.limiter, self.config.settings)
        if limits.adapt_to_cpu and governor.floor < governor.ceiling and governor.available:
            self._governor = asyncio.get_running_loop().create_task(governor.run())
        if warm_up:
            self.start_warm_up()  # Chromium starts beside the crawl4ai import, not after it

    async def launch_early(self) -> None:
        """Start launching the browser before :meth:`startup` (``[browser] warmup = "launch"`` or ``"early"``;
        see :mod:`crawlkeeper.early`): with ``"early"`` the stdio server calls this first, then imports the MCP
        SDK meanwhile."""
        await self.warmup.launch_early()

    def start_warm_up(self) -> None:
        """Start ``[browser] warmup`` in the background, once (later calls do nothing; see :class:`WarmUp`)."""
        if self._started:
            self.warmup.start()

    async def shutdown(self) -> None:
        """Save and close every session (reason ``shutdown``), run shutdown hooks, close the browser and proxies."""
        await self.warmup.cancel()  # its pooled context, if any, is closed below
        if self._governor is not None:
            self._governor.cancel()
            self._governor = None
        try:
            if self._housekeeping is not None:
                self._housekeeping.cancel()
                await asyncio.gather(self._housekeeping, return_exceptions=True)
                self._housekeeping = None
            if self.keeper.enabled:
                await self.keeper.flush()
                live = [s for s in self.sessions.all() if is_current(self.backend, s.generation)]
                if live and self.backend.alive:
                    # Within the MCP client's ~2 s shutdown window: what is not saved by then keeps its last save.
                    saving = asyncio.gather(*(self.keeper.save(s, force_times=True) for s in live))
                    try:
                        await asyncio.wait_for(saving, 1.2)
                    except asyncio.TimeoutError:
                        log.error("saving sessions at shutdown took too long; unsaved changes are lost")
            await self.sessions.close_all("shutdown")
            if self._started:
                await self.hooks.acall("crawlkeeper_shutdown", keep_going=True, server=self.server)
        finally:
            self._started = False
            await self.pool.close()
            try:
                await asyncio.wait_for(self.backend.close(), 5)
            except Exception as exc:
                log.error("closing the browser failed: %s", exc)
            await self.gate.close()
            await self.keeper.close()

    def _on_crash(self, generation: int) -> None:
        self.pool.forget()
        self.durability.crashed(generation)
        self.sessions.crashed(generation, lambda mine, lost: lost_with(self.backend, mine, lost))

    # -- options, egress, profiles (see layers.py, gate.py) -----------------------------------------

    def crawl_options(self, request: CrawlRequest, layers: list[ConfigLayer] | None = None) -> CrawlOptions:
        return self.layers.crawl_options(request, layers)

    def context_options(self, request: CrawlRequest, layers: list[ConfigLayer] | None = None) -> ContextOptions:
        return self.layers.context_options(request, layers)

    def crawl_options_for(self, session_id: str | None, profile: str | None, arguments: dict[str, Any],
                          principal: Principal | None = None) -> CrawlOptions:
        """The merged crawl options of a call (for tools that need them before loading a page)."""
        return self.layers.crawl_options_for(session_id, profile, arguments, principal)

    def profile(self, name: str | None) -> Profile | None:
        return self.layers.profile(name)

    async def session_profile(self, session_id: str, principal: Principal | None = None) -> str | None:
        """The profile of ``principal``'s session, restoring the session first when it is saved, not active."""
        return (await self.resume(session_id, (principal or LOCAL).id)).profile

    def profile_of(self, session_id: str | None, profile: str | None,
                   principal: Principal | None = None) -> Profile | None:
        """The profile a call uses: its session's (``principal``'s own), or the one it names."""
        return self.layers.profile_of(session_id, profile, principal)

    def policy_for(self, profile: Profile | None) -> EgressPolicy:
        return self.gate.policy_for(profile)

    async def proxy_url(self, policy: EgressPolicy) -> str:
        """The URL of the egress proxy for ``policy``, with its credentials (``http://U:P@127.0.0.1:PORT``)."""
        return await self.gate.proxy_url(policy)

    async def check_url(self, url: str, policy: EgressPolicy) -> None:
        """Refuse a top-level URL before the browser sees it (scheme, host, resolved address class)."""
        await self.gate.check_url(url, policy)

    async def robots_proxy(self, profile: str | None, session_id: str | None,
                           principal: Principal | None = None) -> str | None:
        """The egress proxy a side request (robots.txt) of a call goes through; None for a fake browser."""
        if not getattr(self.backend, "needs_proxy", True):
            return None
        return await self.gate.proxy_url(self.gate.policy_for(self.profile_of(session_id, profile, principal)))

    def check_scripts(self, arguments: dict[str, Any], *, holds: bool, where: str) -> dict[str, Any]:
        """Apply ``[security] js_code`` to a call's scripts (see :meth:`PageRunner.check_scripts`)."""
        return self.runner.check_scripts(arguments, holds=holds, where=where)

    def disabled_plugins(self) -> list[str]:
        """Names of installed plugins that are not loaded (for "its plugin is disabled" messages)."""
        return self.logins.disabled_plugins()

    def profile_problem(self, profile: Profile) -> str | None:
        """What is wrong with a profile, checked without using it: its own error, or its ``[auth]`` table against
        its method's params model (``crawlkeeper profiles``, ``doctor`` and ``list_profiles`` show it)."""
        problems = [profile.error, self.logins.problem(profile)]
        return "; ".join(p for p in problems if p) or None

    def list_profiles(self) -> list[dict[str, str]]:
        out = []
        for p in self.profiles.all():
            problem = self.profile_problem(p)
            out.append({"name": p.name, "description": f"(broken) {problem}" if problem else p.description})
        return out

    # -- crawling (see runner.py, pages.py, pool.py) ------------------------------------------------

    async def crawl(
        self,
        url: str,
        *,
        session_id: str | None = None,
        profile: str | None = None,
        cursor: str | None = None,
        principal: Principal | None = None,
        **arguments: Any,
    ) -> dict[str, Any]:
        """Crawl one URL (or fetch the next chunk of an earlier crawl when ``cursor`` is given), for
        ``principal`` (the local user by default): only its own sessions, under its share of the slots."""
        return await self.runner.crawl(url, session_id=session_id, profile=profile, cursor=cursor,
                                       principal=principal, **arguments)

    async def run_on_page(
        self,
        url: str,
        work: Callable[[Any, CrawlOptions], Awaitable[T]],
        *,
        session_id: str | None = None,
        profile: str | None = None,
        arguments: dict[str, Any] | None = None,
        principal: Principal | None = None,
        report: dict[str, Any] | None = None,
        judge: Callable[[T], PageResult | PageLoad | None] | None = None,
    ) -> tuple[T, CrawlOptions]:
        """Run ``work(page, options)`` for ``url`` in the session's page or a pooled page (see
        :meth:`PageRunner.run_on_page`). Every tool that loads a page uses this."""
        return await self.runner.run_on_page(url, work, session_id=session_id, profile=profile,
                                             arguments=arguments, principal=principal, report=report, judge=judge)

    def target(self, session_id: str | None = None, profile: str | None = None,
               principal: Principal | None = None) -> PageTarget:
        """Where a page tool works: ``session_id``'s page, or a pooled page for ``profile``, for ``principal``."""
        return PageTarget(self.runner, session_id, profile, principal)

    async def crawl_many(
        self,
        urls: list[str],
        *,
        concurrency: int = 4,
        progress: ProgressCallback | None = None,
        **arguments: Any,
    ) -> list[dict[str, Any]]:
        """Crawl every URL; results in input order, a failure as ``{url, error}`` in its own slot."""
        return await self.runner.crawl_many(urls, concurrency=concurrency, progress=progress, **arguments)

    # -- sessions (see opening.py, durability.py) ---------------------------------------------------

    async def create_session(
        self,
        *,
        session_id: str | None = None,
        url: str | None = None,
        cookies: list[dict[str, Any]] | None = None,
        profile: str | None = None,
        auth: str | None = None,
        ttl_s: float | None = None,
        temporary: bool = False,
        principal: Principal | None = None,
    ) -> dict[str, Any]:
        """Create a session (see CONTRACT.md and :meth:`SessionOpener.create_session`)."""
        return await self.opener.create_session(session_id=session_id, url=url, cookies=cookies, profile=profile,
                                                auth=auth, ttl_s=ttl_s, temporary=temporary, principal=principal)

    def using_session(self, session_id: str, owner: str = LOCAL_ID) -> AbstractAsyncContextManager[Session]:
        """Hold ``owner``'s session for one call (restoring it from saved state first if it is not active)."""
        return self.durability.using_session(session_id, owner)

    async def resume(self, session_id: str, owner: str = LOCAL_ID) -> Session:
        """The active session, or the saved one restored into a new context; else the precise error."""
        return await self.durability.resume(session_id, owner)

    async def hibernate(self, session: Session) -> bool:
        """Save an idle session and close its context; its next use restores it. False if it could not be."""
        return await self.durability.hibernate(session)

    async def sweep_expired(self) -> list[str]:
        """Delete saved, inactive sessions whose ``expires_at`` has passed (expiry deletes the state)."""
        return await self.durability.sweep_expired()

    async def cookie_names(self, session: Session) -> list[dict[str, str]]:
        return await cookie_names(session)

    async def list_sessions(
        self, *, principal: Principal | None = None, all_clients: bool = False
    ) -> list[dict[str, Any]]:
        """``principal``'s sessions, active then saved (``state``: ``hibernated``); with ``all_clients`` (admins
        only) everyone's, each with its owner."""
        who = principal or LOCAL
        if all_clients and not who.admin:
            raise SessionError("all_clients is for admin clients only (crawlkeeper token add NAME --admin)")
        out = []
        now = self.clock()
        for session in self.sessions.all(None if all_clients else who.id):
            if session.expires_at is not None and session.expires_at <= now:
                continue  # expired: the reaper (or the next use) closes it; it is no longer listed
            if session.temporary:
                continue  # one crawl's hidden session: not the caller's to use
            entry = self.sessions.describe(session, await self.cookie_names(session)) | {"state": "active"}
            endpoint_of = getattr(self.backend, "endpoint_of", None)
            if endpoint_of is not None:
                entry["endpoint"] = endpoint_of(session.context)
            if all_clients:
                entry["owner"] = session.owner
            out.append(entry)
        if self.keeper.enabled:
            for owner, sid in await self.keeper.stored_pairs():
                if (not all_clients and owner != who.id) or self.sessions.peek(sid, owner) is not None:
                    continue
                try:
                    state = await self.keeper.load(sid, owner)
                except SessionError as exc:
                    entry = {"session_id": sid, "profile": None, "created_at": None, "last_used_at": None,
                             "expires_at": None, "url": None, "cookies": [], "state": "hibernated", "error": str(exc)}
                else:
                    if state is None or (state.expires_at is not None and state.expires_at <= now):
                        continue
                    entry = describe_saved(state)
                if all_clients:
                    entry["owner"] = owner
                out.append(entry)
        return scrub_secrets(out)

    async def close_session(
        self, session_id: str, *, principal: Principal | None = None, owner: str | None = None
    ) -> dict[str, Any]:
        """Close ``principal``'s session (active or saved: its saved state is deleted). An admin may close another
        client's by naming its ``owner`` (or by id alone when only one client has a session with that id)."""
        who = principal or LOCAL
        target = who.id
        if owner is not None and owner != who.id:
            if not who.admin:
                raise SessionError("owner is for admin clients only; close your own sessions by session_id")
            target = owner
        elif owner is None and who.admin and all(s.id != session_id for s in self.sessions.all(who.id)):
            others = self.sessions.find(session_id)
            if len(others) > 1:
                owners = ", ".join(sorted(s.owner for s in others))
                raise SessionError(f"several clients have a session '{session_id}' ({owners}); pass owner")
            if others:
                target = others[0].owner
        if await self.sessions.close(session_id, "closed", owner=target):
            return {"session_id": session_id, "closed": True}
        if await self.durability.delete_saved(session_id, target):
            return {"session_id": session_id, "closed": True}
        self.sessions.get(session_id, target)  # raises the precise message
        return {"session_id": session_id, "closed": True}


def cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("crawlkeeper", appauthor=False)) / "crawl4ai"
