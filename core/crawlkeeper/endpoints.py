"""Remote browser endpoints: what ``[browser] endpoints`` (and the older ``cdp_url``) name, and how to reach one.

Two protocols: Playwright's own (``ws://`` / ``wss://``: ``playwright launch-server`` / ``run-server``,
browserless, Moon), preferred because Playwright documents CDP as lower fidelity; and CDP (``cdp+ws://``,
``cdp+http://``…: Chrome with remote debugging, browserless, Selenium Grid 4). A token in an endpoint's URL
(browserless ``?token=``) or its headers is a secret: it is registered for scrubbing and masked in every
listing, log and error.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Query parameters whose value is a credential (browserless ``token``, others' ``key``/``apiKey``...).
_SECRET_PARAMS = ("token", "key", "apikey", "api_key", "auth", "password", "secret", "access_token", "jwt")
_SCHEMES = {
    "ws": ("playwright", "ws"),
    "wss": ("playwright", "wss"),
    "cdp+ws": ("cdp", "ws"),
    "cdp+wss": ("cdp", "wss"),
    "cdp+http": ("cdp", "http"),
    "cdp+https": ("cdp", "https"),
}
MASK = "***"


class EndpointSettings(BaseModel):
    """One entry of ``[browser] endpoints`` in its table form: ``{ url = "…", headers = {…}, max_sessions = N }``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="ws://… or wss://… (Playwright protocol), cdp+ws://… or cdp+http://… (CDP)")
    headers: dict[str, str] = Field(default_factory=dict, description="sent when connecting (e.g. a token)")
    max_sessions: int | None = Field(None, ge=1, description="at most this many sessions open on it at once "
                                     "(session-less crawls' short-lived contexts are not counted)")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        split_url(url)
        return url


def split_url(url: str) -> tuple[str, str]:
    """``(protocol, URL to connect to)`` for a configured endpoint URL; ValueError says what is accepted."""
    scheme, sep, rest = url.strip().partition("://")
    known = _SCHEMES.get(scheme.lower()) if sep else None
    if known is None or not rest:
        hint = (" (a CDP endpoint needs the cdp+ prefix: cdp+" + url.strip() + ")"
                if scheme.lower() in ("http", "https") else "")
        raise ValueError(
            f"endpoint {mask_url(url)!r} has no known protocol{hint}; use ws://host:port/path for a Playwright "
            "server (launch-server/run-server, browserless), or cdp+ws://… / cdp+http://host:port for a CDP browser"
        )
    return known[0], f"{known[1]}://{rest}"


def mask_url(url: str) -> str:
    """``url`` with the password of its user info and any credential-like query value replaced by ``***``."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username}:{MASK}@{netloc.rsplit('@', 1)[1]}"
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = urlencode([(k, MASK if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<an endpoint URL that does not parse>"


def url_secrets(url: str) -> list[str]:
    """The secret parts of an endpoint URL (to register for scrubbing)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = [parts.password] if parts.password else []
    found += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMS and v]
    return found


@dataclass(frozen=True)
class Endpoint:
    """A remote browser crawlkeeper connects to instead of launching one."""

    url: str  # as configured: may hold a token; never shown (``name`` is)
    protocol: Literal["playwright", "cdp"]
    connect_url: str  # without the cdp+ prefix
    headers: dict[str, str] = field(default_factory=dict, compare=False)
    max_sessions: int | None = None

    @property
    def name(self) -> str:
        """The URL as listings, logs and errors show it (credentials masked)."""
        return mask_url(self.url)

    @classmethod
    def parse(cls, entry: str | EndpointSettings | dict[str, Any]) -> Endpoint:
        if isinstance(entry, str):
            entry = EndpointSettings(url=entry)
        elif isinstance(entry, dict):
            entry = EndpointSettings.model_validate(entry)
        protocol, connect_url = split_url(entry.url)
        return cls(entry.url, protocol, connect_url, dict(entry.headers), entry.max_sessions)  # type: ignore[arg-type]

    @classmethod
    def cdp(cls, url: str) -> Endpoint:
        """The older ``[browser] cdp_url`` (ws://, http:// with no prefix): always CDP."""
        return cls(url, "cdp", url.split("cdp+", 1)[1] if url.startswith("cdp+") else url)

    def register_secrets(self) -> None:
        from .logs import register_secret

        for secret in [*url_secrets(self.url), *self.headers.values()]:
            register_secret(secret)

    async def connect(self, playwright: Any, *, timeout_s: float = 10) -> Any:
        """A Playwright ``Browser`` connected to this endpoint."""
        if self.protocol == "playwright":
            return await playwright.chromium.connect(self.connect_url, headers=self.headers or None,
                                                     timeout=timeout_s * 1000)
        return await playwright.chromium.connect_over_cdp(self.connect_url, headers=self.headers or None,
                                                          timeout=timeout_s * 1000)


@dataclass
class Probe:
    """What ``crawlkeeper doctor`` found at an endpoint."""

    endpoint: Endpoint
    ok: bool
    version: str = ""
    latency_ms: float | None = None  # a round trip once connected (a new context and its closing)
    connect_ms: float | None = None
    error: str = ""


async def probe(endpoint: Endpoint, *, timeout_s: float = 10) -> Probe:
    """Connect, read the browser's version, time a round trip, disconnect."""
    from playwright.async_api import async_playwright

    from .errors import first_line
    from .logs import scrub

    async with async_playwright() as pw:
        started = time.perf_counter()
        try:
            browser = await asyncio.wait_for(endpoint.connect(pw, timeout_s=timeout_s), timeout_s + 1)
        except Exception as exc:
            return Probe(endpoint, False, error=scrub(first_line(exc)).replace(endpoint.url, endpoint.name))
        connected = time.perf_counter()
        try:
            version = browser.version
            round_trip = time.perf_counter()
            context = await browser.new_context()
            await context.close()
            latency = (time.perf_counter() - round_trip) * 1000
            return Probe(endpoint, True, version, latency, (connected - started) * 1000)
        except Exception as exc:
            return Probe(endpoint, False, error=scrub(first_line(exc)))
        finally:
            try:
                await browser.close()
            except Exception:
                pass
