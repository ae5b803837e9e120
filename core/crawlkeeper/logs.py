"""Logging to stderr, with a redaction filter so no secret can reach a log line.

stdout is the MCP channel: nothing here ever writes to it. Secrets are redacted twice: every value
handed to :func:`register_secret` (cookie values, passwords, tokens, as they are resolved) is replaced
wherever it appears, and header/cookie-looking patterns are masked even for values never registered.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .egress import display_url

T = TypeVar("T")

REDACTED = "***"
_MIN_SECRET_LEN = 4  # shorter values would redact ordinary words
_secrets: set[str] = set()
_lock = threading.Lock()
_pattern: re.Pattern[str] | None = None
#: Tool results are scrubbed of registered secrets this long or longer: shorter values ("true", "en-US") would
#: blank ordinary words out of every page, and a real token or password is longer.
MIN_RESULT_SECRET_LEN = 8
_result_pattern: re.Pattern[str] | None = None
_result_secrets: tuple[str, ...] = ()  # longest first
_stale = False  # a secret was registered since the patterns were compiled
_any_result = False  # a secret long enough for results was registered
#: Up to this many secrets, ``in`` + ``str.replace`` per secret (a fast substring search, ~0.2 ms per MB each)
#: beats one regex alternation (which steps through the text character by character: ~50 ms per MB).
_LOOP_MAX = 32

_HEADER_RE = re.compile(
    r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key)(\s*[:=]\s*)([^\r\n,;]+)"
)
_KV_RE = re.compile(r"(?i)(['\"]?(?:value|password|token|secret)['\"]?\s*[:=]\s*)(['\"]?)([^'\",}\s]+)")


def register_secret(value: str | None) -> None:
    """Never log ``value``: every later log line containing it shows ``***`` instead."""
    global _stale, _any_result
    if not value or len(value) < _MIN_SECRET_LEN:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        _stale = True  # compiled on next use: a restore registers a whole jar at once, one compile for all
        _any_result = _any_result or len(value) >= MIN_RESULT_SECRET_LEN


def _compiled() -> tuple[re.Pattern[str] | None, re.Pattern[str] | None, tuple[str, ...]]:
    """The log pattern, the result pattern and the result secrets (longest first), rebuilt if a secret came."""
    global _pattern, _result_pattern, _result_secrets, _stale
    if _stale:
        with _lock:
            if _stale:
                ordered = sorted(_secrets, key=len, reverse=True)
                _pattern = _uncached("|".join(re.escape(s) for s in ordered))
                long_ones = [s for s in ordered if len(s) >= MIN_RESULT_SECRET_LEN]
                if long_ones:
                    _result_pattern = _uncached("|".join(re.escape(s) for s in long_ones))
                    _result_secrets = tuple(long_ones)
                _stale = False
    return _pattern, _result_pattern, _result_secrets


def _uncached(source: str) -> re.Pattern[str]:
    """Compile without ``re``'s module cache. It keeps the last 512 patterns compiled: every pattern of every
    secret set (each holding all secrets so far) stayed there, ~9 KB per session at 50 sessions, growing with
    the square of the secrets (a server that saw 500 sessions' cookies held tens of MB of dead patterns)."""
    compiler = getattr(re, "_compiler", None)  # Python 3.11+; sre_compile before (same function)
    if compiler is None:
        import sre_compile as compiler
    return compiler.compile(source, 0)


def secrets_registered() -> bool:
    """Whether any secret long enough to scrub from results was registered (until then scrubbing is free)."""
    return _any_result


def scrub_secrets(value: T) -> T:
    """``value`` (a string, or dicts/lists of them) with every registered secret replaced by ``***``.

    Applied to every tool result: a script or a page that echoes a cookie or a header must not hand the value
    to the model. Costs nothing until a secret is registered; one regex pass per string after that."""
    if not _any_result:
        return value
    _, pattern, found = _compiled()
    if pattern is None:
        return value
    return _scrub_with(pattern, found, value)


def _scrub_with(pattern: re.Pattern[str], found: tuple[str, ...], value: Any) -> Any:
    if isinstance(value, str):
        if not value:
            return value
        if len(found) > _LOOP_MAX:
            return pattern.sub(REDACTED, value)
        for secret in found:  # longest first, so a secret inside a longer one cannot split it
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _scrub_with(pattern, found, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_scrub_with(pattern, found, v) for v in value)
    return value


_URL_RE = re.compile(r"\b(?:https?|wss?)://[^\s'\"<>()]+", re.I)


def safe_url(url: str) -> str:
    """A URL fit for messages and listings: no user:password, no query string, no fragment (any may hold a
    token). ``https://u:p@host:8443/a?token=x#y`` becomes ``https://host:8443/a``. Network URLs are read the way
    the browser and the egress proxy read them, so a message names the host they saw."""
    shown = display_url(url)
    if shown is not None:
        return shown
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "(unparseable URL)"
    if not parts.scheme or not parts.netloc:
        return url.split("?", 1)[0].split("#", 1)[0][:300]
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}"


def _safe_url_match(match: re.Match[str]) -> str:
    url = match.group(0)
    stripped = url.rstrip(":.,;")  # sentence punctuation after a URL is not part of it
    return safe_url(stripped) + url[len(stripped):]


def scrub(text: str) -> str:
    """Make ``text`` safe to return to a client: registered secrets masked, URLs stripped of credentials,
    query strings and fragments, secret headers masked (for tool results and errors)."""
    pattern = _compiled()[0]
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _URL_RE.sub(_safe_url_match, text)
    return _HEADER_RE.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


def redact(text: str) -> str:
    """Mask registered secrets and secret-looking header or key/value patterns in ``text``."""
    pattern = _compiled()[0]
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _HEADER_RE.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    return _KV_RE.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


class RedactingFilter(logging.Filter):
    """Formats the record's message once, redacts it, and freezes it (``args`` cleared)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.exc_info = None if record.exc_text else record.exc_info
        return True


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(explicit: str | int | None, default: str) -> str | int:
    """The level to log at: ``explicit`` (a ``--log-level``), else ``$CRAWLKEEPER_LOG_LEVEL``, else ``default``.

    :raises ConfigError: the level is not one of :data:`LEVELS`, naming where it came from.
    """
    from .errors import ConfigError

    if isinstance(explicit, int):
        return explicit
    env = os.environ.get("CRAWLKEEPER_LOG_LEVEL")
    value, where = (explicit, "--log-level") if explicit else (env, "environment variable CRAWLKEEPER_LOG_LEVEL") \
        if env else (default, "default")
    level = str(value).strip().upper()
    if level not in LEVELS:
        raise ConfigError(f"{where}: unknown log level {value!r}; use one of {', '.join(LEVELS)}")
    return level


def setup_logging(level: str | int | None = None, *, default: str = "INFO") -> None:
    """Send all logging to stderr through the redaction filter. Call before the MCP SDK is created
    (its constructor calls ``logging.basicConfig``, which is a no-op once a handler exists).

    The level is ``level`` if given, else ``$CRAWLKEEPER_LOG_LEVEL``, else ``default`` (each command picks a
    quiet default; the variable wins over it). With ``$CRAWLKEEPER_TRACE_PLUGINS`` set, hook-call tracing is
    shown whatever the level.
    """
    resolved = log_level(level, default)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_crawlkeeper", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._crawlkeeper = True  # type: ignore[attr-defined]
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(resolved)
    trace = logging.getLogger("crawlkeeper.trace")
    trace.setLevel(logging.INFO if os.environ.get("CRAWLKEEPER_TRACE_PLUGINS") else logging.NOTSET)
    for noisy in ("httpx", "httpcore", "asyncio", "mcp.server.lowlevel.server"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
