"""Egress gating: which policy a call runs under, the egress proxy per policy, and the check of a top-level URL
before the browser sees it. The browser itself is started here, behind the proxy."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .. import guard
from ..browser import BrowserBackend
from ..config import SecuritySettings
from ..egress import EgressPolicy, EgressProxy, EgressRefused
from ..errors import ConfigError, CrawlError
from ..logs import register_secret, safe_url
from ..models import Profile

log = logging.getLogger("crawlkeeper.app")


class EgressGate:
    """The server's egress policy, a profile's narrowing of it, and one egress proxy per policy."""

    def __init__(self, security: SecuritySettings, backend: BrowserBackend, resolver: Any = None) -> None:
        self.policy = EgressPolicy.from_lists(
            allow_private=security.allow_private,
            allowed_schemes=security.allowed_schemes,
        )
        self.backend = backend
        self.resolver = resolver
        self._proxies: dict[EgressPolicy, EgressProxy] = {}
        #: Set while a warm-up launches the browser (cleared until it is done): calls wait for it rather than
        #: starting a second import and launch beside it.
        self.warming: asyncio.Event | None = None

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
            proxy = self._proxies[policy] = EgressProxy(policy, self.resolver)
            proxy.body_limits = guard.body_limit  # plain-HTTP responses cut at max_page_mb at network speed
            if proxy.credentials is not None:  # a local process holding them could use the proxy: never log them
                register_secret(proxy.credentials.password)
                register_secret(proxy.credentials.header.split(" ", 1)[1])
        await proxy.start()
        return proxy.url_with_credentials

    async def check_url(self, url: str, policy: EgressPolicy) -> None:
        """Refuse a top-level URL before the browser sees it (scheme, host, resolved address class)."""
        try:
            host, port = policy.check_url(url)
            await policy.resolve_and_check(host, port, self.resolver)
        except EgressRefused as exc:
            raise CrawlError(f"refused to crawl {safe_url(url)}: {exc}") from None
        except OSError:
            raise CrawlError(f"could not load {safe_url(url)}: the host name does not resolve") from None

    async def ensure_browser(self, policy: EgressPolicy, *, warming: bool = False,
                             browser_only: bool = False) -> str | None:
        """Start the browser if needed (behind the egress proxy) and return the proxy for ``policy``. A call
        arriving while the warm-up starts it waits for the warm-up (``warming``: the warm-up itself).
        ``browser_only``: the browser may still lack crawl4ai (a backend's ``start_browser``; the first crawl
        completes it), enough to open contexts and pages."""
        if not warming and self.warming is not None and not self.warming.is_set():
            await self.warming.wait()
        start = getattr(self.backend, "start_browser", self.backend.start) if browser_only else self.backend.start
        if not getattr(self.backend, "needs_proxy", True):
            await start()
            return None
        if not self.backend.alive:
            self.backend.proxy_url = await self.proxy_url(self.policy)  # type: ignore[attr-defined]
            await start()
        return await self.proxy_url(policy)

    async def launch_early(self) -> bool:
        """Start launching the browser behind the egress proxy now, if the backend can before crawl4ai is
        imported (see :mod:`crawlkeeper.early`): True when a launch was started."""
        launch = getattr(self.backend, "launch_early", None)
        if launch is None or self.backend.alive or not getattr(self.backend, "needs_proxy", True):
            return False
        self.backend.proxy_url = await self.proxy_url(self.policy)  # type: ignore[attr-defined]
        return bool(launch())

    async def close(self) -> None:
        """Stop every egress proxy (after the browser closed)."""
        for proxy in self._proxies.values():
            await proxy.close()
        self._proxies.clear()
