"""``Server``: what ``crawlkeeper_startup`` and ``crawlkeeper_shutdown`` receive.

A narrow, documented handle on the running server (its sessions, its config, its clock) instead of the whole
application object, so a plugin that runs background work (the TTL reaper, a state saver) depends only on what
is promised here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config
    from .models import Session
    from .sessions import SessionRegistry

#: Reasons a plugin may close a session with (the others belong to the core: shutdown, crashed, temporary).
PLUGIN_CLOSE_REASONS = ("closed", "expired", "evicted")


class Server:
    """The running server as a plugin sees it.

    :ivar config: the validated configuration (``config.plugin_settings(...)``, ``config.profiles_dir`` ...).
    """

    def __init__(self, config: Config, registry: SessionRegistry, clock: Callable[[], float]) -> None:
        self.config = config
        self._registry = registry
        self._clock = clock

    def clock(self) -> float:
        """The server's current time (seconds since the epoch; tests replace the clock)."""
        return self._clock()

    def sessions(self) -> list[Session]:
        """The live sessions, oldest first (temporary ones included: check ``session.temporary``)."""
        return self._registry.all()

    def in_use(self, session: Session) -> bool:
        """True while a call runs on ``session`` or waits for it: closing it now would wait for that call."""
        return bool(session.busy) or session.lock.locked()

    async def close_session(self, session: Session, reason: str = "closed", detail: str = "") -> bool:
        """Close ``session`` (that very session, never a newer one that reused its id).

        A call running on it finishes first; calls queued on it are refused with the reason. Its closing hooks
        run with ``reason``.

        :param reason: ``"closed"``, ``"expired"`` or ``"evicted"``.
        :param detail: why, in words, for the caller's next error (e.g. ``"after 900 s idle"``).
        :return: False if the session had already ended.
        """
        if reason not in PLUGIN_CLOSE_REASONS:
            raise ValueError(f"a plugin closes a session with one of {', '.join(PLUGIN_CLOSE_REASONS)}, not {reason!r}")
        return await self._registry.close(session.id, reason, detail, session=session)


__all__ = ["PLUGIN_CLOSE_REASONS", "Server"]
