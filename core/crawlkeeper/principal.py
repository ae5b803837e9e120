"""Who is calling: the :class:`Principal` a token verifier returns, and the local user over stdio.

Sessions belong to the principal that created them (by ``id``); fair sharing counts slots per ``id``.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field

#: The id of the local user (stdio, the CLI): one client, as before HTTP existed.
LOCAL_ID = "local"


@dataclass(frozen=True)
class Principal:
    """An authenticated client, as returned by ``crawlkeeper_verify_token``.

    :param id: stable identity; owns sessions and their saved state (e.g. ``token:alice``, a JWT's ``sub``).
        Two tokens with the same ``id`` share sessions.
    :param name: how logs name the client (never a secret).
    :param admin: may list and close every client's sessions.
    :param scopes: OAuth-style scopes the token carries (informational; checked by plugins that care).
    """

    id: str
    name: str = ""
    admin: bool = False
    scopes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a Principal needs a non-empty id")
        if not self.name:
            object.__setattr__(self, "name", self.id)
        object.__setattr__(self, "scopes", tuple(self.scopes))

    def __repr__(self) -> str:
        return f"Principal(id={self.id!r}, name={self.name!r}, admin={self.admin})"


def _local_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers): still one local user
        return LOCAL_ID


#: The principal of stdio and CLI calls: the local user, who sees everything the server holds.
LOCAL = Principal(id=LOCAL_ID, name=_local_name(), admin=True)


__all__ = ["LOCAL", "LOCAL_ID", "Principal"]
