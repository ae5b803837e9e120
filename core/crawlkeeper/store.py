"""Where saved sessions live: the ``StateStore`` protocol plugins implement, and the sealing helper.

A store keeps opaque blobs by key and hands out leases. Keys look like ``"<namespace>/<session id>"``
(``local`` for the stdio server; an HTTP principal gets its own namespace), so a store never has to know
what a session is. Blobs are sealed by the core (AES-256-GCM, :class:`Sealer`) before a store sees them, so
every store keeps sessions encrypted at rest, whatever it is built on.

A lease says "this crawlkeeper process drives this session now": ``acquire(key)`` raises
:class:`LeaseHeld` when another live process holds it; a lease whose holder died must be taken over.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Protocol, runtime_checkable

from .errors import CrawlkeeperError

#: The namespace of sessions created over stdio (one local user).
LOCAL_NAMESPACE = "local"


class StoreError(CrawlkeeperError):
    """The store cannot read or write a session's state (the message names the session and what to do)."""


class LeaseHeld(StoreError):
    """Another crawlkeeper process holds the lease of this key."""


class StateCorrupt(StoreError):
    """A saved state cannot be read: truncated, corrupted, encrypted with another key, or a future format."""


@runtime_checkable
class StateStore(Protocol):
    """What the core needs from a state store (returned by ``crawlkeeper_state_store``).

    Every method may be ``async def`` or plain; blocking work (files, sockets) should not run on the event
    loop for long. ``save`` must be atomic: a reader sees the old blob or the new one, never half of one.
    """

    #: One line for ``crawlkeeper doctor`` and the logs, e.g. ``"encrypted files in /home/me/.local/..."``.
    description: str

    async def load(self, key: str) -> bytes | None:
        """The blob saved under ``key``, or None when there is none."""

    async def save(self, key: str, blob: bytes) -> None:
        """Store ``blob`` under ``key``, replacing what was there atomically."""

    async def delete(self, key: str) -> None:
        """Forget ``key`` (no error when it does not exist)."""

    async def list(self) -> list[str]:
        """Every key with a saved blob.

        A store may also have ``exists(key) -> bool`` (optional, not part of this protocol's check): whether
        ``key`` has a saved blob, in one look-up. Without it, each resume of a session scans ``list()``.
        """

    async def acquire(self, key: str) -> None:
        """Take the lease of ``key`` for this process; raise :class:`LeaseHeld` if a live process holds it.
        Taking a lease this process already holds is a no-op, and cheap: the core calls this before every call
        on an active session, to notice a lease that lapsed and was taken over by another process. When this
        process's lease lapsed and another process held the key since (even if it has released it again), raise
        :class:`LeaseHeld` once: this process's copy of the session is stale, so the core lets it go and its next
        acquire (a restore of the current state) is a fresh one. ``save`` must likewise refuse a write from a
        process whose lease lapsed and was taken since (a fencing generation; see the Redis example)."""

    async def release(self, key: str) -> None:
        """Give the lease of ``key`` back (no error when not held)."""


def make_key(namespace: str, session_id: str) -> str:
    return f"{namespace}/{session_id}"


def split_key(key: str) -> tuple[str, str]:
    namespace, _, session_id = key.rpartition("/")
    return namespace, session_id


def key_filename(key: str) -> str:
    """A file name for ``key`` that is safe whatever the key holds (no ``/``, ``..``, NUL, case clashes)."""
    encoded = base64.b32encode(key.encode("utf-8")).decode("ascii").rstrip("=").lower()
    if len(encoded) > 200:  # keep under every file system's 255-byte limit, suffix included
        encoded = "h" + hashlib.sha256(key.encode("utf-8")).hexdigest()
    return encoded


def filename_key(name: str) -> str | None:
    """The key a :func:`key_filename` name came from, or None when it was hashed or is not ours."""
    if name.startswith("h") and len(name) == 65:
        return None
    try:
        padded = name.upper() + "=" * (-len(name) % 8)
        return base64.b32decode(padded).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


# -- sealing --------------------------------------------------------------------------------------------

_MAGIC = b"CKST"
FILE_FORMAT = 1


class Sealer:
    """AES-256-GCM (from ``cryptography``) with a fresh 96-bit nonce per blob; the key name is authenticated
    data, so a file copied under another session's name does not decrypt."""

    def __init__(self, key: bytes, source: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(key) != 32:
            raise ValueError("a state key is 32 bytes")
        self._aead = AESGCM(key)
        self.source = source  # where the key came from, for error messages (never the key itself)

    def seal(self, key: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        header = _MAGIC + bytes([FILE_FORMAT])
        return header + nonce + self._aead.encrypt(nonce, plaintext, header + key.encode("utf-8"))

    def open(self, key: str, blob: bytes, *, what: str) -> bytes:
        """Decrypt ``blob``; :class:`StateCorrupt` names ``what`` (e.g. "session 'gh'") and what to do."""
        from cryptography.exceptions import InvalidTag

        if len(blob) < 5 + 12 + 16 or blob[:4] != _MAGIC:
            raise StateCorrupt(f"the saved state of {what} is truncated or not a crawlkeeper state file")
        version = blob[4]
        if version > FILE_FORMAT:
            raise StateCorrupt(
                f"the saved state of {what} was written by a newer crawlkeeper (file format {version}, this one "
                f"reads up to {FILE_FORMAT}); upgrade crawlkeeper"
            )
        try:
            return self._aead.decrypt(blob[5:17], blob[17:], blob[:5] + key.encode("utf-8"))
        except InvalidTag:
            raise StateCorrupt(
                f"the saved state of {what} cannot be decrypted: it is corrupted, or it was encrypted with another "
                f"key than the one from {self.source}"
            ) from None


def derive_key(secret: str) -> bytes:
    """A 32-byte key from ``CRAWLKEEPER_STATE_KEY``: a urlsafe-base64 32-byte key as is, anything else through
    HKDF-SHA256 (so give it a long random value: it is not a password hash)."""
    try:
        raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
        if len(raw) == 32:
            return raw
    except ValueError:
        pass
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"crawlkeeper state key").derive(
        secret.encode("utf-8")
    )


def new_key_text() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii").rstrip("=")


__all__ = [
    "LOCAL_NAMESPACE",
    "LeaseHeld",
    "Sealer",
    "StateCorrupt",
    "StateStore",
    "StoreError",
    "derive_key",
    "key_filename",
    "make_key",
    "new_key_text",
    "split_key",
]
