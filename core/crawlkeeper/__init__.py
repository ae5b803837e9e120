"""crawlkeeper: an MCP server that crawls the web through crawl4ai with real, authenticated browser sessions.

The public API for plugins: ``hookimpl`` (and ``hookspec``), ``AuthMethod``, ``ConfigLayer``, ``Profile``,
``Session``, ``SessionExpired``. Importing this package is cheap: no browser, crawl4ai or MCP import happens here.
"""

from __future__ import annotations

from .browser import PageResult
from .errors import ConfigError, CrawlError, CrawlkeeperError, PluginError, SessionError, SessionExpired
from .hookspecs import hookimpl, hookspec
from .logs import register_secret
from .models import (
    ENV_NAME,
    PROFILE_LAYER_PRIORITY,
    AuthMethod,
    ConfigLayer,
    CrawlRequest,
    Profile,
    Session,
    SessionRequest,
    env_var_problem,
    looks_like_env_name,
    resolve_secret,
)
from .options import ContextOptions, CrawlOptions
from .store import LeaseHeld, StateStore

__version__ = "0.1.0"

__all__ = [
    "ENV_NAME",
    "PROFILE_LAYER_PRIORITY",
    "AuthMethod",
    "ConfigError",
    "ConfigLayer",
    "ContextOptions",
    "CrawlError",
    "CrawlOptions",
    "CrawlRequest",
    "CrawlkeeperError",
    "LeaseHeld",
    "PageResult",
    "PluginError",
    "Profile",
    "Session",
    "SessionError",
    "SessionExpired",
    "SessionRequest",
    "StateStore",
    "__version__",
    "env_var_problem",
    "hookimpl",
    "hookspec",
    "looks_like_env_name",
    "register_secret",
    "resolve_secret",
]
