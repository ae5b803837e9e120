"""Crawling: the one path every page-loading tool takes (options merged, scripts and the URL checked, a slot
taken), in a session's page or a pooled session-less one; ``crawl``/``crawl_many`` and shaping their results."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..browser import BrowserBackend, PageResult, html_to_text
from ..config import Config
from ..errors import CrawlError, CrawlkeeperError, SessionError
from ..fairness import FairLimiter
from ..headers import holds_credentials
from ..logs import safe_url, scrub, scrub_secrets
from ..models import CrawlRequest, Profile, Session
from ..options import CrawlOptions
from ..paging import ContentPager
from ..principal import LOCAL, Principal
from ..scripts import wait_kind
from ..sessions import SessionRegistry
from .durability import Durability
from .gate import EgressGate
from .layers import OptionLayers
from .logins import Logins, where
from .opening import SessionOpener
from .page_limits import PageHandler
from .pool import ContextPool

log = logging.getLogger("crawlkeeper.app")

ProgressCallback = Callable[[int, int, str], Awaitable[None]]
T = TypeVar("T")


class PageRunner:
    """Runs a tool's work on the right page, under the server's limits and policies."""

    def __init__(
        self, config: Config, sessions: SessionRegistry, layers: OptionLayers, gate: EgressGate,
        limiter: FairLimiter, logins: Logins, pages: PageHandler, pool: ContextPool, durability: Durability,
        opener: SessionOpener, pager: ContentPager, backend: BrowserBackend,
    ) -> None:
        self.config = config
        self.backend = backend
        self.sessions = sessions
        self.layers = layers
        self.gate = gate
        self.limiter = limiter
        self.logins = logins
        self.pages = pages
        self.pool = pool
        self.durability = durability
        self.opener = opener
        self.pager = pager

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
            max_chars = self.layers.crawl_options(request).max_chars
            content, next_cursor, meta = self.pager.next(cursor, url, max_chars)
            return {**meta, "content": content, "truncated": next_cursor is not None, "next_cursor": next_cursor}

        async def work(page: Any, options: CrawlOptions) -> PageResult:
            return await self.backend.crawl(page, url, options)

        report: dict[str, Any] = {}
        page_result, options = await self.run_on_page(
            url, work, session_id=session_id, profile=profile, arguments=arguments, principal=who, report=report
        )
        result = await self.shape(page_result, options, session_id)
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
            used: list[Session] = []
            try:
                return await self._run_in_session(url, work, session_id, profile, arguments, who, report, used)
            except Exception as exc:
                if not used or not await self._endpoint_lost(used[0].context, exc):
                    raise
            # Its endpoint died under this call: the session was detached with its saved state; restore it on
            # another endpoint and run the call there (once).
            return await self._run_in_session(url, work, session_id, profile, arguments, who, report, [])
        prof = self.layers.profile(profile)
        if prof is not None and (prof.cookies or prof.auth):
            self.check_scripts(arguments, holds=True, where=f"a crawl with {prof.label}")
            return await self._in_temporary_session(url, prof, arguments, work, who)
        request = CrawlRequest(url=url, profile=prof, session=None, arguments=arguments)
        layers = self.layers.layers(request)
        context_options = self.layers.context_options(request, layers)
        at = f"a crawl with {prof.label}" if prof else "a crawl with credential headers from the configuration"
        arguments = self.check_scripts(arguments, holds=holds_credentials(context_options.extra_headers),
                                       where=at)
        request.arguments = arguments
        options = self.layers.crawl_options(request, layers)
        policy = self.gate.policy_for(prof)
        await self.gate.check_url(url, policy)
        async with self.limiter.slot(who.id):
            pooled: list[Any] = []
            try:
                return await self.pool.crawl(url, options, context_options, policy, work, pooled), options
            except Exception as exc:
                if not pooled or not await self._endpoint_lost(pooled[0], exc):
                    raise
                log.warning("a browser endpoint died under a session-less crawl of %s; retrying once elsewhere",
                            safe_url(url))
            return await self.pool.crawl(url, options, context_options, policy, work), options

    async def _endpoint_lost(self, context: Any, exc: BaseException) -> bool:
        """Whether a call failed because the remote browser endpoint holding ``context`` died (fleets only)."""
        confirm = getattr(self.backend, "confirm_lost", None)
        return bool(confirm is not None and await confirm(context, exc))

    async def _run_in_session(
        self, url: str, work: Callable[[Any, CrawlOptions], Awaitable[T]], session_id: str, profile: str | None,
        arguments: dict[str, Any], who: Principal, report: dict[str, Any] | None, used: list[Session],
    ) -> tuple[T, CrawlOptions]:
        # The session first (arrival order), then a global slot: calls queued on one session must not hold
        # slots other sessions need. A saved (hibernated, or pre-restart) session is restored here.
        async with self.durability.using_session(session_id, who.id) as session:
            used.append(session)
            if profile is not None and profile != session.profile:
                raise CrawlError(
                    f"session '{session_id}' was created with profile {session.profile!r}; a session keeps "
                    "its profile: drop the profile argument or create another session"
                )
            prof = self.layers.profile(session.profile)
            arguments = self.check_scripts(
                arguments, holds=session.holds_secrets or bool(session.headers and session.headers.holds_secrets),
                where=f"session '{session_id}'")
            request = CrawlRequest(url=url, profile=prof, session=session, arguments=arguments)
            options = self.layers.crawl_options(request)
            policy = self.gate.policy_for(prof)
            await self.gate.check_url(url, policy)
            async with self.limiter.slot(who.id):
                result = await self.pages.crawl_in_session(session, url, options, work)
            relogged_in = False
            if isinstance(result, PageResult) and self.logins.logged_out(session, result):
                # Never hand back the login page as if it were the content: log in again, once, and retry.
                await self.logins.relogin(session, prof, result)
                async with self.limiter.slot(who.id):
                    result = await self.pages.crawl_in_session(session, url, options, work)
                if isinstance(result, PageResult) and self.logins.logged_out(session, result):
                    raise SessionError(
                        f"session '{session_id}' is still logged out after logging in again with "
                        f"'{session.auth}' ({where(result)}); check the profile's [auth] settings, or "
                        "close the session and create it again"
                    )
                relogged_in = True
            note, session.note = session.note, None
            if report is not None:
                report.update(restored=note is not None, relogged_in=relogged_in, note=note)
            return result, options

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

    async def _in_temporary_session(
        self, url: str, prof: Profile, arguments: dict[str, Any], work: Callable[[Any, CrawlOptions], Awaitable[T]],
        who: Principal,
    ) -> tuple[T, CrawlOptions]:
        """A session-less call with a profile that logs in: a session that lives for this one call."""
        created = await self.opener.create_session(profile=prof.name, temporary=True, principal=who)
        try:
            return await self.run_on_page(url, work, session_id=created["session_id"], arguments=arguments,
                                          principal=who)
        finally:
            # Its own reason: a plugin that logs out (or saves state) on "closed" need not do so after each call.
            await self.sessions.close(created["session_id"], "temporary", owner=who.id)

    async def shape(self, result: PageResult, options: CrawlOptions, session_id: str | None) -> dict[str, Any]:
        """A crawl's tool result: the chosen output, scrubbed of secrets, cut into its first page."""
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


@dataclass(frozen=True)
class PageTarget:
    """Where a page tool works: in ``session_id``'s page, or a pooled page of a context for ``profile``, on behalf
    of ``principal`` (the local user when None). ``crawl_url``, ``screenshot`` and ``extract`` each receive one
    instead of passing the three along themselves; every load goes through :meth:`PageRunner.run_on_page`."""

    runner: PageRunner
    session_id: str | None = None
    profile: str | None = None
    principal: Principal | None = None

    @property
    def backend(self) -> BrowserBackend:
        return self.runner.backend

    async def run(
        self, url: str, work: Callable[[Any, CrawlOptions], Awaitable[T]], arguments: dict[str, Any] | None = None,
        report: dict[str, Any] | None = None,
    ) -> tuple[T, CrawlOptions]:
        """``work(page, options)`` for ``url`` on this target's page (see :meth:`PageRunner.run_on_page`)."""
        return await self.runner.run_on_page(url, work, session_id=self.session_id, profile=self.profile,
                                             arguments=arguments, principal=self.principal, report=report)

    async def crawl(self, url: str, *, cursor: str | None = None, **arguments: Any) -> dict[str, Any]:
        """Crawl ``url`` here (or read the next chunk of an earlier crawl): a ``crawl_url`` result."""
        return await self.runner.crawl(url, session_id=self.session_id, profile=self.profile, cursor=cursor,
                                       principal=self.principal, **arguments)
