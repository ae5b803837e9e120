"""``crawl_site``: a polite, bounded, breadth-first crawl from one start URL.

Breadth-first by depth; URLs are normalised (scheme and host lower-cased, default port and fragment dropped)
and each is crawled at most once. A crawl never fails for one page: a page that fails is in ``pages`` with its
``error``; a URL not crawled is counted in ``skipped`` by reason: ``robots`` (robots.txt disallows it),
``scope`` (outside the scope, or a redirect out of it), ``limit`` (beyond ``max_pages`` or ``max_depth``),
``duplicate`` (another spelling of a URL already seen, or a redirect to a page already crawled), ``refused``
(by the egress policy). Politeness by default: robots.txt per origin (:mod:`.robots`), at most
``per_host_concurrency`` pages of a host at once, and ``max(per_host_delay_s, Crawl-delay)`` between two
page loads of a host.

In a session, pages are crawled one at a time in the session's page, in breadth-first order: the session's
calls run in order, and every page is loaded with the session's cookies (``concurrency`` does not apply). A
profile that logs in (cookies or ``[auth]``) without a session gets one temporary session for the whole crawl.

Without a session, the crawl is one visitor: one browser context of its own for the whole call (cookies a page
sets apply to the next pages, as in a browser and in crawl4ai's deep crawl), with up to ``concurrency`` pages
reused from URL to URL, closed when the crawl ends. Creating, wiping and parking a pooled context for every
page (what a ``crawl_url`` does) cost more than loading the page itself.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import anyio

from .browser import PageResult, html_to_text
from .errors import CrawlError, CrawlkeeperError, PageCrashed, PageTimeout, PageTooLarge
from .headers import holds_credentials
from .logs import safe_url, scrub
from .models import CrawlRequest, Profile
from .options import CrawlOptions
from .principal import LOCAL, Principal
from .robots import Fetcher, RobotsCache, proxied_fetcher

log = logging.getLogger("crawlkeeper.site_crawl")

Scope = Literal["same-host", "same-domain", "prefix"]
REASONS = ("robots", "scope", "limit", "duplicate", "refused")
ProgressCallback = Callable[[int, int, str], Awaitable[None]]
Work = Callable[[Any, CrawlOptions], Awaitable[PageResult]]


class _PageGroup:
    """The browser pages of one session-less crawl: a context of its own, pages reused from URL to URL.

    Each page load still takes a global crawl slot (``[limits]``) and runs under the call's deadline; a page that
    times out, crashes or is too large is abandoned and replaced by a new one of the same context."""

    def __init__(self, app: Any, start: str, prof: Profile | None, arguments: dict[str, Any],
                 who: Principal) -> None:
        self.app, self.prof, self.who = app, prof, who
        request = CrawlRequest(url=start, profile=prof, session=None, arguments=arguments)
        self.context_options = app.context_options(request)
        where = f"a crawl with {prof.label}" if prof else "a crawl with credential headers from the configuration"
        self.arguments = app.check_scripts(arguments, holds=holds_credentials(self.context_options.extra_headers),
                                           where=where)
        self.policy = app.policy_for(prof)
        self.context: Any = None
        self.free: list[Any] = []
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        """Create the context on the first page load (a crawl that robots.txt stops opens nothing)."""
        async with self._opening:
            if self.context is None:
                await self._open()

    async def _open(self) -> None:
        from .app.contexts import close_quietly, install_headers, without_headers

        proxy = await self.app.gate.ensure_browser(self.policy)
        self.context = await self.app.backend.new_context(without_headers(self.context_options), proxy_url=proxy)
        try:
            await install_headers(self.context, self.context_options, self.policy, None, None,
                                  owner="a crawl_site call")
        except BaseException:
            await close_quietly(self.context)
            raise

    async def close(self) -> None:
        from .app.contexts import close_quietly

        if self.context is not None:
            await close_quietly(self.context)

    async def run(self, url: str, work: Work) -> tuple[PageResult, CrawlOptions]:
        """``work(page, options)`` for ``url`` in one of the group's pages (the URL was checked on admission)."""
        options = self.app.crawl_options(CrawlRequest(url=url, profile=self.prof, session=None,
                                                      arguments=self.arguments))
        async with self.app.limiter.slot(self.who.id):
            if self.free:
                page = self.free.pop()
            else:
                try:
                    page = await self.app.backend.new_page(self.context)
                except Exception as exc:  # the browser crashed under the crawl
                    raise CrawlError(f"could not open a page for {safe_url(url)} ({str(exc)[:200]})") from None
            try:
                result = await self.app.pages.crawl_or_abandon(page, url, options, work)
            except (PageTimeout, PageTooLarge, PageCrashed):
                raise  # the page was abandoned: the next URL opens a new one
            except BaseException:
                self.free.append(page)
                raise
            self.free.append(page)
            return result, options


def normalize(url: str) -> str | None:
    """The canonical spelling of an http(s) URL, or None for anything else (mailto:, javascript:, ...)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return None
    netloc = host if port is None or (scheme, port) in (("http", 80), ("https", 443)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


@dataclass
class _Scope:
    start: str
    kind: Scope
    include: list[str]
    exclude: list[str]
    host: str = ""
    domain: str = ""
    prefix: str = ""

    def __post_init__(self) -> None:
        parts = urlsplit(self.start)
        self.host = parts.netloc
        hostname = parts.hostname or ""
        self.domain = hostname[4:] if hostname.startswith("www.") else hostname
        self.prefix = self.start[: self.start.rfind("/") + 1] if urlsplit(self.start).path else self.start

    def contains(self, url: str) -> bool:
        parts = urlsplit(url)
        if self.kind == "same-host":
            inside = parts.netloc == self.host
        elif self.kind == "same-domain":
            hostname = parts.hostname or ""
            inside = hostname == self.domain or hostname.endswith("." + self.domain)
        else:
            inside = url.startswith(self.prefix)
        if not inside:
            return False
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        matches = lambda globs: any(fnmatch.fnmatchcase(url, g) or fnmatch.fnmatchcase(path, g) for g in globs)  # noqa: E731
        if self.include and not matches(self.include):
            return False
        return not matches(self.exclude)


@dataclass
class _Host:
    gate: asyncio.Semaphore
    next_start: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class SiteCrawl:
    """The state of one crawl_site call."""

    app: Any
    start: str
    max_pages: int
    max_depth: int
    scope: _Scope
    session_id: str | None
    profile: str | None
    arguments: dict[str, Any]
    max_chars_per_page: int
    concurrency: int
    progress: ProgressCallback | None
    robots_fetcher: Fetcher | None = None
    principal: Any = None  # the calling client (crawlkeeper.Principal); None: the local user
    pages: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, set[str]] = field(default_factory=lambda: {r: set() for r in REASONS})
    seen: set[str] = field(default_factory=set)
    raw_seen: set[str] = field(default_factory=set)
    crawled_final: set[str] = field(default_factory=set)
    hosts: dict[str, _Host] = field(default_factory=dict)
    group: _PageGroup | None = None  # session-less: the crawl's own pages
    policy: Any = None

    async def run(self) -> dict[str, Any]:
        options = self.app.crawl_options_for(self.session_id, self.profile, self.arguments, self.principal)
        self.policy = self.app.policy_for(self.app.profile_of(self.session_id, self.profile, self.principal))
        robots = RobotsCache(self.robots_fetcher or proxied_fetcher(
            await self.app.robots_proxy(self.profile, self.session_id, self.principal)))
        if self.session_id is None:
            self.group = _PageGroup(self.app, self.start, self.app.profile(self.profile), self.arguments,
                                    self.principal or LOCAL)
        self.seen.add(self.start)
        self.raw_seen.add(self.start)
        level = [self.start]
        depth = 0
        try:
            while level and len(self.pages) < self.max_pages:
                allowed = await self._admit(level, robots, options)
                room = self.max_pages - len(self.pages)
                for url in allowed[room:]:
                    self.skipped["limit"].add(url)
                discovered = await self._crawl_level(allowed[:room], depth, robots, options)
                depth += 1
                level = []
                for url in discovered:
                    if depth > self.max_depth:
                        self.skipped["limit"].add(url)
                    else:
                        level.append(url)
            for url in level:
                self.skipped["limit"].add(url)
        finally:
            robots.close()
            if self.group is not None:
                # Shielded: on cancellation (an MCP cancel) every await in the cancelled scope would be cancelled
                # too, leaving the crawl's context (and its loading pages) open for the life of the browser.
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await self.group.close()
        return {
            "url": self.start,
            "pages": self.pages,
            "skipped": {reason: len(urls) for reason, urls in self.skipped.items()},
            "session_id": self.session_id,
        }

    async def _admit(self, urls: list[str], robots: RobotsCache, options: CrawlOptions) -> list[str]:
        """The URLs of a level that robots.txt and the egress policy let through, in order."""
        out = []
        for url in urls:
            if options.respect_robots and not (await robots.rules(url)).allowed(url):
                self.skipped["robots"].add(url)
                continue
            try:
                await self.app.check_url(url, self.policy)
            except CrawlError:
                self.skipped["refused"].add(url)
                continue
            out.append(url)
        return out

    async def _crawl_level(
        self, urls: list[str], depth: int, robots: RobotsCache, options: CrawlOptions
    ) -> list[str]:
        """Crawl one depth level; return the new in-scope URLs its pages link to, in discovery order."""
        results: list[tuple[dict[str, Any], list[str]] | None] = [None] * len(urls)
        # A session has one page: its pages are crawled one at a time, in order.
        gate = asyncio.Semaphore(1 if self.session_id else max(1, self.concurrency))

        async def one(index: int, url: str) -> None:
            async with gate:
                results[index] = await self._page(url, depth, robots, options)

        async with anyio.create_task_group() as group:  # a cancellation cancels every page at once
            for index, url in enumerate(urls):
                group.start_soon(one, index, url)
        discovered: list[str] = []
        for result in results:
            if result is None:
                continue
            page, links = result
            if page:
                self.pages.append(page)
                if self.progress is not None:
                    await self._report(page["url"])
            for link in links:
                discovered.append(link)
        return discovered

    async def _report(self, url: str) -> None:
        try:
            await self.progress(len(self.pages), self.max_pages, f"{len(self.pages)}/{self.max_pages} "  # type: ignore[misc]
                                f"{safe_url(url)}")
        except Exception:
            log.debug("progress notification failed", exc_info=True)

    async def _page(
        self, url: str, depth: int, robots: RobotsCache, options: CrawlOptions
    ) -> tuple[dict[str, Any], list[str]]:
        host = self._host(url)
        async with host.gate:
            delay = max(options.per_host_delay_s, (await robots.rules(url)).crawl_delay() if options.respect_robots
                        else 0.0)
            if delay:
                async with host.lock:
                    loop = asyncio.get_running_loop()
                    wait = host.next_start - loop.time()
                    host.next_start = max(loop.time(), host.next_start) + delay
                if wait > 0:
                    await asyncio.sleep(wait)

            async def work(page: Any, opts: CrawlOptions) -> Any:
                return await self.app.backend.crawl(page, url, opts)

            try:
                if self.group is not None:
                    await self.group.open()
                    result, used = await self.group.run(url, work)
                else:
                    result, used = await self.app.run_on_page(
                        url, work, session_id=self.session_id, profile=self.profile, arguments=self.arguments,
                        principal=self.principal,
                    )
            except CrawlkeeperError as exc:
                message = scrub(str(exc))
                if message.startswith("refused"):
                    self.skipped["refused"].add(url)
                    return {}, []
                return {"url": url, "depth": depth, "status": None, "title": "", "error": message}, []
            except Exception as exc:  # one bad page never fails the crawl
                log.exception("crawl_site: %s failed", safe_url(url))
                return {"url": url, "depth": depth, "status": None, "title": "",
                        "error": f"internal error: {type(exc).__name__}"}, []
        final = normalize(result.final_url) or url
        if final != url:
            if not self.scope.contains(final):
                self.skipped["scope"].add(url)  # a redirect out of scope: counted, its links not followed
                return {}, []
            if final in self.crawled_final or (final in self.seen and final != url):
                self.skipped["duplicate"].add(url)
                return {}, []
        self.crawled_final.add(final)
        self.seen.add(final)
        content = await content_of(result, used)
        truncated = len(content) > self.max_chars_per_page
        page = {
            "url": url, "final_url": result.final_url, "depth": depth, "status": result.status, "title": result.title,
            "content": content[: self.max_chars_per_page], "truncated": truncated,
        }
        return page, self._links(result.links, final)

    def _links(self, links: list[dict[str, str]], base: str) -> list[str]:
        out = []
        for link in links:
            raw = urljoin(base, link.get("href") or "")
            if raw in self.raw_seen:
                continue
            self.raw_seen.add(raw)
            url = normalize(raw)
            if url is None:
                continue  # not a web page (mailto:, javascript:, data:): not counted
            if url in self.seen:
                if raw.split("#", 1)[0] != url:
                    self.skipped["duplicate"].add(raw)  # another spelling of a URL already seen
                continue
            self.seen.add(url)
            if not self.scope.contains(url):
                self.skipped["scope"].add(url)
                continue
            out.append(url)
        return out

    def _host(self, url: str) -> _Host:
        netloc = urlsplit(url).netloc
        host = self.hosts.get(netloc)
        if host is None:
            host = self.hosts[netloc] = _Host(asyncio.Semaphore(self.per_host_concurrency))
        return host

    per_host_concurrency: int = 2


async def content_of(result: PageResult, options: CrawlOptions) -> str:
    """A page's content in the call's ``output`` format (as crawl_url gives it, without paging)."""
    if options.output == "markdown":
        return result.markdown
    if options.output == "html":
        return result.html
    if options.output == "text":
        return await asyncio.to_thread(html_to_text, result.cleaned_html)
    return "\n".join(f"- [{link['text'] or link['href']}]({link['href']})" for link in result.links)


async def crawl_site(
    app: Any,
    url: str,
    *,
    max_pages: int = 50,
    max_depth: int = 2,
    scope: Scope = "same-host",
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    session_id: str | None = None,
    profile: str | None = None,
    max_chars_per_page: int = 5000,
    concurrency: int = 4,
    progress: ProgressCallback | None = None,
    robots_fetcher: Fetcher | None = None,
    principal: Any = None,
    **arguments: Any,
) -> dict[str, Any]:
    """Crawl from ``url`` breadth-first; see the module docstring for the rules."""
    start = normalize(url)
    if start is None:
        raise CrawlError(f"crawl_site needs an http or https URL, got {safe_url(url)}")
    arguments = {k: v for k, v in arguments.items() if v is not None}
    prof = app.profile(profile) if session_id is None else None
    if prof is not None and (prof.cookies or prof.auth):
        # A profile that logs in: one temporary session for the whole crawl (one login, not one per page).
        await app.check_url(start, app.policy_for(prof))
        who = principal or LOCAL
        created = await app.create_session(profile=prof.name, temporary=True, principal=who)
        try:
            result = await crawl_site(
                app, start, max_pages=max_pages, max_depth=max_depth, scope=scope, include=include, exclude=exclude,
                session_id=created["session_id"], max_chars_per_page=max_chars_per_page, concurrency=concurrency,
                progress=progress, robots_fetcher=robots_fetcher, principal=who, **arguments,
            )
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):  # a cancelled crawl closes it too
                await app.sessions.close(created["session_id"], "temporary", owner=who.id)
        return {**result, "session_id": None}
    options = app.crawl_options_for(session_id, profile, arguments, principal)
    crawl = SiteCrawl(
        app=app, start=start, max_pages=min(max_pages, options.max_site_pages), max_depth=max_depth,
        scope=_Scope(start, scope, list(include or []), list(exclude or [])), session_id=session_id,
        profile=profile, arguments=arguments, max_chars_per_page=max_chars_per_page, concurrency=concurrency,
        progress=progress, robots_fetcher=robots_fetcher, principal=principal,
    )
    crawl.per_host_concurrency = options.per_host_concurrency
    # a refused start is an error
    await app.check_url(start, app.policy_for(app.profile_of(session_id, profile, principal)))
    return await crawl.run()
