"""A crawlkeeper state store on Redis, so several crawlkeeper replicas share sessions.

crawlkeeper encrypts every saved session before it reaches a store: Redis only ever holds ciphertext (give
every replica the same ``CRAWLKEEPER_STATE_KEY``). A session is driven by one replica at a time through a lease:
``SET NX PX`` with a random token, renewed while the replica lives, released only by its holder (compare and
delete), and taken over by another replica once it expires (the holder died). Every take of a lease bumps the
session's generation (``<prefix>gen:<key>``): a replica whose lease lapsed takes it again only if the
generation is unchanged (nobody held the session meanwhile); otherwise its copy is stale, so its next use of
the session is refused once (the core then lets it go and restores the current state). Saves are fenced by the
lease and the generation: a replica that lost its lease cannot overwrite state written after it, even once the
new holder released it; each refused write is counted in ``<prefix>stats:lease_violations``.
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

# Take a free lease and bump the session's generation; renew only what is still ours; take a lapsed lease again
# only if nobody took it since (same generation); delete only what is still ours; write only under our lease and
# generation (a write without a lease, ARGV[3] empty, only when nobody holds one).
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return redis.call('incr', KEYS[2]) end
return 0
"""
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RETAKE = """
if redis.call('get', KEYS[2]) ~= ARGV[3] then return 0 end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_SAVE = """
local holder = redis.call('get', KEYS[1])
if (holder and holder ~= ARGV[1]) or (ARGV[3] ~= '' and redis.call('get', KEYS[4]) ~= ARGV[3]) then
  redis.call('incr', KEYS[3])
  return 0
end
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
        self._generations: dict[str, str] = {}  # of the leases held, and of those lost (see _lost)
        self._lost: set[str] = set()  # leases that lapsed and were taken over: our copy of the session is stale
        self._renewers: dict[str, asyncio.Task[None]] = {}
        self._acquire = self.r.register_script(_ACQUIRE)
        self._renew = self.r.register_script(_RENEW)
        self._retake = self.r.register_script(_RETAKE)
        self._release = self.r.register_script(_RELEASE)
        self._save = self.r.register_script(_SAVE)

    def _state(self, key: str) -> str:
        return f"{self.prefix}state:{key}"

    def _lease(self, key: str) -> str:
        return f"{self.prefix}lease:{key}"

    def _generation(self, key: str) -> str:
        return f"{self.prefix}gen:{key}"

    @property
    def _violations(self) -> str:
        return f"{self.prefix}stats:lease_violations"

    async def load(self, key: str) -> bytes | None:
        return await self.r.get(self._state(key))  # type: ignore[no-any-return]

    async def save(self, key: str, blob: bytes) -> None:
        fenced = key in self._tokens or key in self._lost
        if key in self._lost or not await self._save(
                keys=[self._lease(key), self._state(key), self._violations, self._generation(key)],
                args=[self._tokens.get(key, ""), blob, self._generations.get(key, "") if fenced else ""]):
            if key in self._lost:
                await self.r.incr(self._violations)
            log.error("refused to save session %s: another replica holds its lease, or held it after us", key)
            raise LeaseHeld(key)

    async def delete(self, key: str) -> None:
        await self.r.delete(self._state(key))

    async def exists(self, key: str) -> bool:
        return bool(await self.r.exists(self._state(key)))

    async def list(self) -> list[str]:
        start = len(self._state(""))
        return [k.decode()[start:] async for k in self.r.scan_iter(match=self._state("*"), count=500)]

    async def acquire(self, key: str) -> None:
        if key in self._tokens:
            return
        token = uuid.uuid4().hex
        if key in self._lost:
            # Our copy of this session is from before our lease lapsed: take it again only if nobody held it since.
            self._lost.discard(key)
            generation = self._generations.pop(key, "")
            if not await self._retake(keys=[self._lease(key), self._generation(key)],
                                      args=[token, self.lease_ms, generation]):
                raise LeaseHeld(key)  # once: the caller lets its stale copy go; its next acquire is a fresh one
        else:
            taken = await self._acquire(keys=[self._lease(key), self._generation(key)], args=[token, self.lease_ms])
            if not taken:
                raise LeaseHeld(key)
            generation = str(int(taken))
        self._tokens[key], self._generations[key] = token, generation
        self._renewers[key] = asyncio.get_running_loop().create_task(self._keep(key, token))

    async def _keep(self, key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                renewed = await self._renew(keys=[self._lease(key)], args=[token, self.lease_ms])
            except redis.RedisError as exc:  # Redis unreachable for a moment: try again before the lease runs out
                log.warning("could not renew the lease of %s: %s", key, exc)
                continue
            if renewed:
                continue
            # The renewal came after the lease ran out (this process stalled, Redis was away): if no replica
            # took the session meanwhile (same generation), the lease is simply ours again.
            try:
                retaken = await self._retake(keys=[self._lease(key), self._generation(key)],
                                             args=[token, self.lease_ms, self._generations.get(key, "")])
            except redis.RedisError:
                retaken = False
            if retaken:
                log.warning("the lease of session %s lapsed before it was renewed; taken again", key)
                continue
            log.error("lost the lease of session %s: it lapsed and another replica took it over", key)
            if self._tokens.get(key) == token:
                del self._tokens[key]
                self._renewers.pop(key, None)
                self._lost.add(key)  # the generation stays, to re-check at our next acquire
            return

    async def release(self, key: str) -> None:
        token = self._tokens.pop(key, None)
        self._generations.pop(key, None)
        self._lost.discard(key)
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
