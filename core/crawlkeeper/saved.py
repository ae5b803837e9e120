"""A saved session's record and its serialisation: what a blob holds once it is unsealed.

The payload is JSON (format :data:`STATE_FORMAT`), zlib-compressed; :mod:`crawlkeeper.state` seals it (AES-256-GCM)
before any store sees it. It holds the session's record (id, profile, auth method, created/last used/expiry
times, last URL, plugin metadata, plugin-added headers) and its browser storage (Playwright storage state:
cookies and origins with localStorage/IndexedDB; sessionStorage per origin).
"""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from dataclasses import dataclass, field
from typing import Any

from .logs import register_secret
from .models import Session
from .store import StateCorrupt

log = logging.getLogger("crawlkeeper.state")

#: Version of the JSON payload inside a sealed blob (the sealed envelope has its own version).
STATE_FORMAT = 1


def delete_hint(session_id: str) -> str:
    return f"delete it with `crawlkeeper sessions delete {session_id}` (or close_session) and create it again"


@dataclass
class SavedState:
    """One saved session, as decoded from its blob."""

    session_id: str
    profile: str | None
    auth: str | None
    created_at: float
    last_used_at: float
    expires_at: float | None
    url: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    storage: dict[str, Any] = field(default_factory=dict)  # Playwright storage state: cookies, origins
    session_storage: dict[str, dict[str, str]] = field(default_factory=dict)  # origin -> items
    saved_at: float = 0.0
    headers: list[dict[str, Any]] = field(default_factory=list)  # plugin-added request headers, with scopes
    holds_secrets: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "session": {
                "id": self.session_id, "profile": self.profile, "auth": self.auth, "created_at": self.created_at,
                "last_used_at": self.last_used_at, "expires_at": self.expires_at, "url": self.url,
                "metadata": self.metadata, "headers": self.headers, "holds_secrets": self.holds_secrets,
            },
            "storage": self.storage,
            "session_storage": self.session_storage,
            "saved_at": self.saved_at,
        }

    @classmethod
    def from_json(cls, data: Any, *, what: str) -> SavedState:
        if not isinstance(data, dict) or not isinstance(data.get("session"), dict):
            raise StateCorrupt(f"the saved state of {what} is not a crawlkeeper session")
        version = data.get("format")
        if not isinstance(version, int) or version > STATE_FORMAT:
            raise StateCorrupt(
                f"the saved state of {what} has format {version!r}, written by a newer crawlkeeper (this one reads "
                f"up to {STATE_FORMAT}); upgrade crawlkeeper"
            )
        rec = data["session"]
        try:
            return cls(
                session_id=str(rec["id"]), profile=rec.get("profile"), auth=rec.get("auth"),
                created_at=float(rec["created_at"]), last_used_at=float(rec["last_used_at"]),
                expires_at=None if rec.get("expires_at") is None else float(rec["expires_at"]),
                url=rec.get("url"), metadata=dict(rec.get("metadata") or {}),
                storage=dict(data.get("storage") or {}), session_storage=dict(data.get("session_storage") or {}),
                saved_at=float(data.get("saved_at") or 0.0), headers=list(rec.get("headers") or []),
                holds_secrets=bool(rec.get("holds_secrets")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateCorrupt(f"the saved state of {what} is missing or has a bad field ({exc})") from None

    def content_hash(self) -> str:
        """A hash of everything but the times: equal hashes mean nothing worth re-encrypting changed."""
        data = self.to_json()
        for volatile in ("last_used_at", "expires_at"):
            data["session"].pop(volatile)
        data.pop("saved_at")
        return hashlib.blake2b(json.dumps(data, sort_keys=True).encode(), digest_size=16).hexdigest()

    def cookie_summary(self) -> list[dict[str, Any]]:
        """Cookie names, domains and expiry (never values): what listings show."""
        out = []
        for c in self.storage.get("cookies") or []:
            expires = c.get("expires")
            out.append({"name": c.get("name", ""), "domain": c.get("domain", ""),
                        "expires": expires if isinstance(expires, int | float) and expires > 0 else None})
        return out

    def register_secrets(self) -> None:
        """Cookie and storage values of a loaded session must never be logged."""
        for c in self.storage.get("cookies") or []:
            register_secret(str(c.get("value", "")))
        for h in self.headers:
            if h.get("credential"):
                register_secret(str(h.get("value", "")))


def encode(state: SavedState) -> bytes:
    return zlib.compress(json.dumps(state.to_json(), separators=(",", ":")).encode("utf-8"), 6)


def decode(raw: bytes, *, what: str) -> SavedState:
    try:
        data = json.loads(zlib.decompress(raw))
    except (zlib.error, ValueError) as exc:
        raise StateCorrupt(f"the saved state of {what} is corrupted ({type(exc).__name__})") from None
    return SavedState.from_json(data, what=what)


def json_metadata(session: Session) -> dict[str, Any]:
    """The part of ``session.metadata`` that survives a restart: JSON-serialisable values only."""
    out: dict[str, Any] = {}
    for key, value in session.metadata.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            log.debug("session %s: metadata %r is not JSON-serialisable and is not saved", session.id, key)
            continue
        out[str(key)] = value
    return out


__all__ = ["STATE_FORMAT", "SavedState", "decode", "delete_hint", "encode", "json_metadata"]
