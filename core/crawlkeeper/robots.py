"""robots.txt for ``crawl_site``: fetched once per origin, bounded, parsed by protego (RFC 9309).

RFC 9309 section 2.3.1: a robots.txt that is unavailable (4xx) means no rules (allow all); one that is
unreachable (5xx, a network error, a timeout) means disallow all for that host, until the crawl ends. The
file is fetched through the egress proxy of the call's policy (a redirect to a refused address is refused),
capped at :data:`MAX_BYTES` (RFC 9309 asks parsers to read at least 500 KiB) and :data:`FETCH_TIMEOUT_S` in all.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

log = logging.getLogger("crawlkeeper.robots")

USER_AGENT = "crawlkeeper"
MAX_BYTES = 512 * 1024
FETCH_TIMEOUT_S = 10.0


@dataclass
class RobotsFile:
    """What a fetch of ``/robots.txt`` gave: a status (None for a network failure) and the capped body."""

    status: int | None
    body: bytes = b""


Fetcher = Callable[[str], Awaitable[RobotsFile]]


class Rules:
    """The rules of one origin."""

    def __init__(self, allow_all: bool = False, disallow_all: bool = False, parser: object | None = None) -> None:
        self.allow_all = allow_all
        self.disallow_all = disallow_all
        self.parser = parser

    def allowed(self, url: str) -> bool:
        if self.disallow_all:
            return False
        if self.allow_all or self.parser is None:
            return True
        return bool(self.parser.can_fetch(url, USER_AGENT))  # type: ignore[attr-defined]

    def crawl_delay(self) -> float:
        if self.parser is None:
            return 0.0
        delay = self.parser.crawl_delay(USER_AGENT)  # type: ignore[attr-defined]
        return min(float(delay or 0.0), 60.0)  # a site asking for hours between pages would stall the call


def rules_from(file: RobotsFile) -> Rules:
    # 407 is our own egress proxy answering, not the site: its robots.txt was never seen, so it is unreachable.
    if file.status is None or file.status >= 500 or file.status == 407:
        return Rules(disallow_all=True)
    if file.status >= 400:
        return Rules(allow_all=True)
    if file.status >= 300:  # redirects were followed: a 3xx here means too many of them (RFC 9309: 4xx-like)
        return Rules(allow_all=True)
    from protego import Protego

    text = file.body[:MAX_BYTES].decode("utf-8", errors="replace")
    try:
        return Rules(parser=Protego.parse(text))
    except Exception:  # an unparseable file has no rules we can honour
        log.debug("robots.txt did not parse", exc_info=True)
        return Rules(allow_all=True)


class RobotsCache:
    """One fetch per origin for the length of one crawl (concurrent askers wait for the same fetch)."""

    def __init__(self, fetch: Fetcher) -> None:
        self._fetch = fetch
        self._rules: dict[str, asyncio.Task[Rules]] = {}

    async def rules(self, url: str) -> Rules:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        task = self._rules.get(origin)
        if task is None:
            task = self._rules[origin] = asyncio.ensure_future(self._load(origin + "/robots.txt"))
        return await asyncio.shield(task)

    async def _load(self, robots_url: str) -> Rules:
        try:
            file = await asyncio.wait_for(self._fetch(robots_url), FETCH_TIMEOUT_S + 1)
        except Exception as exc:
            log.info("robots.txt %s unreachable (%s): the host is disallowed for this crawl", robots_url,
                     type(exc).__name__)
            file = RobotsFile(None)
        return rules_from(file)

    def close(self) -> None:
        for task in self._rules.values():
            task.cancel()


def proxied_fetcher(proxy_url: str | None, user_agent: str = f"Mozilla/5.0 (compatible; {USER_AGENT})") -> Fetcher:
    """Fetch robots.txt with the standard library through ``proxy_url`` (the egress proxy), in a thread,
    reading at most :data:`MAX_BYTES` and giving up after :data:`FETCH_TIMEOUT_S` in all."""
    handlers: list[urllib.request.BaseHandler] = [
        urllib.request.ProxyHandler({"http": proxy_url, "https": proxy_url} if proxy_url else {})
    ]
    opener = urllib.request.build_opener(*handlers)

    def fetch_sync(url: str) -> RobotsFile:
        deadline = time.monotonic() + FETCH_TIMEOUT_S
        request = urllib.request.Request(url, headers={"User-Agent": user_agent})
        try:
            response = opener.open(request, timeout=FETCH_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            exc.close()
            return RobotsFile(exc.code)
        except Exception:
            return RobotsFile(None)
        with response:
            body = bytearray()
            while len(body) < MAX_BYTES:
                if time.monotonic() > deadline:
                    return RobotsFile(None)  # served too slowly: unreachable
                chunk = response.read1(16_384)  # what has arrived: a drip must not block the deadline
                if not chunk:
                    break
                body += chunk
            # Bigger than the cap: RFC 9309 lets a crawler stop reading; the rules read so far apply.
            return RobotsFile(response.status, bytes(body[:MAX_BYTES]))

    async def fetch(url: str) -> RobotsFile:
        return await asyncio.to_thread(fetch_sync, url)

    return fetch
