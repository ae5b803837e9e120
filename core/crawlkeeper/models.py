"""The objects plugins see: ``Session``, ``Profile``, ``ConfigLayer``, ``AuthMethod`` and the requests.

These are plain dataclasses on purpose: plugins get and mutate them inside hooks, and validation happens
at the edges (config files, tool arguments, plugin settings) with pydantic.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

    from .headers import SessionHeaders

#: What an environment variable name may look like (``\\Z``, not ``$``: ``$`` also matches before a final newline).
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
#: A conventional name: upper case, digits and underscores (``SITE_TOKEN``). Only such a name, or one that is
#: set in the environment, is ever shown back: anything else may be a secret pasted where the name belongs.
_CONVENTIONAL_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
#: A long run of letters mixed with digits reads as a key (``AKIAIOSFODNN7EXAMPLE``), not as a word of a name.
_KEY_LIKE_PART = re.compile(r"(?=[A-Z0-9]*[0-9])(?=[A-Z0-9]*[A-Z])[A-Z0-9]{16,}")

#: Priority of the profile's layer in the merge; plugin layers default to 0 and so override profiles.
PROFILE_LAYER_PRIORITY = -100


@dataclass
class Profile:
    """A named set of browser/crawl overrides, cookies and an auth method.

    Secrets are never stored here: cookies and auth params hold references (``value_env``, ``value_file``,
    ``password_env`` ...) that are resolved with :func:`resolve_secret` at the moment they are used.
    A profile that failed to load has ``error`` set; using it raises that error, other profiles keep working.
    """

    name: str
    description: str = ""
    source: str = ""  # where it came from, e.g. "profiles/work.toml" or "vault"
    browser: dict[str, Any] = field(default_factory=dict)
    crawl: dict[str, Any] = field(default_factory=dict)
    cookies: list[dict[str, Any]] = field(default_factory=list)
    auth: dict[str, Any] | None = None  # {"method": "form", ...params}
    security: dict[str, Any] = field(default_factory=dict)  # allow_private, allowed_domains
    error: str | None = None

    @property
    def label(self) -> str:
        """How errors name this profile: ``profile 'work' (profiles/work.toml)``."""
        return f"profile '{self.name}'" + (f" ({self.source})" if self.source else "")


@dataclass
class ConfigLayer:
    """One layer of the config merge, as returned by ``crawlkeeper_config_layers``.

    :param source: how an error names this layer, e.g. ``"profile 'slow' (profiles/slow.toml)"``.
    :param crawl: crawl option overrides (any ``crawl_url`` option, e.g. ``timeout_s``, ``css_selector``).
    :param browser: browser-context overrides (``user_agent``, ``viewport_width``, ``locale``, ...).
    :param priority: higher wins; profile layers use ``PROFILE_LAYER_PRIORITY``, plugin layers default to 0.
    """

    source: str
    crawl: dict[str, Any] = field(default_factory=dict)
    browser: dict[str, Any] = field(default_factory=dict)
    priority: int = 0


LoginFunc = Callable[["Session", Any], Awaitable[None]]


@dataclass
class AuthMethod:
    """A way to log a session in, returned by ``crawlkeeper_auth_methods``.

    :param name: what ``create_session(auth=...)`` and a profile's ``[auth] method`` name.
    :param description: one line shown by ``crawlkeeper plugins``.
    :param params_model: pydantic model validating the profile's ``[auth]`` table (minus ``method``).
    :param login: ``async def login(session, params)``; drive ``session.page``; raise to fail the login
        (the message is shown to the caller, so never put a secret in it).

    The method's *login URL* is its ``login_url`` param (else its ``url`` param), by convention: its host is
    one of the profile's own sites, where headers the method adds with ``session.headers.add`` are sent.
    """

    name: str
    description: str
    params_model: type[BaseModel]
    login: LoginFunc


@dataclass
class Session:
    """A logged-in (or not) browser identity with its own isolated browser context.

    ``context`` and ``page`` are Playwright's ``BrowserContext`` and ``Page`` (or the fake browser's
    stand-ins in tests). A session created without ``url`` or ``auth`` opens its page on first use (a page
    costs a renderer process: ~0.3 s and ~50 MB), so ``page`` may be None until then: call
    ``await session.ensure_page()`` to get it. ``expires_at`` is maintained by the TTL plugin; ``metadata`` is
    for plugins: key it by your plugin's name (``"myplugin.token_expiry"``); JSON-serialisable values are saved
    with the session and come back after a restart, other values live only as long as this process.
    ``headers`` (a :class:`~crawlkeeper.SessionHeaders`) is how a plugin adds request headers:
    ``await session.headers.add({"X-Api-Key": key})`` merges, and each header goes only to the session's own
    sites (or ``domains=``); ``session.headers.effective(url)`` is what a request to ``url`` carries.
    ``owner`` is the principal id that created it: ids are per owner, so two clients may each have a session
    ``work`` and never see the other's.
    """

    id: str
    profile: str | None
    context: BrowserContext | Any
    page: Page | Any | None
    created_at: float = field(default_factory=time.time)
    last_used_at: float = field(default_factory=time.time)
    expires_at: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    auth: str | None = None  # the auth method it was created with (re-login uses it again)
    #: The id of the :class:`~crawlkeeper.Principal` that created it ("local" over stdio); only it can use it.
    owner: str = "local"
    #: True for the hidden one-shot session of a session-less crawl with a profile that logs in; it is closed with
    #: reason ``"temporary"`` right after that crawl and never listed.
    temporary: bool = False
    # Internal bookkeeping; plugins should treat these as read-only.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    busy: int = field(default=0, repr=False)
    closed: bool = field(default=False, repr=False)
    generation: int = field(default=0, repr=False)  # browser generation; a crash invalidates older ones
    ended: str | None = field(default=None, repr=False)  # why it ended, once closed/expired/crashed
    page_factory: Callable[[], Awaitable[Any]] | None = field(default=None, repr=False)
    durable: bool = field(default=True, repr=False)  # False: never saved (a one-call temporary session)
    hibernated: bool = field(default=False, repr=False)  # its state was saved and its context closed
    note: str | None = field(default=None, repr=False)  # said once in the next call's result (e.g. restored)
    headers: SessionHeaders | Any = field(default=None, repr=False)
    holds_secrets: bool = field(default=False, repr=False)  # profile/auth secrets live here (js_code policy)
    # Between calls the page is parked on about:blank (nothing of the site runs); this is where it was.
    parked_url: str | None = field(default=None, repr=False)

    async def ensure_page(self) -> Page | Any:
        """The session's page, opened now if the session has none yet (or lost it to a timeout)."""
        if self.page is None:
            if self.page_factory is None:
                raise RuntimeError(f"session {self.id!r} has no page and no way to open one")
            self.page = await self.page_factory()
        return self.page

    def __repr__(self) -> str:  # never dump the context/page (or anything a plugin stored) into logs
        return f"Session(id={self.id!r}, profile={self.profile!r})"


@dataclass
class SessionRequest:
    """What ``create_session`` asked for, passed to ``crawlkeeper_session_created``.

    A plugin that applies ``cookies`` calls ``mark_handled("cookies")`` so the core knows they were used:
    cookies that no plugin applied are an error, never a silent no-op.
    """

    session_id: str
    url: str | None
    cookies: list[dict[str, Any]]
    profile: Profile | None
    auth: str | None
    ttl_s: float | None
    handled: set[str] = field(default_factory=set)
    #: A hidden one-shot session for one session-less crawl (see ``Session.temporary``).
    temporary: bool = False

    def mark_handled(self, what: str) -> None:
        self.handled.add(what)


@dataclass
class CrawlRequest:
    """A crawl (or session creation) whose config is being merged; passed to ``crawlkeeper_config_layers``."""

    url: str | None
    profile: Profile | None
    session: Session | None
    arguments: dict[str, Any]  # the per-call arguments that were set


def looks_like_env_name(value: str) -> bool:
    """True if ``value`` may be shown in messages as an environment variable's name: it is set in the
    environment, or it is a conventional name (upper-case letters, digits, ``_``, not starting with a digit, no
    key-like run such as ``AKIAIOSFODNN7EXAMPLE``). Anything else may be a secret pasted where the name belongs."""
    if value in os.environ:
        return ENV_NAME.match(value) is not None
    if not _CONVENTIONAL_ENV_NAME.fullmatch(value):
        return False
    return not any(_KEY_LIKE_PART.fullmatch(part) for part in value.split("_"))


def env_var_problem(name: str) -> str | None:
    """What is wrong with an environment variable reference (``value_env``, ``password_env``, any ``*_env``),
    or ``None`` if that variable is set. The reference is named in the message only when it looks like a
    variable's name (:func:`looks_like_env_name`); otherwise it is treated as a possible secret: masked, and
    registered so no log line shows it either."""
    if looks_like_env_name(name):
        return None if name in os.environ else f"environment variable {name} is not set"
    from .logs import register_secret

    register_secret(name)
    return (
        "is not an environment variable name (it may be the secret itself, so it is not shown): put the "
        "secret in an environment variable and give that variable's name, e.g. SITE_TOKEN"
    )


def resolve_secret(spec: dict[str, Any], *, what: str, base_dir: Path | None = None) -> str:
    """Resolve a secret given as ``value``, ``value_env = "VAR"`` or ``value_file = "PATH"``.

    ``what`` names the secret in errors (never its value). Relative files are taken from ``base_dir``.
    """
    from .logs import register_secret

    value = _resolve(spec, what=what, base_dir=base_dir)
    register_secret(value)  # whatever asked for it, it is never logged from now on
    return value


def _resolve(spec: dict[str, Any], *, what: str, base_dir: Path | None) -> str:
    from .errors import ConfigError

    if spec.get("value_env"):
        var = str(spec["value_env"])
        problem = env_var_problem(var)
        if problem is not None and not looks_like_env_name(var):
            raise ConfigError(f"{what}: value_env {problem}")
        if problem is not None:
            raise ConfigError(f"{what}: {problem}; export it or change value_env")
        return os.environ[var]
    if spec.get("value_file"):
        path = Path(os.path.expanduser(spec["value_file"]))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read value_file {path}: {exc.strerror}") from None
    if "value" in spec and spec["value"] is not None:
        return str(spec["value"])
    raise ConfigError(f"{what}: give one of value, value_env or value_file")
