"""crawlkeeper: an MCP server that crawls the web through crawl4ai with real, authenticated browser sessions.

The public API for plugins: ``hookimpl`` (and ``hookspec``), ``AuthMethod``, ``ConfigLayer``, ``Profile``,
``Session``, ``SessionExpired``, and every type a hook receives (``Config``, ``Server``, ``ToolRegistry``,
``SessionRequest``, ``CrawlRequest``, ``Principal``). Importing this package is cheap: no browser, crawl4ai
or MCP import happens here.
"""

from __future__ import annotations

from .browser import PageLoad, PageResult
from .config import Config
from .errors import ConfigError, CrawlError, CrawlkeeperError, PluginError, SessionError, SessionExpired
from .handle import Server
from .headers import SessionHeaders, is_credential, own_sites, unscoped_credentials
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
from .options import ContextOptions, CrawlOptions, SecretRef
from .principal import Principal
from .store import LeaseHeld, StateStore
from .tools import ToolRegistry

__version__ = "0.1.0"

__all__ = [
    "ENV_NAME",
    "PROFILE_LAYER_PRIORITY",
    "AuthMethod",
    "Config",
    "ConfigError",
    "ConfigLayer",
    "ContextOptions",
    "CrawlError",
    "CrawlOptions",
    "CrawlRequest",
    "CrawlkeeperError",
    "LeaseHeld",
    "PageLoad",
    "PageResult",
    "PluginError",
    "Principal",
    "Profile",
    "SecretRef",
    "Server",
    "Session",
    "SessionError",
    "SessionExpired",
    "SessionHeaders",
    "SessionRequest",
    "StateStore",
    "ToolRegistry",
    "__version__",
    "env_var_problem",
    "hookimpl",
    "hookspec",
    "is_credential",
    "looks_like_env_name",
    "own_sites",
    "register_secret",
    "resolve_secret",
    "unscoped_credentials",
]
