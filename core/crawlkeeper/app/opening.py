"""Session opening: a session's own browser context, its headers, the ``session_created`` hooks, the auth method's
login and the first navigation, in that order; a failure at any step closes the context and says which step."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from typing import Any

from .. import guard
from ..browser import BrowserBackend, generation_of, is_current, new_session_context
from ..config import Config
from ..errors import CrawlError, CrawlkeeperError, PageTooLarge, SessionError, first_line
from ..fairness import FairLimiter
from ..logs import safe_url, scrub_secrets
from ..models import AuthMethod, CrawlRequest, Session, SessionRequest
from ..options import CrawlOptions
from ..plugins import Hooks
from ..principal import LOCAL, LOCAL_ID, Principal
from ..sessions import SessionRegistry, iso, page_url
from ..state import SessionKeeper
from .contexts import close_quietly, install_headers, watched_page, without_headers
from .durability import Durability
from .gate import EgressGate
from .layers import OptionLayers
from .logins import Logins
from .page_limits import PageHandler


class SessionOpener:
    """Creates sessions (see CONTRACT.md, "Creating a session")."""

    def __init__(
        self, config: Config, hooks: Hooks, sessions: SessionRegistry, keeper: SessionKeeper, backend: BrowserBackend,
        gate: EgressGate, layers: OptionLayers, limiter: FairLimiter, logins: Logins, pages: PageHandler,
        durability: Durability, clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.hooks = hooks
        self.sessions = sessions
        self.keeper = keeper
        self.backend = backend
        self.gate = gate
        self.layers = layers
        self.limiter = limiter
        self.logins = logins
        self.pages = pages
        self.durability = durability
        self.clock = clock

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
        prof = self.layers.profile(profile)
        chosen = self.logins.choose(auth, prof)
        method, params = chosen if chosen else (None, None)
        auth_name = method.name if method else None
        policy = self.gate.policy_for(prof)
        if url:
            await self.gate.check_url(url, policy)
        durable = not temporary and self.keeper.enabled
        if durable:
            await self.durability.make_room()
        sid = self.sessions.reserve(session_id, who.id)
        if durable:
            try:
                await self.claim_new(sid, who.id)
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
            options = self.layers.context_options(crawl_request)
            async with self.limiter.slot(who.id):
                proxy = await self.gate.ensure_browser(policy)
                context = await new_session_context(self.backend, without_headers(options), proxy_url=proxy)
                generation = generation_of(self.backend, context)
                step = "applying the headers"
                headers = await install_headers(context, options, policy, prof, params,
                                                owner=f"session '{sid}'" + (f" ({prof.label})" if prof else ""))
                step = "creating the browser context"
                # A cookie-only session opens its page on first use: most of a session's cost is its page.
                new_page = functools.partial(watched_page, self.backend, context, headers)
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
                    allow = getattr(self.backend, "allow_pages", None)
                    with allow(context) if allow is not None else contextlib.nullcontext():
                        await self.logins.login(method, session, params)
                if url:
                    step = f"loading {safe_url(url)}"
                    await self.navigate(session, url, self.layers.crawl_options(crawl_request))
            if not is_current(self.backend, generation):
                raise CrawlError("the browser crashed while the session was being created; call create_session again")
            if durable:
                await self.keeper.before_park(session)  # the save below then needs no hidden page
            await self.pages.park_session(session)
        except BaseException as exc:
            self.sessions.release(sid, who.id)
            if context is not None:
                await close_quietly(context)
            if durable:
                self.keeper.forget(sid, who.id)
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
            "cookies": await cookie_names(session),
        })

    async def claim_new(self, sid: str, owner: str = LOCAL_ID) -> None:
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

    async def navigate(self, session: Session, url: str, options: CrawlOptions) -> None:
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


async def cookie_names(session: Session) -> list[dict[str, str]]:
    """A session's cookies for listings: name and domain, never a value."""
    try:
        cookies = await session.context.cookies()
    except Exception:
        return []
    return [{"name": c.get("name", ""), "domain": c.get("domain", "")} for c in cookies]


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
