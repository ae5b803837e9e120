"""What the HTTP layer knows about the call in progress, shared with the tool that serves it.

The HTTP middleware puts a :class:`CallInfo` in a context variable for each request; the MCP SDK carries
the request's context into the tool handler it spawns, so the tool can record its name and outcome for the
access log, and is cancelled when the client goes away (``gone``).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass
class CallInfo:
    """One HTTP request: filled in by the tool (``tool``, ``outcome``), watched by the middleware."""

    gone: asyncio.Event = field(default_factory=asyncio.Event)
    tool: str | None = None
    outcome: str | None = None


_current: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar("crawlkeeper_call", default=None)


def current() -> CallInfo | None:
    """The HTTP request being served, or None (stdio, in-memory)."""
    return _current.get()


def set_current(info: CallInfo | None) -> contextvars.Token[CallInfo | None]:
    return _current.set(info)


def reset(token: contextvars.Token[CallInfo | None]) -> None:
    _current.reset(token)


class ClientGone(Exception):
    """The HTTP client disconnected before its call finished; the work was cancelled."""


async def unless_gone(info: CallInfo, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it (and raising :class:`ClientGone`) if the client disconnects first:
    a client that hung up must not keep the browser busy with pages nobody will read."""
    if info.gone.is_set():
        if asyncio.iscoroutine(work):
            work.close()
        raise ClientGone("the client disconnected; its call was not started")
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(info.gone.wait())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ClientGone("the client disconnected; its call was cancelled")
    return task.result()


__all__ = ["CallInfo", "ClientGone", "current", "reset", "set_current", "unless_gone"]
