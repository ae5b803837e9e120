"""Built-in ``tokens`` plugin: static bearer tokens for the HTTP transport, stored only as hashes.

``crawlkeeper token add NAME [--admin]`` makes a token (printed once), ``token list`` shows names and times,
``token revoke NAME`` removes it; a running server sees every change within a second (it re-reads the file
when it changes, no restart). The file (``[server] tokens_file``, default ``tokens.json`` next to the config
file, or in the user config dir without one) is 0600 and holds SHA-256 hashes: tokens are 256 random bits,
so a plain hash cannot be reversed, and a stolen file lets nobody in. Read-modify-write happens under an
exclusive lock, so a revoke is never undone by the server recording a "last used" time at the same moment.

Each token's principal is ``token:<NAME>``: re-adding a revoked name gives the new token the old sessions'
owner. Disable this plugin (``[plugins] disable = ["tokens"]``) to accept only your own verifier's tokens.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crawlkeeper import ConfigError, Principal, hookimpl

log = logging.getLogger("crawlkeeper.plugins.tokens")

TOKEN_PREFIX = "ck_"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_LAST_USED_FLUSH_S = 30.0  # "last used" is for people reading `token list`: minute precision is plenty


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class TokenEntry:
    name: str
    hash: str
    admin: bool
    created_at: float
    last_used_at: float | None = None

    def principal(self) -> Principal:
        return Principal(id=f"token:{self.name}", name=self.name, admin=self.admin)

    def public(self) -> dict[str, Any]:
        """What ``token list`` shows: never the hash (let alone the token)."""
        return {"name": self.name, "admin": self.admin, "created_at": self.created_at,
                "last_used_at": self.last_used_at}


class TokenStore:
    """The hashed-token file: add, list, revoke, and verification with a cache that follows the file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._cache: dict[str, TokenEntry] = {}  # hash -> entry
        self._signature: tuple[int, int, int] | None = None
        self._used: dict[str, float] = {}  # name -> last use not yet written
        self._flushed_at = 0.0
        self._mutex = threading.Lock()  # verification runs in worker threads

    # -- file access --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self) -> dict[str, TokenEntry]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.path}: cannot read the tokens file ({exc}); fix or remove it") from None
        entries = {}
        for name, item in (raw.get("tokens") or {}).items():
            entries[name] = TokenEntry(name=name, hash=item["hash"], admin=bool(item.get("admin")),
                                       created_at=float(item["created_at"]),
                                       last_used_at=item.get("last_used_at"))
        return entries

    def _write(self, entries: dict[str, TokenEntry]) -> None:
        data = {"version": 1, "tokens": {
            e.name: {"hash": e.hash, "admin": e.admin, "created_at": e.created_at, "last_used_at": e.last_used_at}
            for e in entries.values()
        }}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    # -- commands ------------------------------------------------------------------------------

    def add(self, name: str, *, admin: bool = False) -> str:
        """Create a token for ``name`` and return it (the only time it exists outside the client)."""
        if not NAME_RE.match(name):
            raise ConfigError(f"invalid token name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-'")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._locked():
            entries = self._read()
            if name in entries:
                raise ConfigError(f"a token named '{name}' exists; revoke it first (crawlkeeper token revoke {name})")
            entries[name] = TokenEntry(name=name, hash=hash_token(token), admin=admin, created_at=time.time())
            self._write(entries)
        return token

    def list(self) -> list[dict[str, Any]]:
        with self._locked():
            return [e.public() for e in sorted(self._read().values(), key=lambda e: e.created_at)]

    def revoke(self, name: str) -> bool:
        with self._locked():
            entries = self._read()
            if entries.pop(name, None) is None:
                return False
            self._write(entries)
        return True

    # -- verification --------------------------------------------------------------------------

    def _file_signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def verify(self, token: str) -> TokenEntry | None:
        """The entry for ``token`` as the file says now (a revoke is seen on the next request)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = hash_token(token)
        with self._mutex:
            signature = self._file_signature()
            if signature != self._signature:
                self._cache = {e.hash: e for e in self._read().values()} if signature else {}
                self._signature = signature
            entry = self._cache.get(digest)
            # The dict lookup found it by hash; compare again in constant time out of habit.
            if entry is None or not hmac.compare_digest(entry.hash, digest):
                return None
            now = time.time()
            self._used[entry.name] = now
            if now - self._flushed_at >= _LAST_USED_FLUSH_S:
                self._flush_locked(now)
        return entry

    def flush(self) -> None:
        with self._mutex:
            self._flush_locked(time.time())

    def _flush_locked(self, now: float) -> None:
        self._flushed_at = now
        if not self._used:
            return
        used, self._used = self._used, {}
        try:
            with self._locked():
                entries = self._read()
                for name, when in used.items():
                    if name in entries:  # revoked meanwhile: stays revoked
                        entries[name].last_used_at = when
                self._write(entries)
                # What was just written is the file's truth (a revoke made meanwhile included).
                self._cache = {e.hash: e for e in entries.values()}
                self._signature = self._file_signature()
        except (OSError, ConfigError) as exc:
            log.warning("could not record token use in %s: %s", self.path, exc)


class TokensPlugin:
    """The ``crawlkeeper_verify_token`` implementation over a :class:`TokenStore`."""

    def __init__(self) -> None:
        self.store: TokenStore | None = None

    @hookimpl
    def crawlkeeper_configure(self, config: Any) -> None:
        self.store = TokenStore(config.tokens_file)

    @hookimpl
    def crawlkeeper_verify_token(self, token: str) -> Principal | None:
        if self.store is None:
            return None
        entry = self.store.verify(token)
        return entry.principal() if entry is not None else None

    @hookimpl
    def crawlkeeper_shutdown(self) -> None:
        if self.store is not None:
            self.store.flush()


__all__ = ["TOKEN_PREFIX", "TokenEntry", "TokenStore", "TokensPlugin", "hash_token"]
