"""Errors whose message is written for the person or model calling crawlkeeper.

Every ``CrawlkeeperError`` message says what went wrong and what to do about it; the MCP layer turns
it into a tool error verbatim, and the CLI prints it without a traceback.
"""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (Playwright appends multi-line call logs), never empty."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


class CrawlkeeperError(Exception):
    """Base class: a problem the caller can act on. ``str(exc)`` is shown to users as is."""


class ConfigError(CrawlkeeperError):
    """The config file, an environment override, a profile or a plugin's settings are invalid."""


class PluginError(CrawlkeeperError):
    """A plugin failed to import, raised in a hook or timed out; the message names the plugin."""

    def __init__(self, message: str, plugin: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin


class SessionError(CrawlkeeperError):
    """A session cannot be used: unknown, closed, expired, lost in a browser crash, or over a limit."""


class SessionExpired(SessionError):
    """Raised by a ``crawlkeeper_session_acquire`` implementation to refuse the use of an expired session.

    The message should say after how long and why (idle or maximum age); the core closes the session
    with reason ``"expired"`` and adds "call create_session again".
    """


class CrawlError(CrawlkeeperError):
    """A crawl failed: bad URL, refused address, navigation error, HTTP error, timeout or size limit."""


class PageTimeout(CrawlError):
    """A page did not load (or its scripts did not finish) within ``timeout_s``."""


class PageTooLarge(CrawlError):
    """A page (or a response it loaded) passed ``max_page_mb``; the page was abandoned."""


class PageCrashed(CrawlError):
    """The page's renderer died (out of memory, or stopped by the memory watchdog); the page was replaced."""


class BusyError(CrawlkeeperError):
    """Too many calls are queued; the caller should retry shortly."""


class BrowserUnavailable(CrawlkeeperError):
    """No usable browser was found or it failed to launch."""
