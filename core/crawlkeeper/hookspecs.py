"""The plugin author's manual: every hook crawlkeeper calls, when, with what, and what it does with the answer.

Implement a hook by defining a function (or method) with the same name, decorated with
``crawlkeeper.hookimpl``; take only the arguments you need. Hooks marked *async ok* may be ``async def``:
the core awaits them one after another (never concurrently) and cuts each off after
``[plugins] hook_timeout_s`` seconds. Async hooks are collect-all; ``firstresult`` hooks (such as
``crawlkeeper_state_store``) are synchronous.

Rules checked when a plugin is registered (a plugin breaking one fails at start-up, its name, the hook and the
rule in the message): ``async def`` only on *async ok* hooks; hook wrappers (``wrapper=True``,
``hookwrapper=True``) only on synchronous hooks that are not historic; argument names from the hook's
signature. ``tryfirst=True``/``trylast=True`` order implementations of every hook.

An exception raised by a hook is reported with the plugin's name. Where it lands depends on the phase:
at start-up it stops the server with a clear error; inside a session's lifecycle it fails only that one
call (and, during ``create_session``, removes the half-made session); in a closing hook it is logged
and the close goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .browser import PageLoad, PageResult
    from .config import Config
    from .handle import Server
    from .models import AuthMethod, ConfigLayer, CrawlRequest, Profile, Session, SessionRequest
    from .principal import Principal
    from .store import StateStore
    from .tools import ToolRegistry

PROJECT = "crawlkeeper"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------------------------
# Start-up and shutdown
# --------------------------------------------------------------------------------------------


@hookspec(historic=True)
def crawlkeeper_configure(config: Config) -> None:
    """Read your settings, once, after the config file is loaded and validated.

    Validate your own table with ``config.plugin_settings("<name>", YourModel)``: a bad value then
    becomes a start-up error naming the file, the key and your plugin. Historic: a plugin registered
    after start-up (e.g. by the ``crawlkeeper_register`` test fixture) is called at registration.

    :param config: the validated server configuration.
    """


@hookspec
def crawlkeeper_startup(server: Server) -> None:
    """The server is starting (*async ok*). Start background tasks here (the TTL reaper does).

    Called once per server (once per MCP connection over stdio). An exception aborts start-up.

    :param server: a :class:`~crawlkeeper.Server`: ``server.sessions()``, ``server.in_use(session)``,
        ``await server.close_session(session, reason, detail)``, ``server.config``, ``server.clock()``.
    """


@hookspec
def crawlkeeper_shutdown(server: Server) -> None:
    """The server is stopping (*async ok*); stop what ``crawlkeeper_startup`` started.

    Called after every session was closed with reason ``"shutdown"``. Keep it short: an MCP client
    kills the server about 2 seconds after closing its stdin. Exceptions are logged and ignored.

    :param server: the same :class:`~crawlkeeper.Server` as at start-up.
    """


@hookspec
def crawlkeeper_register_tools(registry: ToolRegistry) -> None:
    """Add your own MCP tools, at start-up.

    Call ``registry.add(fn, name=..., description=...)`` with an ``async def`` taking typed arguments
    (pydantic ``Field`` annotations work) and optionally ``app: App`` and ``principal: Principal`` (the
    calling client; both injected, hidden from clients); raise ``CrawlkeeperError`` for an error the caller
    should read. A name that clashes with an existing tool is a start-up error.

    :param registry: where tools are added.
    """


# --------------------------------------------------------------------------------------------
# Profiles and config merging
# --------------------------------------------------------------------------------------------


@hookspec
def crawlkeeper_load_profiles(config: Config) -> list[Profile]:
    """Return the profiles you provide.

    Called at start-up and again when profiles are looked up (at most about once a second), so cache and
    re-read only what changed. Return broken profiles too, with ``Profile.error`` set: using one is then a
    clear error naming its file while other profiles keep working. Two plugins returning the same name
    make that name unusable with an error naming both sources.

    :param config: the server configuration (``config.profiles_dir`` is where TOML profiles live).
    :return: a list of :class:`~crawlkeeper.Profile`.
    """
    raise NotImplementedError


@hookspec
def crawlkeeper_config_layers(request: CrawlRequest) -> list[ConfigLayer]:
    """Return config layers to merge for one crawl or session.

    Layers are merged over the core defaults and the config file, in ascending ``priority`` (the
    profile's layer uses ``PROFILE_LAYER_PRIORITY``, plugin layers default to 0); per-call arguments
    always win. The merged result is validated once, and an error names the layer that set the bad value.

    :param request: the URL, the chosen profile (or None), the session (or None) and the per-call arguments.
    :return: a list of :class:`~crawlkeeper.ConfigLayer` (empty when you have nothing to add).
    """
    raise NotImplementedError


# --------------------------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------------------------


@hookspec
def crawlkeeper_auth_methods() -> list[AuthMethod]:
    """Return the auth methods you provide, at start-up.

    Each :class:`~crawlkeeper.AuthMethod` has a ``name`` (what ``create_session(auth=...)`` and a profile's
    ``[auth] method`` say), a ``description``, a pydantic ``params_model`` validated from the profile's
    ``[auth]`` table, and ``async def login(session, params)`` that drives ``session.page``. ``login``
    runs after ``crawlkeeper_session_created`` and before the session's first navigation; raising fails
    ``create_session`` with your plugin's name. Two plugins offering one name is a start-up error.

    Params come only from a profile's ``[auth]`` table (``method`` plus the params), validated by your
    ``params_model`` (use ``extra="forbid"``): ``crawlkeeper profiles`` and ``doctor`` check every profile
    against it without logging in. ``create_session(auth="name")`` without such a profile works only if every
    param has a default; ``auth=`` naming another method than the profile's is an error.

    Secrets by reference: a param whose name ends in ``_env`` holds an environment variable's *name*
    (checked to be set when the profile loads); one ending in ``_file`` a path, made absolute relative to
    the profile's file. ``login`` receives the reference, not the secret: read it with
    ``crawlkeeper.resolve_secret({"value_env": params.token_env}, what="...")`` (or ``value_file``), which
    also registers the value so no log line or error shows it.
    """
    raise NotImplementedError


@hookspec
def crawlkeeper_session_created(session: Session, request: SessionRequest) -> None:
    """A session's isolated browser context exists; nothing has been loaded in it yet (*async ok*).

    Inject cookies, add headers (``await session.headers.add({...})``: merged with the others, sent only to
    the session's own sites), add init scripts here. If you apply ``request.cookies``, call
    ``request.mark_handled("cookies")`` (cookies nobody applies are an error). Raising fails
    ``create_session``: the context is closed and the error names your plugin.

    :param session: the new session (``session.context``; ``session.page`` is None for a session created
        without ``url`` or ``auth``: ``await session.ensure_page()`` opens it if you need one).
    :param request: what the caller asked for: ``url``, ``cookies``, ``profile``, ``auth``, ``ttl_s``;
        ``temporary`` is True for the hidden one-shot session of a session-less crawl with a logging-in profile.
    """


@hookspec
def crawlkeeper_session_acquire(session: Session) -> None:
    """A session is about to be used by a crawl. Synchronous and cheap; called with the session held.

    Raise :class:`~crawlkeeper.SessionExpired` to refuse the use: the core closes the session with
    reason ``"expired"`` and the caller is told to create a new one. Otherwise update your bookkeeping
    (the TTL plugin moves ``session.expires_at`` here).

    :param session: the session; ``session.last_used_at`` still holds the previous use.
    """


@hookspec
def crawlkeeper_session_closing(session: Session, reason: str) -> None:
    """A session's context is about to be closed (*async ok*). Save state or log out here.

    Every implementation runs even if an earlier one raised; exceptions are logged with the plugin's name.
    With reason ``"crashed"`` the browser is gone and ``session.page`` can no longer be used;
    ``session.page`` is None if the session never opened one.

    With reason ``"hibernated"`` (idle, or making room under ``max_sessions``) or ``"shutdown"`` the session's
    state was saved and it comes back on its next use, in this process or the next one: do not log out then.
    ``"hibernated"`` is also the reason when another crawlkeeper replica took the session over after this
    process's lease lapsed: its state is that replica's to save, and it lives on there.

    :param session: the session being closed.
    :param reason: ``"closed"``, ``"expired"``, ``"evicted"``, ``"shutdown"``, ``"crashed"``, ``"hibernated"``,
        or ``"temporary"`` for the hidden one-shot session in which ``crawl_url(profile=P)`` logs in when P has
        cookies or an ``[auth]`` method (``session.temporary`` is True for it from creation on; a plugin that logs
        out on close may skip it, the session is discarded anyway).
    """


@hookspec
def crawlkeeper_session_restored(session: Session) -> None:
    """A saved session was brought back into a new browser context (*async ok*): after a restart, a
    hibernation or a browser crash. Cookies, localStorage, IndexedDB and sessionStorage are already back, and
    ``session.metadata`` holds what was saved (its JSON-serialisable values).

    Re-apply here what ``crawlkeeper_session_created`` set up that is not browser storage (init scripts,
    extra headers). Raising fails the call that needed the session, naming your plugin.

    :param session: the restored session (``session.page`` is None until it is used).
    """


@hookspec
def crawlkeeper_logged_out(session: Session, result: PageResult | PageLoad) -> bool | None:
    """Judge whether a page loaded in ``session`` came back logged out (synchronous and cheap).

    Called after every page a tool loads in a session: ``crawl_url``/``crawl_many`` and each page of
    ``crawl_site`` (a :class:`PageResult`), ``screenshot`` and ``extract`` (a :class:`PageLoad`). Return
    True when ``result`` is a logged-out page (the site's login page, a 401), False or None otherwise; one
    True is enough. Then, if the session was created with an auth
    method, the core runs its ``login`` again (at most once per call, and ``[sessions] max_relogins_per_hour``
    times per session) and repeats the crawl; otherwise the call is an error saying the site logged the
    session out. The built-in ``profiles`` plugin judges from the profile's ``[auth]`` table:
    ``logged_out_url`` (a substring or regular expression of the final URL), ``logged_out_status`` (default
    ``[401]``) and ``logged_out_selector`` (a CSS selector present only on logged-out pages).

    :param session: the session the crawl ran in (``session.profile``, ``session.auth``).
    :param result: the page: ``url`` (asked for), ``final_url``, ``status``, ``title``, ``html``.
    :return: True (logged out), False, or None (no opinion).
    """


# --------------------------------------------------------------------------------------------
# Saved sessions
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def crawlkeeper_state_store(config: Config) -> StateStore | None:
    """Return the store where sessions are saved, at start-up (the first non-None answer wins; a plugin
    registered after the built-ins is asked first, so installing one replaces the built-in ``statefile``).

    A :class:`~crawlkeeper.store.StateStore` has ``description`` and ``load(key)``, ``save(key, blob)``,
    ``delete(key)``, ``list()``, ``acquire(key)``, ``release(key)`` (each may be ``async def``). Blobs are
    already encrypted by the core; ``save`` must replace atomically. ``acquire`` raises
    :class:`~crawlkeeper.store.LeaseHeld` when another live process holds the key, and takes over the lease
    of a process that died. The core calls ``acquire`` before every call on an active session (so a replica
    whose lease lapsed and was taken over lets the session go): for a lease this process holds it must return
    at once, without a round trip. No store at all (``statefile`` disabled, no replacement): sessions live in
    memory only, as long as the process.

    :param config: the server configuration.
    :return: a store, or None to leave the choice to other plugins.
    """


# --------------------------------------------------------------------------------------------
# HTTP transport
# --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def crawlkeeper_verify_token(token: str) -> Principal | None:
    """Who holds this bearer token? Called for every HTTP request (never over stdio).

    Return a :class:`~crawlkeeper.Principal` for a valid token, or None if it is not yours or not valid
    (wrong, expired, revoked): the first non-None answer wins, and when every plugin says None the
    request gets HTTP 401. The built-in ``tokens`` plugin answers for tokens made with
    ``crawlkeeper token add``; disable it to use only your own verifier.

    Synchronous and called in a worker thread, so a verifier may block briefly (fetch a JWKS, read a
    file) without stalling other clients; cache what you fetch. Never log the token. An exception is
    logged with your plugin's name and the request gets 401 (a broken verifier never lets anyone in).

    :param token: the bearer token from the ``Authorization`` header, without ``Bearer``.
    :return: the principal (``id`` owns sessions; ``name`` for logs; ``admin``; ``scopes``) or None.
    """


#: Hook names with their "async ok" status, for the plugin guide and the meta-tests.
ASYNC_HOOKS = frozenset(
    {
        "crawlkeeper_startup",
        "crawlkeeper_shutdown",
        "crawlkeeper_session_created",
        "crawlkeeper_session_closing",
        "crawlkeeper_session_restored",
    }
)


#: Synchronous "X or None" hooks whose first non-None result wins (pluggy's ``firstresult``).
FIRSTRESULT_HOOKS = frozenset(
    name for name, fn in list(globals().items())
    if name.startswith("crawlkeeper_") and getattr(fn, f"{PROJECT}_spec", {}).get("firstresult")
)


def hook_names() -> list[str]:
    """Every hook name, in the order they are declared here."""
    return [name for name in globals() if name.startswith("crawlkeeper_")]


__all__ = ["ASYNC_HOOKS", "FIRSTRESULT_HOOKS", "PROJECT", "hook_names", "hookimpl", "hookspec"]
