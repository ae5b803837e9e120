"""Headers bound to their sites: what a context's requests carry, and to which hosts.

Chromium's context-wide ``extra_http_headers`` go with *every* request of the context (third-party images,
scripts and fetches included), and Playwright's ``set_extra_http_headers`` *replaces* the whole set. Here each
header has a scope:

- a tuple of domains: the header is added only to requests whose host is one of them or a subdomain, and
  the decision is taken again for *every hop of a redirect*. On Chromium this is done with the DevTools
  protocol's ``Fetch`` domain, per page, at the request stage: Chromium pauses each hop (a redirect's next
  request too) whose URL matches the session's hosts, and the handler sets the hop's headers from its own
  host. Playwright's ``route`` is not used for this: Playwright re-applies the headers a route added to every
  redirect it follows without calling the route again, so an open redirect on the profile's own site
  (``/redirect?to=http://other/``) forwarded the credential to the other host, and a redirect *into* scope
  went without it. Browsers without the DevTools protocol (the test fake lacks nothing here; Firefox would)
  fall back to a route handler with that limit.
- ``None``: a plain header of a context that has no sites of its own (``Accept-Language`` and the like); it
  goes everywhere, through Chromium's context-wide headers.

A credential-like header (given by reference, or named ``Authorization``/``Proxy-Authorization``/``Cookie``,
or containing ``token``/``key``/``secret``/``auth``) is never unscoped: adding one without sites is an error.

:class:`SessionHeaders` is what plugins see as ``session.headers``; it is also installed on the contexts of
session-less crawls. A page is covered from its first request when it is opened through crawlkeeper's backend
(which calls :func:`attach_page`); a page opened otherwise (a login popup) is covered as soon as it appears.
Requests of cross-site iframes (their own renderer) and of workers are not paused, so they get no scoped
header: the failure is closed, never a leak.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .attached import Attached
from .errors import CrawlError
from .logs import register_secret

log = logging.getLogger("crawlkeeper.headers")

CREDENTIAL_NAMES = frozenset({"authorization", "proxy-authorization", "cookie"})
CREDENTIAL_PARTS = ("token", "key", "secret", "auth")


def is_credential(name: str, *, by_reference: bool = False) -> bool:
    """Whether a header is treated as a secret: given by reference, or its name says so."""
    lower = name.strip().lower()
    return by_reference or lower in CREDENTIAL_NAMES or any(part in lower for part in CREDENTIAL_PARTS)


def _is_ref(value: Any) -> bool:
    return not isinstance(value, str)  # a SecretRef model, or its dict form from a TOML table


def unscoped_credentials(headers: Mapping[str, Any], sites: Iterable[str] | None) -> list[str]:
    """Names of credential-like headers in ``headers`` that would have no site to go to."""
    if any(True for _ in (sites or ())):
        return []
    return [name for name, value in headers.items() if is_credential(name, by_reference=_is_ref(value))]


def holds_credentials(headers: Mapping[str, Any]) -> bool:
    return any(is_credential(name, by_reference=_is_ref(value)) for name, value in headers.items())


def normalise_domain(entry: str) -> str:
    """``"https://Example.com:8443/x"``, ``".example.com"``, ``"*.example.com"`` -> ``"example.com"``."""
    text = str(entry).strip()
    if "://" in text:
        text = urlsplit(text).hostname or ""
    text = text.lower().strip().rstrip(".")
    for prefix in ("*.", "."):
        text = text.removeprefix(prefix)
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if not text or any(ch in text for ch in "/?#@ \t"):
        raise ValueError(f"{entry!r} is not a domain (give a host name such as example.com)")
    return text


def host_of(url: str) -> str | None:
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host.lower().rstrip(".") if host else None


def in_domains(host: str | None, domains: Iterable[str]) -> bool:
    if not host:
        return False
    return any(host == d or host.endswith("." + d) for d in domains)


def scope_pattern(domains: Iterable[str]) -> re.Pattern[str]:
    """A URL regex for the hosts in ``domains`` and their subdomains: Playwright matches it in the browser
    process, so requests to other hosts are never intercepted (and cost nothing)."""
    alternatives = "|".join(re.escape(f"[{d}]" if ":" in d else d) for d in sorted(set(domains)))
    return re.compile(
        rf"^[a-z][a-z0-9+.\-]*://(?:[^/?#@]*@)?(?:[^/?#@\[\]]*\.)?(?:{alternatives})(?::\d+)?(?:[/?#]|$)",
        re.IGNORECASE,
    )


def fetch_patterns(domains: Iterable[str]) -> list[dict[str, str]]:
    """DevTools ``Fetch.enable`` patterns that pause every request to ``domains`` and their subdomains.

    Chromium's patterns are globs (``*`` and ``?`` only), so ``*://*example.com*`` also pauses
    ``http://notexample.com/`` or a URL with the name in its query: over-matching costs one round trip, the
    handler decides by the parsed host. Under-matching is impossible: the host is part of the URL."""
    return [{"urlPattern": f"*://*{f'[{d}]' if ':' in d else d}*", "requestStage": "Request"}
            for d in sorted(set(domains))]


@dataclass
class _Header:
    name: str
    value: str
    domains: tuple[str, ...] | None  # None: every request (a plain header of a context without sites)
    credential: bool
    source: str


class SessionHeaders:
    """The headers a session's requests carry, each bound to the sites it may go to (``session.headers``).

    ``await session.headers.add({"X-Api-Key": key})`` merges (never replaces other headers); each header goes
    only to ``domains=`` if given, else to the session's own sites (:attr:`sites`: its profile's
    ``[security] allowed_domains``, else ``[browser] header_domains``, else the domains of its cookies and of
    its auth method's login URL). A credential-like header with neither is refused (:class:`CrawlError`):
    pass ``domains=``. :meth:`effective` tells what a request to a URL carries.
    """

    def __init__(self, context: Any, *, sites: Iterable[str] | None = None, owner: str = "this session") -> None:
        self._context = context
        self.sites: tuple[str, ...] = tuple(dict.fromkeys(normalise_domain(s) for s in sites or ()))
        self.owner = owner
        self._headers: dict[str, _Header] = {}  # by lower-case name
        self._raw_set = context.set_extra_http_headers  # Chromium's own: replaces the context-wide set
        self._pattern: re.Pattern[str] | None = None
        self._lock = asyncio.Lock()
        self._warned: set[str] = set()
        # Per hop, by DevTools Fetch interception on each page (see the module docstring); else a route.
        self._per_hop = callable(getattr(context, "new_cdp_session", None))
        self._domains: tuple[str, ...] = ()
        self._pages: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # page -> CDP session
        self._tasks: set[asyncio.Task[None]] = set()
        _BY_CONTEXT[context] = self
        if self._per_hop and callable(getattr(context, "on", None)):
            context.on("page", self._on_page)  # pages not opened through the backend (a login's popup)
        # Plugins written against the old guide call this on the context: it now merges, like add().
        context.set_extra_http_headers = self._legacy_set

    # -- the plugin API ------------------------------------------------------------------------------

    async def add(
        self, headers: Mapping[str, str], *, domains: Iterable[str] | None = None, secret: bool | None = None,
        source: str = "a plugin",
    ) -> None:
        """Add (or replace, by name) ``headers``, keeping every other header.

        :param domains: where these headers go (hosts and their subdomains); default: the session's sites.
        :param secret: treat the values as secrets (registered, never shown, scripts refused under
            ``[security] js_code = "no-secrets"``); default: decided by the header's name.
        """
        scope = tuple(dict.fromkeys(normalise_domain(d) for d in domains)) if domains is not None else self.sites
        entries = []
        for name, value in headers.items():
            if not isinstance(name, str) or not name.strip() or not isinstance(value, str):
                raise CrawlError(f"{self.owner}: header names and values must be non-empty strings ({source})")
            credential = is_credential(name) if secret is None else secret
            if credential:
                register_secret(value)
            if not scope and credential:
                raise CrawlError(
                    f"{self.owner}: header '{name}' (added by {source}) carries a credential but has no site to "
                    "go to, and would be sent to every host a page contacts. Give the profile [security] "
                    "allowed_domains or [browser] header_domains, or pass domains=[...] to session.headers.add"
                )
            entries.append(_Header(name, value, scope or None, credential, source))
        async with self._lock:
            for entry in entries:
                self._headers[entry.name.lower()] = entry
            await self._apply()

    async def set(self, name: str, value: str, *, domains: Iterable[str] | None = None) -> None:
        """One header; same rules as :meth:`add`."""
        await self.add({name: value}, domains=domains)

    async def remove(self, *names: str) -> None:
        """Stop sending these headers (names are case-insensitive; unknown names are ignored)."""
        async with self._lock:
            for name in names:
                self._headers.pop(name.lower(), None)
            await self._apply()

    def effective(self, url: str | None = None) -> dict[str, str]:
        """The headers crawlkeeper adds to a request for ``url`` (Chromium adds its own, e.g. ``User-Agent``);
        with no ``url``, the ones every request carries."""
        host = host_of(url) if url else None
        return {
            h.name: h.value for h in self._headers.values()
            if h.domains is None or (host is not None and in_domains(host, h.domains))
        }

    def scopes(self) -> dict[str, tuple[str, ...] | None]:
        """Each header's name and where it goes (None: everywhere); never a value."""
        return {h.name: h.domains for h in self._headers.values()}

    @property
    def holds_secrets(self) -> bool:
        return any(h.credential for h in self._headers.values())

    def snapshot(self) -> list[dict[str, Any]]:
        """Every header with its value and scope, for a saved session (encrypted at rest; never shown)."""
        return [{"name": h.name, "value": h.value, "domains": list(h.domains) if h.domains is not None else None,
                 "credential": h.credential, "source": h.source} for h in self._headers.values()]

    def __repr__(self) -> str:  # never values
        return f"SessionHeaders({self.owner}, {self.scopes()!r})"

    def watch(self, page: Any) -> None:
        """Make ``page.set_extra_http_headers`` (which sends to every host the page contacts) merge into this
        set instead, bound to its sites, like the context's."""
        page.set_extra_http_headers = self._legacy_set

    # -- applying it to the browser ----------------------------------------------------------------------

    async def _apply(self) -> None:
        everywhere = {h.name: h.value for h in self._headers.values() if h.domains is None}
        await self._raw_set(everywhere)
        domains = tuple(sorted({d for h in self._headers.values() if h.domains for d in h.domains}))
        if domains == self._domains:
            return
        self._domains = domains
        if self._per_hop:
            await asyncio.gather(*(self._intercept(page) for page in list(self._pages)))
            return
        pattern = scope_pattern(domains) if domains else None
        if self._pattern is not None:
            await self._context.unroute(self._pattern, self._route)
        if pattern is not None:
            await self._context.route(pattern, self._route)
        self._pattern = pattern

    async def attach(self, page: Any) -> None:
        """Cover ``page``'s requests (each redirect hop decided by its own host) before its first navigation.
        Idempotent; a no-op for browsers without per-hop interception (they use a context route)."""
        if not self._per_hop:
            return
        async with self._lock:
            if page in self._pages:
                return
            self._pages[page] = None
            await self._intercept(page)

    def _on_page(self, page: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._attach_quietly(page))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attach_quietly(self, page: Any) -> None:
        try:
            await self.attach(page)
        except Exception as exc:  # closed at once (a popup the guard closed): nothing to cover
            log.debug("headers of %s: cannot cover a new page: %s", self.owner, exc)

    async def _intercept(self, page: Any) -> None:
        """Pause ``page``'s requests to the current domains (or stop pausing, when there are none)."""
        cdp = self._pages.get(page)
        if not self._domains:
            if cdp is not None:
                await cdp.send("Fetch.disable")
            return
        if cdp is None:
            cdp = await page.context.new_cdp_session(page)
            cdp.on("Fetch.requestPaused", functools.partial(self._on_paused, cdp))
            self._pages[page] = cdp
        await cdp.send("Fetch.enable", {"patterns": fetch_patterns(self._domains)})

    async def _on_paused(self, cdp: Any, event: dict[str, Any]) -> None:
        """One paused request or redirect hop: the scoped headers its own host may get, none of the others.
        Every paused request must be continued, or it hangs."""
        request = event.get("request") or {}
        host = host_of(str(request.get("url", "")))
        scoped = {n for n, h in self._headers.items() if h.domains}
        sent = {str(k): str(v) for k, v in (request.get("headers") or {}).items()}
        extra = [h for h in self._headers.values() if h.domains and in_domains(host, h.domains)]
        params: dict[str, Any] = {"requestId": event.get("requestId")}
        if extra or any(name.lower() in scoped for name in sent):
            kept = [{"name": k, "value": v} for k, v in sent.items() if k.lower() not in scoped]
            params["headers"] = kept + [{"name": h.name, "value": h.value} for h in extra]
        try:
            await cdp.send("Fetch.continueRequest", params)
        except Exception as exc:  # the page or context went away meanwhile
            log.debug("header interception for %s: %s", self.owner, exc)

    async def _route(self, route: Any, request: Any) -> None:
        host = host_of(request.url)
        extra = {h.name: h.value for h in self._headers.values() if h.domains and in_domains(host, h.domains)}
        try:
            if extra:
                await route.fallback(headers={**request.headers, **extra})
            else:
                await route.fallback()
        except Exception as exc:  # the page or context went away meanwhile
            log.debug("header route for %s: %s", self.owner, exc)

    async def _legacy_set(self, headers: Mapping[str, str]) -> None:
        caller = _calling_module()
        if caller not in self._warned:
            self._warned.add(caller)
            log.warning(
                "%s called set_extra_http_headers on a session's context or page: it now merges (other headers "
                "are kept) and binds the headers to the session's sites; use `await session.headers.add({...})`",
                caller,
            )
        await self.add(headers, source=f"{caller} (via set_extra_http_headers)")


_BY_CONTEXT: Attached[SessionHeaders] = Attached("headers")  # on the context: they hold it (see attached.py)


async def attach_page(page: Any) -> None:
    """Called by a backend for each page it opens: the page's context's headers cover it from its first
    request (a no-op for a context without :class:`SessionHeaders`)."""
    headers = _BY_CONTEXT.get(page.context)
    if headers is not None:
        await headers.attach(page)


def _calling_module() -> str:
    """The module outside crawlkeeper/Playwright/asyncio that called us, to name a plugin in a warning."""
    for frame in inspect.stack(context=0)[2:]:
        module = frame.frame.f_globals.get("__name__", "")
        if not module.startswith(("crawlkeeper.", "playwright", "asyncio", "pluggy", "anyio")):
            return f"module '{module}'"
    return "a plugin"


def own_sites(
    *, allowed_domains: Iterable[str] | None, header_domains: Iterable[str] | None,
    cookies: Iterable[Mapping[str, Any]] = (), auth: Mapping[str, Any] | Any | None = None,
) -> tuple[str, ...]:
    """A profile's own sites: ``allowed_domains``, else ``header_domains``, else the domains of its cookies and
    of its auth method's login URL (its ``login_url`` param, else ``url``)."""
    if allowed_domains:
        return tuple(dict.fromkeys(normalise_domain(d) for d in allowed_domains))
    if header_domains:
        return tuple(dict.fromkeys(normalise_domain(d) for d in header_domains))
    sites = []
    for cookie in cookies:
        where = cookie.get("domain") or (host_of(str(cookie["url"])) if cookie.get("url") else None)
        if where:
            sites.append(normalise_domain(where))
    if auth is not None:
        get = auth.get if isinstance(auth, Mapping) else lambda k: getattr(auth, k, None)
        login = get("login_url") or get("url")
        host = host_of(str(login)) if login else None
        if host:
            sites.append(host)
    return tuple(dict.fromkeys(sites))


def resolve_headers(
    specs: Mapping[str, Any], *, owner: str
) -> list[tuple[str, str, bool]]:
    """``(name, value, is_credential)`` for each configured header; references are resolved (and registered)."""
    from .models import resolve_secret

    out = []
    for name, spec in specs.items():
        if isinstance(spec, str):
            out.append((name, spec, is_credential(name)))
            continue
        ref = spec.model_dump(exclude_none=True) if hasattr(spec, "model_dump") else dict(spec)
        out.append((name, resolve_secret(ref, what=f"{owner} header '{name}'"), True))
    return out


__all__ = [
    "SessionHeaders",
    "attach_page",
    "fetch_patterns",
    "holds_credentials",
    "in_domains",
    "is_credential",
    "normalise_domain",
    "own_sites",
    "resolve_headers",
    "scope_pattern",
    "unscoped_credentials",
]
