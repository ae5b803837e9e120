"""The application: config, plugins, browser, sessions, profiles and the crawl pipeline, wired together.

MCP tools and CLI commands are thin layers over :class:`App`; plugins see a narrow handle on it, a
:class:`~crawlkeeper.Server`, in ``crawlkeeper_startup``/``crawlkeeper_shutdown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import guard
from .auth import auth_problem
from .auth import choose as choose_auth
from .browser import BrowserBackend, PageResult, html_to_text, make_backend
from .config import Config
from .egress import EgressPolicy, EgressProxy, EgressRefused
from .errors import (
    ConfigError,
    CrawlError,
    CrawlkeeperError,
    PageCrashed,
    PageTimeout,
    PageTooLarge,
    PluginError,
    SessionError,
    first_line,
)
from .fairness import FairLimiter
from .handle import Server
from .headers import SessionHeaders, holds_credentials, own_sites, resolve_headers
from .logs import register_secret, safe_url, scrub, scrub_secrets
from .models import (
    AuthMethod,
    ConfigLayer,
    CrawlRequest,
    Profile,
    Session,
    SessionRequest,
)
from .options import ContextOptions, CrawlOptions, Layer, merge
from .paging import ContentPager
from .plugins import Hooks, PluginManager, within
from .principal import LOCAL, LOCAL_ID, Principal
from .profiles import ProfileStore
from .scripts import wait_kind
from .sessions import SESSION_ID_RE, SessionMoved, SessionRegistry, iso, page_url
from .state import SavedState, SessionKeeper, apply, delete_hint
from .tools import ToolRegistry

log = logging.getLogger("crawlkeeper.app")

ProgressCallback = Callable[[int, int, str], Awaitable[None]]
T = TypeVar("T")
_TIMEOUT_GRACE_S = 2.0
_MAX_POOLED_CONTEXTS = 4
_IDLE_SLOTS_PER_ENTRY = 2
_PAGE_REUSES = 25  # crawls per pooled context before it is replaced (bounds renderer memory growth)


_RECYCLE_WAIT_S = 5.0  # a wipe normally takes milliseconds; past this, open a new context instead


@dataclass
class _Slot:
    """One session-less browser identity: a context and its page, used by one crawl at a time."""

    context: Any
    page: Any = None
    uses: int = 0  # crawls it served


@dataclass
class _PoolEntry:
    """Session-less contexts with equal options. Each crawl holds a context of its own (so concurrent calls
    never see each other's cookies), and a context is wiped before it is used again."""

    key: str
    generation: int
    options: ContextOptions
    proxy: str | None
    users: int = 0
    holds_secrets: bool = False  # a credential header from the configuration (js_code policy)
    idle: list[_Slot] = field(default_factory=list)
    recycling: set[asyncio.Future[None]] = field(default_factory=set)  # slots being wiped after their call


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
        settings = config.settings
        self.hooks = Hooks(pm, timeout_s=settings.plugins.hook_timeout_s)
        self.policy = EgressPolicy.from_lists(
            allow_private=settings.security.allow_private,
            allowed_schemes=settings.security.allowed_schemes,
        )
        self._resolver = resolver
        self._proxies: dict[EgressPolicy, EgressProxy] = {}
        self.backend: BrowserBackend = backend or make_backend(settings, cache_dir())
        self.backend.on_crash(self._on_crash)
        self.sessions = SessionRegistry(self.hooks, max_sessions=settings.sessions.max_sessions, clock=clock,
                                        park=self._park_session)
        self.sessions.on_closed = self._session_closed
        self.keeper = SessionKeeper(config)
        self._restoring: dict[tuple[str, str], asyncio.Lock] = {}  # by (owner, session id)
        self._crash_notes: dict[tuple[str, str], str] = {}
        self._housekeeping: asyncio.Task[None] | None = None
        self.server = Server(config, self.sessions, lambda: self.clock())  # what startup/shutdown hooks see
        self.profiles = ProfileStore(self.hooks, config)
        self.limiter = FairLimiter(settings.limits.max_concurrent_crawls, settings.limits.max_queued_calls)
        self.pager = ContentPager()
        self.tools = ToolRegistry()
        self.auth_methods: dict[str, tuple[str, AuthMethod]] = {}
        self._pool: OrderedDict[str, _PoolEntry] = OrderedDict()
        self._pool_lock = asyncio.Lock()
        self._cleanups: set[asyncio.Future[Any]] = set()
        self._started = False
        self._warmup: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def configure(self) -> None:
        """Synchronous start-up: plugin settings, auth methods, plugin tools, first profile load."""
        self.hooks.configure(self.config)
        self.configure_plugins()

    def configure_plugins(self) -> None:
        """Collect auth methods, plugin tools and profiles (again, after a plugin was registered late)."""
        self.auth_methods = {}
        self.tools = ToolRegistry()
        for plugin, method in self.hooks.collect("crawlkeeper_auth_methods"):
            if method.name in self.auth_methods:
                other = self.auth_methods[method.name][0]
                raise PluginError(
                    f"two plugins provide the auth method '{method.name}': '{other}' and '{plugin}'; "
                    f"disable one (e.g. CRAWLKEEPER_DISABLE_PLUGINS={plugin})",
                    plugin=plugin,
                )
            self.auth_methods[method.name] = (plugin, method)
        self.hooks.call("crawlkeeper_register_tools", registry=self.tools)
        self.profiles.refresh(force=True)
        self.keeper.store = self.hooks.call("crawlkeeper_state_store", config=self.config)

    async def startup(self) -> None:
        if self._started:
            return
        await self.hooks.acall("crawlkeeper_startup", server=self.server)
        self._started = True
        if self.keeper.enabled:
            self._housekeeping = asyncio.get_running_loop().create_task(self._keep_house())
        mode = self.config.settings.browser.warmup
        if mode != "off" and hasattr(self.backend, "warm_up"):
            self._warmup = asyncio.get_running_loop().create_task(self._warm_up(mode))

    async def _warm_up(self, mode: str) -> None:
        """Use the time an agent spends thinking after ``initialize``: import crawl4ai (off the event loop),
        then launch the browser, so the first call does not pay ~2 s for them. Failures surface on that call."""
        try:
            await self.backend.warm_up()  # type: ignore[attr-defined]
            if mode == "launch":
                await self._ensure_browser(self.policy)
            log.info("warm-up done (%s)", mode)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("warm-up failed (%s); the first call will try again", first_line(exc))

    async def shutdown(self) -> None:
        """Save and close every session (reason ``shutdown``), run shutdown hooks, close the browser and proxies."""
        if self._warmup is not None and not self._warmup.done():
            self._warmup.cancel()
        try:
            if self._housekeeping is not None:
                self._housekeeping.cancel()
                await asyncio.gather(self._housekeeping, return_exceptions=True)
                self._housekeeping = None
            if self.keeper.enabled:
                await self.keeper.flush()
                live = [s for s in self.sessions.all() if s.generation == self.backend.generation]
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
            recycling = [task for entry in self._pool.values() for task in entry.recycling]
            if recycling:  # session-less contexts still being wiped after their call: let them land
                await asyncio.wait(recycling, timeout=2)
            for entry in list(self._pool.values()):
                for slot in entry.idle:
                    await _close_quietly(slot.context)  # matters with cdp_url: the remote browser lives on
            self._pool.clear()
            try:
                await asyncio.wait_for(self.backend.close(), 5)
            except Exception as exc:
                log.error("closing the browser failed: %s", exc)
            for proxy in self._proxies.values():
                await proxy.close()
            self._proxies.clear()
            await self.keeper.close()

    def _on_crash(self, generation: int) -> None:
        self._pool.clear()
        for session in self.sessions.all():
            if session.generation <= generation and self.keeper.was_saved(session):
                # Its state is saved: the next use restores it into the relaunched browser.
                self.sessions.detach(session)
                session.hibernated = session.closed = True
                session.note = ("the browser crashed; the session was restored from its last saved state "
                                "(changes made in the last seconds before the crash may be missing)")
                self._crash_notes[(session.owner, session.id)] = session.note
                asyncio.get_running_loop().create_task(self.keeper.release(session.id, session.owner))
        self.sessions.crashed(generation)

    # -- config merge ----------------------------------------------------------------------------

    def _layers(self, request: CrawlRequest) -> list[ConfigLayer]:
        layers = [layer for _, layer in self.hooks.collect("crawlkeeper_config_layers", request=request)]
        return sorted(layers, key=lambda layer: layer.priority)  # stable: equal priorities keep plugin order

    def crawl_options(self, request: CrawlRequest, layers: list[ConfigLayer] | None = None) -> CrawlOptions:
        layers = self._layers(request) if layers is None else layers
        return merge(
            CrawlOptions,
            [
                Layer(f"the config file ({self.config.origin}) [crawl]", self.config.raw.get("crawl", {})
                      | self.config.settings.crawl.model_dump(exclude_unset=True)),
                *(Layer(layer.source, layer.crawl) for layer in layers),
                Layer("the call's arguments", request.arguments),
            ],
            what="crawl",
        )

    def context_options(self, request: CrawlRequest, layers: list[ConfigLayer] | None = None) -> ContextOptions:
        layers = self._layers(request) if layers is None else layers
        return merge(
            ContextOptions,
            [
                Layer(f"the config file ({self.config.origin}) [browser]",
                      self.config.settings.browser.context_options()),
                *(Layer(layer.source, layer.browser) for layer in layers),
            ],
            what="browser",
        )

    # -- egress ------------------------------------------------------------------------------------

    def policy_for(self, profile: Profile | None) -> EgressPolicy:
        if profile is None or not profile.security:
            return self.policy
        try:
            return self.policy.narrowed(
                allow_private=profile.security.get("allow_private"),
                allowed_domains=profile.security.get("allowed_domains"),
            )
        except ValueError as exc:
            raise ConfigError(f"{profile.label} [security]: {exc}") from None

    async def proxy_url(self, policy: EgressPolicy) -> str:
        """The URL of the egress proxy for ``policy``, with its credentials (``http://U:P@127.0.0.1:PORT``)."""
        proxy = self._proxies.get(policy)
        if proxy is None:
            proxy = self._proxies[policy] = EgressProxy(policy, self._resolver)
            if proxy.credentials is not None:  # a local process holding them could use the proxy: never log them
                register_secret(proxy.credentials.password)
                register_secret(proxy.credentials.header.split(" ", 1)[1])
        await proxy.start()
        return proxy.url_with_credentials

    async def check_url(self, url: str, policy: EgressPolicy) -> None:
        """Refuse a top-level URL before the browser sees it (scheme, host, resolved address class)."""
        try:
            host, port = policy.check_url(url)
            await policy.resolve_and_check(host, port, self._resolver)
        except EgressRefused as exc:
            raise CrawlError(f"refused to crawl {safe_url(url)}: {exc}") from None
        except OSError:
            raise CrawlError(f"could not load {safe_url(url)}: the host name does not resolve") from None

    # -- profiles ---------------------------------------------------------------------------------

    def profile(self, name: str | None) -> Profile | None:
        return None if name is None else self.profiles.get(name)

    # -- crawling ---------------------------------------------------------------------------------

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
        who = principal or LOCAL
        arguments = {k: v for k, v in arguments.items() if v is not None}
        if cursor:
            request = CrawlRequest(url=url, profile=None, session=None, arguments=arguments)
            max_chars = self.crawl_options(request).max_chars
            content, next_cursor, meta = self.pager.next(cursor, url, max_chars)
            return {**meta, "content": content, "truncated": next_cursor is not None, "next_cursor": next_cursor}

        async def work(page: Any, options: CrawlOptions) -> PageResult:
            return await self.backend.crawl(page, url, options)

        report: dict[str, Any] = {}
        page_result, options = await self.run_on_page(
            url, work, session_id=session_id, profile=profile, arguments=arguments, principal=who, report=report
        )
        result = await self._shape(page_result, options, session_id)
        if report:  # a crawl in a session: was it restored, logged in again?
            result["restored"] = report["restored"]
            result["relogged_in"] = report["relogged_in"]
            if report["note"]:
                result["note"] = report["note"]
        return result

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
    ) -> tuple[T, CrawlOptions]:
        """Run ``work(page, options)`` for ``url`` in the session's page, or a pooled page of a context for the
        profile: options merged by the one pipeline, the URL checked by the egress policy, under the global
        limit and the overall deadline (a page that hangs is abandoned). Every tool that loads a page uses this.

        In a session, a saved one is restored first, and a :class:`PageResult` the site sent logged out leads to
        one re-login and a retry; ``report`` (if given) receives ``restored``, ``relogged_in`` and ``note``.

        ``principal`` (the local user by default) may use only its own sessions, under its share of the slots.
        """
        who = principal or LOCAL
        arguments = {k: v for k, v in (arguments or {}).items() if v is not None}
        if session_id is not None:
            # The session first (arrival order), then a global slot: calls queued on one session must not hold
            # slots other sessions need. A saved (hibernated, or pre-restart) session is restored here.
            async with self.using_session(session_id, who.id) as session:
                if profile is not None and profile != session.profile:
                    raise CrawlError(
                        f"session '{session_id}' was created with profile {session.profile!r}; a session keeps "
                        "its profile: drop the profile argument or create another session"
                    )
                prof = self.profile(session.profile)
                arguments = self.check_scripts(
                    arguments, holds=session.holds_secrets or bool(session.headers and session.headers.holds_secrets),
                    where=f"session '{session_id}'")
                request = CrawlRequest(url=url, profile=prof, session=session, arguments=arguments)
                options = self.crawl_options(request)
                policy = self.policy_for(prof)
                await self.check_url(url, policy)
                async with self.limiter.slot(who.id):
                    result = await self._crawl_page(session, url, options, work)
                relogged_in = False
                if isinstance(result, PageResult) and self._logged_out(session, result):
                    # Never hand back the login page as if it were the content: log in again, once, and retry.
                    await self._relogin(session, prof, result)
                    async with self.limiter.slot(who.id):
                        result = await self._crawl_page(session, url, options, work)
                    if isinstance(result, PageResult) and self._logged_out(session, result):
                        raise SessionError(
                            f"session '{session_id}' is still logged out after logging in again with "
                            f"'{session.auth}' ({_where(result)}); check the profile's [auth] settings, or "
                            "close the session and create it again"
                        )
                    relogged_in = True
                note, session.note = session.note, None
                if report is not None:
                    report.update(restored=note is not None, relogged_in=relogged_in, note=note)
                return result, options
        prof = self.profile(profile)
        if prof is not None and (prof.cookies or prof.auth):
            self.check_scripts(arguments, holds=True, where=f"a crawl with {prof.label}")
            return await self._in_temporary_session(url, prof, arguments, work, who)
        request = CrawlRequest(url=url, profile=prof, session=None, arguments=arguments)
        layers = self._layers(request)
        context_options = self.context_options(request, layers)
        where = f"a crawl with {prof.label}" if prof else "a crawl with credential headers from the configuration"
        arguments = self.check_scripts(arguments, holds=holds_credentials(context_options.extra_headers),
                                       where=where)
        request.arguments = arguments
        options = self.crawl_options(request, layers)
        policy = self.policy_for(prof)
        await self.check_url(url, policy)
        async with self.limiter.slot(who.id):
            return await self._crawl_pooled(url, options, context_options, policy, work), options

    def _logged_out(self, session: Session, page: PageResult) -> bool:
        verdicts = self.hooks.call("crawlkeeper_logged_out", session=session, result=page)
        return any(v is True for v in verdicts or [])

    async def _relogin(self, session: Session, prof: Profile | None, page: PageResult) -> None:
        """Run the session's auth method again, bounded per hour; a clear error when it cannot be done."""
        sid, where = session.id, _where(page)
        if not session.auth:
            raise SessionError(
                f"session '{sid}' was logged out by the site ({where}); create it again, or give its profile an "
                "[auth] method so crawlkeeper can log it in again by itself"
            )
        now = self.clock()
        limit = self.config.settings.sessions.max_relogins_per_hour
        recent = [t for t in session.metadata.get(RELOGINS_KEY, []) if isinstance(t, int | float) and now - t < 3600]
        if len(recent) >= limit:
            raise SessionError(
                f"session '{sid}' was logged out by the site ({where}) and was already logged in again {len(recent)} "
                f"times in the last hour ([sessions] max_relogins_per_hour = {limit}); check that the login "
                "works (credentials, the site), then close the session and create it again"
            )
        session.metadata[RELOGINS_KEY] = [*recent, now]
        try:
            chosen = choose_auth(session.auth, prof, self.auth_methods, self.disabled_plugins())
            if chosen is None:
                raise SessionError(f"auth method '{session.auth}' gave nothing to log in with")
            method, params = chosen
            await session.ensure_page()
            plugin = self.auth_methods[method.name][0]
            await within(method.login(session, params), self.hooks.timeout_s, "its login", plugin)
        except Exception as exc:
            detail = str(exc) if isinstance(exc, CrawlkeeperError) else f"{type(exc).__name__}: {first_line(exc)}"
            raise SessionError(
                f"session '{sid}' was logged out by the site ({where}) and logging in again with '{session.auth}' "
                f"failed: {detail}. Close the session and create it again"
            ) from None
        log.info("session %s was logged out by the site and logged in again with %s", sid, session.auth)

    def profile_of(self, session_id: str | None, profile: str | None,
                   principal: Principal | None = None) -> Profile | None:
        """The profile a call uses: its session's (``principal``'s own), or the one it names."""
        owner = (principal or LOCAL).id
        return self.profile(self.sessions.get(session_id, owner).profile if session_id is not None else profile)

    def crawl_options_for(self, session_id: str | None, profile: str | None, arguments: dict[str, Any],
                          principal: Principal | None = None) -> CrawlOptions:
        """The merged crawl options of a call (for tools that need them before loading a page)."""
        session = self.sessions.get(session_id, (principal or LOCAL).id) if session_id is not None else None
        request = CrawlRequest(url=None, profile=self.profile_of(session_id, profile, principal), session=session,
                               arguments=arguments)
        return self.crawl_options(request)

    async def robots_proxy(self, profile: str | None, session_id: str | None,
                           principal: Principal | None = None) -> str | None:
        """The egress proxy a side request (robots.txt) of a call goes through; None for a fake browser."""
        if not getattr(self.backend, "needs_proxy", True):
            return None
        return await self.proxy_url(self.policy_for(self.profile_of(session_id, profile, principal)))

    def check_scripts(self, arguments: dict[str, Any], *, holds: bool, where: str) -> dict[str, Any]:
        """Apply ``[security] js_code`` to a call's scripts (``js_code``, a JavaScript ``wait_for``).

        Returns the arguments to crawl with: where scripts are refused, a plain ``wait_for`` is pinned to CSS
        (crawl4ai would otherwise run one that is not a valid selector as JavaScript).
        """
        mode = self.config.settings.security.js_code
        if mode == "allow" or (mode == "no-secrets" and not holds):
            return arguments
        wait_for = str(arguments.get("wait_for") or "").strip()
        scripted = bool(wait_for) and wait_kind(wait_for)[0] == "js"
        if arguments.get("js_code") or scripted:
            what = "js_code" if arguments.get("js_code") else "a JavaScript wait_for"
            if mode == "deny":
                raise CrawlError(
                    f"{what} is switched off on this server ([security] js_code = \"deny\"); crawl without it, "
                    "or ask the operator to set [security] js_code = \"no-secrets\" or \"allow\""
                )
            raise CrawlError(
                f"{what} is refused in {where}: it holds secrets of a profile or an auth method that a script "
                "could read or send away ([security] js_code = \"no-secrets\", the default). Crawl without the "
                "script, or in a session without those secrets; an operator who trusts every page and agent can "
                "set [security] js_code = \"allow\""
            )
        if wait_for and not wait_for.startswith("css:"):
            return {**arguments, "wait_for": "css:" + wait_for}
        return arguments

    async def _install_headers(
        self, context: Any, options: ContextOptions, policy: EgressPolicy, prof: Profile | None, params: Any,
        owner: str,
    ) -> SessionHeaders:
        """Bind the configured headers (config file, profile, plugin layers) to the context's own sites."""
        sites = own_sites(allowed_domains=policy.allowed_domains, header_domains=options.header_domains,
                          cookies=prof.cookies if prof else (), auth=params)
        headers = SessionHeaders(context, sites=sites, owner=owner)
        configured = resolve_headers(options.extra_headers, owner=owner)
        for secret in (False, True):
            chosen = {name: value for name, value, credential in configured if credential is secret}
            if chosen:
                source = prof.label if prof else "the configuration"
                await headers.add(chosen, secret=secret, source=f"[browser] extra_headers of {source}")
        return headers

    async def _in_temporary_session(
        self, url: str, prof: Profile, arguments: dict[str, Any], work: Callable[[Any, CrawlOptions], Awaitable[T]],
        who: Principal,
    ) -> tuple[T, CrawlOptions]:
        """A session-less call with a profile that logs in: a session that lives for this one call."""
        created = await self.create_session(profile=prof.name, temporary=True, principal=who)
        try:
            return await self.run_on_page(url, work, session_id=created["session_id"], arguments=arguments,
                                           principal=who)
        finally:
            # Its own reason: a plugin that logs out (or saves state) on "closed" need not do so after each call.
            await self.sessions.close(created["session_id"], "temporary", owner=who.id)

    # -- saved sessions: restore, hibernate ----------------------------------------------------------

    @asynccontextmanager
    async def using_session(self, session_id: str, owner: str = LOCAL_ID) -> AsyncIterator[Session]:
        """Hold ``owner``'s session for one call (restoring it from saved state first if it is not active)."""
        for _attempt in range(5):
            session = await self.resume(session_id, owner)
            async with contextlib.AsyncExitStack() as stack:
                try:
                    await stack.enter_async_context(self.sessions.use(session))
                except SessionMoved:
                    continue  # hibernated while this call waited for it: bring it back
                try:
                    yield session
                finally:
                    # Before the page is parked on about:blank, where the site's sessionStorage is out of reach.
                    await self.keeper.read_session_storage(session)
                    self.keeper.touched(session)
                return
        raise SessionError(f"session '{session_id}' kept being hibernated while this call waited; retry the call")

    async def resume(self, session_id: str, owner: str = LOCAL_ID) -> Session:
        """The active session, or the saved one restored into a new context; else the precise error."""
        try:
            return self.sessions.get(session_id, owner)
        except SessionError:
            if not self.keeper.enabled or not SESSION_ID_RE.fullmatch(session_id):
                raise
        key = (owner, session_id)
        lock = self._restoring.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                with contextlib.suppress(SessionError):
                    return self.sessions.get(session_id, owner)  # restored by a call that held the lock first
                restored = await self._restore(session_id, owner)
                if restored is None:
                    return self.sessions.get(session_id, owner)  # raises: never created, closed, expired...
                return restored
        finally:
            if not lock.locked() and self._restoring.get(key) is lock:
                del self._restoring[key]

    async def _restore(self, sid: str, owner: str) -> Session | None:
        if not await self.keeper.exists(sid, owner):
            return None
        await self.keeper.claim(sid, owner)
        reserved = False
        context: Any = None
        try:
            state = await self.keeper.load(sid, owner)
            if state is None:  # deleted by another process a moment ago
                await self.keeper.release(sid, owner)
                return None
            prof = self._saved_profile(sid, state)
            await self._make_room()
            self.sessions.reserve(sid, owner)
            reserved = True
            policy = self.policy_for(prof)
            options = self.context_options(CrawlRequest(url=None, profile=prof, session=None, arguments={}))
            try:
                chosen = choose_auth(state.auth, prof, self.auth_methods, self.disabled_plugins())
            except CrawlkeeperError:
                chosen = None  # the session works without it; a re-login would report the problem
            params = chosen[1] if chosen else None
            async with self.limiter.slot(owner):
                proxy = await self._ensure_browser(policy)
                context = await self.backend.new_context(_without_headers(options), proxy_url=proxy)
                generation = self.backend.generation
                headers = await self._install_headers(context, options, policy, prof, params,
                                                      owner=f"session '{sid}'" + (f" ({prof.label})" if prof else ""))
                await _restore_headers(headers, state)
                await apply(context, state)
            session = Session(
                id=sid, profile=state.profile, context=context, page=None, created_at=state.created_at,
                last_used_at=state.last_used_at, expires_at=state.expires_at, metadata=dict(state.metadata),
                auth=state.auth, generation=generation, headers=headers, holds_secrets=state.holds_secrets,
                owner=owner, page_factory=functools.partial(_watched_page, self.backend, context, headers),
            )
            session.parked_url = state.url  # what listings show as its URL until its page is used
            session.note = self._crash_notes.pop((owner, sid), None) or (
                f"restored from the state saved at {iso(state.saved_at)}"
            )
            await self.hooks.acall("crawlkeeper_session_restored", session=session)
        except BaseException as exc:
            if reserved:
                self.sessions.release(sid, owner)
            if context is not None:
                await _close_quietly(context)
            await self.keeper.release(sid, owner)
            if isinstance(exc, CrawlkeeperError) and not isinstance(exc, SessionError):
                raise SessionError(f"session '{sid}' could not be restored: {exc}") from None
            raise
        self.keeper.remember(session, state)
        self.sessions.forget_ended(sid, owner)
        self.sessions.add(session)
        log.info("session %s restored from saved state", sid)
        return session

    def _saved_profile(self, sid: str, state: SavedState) -> Profile | None:
        if state.profile is None:
            return None
        try:
            return self.profile(state.profile)
        except CrawlkeeperError as exc:
            raise SessionError(
                f"session '{sid}' was saved with profile '{state.profile}', which cannot be used now ({exc}); "
                f"put the profile back, or {delete_hint(sid)}"
            ) from None

    async def _make_room(self) -> None:
        """At ``max_sessions`` active sessions, hibernate the least recently used idle one (if it can be saved)."""
        while self.keeper.enabled and self.sessions.occupied() >= self.sessions.max_sessions:
            victim = self.sessions.lru_idle()
            if victim is None or not await self.hibernate(victim):
                return  # reserve() then refuses with the limit's message

    async def hibernate(self, session: Session) -> bool:
        """Save an idle session and close its context; its next use restores it. False if it could not be."""
        if not self.keeper.enabled or not session.durable:
            return False
        async with session.lock:
            if (session.closed or session.ended or session.busy
                    or self.sessions.peek(session.id, session.owner) is not session):
                return False
            if session.generation != self.backend.generation or not await self.keeper.save(session, force_times=True):
                return False
            self.sessions.detach(session)
            session.hibernated = session.closed = True
        await self.hooks.acall("crawlkeeper_session_closing", keep_going=True, session=session, reason="hibernated")
        await _close_quietly(session.context)
        self.keeper.forget(session.id, session.owner)
        await self.keeper.release(session.id, session.owner)
        log.info("session %s hibernated", session.id)
        return True

    async def _session_closed(self, session: Session, reason: str) -> None:
        """After a session's context closed: closing or expiry deletes its saved state, other reasons keep it."""
        if not self.keeper.enabled or not session.durable:
            return
        if reason in ("closed", "expired", "evicted"):
            await self.keeper.delete(session.id, session.owner)
        else:
            self.keeper.forget(session.id, session.owner)
        await self.keeper.release(session.id, session.owner)

    async def _keep_house(self) -> None:
        """Hibernate idle sessions; now and then delete saved sessions whose expiry passed."""
        settings = self.config.settings.sessions
        after = settings.hibernate_after_s
        interval = max(0.2, min(after / 4, 5.0)) if after else 5.0
        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                if after:
                    now = self.clock()
                    for session in self.sessions.all():
                        if not session.busy and not session.lock.locked() and now - session.last_used_at >= after:
                            await self.hibernate(session)
                if time.monotonic() - last_sweep >= 60:
                    last_sweep = time.monotonic()
                    await self.sweep_expired()
            except Exception:
                log.exception("session housekeeping failed; retrying")

    async def sweep_expired(self) -> list[str]:
        """Delete saved, inactive sessions whose ``expires_at`` has passed (expiry deletes the state)."""
        deleted = []
        now = self.clock()
        for owner, sid in await self.keeper.stored_pairs():
            if self.sessions.peek(sid, owner) is not None or (owner, sid) in self._restoring:
                continue
            try:
                state = await self.keeper.load(sid, owner)
            except SessionError:
                continue
            if state is None or state.expires_at is None or state.expires_at > now:
                continue
            try:
                await self.keeper.claim(sid, owner)
            except SessionError:
                continue  # in use by another process, which decides
            try:
                await self.keeper.delete(sid, owner)
                deleted.append(sid)
            finally:
                await self.keeper.release(sid, owner)
        return deleted

    async def _crawl_page(
        self, session: Session, url: str, options: CrawlOptions, work: Callable[[Any, CrawlOptions], Awaitable[T]]
    ) -> T:
        """Work in a session's page, under the overall deadline; a page that hangs is replaced."""
        try:
            page = await session.ensure_page()
        except Exception as exc:
            raise CrawlError(f"could not open a page for session '{session.id}' ({first_line(exc)})") from None
        try:
            return await self._crawl_or_abandon(
                page, url, options, work, f" (session '{session.id}' keeps its cookies)"
            )
        except (PageTimeout, PageTooLarge, PageCrashed):
            # The page may still be loading or running a script: a late navigation would interrupt the
            # session's next call, so the page is dropped and the next call opens a new one (the context,
            # and so the login, stays).
            session.page = None
            raise

    async def _crawl_or_abandon(
        self, page: Any, url: str, options: CrawlOptions, work: Callable[[Any, CrawlOptions], Awaitable[T]],
        kept: str = "",
    ) -> T:
        """Work under the overall deadline; a page that times out is abandoned (its scripts stopped, closed)."""
        try:
            meter = guard.meter_of(page)
            if meter is not None:  # screenshots and extraction too, not only crawls
                meter.arm(int(options.max_page_mb * 1_048_576))
            result = await asyncio.wait_for(guard.race_meter(work(page, options), meter),
                                            options.timeout_s + _TIMEOUT_GRACE_S)
            if meter is not None and (meter.crashed or meter.problem):
                raise self._meter_error(meter, url)
            return result  # type: ignore[no-any-return]
        except (PageTooLarge, PageCrashed):
            self._background(self._abandon(page))  # a renderer busy with the oversized body answers late
            raise
        except (asyncio.TimeoutError, PageTimeout):
            await self._abandon(page)
            raise PageTimeout(
                f"timed out after {options.timeout_s:g} s crawling {safe_url(url)}; the page was closed{kept}. "
                "Raise timeout_s or try a lighter page"
            ) from None

    async def _crawl_pooled(
        self, url: str, options: CrawlOptions, context_options: ContextOptions, policy: EgressPolicy,
        work: Callable[[Any, CrawlOptions], Awaitable[T]],
    ) -> T:
        entry, slot = await self._pooled_slot(context_options, policy)
        reusable = abandoned = handed_off = False
        try:
            if slot.page is None:
                try:
                    slot.page = await self.backend.new_page(slot.context)
                except Exception as exc:  # the context died (browser crash): forget it, let the caller retry
                    self._pool.pop(entry.key, None)
                    raise CrawlError(f"could not open a page ({first_line(exc)}); retry the call") from None
            try:
                result = await self._crawl_or_abandon(slot.page, url, options, work)
            except (PageTimeout, PageTooLarge, PageCrashed):
                abandoned = True  # the page was abandoned
                raise
            except CrawlError:
                reusable = await self._wipe(slot)
                raise
            # Park and wipe after the caller has its answer (off the hot path): the slot goes back to the
            # pool only once clean, and a call that finds none idle waits for it rather than open a context.
            task = asyncio.ensure_future(self._recycle(entry, slot))
            entry.recycling.add(task)
            task.add_done_callback(entry.recycling.discard)
            self._background(task)
            handed_off = True
            return result
        finally:
            if not handed_off:
                await self._release(entry, slot, reusable=reusable, abandoned=abandoned)

    async def _recycle(self, entry: _PoolEntry, slot: _Slot) -> None:
        reusable = False
        try:
            reusable = await self._wipe(slot)
        finally:
            await self._release(entry, slot, reusable=reusable, abandoned=False)

    async def _release(self, entry: _PoolEntry, slot: _Slot, *, reusable: bool, abandoned: bool) -> None:
        """A session-less crawl is done with ``slot``: back to the pool if it is clean, else closed."""
        entry.users -= 1
        # A renderer that served many pages keeps their leftovers: recycle the context now and then.
        slot.uses += 1
        if abandoned:
            self._background(_close_quietly(slot.context))  # do not wait for a busy renderer
        elif (reusable and slot.uses < _PAGE_REUSES and len(entry.idle) < _IDLE_SLOTS_PER_ENTRY
                and self._pool.get(entry.key) is entry and entry.generation == self.backend.generation):
            entry.idle.append(slot)
        else:
            await _close_quietly(slot.context)
        await self._trim_pool()

    def _meter_error(self, meter: guard.PageMeter, url: str) -> CrawlError:
        if meter.crashed:
            describe = getattr(self.backend, "crash_message", None)
            return PageCrashed(describe(url) if describe else f"the page {safe_url(url)} crashed its renderer")
        return PageTooLarge(guard.too_large_message(url, meter.problem or "too much data"))

    def _background(self, work: Awaitable[Any]) -> None:
        """Run clean-up work without making the caller wait (kept referenced until it ends)."""
        task = asyncio.ensure_future(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _wipe(self, slot: _Slot) -> bool:
        """Stop a session-less page and clear its context (cookies, storage) so the next call starts empty.
        False if that failed: the context is then closed rather than reused."""
        park = getattr(self.backend, "park_page", None)
        reset = getattr(self.backend, "reset_context", None)
        try:
            if park is not None:
                await park(slot.page)
            if reset is not None:
                await reset(slot.context, slot.page)
            else:
                await slot.context.clear_cookies()
        except Exception as exc:
            log.debug("could not reset a session-less context: %s", exc)
            return False
        return True

    async def _park_session(self, session: Session) -> None:
        """End of a call on ``session``: park its page (nothing of the site runs until the next call)."""
        park = getattr(self.backend, "park_page", None)
        page = session.page
        if park is None or page is None:
            return
        try:
            url = page.url
            if url and url != "about:blank":
                session.parked_url = url
            await park(page)
        except Exception as exc:  # a page that cannot be parked is replaced; the context (login) stays
            log.debug("could not park the page of session %s: %s", session.id, exc)
            if session.page is page:
                session.page = None
            await self._abandon(page)

    async def _abandon(self, page: Any) -> None:
        abandon = getattr(self.backend, "abandon_page", None)
        if abandon is not None:
            await abandon(page)
        else:
            await _close_quietly(page)

    async def _pooled_slot(self, options: ContextOptions, policy: EgressPolicy) -> tuple[_PoolEntry, _Slot]:
        """A session-less context with these options for one crawl (never a session's context, never shared
        with a concurrent crawl). The caller holds the entry (``users``) until its crawl ends, so eviction
        never closes it under a crawl."""
        key = options.signature() + repr(policy)
        async with self._pool_lock:
            proxy = await self._ensure_browser(policy)
            entry = self._pool.get(key)
            if entry is None or entry.generation != self.backend.generation:
                entry = self._pool[key] = _PoolEntry(key, self.backend.generation, options, proxy)
            self._pool.move_to_end(key)
            entry.users += 1
            slot = entry.idle.pop() if entry.idle else None
        try:
            if slot is None and entry.recycling:
                # A context is being wiped after the previous call: waiting for it is cheaper than a new one.
                await asyncio.wait(set(entry.recycling), timeout=_RECYCLE_WAIT_S, return_when=asyncio.FIRST_COMPLETED)
                slot = entry.idle.pop() if entry.idle else None
            if slot is None:
                context = await self.backend.new_context(_without_headers(options), proxy_url=entry.proxy)
                try:
                    headers = await self._install_headers(context, options, policy, None, None,
                                                          owner="a session-less crawl")
                except BaseException:
                    await _close_quietly(context)
                    raise
                entry.holds_secrets = entry.holds_secrets or headers.holds_secrets
                slot = _Slot(context)
        except BaseException:
            entry.users -= 1
            raise
        await self._trim_pool()
        return entry, slot

    async def _trim_pool(self) -> None:
        """Close the least recently used idle entries beyond the pool's size."""
        idle = [e for e in self._pool.values() if e.users == 0]
        while len(self._pool) > _MAX_POOLED_CONTEXTS and idle:
            entry = idle.pop(0)
            self._pool.pop(entry.key, None)
            for slot in entry.idle:
                await _close_quietly(slot.context)
            entry.idle.clear()

    async def _shape(self, result: PageResult, options: CrawlOptions, session_id: str | None) -> dict[str, Any]:
        if options.output == "markdown":
            content = result.markdown
        elif options.output == "html":
            content = result.html
        elif options.output == "text":
            content = await asyncio.to_thread(html_to_text, result.cleaned_html)  # big pages take a while
        else:
            content = "\n".join(f"- [{link['text'] or link['href']}]({link['href']})" for link in result.links)
        meta = {
            "url": result.url,
            "final_url": result.final_url,
            "status": result.status,
            "title": result.title,
            "output": options.output,
            "session_id": session_id,
        }
        # The one seam every crawl result passes (cursor pages are cut from what is stored here): no value
        # registered as a secret leaves the server, whatever a script or a page echoed.
        content, meta = scrub_secrets(content), scrub_secrets(meta)
        chunk, next_cursor = self.pager.first(result.url, content, options.max_chars, meta)
        return {**meta, "content": chunk, "truncated": next_cursor is not None, "next_cursor": next_cursor}

    async def crawl_many(
        self,
        urls: list[str],
        *,
        concurrency: int = 4,
        progress: ProgressCallback | None = None,
        **arguments: Any,
    ) -> list[dict[str, Any]]:
        """Crawl every URL; results in input order, a failure as ``{url, error}`` in its own slot."""
        results: list[dict[str, Any] | None] = [None] * len(urls)
        gate = asyncio.Semaphore(max(1, concurrency))
        done = 0

        async def one(index: int, url: str) -> None:
            nonlocal done
            async with gate:
                try:
                    results[index] = await self.crawl(url, **arguments)
                except CrawlkeeperError as exc:
                    results[index] = {"url": url, "error": scrub(str(exc))}
                except Exception as exc:
                    log.exception("crawl of %s failed", safe_url(url))
                    results[index] = {"url": url, "error": f"internal error: {type(exc).__name__}"}
            done += 1
            if progress is not None:
                try:
                    await progress(done, len(urls), f"{done}/{len(urls)} {safe_url(url)}")
                except Exception:
                    log.debug("progress notification failed", exc_info=True)

        await asyncio.gather(*(one(i, u) for i, u in enumerate(urls)))
        return [r for r in results if r is not None]

    # -- sessions ---------------------------------------------------------------------------------

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
        """Create a session (see CONTRACT.md). ``temporary``: a hidden one-shot session for one session-less crawl
        with a logging-in profile; plugins see ``session.temporary`` and, at the end, close reason ``temporary``."""
        who = principal or LOCAL
        prof = self.profile(profile)
        chosen = choose_auth(auth, prof, self.auth_methods, self.disabled_plugins())
        method, params = chosen if chosen else (None, None)
        auth_name = method.name if method else None
        policy = self.policy_for(prof)
        if url:
            await self.check_url(url, policy)
        durable = not temporary and self.keeper.enabled
        if durable:
            await self._make_room()
        sid = self.sessions.reserve(session_id, who.id)
        if durable:
            try:
                await self._claim_new(sid, who.id)
            except BaseException:
                self.sessions.release(sid, who.id)
                raise
        request = SessionRequest(session_id=sid, url=url, cookies=list(cookies or []), profile=prof,
                                 auth=auth_name, ttl_s=ttl_s, temporary=temporary)
        step = "creating the browser context"
        session: Session | None = None
        context: Any = None
        try:
            crawl_request = CrawlRequest(url=url, profile=prof, session=None, arguments={})
            options = self.context_options(crawl_request)
            async with self.limiter.slot(who.id):
                proxy = await self._ensure_browser(policy)
                context = await self.backend.new_context(_without_headers(options), proxy_url=proxy)
                generation = self.backend.generation
                step = "applying the headers"
                headers = await self._install_headers(context, options, policy, prof, params,
                                                      owner=f"session '{sid}'" + (f" ({prof.label})" if prof else ""))
                step = "creating the browser context"
                # A cookie-only session opens its page on first use: most of a session's cost is its page.
                new_page = functools.partial(_watched_page, self.backend, context, headers)
                page = await new_page() if url or method else None
                now = self.clock()
                session = Session(id=sid, profile=prof.name if prof else None, context=context, page=page,
                                  created_at=now, last_used_at=now, generation=generation, owner=who.id, auth=auth_name,
                                  durable=durable,
                                  page_factory=new_page,
                                  headers=headers, temporary=temporary,
                                  holds_secrets=bool(prof and (prof.cookies or prof.auth)) or method is not None)
                step = "the session_created hooks"
                await self.hooks.acall("crawlkeeper_session_created", session=session, request=request)
                for what in ("cookies", "ttl_s"):
                    if getattr(request, what) and what not in request.handled:
                        raise CrawlError(_unhandled(what))
                if method is not None:
                    step = f"login with auth method '{method.name}'"
                    plugin = self.auth_methods[method.name][0]
                    allow = getattr(self.backend, "allow_pages", None)
                    with allow(context) if allow is not None else contextlib.nullcontext():
                        await within(method.login(session, params), self.hooks.timeout_s, "its login", plugin)
                if url:
                    step = f"loading {safe_url(url)}"
                    await self._navigate(session, url, self.crawl_options(crawl_request))
            if generation != self.backend.generation or not self.backend.alive:
                raise CrawlError("the browser crashed while the session was being created; call create_session again")
            await self._park_session(session)
        except BaseException as exc:
            self.sessions.release(sid, who.id)
            if context is not None:
                await _close_quietly(context)
            if durable:
                await self.keeper.release(sid, who.id)
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
                raise
            raise _creation_error(sid, step, exc, method) from exc
        self.sessions.add(session)
        if durable:
            await self.keeper.save(session, force_times=True)  # a failure is logged; the session works anyway
        return scrub_secrets({  # a URL path can hold a token too
            "session_id": sid,
            "profile": session.profile,
            "auth": auth_name,
            "url": safe_url(page_url(session) or "about:blank"),
            "expires_at": iso(session.expires_at),
            "cookies": await self.cookie_names(session),
        })

    async def _claim_new(self, sid: str, owner: str = LOCAL_ID) -> None:
        """A new session's id must not name a saved one, the store must have room, and the lease is ours."""
        stored = await self.keeper.stored_pairs()
        if (owner, sid) in stored:
            raise SessionError(
                f"session '{sid}' already exists (saved, not active right now); use it with crawl_url, or close it "
                "with close_session first to replace it with a new one"
            )
        limit = self.config.settings.sessions.max_stored
        if len(stored) >= limit:
            raise SessionError(
                f"too many saved sessions: the limit is [sessions] max_stored = {limit}; close some with "
                "close_session (list_sessions shows them) or raise the limit in the config"
            )
        await self.keeper.claim(sid, owner)

    async def _ensure_browser(self, policy: EgressPolicy) -> str | None:
        """Start the browser if needed (behind the egress proxy) and return the proxy for ``policy``."""
        if not getattr(self.backend, "needs_proxy", True):
            await self.backend.start()
            return None
        if not self.backend.alive:
            self.backend.proxy_url = await self.proxy_url(self.policy)  # type: ignore[attr-defined]
            await self.backend.start()
        return await self.proxy_url(policy)

    async def _navigate(self, session: Session, url: str, options: CrawlOptions) -> None:
        meter = None
        try:
            page = await session.ensure_page()
            meter = guard.meter_of(page)
            if meter is not None:
                meter.arm(int(options.max_page_mb * 1_048_576))
            await guard.race_meter(
                page.goto(url, wait_until=options.wait_until, timeout=options.timeout_s * 1000), meter
            )
        except Exception as exc:
            if meter is None or not meter.problem:
                raise CrawlError(f"could not load {safe_url(url)}: {first_line(exc, 200)}") from None
        if meter is not None and meter.problem:
            raise PageTooLarge(guard.too_large_message(url, meter.problem))

    def disabled_plugins(self) -> list[str]:
        """Names of installed plugins that are not loaded (for "its plugin is disabled" messages)."""
        return [info.name for info in self.pm.describe() if info.disabled]

    def profile_problem(self, profile: Profile) -> str | None:
        """What is wrong with a profile, checked without using it: its own error, or its ``[auth]`` table against
        its method's params model (``crawlkeeper profiles``, ``doctor`` and ``list_profiles`` show it)."""
        problems = [profile.error, auth_problem(profile, self.auth_methods, self.disabled_plugins())]
        return "; ".join(p for p in problems if p) or None

    async def cookie_names(self, session: Session) -> list[dict[str, str]]:
        try:
            cookies = await session.context.cookies()
        except Exception:
            return []
        return [{"name": c.get("name", ""), "domain": c.get("domain", "")} for c in cookies]

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
        if (self.keeper.enabled and SESSION_ID_RE.fullmatch(session_id)
                and await self.keeper.exists(session_id, target)):
            key = (target, session_id)
            async with self._restoring.setdefault(key, asyncio.Lock()):
                await self.keeper.claim(session_id, target)  # refused while another process drives it
                try:
                    await self.keeper.delete(session_id, target)
                finally:
                    await self.keeper.release(session_id, target)
            self._restoring.pop(key, None)
            return {"session_id": session_id, "closed": True}
        self.sessions.get(session_id, target)  # raises the precise message
        return {"session_id": session_id, "closed": True}

    def list_profiles(self) -> list[dict[str, str]]:
        out = []
        for p in self.profiles.all():
            problem = self.profile_problem(p)
            out.append({"name": p.name, "description": f"(broken) {problem}" if problem else p.description})
        return out


async def _restore_headers(headers: SessionHeaders, state: SavedState) -> None:
    """Put back the headers plugins added (an auth method's API key...); the configured ones were just installed
    from the current config, which wins over a saved copy."""
    for h in state.headers:
        if str(h.get("source", "")).startswith("[browser] extra_headers"):
            continue
        await headers.add({h["name"]: h["value"]}, domains=h.get("domains"), secret=bool(h.get("credential")),
                          source=str(h.get("source") or "a plugin"))


async def _watched_page(backend: BrowserBackend, context: Any, headers: SessionHeaders) -> Any:
    """A session's page whose ``set_extra_http_headers`` merges into ``session.headers`` (bound to its sites)."""
    page = await backend.new_page(context)
    headers.watch(page)
    return page


def _without_headers(options: ContextOptions) -> ContextOptions:
    """The options a backend creates a context with: headers are installed afterwards, bound to their sites."""
    return options.model_copy(update={"extra_headers": {}})


RELOGINS_KEY = "crawlkeeper.relogins"  # times of recent re-logins (in metadata: they survive restarts)


def _where(page: PageResult) -> str:
    return f"final URL {safe_url(page.final_url)}, status {page.status}"


def describe_saved(state: SavedState) -> dict[str, Any]:
    """A listing entry for a saved session that is not active: never a cookie value, no query strings."""
    return {
        "session_id": state.session_id,
        "profile": state.profile,
        "created_at": iso(state.created_at),
        "last_used_at": iso(state.last_used_at),
        "expires_at": iso(state.expires_at),
        "url": safe_url(state.url) if state.url else None,
        "cookies": [{"name": c["name"], "domain": c["domain"]} for c in state.cookie_summary()],
        "state": "hibernated",
    }


def _unhandled(what: str) -> str:
    if what == "cookies":
        return ("cookies were passed but no enabled plugin applies them (the built-in 'cookies' plugin is "
                "disabled); enable it or install a replacement, or create the session without cookies")
    return ("ttl_s was passed but no enabled plugin enforces session expiry (the built-in 'ttl' plugin is "
            "disabled); enable it or drop ttl_s")


def _creation_error(sid: str, step: str, exc: BaseException, method: AuthMethod | None) -> CrawlkeeperError:
    """One message for a failed ``create_session``: which step, which plugin, what went wrong."""
    plugin = getattr(exc, "plugin", None)
    if isinstance(exc, CrawlkeeperError):
        detail = str(exc) or type(exc).__name__
    else:
        detail = f"{type(exc).__name__}: {first_line(exc)}"
    who = f" (plugin '{plugin}')" if plugin and f"'{plugin}'" not in detail else ""
    cls = type(exc) if isinstance(exc, CrawlkeeperError) else CrawlError
    err = cls.__new__(cls)
    CrawlkeeperError.__init__(
        err, f"create_session '{sid}' failed during {step}{who}: {detail}. No session was created."
    )
    err.plugin = plugin  # type: ignore[attr-defined]
    return err


async def _close_quietly(obj: Any) -> None:
    try:
        await asyncio.wait_for(obj.close(), 3)
    except Exception:
        pass


def cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("crawlkeeper", appauthor=False)) / "crawl4ai"


