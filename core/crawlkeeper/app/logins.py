"""Auth methods and logging in: which plugin provides which method, choosing a method and its params for a
session, running its login under the hook deadline, and logging a session in again when the site logged it out."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..auth import auth_problem
from ..auth import choose as choose_auth
from ..browser import PageResult
from ..config import Config
from ..errors import CrawlkeeperError, PluginError, SessionError, first_line
from ..logs import safe_url
from ..models import AuthMethod, Profile, Session
from ..plugins import Hooks, PluginManager, within

log = logging.getLogger("crawlkeeper.app")

RELOGINS_KEY = "crawlkeeper.relogins"  # times of recent re-logins (in metadata: they survive restarts)


def where(page: PageResult) -> str:
    return f"final URL {safe_url(page.final_url)}, status {page.status}"


class Logins:
    """The auth methods plugins provide (by name, with the providing plugin) and the logins they run."""

    def __init__(self, config: Config, pm: PluginManager, hooks: Hooks, clock: Callable[[], float]) -> None:
        self.config = config
        self.pm = pm
        self.hooks = hooks
        self.clock = clock
        self.methods: dict[str, tuple[str, AuthMethod]] = {}

    def collect(self) -> None:
        """Ask every plugin for its auth methods; two plugins providing one name is a start-up error."""
        self.methods = {}
        for plugin, method in self.hooks.collect("crawlkeeper_auth_methods"):
            if method.name in self.methods:
                other = self.methods[method.name][0]
                raise PluginError(
                    f"two plugins provide the auth method '{method.name}': '{other}' and '{plugin}'; "
                    f"disable one (e.g. CRAWLKEEPER_DISABLE_PLUGINS={plugin})",
                    plugin=plugin,
                )
            self.methods[method.name] = (plugin, method)

    def disabled_plugins(self) -> list[str]:
        """Names of installed plugins that are not loaded (for "its plugin is disabled" messages)."""
        return [info.name for info in self.pm.describe() if info.disabled]

    def choose(self, name: str | None, prof: Profile | None) -> tuple[AuthMethod, Any] | None:
        """The auth method a session logs in with (named, or its profile's) and its validated params."""
        return choose_auth(name, prof, self.methods, self.disabled_plugins())

    def problem(self, profile: Profile) -> str | None:
        """What is wrong with a profile's ``[auth]`` table, checked against its method's params model."""
        return auth_problem(profile, self.methods, self.disabled_plugins())

    async def login(self, method: AuthMethod, session: Session, params: Any) -> None:
        """Run ``method``'s login in ``session`` under the hook deadline; a failure names its plugin."""
        plugin = self.methods[method.name][0]
        await within(method.login(session, params), self.hooks.timeout_s, "its login", plugin)

    def logged_out(self, session: Session, page: PageResult) -> bool:
        verdicts = self.hooks.call("crawlkeeper_logged_out", session=session, result=page)
        return any(v is True for v in verdicts or [])

    async def relogin(self, session: Session, prof: Profile | None, page: PageResult) -> None:
        """Run the session's auth method again, bounded per hour; a clear error when it cannot be done."""
        sid, at = session.id, where(page)
        if not session.auth:
            raise SessionError(
                f"session '{sid}' was logged out by the site ({at}); create it again, or give its profile an "
                "[auth] method so crawlkeeper can log it in again by itself"
            )
        now = self.clock()
        limit = self.config.settings.sessions.max_relogins_per_hour
        recent = [t for t in session.metadata.get(RELOGINS_KEY, []) if isinstance(t, int | float) and now - t < 3600]
        if len(recent) >= limit:
            raise SessionError(
                f"session '{sid}' was logged out by the site ({at}) and was already logged in again {len(recent)} "
                f"times in the last hour ([sessions] max_relogins_per_hour = {limit}); check that the login "
                "works (credentials, the site), then close the session and create it again"
            )
        session.metadata[RELOGINS_KEY] = [*recent, now]
        try:
            chosen = self.choose(session.auth, prof)
            if chosen is None:
                raise SessionError(f"auth method '{session.auth}' gave nothing to log in with")
            method, params = chosen
            await session.ensure_page()
            await self.login(method, session, params)
        except Exception as exc:
            detail = str(exc) if isinstance(exc, CrawlkeeperError) else f"{type(exc).__name__}: {first_line(exc)}"
            raise SessionError(
                f"session '{sid}' was logged out by the site ({at}) and logging in again with '{session.auth}' "
                f"failed: {detail}. Close the session and create it again"
            ) from None
        log.info("session %s was logged out by the site and logged in again with %s", sid, session.auth)
