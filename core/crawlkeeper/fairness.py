"""Sharing the browser fairly between clients: a global cap on concurrent crawls, handed out round-robin.

Over stdio there is one client and this is a plain semaphore with a bounded queue. Over HTTP every
principal also gets its own cap on running crawls and on queued calls, and free slots go to the clients
with waiting calls in turn, so one client's ``crawl_many`` of 500 URLs waits behind nobody but also
starves nobody: a client that asks later is served at the next free slot, not after the 500.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .errors import BusyError
from .principal import LOCAL_ID


class FairLimiter:
    """Global concurrency ``concurrency`` with at most ``max_queued`` waiting calls overall; optional
    per-client caps (``per_client`` running, ``per_client_queued`` waiting). Past a cap: :class:`BusyError`.
    """

    def __init__(
        self,
        concurrency: int,
        max_queued: int,
        *,
        per_client: int | None = None,
        per_client_queued: int | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.max_queued = max_queued
        self.per_client = per_client
        self.per_client_queued = per_client_queued
        self.running = 0
        self._running_by: dict[str, int] = {}
        # Clients with waiting calls, in round-robin order: a client served goes to the back.
        self._queues: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def waiting_for(self, client: str) -> int:
        return len(self._queues.get(client, ()))

    def running_for(self, client: str) -> int:
        return self._running_by.get(client, 0)

    def resize(self, concurrency: int) -> None:
        """Change the global number of slots (the CPU governor does, see :mod:`crawlkeeper.pressure`). Running
        crawls are never stopped: after a shrink, waiting calls start once enough of them finished; after a
        growth, they start at once, in the usual fair order."""
        self.concurrency = max(1, concurrency)
        self._dispatch()

    def set_client_limits(self, per_client: int | None, per_client_queued: int | None) -> None:
        """Turn per-client caps on (the HTTP transport does, from ``[server]``)."""
        self.per_client = per_client
        self.per_client_queued = per_client_queued

    def _cap(self) -> int:
        return min(self.per_client or self.concurrency, self.concurrency)

    def _may_run(self, client: str) -> bool:
        return self.running < self.concurrency and self.running_for(client) < self._cap()

    def _grant(self, client: str) -> None:
        self.running += 1
        self._running_by[client] = self.running_for(client) + 1

    async def acquire(self, client: str = LOCAL_ID) -> None:
        # Anyone eligible who is queued would already have been dispatched: when a slot is free and this
        # client is under its cap, taking it now is fair.
        if self._may_run(client):
            self._grant(client)
            return
        if self.per_client_queued is not None and self.waiting_for(client) >= self.per_client_queued:
            raise BusyError(
                f"busy: this client already has {self.running_for(client)} crawls running and "
                f"{self.waiting_for(client)} queued ([server] max_queued_calls_per_client); retry in a few seconds"
            )
        if self.waiting >= self.max_queued:
            raise BusyError(
                f"crawlkeeper is busy: {self.running} crawls running and {self.waiting} queued "
                "([limits] max_queued_calls); retry in a few seconds"
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(client, deque()).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(client)  # granted just as the caller gave up: hand the slot on
            else:
                self._forget(client, future)
            raise

    def _forget(self, client: str, future: asyncio.Future[None]) -> None:
        queue = self._queues.get(client)
        if queue is None:
            return
        try:
            queue.remove(future)
        except ValueError:
            pass
        if not queue:
            del self._queues[client]

    def release(self, client: str = LOCAL_ID) -> None:
        self.running -= 1
        left = self._running_by.get(client, 1) - 1
        if left:
            self._running_by[client] = left
        else:
            self._running_by.pop(client, None)
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to waiting clients in turn, skipping those at their own cap."""
        while self.running < self.concurrency:
            for client, queue in self._queues.items():
                if self.running_for(client) < self._cap():
                    future = queue.popleft()
                    if not queue:
                        del self._queues[client]
                    else:
                        self._queues.move_to_end(client)
                    if future.done():  # its caller was cancelled while queued
                        break
                    self._grant(client)
                    future.set_result(None)
                    break
            else:
                return  # everyone waiting is at their own cap

    @asynccontextmanager
    async def slot(self, client: str = LOCAL_ID) -> AsyncIterator[None]:
        """Hold one crawl slot for ``client`` (a principal id)."""
        await self.acquire(client)
        try:
            yield
        finally:
            self.release(client)

    # ``async with limiter:`` — the local client, as before per-client quotas existed.
    async def __aenter__(self) -> None:
        await self.acquire(LOCAL_ID)

    async def __aexit__(self, *exc: object) -> None:
        self.release(LOCAL_ID)


__all__ = ["FairLimiter"]
