"""A crawlkeeper state store on Redis, so several crawlkeeper replicas share sessions.

crawlkeeper encrypts every saved session before it reaches a store: Redis only ever holds ciphertext (give
every replica the same ``CRAWLKEEPER_STATE_KEY``). A session is driven by one replica at a time through a lease:
``SET NX PX`` with a random token, renewed while the replica lives, released only by its holder (compare and
delete), and taken over by another replica once it expires (the holder died). Saves are fenced by the lease: a
replica that lost its lease cannot overwrite the new holder's state; each refused write is counted in
``<prefix>stats:lease_violations``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis
from pydantic import BaseModel, ConfigDict, Field

from crawlkeeper import hookimpl
from crawlkeeper.store import LeaseHeld

log = logging.getLogger("crawlkeeper_redis_store")

# Renew only what is still ours; delete only what is still ours; write only under our lease (or none).
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_SAVE = """
local holder = redis.call('get', KEYS[1])
if holder and holder ~= ARGV[1] then redis.call('incr', KEYS[3]) return 0 end
redis.call('set', KEYS[2], ARGV[2])
return 1
"""


class RedisStoreSettings(BaseModel):
    """``[plugins.redisstore]``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(default_factory=lambda: os.environ.get("CRAWLKEEPER_REDIS_URL", "redis://127.0.0.1:6379/0"),
                     description="redis://[:password@]host:port/db (default: $CRAWLKEEPER_REDIS_URL)")
    prefix: str = Field("ck:", description="prefix of every key this store writes")
    lease_s: float = Field(30, ge=1, le=3600, description="a dead replica's sessions are taken over after this")


def _masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"{parts.username or ''}:***@{host}", parts.path, "", ""))


class RedisStore:
    """The store (see :class:`crawlkeeper.store.StateStore`)."""

    def __init__(self, url: str, *, prefix: str = "ck:", lease_s: float = 30) -> None:
        self.r = redis.from_url(url)
        self.prefix, self.lease_ms = prefix, int(lease_s * 1000)
        self.description = f"Redis at {_masked(url)} (lease {lease_s:g} s)"
        self._tokens: dict[str, str] = {}
        self._renewers: dict[str, asyncio.Task[None]] = {}
        self._renew = self.r.register_script(_RENEW)
        self._release = self.r.register_script(_RELEASE)
        self._save = self.r.register_script(_SAVE)

    def _state(self, key: str) -> str:
        return f"{self.prefix}state:{key}"

    def _lease(self, key: str) -> str:
        return f"{self.prefix}lease:{key}"

    @property
    def _violations(self) -> str:
        return f"{self.prefix}stats:lease_violations"

    async def load(self, key: str) -> bytes | None:
        return await self.r.get(self._state(key))  # type: ignore[no-any-return]

    async def save(self, key: str, blob: bytes) -> None:
        if not await self._save(keys=[self._lease(key), self._state(key), self._violations],
                                args=[self._tokens.get(key, ""), blob]):
            log.error("refused to save session %s: another replica holds its lease", key)
            raise LeaseHeld(key)

    async def delete(self, key: str) -> None:
        await self.r.delete(self._state(key))

    async def list(self) -> list[str]:
        start = len(self._state(""))
        return [k.decode()[start:] async for k in self.r.scan_iter(match=self._state("*"), count=500)]

    async def acquire(self, key: str) -> None:
        if key in self._tokens:
            return
        token = uuid.uuid4().hex
        if not await self.r.set(self._lease(key), token, nx=True, px=self.lease_ms):
            raise LeaseHeld(key)
        self._tokens[key] = token
        self._renewers[key] = asyncio.get_running_loop().create_task(self._keep(key, token))

    async def _keep(self, key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                renewed = await self._renew(keys=[self._lease(key)], args=[token, self.lease_ms])
            except redis.RedisError as exc:  # Redis unreachable for a moment: try again before the lease runs out
                log.warning("could not renew the lease of %s: %s", key, exc)
                continue
            if not renewed:
                # The renewal came after the lease ran out (this process stalled, Redis was away): if no other
                # replica took the session meanwhile, the lease is simply ours again.
                try:
                    retaken = await self.r.set(self._lease(key), token, nx=True, px=self.lease_ms)
                except redis.RedisError:
                    retaken = False
                if retaken:
                    log.warning("the lease of session %s lapsed before it was renewed; taken again", key)
                    continue
                log.error("lost the lease of session %s: it lapsed and another replica took it over", key)
                if self._tokens.get(key) == token:
                    del self._tokens[key]
                    self._renewers.pop(key, None)
                return

    async def release(self, key: str) -> None:
        token = self._tokens.pop(key, None)
        task = self._renewers.pop(key, None)
        if task is not None:
            task.cancel()
        if token is not None:
            await self._release(keys=[self._lease(key)], args=[token])

    async def lease_violations(self) -> int:
        """Writes refused because another replica held the session's lease (should stay 0 in a healthy setup)."""
        return int(await self.r.get(self._violations) or 0)

    async def close(self) -> None:
        for key in list(self._tokens):
            await self.release(key)
        await self.r.aclose()


class RedisStorePlugin:
    """The ``redisstore`` plugin (a class entry point: one instance per plugin manager)."""

    def __init__(self) -> None:
        self.settings: RedisStoreSettings | None = None

    @hookimpl
    def crawlkeeper_configure(self, config: Any) -> None:
        self.settings = config.plugin_settings("redisstore", RedisStoreSettings)

    @hookimpl
    def crawlkeeper_state_store(self, config: Any) -> RedisStore:
        settings = self.settings or RedisStoreSettings()
        return RedisStore(settings.url, prefix=settings.prefix, lease_s=settings.lease_s)
