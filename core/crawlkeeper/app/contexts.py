"""Setting up a browser context for crawlkeeper: its headers bound to its own sites, pages whose header calls
merge, and closing without waiting on a stuck renderer. Used by sessions, restores and the session-less pool."""

from __future__ import annotations

import asyncio
from typing import Any

from ..browser import BrowserBackend
from ..egress import EgressPolicy
from ..headers import SessionHeaders, own_sites, resolve_headers
from ..models import Profile
from ..options import ContextOptions


async def install_headers(
    context: Any, options: ContextOptions, policy: EgressPolicy, prof: Profile | None, params: Any,
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


async def watched_page(backend: BrowserBackend, context: Any, headers: SessionHeaders) -> Any:
    """A session's page whose ``set_extra_http_headers`` merges into ``session.headers`` (bound to its sites)."""
    page = await backend.new_page(context)
    headers.watch(page)
    return page


def without_headers(options: ContextOptions) -> ContextOptions:
    """The options a backend creates a context with: headers are installed afterwards, bound to their sites."""
    return options.model_copy(update={"extra_headers": {}})


async def close_quietly(obj: Any) -> None:
    try:
        await asyncio.wait_for(obj.close(), 3)
    except Exception:
        pass
